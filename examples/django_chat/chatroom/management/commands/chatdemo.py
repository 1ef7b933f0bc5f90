"""``python manage.py chatdemo``: migrate, create demo users, run the server.

One command for the whole demo: the database is created (or updated), the users
``alice`` and ``bob`` exist with the password ``wsgiws-demo``, and ``runserver``
serves the site and its WebSockets on http://127.0.0.1:8000 (with the
autoreloader, unless ``--noreload``).
"""

from __future__ import annotations

import os
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

DEMO_USERS = ("alice", "bob")
DEMO_PASSWORD = "wsgiws-demo"


class Command(BaseCommand):  # type: ignore[misc]  # Django ships no type hints
    help = "Prepare the database and demo users, then run the chat on runserver."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")
        parser.add_argument("--noreload", action="store_true", help="no autoreloader")

    def handle(self, *args: Any, **options: Any) -> None:
        if os.environ.get("RUN_MAIN") != "true":  # not again in the reloader's child
            call_command("migrate", verbosity=0)
            users = get_user_model().objects
            for name in DEMO_USERS:
                if not users.filter(username=name).exists():
                    users.create_user(name, password=DEMO_PASSWORD)
            self.stdout.write(
                f"Demo users: {', '.join(DEMO_USERS)} (password {DEMO_PASSWORD!r}). "
                f"Open http://{options['addrport']}/"
            )
        call_command("runserver", options["addrport"], use_reloader=not options["noreload"])
