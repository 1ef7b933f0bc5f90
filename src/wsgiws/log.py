"""Loggers and the per-connection adapter.

Loggers: ``wsgiws.server`` (lifecycle), ``wsgiws.connection`` (open, close, protocol
errors, policy closes), ``wsgiws.handlers`` (exceptions from user code). The library
adds no handler and configures nothing. Records about a connection carry a
``websocket`` attribute: ``"<id> <peer> <path>"`` — the path never includes the query
string, and no payload, cookie or header value is ever logged.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

__all__ = ["ConnectionLogger", "connection_logger", "handlers_logger", "server_logger"]

server_logger = logging.getLogger("wsgiws.server")
connection_logger = logging.getLogger("wsgiws.connection")
handlers_logger = logging.getLogger("wsgiws.handlers")


class ConnectionLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefix messages with the connection and add it as the ``websocket`` attribute."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        label = self.extra["websocket"] if self.extra else "-"
        kwargs.setdefault("extra", {})["websocket"] = label
        return f"[{label}] {msg}", kwargs
