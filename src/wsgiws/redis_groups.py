"""``RedisBackend``: group messages across processes and machines through Redis pub/sub.

Install with ``pip install "wsgiws[redis]"``, then, once per process (in each gunicorn
worker, or before the fork with ``--preload``)::

    import wsgiws
    from wsgiws.redis_groups import RedisBackend

    wsgiws.set_group_backend(RedisBackend("redis://127.0.0.1:6379/0"))

For a Redis Cluster, use a ``redis+cluster://`` (or ``rediss+cluster://``) URL naming
any node, or pass ``cluster=True``: groups then spread over the cluster's shards with
sharded pub/sub (``SPUBLISH``/``SSUBSCRIBE``, Redis 7 or later).

Theory of operation
-------------------

Channels. Each group has its own channel, ``<channel_prefix>g:<name>``; broadcasts and
``send_to`` go to ``<channel_prefix>all``. A process subscribes to ``all`` and to the
channel of each group that has a member in it: the first member to join a group in a
process subscribes, the last one to leave unsubscribes. So a process receives only the
messages of its own groups, and the Redis traffic of one process does not grow with the
number of processes or machines. The subscription race is closed by
:meth:`~wsgiws.WebSocket.join`: while Redis is reachable, the first ``join()`` of a
group in a process returns once Redis has confirmed the subscription, so a message
published after ``join()`` returned reaches the new member.

Exactly once. The sending process delivers to its own members directly (at once,
and also while Redis is unreachable), then publishes. Each published message carries
the sender's *origin* (host, pid and a random part, new in each forked child), a
sequence number per channel and the time it was published. A process skips its own
messages when Redis echoes them back (one prefix comparison, before any parsing), and
drops a message whose sequence number it has already seen on that channel from that
origin; a jump in the sequence shows messages that did not arrive (*missed*).

Threads. ``publish()`` never blocks: it appends to a bounded queue. A *publisher*
thread sends the queue to Redis in pipelined batches. A *subscriber* thread owns the
subscribing connections (one, or one per cluster shard): it reads everything Redis has
sent in one go, parses each message once, and hands each member the frames of all the
messages of the batch meant for it as one prepared write, the way a local broadcast
does (:meth:`LocalHub.deliver_batch <wsgiws.groups.LocalHub.deliver_batch>`), which
never blocks. Both are daemon threads, started by :meth:`RedisBackend.start` and started
again in the child after ``os.fork()``.

Falling behind. If the subscriber reads more slowly than messages arrive, they wait in
Redis's output buffer for it, and Redis disconnects a subscriber whose buffer passes
``client-output-buffer-limit pubsub`` (32 MiB, or 8 MiB for 60 s, by default). The
backend measures that backlog (Redis's ``omem`` for the subscribing connections, asked
every ``backlog_check_interval`` seconds, plus what the kernel holds unread) and the
lag of the messages it receives, reports both in :attr:`RedisBackend.stats`, and logs
a warning while the backlog is above ``backlog_warning`` bytes (4 MiB by default).

Losing Redis. A failure of either connection, or a subscribing connection silent for
longer than twice ``health_check_interval`` (it sends a PING after one interval of
silence), starts an *outage*: :attr:`~RedisBackend.connected` turns False at once, the
backend logs a warning and reconnects with exponential backoff (``reconnect_delay``
doubling up to ``reconnect_max_delay``). Meanwhile local members are still served, and
each message this process could not publish is counted as lost in that outage. When
the connection is back (every channel subscribed again) the backend logs the outage's
length and its losses; messages other processes published meanwhile never reach this
one. Delivery across processes is therefore at most once, and every loss is counted
(:attr:`RedisBackend.stats`), none silently dropped.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import fcntl
import os
import secrets
import selectors
import socket
import struct
import termios
import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from . import lifecycle
from .groups import Envelope, LocalHub, hub
from .log import redis_logger as logger
from .protocol import PreparedMessage

__all__ = ["RedisBackend", "RedisStats"]

#: First token of every published message: the format and its version.
MAGIC: Final = b"wsgiws/2"
#: Messages sent to Redis per pipelined round trip.
BATCH: Final = 512
#: Bytes read from a subscribing connection at once.
READ_SIZE: Final = 1 << 18
#: Origins remembered per channel (least recently heard dropped).
MAX_ORIGINS: Final = 4096
#: Channels whose publishing sequence number is remembered (least recently used dropped).
MAX_SEQUENCES: Final = 65_536
#: Seconds between two warnings about lost messages outside an outage, or about a backlog.
LOSS_LOG_INTERVAL: Final = 5.0
#: Channels per SUBSCRIBE command when subscribing again after a reconnection.
SUBSCRIBE_CHUNK: Final = 1000

_KIND_CODES: Final = {"group": b"g", "all": b"a", "one": b"o"}
_CODE_KINDS: Final[dict[int, Literal["group", "all", "one"]]] = {
    ord("g"): "group",
    ord("a"): "all",
    ord("o"): "one",
}
State = Literal["connecting", "up", "down"]


def _import_redis() -> Any:
    try:
        import redis.backoff
        import redis.crc
        import redis.retry

        import redis
    except ImportError as exc:
        raise ImportError(
            'RedisBackend needs the redis package: pip install "wsgiws[redis]"'
        ) from exc
    return redis


def _safe_url(url: str) -> str:
    """``url`` without user name and password, for logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _new_origin() -> str:
    host = "".join(c for c in socket.gethostname() if c.isalnum() or c in "-._") or "host"
    return f"{host}:{os.getpid()}:{secrets.token_hex(4)}"


