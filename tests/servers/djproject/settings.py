"""Minimal Django settings for the server matrix (``runserver`` with its autoreloader)."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

SECRET_KEY = "wsgiws-tests-only"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "tests.servers.djproject.urls"
WSGI_APPLICATION = "tests.servers.djproject.wsgi.application"
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

# A module in the test's temporary directory, imported so that the autoreloader
# watches it: rewriting it restarts the server process (tests/servers).
_watched_dir = os.environ.get("WSGIWS_TEST_DIR")
if _watched_dir:
    _marker = Path(_watched_dir) / "reload_marker.py"
    if not _marker.exists():
        _marker.write_text("VERSION = 0\n")
    sys.path.insert(0, _watched_dir)
    importlib.import_module("reload_marker")
