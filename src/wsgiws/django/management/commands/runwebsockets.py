"""``python manage.py runwebsockets``: the WebSocket server alone, on its own port.

For deployments whose HTTP side runs elsewhere (waitress, mod_wsgi, uWSGI, a
server that cannot hand a socket over): run this next to it, on ``WEBSOCKET_PORT``.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import autoreload

from wsgiws.django import conf
from wsgiws.server import Server


class Command(BaseCommand):  # type: ignore[misc]  # Django ships no type hints
    help = (
        "Serve the WebSocket handlers of the installed apps on WEBSOCKET_HOST:"
        "WEBSOCKET_PORT (or --host/--port), until Ctrl-C."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", help="address to listen on (default: WEBSOCKET_HOST)")
        parser.add_argument(
            "--port", type=int, help="port to listen on (default: WEBSOCKET_PORT; 0: any)"
        )
        parser.add_argument(
            "--reload",
            action="store_true",
            help="restart when Python code changes, as runserver does",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        kwargs = conf.server_options()
        if options["host"] is not None:
            kwargs["host"] = options["host"]
        if options["port"] is not None:
            kwargs["port"] = options["port"]
        if kwargs["port"] is None:
            raise CommandError(
                "WEBSOCKET_PORT: set it (or pass --port) to run the WebSocket server "
                "on its own port"
            )
        if options["reload"]:
            autoreload.run_with_reloader(self.serve, kwargs)
        else:
            self.serve(kwargs)

    def serve(self, kwargs: dict[str, Any]) -> None:
        """Start the server and block until Ctrl-C (or the reloader ends the process)."""
        server = Server(**kwargs)
        server.start()
        host = server.host or "0.0.0.0"
        self.stdout.write(
            f"WebSocket server (pid {os.getpid()}) at ws://{host}:{server.port}/\n"
            "Quit with CONTROL-C."
        )
        self.stdout.flush()
        # Under --reload this runs on a side thread; the reloader's exit (sys.exit
        # in the main thread) closes the server through its atexit hook.
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: the server closed
            server.serve_forever()
