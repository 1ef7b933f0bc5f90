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
   ``LimitedStream`` wraps it, gevent's ``pywsgi`` for upgrade requests). uWSGI gives
   the descriptor of the request's connection through ``uwsgi.connection_fd()``:
   with ``--http-socket`` it is the client's, and behind uWSGI's HTTP router with
   ``--http-websockets`` it is the router's, which passes the bytes of an upgraded
   connection through untouched. waitress and mod_wsgi expose no socket at all.
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
is impossible (waitress, mod_wsgi, TLS terminated by the WSGI server itself, uWSGI's
HTTP router without ``--http-websockets``) the caller answers the upgrade with an
HTTP error that names the server and the fix: an option, or the separate-port mode.
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
    #: The server's descriptor when ``sock`` is a duplicate of it rather than the
    #: server's own socket object (uWSGI gives a bare descriptor).
    fd: int | None = None


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
    #: The live end of the stand-in socket, for a server that logs writes failing
    #: with ``EPIPE`` as errors (uWSGI): the caller reads and drops what arrives
    #: there until the server closes its descriptor, then closes it.
    sink: socket.socket | None = None


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


def _uwsgi_refusal(environ: dict[str, Any], uwsgi: Any) -> str | None:
    """Why a uWSGI connection cannot carry a WebSocket, with the fix; None if it can."""
    options = uwsgi.opt
    if environ.get("UWSGI_ROUTER"):
        router_here = options.get("http") is not None or options.get("https") is not None
        if router_here and not options.get("http-websockets"):
            return (
                "uWSGI's HTTP router (--http) closes upgraded connections unless it runs "
                "with --http-websockets: add --http-websockets"
            )
    elif environ.get("HTTPS") == "on" and options.get("https-socket") is not None:
        return (
            "uWSGI terminates TLS itself (--https-socket): serve --http-socket behind a "
            "TLS-terminating proxy, or use --https with --http-websockets"
        )
    return None


def _find_uwsgi_socket(environ: dict[str, Any]) -> Found | None:
    uwsgi = sys.modules.get("uwsgi")
    connection_fd = getattr(uwsgi, "connection_fd", None)
    if not callable(connection_fd):
        return None
    why = _uwsgi_refusal(environ, uwsgi)
    if why is not None:
        raise HandoffUnavailable(why)
    fd = int(connection_fd())
    if fd < 0:
        return None
    # A duplicate: a socket object over uWSGI's own descriptor would close it when
    # collected. It becomes the loop's socket in take_over.
    return Found(socket.socket(fileno=os.dup(fd)), None, "uWSGI", fd=fd)


def find_socket(environ: dict[str, Any]) -> Found | None:
    """Return where the server keeps this request's client socket, if anywhere.

    Raises:
        HandoffUnavailable: the server is known, but this connection cannot be
            taken (the message names the server and the fix).
    """
    if "uwsgi.version" in environ:
        return _find_uwsgi_socket(environ)
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


def _sink_over(fd: int) -> socket.socket:
    """Point descriptor ``fd`` at a socket whose peer reads and discards (uWSGI).

    Like :func:`_dead_socket_over`, except that the server's writes succeed (into
    the returned peer's receive buffer, far larger than a response head) instead of
    failing with ``EPIPE``, which uWSGI logs as an error for every hand-off. Reads
    still see end-of-file: the peer has shut its sending side.
    """
    stand_in, sink = socket.socketpair()
    try:
        sink.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            import fcntl

            nonblocking = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK
            stand_in.setblocking(not nonblocking)
        os.dup2(stand_in.fileno(), fd)
    except BaseException:
        sink.close()
        raise
    finally:
        stand_in.close()
    return sink


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
    fd = found.sock.fileno() if found.fd is None else found.fd
    if fd < 0:
        raise HandoffUnavailable(f"{found.server} closed the client socket")
    from_environ = (str(environ.get("REMOTE_ADDR", "")), int(environ.get("REMOTE_PORT") or 0))
    try:
        remote = found.sock.getpeername()
        remote_addr = (str(remote[0]), int(remote[1]))
    except (OSError, IndexError, TypeError, ValueError):
        remote_addr = from_environ
    if environ.get("UWSGI_ROUTER") and from_environ[0]:
        remote_addr = from_environ  # behind uWSGI's router, the peer is the router
    redirect = not park and can_redirect()
    if found.fd is not None:
        mine = found.sock  # already a duplicate of the server's descriptor
    else:
        # os.dup on POSIX; socket.dup where descriptors are not plain numbers (Windows
        # socket handles), detached so that the loop gets a standard socket object.
        duplicate = os.dup(fd) if redirect else found.sock.dup().detach()
        mine = socket.socket(found.sock.family, found.sock.type, fileno=duplicate)
    if not redirect:
        # The server still reads its own socket; bytes it buffered stay with it.
        return Handoff(mine, b"", remote_addr, False, found.server)
    sink = None
    try:
        if found.server == "uWSGI":
            sink = _sink_over(fd)
        else:
            _dead_socket_over(fd)
    except OSError:
        mine.close()
        raise
    initial = _take_buffered(found.buffer)
    return Handoff(mine, initial, remote_addr, True, found.server, sink)
