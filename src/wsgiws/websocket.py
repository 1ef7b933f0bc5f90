"""``WebSocket``: what handlers see of a connection.

A :class:`WebSocket` knows its connection only through the narrow :class:`Channel`
interface (implemented by :class:`wsgiws.session.Session`), so this module sits low
in the layers: handlers, mixins and groups may name it without knowing the
connection, the server or the loop.
"""

from __future__ import annotations

import io
import json
import re
import sys
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, unquote_to_bytes

from wsproto.frame_protocol import CloseReason

if TYPE_CHECKING:
    from .protocol import HandshakeRequest

__all__ = ["Channel", "Headers", "QueryDict", "WebSocket"]


class Channel(Protocol):
    """What a :class:`WebSocket` needs of its connection. Every method: any thread."""

    @property
    def id(self) -> str:
        """A unique, random identifier of the connection (hex)."""

    @property
    def close_code(self) -> int | None:
        """The close code that ended the connection, or ``None`` while open."""

    @property
    def close_reason(self) -> str:
        """The close reason that goes with :attr:`close_code`."""

    def is_open(self) -> bool:
        """True while messages can be sent (also during ``on_connect``)."""

    def send_message(self, message: str | bytes) -> None:
        """Encode and queue a message; :exc:`~wsgiws.ConnectionClosed` if not open."""

    def close_threadsafe(self, code: int, reason: str) -> None:
        """Start the closing handshake; no-op if already closing."""

    def join(self, name: str) -> None:
        """Join group ``name``."""

    def leave(self, name: str) -> None:
        """Leave group ``name``."""

    def groups(self) -> frozenset[str]:
        """The groups the connection belongs to."""


class Headers(Mapping[str, str]):
    """Read-only, case-insensitive request headers; ``get_all(name)`` for repeats."""

    __slots__ = ("_items", "_map")

    def __init__(self, items: tuple[tuple[str, str], ...]) -> None:
        self._items = items
        merged: dict[str, str] = {}
        for name, value in items:
            key = name.lower()
            merged[key] = f"{merged[key]}, {value}" if key in merged else value
        self._map = merged

    def __getitem__(self, name: str) -> str:
        return self._map[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._map

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)

    def get_all(self, name: str) -> list[str]:
        """Return every value of header ``name``, in order."""
        key = name.lower()
        return [v for k, v in self._items if k.lower() == key]

    def raw_items(self) -> tuple[tuple[str, str], ...]:
        """Return the headers as received: ``(lowercase name, value)`` pairs."""
        return self._items

    def __repr__(self) -> str:
        return f"Headers({sorted(self._map)})"  # names only: values may be secrets


class QueryDict(Mapping[str, str]):
    """The parsed query string: ``query["room"]`` is the last value, ``getlist`` all."""

    __slots__ = ("_lists",)

    def __init__(self, query_string: str) -> None:
        lists: dict[str, list[str]] = {}
        if query_string:  # most handshakes have none
            for key, value in parse_qsl(query_string, keep_blank_values=True):
                lists.setdefault(key, []).append(value)
        self._lists = lists

    def __getitem__(self, key: str) -> str:
        return self._lists[key][-1]

    def __iter__(self) -> Iterator[str]:
        return iter(self._lists)

    def __len__(self) -> int:
        return len(self._lists)

    def getlist(self, key: str) -> list[str]:
        """Return every value of ``key`` (empty if absent)."""
        return list(self._lists.get(key, ()))

    def __repr__(self) -> str:
        return f"QueryDict({sorted(self._lists)})"


def parse_cookies(header: str) -> dict[str, str]:
    """Parse a ``Cookie`` header leniently, as browsers send it (RFC 6265 §5.4).

    Malformed pairs are skipped instead of failing the whole header (the stdlib's
    SimpleCookie drops everything after the first bad pair).
    """
    cookies: dict[str, str] = {}
    for chunk in header.split(";"):
        name, sep, value = chunk.partition("=")
        name = name.strip()
        if not sep or not name:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        cookies.setdefault(name, value)
    return cookies


