"""``WebSocketMiddleware``: WebSockets on the WSGI server's own port, or beside it.

Theory of operation
-------------------

The middleware owns one :class:`~wsgiws.Server`. With ``port=None`` (the default)
that server has no listening socket: its loop thread only serves connections taken
from the WSGI server. With a ``port`` it also listens there (the separate-port mode
of djwebsockets), for servers that cannot hand a socket over. Both kinds of
connection share the loop, the registry and the groups.

A request is intercepted only when it is a WebSocket upgrade (``GET`` with
``Upgrade: websocket`` and ``Connection: upgrade``) whose path matches a namespace
of the registry; every other request, including upgrades to unknown paths, goes to
the application untouched. For an intercepted request, :mod:`wsgiws.handoff` takes
the client socket out of the WSGI server, and :meth:`Server.adopt_threadsafe` lets
the loop finish the handshake from the already-parsed request (``on_connect`` runs
before the 101). The WSGI call then returns at once with a ``101`` status and no
body: the server's attempt to write that response meets the dead socket that now
stands in for the connection, which every supported server treats as a client that
went away, without logging an error.

Fallbacks, never a hang or a silent failure:

* where the socket is reachable but its descriptor cannot be redirected (Windows),
  or with ``handoff="park"``, the request thread waits until the WebSocket closes;
* where the socket is out of reach (waitress, mod_wsgi, TLS terminated by the WSGI
  server), the upgrade is answered ``501 Not Implemented`` with a plain-text body
  that names the separate-port mode.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import quote, unquote

from . import handoff as _handoff
from .exceptions import InvalidState
from .log import server_logger as logger
from .routing import Registry
from .server import Server

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["WebSocketMiddleware"]

#: How the middleware takes WebSocket upgrades from the WSGI server.
HandoffMode = Literal["auto", "park", "off"]
#: Accepted values of the ``handoff`` argument.
HANDOFF_MODES: Final[tuple[HandoffMode, ...]] = ("auto", "park", "off")

#: The status given to the WSGI server after a hand-off. It never reaches the
#: client (the server writes it to the dead socket); access logs show it, which
#: is the truth: the connection switched protocols.
HANDED_OFF_STATUS: Final = "101 Switching Protocols"

#: Request headers that WSGI servers move out of the ``HTTP_`` namespace.
_UNPREFIXED: Final = {"CONTENT_TYPE": "content-type", "CONTENT_LENGTH": "content-length"}

#: Keys of the server's environ that are not copied into a WebSocket's environ:
#: they refer to the server's side of the connection, which is dead after a hand-off.
#: ``wsgi.input`` is replaced by an empty stream (a handshake has no body), so that
#: the environ stays a complete PEP 3333 environ for code such as Django's WSGIRequest.
_SERVER_ONLY_KEYS: Final = ("gunicorn.socket", "werkzeug.socket", "wsgi.input")


def is_websocket_upgrade(environ: WSGIEnvironment) -> bool:
    """Tell whether a request asks for a WebSocket upgrade (RFC 6455 §4.2.1)."""
    if environ.get("REQUEST_METHOD") != "GET":
        return False
    if environ.get("HTTP_UPGRADE", "").strip().lower() != "websocket":
        return False
    tokens = environ.get("HTTP_CONNECTION", "").lower().split(",")
    return "upgrade" in (token.strip() for token in tokens)


def request_target(environ: WSGIEnvironment) -> str:
    """Rebuild the request target (path and query) as the client sent it."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if isinstance(raw, str) and raw.startswith("/"):
        return raw
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    # PEP 3333: the path is bytes decoded as latin-1.
    target = quote(path.encode("latin-1"), safe="/;=,:@!$&'()*+~")
    query = environ.get("QUERY_STRING", "")
    return f"{target}?{query}" if query else target


def request_headers(environ: WSGIEnvironment) -> list[tuple[str, str]]:
    """Rebuild the request headers from the environ (names in lowercase)."""
    headers = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers.append((key[5:].replace("_", "-").lower(), str(value)))
        elif key in _UNPREFIXED and value:
            headers.append((_UNPREFIXED[key], str(value)))
    return headers


def _target_path(target: str) -> str:
    path = target.partition("?")[0]
    return unquote(path, errors="replace") if "%" in path else path


