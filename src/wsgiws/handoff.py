"""Taking a client socket out of a WSGI server: where it lives, and how it is freed.

Theory of operation
-------------------

A WSGI server calls the application with a parsed request and expects a response to
write on the client socket afterwards, then shuts the socket down and closes it. For
a WebSocket upgrade in same-port mode the loop thread must own that connection
instead, while the server goes on as if it had answered a normal request.

1. **Find the socket.** No WSGI key is standard; each server has its own:
   ``gunicorn.socket`` (gunicorn), ``werkzeug.socket`` (werkzeug's dev server, i.e.
   ``flask run``), and for servers built on :mod:`socketserver` the raw socket under
   the buffered ``wsgi.input`` (:mod:`wsgiref`, Django's ``runserver`` whose
   ``LimitedStream`` wraps it, gevent's ``pywsgi`` for upgrade requests). waitress
   and mod_wsgi expose no socket at all.
2. **Duplicate it** (``os.dup``): the loop gets a socket object of its own on the
   same connection.
3. **Point the server's descriptor at a dead socket** (``os.dup2``): one end of a
   socketpair whose other end is closed. From then on the server's descriptor number
   no longer refers to the client connection: the response it writes fails with
   ``EPIPE`` (every server above treats that as "client went away", silently), its
   reads see end-of-file at once, and its ``shutdown()``/``close()`` only affect the
   dead socket. Nothing it does can reach the WebSocket stream, and the WSGI thread
   returns at once: no thread is held per connection.
4. **Take the bytes already buffered.** A server reads the request head in chunks,
   so a client that sent a frame right behind its request has part of the stream in
   the server's read buffer (``BufferedReader`` or gunicorn's ``Unreader``). Those
   bytes are taken (after step 3, so that the read cannot block) and handed to the
   loop before anything read from the socket.

Where step 3 is impossible (Windows has no ``dup2`` for sockets) the socket is still
duplicated but the request thread *parks* until the WebSocket closes; where step 1
is impossible (waitress, mod_wsgi, TLS terminated by the WSGI server itself) the
caller answers the upgrade with an HTTP error that names the separate-port mode.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import socket
import ssl
import sys
from typing import Any

__all__ = ["Handoff", "HandoffUnavailable", "can_redirect", "find_socket", "take_over"]


class HandoffUnavailable(Exception):
    """The client socket cannot be taken from this server (the message says why)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Found:
    """Where a WSGI server keeps the client socket of one request."""

    #: The server's own socket object for the connection.
    sock: socket.socket
    #: What holds bytes read past the request head (a reader or an unreader).
    buffer: Any
    #: A short name of the server, for logs and error messages.
    server: str


@dataclasses.dataclass(frozen=True, slots=True)
class Handoff:
    """The loop's side of a connection taken over from a WSGI server."""

    #: A duplicate of the client socket, owned by the caller from now on.
    sock: socket.socket
    #: Bytes the server had read past the request head.
    initial: bytes
    #: The client's address.
    remote_addr: tuple[str, int]
    #: True when the server's descriptor now points at a dead socket; False when
    #: the server still holds the connection (the caller must park the thread).
    redirected: bool
    #: A short name of the server.
    server: str


def can_redirect() -> bool:
    """Tell whether this platform can point a socket's descriptor at another one."""
    return hasattr(os, "dup2") and sys.platform != "win32"


def _raw_socket(stream: Any) -> socket.socket | None:
    """Find the socket under a ``BufferedReader`` over a ``socket.SocketIO``."""
    raw = getattr(stream, "raw", None)
    sock = getattr(raw, "_sock", None)
    # gevent's socket is not a socket.socket subclass, but has the same methods.
    if sock is not None and hasattr(sock, "fileno") and hasattr(sock, "recv"):
        return sock  # type: ignore[no-any-return]
    return None


