"""Minimal Django settings for the server matrix (``runserver`` with its autoreloader)."""

from __future__ import annotations

SECRET_KEY = "wsgiws-tests-only"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "tests.servers.djproject.urls"
WSGI_APPLICATION = "tests.servers.djproject.wsgi.application"
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
