"""One client connection: socket, protocol state, outgoing buffer, handler dispatch.

Theory of operation
-------------------

A :class:`Connection` is created on the loop thread for an accepted socket (or a
socket handed over by a WSGI server). Two kinds of thread touch it:

* the **loop thread** reads the socket, feeds :class:`~wsgiws.protocol.ServerProtocol`,
  writes what is left in the outgoing buffer when the socket is writable, runs the
  timers (handshake, keepalive, close) and closes the socket. Only it touches the
  selector and closes the socket.
* **any thread** (a handler on a worker, a WSGI view, a timer thread) may send: it
  takes the connection's lock, checks the state, and writes. If the outgoing buffer is
  empty the frame is written to the (non-blocking) socket at once, from that thread;
  whatever the kernel does not take is buffered, and the loop is asked — once — to
  watch for writability. A write error only marks the connection broken; the loop
  closes it.

Everything that touches the protocol object or the buffer happens under ``lock``.
Handler events go to the connection's :class:`~wsgiws.workers.SerialExecutor`, so they
run in order, one at a time, off the loop thread. ``on_close`` is submitted exactly
once, after the last message, by :meth:`Connection._finish`.

Closing: after the closing handshake (or a protocol failure, or a rejected handshake)
the server flushes its last bytes, shuts down its sending side and reads until the
peer closes (or ``close_timeout``), then closes the socket. Closing with unread data
would make the kernel send a reset, which can destroy the close frame in flight.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import socket
import ssl
import threading
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from wsproto.frame_protocol import CloseReason

from . import groups
from .exceptions import ConnectionClosed, Reject
from .log import ConnectionLogger, connection_logger, handlers_logger
from .protocol import (
    CloseReceived,
    Event,
    Failed,
    HandshakeRequest,
    MessageReceived,
    PongReceived,
    PreparedMessage,
    ServerProtocol,
    State,
    encode_message,
)
from .websocket import WebSocket
from .workers import SerialExecutor

if TYPE_CHECKING:
    from .handlers import Chain
    from .loop import TimerHandle
    from .server import Server

__all__ = ["Connection"]

#: Bytes read per ``recv``; a bigger read means fewer wsproto passes per message.
READ_SIZE = 256 * 1024
#: Seconds to wait for the peer's EOF after our last bytes, when no close_timeout.
LINGER_TIMEOUT = 5.0
#: Bytes handed to one TLS write. A TLS write that must be retried is retried with
#: the same leading bytes (OpenSSL's rule); the buffer only grows at its end, so a
#: bounded chunk keeps every retry identical.
TLS_WRITE_SIZE = 256 * 1024


class Connection:
    """The server side of one client connection (see the module docstring)."""

    def __init__(
        self,
        server: Server,
        sock: socket.socket,
        remote_addr: tuple[str, int],
        *,
        environ: dict[str, Any] | None = None,
    ) -> None:
        options = server.options
        self.server = server
        self.loop = server.loop
        self.options = options
        # The socket; closed by the loop thread only.
        self.sock = sock
        self.remote_addr = remote_addr
        self.server_addr: tuple[str, int] = sock.getsockname()[:2]
        #: A random id, unique in practice across processes (used by groups).
        self.id = secrets.token_hex(8)
        # Protocol state and the outgoing buffer, both guarded by lock.
        self.lock = threading.Lock()
        # TLS: OpenSSL objects must not be used by two threads at once, so every
        # write goes through the loop thread; the handshake runs there first.
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._tls_handshaking = self._tls
        self._tls_want_write = False
        self.proto = ServerProtocol(max_message_size=options.max_message_size)
        self.out = bytearray()
        # Set under lock when the loop has been asked to watch writability.
        self._write_requested = False
        # Set under lock when a write failed: the loop will close the socket.
        self._broken = False
        # Set under lock when the socket is closed: nothing is written any more.
        self._transport_closed = False
        # Once the buffer drains: shut down our side and wait for the peer's EOF.
        self._close_when_flushed = False
        # Loop thread: True once our sending side is shut down (draining input).
        self._lingering = False
        # Loop thread: whether the socket is watched for reading.
        self._reading = False
        # Messages handed to handlers and not yet handled (under lock).
        self._queued = 0
        # Frames sent by on_connect before the 101 went out (under lock).
        self._early: list[bytes] = []
        self._early_size = 0
        self._early_close: tuple[int, str] | None = None
        # After a handler rejected or failed: messages still queued are dropped.
        self._drop_messages = False
        self.close_code: int | None = None
        self.close_reason = ""
        self.accepted = False
        self._finished = False
        self.websocket: WebSocket | None = None
        self.chain: Chain | None = None
        self._environ = environ
        #: Set by the loop once the socket is closed (same-port "park" fallback).
        self.closed_event: threading.Event | None = None
        self.executor = SerialExecutor(server.pool)
        self._timer: TimerHandle | None = None  # handshake, then close or linger
        self._ping_timer: TimerHandle | None = None
        self._pong_timer: TimerHandle | None = None
        self._ping_payload = b""
        self.log = ConnectionLogger(
            connection_logger,
            {"websocket": f"{self.id} {remote_addr[0]}:{remote_addr[1]}"},
        )
        # Checked once: per-frame DEBUG lines cost nothing when DEBUG is off.
        self.debug = connection_logger.isEnabledFor(logging.DEBUG)

    # == loop thread ===============================================================

    def start(self) -> None:
        """Begin serving: watch the socket and arm the handshake timer (loop thread)."""
        self._set_reading(True)
        if self.options.handshake_timeout is not None:
            self._timer = self.loop.call_later(
                self.options.handshake_timeout, self._handshake_expired
            )

    def start_upgraded(
        self, target: str, headers: list[tuple[str, str]], initial: bytes = b""
    ) -> None:
        """Begin from a request a WSGI server already parsed (loop thread).

        ``initial`` holds bytes the WSGI server read past the request head; they
        are kept, like bytes received while the handshake is decided, until the 101.
        """
        with self.lock:
            event = self.proto.start_from_request(target, headers)
            if initial:
                self.proto.receive_data(initial)
            self._write_locked(self.proto.data_to_send())
        self._handle([event])

    def _set_reading(self, reading: bool) -> None:
        if self._transport_closed or reading == self._reading:
            return
        self._reading = reading
        self._watch()

    def _watch(self) -> None:
        if self._transport_closed:
            return
        wants_write = (bool(self.out) or self._tls_want_write) and not self._transport_closed
        self.loop.watch(
            self.sock,
            self._on_readable if self._reading else None,
            self._on_writable if wants_write else None,
        )

    def _tls_handshake(self) -> None:
        try:
            self.sock.do_handshake()  # type: ignore[attr-defined]
        except ssl.SSLWantReadError:
            self._tls_want_write = False
        except ssl.SSLWantWriteError:
            self._tls_want_write = True
        except (OSError, ValueError) as exc:
            self.log.info("TLS handshake failed: %s", exc)
            self._abort(CloseReason.ABNORMAL_CLOSURE, "TLS handshake failed")
            return
        else:
            self._tls_handshaking = self._tls_want_write = False
            self._watch()
            if self.sock.pending():  # type: ignore[attr-defined]
                self._on_readable()  # bytes already decrypted: no readiness will come
            return
        self._watch()

    def _on_readable(self) -> None:
        if self._tls_handshaking:
            self._tls_handshake()
            return
        while self._read_once() and self._tls and self._reading:
            # TLS may hold decrypted bytes that the selector will never report.
            if not self.sock.pending():  # type: ignore[attr-defined]
                break

    def _read_once(self) -> bool:
        """Read and handle one chunk; return True if the connection may read on."""
        try:
            data = self.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False
        except OSError:
            self._abort(CloseReason.ABNORMAL_CLOSURE, "connection lost")
            return False
        if self._lingering:
            if not data:
                self._close_transport()
            return bool(data)  # input after our close is drained and discarded
        if not data:
            with self.lock:
                events = self.proto.receive_eof()
            self._handle(events)
            return False
        self._received(data)
        return not self._transport_closed

    def _received(self, data: bytes) -> None:
        with self.lock:
            events = self.proto.receive_data(data)
            self._write_locked(self.proto.data_to_send())
        if events:
            self._handle(events)
        self._check_broken()

    def _handle(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, MessageReceived):
                self._dispatch_message(event.data)
            elif isinstance(event, PongReceived):
                if self._pong_timer is not None and event.payload == self._ping_payload:
                    self._pong_timer.cancel()
                    self._pong_timer = None
            elif isinstance(event, HandshakeRequest):
                self._handshake(event)
            elif isinstance(event, CloseReceived):
                self._set_close(event.code, event.reason)
                if self.debug:
                    self.log.debug("< CLOSE %s", event.code)
                self._close_after_flush()
            elif isinstance(event, Failed):
                self._failed(event)

    def _failed(self, event: Failed) -> None:
        if event.status is not None:
            self.log.info("handshake refused: %d %s", event.status, event.reason)
        elif event.code == CloseReason.ABNORMAL_CLOSURE:
            self._set_close(event.code, event.reason)
            self._abort(event.code, event.reason)
            return
        else:
            self.log.warning("closing: %s (code %d)", event.reason, event.code)
        self._set_close(event.code, event.reason)
        self._close_after_flush()

    def _handshake(self, request: HandshakeRequest) -> None:
        self._set_reading(False)  # what follows waits until the handshake is decided
        found = self.server.registry.match(request.path)
        if found is None:
            self._refuse(HTTPStatus.NOT_FOUND, f"no WebSocket endpoint at {request.path}")
            return
        if not self.options.origin_allowed(request.header("origin"), request.header("host")):
            self._refuse(HTTPStatus.FORBIDDEN, "origin not allowed")
            return
        chain, match = found
        self.chain = chain
        self.log.extra = {"websocket": f"{self.log.extra['websocket']} {request.path}"}  # type: ignore[index]
        self.websocket = WebSocket(
            self,
            request,
            match,
            remote_addr=self.remote_addr,
            server_addr=self.server_addr,
            environ=self._environ,
            secure=self.server.secure,
        )
        groups.hub.register(self)  # reachable by send_to/broadcast; join() allowed
        offered = request.subprotocols
        self.websocket.subprotocol = next(
            (p for p in self.options.subprotocols if p in offered), None
        )
        self.executor.submit(self._run_connect)

    def _refuse(self, status: int, reason: str) -> None:
        self.log.info("handshake refused: %d %s", status, reason)
        with self.lock:
            self.proto.reject(status, reason)
            self._write_locked(self.proto.data_to_send())
        self._close_after_flush()

    def _after_accept(self, events: list[Event]) -> None:
        if self._transport_closed:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._schedule_ping()
        self._set_reading(True)
        if events:
            self._handle(events)
        self._check_broken()

    def _dispatch_message(self, data: str | bytes) -> None:
        if self.debug:
            self.log.debug("< %s [%d]", "TEXT" if isinstance(data, str) else "BINARY", len(data))
        with self.lock:
            self._queued += 1
            pause = self._queued > self.options.max_queue
        if pause:
            self._set_reading(False)
        self.executor.submit(functools.partial(self._run_message, data))

    def _resume(self) -> None:
        if self.proto.state in (State.OPEN, State.CLOSING) and not self._lingering:
            self._set_reading(True)

    def _on_writable(self) -> None:
        if self._tls_handshaking:
            self._tls_handshake()
            return
        with self.lock:
            if self.out and not self._broken:
                try:
                    if self._tls:
                        sent = self.sock.send(bytes(self.out[:TLS_WRITE_SIZE]))
                    else:
                        sent = self.sock.send(self.out)
                except (
                    BlockingIOError,
                    InterruptedError,
                    ssl.SSLWantWriteError,
                    ssl.SSLWantReadError,
                ):
                    sent = 0
                except OSError:
                    self._broken = True
                    sent = 0
                del self.out[:sent]
            if not self.out:
                self._write_requested = False
        self._watch()
        self._check_broken()
        if not self.out and self._close_when_flushed:
            self._shutdown_write()

    def _close_after_flush(self) -> None:
        self._close_when_flushed = True
        self._cancel_keepalive()
        if not self.out:
            self._shutdown_write()

    def _shutdown_write(self) -> None:
        if self._lingering or self._transport_closed:
            return
        self._lingering = True
        self._close_when_flushed = False
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close_transport()
            return
        self._reading = True
        self._watch()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(
            self.options.close_timeout or LINGER_TIMEOUT, self._close_transport
        )
        self._finish()

    def _check_broken(self) -> None:
        if self._broken and not self._transport_closed:
            self._abort(CloseReason.ABNORMAL_CLOSURE, "connection lost")
        elif self.out:
            self._watch()

    def _abort(self, code: int, reason: str) -> None:
        """Close the socket now, without a closing handshake."""
        self._set_close(code, reason)
        self._close_transport()

    def _close_transport(self) -> None:
        if self._transport_closed:
            return
        with self.lock:
            self._transport_closed = True
            self.out.clear()
            if self.proto.state is not State.CLOSED:
                self.proto.state = State.CLOSED
        self.loop.remove_socket(self.sock)
        self._reading = False
        for timer in (self._timer, self._ping_timer, self._pong_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._ping_timer = self._pong_timer = None
        self.sock.close()
        self._set_close(CloseReason.ABNORMAL_CLOSURE, "connection lost")
        self._finish()
        self.server._forget(self)

    def _finish(self) -> None:
        """Submit ``on_close`` once the connection can no longer carry messages."""
        if self._finished:
            return
        self._finished = True
        if self.accepted:
            self.log.info("closed (code %s)", self.close_code)
            self.executor.submit(self._run_close)
        else:
            groups.hub.unregister(self)  # refused handshake: leave the groups joined
            self.server._done(self)

    def _handshake_expired(self) -> None:
        self._timer = None
        if self.proto.state is State.CONNECTING and self.proto.request is None:
            self.log.info("handshake timed out")
            self._abort(CloseReason.ABNORMAL_CLOSURE, "handshake timeout")

    def _schedule_ping(self) -> None:
        if self.options.ping_interval is not None and not self._transport_closed:
            self._ping_timer = self.loop.call_later(self.options.ping_interval, self._ping)

    def _ping(self) -> None:
        self._ping_timer = None
        with self.lock:
            if self.proto.state is not State.OPEN:
                return
            self._ping_payload = os.urandom(4)
            self.proto.send_ping(self._ping_payload)
            self._write_locked(self.proto.data_to_send())
        if self.options.ping_timeout is not None and self._pong_timer is None:
            self._pong_timer = self.loop.call_later(self.options.ping_timeout, self._pong_expired)
        self._schedule_ping()
        self._check_broken()

    def _pong_expired(self) -> None:
        self._pong_timer = None
        self.log.warning("closing: keepalive ping timeout")
        self._fail_now(CloseReason.INTERNAL_ERROR, "keepalive ping timeout")

    def _cancel_keepalive(self) -> None:
        for timer in (self._ping_timer, self._pong_timer):
            if timer is not None:
                timer.cancel()
        self._ping_timer = self._pong_timer = None

    def _fail_now(self, code: int, reason: str) -> None:
        """Send a close frame if possible and drop the connection without waiting."""
        with self.lock:
            if self.proto.state is State.OPEN:
                self.proto.close(code, reason)
                self._write_locked(self.proto.data_to_send())
        self._set_close(code, reason)
        self._close_after_flush()

    def _close_timer(self) -> None:
        if self._transport_closed or self._lingering:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        if self.options.close_timeout is not None:
            self._timer = self.loop.call_later(self.options.close_timeout, self._close_expired)

    def _close_expired(self) -> None:
        self._timer = None
        if self.proto.state is State.CLOSING:
            self.log.info("no close frame from the peer in time")
            self._abort(CloseReason.ABNORMAL_CLOSURE, "close timeout")

    def shutdown(self, code: int, reason: str) -> None:
        """Close for server shutdown: a close frame if open, else drop (loop thread)."""
        if self.proto.state is State.OPEN:
            with self.lock:
                self.proto.close(code, reason)
                self._write_locked(self.proto.data_to_send())
            self._set_close(code, reason)
            self._cancel_keepalive()
            self._close_timer()
            self._check_broken()
        elif self.proto.state is State.CONNECTING or not self.accepted:
            self._abort(CloseReason.GOING_AWAY, reason)

    # == any thread ================================================================

    def _set_close(self, code: int, reason: str) -> None:
        # The first code recorded is the one that explains the close.
        if self.close_code is None:
            self.close_code = int(code)
            self.close_reason = reason

    def _write_locked(self, data: bytes) -> None:
        """Write ``data`` now or buffer it (caller holds ``lock``; any thread)."""
        if not data or self._transport_closed or self._broken:
            return
        if self.out or self._tls:
            self.out += data
        else:
            try:
                sent = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._broken = True
                self._request_loop(self._check_broken)
                return
            if sent < len(data):
                self.out += memoryview(data)[sent:]
        if self.out:
            if len(self.out) > self.options.write_limit:
                self._broken = True
                self.out.clear()
                self._request_loop(self._slow_reader)
            elif not self._write_requested:
                self._write_requested = True
                self._request_loop(self._watch)

    def _request_loop(self, callback: Callable[[], None]) -> None:
        # Deferred even on the loop thread: the caller holds the lock, and the
        # callback may take it.
        self.loop.call_soon_threadsafe(callback)

    def _slow_reader(self) -> None:
        self.log.warning(
            "closing: client is not reading (more than write_limit of %d bytes queued)",
            self.options.write_limit,
        )
        self._set_close(CloseReason.POLICY_VIOLATION, "client too slow to read")
        self._close_transport()

    def is_open(self) -> bool:
        """True while messages can be sent (also during ``on_connect``)."""
        state = self.proto.state
        return (
            state is State.OPEN or (state is State.CONNECTING and self.chain is not None)
        ) and not self._broken

    def send_message(self, message: str | bytes) -> None:
        """Encode and send a message (any thread)."""
        if self.debug:
            kind = "TEXT" if isinstance(message, str) else "BINARY"
            self.log.debug("> %s [%d]", kind, len(message))
        self.send_frame(encode_message(message, self.proto.deflate_bits))

    def send_prepared(self, message: PreparedMessage) -> None:
        """Send a message encoded once for many connections (any thread).

        Raises:
            ConnectionClosed: the connection is not open.
        """
        self.send_frame(message.frame(self.proto.deflate_bits))

    def send_frame(self, frame: bytes) -> None:
        """Send an encoded frame (any thread); broadcasts pass the same bytes to all.

        Raises:
            ConnectionClosed: the connection is not open.
        """
        with self.lock:
            state = self.proto.state
            if state is State.OPEN and not self._broken:
                self._write_locked(frame)
                return
            if (
                state is State.CONNECTING
                and self.chain is not None
                and not self._transport_closed
                and not self._broken
            ):
                # Bounded like the outgoing buffer: a group member whose on_connect
                # is slow must not queue without limit.
                self._early_size += len(frame)
                if self._early_size > self.options.write_limit:
                    self._early.clear()
                    self._broken = True
                    self._request_loop(self._slow_reader)
                else:
                    self._early.append(frame)
                return
        raise ConnectionClosed(self.close_code, self.close_reason)

    def close_threadsafe(self, code: int, reason: str) -> None:
        """Start the closing handshake (any thread); no-op if already closing."""
        with self.lock:
            state = self.proto.state
            if state is State.CONNECTING and self.chain is not None:
                self._early_close = (code, reason)
                return
            if state is not State.OPEN:
                return
            self.proto.close(code, reason)
            self._write_locked(self.proto.data_to_send())
            self._set_close(code, reason)
        if self.debug:
            self.log.debug("> CLOSE %s", code)
        self.loop.call_soon_threadsafe(self._locally_closed)

    def _locally_closed(self) -> None:
        self._cancel_keepalive()
        self._close_timer()
        self._check_broken()

    # == worker threads ============================================================

    def _in_context(self, run: Callable[..., None], *args: Any) -> None:
        """Run one handler event inside the ``handler_context`` option, if any."""
        context = self.options.handler_context
        if context is None:
            run(*args)
            return
        with context():
            run(*args)

    def _run_connect(self) -> None:
        websocket, chain = self.websocket, self.chain
        assert websocket is not None and chain is not None
        try:
            self._in_context(chain.run_connect, websocket, websocket.path)
        except Reject as exc:
            self._refuse_threadsafe(exc.status, exc.reason, "handshake rejected by handler")
            return
        except Exception:
            handlers_logger.error(
                "error in on_connect of %s", chain.handler.__qualname__, exc_info=True
            )
            self._refuse_threadsafe(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                "internal server error (see the server log)",
                None,
            )
            return
        with self.lock:
            if self._transport_closed or self.proto.state is not State.CONNECTING:
                return  # the client went away or the server stopped meanwhile
            subprotocol = websocket.subprotocol
            if subprotocol is not None and subprotocol not in websocket.subprotocols:
                handlers_logger.error(
                    "on_connect of %s selected subprotocol %r, which the client did not offer",
                    chain.handler.__qualname__,
                    subprotocol,
                )
                subprotocol = websocket.subprotocol = None
            events = self.proto.accept(
                subprotocol, compression=self.options.compression == "deflate"
            )
            self.accepted = True
            self._write_locked(self.proto.data_to_send())
            for frame in self._early:
                self._write_locked(frame)
            self._early.clear()
            early_close = self._early_close
        self.log.info("open")
        if early_close is not None:
            self.close_threadsafe(*early_close)
        self.loop.call_soon_threadsafe(functools.partial(self._after_accept, events))

    def _refuse_threadsafe(self, status: int, reason: str, log: str | None) -> None:
        if log:
            self.log.info("%s: %d", log, status)
        with self.lock:
            if self.proto.state is State.CONNECTING and not self._transport_closed:
                self.proto.reject(status, reason)
                self._write_locked(self.proto.data_to_send())
        self.loop.call_soon_threadsafe(self._close_after_flush)

    def _run_message(self, message: str | bytes) -> None:
        websocket, chain = self.websocket, self.chain
        assert websocket is not None and chain is not None
        try:
            if not self._drop_messages:
                self._in_context(chain.run_message, websocket, message)
        except Reject as exc:
            self._drop_messages = True
            websocket.close(exc.code, exc.reason)
        except Exception:
            self._drop_messages = True
            handlers_logger.error(
                "error in on_message of %s", chain.handler.__qualname__, exc_info=True
            )
            websocket.close(CloseReason.INTERNAL_ERROR, "internal error")
        finally:
            with self.lock:
                self._queued -= 1
                resume = self._queued == max(0, self.options.max_queue // 4)
            if resume:
                self.loop.call_soon_threadsafe(self._resume)

    def _run_close(self) -> None:
        websocket, chain = self.websocket, self.chain
        assert websocket is not None and chain is not None
        try:
            self._in_context(chain.run_close, websocket)
        except Exception:
            handlers_logger.error(
                "error in on_close of %s", chain.handler.__qualname__, exc_info=True
            )
        finally:
            groups.hub.unregister(self)  # leave all groups once on_close has returned
            self.server._done(self)