class WebSocket:
    """One WebSocket connection, as handlers see it.

    Handlers receive it as their ``websocket`` argument. Any attribute not listed here
    may be set freely to keep per-connection state (mixins set ``websocket.user``).
    :meth:`send`, :meth:`send_json` and :meth:`close` may be called from any thread.
    """

    def __init__(
        self,
        connection: Channel,
        request: HandshakeRequest,
        match: re.Match[str],
        *,
        remote_addr: tuple[str, int],
        server_addr: tuple[str, int],
        environ: dict[str, Any] | None = None,
        secure: bool = False,
    ) -> None:
        self._connection = connection
        self._request = request
        self._environ = environ
        self._secure = secure
        self._server_addr = server_addr
        #: The ``re.Match`` of the namespace pattern against :attr:`path`.
        self.match = match
        #: ``(host, port)`` of the client (the proxy's, behind a reverse proxy).
        self.remote_addr = remote_addr
        #: Request headers, case-insensitive.
        self.headers = Headers(request.headers)
        #: The parsed query string.
        self.query = QueryDict(request.query_string)
        #: The selected subprotocol, or ``None``. ``on_connect`` may change it to
        #: another one the client offered.
        self.subprotocol: str | None = None
        self._cookies: dict[str, str] | None = None

    # -- identity and request ------------------------------------------------------

    @property
    def id(self) -> str:
        """A unique, random identifier of this connection (hex)."""
        return self._connection.id

    @property
    def path(self) -> str:
        """The percent-decoded request path, without the query string."""
        return self._request.path

    @property
    def query_string(self) -> str:
        """The raw query string, without ``?``."""
        return self._request.query_string

    @property
    def cookies(self) -> dict[str, str]:
        """Cookies of the handshake request (an empty dict without a Cookie header)."""
        if self._cookies is None:
            self._cookies = parse_cookies("; ".join(self.headers.get_all("cookie")))
        return self._cookies

    @property
    def subprotocols(self) -> tuple[str, ...]:
        """Subprotocols the client offered, in its order of preference."""
        return self._request.subprotocols

    @property
    def environ(self) -> dict[str, Any]:
        """A PEP 3333 environ of the handshake request, for code that expects WSGI.

        In same-port mode it is the WSGI server's own environ; otherwise it is built
        from the request (``wsgi.input`` is empty: a handshake has no body).
        """
        if self._environ is None:
            self._environ = self._build_environ()
        return self._environ

    def _build_environ(self) -> dict[str, Any]:
        request = self._request
        path, _, _ = request.target.partition("?")
        host, port = self._server_addr[:2]
        environ: dict[str, Any] = {
            "REQUEST_METHOD": "GET",
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
            "QUERY_STRING": request.query_string,
            "SERVER_NAME": str(host),
            "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": self.remote_addr[0],
            "REMOTE_PORT": str(self.remote_addr[1]),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "https" if self._secure else "http",
            "wsgi.input": io.BytesIO(b""),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in self.headers.items():
            key = name.upper().replace("-", "_")
            if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                environ[key] = value
            else:
                environ["HTTP_" + key] = value
        return environ

    # -- state ---------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the connection can no longer send (closing or closed)."""
        return not self._connection.is_open()

    @property
    def close_code(self) -> int | None:
        """The close code that ended the connection: the peer's, ours, or 1006 when
        the transport was lost; ``None`` while open."""
        return self._connection.close_code

    @property
    def close_reason(self) -> str:
        """The close reason that goes with :attr:`close_code` (may be empty)."""
        return self._connection.close_reason

    # -- actions -------------------------------------------------------------------

    def send(self, message: str | bytes) -> None:
        """Send a text (``str``) or binary (``bytes``) message. Callable from any thread.

        The message is queued without blocking; it is written as fast as the client
        reads. Sent during ``on_connect``, it goes out right after the 101 response.

        Raises:
            ConnectionClosed: the connection is closing or closed.
            TypeError: ``message`` is neither ``str`` nor bytes-like.
        """
        self._connection.send_message(message)

    def send_json(self, obj: Any, **dumps_kwargs: Any) -> None:
        """Send ``obj`` serialised with :func:`json.dumps` as a text message."""
        dumps_kwargs.setdefault("separators", (",", ":"))
        self._connection.send_message(json.dumps(obj, **dumps_kwargs))

    def close(self, code: int = CloseReason.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake with ``code`` and ``reason``. Callable from any
        thread; closing a closed connection does nothing. ``on_close`` follows."""
        self._connection.close_threadsafe(code, reason)

    # -- groups --------------------------------------------------------------------

    def join(self, name: str) -> None:
        """Join group ``name`` (see :func:`wsgiws.group`); joining twice does nothing.

        Callable from any thread, also in ``on_connect``. The connection leaves all
        its groups when it ends, after ``on_close`` has returned.

        Raises:
            ConnectionClosed: the connection's lifecycle is over.
        """
        self._connection.join(name)

    def leave(self, name: str) -> None:
        """Leave group ``name``; leaving a group not joined does nothing."""
        self._connection.leave(name)

    @property
    def groups(self) -> frozenset[str]:
        """The names of the groups this connection belongs to."""
        return self._connection.groups()

    def __repr__(self) -> str:
        return f"<WebSocket {self.id} {self.path}>"
