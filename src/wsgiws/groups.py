"""Named groups and broadcast, from any thread, across processes through a backend.

Theory of operation
-------------------

Two layers:

* The :class:`LocalHub` (one per process, :data:`hub`) knows the connections of this
  process: every connection from the moment its handshake request is routed (so that
  ``on_connect`` may join a group) until its ``on_close`` has returned, and which
  groups each one joined. Delivering a message to local members encodes it once as a
  :class:`~wsgiws.protocol.PreparedMessage` (one plain frame, and one compressed frame
  for the members that negotiated permessage-deflate) and queues the same bytes to each
  member with :meth:`Member.send_prepared` (a :class:`~wsgiws.session.Session`),
  which never blocks: a member that does not read fills its own outgoing buffer up to
  the ``write_limit`` option and is then closed with 1008, without delaying the
  others. A member that is closed or closing is skipped.
* A :class:`GroupBackend` carries messages to the *other* processes. The sender's
  process always delivers to its own members directly, then hands the message to the
  backend; a backend delivers what it receives from other processes through
  :meth:`LocalHub.deliver` and never delivers a message back to the process that
  sent it. Hence each member receives each message once, and local members keep
  being served when the backend's broker is unreachable. The default
  :class:`InMemoryBackend` has no other process to reach; the Redis backend lives in
  :mod:`wsgiws.redis_groups`.

The backend is process-wide (:func:`set_group_backend`): groups span every
:class:`~wsgiws.Server` of the process, and a WSGI view with no server at hand can
send to them.

A connection leaves all its groups when its lifecycle ends, right **after** its
``on_close`` handler returns, so ``on_close`` still sees :attr:`WebSocket.groups
<wsgiws.WebSocket.groups>` and may tell the rest of a group that it left (messages to
the closed member itself are skipped). A connection refused during the handshake
leaves its groups when the refusal is final.

After ``os.fork()`` the child starts with an empty hub: the connections belong to the
parent (see :mod:`wsgiws.lifecycle` for when this runs).

The hub knows a connection only through the :class:`Member` interface: this module
imports neither the connection nor the server. The server hands the hub to each
connection it creates.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal, Protocol, Union

from . import lifecycle
from .exceptions import ConnectionClosed
from .log import groups_logger as logger
from .loop import Burst, current_burst
from .protocol import PreparedMessage

if TYPE_CHECKING:
    from .websocket import WebSocket

__all__ = [
    "Envelope",
    "Group",
    "GroupBackend",
    "InMemoryBackend",
    "LocalHub",
    "Member",
    "broadcast",
    "get_group_backend",
    "group",
    "hub",
    "send_to",
    "set_group_backend",
]

#: What ``exclude=`` accepts: a WebSocket, a connection id, or ``None``.
Exclude = Union["WebSocket", str, None]
#: A message: ``str`` is sent as text, any bytes-like object as binary.
Message = str | bytes | bytearray | memoryview


class Member(Protocol):
    """What the hub needs of a connection. Every member: any thread."""

    @property
    def id(self) -> str:
        """A unique, random identifier of the connection."""

    @property
    def host(self) -> object:
        """The server the connection belongs to (compared by identity)."""

    @property
    def websocket(self) -> WebSocket | None:
        """The handlers' view of the connection, once its handshake was routed."""

    @property
    def close_code(self) -> int | None:
        """The close code that ended the connection, or ``None``."""

    @property
    def close_reason(self) -> str:
        """The close reason that goes with :attr:`close_code`."""

    def is_open(self) -> bool:
        """True while messages can be sent."""

    def send_prepared(self, message: PreparedMessage) -> None:
        """Send a message encoded once; :exc:`~wsgiws.ConnectionClosed` if not open."""

    def queue_prepared(
        self, message: PreparedMessage, burst: Burst | None = None
    ) -> Callable[[], None] | None:
        """Queue a message encoded once, without a system call, for ``burst`` (the
        sending thread's handler call) or else the connection's loop thread to write;
        :exc:`~wsgiws.ConnectionClosed` if not open.

        Returns a wake-up to call (once per distinct wake-up) after queueing to every
        addressee, or None when none is needed.
        """


