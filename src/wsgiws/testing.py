"""A small synchronous WebSocket client for testing handlers.

:func:`serve` runs a :class:`~wsgiws.Server` on a free loopback port for the length
of a ``with`` block, and :func:`connect` opens a real WebSocket connection to it (or
to any address) and returns a :class:`Client` with blocking ``send``/``recv``::

    import wsgiws
    from wsgiws.testing import connect, serve

    registry = wsgiws.Registry()

    @registry.namespace(r"/echo")
    class Echo(wsgiws.BaseWSClass):
        @classmethod
        def on_message(cls, websocket, message):
            websocket.send(message)

    with serve(registry) as server, connect(server, "/echo") as client:
        client.send("hello")
        assert client.recv() == "hello"

The client speaks over a real TCP socket through ``wsproto``, so the server code
under test runs exactly as in production (loop thread, worker threads, limits). It
needs nothing beyond wsgiws' own dependencies. A :class:`Client` belongs to the
thread that uses it; it answers pings by itself while it waits in :meth:`Client.recv`.
"""

from __future__ import annotations

import collections
import contextlib
import json
import socket
import ssl
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason

from .exceptions import ConnectionClosed, WSGIWSError
from .middleware import WebSocketMiddleware
from .server import Server

if TYPE_CHECKING:
    from .routing import Registry

__all__ = ["Client", "HandshakeRejected", "connect", "serve"]

#: Seconds :func:`connect`, :meth:`Client.recv` and :meth:`Client.close` wait by
#: default: generous, so that tests pass on a loaded machine.
DEFAULT_TIMEOUT = 10.0

#: Close code recorded when the connection ended without a close frame (RFC 6455
#: §7.1.5).
ABNORMAL_CLOSURE = CloseReason.ABNORMAL_CLOSURE


class HandshakeRejected(WSGIWSError):
    """The server answered the upgrade request with an HTTP error.

    Attributes:
        status: the HTTP status code, e.g. 403 or 404.
        headers: the response headers, names in lowercase.
        body: the response body (a refusal's reason, as plain text).
    """

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        super().__init__(status, body)
        self.status = status
        self.headers = headers
        self.body = body

    def __str__(self) -> str:
        text = self.body.decode("utf-8", "replace").strip()
        return f"handshake rejected with HTTP {self.status}" + (f": {text}" if text else "")


Target = Server | WebSocketMiddleware | tuple[str, int] | int | str


def _address(target: Target, path: str, default_port: int = 80) -> tuple[str, int, str]:
    """Resolve ``target`` to ``(host, port, request target)``."""
    if isinstance(target, WebSocketMiddleware):
        target = target.server
    if isinstance(target, Server):
        if target.port is None:
            raise ValueError(
                "this server has no port of its own (same-port mode): connect to the "
                "WSGI server's address instead, e.g. connect(('127.0.0.1', 8000), path)"
            )
        host = target.host if target.host not in ("", "0.0.0.0") else "127.0.0.1"
        if host == "::":
            host = "::1"
        return host, target.port, path
    if isinstance(target, bool):
        raise TypeError(f"target must be a Server, middleware, address or URL, got {target!r}")
    if isinstance(target, int):
        return "127.0.0.1", target, path
    if isinstance(target, tuple):
        return str(target[0]), int(target[1]), path
    if isinstance(target, str):
        url = urlsplit(target)
        if url.scheme != "ws" or url.hostname is None:
            raise ValueError(f"target URL must be ws:// or wss://, got {target!r}")
        full = (url.path or "/") + (f"?{url.query}" if url.query else "")
        return url.hostname, url.port or default_port, full if path == "/" else path
    raise TypeError(f"target must be a Server, middleware, address or URL, got {target!r}")