class WebSocketMiddleware:
    """Wrap a WSGI application and serve WebSocket endpoints on its own port.

    Creating the wrapper starts the loop thread of a :class:`~wsgiws.Server`. A
    WebSocket upgrade whose path matches a registered namespace is taken out of the
    WSGI server and served by that loop, with no thread held per connection; every
    other request goes to ``app`` untouched::

        from wsgiws import WebSocketMiddleware
        application = WebSocketMiddleware(application)            # same port
        application = WebSocketMiddleware(application, port=8001) # and port 8001

    The server stops on :meth:`close`, on leaving a ``with`` block, or when the
    process exits. See the deployment guide for what each WSGI server supports.

    Args:
        app: the WSGI application.
        host: address of the separate port (only used with ``port``).
        port: ``None`` (default) for same-port only; a port number to also listen
            there (``0`` picks a free one, see :attr:`port`).
        registry: the routes to serve; the default registry when ``None``.
        handoff: ``"auto"`` (default) takes the socket from the server where it
            can, parks the request thread where the socket is reachable but
            cannot be taken (Windows), and answers 501 elsewhere; ``"park"``
            always holds the request thread for the WebSocket's lifetime;
            ``"off"`` leaves every request to ``app`` (separate port only).
        **options: see :class:`~wsgiws.options.Options`.
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        registry: Registry | None = None,
        handoff: HandoffMode = "auto",
        **options: Any,
    ) -> None:
        if not callable(app):
            raise TypeError(f"app must be a WSGI application (a callable), got {app!r}")
        if handoff not in HANDOFF_MODES:
            raise ValueError(f"handoff must be one of {HANDOFF_MODES}, got {handoff!r}")
        self.app = app
        self.handoff = handoff
        self._warned = False
        #: The WebSocket server this wrapper owns.
        self.server = Server(host=host, port=port, registry=registry, **options)
        self.server.start()

    @property
    def port(self) -> int | None:
        """The separate WebSocket port (the bound one with ``port=0``), or ``None``."""
        return self.server.port

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if self.handoff == "off" or not is_websocket_upgrade(environ):
            return self.app(environ, start_response)
        target = request_target(environ)
        if self.server.registry.match(_target_path(target)) is None:
            return self.app(environ, start_response)
        return self._upgrade(environ, start_response, target)

    def _upgrade(
        self, environ: WSGIEnvironment, start_response: StartResponse, target: str
    ) -> Iterable[bytes]:
        try:
            taken = _handoff.take_over(environ, park=self.handoff == "park")
        except _handoff.HandoffUnavailable as exc:
            return self._unavailable(start_response, str(exc))
        except OSError as exc:  # e.g. EMFILE from dup(): the server still owns the socket
            logger.error("cannot take the client socket: %s", exc)
            return self._unavailable(
                start_response, "the server is out of resources", HTTPStatus.SERVICE_UNAVAILABLE
            )
        if taken.sink is not None:
            # What the server writes after this call lands there (uWSGI writes the
            # response head after the iterable's close()): the loop drops it.
            self.server.discard_threadsafe(taken.sink)
        closed = None if taken.redirected else threading.Event()
        ws_environ = {k: v for k, v in environ.items() if k not in _SERVER_ONLY_KEYS}
        ws_environ["wsgi.input"] = io.BytesIO(b"")
        try:
            self.server.adopt_threadsafe(
                taken.sock,
                taken.remote_addr,
                target,
                request_headers(environ),
                ws_environ,
                initial=taken.initial,
                closed=closed,
            )
        except InvalidState:
            # The server was closed (process shutting down): nothing can serve it.
            if not taken.redirected:
                return self._unavailable(start_response, "the WebSocket server is closed")
            if taken.sink is not None:
                taken.sink.close()
            start_response(HANDED_OFF_STATUS, [])
            return []
        if closed is not None:
            # Park: the server still owns its socket; hold its thread meanwhile.
            closed.wait()
        # No Upgrade/Connection headers: PEP 3333 forbids hop-by-hop headers (wsgiref
        # asserts it), and the response goes nowhere anyway.
        start_response(HANDED_OFF_STATUS, [])
        return []

    def _unavailable(
        self,
        start_response: StartResponse,
        why: str,
        status: HTTPStatus = HTTPStatus.NOT_IMPLEMENTED,
    ) -> Iterable[bytes]:
        port = self.port
        where = (
            f"connect to port {port} instead (separate-port mode)"
            if port is not None
            else "pass port=N to WebSocketMiddleware to serve WebSockets on a separate "
            "port (separate-port mode)"
        )
        if not self._warned:  # once: a busy server would repeat it for every client
            self._warned = True
            logger.warning("cannot serve a WebSocket on the WSGI server's port: %s", why)
        body = (f"WebSocket upgrade not served on this port: {why}; {where}\n").encode()
        start_response(
            f"{status.value} {status.phrase}",
            [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
            ],
        )
        return [body]

    def close(self) -> None:
        """Stop the WebSocket server (see :meth:`wsgiws.Server.close`)."""
        self.server.close()

    def __enter__(self) -> WebSocketMiddleware:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