@dataclasses.dataclass(frozen=True, slots=True)
class Envelope:
    """A message and its addressees, as backends carry it between processes.

    Attributes:
        kind: ``"group"`` (the members of group ``target``), ``"all"`` (every
            connection; ``target`` is empty) or ``"one"`` (the connection whose id is
            ``target``).
        target: the group name or the connection id.
        message: ``str`` for a text message, ``bytes`` for a binary one.
        exclude: the id of a connection not to deliver to, or ``None``.
    """

    kind: Literal["group", "all", "one"]
    target: str
    message: str | bytes
    exclude: str | None = None


class GroupBackend(Protocol):
    """Carries group messages between processes (see the module docstring).

    :func:`set_group_backend` calls :meth:`start` once, then :meth:`publish` is
    called for every message sent in this process (from any thread, after local
    delivery), and :meth:`close` when the backend is replaced or at exit.
    """

    def start(self, hub: LocalHub) -> None:
        """Begin receiving messages from other processes and deliver them to ``hub``."""

    def publish(self, envelope: Envelope) -> None:
        """Carry ``envelope`` to every other process. Must not block for long."""

    def close(self) -> None:
        """Stop; messages not yet carried may be lost (and should be logged)."""


class InMemoryBackend:
    """The default backend: one process, nothing to carry anywhere else."""

    def start(self, hub: LocalHub) -> None:
        """Nothing to receive: no other process is reachable."""

    def publish(self, envelope: Envelope) -> None:
        """Nothing to do: local members were already served."""

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return "InMemoryBackend()"


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"group name must be a str, got {type(name).__name__}")
    if not name:
        raise ValueError("group name must not be empty")
    return name


def _exclude_id(exclude: Exclude) -> str | None:
    if exclude is None or isinstance(exclude, str):
        return exclude
    return exclude.id


def _frozen_message(message: Message) -> str | bytes:
    # A bytearray or memoryview may change after send() returns: keep a copy
    # (bytes() of a bytes object is that object, no copy).
    if isinstance(message, str):
        return message
    if isinstance(message, (bytes, bytearray, memoryview)):
        return bytes(message)
    raise TypeError(f"message must be str or bytes, not {type(message).__name__}")