class Client:
    """A blocking WebSocket client connection; create it with :func:`connect`.

    Attributes:
        subprotocol: the subprotocol the server selected, or ``None``.
        response_headers: the 101 response's headers, names in lowercase.
    """

    def __init__(self, sock: socket.socket, ws: WSConnection, *, timeout: float | None) -> None:
        self._sock = sock
        self._ws = ws
        self._timeout = timeout
        self._events: collections.deque[Event] = collections.deque()
        self._eof = False
        self._text: list[str] = []
        self._data: list[bytes] = []
        self.subprotocol: str | None = None
        self.response_headers: dict[str, str] = {}
        #: The close code of the closing handshake (the server's close frame), 1006
        #: when the connection dropped without one, ``None`` while open.
        self.close_code: int | None = None
        #: The reason that goes with :attr:`close_code`.
        self.close_reason: str = ""

    # -- public --------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the connection is closed (by either side)."""
        return self.close_code is not None

    def send(self, message: str | bytes) -> None:
        """Send a text (``str``) or binary (``bytes``) message.

        Raises:
            ConnectionClosed: the connection is closed.
        """
        if self.closed or self._ws.state is not ConnectionState.OPEN:
            raise ConnectionClosed(self.close_code, self.close_reason)
        if isinstance(message, str):
            self._write(self._ws.send(TextMessage(data=message)))
        elif isinstance(message, (bytes, bytearray, memoryview)):
            self._write(self._ws.send(BytesMessage(data=bytes(message))))
        else:
            raise TypeError(f"message must be str or bytes, got {type(message).__name__}")

    def send_json(self, obj: Any) -> None:
        """Send ``obj`` serialised with :func:`json.dumps` as a text message."""
        self.send(json.dumps(obj))

    def recv(self, timeout: float | None = None) -> str | bytes:
        """Wait for the next message: ``str`` for text, ``bytes`` for binary.

        Args:
            timeout: seconds to wait; the client's default when ``None``.

        Raises:
            TimeoutError: no message arrived in time.
            ConnectionClosed: the connection closed (see :attr:`close_code`).
        """
        deadline = self._deadline(timeout)
        while True:
            event = self._next_event(deadline)
            if isinstance(event, TextMessage):
                self._text.append(event.data)
                if event.message_finished:
                    text, self._text = "".join(self._text), []
                    return text
            elif isinstance(event, BytesMessage):
                self._data.append(bytes(event.data))
                if event.message_finished:
                    data, self._data = b"".join(self._data), []
                    return data

    def recv_json(self, timeout: float | None = None) -> Any:
        """Wait for the next message and parse it with :func:`json.loads`."""
        return json.loads(self.recv(timeout))

    def close(
        self, code: int = CloseReason.NORMAL_CLOSURE, reason: str = "", timeout: float | None = None
    ) -> None:
        """Close the connection with ``code`` and wait for the server's close frame.

        Closing a closed client does nothing. Messages still unread are dropped.
        """
        if self.close_code is None and self._ws.state is ConnectionState.OPEN:
            with contextlib.suppress(OSError):
                self._write(self._ws.send(CloseConnection(code=code, reason=reason)))
            deadline = self._deadline(timeout)
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                while True:
                    self._next_event(deadline)
        if self.close_code is None:
            self.close_code = ABNORMAL_CLOSURE
        self._sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[str | bytes]:
        """Yield messages until the connection closes."""
        while True:
            try:
                yield self.recv()
            except ConnectionClosed:
                return

    # -- internals -----------------------------------------------------------------

    def _deadline(self, timeout: float | None) -> float | None:
        timeout = self._timeout if timeout is None else timeout
        return None if timeout is None else time.monotonic() + timeout

    def _write(self, data: bytes) -> None:
        if data:
            self._sock.sendall(data)

    def _read(self, deadline: float | None) -> None:
        """Read once from the socket into wsproto; raise TimeoutError past ``deadline``."""
        if self._eof:
            raise ConnectionClosed(self.close_code or ABNORMAL_CLOSURE, self.close_reason)
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no message from the server in time")
            self._sock.settimeout(remaining)
        else:
            self._sock.settimeout(None)
        try:
            data = self._sock.recv(65536)
        except TimeoutError:
            raise TimeoutError("no message from the server in time") from None
        except OSError:
            data = b""
        if data:
            self._ws.receive_data(data)
        else:
            self._eof = True
            with contextlib.suppress(Exception):
                self._ws.receive_data(None)
        self._events.extend(self._ws.events())

    def _next_event(self, deadline: float | None) -> Event:
        """Return the next data event; handle pings and closes on the way."""
        while True:
            while not self._events:
                if self.close_code is not None and not self._events:
                    raise ConnectionClosed(self.close_code, self.close_reason)
                try:
                    self._read(deadline)
                except ConnectionClosed:
                    if self.close_code is None:
                        self.close_code = ABNORMAL_CLOSURE
                    raise ConnectionClosed(self.close_code, self.close_reason) from None
            event = self._events.popleft()
            if isinstance(event, Ping):
                with contextlib.suppress(OSError):
                    self._write(self._ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self.close_code, self.close_reason = event.code, event.reason or ""
                if self._ws.state is ConnectionState.REMOTE_CLOSING:
                    with contextlib.suppress(OSError):
                        self._write(self._ws.send(event.response()))
                self._eof = True
            else:
                return event


def connect(
    target: Target,
    path: str = "/",
    *,
    headers: Sequence[tuple[str, str]] = (),
    origin: str | None = None,
    subprotocols: Sequence[str] = (),
    ssl_context: ssl.SSLContext | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> Client:
    """Open a WebSocket connection to ``target`` and complete the handshake.

    Use the client as a context manager so that it is closed at the end::

        with connect(server, "/chat/lobby?name=ada") as client:
            client.send_json({"text": "hi"})

    Args:
        target: a running :class:`~wsgiws.Server`, a
            :class:`~wsgiws.WebSocketMiddleware` (its server), a port on 127.0.0.1,
            a ``(host, port)`` pair, or a ``ws://host:port/path`` URL.
        path: the request target, with an optional query string.
        headers: extra request headers, e.g. ``[("Cookie", "session=…")]``.
        origin: the ``Origin`` header to send, as a browser would.
        subprotocols: subprotocols to offer, in order of preference.
        ssl_context: connect over TLS (``wss://``) with this client context, e.g.
            one that trusts the test certificate's authority. Also used for a
            ``wss://`` URL (the default context when ``None``).
        timeout: seconds allowed for the handshake and the default for
            :meth:`Client.recv` and :meth:`Client.close`; ``None`` waits forever.

    Raises:
        HandshakeRejected: the server answered with an HTTP error (403, 404, …).
        OSError: the connection could not be made.
    """
    if isinstance(target, str) and target.startswith("wss://"):
        target = "ws://" + target.removeprefix("wss://")
        if ssl_context is None:
            ssl_context = ssl.create_default_context()
        default_port = 443
    else:
        default_port = 80
    host, port, request_target = _address(target, path, default_port)
    sock = socket.create_connection((host, port), timeout=timeout)
    if ssl_context is not None:
        try:
            sock = ssl_context.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
    ws = WSConnection(ConnectionType.CLIENT)
    extra = [(name, value) for name, value in headers]
    if origin is not None:
        extra.append(("Origin", origin))
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    client = Client(sock, ws, timeout=timeout)
    try:
        sock.sendall(
            ws.send(
                Request(
                    host=authority,
                    target=request_target,
                    extra_headers=[(k.encode(), v.encode()) for k, v in extra],
                    subprotocols=list(subprotocols),
                )
            )
        )
        deadline = client._deadline(None)
        while True:
            while not client._events:
                try:
                    client._read(deadline)
                except ConnectionClosed:
                    raise ConnectionError(
                        "server closed the connection during the handshake"
                    ) from None
            event = client._events.popleft()
            if isinstance(event, AcceptConnection):
                client.subprotocol = event.subprotocol
                client.response_headers = {
                    k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.extra_headers
                }
                return client
            if isinstance(event, RejectConnection):
                rejected_headers = {
                    k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers
                }
                body = b""
                finished = not event.has_body
                while not finished:
                    while not client._events:
                        try:
                            client._read(deadline)
                        except ConnectionClosed:
                            finished = True
                            break
                    while client._events and not finished:
                        data = client._events.popleft()
                        if isinstance(data, RejectData):
                            body += data.data
                            finished = data.body_finished
                raise HandshakeRejected(event.status_code, rejected_headers, body)
    except BaseException:
        sock.close()
        raise


@contextlib.contextmanager
def serve(
    registry: Registry | None = None, *, host: str = "127.0.0.1", **options: Any
) -> Iterator[Server]:
    """Run a :class:`~wsgiws.Server` on a free port of ``host`` for a ``with`` block.

    ``registry`` defaults to the default registry (the one :func:`~wsgiws.Namespace`
    fills); ``options`` are the server's. The server is closed when the block ends,
    even on an error, which runs every pending ``on_close``.
    """
    options.setdefault("close_timeout", 2.0)
    server = Server(host=host, port=0, registry=registry, **options)
    server.start()
    try:
        yield server
    finally:
        server.close()
