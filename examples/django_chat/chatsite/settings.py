"""Settings of the Django chat example (a development setup: DEBUG is on).

Environment variables:

* ``CHAT_DB``: path of the SQLite database (default: ``db.sqlite3`` next to
  ``manage.py``).
* ``CHAT_WEBSOCKET_PORT``: serve WebSockets on this separate port; unset, they are
  served on the HTTP port itself (same-port mode).
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("CHAT_SECRET_KEY", "django-insecure-wsgiws-chat-example")
DEBUG = True
ALLOWED_HOSTS: list[str] = []  # with DEBUG: localhost, 127.0.0.1 and [::1]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "wsgiws.django",  # finds chatroom/sockets.py
    "chatroom",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "chatsite.urls"
WSGI_APPLICATION = "chatsite.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("CHAT_DB", str(BASE_DIR / "db.sqlite3")),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"  # stored times; pages show them in the reader's own time zone
STATIC_URL = "static/"
# The page, script and stylesheet of the chat all the examples share.
STATICFILES_DIRS = [BASE_DIR.parent / "chat" / "static"]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "room"
LOGOUT_REDIRECT_URL = "login"

# WebSockets: the handshake runs the session and authentication middleware, so
# handlers see websocket.user (the defaults, written out here for the reader).
WEBSOCKET_MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
if os.environ.get("CHAT_WEBSOCKET_PORT"):
    WEBSOCKET_PORT = int(os.environ["CHAT_WEBSOCKET_PORT"])