class LocalHub:
    """The connections of this process and the groups they joined (thread-safe).

    Every method may be called from any thread. Backends use :meth:`deliver`; the
    rest is used by :class:`~wsgiws.WebSocket`, :class:`Group` and the connection.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: dict[str, Member] = {}
        self._groups: dict[str, dict[str, Member]] = {}
        self._member_of: dict[str, set[str]] = {}
        # Cached member tuples, so that sending to a big group does not copy it.
        self._snapshots: dict[str, tuple[Member, ...]] = {}
        self._all: tuple[Member, ...] | None = None
        #: Called (outside the hub's lock) with a group's name when the group gains
        #: its first member in this process or loses its last one; a backend that
        #: subscribes per group sets it (and reads :meth:`has_group`).
        self.listener: Callable[[str], None] | None = None

    def _changed(self, names: Iterable[str]) -> None:
        listener = self.listener
        if listener is not None:
            for name in names:
                listener(name)

    # -- registration (the connection calls these) ---------------------------------

    def register(self, connection: Member) -> None:
        """Make ``connection`` reachable by id and by broadcast."""
        with self._lock:
            self._connections[connection.id] = connection
            self._member_of.setdefault(connection.id, set())
            self._all = None

    def unregister(self, connection: Member) -> None:
        """Forget ``connection`` and remove it from every group it joined."""
        emptied = []
        with self._lock:
            if self._connections.pop(connection.id, None) is None:
                return
            self._all = None
            for name in self._member_of.pop(connection.id, ()):
                members = self._groups.get(name)
                if members is None:
                    continue
                members.pop(connection.id, None)
                self._snapshots.pop(name, None)
                if not members:
                    del self._groups[name]
                    emptied.append(name)
        self._changed(emptied)

    # -- membership ----------------------------------------------------------------

    def join(self, connection: Member, name: str) -> None:
        """Add ``connection`` to group ``name`` (no-op if it is a member already).

        Raises:
            ConnectionClosed: the connection's lifecycle is over.
        """
        _check_name(name)
        with self._lock:
            if self._connections.get(connection.id) is not connection:
                raise ConnectionClosed(connection.close_code, connection.close_reason)
            names = self._member_of[connection.id]
            if name in names:
                return
            names.add(name)
            members = self._groups.get(name)
            created = members is None
            if members is None:
                members = self._groups[name] = {}
            members[connection.id] = connection
            self._snapshots.pop(name, None)
        if created:
            self._changed((name,))

    def leave(self, connection: Member, name: str) -> None:
        """Remove ``connection`` from group ``name`` (no-op if it is not a member)."""
        _check_name(name)
        with self._lock:
            names = self._member_of.get(connection.id)
            if names is None or name not in names:
                return
            names.discard(name)
            members = self._groups[name]
            members.pop(connection.id, None)
            self._snapshots.pop(name, None)
            if members:
                return
            del self._groups[name]
        self._changed((name,))

    def groups_of(self, connection: Member) -> frozenset[str]:
        """The names of the groups ``connection`` belongs to."""
        with self._lock:
            return frozenset(self._member_of.get(connection.id, ()))

    def group_names(self) -> frozenset[str]:
        """The names of the groups with at least one member in this process."""
        with self._lock:
            return frozenset(self._groups)

    def has_group(self, name: str) -> bool:
        """Whether group ``name`` has a member in this process."""
        with self._lock:
            return name in self._groups

    def find(self, connection_id: str) -> Member | None:
        """The connection of this process with id ``connection_id``, if any."""
        with self._lock:
            return self._connections.get(connection_id)

    def _group_snapshot(self, name: str) -> tuple[Member, ...]:
        with self._lock:
            snapshot = self._snapshots.get(name)
            if snapshot is None:
                members = self._groups.get(name)
                if not members:
                    return ()
                snapshot = self._snapshots[name] = tuple(members.values())
            return snapshot

    def _all_snapshot(self) -> tuple[Member, ...]:
        with self._lock:
            if self._all is None:
                self._all = tuple(self._connections.values())
            return self._all

    def members(self, name: str) -> list[WebSocket]:
        """The open members of group ``name`` in this process, in joining order."""
        return [
            c.websocket
            for c in self._group_snapshot(name)
            if c.websocket is not None and c.is_open()
        ]

    def connections(self, host: object | None = None) -> tuple[Member, ...]:
        """The connections of this process (of server ``host`` only, if given)."""
        everything = self._all_snapshot()
        if host is None:
            return everything
        return tuple(c for c in everything if c.host is host)

    # -- delivery ------------------------------------------------------------------

    def deliver(self, envelope: Envelope, prepared: PreparedMessage | None = None) -> int:
        """Queue ``envelope``'s message to its addressees in this process.

        The frame is encoded once (or ``frame`` is used as is) and the same bytes go
        to every addressee. Returns the number of connections it was queued to.
        Called by backends for messages from other processes, from any thread.
        """
        if prepared is None:
            prepared = PreparedMessage(envelope.message)
        return send_prepared_to(self._targets(envelope), prepared, envelope.exclude)

    def _targets(self, envelope: Envelope) -> tuple[Member, ...]:
        if envelope.kind == "group":
            return self._group_snapshot(envelope.target)
        if envelope.kind == "all":
            return self._all_snapshot()
        connection = self.find(envelope.target)
        return (connection,) if connection is not None else ()

    def deliver_batch(self, batch: list[tuple[Envelope, PreparedMessage]]) -> int:
        """Queue several messages to their addressees, each member's in one write.

        Each member gets, in one :meth:`Member.send_prepared`, the frames of the
        messages of ``batch`` meant for it, in order; members that get the same
        messages share the same joined bytes. Returns the number of (message, member)
        deliveries. Used by backends for what they receive from other processes,
        from any thread.
        """
        if len(batch) == 1:
            return self.deliver(*batch[0])
        per_member: dict[Member, list[int]] = {}
        for index, (envelope, _) in enumerate(batch):
            exclude = envelope.exclude
            for connection in self._targets(envelope):
                if connection.id == exclude:
                    continue
                indices = per_member.get(connection)
                if indices is None:
                    per_member[connection] = [index]
                else:
                    indices.append(index)
        shared: dict[tuple[int, ...], PreparedMessage] = {}
        wakes: set[Callable[[], None]] = set()
        sent = 0
        for connection, indices in per_member.items():
            key = tuple(indices)
            prepared = shared.get(key)
            if prepared is None:
                if len(key) == 1:
                    prepared = batch[key[0]][1]
                else:
                    prepared = PreparedBatch([batch[i][1] for i in key])
                shared[key] = prepared
            try:
                wake = connection.queue_prepared(prepared)
            except ConnectionClosed:
                continue
            if wake is not None:
                wakes.add(wake)
            sent += len(key)
        for wake in wakes:
            wake()
        return sent

    def reset_after_fork(self) -> None:
        """Forget everything, with a new lock (in a forked child, before any thread)."""
        self._lock = threading.Lock()
        self._connections = {}
        self._groups = {}
        self._member_of = {}
        self._snapshots = {}
        self._all = None


class PreparedBatch(PreparedMessage):
    """Several prepared messages sent as one write: their frames, joined once per variant."""

    __slots__ = ("_parts",)

    def __init__(self, parts: list[PreparedMessage]) -> None:
        self._parts = parts
        self._frames = {}

    def frame(self, deflate_bits: int | None = None) -> bytes:
        """The frames of every message for a connection with window ``deflate_bits``."""
        frame = self._frames.get(deflate_bits)
        if frame is None:
            frame = self._frames[deflate_bits] = b"".join(
                part.frame(deflate_bits) for part in self._parts
            )
        return frame


def send_prepared_to(
    connections: tuple[Member, ...] | list[Member],
    message: PreparedMessage,
    exclude: str | None = None,
) -> int:
    """Queue the encoded ``message`` to each connection; skip closed ones and ``exclude``.

    No system call per connection: each frame joins its connection's outgoing
    buffer (:meth:`Member.queue_prepared`). In a handler call (the thread has an
    open :class:`~wsgiws.loop.Burst`) the buffers are written when the handler
    returns, or sooner (see :class:`~wsgiws.loop.Burst`); elsewhere each loop
    concerned is woken once, at the end, to write them. Either way a connection
    sent many messages in a short time receives them in few ``send`` calls.

    Returns the number of connections the frame was queued to.
    """
    sent = 0
    first: Callable[[], None] | None = None
    others: set[Callable[[], None]] | None = None
    burst = current_burst()
    if burst is not None:
        burst.sending = True
    for connection in connections:
        if exclude is not None and connection.id == exclude:
            continue
        try:
            wake = connection.queue_prepared(message, burst)
        except ConnectionClosed:
            continue
        sent += 1
        if wake is not None:
            if first is None:
                first = wake
            elif wake != first:
                if others is None:
                    others = set()
                others.add(wake)
    if first is not None:
        first()
    if others:
        for wake in others:
            wake()
    if burst is not None:
        burst.sent()
    return sent


#: The hub of this process.
hub = LocalHub()

_backend_lock = threading.Lock()
_backend: GroupBackend = InMemoryBackend()


def set_group_backend(backend: GroupBackend) -> None:
    """Select the backend that carries group messages to other processes.

    Process-wide: it serves every server of the process and every caller of
    :func:`group`, :func:`broadcast` and :func:`send_to`. Call it once at start-up
    (in each worker, or before the fork with gunicorn ``--preload``: backends restart
    their threads in forked children). The previous backend is closed.
    """
    global _backend
    for name in ("start", "publish", "close"):
        if not callable(getattr(backend, name, None)):
            raise TypeError(f"backend must implement GroupBackend (no {name}()): {backend!r}")
    with _backend_lock:
        old = _backend
        if backend is old:
            return
        backend.start(hub)
        _backend = backend
    old.close()
    logger.info("group backend: %r", backend)


def get_group_backend() -> GroupBackend:
    """The backend in use (an :class:`InMemoryBackend` unless one was set)."""
    return _backend


def _send(kind: Literal["group", "all"], target: str, message: Message, exclude: Exclude) -> None:
    frozen = _frozen_message(message)
    prepared = PreparedMessage(frozen)  # TypeError here, before any delivery
    envelope = Envelope(kind, target, frozen, _exclude_id(exclude))
    hub.deliver(envelope, prepared)
    _backend.publish(envelope)


class Group:
    """A named group of connections, wherever they are connected.

    Get one with :func:`wsgiws.group`; it is a lightweight handle, created on each
    call, and the group exists as long as it has members. Every method may be
    called from any thread: a handler, a WSGI view, a timer.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        #: The group's name.
        self.name = _check_name(name)

    def send(self, message: Message, *, exclude: Exclude = None) -> None:
        """Send a text (``str``) or binary (``bytes``) message to every member.

        Members connected to this process get it at once; members of other
        processes get it through the backend. Never blocks on a slow member.

        Args:
            message: the message.
            exclude: a member (its :class:`~wsgiws.WebSocket` or its id) not to send
                it to, typically the sender.

        Raises:
            TypeError: ``message`` is neither ``str`` nor bytes-like.
        """
        _send("group", self.name, message, exclude)

    def send_json(self, obj: Any, *, exclude: Exclude = None, **dumps_kwargs: Any) -> None:
        """Send ``obj`` serialised with :func:`json.dumps` as a text message."""
        dumps_kwargs.setdefault("separators", (",", ":"))
        self.send(json.dumps(obj, **dumps_kwargs), exclude=exclude)

    @property
    def members(self) -> list[WebSocket]:
        """The open members connected to *this* process, in joining order."""
        return hub.members(self.name)

    def __len__(self) -> int:
        """The number of open members connected to *this* process."""
        return len(hub.members(self.name))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Group) and other.name == self.name

    def __hash__(self) -> int:
        return hash(("wsgiws.Group", self.name))

    def __repr__(self) -> str:
        return f"<Group {self.name!r}>"


