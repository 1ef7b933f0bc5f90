"""``WebSocketMiddleware``: the WSGI wrapper that owns a WebSocket server."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .routing import Registry
from .server import Server

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["WebSocketMiddleware"]


class WebSocketMiddleware:
    """Wrap a WSGI application and serve WebSocket endpoints beside it.

    Creating the wrapper starts a :class:`~wsgiws.Server` on ``host``/``port`` on a
    daemon thread (djwebsockets' separate-port model); every HTTP request goes to
    ``app`` untouched. The server stops on :meth:`close`, on leaving a ``with`` block,
    or when the process exits::

        from wsgiws import WebSocketMiddleware
        application = WebSocketMiddleware(application, port=8001)

    Args:
        app: the WSGI application.
        host, port, registry, **options: as for :class:`~wsgiws.Server`.
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        host: str = "127.0.0.1",
        port: int = 8001,
        registry: Registry | None = None,
        **options: Any,
    ) -> None:
        if not callable(app):
            raise TypeError(f"app must be a WSGI application (a callable), got {app!r}")
        self.app = app
        #: The WebSocket server this wrapper owns.
        self.server = Server(host=host, port=port, registry=registry, **options)
        self.server.start()

    @property
    def port(self) -> int:
        """The WebSocket server's port (the bound one, also with ``port=0``)."""
        return self.server.port

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        return self.app(environ, start_response)

    def close(self) -> None:
        """Stop the WebSocket server (see :meth:`wsgiws.Server.close`)."""
        self.server.close()

    def __enter__(self) -> WebSocketMiddleware:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
