"""The group test application as gunicorn serves it: one WebSocket server per worker.

Each worker imports this module (no ``--preload``), selects the Redis backend and
starts a :class:`wsgiws.WebSocketMiddleware` on the same WebSocket port as its
siblings, shared with ``SO_REUSEPORT`` (``reuse_port=True``, separate-port mode).
Settings come from the environment: ``WSGIWS_TEST_REDIS`` (the Redis URL) and
``WSGIWS_TEST_WS_PORT``. Prints ``READY <pid>`` to stderr once the worker serves.
"""

from __future__ import annotations

import os
import sys

import wsgiws

from . import group_app

group_app.setup_logging()
group_app.use_redis(os.environ["WSGIWS_TEST_REDIS"])
application = wsgiws.WebSocketMiddleware(
    group_app.application,
    port=int(os.environ["WSGIWS_TEST_WS_PORT"]),
    registry=group_app.registry,
    reuse_port=True,
    close_timeout=2.0,
)
print(f"READY {os.getpid()}", file=sys.stderr, flush=True)
