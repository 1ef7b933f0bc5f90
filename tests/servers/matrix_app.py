"""The application every server of the matrix runs: plain HTTP plus an echo namespace.

Configured through the environment, so that the same module serves every server:

* ``WSGIWS_TEST_WS_PORT``: unset for same-port only; a port number (``0`` for a free
  one) to also listen on a separate port;
* ``WSGIWS_TEST_HANDOFF``: the middleware's ``handoff`` argument (default ``auto``);
* ``WSGIWS_TEST_APP``: the application wrapped: ``plain`` (default, a bare WSGI
  function), ``flask`` or ``django`` (``tests/servers/djproject``).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

import wsgiws
from wsgiws.middleware import HandoffMode

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

registry = wsgiws.Registry()


# /direct/: a path that a reverse proxy in front does not send to the separate port.
@registry.namespace(r"/(ws|direct)/echo")
class Echo(wsgiws.BaseWSClass):
    """Echo messages; a few text commands report on the serving process."""

    @classmethod
    def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
        # Sent before the 101: proves on_connect ran first, in this process.
        websocket.send(f"welcome {os.getpid()}")

    @classmethod
    def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
        if message == "pid":
            websocket.send(f"pid {os.getpid()} {threading.current_thread().name}")
        elif message == "connections":
            websocket.send(f"connections {middleware.server.connections}")
        elif isinstance(message, str) and message.startswith("close "):
            websocket.close(int(message.split()[1]), "closed on request")
        else:
            websocket.send(message)


def http_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """Answer every plain HTTP request with its path and the process id."""
    body = f"http {environ['PATH_INFO']} pid {os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def flask_app() -> Any:
    """A Flask application answering like :func:`http_app` (for werkzeug's server)."""
    import flask

    app = flask.Flask("matrix")

    @app.route("/", defaults={"path": ""})
    @app.route("/<path:path>")
    def index(path: str) -> str:
        return f"http /{path} pid {os.getpid()}\n"

    return app.wsgi_app


def wrap(app: Any) -> wsgiws.WebSocketMiddleware:
    """Wrap ``app`` as configured by the environment."""
    port = os.environ.get("WSGIWS_TEST_WS_PORT")
    return wsgiws.WebSocketMiddleware(
        app,
        port=None if port is None else int(port),
        registry=registry,
        handoff=cast(HandoffMode, os.environ.get("WSGIWS_TEST_HANDOFF", "auto")),
        close_timeout=2.0,
    )


def inner_app() -> Any:
    """The application to wrap, chosen by ``WSGIWS_TEST_APP``."""
    kind = os.environ.get("WSGIWS_TEST_APP", "plain")
    if kind == "flask":
        return flask_app()
    if kind == "django":
        from django.core.wsgi import get_wsgi_application

        return get_wsgi_application()
    return http_app


middleware = wrap(inner_app())
application = middleware
