"""WSGI entry point of the test project, as the adapter's docs tell users to write it."""

from __future__ import annotations

import os

from wsgiws.django import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django.project.settings")

application = get_wsgi_application()
