"""The session of one client connection: handshake decision, ``WebSocket``, handlers.

Theory of operation
-------------------

A :class:`Session` is created by its host (the :class:`~wsgiws.Server`) for an
accepted socket, and creates the connection's :class:`~wsgiws.transport.Transport`.
The transport reports to it (as its :class:`~wsgiws.transport.TransportUser`); the
session decides and runs user code:

* **The handshake decision** (:meth:`Session.handshake_requested`, on the loop
  thread): route the path (404 if no namespace), check the ``Origin`` (403), build
  the :class:`~wsgiws.WebSocket`, register it in the group hub (so that
  ``on_connect`` may join groups), select the subprotocol, then run ``on_connect``
  on a worker. After it the transport accepts (101) or rejects (the status of a
  :exc:`~wsgiws.Reject`, or 500 for an exception).
* **Handlers**: every event goes to the session's
  :class:`~wsgiws.workers.SerialExecutor`, so events run in order, one at a time,
  off the loop thread (invariants 1 and 2). ``on_close`` is submitted exactly once,
  when the transport reports that no message can arrive any more
  (:meth:`Session.input_finished`). An exception in a handler is logged with its
  traceback through the connection's logger on ``wsgiws.handlers`` and closes that
  connection with 1011 (500 during the handshake).
* **Batches**: the messages one read completes reach the executor as one task, which
  runs them in order with the transport corked, so that their replies leave in one
  ``send``.
* **Flow control**: past ``max_queue`` messages not yet handled, the transport stops
  reading from the client; it reads again once the handlers caught up to a quarter
  (hysteresis: the socket does not enter and leave the selector at every message).

The session knows its host only through :class:`Host` and the group hub only
through :class:`GroupRegistry`: tests drive it with a fake host over a socketpair.
Every public method may be called from any thread.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Protocol

from wsproto.frame_protocol import CloseReason

from .exceptions import Reject
from .log import ConnectionLogger, connection_logger, handlers_logger
from .loop import open_burst
from .transport import Transport
from .websocket import WebSocket
from .workers import SerialExecutor

if TYPE_CHECKING:
    from .handlers import Chain
    from .loop import Burst, SelectorLoop
    from .options import Options
    from .protocol import HandshakeRequest, PreparedMessage
    from .routing import Registry
    from .workers import WorkerPool

__all__ = ["GroupRegistry", "Host", "Session"]

#: Seconds a handler call may take and still count as quick (see _run_messages).
QUICK_HANDLER = 0.001
#: Quick calls in a row after which the replies of a batch are held for one send.
QUICK_STREAK = 8


class GroupRegistry(Protocol):
    """What a session needs of the group hub (:class:`wsgiws.groups.LocalHub`)."""

    def register(self, connection: Session) -> None:
        """Make the connection reachable by id and by broadcast."""

    def unregister(self, connection: Session) -> None:
        """Forget the connection and remove it from every group it joined."""

    def join(self, connection: Session, name: str) -> None:
        """Add the connection to group ``name``."""

    def leave(self, connection: Session, name: str) -> None:
        """Remove the connection from group ``name``."""

    def groups_of(self, connection: Session) -> frozenset[str]:
        """The names of the groups the connection belongs to."""


class Host(Protocol):
    """What a session needs of the server that accepted its connection.

    ``connection_closed`` and ``session_done`` may be called from any thread.
    """

    @property
    def options(self) -> Options:
        """The server's options."""

    @property
    def loop(self) -> SelectorLoop:
        """The loop that watches the connection's socket."""

    @property
    def pool(self) -> WorkerPool:
        """The threads that run handlers."""

    @property
    def registry(self) -> Registry:
        """The routes: which handler chain serves which path."""

    @property
    def secure(self) -> bool:
        """True when clients connect over TLS."""

    @property
    def hub(self) -> GroupRegistry:
        """The group hub the connection registers in."""

    def connection_closed(self, session: Session) -> None:
        """The connection's socket is closed."""

    def session_done(self, session: Session) -> None:
        """The connection's handler lifecycle is over (``on_close`` returned)."""


