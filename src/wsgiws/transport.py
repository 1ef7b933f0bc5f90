"""The transport of one client connection: socket, TLS, outgoing buffer, timers.

Theory of operation
-------------------

A :class:`Transport` moves bytes between one client socket and the connection's
:class:`~wsgiws.protocol.ServerProtocol`, and reports what the protocol makes of them
to its :class:`TransportUser` (the connection's :class:`~wsgiws.session.Session`). It
knows nothing of routes, handlers, groups or the server. Two kinds of thread touch it:

* the **loop thread** reads the socket, feeds the protocol, writes what is left in
  the outgoing buffer when the socket is writable, runs the timers (handshake,
  keepalive, close, linger) and closes the socket. Only it touches the selector and
  closes the socket. The methods doing this are private; under ``python -X dev``
  they check their thread (:data:`~wsgiws.loop.CHECK_THREADS`).
* **any thread** (a handler on a worker, a WSGI view, a timer thread) may call the
  public methods: send (:meth:`Transport.send_frame` and friends), close, accept or
  reject the handshake. A send takes the lock, queues the frame through the
  protocol, and writes. If the outgoing buffer is empty the frame is written to the
  (non-blocking) socket at once, from that thread; whatever the kernel does not take
  is buffered, and the loop is asked — once — to watch for writability. A write
  error only marks the transport broken; the loop closes it. The public methods
  that act on the loop (:meth:`~Transport.start`, :meth:`~Transport.shutdown`,
  :meth:`~Transport.abort`, ...) run at once when called on the loop thread and are
  queued to it otherwise.

Everything that touches the protocol object or the buffer happens under ``lock``.
The protocol owns the connection's state; the transport only asks it
(``proto.state``) and tells it what happened (``proto.connection_lost()``).

Closing: after the closing handshake (or a protocol failure, or a rejected handshake)
the server flushes its last bytes, shuts down its sending side and reads until the
peer closes (or ``close_timeout``), then closes the socket. Closing with unread data
would make the kernel send a reset, which can destroy the close frame in flight. Once
no message can arrive any more the user hears :meth:`TransportUser.input_finished`
(exactly once); once the socket is closed, :meth:`TransportUser.transport_closed`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import ssl
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from wsproto.frame_protocol import CloseReason, Opcode

from .exceptions import ConnectionClosed
from .log import ConnectionLogger, connection_logger
from .loop import CHECK_THREADS
from .protocol import (
    SPLIT_FRAME_MIN,
    CloseReceived,
    Event,
    Failed,
    HandshakeRequest,
    MessageReceived,
    PongReceived,
    PreparedMessage,
    ServerProtocol,
    State,
    encode_message_parts,
    frame_header,
)

if TYPE_CHECKING:
    from .loop import Burst, SelectorLoop, TimerHandle
    from .options import Options

__all__ = ["Transport", "TransportUser"]

#: Bytes read per ``recv``; a bigger read means fewer wsproto passes per message.
READ_SIZE = 256 * 1024
#: Seconds to wait for the peer's EOF after our last bytes, when no close_timeout.
LINGER_TIMEOUT = 5.0
#: Bytes handed to one TLS write. A TLS write that must be retried is retried with
#: the same leading bytes (OpenSSL's rule); the buffer only grows at its end, so a
#: bounded chunk keeps every retry identical.
TLS_WRITE_SIZE = 256 * 1024
#: A large payload follows its frame header in one ``sendmsg`` of both buffers
#: (where the platform has it), not copied after the header first.
SENDMSG = hasattr(socket.socket, "sendmsg")
#: A broadcast frame at least this long is written at once, like a direct send; and
#: a buffer of queued broadcast frames that reaches it (or half of ``write_limit``)
#: before the loop wrote it is written by the sending thread.
FLUSH_SIZE = 64 * 1024

# Headers of unmasked, final text and binary frames of fewer than 126 bytes, by
# payload size: a small message's frame is one concatenation (send_message).
_TEXT_HEADERS = tuple(frame_header(Opcode.TEXT, size) for size in range(126))
_BINARY_HEADERS = tuple(frame_header(Opcode.BINARY, size) for size in range(126))


class TransportUser(Protocol):
    """What a :class:`Transport` reports to the layer above it.

    The transport calls these on the loop thread; each is safe on any thread.
    """

    def handshake_requested(self, request: HandshakeRequest) -> None:
        """A valid upgrade request arrived: decide, then :meth:`Transport.accept` or
        :meth:`Transport.reject`. Reading is paused meanwhile."""

    def messages_received(self, messages: list[str | bytes]) -> None:
        """Complete messages arrived, in order (all those one read completed)."""

    def input_failed(self) -> None:
        """The peer broke the protocol after the messages already reported: once
        those are handled, call :meth:`Transport.close_failed` (which sends the
        close frame). The transport sends it anyway after ``close_timeout``."""

    def input_finished(self) -> None:
        """No message will arrive any more (called once)."""

    def transport_closed(self) -> None:
        """The socket is closed (called once, after :meth:`input_finished`)."""


class Transport:
    """The I/O side of one client connection (see the module docstring).

    Args:
        sock: the connected, non-blocking socket (an :class:`ssl.SSLSocket` for TLS,
            whose handshake is still to be done).
        user: the layer above, told about requests, messages and the end.
        loop: the loop that watches the socket.
        options: the server's options (limits and timeouts).
        log: the connection's logger.
    """

    # Slots: one of these lives as long as its connection (memory per connection).
    __slots__ = (
        "_broken",
        "_close_when_flushed",
        "_closed",
        "_corked",
        "_early_close",
        "_failure_timer",
        "_finished",
        "_lingering",
        "_loop",
        "_opened",
        "_options",
        "_out",
        "_paused",
        "_ping_payload",
        "_ping_timer",
        "_pong_timer",
        "_read_suspended",
        "_reading",
        "_timer",
        "_tls",
        "_tls_handshaking",
        "_tls_want_write",
        "_user",
        "_write_requested",
        "accepted",
        "close_code",
        "close_reason",
        "debug",
        "lock",
        "log",
        "proto",
        "server_addr",
        "sock",
    )

    def __init__(
        self,
        sock: socket.socket,
        user: TransportUser,
        *,
        loop: SelectorLoop,
        options: Options,
        log: ConnectionLogger,
    ) -> None:
        self._user = user
        self._loop = loop
        self._options = options
        self.log = log
        # The socket; closed by the loop thread only.
        self.sock = sock
        name = sock.getsockname()
        #: The local address: ``("", 0)`` for a socket that has none (AF_UNIX).
        self.server_addr: tuple[str, int] = name[:2] if isinstance(name, tuple) else ("", 0)
        #: Guards the protocol object, the outgoing buffer and the flags below.
        self.lock = threading.Lock()
        # TLS: OpenSSL objects must not be used by two threads at once, so every
        # write goes through the loop thread; the handshake runs there first.
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._tls_handshaking = self._tls
        self._tls_want_write = False
        #: The sans-IO protocol: parses, validates, encodes, and owns the state.
        self.proto = ServerProtocol(
            max_message_size=options.max_message_size, hold_failure_close=True
        )
        self._out = bytearray()
        # Set under lock when the loop has been asked to watch writability.
        self._write_requested = False
        # Set under lock when a write failed: the loop will close the socket.
        self._broken = False
        # Set under lock when the socket is closed: nothing is written any more.
        self._closed = False
        # Once the buffer drains: shut down our side and wait for the peer's EOF.
        self._close_when_flushed = False
        # Loop thread: True once our sending side is shut down (draining input).
        self._lingering = False
        # Loop thread: whether the socket is watched for reading.
        self._reading = False
        # Loop thread: the accepted handshake was applied (reading on, timers set).
        self._opened = False
        # Flow control, under lock. Pausing only sets _paused: the selector is left
        # alone until the socket next reports input, and only then unregistered
        # (_read_suspended). A resume that comes first costs no system call.
        self._paused = False
        self._read_suspended = False
        # Under lock: the thread whose writes wait for uncork() (see cork()).
        self._corked: int | None = None
        # A close asked for while on_connect runs, applied right after the 101.
        self._early_close: tuple[int, str] | None = None
        #: Set (under lock) once the handshake is accepted.
        self.accepted = False
        self._finished = False
        #: The close code that explains the end (the first one recorded), and reason.
        self.close_code: int | None = None
        self.close_reason = ""
        self._timer: TimerHandle | None = None  # handshake, then close or linger
        self._ping_timer: TimerHandle | None = None
        self._pong_timer: TimerHandle | None = None
        # After a violation: sends the held close frame if the handlers are too slow.
        self._failure_timer: TimerHandle | None = None
        self._ping_payload = b""
        # Checked once: per-frame DEBUG lines cost nothing when DEBUG is off.
        self.debug = connection_logger.isEnabledFor(logging.DEBUG)

    # == any thread ================================================================

    def start(self) -> None:
        """Begin serving: watch the socket and arm the handshake timer.

        Callable from any thread; runs on the loop thread.
        """
        self._loop.run_threadsafe(self._start)

    def start_upgraded(
        self, target: str, headers: list[tuple[str, str]], initial: bytes = b""
    ) -> None:
        """Begin from a request a WSGI server already parsed.

        ``initial`` holds bytes the WSGI server read past the request head; they
        are kept, like bytes received while the handshake is decided, until the 101.
        Callable from any thread; runs on the loop thread.
        """
        self._loop.run_threadsafe(functools.partial(self._start_upgraded, target, headers, initial))

    def shutdown(self, code: int, reason: str) -> None:
        """Close for server shutdown: a close frame if open, else drop.

        Callable from any thread; runs on the loop thread.
        """
        self._loop.run_threadsafe(functools.partial(self._shutdown, code, reason))

    def abort(self, code: int, reason: str) -> None:
        """Close the socket without a closing handshake.

        Callable from any thread; runs on the loop thread.
        """
        self._loop.run_threadsafe(functools.partial(self._abort, code, reason))

    def close_after_fork(self) -> None:
        """In a forked child: close this process's copy of the socket, which the parent
        keeps serving. Called on the child's only thread."""
        with contextlib.suppress(OSError):
            self.sock.close()

    def pause_reading(self) -> None:
        """Stop reading from the client (too many messages queued). Any thread.

        Costs a flag: the socket leaves the selector only if input arrives while
        paused, so a resume that comes first costs nothing.
        """
        with self.lock:
            self._paused = True

    def resume_reading(self) -> None:
        """Read again after :meth:`pause_reading`. Any thread."""
        with self.lock:
            self._paused = False
            suspended, self._read_suspended = self._read_suspended, False
        if suspended:
            self._loop.run_threadsafe(self._resume)

    def cork(self) -> None:
        """Hold this thread's writes in the buffer until :meth:`uncork`. Any thread.

        A worker corks around a batch of messages so that the replies of the whole
        batch leave in one ``send``. Writes from other threads are not held: they
        write everything buffered, in order.
        """
        with self.lock:
            self._corked = threading.get_ident()

    def uncork(self) -> None:
        """Write what :meth:`cork` held. Any thread (the one that corked)."""
        with self.lock:
            self._corked = None
            if self._out and not self._write_requested:
                self._write_locked(b"")

    def accept(self, subprotocol: str | None, *, compression: bool) -> bool:
        """Accept the handshake: the 101, then the frames sent meanwhile. Any thread.

        Returns False, doing nothing, when the client went away or the server
        stopped meanwhile.
        """
        with self.lock:
            if self._closed or self.proto.state is not State.CONNECTING:
                return False
            events = self.proto.accept(subprotocol, compression=compression)
            self.accepted = True
            self._write_locked(self.proto.data_to_send())
            early_close = self._early_close
        if self.log.logger.isEnabledFor(logging.INFO):
            self.log.info("open")
        if early_close is not None:
            self.close_threadsafe(*early_close)
        # On the loop thread (a decision with no user code to run) it is applied at
        # once; from a worker, on the loop's next pass.
        self._loop.run_threadsafe(functools.partial(self._after_accept, events))
        return True

    def reject(self, status: int, reason: str) -> None:
        """Refuse the handshake with an HTTP error response, then close. Any thread."""
        with self.lock:
            if self.proto.state is State.CONNECTING and not self._closed:
                self.proto.reject(status, reason)
                self._write_locked(self.proto.data_to_send())
        self._loop.run_threadsafe(self._close_after_flush)

    def is_open(self) -> bool:
        """True while messages can be sent (also during ``on_connect``). Any thread."""
        proto = self.proto
        return (proto.state is State.OPEN or proto.decision_pending) and not self._broken

    def queued_bytes(self) -> int:
        """Bytes waiting to be written: buffered, or kept for after the 101. Any thread."""
        with self.lock:
            return len(self._out) + self.proto.early_size

    def send_message(self, message: str | bytes) -> None:
        """Encode and send a message. Any thread.

        Raises:
            ConnectionClosed: the connection is not open.
        """
        if self.debug:
            kind = "TEXT" if isinstance(message, str) else "BINARY"
            self.log.debug("> %s [%d]", kind, len(message))
        if self.proto.deflate_bits is not None or type(message) not in (str, bytes):
            self.send_frame(*encode_message_parts(message, self.proto.deflate_bits))
            return
        # The common case, with fewer calls: a str or bytes message, no compression.
        # Encoded as encode_message_parts does (a large payload is not copied) and
        # written as send_frame writes it to an open connection: the protocol's own
        # buffer is always empty outside the lock, so its round trip adds nothing.
        if type(message) is str:
            payload = message.encode()
            opcode = Opcode.TEXT
            headers = _TEXT_HEADERS
        else:
            payload = message  # type: ignore[assignment]
            opcode = Opcode.BINARY
            headers = _BINARY_HEADERS
        size = len(payload)
        if size < 126:
            frame = headers[size] + payload
            payload = b""
        elif size < SPLIT_FRAME_MIN:
            frame = frame_header(opcode, size) + payload
            payload = b""
        else:
            frame = frame_header(opcode, size)
        with self.lock:
            if self.proto.state is State.OPEN and not self._broken:
                self._write_locked(frame, payload)
                return
        self.send_frame(frame, payload)  # before the 101 (kept for after it), or closed

    def send_prepared(self, message: PreparedMessage) -> None:
        """Send a message encoded once for many connections. Any thread.

        Raises:
            ConnectionClosed: the connection is not open.
        """
        self.send_frame(message.frame(self.proto.deflate_bits))

    def queue_prepared(
        self, message: PreparedMessage, burst: Burst | None = None
    ) -> Callable[[], None] | None:
        """Queue a broadcast frame for the loop thread to write. Any thread.

        Unlike :meth:`send_prepared`, no system call: the frame joins the outgoing
        buffer and the transport is put on the loop's list of writers (once, until
        the loop has written it), so that a member receiving many messages in a
        short time gets them in few ``send`` calls. Returns the loop's wake-up when
        the caller must call it once it has queued to every member (this transport
        just joined the list), else None. Bounded like every write: past
        ``write_limit`` the connection is closed with 1008. While ``on_connect``
        runs the frame is kept for after the 101, as by :meth:`send_frame`.

        Raises:
            ConnectionClosed: the connection is not open.
        """
        with self.lock:
            proto = self.proto
            if proto.state is State.OPEN and not self._broken:
                frame = message.frame(proto.deflate_bits)
                if len(frame) >= FLUSH_SIZE:
                    self._write_locked(frame)  # a large frame: nothing to gain
                    return None
                out = self._out
                out += frame
                size = len(out)
                limit = self._options.write_limit
                if size >= FLUSH_SIZE or 2 * size > limit:
                    if size > limit:
                        out.clear()
                        self._too_slow()
                        return None
                    if size - len(frame) < min(FLUSH_SIZE, limit // 2) and not self._tls:
                        # The loop has not got to this buffer yet (a long fan-out holds
                        # the GIL): write it from here, once per FLUSH_SIZE queued.
                        self._send_buffer_locked()
                        if not out:
                            return None
                if self._write_requested:
                    return None  # the loop or the burst writes the buffer already
                self._write_requested = True
                loop = self._loop
                if burst is not None and not self._tls:
                    burst.add(self, loop)  # written when the handler call ends
                    return None
                loop.defer_threadsafe(self._flush)
                return loop.wake_threadsafe
        self.send_prepared(message)  # before the 101, or closed (raises)
        return None

    def write_queued(self) -> None:
        """Write the frames :meth:`queue_prepared` queued to a burst, now. Any thread
        (not TLS: those are queued to the loop)."""
        with self.lock:
            if self._closed or self._broken:
                return
            out = self._out
            if out:
                self._send_buffer_locked()
            if out and not self._broken:
                self._request_loop(self._watch)  # the rest when the socket is writable
            else:
                self._write_requested = False

    def send_frame(self, frame: bytes, payload: bytes = b"") -> None:
        """Send an encoded frame; broadcasts pass the same bytes to all. Any thread.

        Or a frame's header and its large ``payload`` (:func:`encode_message_parts`),
        written without being copied together. While ``on_connect`` runs the
        protocol keeps the frame for after the 101.

        Raises:
            ConnectionClosed: the connection is not open.
        """
        with self.lock:
            proto = self.proto
            if proto.state is State.OPEN and not self._broken:
                proto.send_encoded(frame, payload)
                self._write_locked(*proto.data_to_send_parts())
                return
            if proto.decision_pending and not self._closed and not self._broken:
                # Bounded like the outgoing buffer: a group member whose on_connect
                # is slow must not queue without limit.
                if proto.early_size + len(frame) + len(payload) > self._options.write_limit:
                    proto.discard_early()
                    self._too_slow()
                else:
                    proto.send_encoded(frame, payload)
                return
        raise ConnectionClosed(self.close_code, self.close_reason)

    def close_failed(self) -> None:
        """After a violation of the peer: send the close frame held back while the
        messages received before it were handled, then close. Any thread; does
        nothing the second time."""
        with self.lock:
            if not self.proto.close_failed():
                return
            self._write_locked(self.proto.data_to_send())
        self._loop.run_threadsafe(self._close_after_flush)

    def close_threadsafe(self, code: int, reason: str) -> None:
        """Start the closing handshake; no-op if already closing. Any thread.

        Asked while ``on_connect`` runs, the close follows the 101.
        """
        with self.lock:
            proto = self.proto
            if proto.decision_pending:
                self._early_close = (code, reason)
                return
            if proto.state is not State.OPEN:
                return
            proto.close(code, reason)
            self._write_locked(proto.data_to_send())
            self._set_close(code, reason)
        if self.debug:
            self.log.debug("> CLOSE %s", code)
        self._loop.call_soon_threadsafe(self._locally_closed)

    # == under lock, any thread ====================================================

    def _set_close(self, code: int, reason: str) -> None:
        # The first code recorded is the one that explains the close.
        if self.close_code is None:
            self.close_code = int(code)
            self.close_reason = reason

    def _write_locked(self, data: bytes, payload: bytes = b"") -> None:
        """Write ``data`` (then ``payload``, a large frame's) now or buffer it
        (caller holds ``lock``; any thread).

        Buffered bytes go first: while the loop watches writability it writes them;
        while this thread corked the transport they wait for :meth:`uncork`; else
        they are written now, with ``data``, in one ``send`` (a ``sendmsg`` of
        ``data`` and ``payload``, which is not copied unless the kernel leaves
        part of it).
        """
        if self._closed or self._broken:
            return
        out = self._out
        if self._write_requested or self._tls:
            if not data and not payload:
                return
            out += data
            out += payload
        elif self._corked is not None and self._corked == threading.get_ident():
            if not data and not payload:
                return
            out += data
            out += payload
            if len(out) <= self._options.write_limit:
                return
        else:
            if out or (payload and not SENDMSG):
                out += data
                out += payload
                data = payload = b""
            elif not data and not payload:
                return
            try:
                if payload:
                    sent = self.sock.sendmsg([data, payload])
                else:
                    sent = self.sock.send(out or data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._broken = True
                self._request_loop(self._check_broken)
                return
            if out:
                del out[:sent]
            else:
                if sent < len(data):
                    out += memoryview(data)[sent:]
                if payload and sent < len(data) + len(payload):
                    out += memoryview(payload)[max(sent - len(data), 0) :]
        if out:
            if len(out) > self._options.write_limit:
                out.clear()
                self._too_slow()
            elif not self._write_requested:
                self._write_requested = True
                self._request_loop(self._watch)

    def _too_slow(self) -> None:
        # The code is recorded now: the loop may see _broken (and close) before it
        # runs _slow_reader, and 1008, not 1006, explains this close.
        self._broken = True
        self._set_close(CloseReason.POLICY_VIOLATION, "client too slow to read")
        self._request_loop(self._slow_reader)

    def _send_buffer_locked(self) -> None:
        """Write what the kernel takes of the buffer now (caller holds ``lock``; not TLS)."""
        out = self._out
        try:
            sent = self.sock.send(out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._broken = True
            out.clear()
            self._request_loop(self._check_broken)
            return
        del out[:sent]

    def _request_loop(self, callback: Callable[[], None]) -> None:
        # Deferred even on the loop thread: the caller holds the lock, and the
        # callback may take it.
        self._loop.call_soon_threadsafe(callback)

    # == loop thread ===============================================================

    def _start(self) -> None:
        if CHECK_THREADS:
            self._loop.check_thread()
        self._set_reading(True)
        if self._options.handshake_timeout is not None:
            self._timer = self._loop.call_later(
                self._options.handshake_timeout, self._handshake_expired
            )

    def _start_upgraded(self, target: str, headers: list[tuple[str, str]], initial: bytes) -> None:
        if CHECK_THREADS:
            self._loop.check_thread()
        with self.lock:
            event = self.proto.start_from_request(target, headers)
            if initial:
                self.proto.receive_data(initial)
            self._write_locked(self.proto.data_to_send())
        self._handle([event])

    def _set_reading(self, reading: bool) -> None:
        if self._closed or reading == self._reading:
            return
        self._reading = reading
        self._watch()

    def _watch(self) -> None:
        if CHECK_THREADS:
            self._loop.check_thread()
        if self._closed:
            return
        wants_write = bool(self._out) or self._tls_want_write
        self._loop.watch(
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
        if CHECK_THREADS:
            self._loop.check_thread()
        if self._tls_handshaking:
            self._tls_handshake()
            return
        if self._paused and not self._lingering:
            with self.lock:
                if self._paused:
                    # Input while paused: only now leave the selector.
                    self._read_suspended = True
                    self._set_reading(False)
                    return
        while self._read_once() and self._tls and self._reading:
            # TLS may hold decrypted bytes that the selector will never report.
            if not self.sock.pending():  # type: ignore[attr-defined]
                break

    def _read_once(self) -> bool:
        """Read and handle one chunk; return True if the connection may read on."""
        # The rest of a large frame is received straight into its payload buffer;
        # other input into the loop's shared buffer, which the protocol copies from.
        direct = self.proto.receive_buffer()
        view = self._loop.read_buffer(READ_SIZE) if direct is None else direct
        try:
            size = self.sock.recv_into(view)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False
        except OSError:
            self._abort(CloseReason.ABNORMAL_CLOSURE, "connection lost")
            return False
        finally:
            if direct is not None:
                direct.release()  # no view of a frame buffer outlives the read
        if self._lingering:
            if not size:
                self._close_transport()
            return bool(size)  # input after our close is drained and discarded
        if not size:
            with self.lock:
                events = self.proto.receive_eof()
            self._handle(events)
            return False
        with self.lock:
            if direct is not None:
                events = self.proto.received_into(size)
            else:
                events = self.proto.receive_data(view[:size])
            self._write_locked(self.proto.data_to_send())
        if events:
            self._handle(events)
        self._check_broken()
        return not self._closed

    def _handle(self, events: list[Event]) -> None:
        # Consecutive messages go up in one batch: one hand-off to the workers.
        batch: list[str | bytes] = []
        for event in events:
            if type(event) is MessageReceived:
                data = event.data
                if self.debug:
                    kind = "TEXT" if isinstance(data, str) else "BINARY"
                    self.log.debug("< %s [%d]", kind, len(data))
                batch.append(data)
                continue
            if batch:
                self._user.messages_received(batch)
                batch = []
            if isinstance(event, PongReceived):
                if self._pong_timer is not None and event.payload == self._ping_payload:
                    self._pong_timer.cancel()
                    self._pong_timer = None
            elif isinstance(event, HandshakeRequest):
                self._user.handshake_requested(event)
                if not self._opened and not self._lingering:
                    # Decided elsewhere (a worker), or not applied yet: what follows
                    # waits until the handshake is decided (and parsed after the 101).
                    self._set_reading(False)
            elif isinstance(event, CloseReceived):
                self._set_close(event.code, event.reason)
                if self.debug:
                    self.log.debug("< CLOSE %s", event.code)
                self._close_after_flush()
            elif isinstance(event, Failed):
                self._failed(event)
        if batch:
            self._user.messages_received(batch)

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
        if self.proto.failure_pending:
            # Strict order: the messages before the violation are being handled and
            # their answers go out before the close frame. Nothing more is read;
            # handlers slower than close_timeout do not hold the close back.
            self._set_reading(False)
            self._cancel_keepalive()
            self._failure_timer = self._loop.call_later(
                self._options.close_timeout or LINGER_TIMEOUT, self._failure_expired
            )
            self._user.input_failed()
            return
        self._close_after_flush()

    def _failure_expired(self) -> None:
        self._failure_timer = None
        if self.proto.failure_pending:
            self.log.info("handlers still busy after close_timeout: sending the close frame")
            self.close_failed()

    def _after_accept(self, events: list[Event]) -> None:
        if CHECK_THREADS:
            self._loop.check_thread()
        if self._closed:
            return
        self._opened = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._schedule_ping()
        self._set_reading(True)
        if events:
            self._handle(events)
        self._check_broken()

    def _resume(self) -> None:
        if CHECK_THREADS:
            self._loop.check_thread()
        with self.lock:
            if self._paused:  # paused again meanwhile: stay out of the selector
                self._read_suspended = True
                return
        if (
            self.proto.state in (State.OPEN, State.CLOSING)
            and not self._lingering
            and not self.proto.failure_pending  # nothing is read after a violation
        ):
            self._set_reading(True)
            if self._tls and self.sock.pending():  # type: ignore[attr-defined]
                self._on_readable()  # decrypted bytes: no readiness will come

    def _on_writable(self) -> None:
        if CHECK_THREADS:
            self._loop.check_thread()
        if self._tls_handshaking:
            self._tls_handshake()
            return
        with self.lock:
            out = self._out
            if out and not self._broken:
                try:
                    if self._tls:
                        # A view, not a copy; released before the buffer changes.
                        with memoryview(out)[:TLS_WRITE_SIZE] as chunk:
                            sent = self.sock.send(chunk)
                    else:
                        sent = self.sock.send(out)
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
                del out[:sent]
            if not out:
                self._write_requested = False
        self._watch()
        self._check_broken()
        if not self._out and self._close_when_flushed:
            self._shutdown_write()

    def _flush(self) -> None:
        # Queued by queue_prepared: write the buffer (what the kernel does not take
        # waits for writability, as after any partial write).
        if not self._closed:
            self._on_writable()

    def _close_after_flush(self) -> None:
        if CHECK_THREADS:
            self._loop.check_thread()
        if self._failure_timer is not None:
            self._failure_timer.cancel()
            self._failure_timer = None
        self._close_when_flushed = True
        self._cancel_keepalive()
        if not self._out:
            self._shutdown_write()

    def _shutdown_write(self) -> None:
        if self._lingering or self._closed:
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
        self._timer = self._loop.call_later(
            self._options.close_timeout or LINGER_TIMEOUT, self._close_transport
        )
        self._finish()

    def _check_broken(self) -> None:
        if self._broken and not self._closed:
            self._abort(CloseReason.ABNORMAL_CLOSURE, "connection lost")
        elif self._out:
            self._watch()

    def _abort(self, code: int, reason: str) -> None:
        if CHECK_THREADS:
            self._loop.check_thread()
        self._set_close(code, reason)
        self._close_transport()

    def _close_transport(self) -> None:
        if CHECK_THREADS:
            self._loop.check_thread()
        if self._closed:
            return
        with self.lock:
            self._closed = True
            self._out.clear()
            self.proto.connection_lost()
        self._loop.remove_socket(self.sock)
        self._reading = False
        for timer in (self._timer, self._ping_timer, self._pong_timer, self._failure_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._ping_timer = self._pong_timer = self._failure_timer = None
        self.sock.close()
        self._set_close(CloseReason.ABNORMAL_CLOSURE, "connection lost")
        self._finish()
        self._user.transport_closed()

    def _finish(self) -> None:
        """Tell the user, once, that no message will arrive any more."""
        if self._finished:
            return
        self._finished = True
        self._user.input_finished()

    def _handshake_expired(self) -> None:
        self._timer = None
        if self.proto.state is State.CONNECTING and self.proto.request is None:
            self.log.info("handshake timed out")
            self._abort(CloseReason.ABNORMAL_CLOSURE, "handshake timeout")

    def _schedule_ping(self) -> None:
        if self._options.ping_interval is not None and not self._closed:
            self._ping_timer = self._loop.call_later(self._options.ping_interval, self._ping)

    def _ping(self) -> None:
        if CHECK_THREADS:
            self._loop.check_thread()
        self._ping_timer = None
        with self.lock:
            if self.proto.state is not State.OPEN:
                return
            self._ping_payload = os.urandom(4)
            self.proto.send_ping(self._ping_payload)
            self._write_locked(self.proto.data_to_send())
        if self._options.ping_timeout is not None and self._pong_timer is None:
            self._pong_timer = self._loop.call_later(self._options.ping_timeout, self._pong_expired)
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
        if self._closed or self._lingering:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        if self._options.close_timeout is not None:
            self._timer = self._loop.call_later(self._options.close_timeout, self._close_expired)

    def _close_expired(self) -> None:
        self._timer = None
        if self.proto.state is State.CLOSING:
            self.log.info("no close frame from the peer in time")
            self._abort(CloseReason.ABNORMAL_CLOSURE, "close timeout")

    def _shutdown(self, code: int, reason: str) -> None:
        if CHECK_THREADS:
            self._loop.check_thread()
        # The state is read under the lock: a handler may close at the same moment.
        with self.lock:
            state = self.proto.state
            failed = self.proto.close_failed()  # a violation's close frame goes first
            if failed:
                self._write_locked(self.proto.data_to_send())
            elif state is State.OPEN:
                self.proto.close(code, reason)
                self._write_locked(self.proto.data_to_send())
        if failed:
            self._close_after_flush()
        elif state is State.OPEN:
            self._set_close(code, reason)
            self._cancel_keepalive()
            self._close_timer()
            self._check_broken()
        elif state is State.CONNECTING or not self.accepted:
            self._abort(CloseReason.GOING_AWAY, reason)

    def _slow_reader(self) -> None:
        self.log.warning(
            "closing: client is not reading (more than write_limit of %d bytes queued)",
            self._options.write_limit,
        )
        self._set_close(CloseReason.POLICY_VIOLATION, "client too slow to read")
        self._close_transport()

    def _locally_closed(self) -> None:
        self._cancel_keepalive()
        self._close_timer()
        self._check_broken()