def group(name: str) -> Group:
    """The group called ``name``: ``wsgiws.group("room-1").send("hello")``."""
    return Group(name)


def broadcast(message: Message) -> None:
    """Send a message to every connection of every server, in every process.

    Members of this process get it at once; those of other processes through
    the backend. :meth:`Server.broadcast <wsgiws.Server.broadcast>` reaches one
    server's connections only.
    """
    _send("all", "", message, None)


def send_to(connection_id: str, message: Message) -> bool:
    """Send a message to the connection whose :attr:`WebSocket.id` is ``connection_id``.

    If the connection belongs to this process the message is queued to it directly;
    otherwise the backend carries it to the process that has it (nothing happens if
    none has it).

    Returns:
        True if the connection is in this process and the message was queued;
        False otherwise (it was handed to the backend, or the connection is closed).
    """
    if not isinstance(connection_id, str):
        raise TypeError(f"connection_id must be a str, got {type(connection_id).__name__}")
    frozen = _frozen_message(message)
    prepared = PreparedMessage(frozen)
    connection = hub.find(connection_id)
    if connection is not None:
        try:
            connection.send_prepared(prepared)  # one connection: written at once
        except ConnectionClosed:
            return False
        return True
    _backend.publish(Envelope("one", connection_id, frozen))
    return False


def _after_fork_in_child() -> None:
    hub.reset_after_fork()
    global _backend_lock
    _backend_lock = threading.Lock()


lifecycle.after_fork_in_child(lifecycle.ForkStage.GROUPS, _after_fork_in_child)