class Session:
    """The application side of one client connection (see the module docstring).

    Args:
        host: the server the connection belongs to.
        sock: the connected, non-blocking socket.
        remote_addr: the client's address.
        environ: the WSGI environ of a request handed over by a WSGI server.
    """

    # Slots: one of these lives as long as its connection (memory per connection).
    __slots__ = (
        "_chain",
        "_drop_messages",
        "_environ",
        "_executor",
        "_groups",
        "_handler_logger",
        "_lock",
        "_options",
        "_paused",
        "_queued",
        "_quick",
        "closed_event",
        "host",
        "id",
        "log",
        "remote_addr",
        "transport",
        "websocket",
    )

    def __init__(
        self,
        host: Host,
        sock: socket.socket,
        remote_addr: tuple[str, int],
        *,
        environ: dict[str, Any] | None = None,
    ) -> None:
        self.host = host
        self._options = host.options
        self._groups = host.hub
        self.remote_addr = remote_addr
        #: A random id, unique in practice across processes (used by groups).
        self.id = os.urandom(8).hex()  # what secrets.token_hex(8) returns
        extra = {"websocket": f"{self.id} {remote_addr[0]}:{remote_addr[1]}"}
        #: The connection's logger (``wsgiws.connection``).
        self.log = ConnectionLogger(connection_logger, extra)
        # Exceptions of user code, on ``wsgiws.handlers``, naming the connection too:
        # made when first needed (most connections never log one).
        self._handler_logger: ConnectionLogger | None = None
        #: The connection's transport: socket, buffers, timers, protocol state.
        self.transport = Transport(sock, self, loop=host.loop, options=host.options, log=self.log)
        # Messages handed to handlers and not yet handled, and whether reading is
        # paused because of them (under _lock).
        self._lock = threading.Lock()
        self._queued = 0
        self._paused = False
        # Handler calls in a row that returned within QUICK_HANDLER (up to QUICK_STREAK).
        self._quick = 0
        # After a handler rejected or failed: messages still queued are dropped.
        self._drop_messages = False
        #: The handlers' view, once the handshake request was routed.
        self.websocket: WebSocket | None = None
        self._chain: Chain | None = None
        self._environ = environ
        #: Set by the host once the socket is closed (same-port "park" fallback).
        self.closed_event: threading.Event | None = None
        self._executor = SerialExecutor(host.pool)

    @property
    def _handler_log(self) -> ConnectionLogger:
        """The connection's logger for exceptions of user code (``wsgiws.handlers``),
        sharing :attr:`log`'s ``extra``, so that it carries the same label."""
        if self._handler_logger is None:
            self._handler_logger = ConnectionLogger(handlers_logger, self.log.extra)
        return self._handler_logger

    def __repr__(self) -> str:
        return f"<Session {self.log.extra['websocket'] if self.log.extra else ''}>"

    # -- what WebSocket and the group hub use ---------------------------------------

    @property
    def close_code(self) -> int | None:
        """The close code that ended the connection, or ``None`` while open."""
        return self.transport.close_code

    @property
    def close_reason(self) -> str:
        """The close reason that goes with :attr:`close_code`."""
        return self.transport.close_reason

    def is_open(self) -> bool:
        """True while messages can be sent (also during ``on_connect``)."""
        return self.transport.is_open()

    def send_message(self, message: str | bytes) -> None:
        """Encode and send a message."""
        self.transport.send_message(message)

    def send_prepared(self, message: PreparedMessage) -> None:
        """Send a message encoded once for many connections."""
        self.transport.send_prepared(message)

    def queue_prepared(
        self, message: PreparedMessage, burst: Burst | None = None
    ) -> Callable[[], None] | None:
        """Queue a broadcast frame for ``burst`` or the loop to write (see
        :meth:`Transport.queue_prepared`); returns the wake-up to call afterwards."""
        return self.transport.queue_prepared(message, burst)

    def close_threadsafe(self, code: int, reason: str) -> None:
        """Start the closing handshake; no-op if already closing."""
        self.transport.close_threadsafe(code, reason)

    def join(self, name: str) -> None:
        """Join group ``name``."""
        self._groups.join(self, name)

    def leave(self, name: str) -> None:
        """Leave group ``name``."""
        self._groups.leave(self, name)

    def groups(self) -> frozenset[str]:
        """The names of the groups this connection belongs to."""
        return self._groups.groups_of(self)

    # -- what the transport reports (called on the loop thread) ----------------------

    def handshake_requested(self, request: HandshakeRequest) -> None:
        """Route the request and check its origin, then run ``on_connect``."""
        found = self.host.registry.match(request.path)
        if found is None:
            self._refuse(HTTPStatus.NOT_FOUND, f"no WebSocket endpoint at {request.path}")
            return
        # A callable is user code: it runs on the worker, before on_connect.
        if not callable(self._options.origins) and not self._options.origin_allowed(
            request.header("origin"), request.header("host")
        ):
            self._refuse(HTTPStatus.FORBIDDEN, "origin not allowed")
            return
        chain, match = found
        self._chain = chain
        self.log.set_label(f"{self.log.extra['websocket']} {request.path}")  # type: ignore[index]
        websocket = self.websocket = WebSocket(
            self,
            request,
            match,
            remote_addr=self.remote_addr,
            server_addr=self.transport.server_addr,
            environ=self._environ,
            secure=self.host.secure,
        )
        self._groups.register(self)  # reachable by send_to/broadcast; join() allowed
        offered = request.subprotocols
        websocket.subprotocol = next((p for p in self._options.subprotocols if p in offered), None)
        if self._runs_nothing(chain.connect) and not callable(self._options.origins):
            # No user code to run (no on_connect, mixin, context or origins callable):
            # accept here, without a round trip to a worker. Nothing is queued on the
            # executor yet, so the order of events is the same.
            self.transport.accept(websocket.subprotocol, compression=self._compression())
            return
        self._executor.submit(self._run_connect)

    def _runs_nothing(self, steps: tuple[object, ...]) -> bool:
        """True when an event with these chain ``steps`` runs no user code at all."""
        chain = self._chain
        return (
            not steps
            and chain is not None
            and not chain.contexts
            and self._options.handler_context is None
        )

    def _compression(self) -> bool:
        return self._options.compression == "deflate"

    def messages_received(self, messages: list[str | bytes]) -> None:
        """Queue the messages to the handlers as one task; past ``max_queue``, stop
        reading. A handler declared ``inline`` runs them here, on the loop thread."""
        chain = self._chain
        if chain is not None and chain.inline and self._executor.idle():
            with self._lock:
                self._queued += len(messages)
            self._run_messages(messages, inline=True)
            return
        with self._lock:
            self._queued += len(messages)
            if self._queued > self._options.max_queue and not self._paused:
                self._paused = True
                # Under _lock, so that a pause and a resume cannot swap places.
                self.transport.pause_reading()
        self._executor.submit(functools.partial(self._run_messages, messages))

    def input_failed(self) -> None:
        """After the messages already queued, let the transport send the close."""
        self._executor.submit(self.transport.close_failed)

    def input_finished(self) -> None:
        """Submit ``on_close`` (or, for a refused handshake, end the lifecycle)."""
        if self.transport.accepted:
            if self.log.logger.isEnabledFor(logging.INFO):
                self.log.info("closed (code %s)", self.transport.close_code)
            chain = self._chain
            if chain is not None and self._runs_nothing(chain.close) and self._executor.idle():
                # No on_close to run and no earlier event still queued or running
                # (only this thread submits): end here, without a worker.
                self._end()
            else:
                self._executor.submit(self._run_close)
        else:
            self._groups.unregister(self)  # refused handshake: leave the groups joined
            self.host.session_done(self)

    def transport_closed(self) -> None:
        """Tell the host that the socket is closed."""
        self.host.connection_closed(self)

    # -- worker threads ------------------------------------------------------------

    def _refuse(self, status: int, reason: str) -> None:
        self.log.info("handshake refused: %d %s", status, reason)
        self.transport.reject(status, reason)

    def _in_context(self, run: Callable[..., None], *args: Any) -> None:
        """Run one handler event inside the ``handler_context`` option, if any."""
        context = self._options.handler_context
        if context is None:
            run(*args)
            return
        with context():
            run(*args)

    def _origin_refused(self, websocket: WebSocket) -> bool:
        """Run an ``origins`` callable (worker thread); refuse and return True if it
        says no (403) or raises (500, logged with the traceback)."""
        if not callable(self._options.origins):
            return False
        headers = websocket.headers
        try:
            allowed = self._options.origin_allowed(headers.get("origin"), headers.get("host"))
        except Exception:
            self._handler_log.error("error in the origins callable", exc_info=True)
            self.transport.reject(
                HTTPStatus.INTERNAL_SERVER_ERROR, "internal server error (see the server log)"
            )
            return True
        if not allowed:
            self._refuse(HTTPStatus.FORBIDDEN, "origin not allowed")
            return True
        return False

    def _run_connect(self) -> None:
        websocket, chain = self.websocket, self._chain
        assert websocket is not None and chain is not None
        if self._origin_refused(websocket):
            return
        try:
            self._in_context(chain.run_connect, websocket, websocket.path)
        except Reject as exc:
            self.log.info("handshake rejected by handler: %d", exc.status)
            self.transport.reject(exc.status, exc.reason)
            return
        except Exception:
            self._handler_log.error(
                "error in on_connect of %s", chain.handler.__qualname__, exc_info=True
            )
            self.transport.reject(
                HTTPStatus.INTERNAL_SERVER_ERROR, "internal server error (see the server log)"
            )
            return
        subprotocol = websocket.subprotocol
        if subprotocol is not None and subprotocol not in websocket.subprotocols:
            self._handler_log.error(
                "on_connect of %s selected subprotocol %r, which the client did not offer",
                chain.handler.__qualname__,
                subprotocol,
            )
            subprotocol = websocket.subprotocol = None
        self.transport.accept(subprotocol, compression=self._compression())

    def _run_messages(self, messages: list[str | bytes], *, inline: bool = False) -> None:
        # The replies to a batch may leave in one send (cork), each then waiting
        # for the handlers after it in the batch: only inline (handlers declared
        # never to block) or after QUICK_STREAK quick calls in a row. A slow call
        # (a query, a sleep, a handler that streams) writes what was held at once
        # and ends holding until the handlers are quick again.
        hold = len(messages) > 1 and (inline or self._quick >= QUICK_STREAK)
        transport = self.transport
        if hold:
            transport.cork()
        # Group sends of these handler calls are written when they return (Burst).
        burst = open_burst()
        try:
            for message in messages:
                if inline:
                    self._run_message(message)
                    continue
                start = time.perf_counter()
                self._run_message(message)
                if time.perf_counter() - start > QUICK_HANDLER:
                    self._quick = 0
                    if hold:
                        hold = False
                        transport.uncork()
                elif self._quick < QUICK_STREAK:
                    self._quick += 1
        finally:
            if hold:
                transport.uncork()
            if burst is not None:
                burst.close()

    def _run_message(self, message: str | bytes) -> None:
        websocket, chain = self.websocket, self._chain
        assert websocket is not None and chain is not None
        try:
            if not self._drop_messages:
                context = self._options.handler_context
                if context is None:
                    chain.run_message(websocket, message)
                else:
                    with context():
                        chain.run_message(websocket, message)
        except Reject as exc:
            self._drop_messages = True
            websocket.close(exc.code, exc.reason)
        except Exception:
            self._drop_messages = True
            self._handler_log.error(
                "error in on_message of %s", chain.handler.__qualname__, exc_info=True
            )
            websocket.close(CloseReason.INTERNAL_ERROR, "internal error")
        finally:
            with self._lock:
                self._queued -= 1
                if self._paused and self._queued <= self._options.max_queue // 4:
                    self._paused = False
                    self.transport.resume_reading()

    def _run_close(self) -> None:
        websocket, chain = self.websocket, self._chain
        assert websocket is not None and chain is not None
        try:
            self._in_context(chain.run_close, websocket)
        except Exception:
            self._handler_log.error(
                "error in on_close of %s", chain.handler.__qualname__, exc_info=True
            )
        finally:
            self._end()

    def _end(self) -> None:
        self._groups.unregister(self)  # leave all groups once on_close has returned
        self.host.session_done(self)