def find_socket(environ: dict[str, Any]) -> Found | None:
    """Return where the server keeps this request's client socket, if anywhere."""
    stream = environ.get("wsgi.input")
    sock = environ.get("gunicorn.socket")
    if sock is not None:
        body_reader = getattr(stream, "reader", None)
        return Found(sock, getattr(body_reader, "unreader", None), "gunicorn")
    sock = environ.get("werkzeug.socket")
    if sock is not None:
        return Found(sock, stream, "werkzeug")
    # socketserver-based servers (wsgiref, Django's runserver) and gevent's pywsgi:
    # wsgi.input is the handler's rfile, or Django's LimitedStream around it.
    candidates = [stream]
    bound_read = getattr(stream, "_read", None)
    candidates.append(getattr(bound_read, "__self__", None))
    for candidate in candidates:
        sock = _raw_socket(candidate)
        if sock is not None:
            software = str(environ.get("SERVER_SOFTWARE", "")).split("/")[0] or "wsgi"
            return Found(sock, candidate, software)
    return None


def _is_tls(sock: Any) -> bool:
    return isinstance(sock, ssl.SSLSocket) or hasattr(sock, "do_handshake")


def _take_buffered(buffer: Any) -> bytes:
    """Take bytes read past the request head out of a server's read buffer.

    Called after the server's descriptor points at the dead socket, so that a read
    that finds the buffer empty meets end-of-file instead of blocking.
    """
    if buffer is None:
        return b""
    take = getattr(buffer, "take_buffered", None)  # gunicorn's Unreader (23+)
    if callable(take):
        return bytes(take())
    buf = getattr(buffer, "buf", None)
    if isinstance(buf, io.BytesIO):  # older gunicorn Unreader
        data = buf.getvalue()
        buffer.buf = io.BytesIO()
        return data
    read1 = getattr(buffer, "read1", None)  # io.BufferedReader
    if callable(read1):
        chunks = []
        with contextlib.suppress(OSError, ValueError):
            while True:
                chunk = read1(65536)
                if not chunk:
                    break
                chunks.append(bytes(chunk))
        return b"".join(chunks)
    return b""


def _dead_socket_over(fd: int) -> None:
    """Point descriptor ``fd`` at a socket whose peer is closed (see module doc)."""
    dead, peer = socket.socketpair()
    try:
        peer.close()
        # Keep the server's blocking mode: it is a flag of the open file, which
        # the server's descriptor is about to stop sharing with the connection.
        with contextlib.suppress(OSError):
            import fcntl

            nonblocking = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK
            dead.setblocking(not nonblocking)
        os.dup2(dead.fileno(), fd)
    finally:
        dead.close()


def take_over(environ: dict[str, Any], *, park: bool = False) -> Handoff:
    """Take the client connection of this request away from the WSGI server.

    With ``park`` (or where the platform cannot redirect a descriptor) the server
    keeps its socket untouched and the caller must hold the request thread until
    the loop is done with the connection.

    Raises:
        HandoffUnavailable: the server exposes no socket, or terminates TLS itself.
    """
    found = find_socket(environ)
    if found is None:
        software = environ.get("SERVER_SOFTWARE") or "this WSGI server"
        raise HandoffUnavailable(f"{software} does not expose the client socket")
    if _is_tls(found.sock):
        raise HandoffUnavailable(f"{found.server} terminates TLS itself")
    fd = found.sock.fileno()
    if fd < 0:
        raise HandoffUnavailable(f"{found.server} closed the client socket")
    try:
        remote = found.sock.getpeername()
        remote_addr = (str(remote[0]), int(remote[1]))
    except (OSError, IndexError, TypeError, ValueError):
        remote_addr = (str(environ.get("REMOTE_ADDR", "")), int(environ.get("REMOTE_PORT") or 0))
    redirect = not park and can_redirect()
    # os.dup on POSIX; socket.dup where descriptors are not plain numbers (Windows
    # socket handles), detached so that the loop gets a standard socket object.
    duplicate = os.dup(fd) if redirect else found.sock.dup().detach()
    mine = socket.socket(found.sock.family, found.sock.type, fileno=duplicate)
    if not redirect:
        # The server still reads its own socket; bytes it buffered stay with it.
        return Handoff(mine, b"", remote_addr, False, found.server)
    try:
        _dead_socket_over(fd)
    except OSError:
        mine.close()
        raise
    return Handoff(mine, _take_buffered(found.buffer), remote_addr, True, found.server)
