"""``RedisBackend``: group messages across processes and machines through Redis pub/sub.

Install with ``pip install "wsgiws[redis]"``, then, once per process (in each gunicorn
worker, or before the fork with ``--preload``)::

    import wsgiws
    from wsgiws.redis_groups import RedisBackend

    wsgiws.set_group_backend(RedisBackend("redis://127.0.0.1:6379/0"))

Theory of operation
-------------------

Every process subscribes to one channel, ``<channel_prefix>messages``, and publishes
every group message, broadcast and ``send_to`` of a connection it does not hold to
it; each process then delivers to its own members. One channel rather than one per
group keeps delivery exactly-once without a subscription race (a member that joined
a group is reachable as soon as ``join()`` returns), at the cost of every process
seeing every message: the right trade for a handful of workers and machines.

Exactly once. The sending process delivers to its own members directly (at once,
and also while Redis is unreachable), then publishes. Each published message carries
the sender's *origin* (host, pid and a random part, new in each forked child) and a
sequence number; a process ignores its own messages when Redis echoes them back, and
drops any message whose sequence number it has already seen from that origin.

Threads. ``publish()`` never blocks: it appends to a bounded queue. A *publisher*
thread sends the queue to Redis in pipelined batches; a *subscriber* thread reads
the channel and delivers (which never blocks either, see :mod:`wsgiws.groups`).
Both are daemon threads, started by :meth:`RedisBackend.start` and started again in
the child after ``os.fork()``.

Losing Redis. When the subscriber's connection fails, the backend logs a warning,
goes *down*, and reconnects with exponential backoff (``reconnect_delay`` doubling
up to ``reconnect_max_delay``). Meanwhile local members are still served, and each
message this process could not publish is counted as lost: the first loss of an
outage is logged at once and the total when the connection is back (and at close).
A message that another process published while this one was cut off never reaches
it; its sequence number shows the gap, which is logged as lost when the next message
from that origin arrives. Delivery across processes is therefore at most once,
and every loss is reported, none silently dropped. :attr:`RedisBackend.lost_messages`
counts the losses of this process.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import secrets
import socket
import threading
import time
import weakref
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from . import lifecycle
from .groups import Envelope, LocalHub, hub
from .log import redis_logger as logger
from .protocol import PreparedMessage

__all__ = ["RedisBackend"]


#: First token of every published message: the format and its version.
MAGIC: Final = b"wsgiws/1"
#: Messages sent to Redis per pipelined round trip.
BATCH: Final = 256
#: Origins whose last sequence number is remembered (least recently heard dropped).
MAX_ORIGINS: Final = 4096
#: Seconds the subscriber waits for a message before checking whether to stop.
POLL_INTERVAL: Final = 0.25
#: Seconds between two warnings about lost messages while connected.
LOSS_LOG_INTERVAL: Final = 5.0

_KINDS: Final = ("group", "all", "one")
State = Literal["connecting", "up", "down"]


def _import_redis() -> Any:
    try:
        import redis.backoff
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
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def pack(origin: str, seq: int, envelope: Envelope) -> bytes:
    """Serialise ``envelope`` for the channel: a JSON header line, then the payload."""
    message = envelope.message
    binary = not isinstance(message, str)
    payload = bytes(message) if not isinstance(message, str) else message.encode()
    header = {
        "o": origin,
        "s": seq,
        "k": envelope.kind,
        "t": envelope.target,
        "x": envelope.exclude,
        "b": binary,
    }
    encoded = json.dumps(header, separators=(",", ":")).encode()
    return b"".join((MAGIC, b" ", encoded, b"\n", payload))


@dataclasses.dataclass(frozen=True, slots=True)
class _Received:
    origin: str
    seq: int
    envelope: Envelope
    prepared: PreparedMessage


def unpack(data: bytes) -> _Received:
    """Parse what :func:`pack` made; the frame is encoded here, once per process.

    Raises:
        ValueError: ``data`` is not a well-formed message.
    """
    head, sep, payload = data.partition(b"\n")
    magic, _, header_json = head.partition(b" ")
    if not sep or magic != MAGIC:
        raise ValueError("not a wsgiws message")
    header = json.loads(header_json)
    if not isinstance(header, dict):
        raise ValueError("bad header")
    origin, seq, kind = header.get("o"), header.get("s"), header.get("k")
    target, exclude, binary = header.get("t"), header.get("x"), header.get("b")
    if (
        not isinstance(origin, str)
        or not isinstance(seq, int)
        or kind not in _KINDS
        or not isinstance(target, str)
        or not (exclude is None or isinstance(exclude, str))
        or not isinstance(binary, bool)
    ):
        raise ValueError("bad header")
    message: str | bytes = payload if binary else payload.decode()  # a ValueError if bad
    envelope = Envelope(kind, target, message, exclude)
    return _Received(origin, seq, envelope, PreparedMessage(message))


class RedisBackend:
    """Carry group messages to every process subscribed to the same Redis channel.

    Args:
        url: the Redis server, as ``redis.Redis.from_url`` takes it
            (``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` for TLS,
            ``unix://``). Pub/sub ignores the database number.
        channel_prefix: prefix of the channel name; deployments sharing one Redis
            use different prefixes.
        max_pending: messages queued for publishing before further ones are counted
            as lost (Redis slower than the senders).
        connect_timeout: seconds to connect to Redis; ``None`` waits forever.
        reconnect_delay: seconds before the first reconnection attempt; it doubles
            after each failure, up to ``reconnect_max_delay``.
        reconnect_max_delay: the cap of that delay.
        health_check_interval: seconds of silence after which the subscriber checks
            its connection with a PING; ``None`` disables it. Detects a dead peer that
            sent no FIN (a broken network).

    Raises:
        ImportError: the ``redis`` package is not installed.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        channel_prefix: str = "wsgiws:",
        max_pending: int = 10_000,
        connect_timeout: float | None = 5.0,
        reconnect_delay: float = 0.1,
        reconnect_max_delay: float = 5.0,
        health_check_interval: float | None = 10.0,
    ) -> None:
        self._redis = _import_redis()
        if not isinstance(url, str) or not url:
            raise ValueError(f"url must be a redis:// URL, got {url!r}")
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending <= 0:
            raise ValueError(f"max_pending must be a positive integer, got {max_pending!r}")
        for name, value in (
            ("reconnect_delay", reconnect_delay),
            ("reconnect_max_delay", reconnect_max_delay),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        for name, maybe in (
            ("connect_timeout", connect_timeout),
            ("health_check_interval", health_check_interval),
        ):
            if maybe is not None and (
                isinstance(maybe, bool) or not isinstance(maybe, (int, float)) or maybe <= 0
            ):
                raise ValueError(f"{name} must be a positive number of seconds or None")
        self.url = url
        #: The channel every process publishes to and subscribes to.
        self.channel = f"{channel_prefix}messages"
        self.max_pending = max_pending
        self.connect_timeout = connect_timeout
        self.reconnect_delay = float(reconnect_delay)
        self.reconnect_max_delay = float(max(reconnect_max_delay, reconnect_delay))
        self.health_check_interval = health_check_interval
        self._hub: LocalHub | None = None
        self._started = False
        self._closed = False
        self._init_state()
        _live.add(self)

    def _init_state(self) -> None:
        """(Re)create everything a process owns alone: locks, queue, threads, origin."""
        self._origin = _new_origin()
        self._cond = threading.Condition(threading.Lock())
        self._pending: collections.deque[Envelope] = collections.deque()
        self._stopping = False
        self._state: State = "connecting"
        self._ready = threading.Event()
        self._stop_event = threading.Event()
        self._down_since = 0.0
        self._lost = 0
        self._lost_in_outage = 0
        self._unlogged = 0
        self._last_loss_log = -LOSS_LOG_INTERVAL
        self._seq = 0
        self._in_flight = 0
        self._publish_client: Any = None
        self._seen: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._publisher: threading.Thread | None = None
        self._subscriber: threading.Thread | None = None

    # -- public --------------------------------------------------------------------

    @property
    def origin(self) -> str:
        """This process's origin id, carried by each message it publishes."""
        return self._origin

    @property
    def connected(self) -> bool:
        """True while subscribed to the channel (Redis reachable)."""
        return self._state == "up"

    @property
    def lost_messages(self) -> int:
        """Messages this process could not publish (Redis unreachable, or queue full)."""
        with self._cond:
            return self._lost

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until subscribed; return whether it is.

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
        self._stop_event.set()
        deadline = time.monotonic() + timeout
        for thread in (self._publisher, self._subscriber):
            if thread is not None and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            left = len(self._pending)
            self._pending.clear()
            if left:
                self._lose_locked(left, "the backend closed before they were published")
            lost = self._lost
            self._unlogged = 0
        if lost:
            logger.warning("closed; %d message(s) were lost in this process in all", lost)
        else:
            logger.info("closed")

    def __repr__(self) -> str:
        return f"RedisBackend({_safe_url(self.url)!r}, channel={self.channel!r})"

    # -- losses and state (under _cond) --------------------------------------------

    def _lose_locked(self, count: int, why: str) -> None:
        self._lost += count
        self._lost_in_outage += count
        if self._state == "down":
            if self._lost_in_outage == count:
                logger.warning(
                    "%d message(s) could not be published and are lost (%s); further "
                    "losses are counted until the connection is back",
                    count,
                    why,
                )
            return
        # Up: log at once, then at most every LOSS_LOG_INTERVAL with the sum since.
        self._unlogged += count
        now = time.monotonic()
        if now - self._last_loss_log >= LOSS_LOG_INTERVAL:
            logger.warning(
                "%d message(s) could not be published and are lost (%s)", self._unlogged, why
            )
            self._unlogged = 0
            self._last_loss_log = now

    def _went_up(self) -> None:
        with self._cond:
            before = self._state
            self._state = "up"
            lost, self._lost_in_outage = self._lost_in_outage, 0
            self._cond.notify_all()
        if before == "down":
            outage = time.monotonic() - self._down_since
            logger.warning(
                "reconnected to %s after %.1f s; %d message(s) sent by this process "
                "while cut off were lost, and messages other processes published "
                "meanwhile did not reach it",
                _safe_url(self.url),
                outage,
                lost,
            )
        else:
            logger.info("subscribed to %s on %s", self.channel, _safe_url(self.url))
        self._ready.set()  # after the log line, which tests and operators wait for

    def _went_down(self, exc: BaseException) -> None:
        self._ready.clear()
        with self._cond:
            before = self._state
            if before == "down":
                return
            self._state = "down"
            self._down_since = time.monotonic()
            self._lost_in_outage = 0
            dropped = len(self._pending)
            self._pending.clear()
            if dropped:
                self._lose_locked(dropped, "Redis became unreachable")
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

    # -- threads -------------------------------------------------------------------

    def _client(self) -> Any:
        redis = self._redis
        return redis.Redis.from_url(
            self.url,
            socket_connect_timeout=self.connect_timeout,
            socket_keepalive=True,
            health_check_interval=self.health_check_interval or 0,
            # Failures surface here, so that they are logged and counted.
            retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0),
        )

    def _subscribe_loop(self) -> None:
        errors: tuple[type[BaseException], ...] = (self._redis.RedisError, OSError)
        delay = self.reconnect_delay
        while not self._stop_event.is_set():
            client = pubsub = None
            try:
                client = self._client()
                pubsub = client.pubsub()
                pubsub.subscribe(self.channel)
                self._await_subscription(pubsub)
                self._went_up()
                delay = self.reconnect_delay
                while not self._stop_event.is_set():
                    message = pubsub.get_message(timeout=POLL_INTERVAL)
                    if message is not None and message.get("type") == "message":
                        self._received(message["data"])
            except errors as exc:
                if not self._stop_event.is_set():
                    self._went_down(exc)
            except Exception:  # pragma: no cover - a bug: log it, keep the thread alive
                logger.error("unexpected error in the Redis subscriber", exc_info=True)
                self._went_down(RuntimeError("unexpected error"))
            finally:
                for resource in (pubsub, client):
                    if resource is not None:
                        with contextlib.suppress(Exception):  # closing a broken connection
                            resource.close()
            if self._stop_event.wait(delay):
                break
            delay = min(delay * 2, self.reconnect_max_delay)

    def _await_subscription(self, pubsub: Any) -> None:
        limit = self.connect_timeout if self.connect_timeout is not None else 30.0
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=POLL_INTERVAL)
            if message is not None and message.get("type") == "subscribe":
                return
            if self._stop_event.is_set():
                raise self._redis.ConnectionError("stopping")
        raise self._redis.TimeoutError("no subscription confirmation from Redis")

    def _received(self, data: bytes) -> None:
        try:
            received = unpack(data)
        except ValueError as exc:
            logger.warning("ignoring a malformed message on %s (%s)", self.channel, exc)
            return
        if received.origin == self._origin:
            return  # our own message: local members were served when it was sent
        last = self._seen.get(received.origin)
        if last is not None:
            if received.seq <= last:
                return  # already delivered
            if received.seq > last + 1:
                logger.warning(
                    "%d message(s) from %s did not arrive (Redis was unreachable for "
                    "one of the two processes)",
                    received.seq - last - 1,
                    received.origin,
                )
            self._seen.move_to_end(received.origin)
        self._seen[received.origin] = received.seq
        if len(self._seen) > MAX_ORIGINS:
            self._seen.popitem(last=False)
        hub = self._hub
        if hub is not None:
            hub.deliver(received.envelope, received.prepared)

    def _publish_loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if not self._pending:
                    break  # stopping, and everything was published
                batch = [self._pending.popleft() for _ in range(min(BATCH, len(self._pending)))]
                state = self._state
                self._in_flight = len(batch)
            try:
                self._publish_batch(batch, state)
            finally:
                with self._cond:
                    self._in_flight = 0
                    self._cond.notify_all()
        if self._publish_client is not None:
            with contextlib.suppress(Exception):
                self._publish_client.close()

    def _publish_batch(self, batch: list[Envelope], state: State) -> None:
        errors: tuple[type[BaseException], ...] = (self._redis.RedisError, OSError)
        if state == "down":
            with self._cond:
                self._lose_locked(len(batch), "Redis is unreachable")
            return
        try:
            client = self._publish_client
            if client is None:
                client = self._publish_client = self._client()
            pipe = client.pipeline(transaction=False)
            for envelope in batch:
                self._seq += 1
                pipe.publish(self.channel, pack(self._origin, self._seq, envelope))
            pipe.execute()
        except errors as exc:
            with self._cond:
                self._lose_locked(len(batch), f"publishing failed: {type(exc).__name__}: {exc}")
        except Exception:  # pragma: no cover - a bug: log it, keep the thread alive
            logger.error("unexpected error in the Redis publisher", exc_info=True)
            with self._cond:
                self._lose_locked(len(batch), "unexpected error")

    # -- fork ----------------------------------------------------------------------

    def _after_fork_in_child(self, hub: LocalHub) -> None:
        # The parent's threads do not exist here, and its sockets belong to it:
        # abandon both (redis-py does not shut down a connection of another pid).
        self._init_state()
        if self._started and not self._closed:
            self._hub = hub
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
