"""``get_wsgi_application``: Django's WSGI application with WebSockets."""

from __future__ import annotations

import django
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.wsgi import WSGIHandler

from ..middleware import WebSocketMiddleware
from . import conf

__all__ = ["get_wsgi_application"]


def get_wsgi_application() -> WebSocketMiddleware:
    """Return Django's WSGI application wrapped to serve WebSocket handlers.

    A drop-in replacement for :func:`django.core.wsgi.get_wsgi_application` in a
    project's ``wsgi.py``::

        from wsgiws.django import get_wsgi_application
        application = get_wsgi_application()

    The WebSocket loop starts here, so in the process that serves requests: under
    ``runserver`` with its autoreloader that is the child process Django restarts
    on each code change (the watching parent never builds the application), and a
    restarted child binds the same ``WEBSOCKET_PORT`` again (``SO_REUSEADDR``; the
    old child released it when it exited).

    Raises:
        ImproperlyConfigured: ``"wsgiws.django"`` is missing from ``INSTALLED_APPS``
            (its handler modules would not be found), or a ``WEBSOCKET_*`` setting
            is wrong.
    """
    django.setup(set_prefix=False)
    if not apps.is_installed("wsgiws.django"):
        raise ImproperlyConfigured(
            "INSTALLED_APPS: add 'wsgiws.django' so that the WebSocket handlers of "
            "your apps are found"
        )
    options = conf.server_options()
    return WebSocketMiddleware(WSGIHandler(), **options)