# -- the message format ------------------------------------------------------------
#
#   wsgiws/2 <origin> <seq> <kind><t|b> <published ms> <target len> <exclude len>\n
#   <target><exclude><payload>
#
# The exclude length is -1 for none. The origin comes first so that a process
# recognises its own messages with one prefix comparison.


def pack(origin: str, seq: int, envelope: Envelope, now: float | None = None) -> bytes:
    """Serialise ``envelope`` for a channel: a header line, target, exclude, payload."""
    message = envelope.message
    if isinstance(message, str):
        payload, kind = message.encode(), _KIND_CODES[envelope.kind] + b"t"
    else:
        payload, kind = bytes(message), _KIND_CODES[envelope.kind] + b"b"
    target = envelope.target.encode()
    exclude = envelope.exclude.encode() if envelope.exclude is not None else b""
    millis = int((time.time() if now is None else now) * 1000)
    head = b"%s %s %d %s %d %d %d\n" % (
        MAGIC,
        origin.encode(),
        seq,
        kind,
        millis,
        len(target),
        len(exclude) if envelope.exclude is not None else -1,
    )
    return b"".join((head, target, exclude, payload))


@dataclasses.dataclass(frozen=True, slots=True)
class Received:
    """A message parsed by :func:`unpack`."""

    origin: bytes
    seq: int
    published: float
    envelope: Envelope


def unpack(data: bytes) -> Received:
    """Parse what :func:`pack` made.

    Raises:
        ValueError: ``data`` is not a well-formed message.
    """
    end = data.find(b"\n")
    fields = data[:end].split(b" ") if end > 0 else ()
    if len(fields) != 7 or fields[0] != MAGIC or len(fields[3]) != 2:
        raise ValueError("not a wsgiws message")
    kind = _CODE_KINDS.get(fields[3][0])
    binary = fields[3][1] == ord("b")
    seq, millis, target_len, exclude_len = (int(f) for f in fields[2:3] + fields[4:7])
    if kind is None or (not binary and fields[3][1] != ord("t")) or target_len < 0:
        raise ValueError("bad header")
    start = end + 1
    target = data[start : start + target_len].decode()
    start += target_len
    exclude = None
    if exclude_len >= 0:
        exclude = data[start : start + exclude_len].decode()
        start += exclude_len
    if start > len(data):
        raise ValueError("truncated message")
    payload = data[start:]
    message: str | bytes = payload if binary else payload.decode()  # a ValueError if bad
    return Received(fields[1], seq, millis / 1000, Envelope(kind, target, message, exclude))


# -- RESP2 on a raw socket ------------------------------------------------------------


class RespError(Exception):
    """An error reply (``-ERR ...``) from Redis."""


def _command(*args: bytes | str | int) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        parts.append(b"$%d\r\n" % len(arg))
        parts.append(arg)
        parts.append(b"\r\n")
    return b"".join(parts)


class _Incomplete(Exception):
    pass


def _parse(data: bytes, pos: int) -> tuple[Any, int]:
    """One RESP2 value at ``pos``: (value, position after it); _Incomplete if cut."""
    end = data.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind = data[pos]
    if kind == 36:  # $ bulk string
        length = int(data[pos + 1 : end])
        if length < 0:
            return None, end + 2
        stop = end + 2 + length
        if stop + 2 > len(data):
            raise _Incomplete
        return data[end + 2 : stop], stop + 2
    if kind == 42:  # * array
        count = int(data[pos + 1 : end])
        if count < 0:
            return None, end + 2
        items = []
        pos = end + 2
        for _ in range(count):
            item, pos = _parse(data, pos)
            items.append(item)
        return items, pos
    if kind == 58:  # : integer
        return int(data[pos + 1 : end]), end + 2
    if kind == 43:  # + simple string
        return data[pos + 1 : end], end + 2
    if kind == 45:  # - error
        return RespError(data[pos + 1 : end].decode(errors="replace")), end + 2
    raise ValueError(f"not RESP2: {data[pos : pos + 20]!r}")


