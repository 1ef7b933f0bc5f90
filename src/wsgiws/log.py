"""Every logger of the library, and the per-connection adapter.

Loggers, all defined here:

* ``wsgiws.server`` (:data:`server_logger`): lifecycle of servers and their loop
  (listening, stopping, fork restarts, unexpected internal errors of the loop).
* ``wsgiws.connection`` (:data:`connection_logger`): open, close, protocol errors,
  policy closes, and per-frame DEBUG lines (type and size only).
* ``wsgiws.handlers`` (:data:`handlers_logger`): exceptions raised by user code
  (handlers and mixins), and unexpected errors of the worker threads.
* ``wsgiws.groups`` (:data:`groups_logger`): the group backend in use.
* ``wsgiws.groups.redis`` (:data:`redis_logger`): the Redis group backend.

The library adds no handler and configures nothing. Records about one connection go
through a :class:`ConnectionLogger` and carry a ``websocket`` attribute:
``"<id> <peer> <path>"`` — the path never includes the query string, and no
payload, cookie or header value is ever logged.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

__all__ = [
    "ConnectionLogger",
    "connection_logger",
    "groups_logger",
    "handlers_logger",
    "redis_logger",
    "server_logger",
]

server_logger = logging.getLogger("wsgiws.server")
connection_logger = logging.getLogger("wsgiws.connection")
handlers_logger = logging.getLogger("wsgiws.handlers")
groups_logger = logging.getLogger("wsgiws.groups")
redis_logger = logging.getLogger("wsgiws.groups.redis")


class ConnectionLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefix messages with the connection and add it as the ``websocket`` attribute.

    Adapters of one connection (one on ``wsgiws.connection``, one on
    ``wsgiws.handlers``) share their ``extra`` mapping, so :meth:`set_label` names
    the connection in both at once.
    """

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        label = self.extra["websocket"] if self.extra else "-"
        kwargs.setdefault("extra", {})["websocket"] = label
        return f"[{label}] {msg}", kwargs

    def set_label(self, label: str) -> None:
        """Rename the connection in this adapter and those sharing its ``extra``."""
        self.extra["websocket"] = label  # type: ignore[index]
