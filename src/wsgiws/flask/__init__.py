"""The Flask adapter: ``wsgiws.flask`` (install with ``pip install "wsgiws[flask]"``).

:class:`WebSockets` is a Flask extension that serves WebSocket handlers on the app's
own port (or on ``WEBSOCKET_PORT``) and runs every handler event inside the app
context; :class:`FlaskMixin` gives handlers the request context of their handshake:
the Flask session, ``before_request`` functions, and Flask-Login's user::

    from flask import Flask
    from wsgiws import BaseWSClass
    from wsgiws.flask import FlaskMixin, WebSockets

    app = Flask(__name__)
    ws = WebSockets(app)

    @ws.namespace(r"/echo")
    class Echo(FlaskMixin, BaseWSClass):
        @classmethod
        def on_message(cls, websocket, message):
            websocket.send(message)

See :mod:`wsgiws.flask.conf` for the ``WEBSOCKET_*`` config keys.
"""

from __future__ import annotations

try:
    import flask  # noqa: F401 - only to fail early with the install hint
except ImportError as exc:  # pragma: no cover - tested in a subprocess without Flask
    raise ImportError('wsgiws.flask needs Flask: pip install "wsgiws[flask]"') from exc

from ..config import ConfigError
from .conf import ServerNameOrigins
from .extension import WebSockets
from .mixins import FlaskMixin

__all__ = ["ConfigError", "FlaskMixin", "ServerNameOrigins", "WebSockets"]