class Wire:
    """One connection to one Redis node, read and written as raw RESP2.

    redis-py opens it (URL options, TLS, AUTH, client name); from then on the socket
    is used directly, so that everything available is read at once and parsed in one
    pass.
    """

    def __init__(self, connection: Any, address: str) -> None:
        self.connection = connection
        self.address = address
        self.sock: socket.socket = connection._sock
        self._buffer = b""
        self.last_read = time.monotonic()
        self.pinged = False
        self.pinged_at = 0.0
        self.client_id: int | None = None

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def unread(self) -> int:
        """Bytes the kernel holds for this connection, not read yet."""
        try:
            raw = fcntl.ioctl(self.sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
        except OSError:
            return 0
        return int(struct.unpack("i", raw)[0])

    def read(self) -> list[Any]:
        """Read what is available (at least one byte; blocks until then) and parse it."""
        chunk = self.sock.recv(READ_SIZE)
        if not chunk:
            raise ConnectionError(f"Redis at {self.address} closed the connection")
        pending = getattr(self.sock, "pending", None)  # TLS: decrypted bytes left
        if pending is not None:
            more = [chunk]
            while pending():
                more.append(self.sock.recv(READ_SIZE))
            chunk = b"".join(more)
        self.last_read = time.monotonic()
        self.pinged = False
        data = self._buffer + chunk if self._buffer else chunk
        values = []
        pos, size = 0, len(data)
        while pos < size:
            try:
                value, pos_after = _parse(data, pos)
            except _Incomplete:
                break
            values.append(value)
            pos = pos_after
        self._buffer = data[pos:]
        return values

    def call(self, *commands: bytes, timeout: float | None = None) -> list[Any]:
        """Send ``commands`` and wait for exactly one reply to each (not subscribed)."""
        self.send(b"".join(commands))
        replies: list[Any] = []
        old = self.sock.gettimeout()
        self.sock.settimeout(timeout if timeout is not None else old)
        try:
            while len(replies) < len(commands):
                replies.extend(self.read())
        finally:
            self.sock.settimeout(old)
        if len(replies) > len(commands):
            raise ValueError("more replies than commands")
        return replies

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken connection
            self.connection.disconnect()


# -- statistics -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RedisStats:
    """What a :class:`RedisBackend` did in this process (:attr:`RedisBackend.stats`).

    Attributes:
        connected: subscribed and publishing (see :attr:`RedisBackend.connected`).
        published: messages handed to Redis.
        received: messages received from other processes (own echoes not counted).
        lost: messages this process could not publish (Redis unreachable, a failed
            publish, the queue full, or closed before they were published).
        missed: messages of other processes that did not arrive here, seen as gaps in
            their sequence numbers (counted when the next message arrives).
        outages: outages so far (connection to Redis lost, or never made).
        outage_seconds: total length of the outages so far, the current one included.
        current_outage_lost: messages lost in the current outage (0 while connected).
        channels: channels subscribed (``all`` and one per group with local members).
        pending: messages queued for publishing.
        backlog_bytes: bytes waiting for this process's subscriber: in Redis's output
            buffer (``omem``, as last measured) plus unread in this host's kernel. What
            sits in the send buffer of Redis's socket (a few MiB at most) is not seen.
        max_backlog_bytes: the largest ``backlog_bytes`` measured.
        lag: seconds between publishing and receiving the last message received
            (clocks of different machines may differ).
        max_lag: the largest ``lag`` measured.
    """

    connected: bool
    published: int
    received: int
    lost: int
    missed: int
    outages: int
    outage_seconds: float
    current_outage_lost: int
    channels: int
    pending: int
    backlog_bytes: int
    max_backlog_bytes: int
    lag: float
    max_lag: float

    def as_dict(self) -> dict[str, Any]:
        """The statistics as a plain dict (for JSON)."""
        return dataclasses.asdict(self)


class _Stop(Exception):
    pass


class RedisBackend:
    """Carry group messages to every process that has members of the group.

    Args:
        url: the Redis server, as ``redis.Redis.from_url`` takes it
            (``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` for TLS,
            ``unix://``); ``redis+cluster://`` or ``rediss+cluster://`` and any node
            of a Redis Cluster for sharded pub/sub. Pub/sub ignores the database number.
        cluster: use sharded pub/sub on a Redis Cluster (implied by a ``+cluster`` URL).
        channel_prefix: prefix of the channel names; deployments sharing one Redis
            use different prefixes.
        max_pending: messages queued for publishing before further ones are counted
            as lost (Redis slower than the senders).
        connect_timeout: seconds to connect to Redis, and at most to wait in
            ``join()`` for a subscription to be confirmed.
        reconnect_delay: seconds before the first reconnection attempt; it doubles
            after each failure, up to ``reconnect_max_delay``.
        reconnect_max_delay: the cap of that delay.
        health_check_interval: seconds of silence on a subscribing connection after
            which it is checked with a PING; with no answer within as long again, the
            connection counts as lost. So a Redis that became unreachable without
            closing the connection (a broken network) is noticed within twice this.
        backlog_warning: bytes waiting for this process in Redis (see
            :attr:`RedisStats.backlog_bytes`) above which a warning is logged.
        backlog_check_interval: seconds between two measures of that backlog.

    Raises:
        ImportError: the ``redis`` package is not installed.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        cluster: bool = False,
        channel_prefix: str = "wsgiws:",
        max_pending: int = 10_000,
        connect_timeout: float = 5.0,
        reconnect_delay: float = 0.1,
        reconnect_max_delay: float = 5.0,
        health_check_interval: float = 0.3,
        backlog_warning: int = 4 * 1024 * 1024,
        backlog_check_interval: float = 1.0,
    ) -> None:
        self._redis = _import_redis()
        if not isinstance(url, str) or not url:
            raise ValueError(f"url must be a redis:// URL, got {url!r}")
        scheme, sep, rest = url.partition("://")
        if sep and scheme.endswith("+cluster"):
            cluster = True
            url = f"{scheme[: -len('+cluster')]}://{rest}"
        for name, number in (("max_pending", max_pending), ("backlog_warning", backlog_warning)):
            if isinstance(number, bool) or not isinstance(number, int) or number <= 0:
                raise ValueError(f"{name} must be a positive integer, got {number!r}")
        for name, value in (
            ("connect_timeout", connect_timeout),
            ("reconnect_delay", reconnect_delay),
            ("reconnect_max_delay", reconnect_max_delay),
            ("health_check_interval", health_check_interval),
            ("backlog_check_interval", backlog_check_interval),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        self.url = url
        self.cluster = bool(cluster)
        self.channel_prefix = channel_prefix
        #: The channel of broadcasts and ``send_to``, which every process subscribes to.
        self.channel = f"{channel_prefix}all"
        self.max_pending = max_pending
        self.connect_timeout = float(connect_timeout)
        self.reconnect_delay = float(reconnect_delay)
        self.reconnect_max_delay = float(max(reconnect_max_delay, reconnect_delay))
        self.health_check_interval = float(health_check_interval)
        self.backlog_warning = backlog_warning
        self.backlog_check_interval = float(backlog_check_interval)
        pool = self._redis.ConnectionPool.from_url(url)
        self._connection_class = pool.connection_class
        self._connection_kwargs = dict(pool.connection_kwargs)
        self._connection_kwargs.update(
            socket_connect_timeout=self.connect_timeout,
            socket_timeout=self.connect_timeout,
            socket_keepalive=True,
            protocol=2,
            retry=self._redis.retry.Retry(self._redis.backoff.NoBackoff(), 0),
        )
        try:  # redis-py 7+: maintenance notifications need RESP3; these connections are RESP2
            from redis.maint_notifications import MaintNotificationsConfig
        except ImportError:  # pragma: no cover - older redis-py
            pass
        else:
            self._connection_kwargs["maint_notifications_config"] = MaintNotificationsConfig(
                enabled=False
            )
        self._subscribe_cmd = b"SSUBSCRIBE" if self.cluster else b"SUBSCRIBE"
        self._unsubscribe_cmd = b"SUNSUBSCRIBE" if self.cluster else b"UNSUBSCRIBE"
        self._publish_cmd = b"SPUBLISH" if self.cluster else b"PUBLISH"
        self._hub: LocalHub | None = None
        self._started = False
        self._closed = False
        self._init_state()
        _live.add(self)

    def _init_state(self) -> None:
        """(Re)create everything a process owns alone: locks, queue, threads, origin."""
        self._origin = _new_origin()
        self._own_prefix = b"%s %s " % (MAGIC, self._origin.encode())
        self._cond = threading.Condition(threading.Lock())
        self._pending: collections.deque[Envelope] = collections.deque()
        self._stopping = False
        self._state: State = "connecting"
        self._ready = threading.Event()
        self._stop_event = threading.Event()
        self._reset_requested: BaseException | None = None
        self._down_since = time.monotonic()
        self._outage_total = 0.0
        self._outages = 0
        self._published = 0
        self._received = 0
        self._lost = 0
        self._missed = 0
        self._lost_in_outage = 0
        self._unlogged = 0
        self._unlogged_why = ""
        self._last_loss_log = -LOSS_LOG_INTERVAL
        self._backlog_redis = 0
        self._backlog_kernel = 0
        self._max_backlog = 0
        self._last_backlog_log = -LOSS_LOG_INTERVAL
        self._lag = 0.0
        self._max_lag = 0.0
        self._seqs: collections.OrderedDict[bytes, int] = collections.OrderedDict()
        self._in_flight = 0
        self._publish_wires: dict[str, Wire] = {}
        self._generation = 0
        self._publish_generation = 0
        self._subscriber_ids: dict[str, int] = {}
        self._subscriber_wires: list[Wire] = []
        self._slots: list[tuple[int, int, str]] = []  # cluster: (first, last, "host:port")
        # Subscriptions: what the hub wants, what the current session asked for and
        # what Redis confirmed; joiners waiting for a confirmation.
        self._wanted: set[bytes] = {self.channel.encode()}
        self._asked: dict[bytes, str] = {}  # channel -> node address
        self._confirmed: set[bytes] = set()
        # (Un)subscriptions sent whose reply has not come yet, per channel.
        self._outstanding: dict[bytes, int] = {}
        self._session_up = False
        self._waiters: dict[bytes, list[threading.Event]] = {}
        self._seen: dict[bytes, dict[bytes, int]] = {}
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._publisher: threading.Thread | None = None
        self._subscriber: threading.Thread | None = None

    # -- public --------------------------------------------------------------------

    @property
    def origin(self) -> str:
        """This process's origin id, carried by each message it publishes."""
        return self._origin

    @property
    def connected(self) -> bool:
        """True while Redis is reachable: subscribed, and the last publish succeeded.

        Turns False as soon as a connection fails, and within 2.5 times
        ``health_check_interval`` (0.75 s by default) of Redis going silent.
        """
        return self._state == "up"

    @property
    def lost_messages(self) -> int:
        """Messages this process could not publish (:attr:`RedisStats.lost`)."""
        with self._cond:
            return self._lost

    @property
    def stats(self) -> RedisStats:
        """A snapshot of what this backend did in this process (:class:`RedisStats`)."""
        with self._cond:
            down = self._state != "up"
            current = time.monotonic() - self._down_since if down and self._outages else 0.0
            backlog = self._backlog_redis + self._backlog_kernel
            return RedisStats(
                connected=not down,
                published=self._published,
                received=self._received,
                lost=self._lost,
                missed=self._missed,
                outages=self._outages,
                outage_seconds=self._outage_total + current,
                current_outage_lost=self._lost_in_outage if down else 0,
                channels=len(self._confirmed),
                pending=len(self._pending) + self._in_flight,
                backlog_bytes=backlog,
                max_backlog_bytes=max(self._max_backlog, backlog),
                lag=self._lag,
                max_lag=self._max_lag,
            )

    def group_channel(self, name: str) -> str:
        """The channel of group ``name``."""
        return f"{self.channel_prefix}g:{name}"

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until connected; return whether it is.

        A process receives the messages published after it has subscribed: wait for
        this before announcing that members of this process are reachable.
        """
        return self._ready.wait(timeout)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every message queued so far was handed to Redis (or lost).

        Returns False if ``timeout`` seconds passed first. ``close()`` flushes too.
        """
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._in_flight, timeout)

    def start(self, hub: LocalHub) -> None:
        """Start the subscriber and publisher threads (:func:`~wsgiws.set_group_backend`)."""
        with self._cond:
            if self._closed:
                raise RuntimeError("this RedisBackend is closed")
            if self._started:
                return
            self._hub = hub
            self._started = True
        hub.listener = self._group_changed
        for name in hub.group_names():
            self._group_changed(name)
        self._start_threads()

    def _start_threads(self) -> None:
        self._subscriber = threading.Thread(
            target=self._subscribe_loop, name="wsgiws-redis-subscriber", daemon=True
        )
        self._publisher = threading.Thread(
            target=self._publish_loop, name="wsgiws-redis-publisher", daemon=True
        )
        self._subscriber.start()
        self._publisher.start()

    def publish(self, envelope: Envelope) -> None:
        """Queue ``envelope`` for publishing; never blocks (any thread)."""
        with self._cond:
            if self._closed or self._stopping:
                self._lose_locked(1, "the backend is closed")
                return
            if self._state == "down":
                self._lose_locked(1, "Redis is unreachable")
                return
            if len(self._pending) >= self.max_pending:
                self._lose_locked(1, f"more than max_pending={self.max_pending} queued")
                return
            self._pending.append(envelope)
            if len(self._pending) == 1:
                self._cond.notify_all()

    def close(self, timeout: float = 5.0) -> None:
        """Publish what is queued (for up to ``timeout`` seconds), then stop the threads.

        Messages still queued after ``timeout`` are counted and logged as lost.
        """
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._stopping = True
            self._cond.notify_all()
        hub = self._hub
        if hub is not None and hub.listener == self._group_changed:
            hub.listener = None
        deadline = time.monotonic() + timeout
        publisher = self._publisher
        if publisher is not None and publisher is not threading.current_thread():
            publisher.join(max(0.0, deadline - time.monotonic()))
        self._stop_event.set()
        self._wake()
        subscriber = self._subscriber
        if subscriber is not None and subscriber is not threading.current_thread():
            subscriber.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            left = len(self._pending)
            self._pending.clear()
            if left:
                self._lose_locked(left, "the backend closed before they were published")
            lost, unlogged = self._lost, self._unlogged
            self._unlogged = 0
            waiters = [e for events in self._waiters.values() for e in events]
            self._waiters.clear()
        for event in waiters:
            event.set()
        if unlogged:
            logger.warning("%d message(s) could not be published and are lost", unlogged)
        if lost:
            logger.warning("closed; %d message(s) were lost in this process in all", lost)
        else:
            logger.info("closed")
        for sock in (self._wake_r, self._wake_w):
            sock.close()

    def __repr__(self) -> str:
        kind = ", cluster=True" if self.cluster else ""
        return (
            f"RedisBackend({_safe_url(self.url)!r}{kind}, channel_prefix={self.channel_prefix!r})"
        )

    # -- subscriptions (any thread) --------------------------------------------------

    def _group_changed(self, name: str) -> None:
        """The hub gained its first member of group ``name`` or lost its last one.

        Reads the hub's membership under the backend's lock, so that the last call
        for a group sets the subscription its final membership needs, whatever the
        order in which concurrent joins and leaves got here. Waits (at most
        ``connect_timeout``) for Redis to confirm a new subscription while connected.
        """
        hub = self._hub
        if hub is None:
            return
        channel = self.group_channel(name).encode()
        event = None
        with self._cond:
            if self._closed:
                return
            if hub.has_group(name):
                self._wanted.add(channel)
                if self._state == "up" and channel not in self._confirmed:
                    event = threading.Event()
                    self._waiters.setdefault(channel, []).append(event)
            elif channel in self._wanted:
                self._wanted.discard(channel)
            else:
                return
        self._wake()
        if event is not None and not event.wait(self.connect_timeout):
            logger.warning(
                "Redis did not confirm the subscription to %s within %.1f s",
                channel.decode(errors="replace"),
                self.connect_timeout,
            )

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full (already woken) or closed
            self._wake_w.send(b"\0")

    # -- losses and state (under _cond) --------------------------------------------

    def _lose_locked(self, count: int, why: str) -> None:
        self._lost += count
        if self._state == "down":
            if not self._lost_in_outage:
                logger.warning(
                    "message(s) could not be published and are lost (%s); further "
                    "losses are counted until the connection is back",
                    why,
                )
            self._lost_in_outage += count
            return
        # Outside an outage (queue full, closing): log at once, then at most every
        # LOSS_LOG_INTERVAL with the sum since (the subscriber logs what is left).
        self._unlogged += count
        self._unlogged_why = why
        self._log_losses_locked()

    def _log_losses_locked(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._unlogged and (force or now - self._last_loss_log >= LOSS_LOG_INTERVAL):
            logger.warning(
                "%d message(s) could not be published and are lost (%s)",
                self._unlogged,
                self._unlogged_why,
            )
            self._unlogged = 0
            self._last_loss_log = now

    def _went_up(self) -> None:
        with self._cond:
            before = self._state
            self._state = "up"
            lost, self._lost_in_outage = self._lost_in_outage, 0
            outage = time.monotonic() - self._down_since
            if before == "down":
                self._outage_total += outage
            self._cond.notify_all()
        if before == "down":
            logger.warning(
                "reconnected to %s after an outage of %.1f s; %d message(s) sent by this "
                "process during the outage were lost, and messages other processes "
                "published meanwhile did not reach it",
                _safe_url(self.url),
                outage,
                lost,
            )
        else:
            logger.info("subscribed on %s", _safe_url(self.url))
        self._ready.set()  # after the log line, which tests and operators wait for

    def _went_down(self, exc: BaseException) -> None:
        """Start an outage (any thread); no-op during one."""
        self._ready.clear()
        with self._cond:
            before = self._state
            if before == "down":
                return
            self._state = "down"
            self._generation += 1  # the publishing connections predate the outage
            self._down_since = time.monotonic()
            self._outages += 1
            self._lost_in_outage = 0
            self._reset_requested = exc
            dropped = len(self._pending)
            self._pending.clear()
            if dropped:
                self._lose_locked(dropped, "Redis became unreachable")
            waiters = [e for events in self._waiters.values() for e in events]
            self._waiters.clear()
        for event in waiters:
            event.set()
        self._wake()
        if before == "up":
            logger.warning(
                "lost the connection to %s (%s: %s); local members are still served; reconnecting",
                _safe_url(self.url),
                type(exc).__name__,
                exc,
            )
        else:
            logger.warning(
                "cannot connect to %s (%s: %s); local members are served; retrying",
                _safe_url(self.url),
                type(exc).__name__,
                exc,
            )

    # -- connections ---------------------------------------------------------------

    def _open(self, address: str | None = None, name: str = "") -> Wire:
        kwargs = dict(self._connection_kwargs)
        if address is not None:
            host, _, port = address.rpartition(":")
            kwargs.update(host=host, port=int(port))
        kwargs["client_name"] = f"wsgiws:{os.getpid()}:{name}"
        connection = self._connection_class(**kwargs)
        connection.connect()
        if address is None:
            address = f"{kwargs.get('host', '')}:{kwargs.get('port', '')}"
        return Wire(connection, address)

    def _load_slots(self) -> None:
        """Read the cluster's slot map (cluster mode): from the URL's node, or, if it is
        unreachable, from any node of the last map."""
        candidates: list[str | None] = [None]
        candidates += sorted({address for _, _, address in self._slots})
        reply: Any = None
        for address in candidates:
            try:
                wire = self._open(address, name="topology")
            except (self._redis.RedisError, OSError):
                if address == candidates[-1]:
                    raise
                continue
            try:
                (reply,) = wire.call(_command("CLUSTER", "SLOTS"), timeout=self.connect_timeout)
            finally:
                wire.close()
            break
        if isinstance(reply, RespError):
            raise self._redis.ConnectionError(f"CLUSTER SLOTS failed: {reply}")
        default_host = str(self._connection_kwargs.get("host", "127.0.0.1"))
        slots = []
        for first, last, master, *_ in reply:
            host = master[0].decode() or default_host
            slots.append((int(first), int(last), f"{host}:{int(master[1])}"))
        if not slots:
            raise self._redis.ConnectionError("the cluster has no slots assigned")
        slots.sort()
        self._slots = slots

    def _node_of(self, channel: bytes) -> str:
        if not self.cluster:
            return ""
        slot = self._redis.crc.key_slot(channel)
        for first, last, address in self._slots:
            if first <= slot <= last:
                return address
        raise self._redis.ConnectionError(f"no cluster node serves slot {slot}")

    def _nodes(self) -> list[str]:
        return sorted({address for _, _, address in self._slots}) if self.cluster else [""]

    def _wire_for(self, address: str, wires: dict[str, Wire], name: str) -> Wire:
        wire = wires.get(address)
        if wire is None:
            wire = wires[address] = self._open(address or None, name)
        return wire

    # -- subscriber thread -------------------------------------------------------------

    def _subscribe_loop(self) -> None:
        errors: tuple[type[BaseException], ...] = (self._redis.RedisError, OSError, ValueError)
        delay = self.reconnect_delay
        while not self._stop_event.is_set():
            wires: dict[str, Wire] = {}
            try:
                self._session(wires)
            except _Stop:
                break
            except errors as exc:
                if not self._stop_event.is_set():
                    self._went_down(exc)
            except Exception as exc:  # pragma: no cover - a bug: log it, keep the thread alive
                logger.error("unexpected error in the Redis subscriber", exc_info=True)
                self._went_down(exc)
            finally:
                self._end_session()
                for wire in wires.values():
                    wire.close()
            if self._session_up:  # it worked for a while: retry soon
                delay = self.reconnect_delay
            if self._stop_event.wait(delay):
                break
            delay = min(delay * 2, self.reconnect_max_delay)

    def _end_session(self) -> None:
        with self._cond:
            self._asked.clear()
            self._confirmed.clear()
            self._outstanding.clear()
            self._subscriber_ids.clear()
            self._subscriber_wires = []
            self._backlog_kernel = 0
            self._backlog_redis = 0

    def _session(self, wires: dict[str, Wire]) -> None:
        """Connect, subscribe to every wanted channel, then read until an error."""
        self._session_up = False
        with self._cond:
            self._reset_requested = None
        if self.cluster:
            self._load_slots()
        for address in self._nodes():
            wire = self._wire_for(address, wires, "sub")
            (client_id,) = wire.call(_command("CLIENT", "ID"), timeout=self.connect_timeout)
            if isinstance(client_id, int):
                wire.client_id = client_id
        with self._cond:
            self._subscriber_ids = {a: w.client_id for a, w in wires.items() if w.client_id}
            self._subscriber_wires = list(wires.values())
        selector = selectors.DefaultSelector()
        try:
            selector.register(self._wake_r, selectors.EVENT_READ)
            for wire in wires.values():
                selector.register(wire.sock, selectors.EVENT_READ, wire)
            self._sync_subscriptions(wires)
            deadline = time.monotonic() + self.connect_timeout
            up = False
            while True:
                if self._stop_event.is_set():
                    raise _Stop
                if not up:
                    with self._cond:
                        up = self._asked.keys() <= self._confirmed
                    if up:
                        self._session_up = True
                        self._went_up()
                    elif time.monotonic() > deadline:
                        raise self._redis.TimeoutError("Redis did not confirm the subscriptions")
                self._serve_once(selector, wires, up)
        finally:
            selector.close()

    def _serve_once(
        self, selector: selectors.BaseSelector, wires: dict[str, Wire], up: bool
    ) -> None:
        interval = self.health_check_interval
        # Woken often enough that a silent Redis is noticed within 2.5 x interval.
        ready = selector.select(interval / 4)
        for key, _ in ready:
            if key.data is None:
                with contextlib.suppress(OSError):
                    while self._wake_r.recv(4096):
                        pass
                continue
        with self._cond:
            reset = self._reset_requested
        if reset is not None:
            raise self._redis.ConnectionError(f"reconnecting after a failure: {reset}")
        self._sync_subscriptions(wires)
        messages: list[tuple[bytes, bytes]] = []
        for key, _ in ready:
            wire = key.data
            if wire is not None:
                self._handle(wire, wire.read(), messages)
        if messages:
            self._dispatch(messages)
        now = time.monotonic()
        kernel = 0
        readable = {key.data for key, _ in ready}
        for wire in wires.values():
            if wire in readable:
                kernel += wire.unread()
                continue
            if wire.pinged:
                if now - wire.pinged_at > interval:
                    raise self._redis.TimeoutError(
                        f"no answer to a PING from Redis at {wire.address} within {interval} s"
                    )
            elif now - wire.last_read > interval:
                wire.pinged, wire.pinged_at = True, now
                wire.send(_command("PING"))
        with self._cond:
            if ready:
                self._backlog_kernel = kernel
            self._log_losses_locked()

    def _sync_subscriptions(self, wires: dict[str, Wire]) -> None:
        """Send the (un)subscriptions that make the session's match what is wanted."""
        with self._cond:
            add = [c for c in self._wanted if c not in self._asked]
            drop = [(a, c) for c, a in self._asked.items() if c not in self._wanted]
            for _, channel in drop:
                del self._asked[channel]
                self._confirmed.discard(channel)
            placed = [(self._node_of(c), c) for c in add]
            for address, channel in placed:
                self._asked[channel] = address
            for _, channel in placed + drop:
                self._outstanding[channel] = self._outstanding.get(channel, 0) + 1
        by_node: dict[str, list[bytes]] = {}
        for address, channel in drop:
            by_node.setdefault(address, []).append(_command(self._unsubscribe_cmd, channel))
        for address, channel in placed:
            by_node.setdefault(address, []).append(_command(self._subscribe_cmd, channel))
        for address, commands in by_node.items():
            wire = wires.get(address)
            if wire is None:  # a node not known at connection time: start again
                raise self._redis.ConnectionError(f"no connection to cluster node {address}")
            wire.send(b"".join(commands))

    def _handle(
        self, wire: Wire, values: Iterable[Any], messages: list[tuple[bytes, bytes]]
    ) -> None:
        for value in values:
            if isinstance(value, list) and len(value) == 3:
                kind = value[0]
                if kind == b"message" or kind == b"smessage":
                    messages.append((value[1], value[2]))
                elif kind in (b"subscribe", b"ssubscribe", b"unsubscribe", b"sunsubscribe"):
                    self._replied(value[1])
            elif isinstance(value, RespError):
                if value.args and str(value.args[0]).startswith("MOVED"):
                    raise self._redis.ConnectionError(f"the cluster changed: {value}")
                logger.warning("Redis at %s answered an error: %s", wire.address, value)

    def _replied(self, channel: bytes) -> None:
        """A (un)subscription reply: once all the channel's are in, its state is known."""
        with self._cond:
            left = self._outstanding.get(channel, 0) - 1
            if left < 0:
                # Redis ended a subscription by itself: a slot moved to another node.
                if channel in self._asked:
                    raise self._redis.ConnectionError(
                        f"Redis ended the subscription to {channel.decode(errors='replace')}"
                    )
                return
            if left:
                self._outstanding[channel] = left
                return
            del self._outstanding[channel]
            if channel not in self._asked:
                self._seen.pop(channel, None)
                return
            self._confirmed.add(channel)
            self._seen.pop(channel, None)  # a new subscription: a new sequence
            waiters = self._waiters.pop(channel, ())
        for event in waiters:
            event.set()

    def _dispatch(self, messages: list[tuple[bytes, bytes]]) -> None:
        """Parse a batch of messages once and hand them to the hub in one go."""
        own = self._own_prefix
        batch: list[tuple[Envelope, PreparedMessage]] = []
        seen = self._seen
        missed = 0
        lag = 0.0
        now = time.time()
        for channel, data in messages:
            if data.startswith(own):
                continue  # our own message: local members were served when it was sent
            try:
                received = unpack(data)
            except ValueError as exc:
                logger.warning(
                    "ignoring a malformed message on %s (%s)", channel.decode(errors="replace"), exc
                )
                continue
            origins = seen.get(channel)
            if origins is None:
                origins = seen[channel] = {}
            last = origins.get(received.origin)
            if last is not None:
                if received.seq <= last:
                    continue  # already delivered
                if received.seq > last + 1:
                    missed += received.seq - last - 1
                    logger.warning(
                        "%d message(s) from %s on %s did not arrive",
                        received.seq - last - 1,
                        received.origin.decode(errors="replace"),
                        channel.decode(errors="replace"),
                    )
            elif len(origins) >= MAX_ORIGINS:
                origins.pop(next(iter(origins)))
            origins[received.origin] = received.seq
            lag = now - received.published
            batch.append((received.envelope, PreparedMessage(received.envelope.message)))
        with self._cond:
            self._received += len(batch)
            self._missed += missed
            if batch:
                self._lag = max(lag, 0.0)
                self._max_lag = max(self._max_lag, self._lag)
        hub = self._hub
        if hub is not None and batch:
            hub.deliver_batch(batch)

    # -- publisher thread ----------------------------------------------------------------

    def _publish_loop(self) -> None:
        next_check = time.monotonic()
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    left = next_check - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                if not self._pending and self._stopping:
                    break  # stopping, and everything was published
                batch = [self._pending.popleft() for _ in range(min(BATCH, len(self._pending)))]
                state = self._state
                generation = self._generation
                self._in_flight = len(batch)
            if generation != self._publish_generation:
                self._drop_publish_wires()
                self._publish_generation = generation
            try:
                if batch:
                    self._publish_batch(batch, state)
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + self.backlog_check_interval
                    if state == "up":
                        self._check_backlog()
            finally:
                with self._cond:
                    self._in_flight = 0
                    self._cond.notify_all()
        for wire in self._publish_wires.values():
            wire.close()
        self._publish_wires.clear()

    def _drop_publish_wires(self) -> None:
        for wire in self._publish_wires.values():
            wire.close()
        self._publish_wires.clear()

    def _publish_batch(self, batch: list[Envelope], state: State) -> None:
        errors: tuple[type[BaseException], ...] = (self._redis.RedisError, OSError, ValueError)
        if state == "down":
            with self._cond:
                self._lose_locked(len(batch), "Redis is unreachable")
            return
        now = time.time()
        by_node: dict[str, list[bytes]] = {}
        for envelope in batch:
            if envelope.kind == "group":
                channel = self.group_channel(envelope.target).encode()
            else:
                channel = self.channel.encode()
            seq = self._seqs.get(channel, 0) + 1
            self._seqs[channel] = seq
            self._seqs.move_to_end(channel)
            if len(self._seqs) > MAX_SEQUENCES:
                self._seqs.popitem(last=False)
            data = pack(self._origin, seq, envelope, now)
            by_node.setdefault(self._node_of(channel), []).append(
                _command(self._publish_cmd, channel, data)
            )
        done = 0
        try:
            for address, commands in by_node.items():
                wire = self._wire_for(address, self._publish_wires, "pub")
                replies = wire.call(*commands, timeout=self.connect_timeout)
                failed = [r for r in replies if isinstance(r, RespError)]
                done += len(commands) - len(failed)
                if failed:
                    raise self._redis.ConnectionError(f"publishing failed: {failed[0]}")
        except errors as exc:
            self._drop_publish_wires()
            with self._cond:
                self._published += done
            self._went_down(exc)
            with self._cond:
                self._lose_locked(len(batch) - done, f"publishing failed: {exc}")
            return
        with self._cond:
            self._published += done

    def _check_backlog(self) -> None:
        """Ask each node for the output buffer of this process's subscribing connection."""
        with self._cond:
            ids = dict(self._subscriber_ids)
            # Also what the kernel holds unread, while the subscriber is busy.
            kernel = sum(wire.unread() for wire in self._subscriber_wires)
            self._backlog_kernel = kernel
        total = 0
        try:
            for address, client_id in ids.items():
                wire = self._wire_for(address, self._publish_wires, "pub")
                (reply,) = wire.call(
                    _command("CLIENT", "LIST", "ID", client_id), timeout=self.connect_timeout
                )
                if isinstance(reply, bytes):
                    for field in reply.split():
                        if field.startswith(b"omem="):
                            total += int(field[5:])
        except (self._redis.RedisError, OSError, ValueError):
            self._drop_publish_wires()
            return  # the subscriber notices a failure on its own
        now = time.monotonic()
        with self._cond:
            self._backlog_redis = total
            backlog = total + self._backlog_kernel
            self._max_backlog = max(self._max_backlog, backlog)
            warn = backlog > self.backlog_warning and (
                now - self._last_backlog_log >= LOSS_LOG_INTERVAL
            )
            if warn:
                self._last_backlog_log = now
            lag = self._lag
        if warn:
            logger.warning(
                "the subscriber is falling behind: %.1f MiB wait for it in Redis and the "
                "kernel, last message received %.2f s after it was sent (Redis drops a "
                "subscriber past its client-output-buffer-limit for pubsub)",
                backlog / (1024 * 1024),
                lag,
            )

    # -- fork ----------------------------------------------------------------------

    def _after_fork_in_child(self, hub: LocalHub) -> None:
        # The parent's threads do not exist here, and its sockets belong to it:
        # abandon both (redis-py does not shut down a connection of another pid).
        for sock in (self._wake_r, self._wake_w):
            sock.close()
        self._init_state()
        if self._started and not self._closed:
            self._hub = hub
            hub.listener = self._group_changed
            self._start_threads()


_live: weakref.WeakSet[RedisBackend] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for backend in list(_live):
        backend._after_fork_in_child(hub)


def _close_at_exit() -> None:
    # Runs after the servers closed (lifecycle.ExitStage), so that what their
    # on_close handlers sent is published before the backends go.
    for backend in list(_live):
        backend.close()


lifecycle.at_exit(lifecycle.ExitStage.BACKENDS, _close_at_exit)
lifecycle.after_fork_in_child(lifecycle.ForkStage.BACKENDS, _after_fork_in_child)
