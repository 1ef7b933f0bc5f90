"""The WSGI application ``runserver`` loads (``WSGI_APPLICATION``)."""

from __future__ import annotations

import os

os.environ["WSGIWS_TEST_APP"] = "django"

from tests.servers.matrix_app import application

__all__ = ["application"]
