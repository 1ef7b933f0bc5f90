"""wsgiws: real-time WebSocket endpoints for any WSGI application or script."""

from __future__ import annotations

from .exceptions import ConnectionClosed, InvalidState, Reject, Skip, WSGIWSError
from .handlers import BaseMixin, BaseWSClass
from .middleware import WebSocketMiddleware
from .options import Options
from .routing import Namespace, Registry, default_registry
from .server import Server
from .websocket import WebSocket

__version__ = "0.1.0"

__all__ = [
    "BaseMixin",
    "BaseWSClass",
    "ConnectionClosed",
    "InvalidState",
    "Namespace",
    "Options",
    "Registry",
    "Reject",
    "Server",
    "Skip",
    "WSGIWSError",
    "WebSocket",
    "WebSocketMiddleware",
    "__version__",
    "default_registry",
]
