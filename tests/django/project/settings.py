"""Settings of the adapter's test project.

Environment variables set by the tests:

* ``WSGIWS_DJANGO_TEST_DB``: path of the SQLite database file.
* ``WSGIWS_DJANGO_TEST_WS_PORT``: ``WEBSOCKET_PORT`` (default ``0``: any free port);
  ``same`` leaves it unset (same-port mode).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "wsgiws-tests-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver", ".example.com"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "wsgiws.django",
    "tests.django.chatapp",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "tests.django.project.urls"
WSGI_APPLICATION = "tests.django.project.wsgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("WSGIWS_DJANGO_TEST_DB", str(BASE_DIR / "db.sqlite3")),
        "OPTIONS": {"timeout": 30},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
# Fast hashing: the tests create users, they do not test password storage.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

_ws_port = os.environ.get("WSGIWS_DJANGO_TEST_WS_PORT", "0")
if _ws_port != "same":
    WEBSOCKET_PORT = int(_ws_port)
WEBSOCKET_MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "tests.django.project.middleware.RefuseMiddleware",
]
WEBSOCKET_OPTIONS = {"close_timeout": 2.0}

# The server's lifecycle lines ("listening on ...") and the autoreloader's ("...
# changed, reloading") go to stderr, where the runserver tests read them.
LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {
        "wsgiws.server": {"handlers": ["stderr"], "level": "INFO"},
        "django.utils.autoreload": {"handlers": ["stderr"], "level": "INFO"},
    },
}
