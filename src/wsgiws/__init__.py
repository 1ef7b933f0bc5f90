"""wsgiws: real-time WebSocket endpoints for any WSGI application or script."""

from __future__ import annotations

from .exceptions import ConnectionClosed, InvalidState, Reject, Skip, WSGIWSError
from .groups import (
    Group,
    GroupBackend,
    InMemoryBackend,
    broadcast,
    get_group_backend,
    group,
    send_to,
    set_group_backend,
)
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
    "Group",
    "GroupBackend",
    "InMemoryBackend",
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
    "broadcast",
    "default_registry",
    "get_group_backend",
    "group",
    "send_to",
    "set_group_backend",
]
