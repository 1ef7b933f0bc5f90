"""WSGI entry point: Django's application, with the WebSocket handlers served too."""

from __future__ import annotations

import os

from wsgiws.django import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

application = get_wsgi_application()
