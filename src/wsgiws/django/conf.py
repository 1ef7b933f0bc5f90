"""The ``WEBSOCKET_*`` settings: their defaults, validation, and server options.

=============================  ===========================================================
setting                        meaning
=============================  ===========================================================
``WEBSOCKET_PORT``             unset or ``None``: WebSockets on the WSGI server's own port
                               (same-port mode); an integer: a separate port (``0`` picks
                               a free one)
``WEBSOCKET_HOST``             address of the separate port (default ``"127.0.0.1"``)
``WEBSOCKET_MIDDLEWARE``       dotted paths of Django middleware run on each handshake by
                               :class:`~wsgiws.django.DjangoMiddlewareMixin` (default:
                               sessions, then authentication)
``WEBSOCKET_ALLOWED_ORIGINS``  unset or ``None``: the ``Origin`` host must match
                               ``ALLOWED_HOSTS``; ``"*"``: no check; a list: exact origins
``WEBSOCKET_OPTIONS``          a dict of engine options (``ping_interval``,
                               ``max_message_size``, ``workers`` ...)
=============================  ===========================================================

Every wrong value raises :exc:`~django.core.exceptions.ImproperlyConfigured` with a
message that starts with the setting's name.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any, Final

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http.request import validate_host
from django.utils.module_loading import import_string

from ..config import (
    DEFAULT_HOST,
    ConfigError,
    check_host,
    check_options,
    check_origins,
    check_port,
    split_origin,
)

__all__ = [
    "DEFAULT_MIDDLEWARE",
    "AllowedHostsOrigins",
    "WebSocketSettings",
    "database_hygiene",
    "load",
    "server_options",
]

#: The middleware run on a handshake when ``WEBSOCKET_MIDDLEWARE`` is unset: enough
#: for ``websocket.session`` and ``websocket.user``. (djwebsockets also listed
#: ``SessionAuthenticationMiddleware``, which Django 2.0 removed; its check is part
#: of ``AuthenticationMiddleware`` since Django 1.10.)
DEFAULT_MIDDLEWARE: Final = (
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
)
#: The hosts Django itself accepts when ``DEBUG`` is on and ``ALLOWED_HOSTS`` is
#: empty (``HttpRequest.get_host``).
DEBUG_ALLOWED_HOSTS: Final = (".localhost", "127.0.0.1", "[::1]")
#: Options the adapter sets itself from other settings.
RESERVED_OPTIONS: Final = {
    "origins": "WEBSOCKET_ALLOWED_ORIGINS",
    "handler_context": "the adapter (it closes stale database connections there)",
}

_REMOVED_MIDDLEWARE: Final = {
    "django.contrib.auth.middleware.SessionAuthenticationMiddleware": (
        "it was removed in Django 2.0 and AuthenticationMiddleware does its job; "
        "remove it from the list"
    ),
}


@dataclasses.dataclass(frozen=True)
class WebSocketSettings:
    """The validated ``WEBSOCKET_*`` settings.

    Attributes:
        host: address of the separate port.
        port: the separate port, or ``None`` for same-port mode.
        middleware: dotted paths of the handshake middleware, outermost first.
        origins: the ``origins`` server option (``None``: no check).
        options: the other engine options, as keyword arguments.
    """

    host: str
    port: int | None
    middleware: tuple[str, ...]
    origins: tuple[str, ...] | Callable[[str | None], bool] | str | None
    options: dict[str, Any]


class AllowedHostsOrigins:
    """Allow a browser's ``Origin`` when its host matches Django's ``ALLOWED_HOSTS``.

    The scheme must be ``http`` or ``https`` and the port is ignored, as Django
    ignores it when it validates ``Host``. Patterns follow ``ALLOWED_HOSTS``:
    ``".example.com"`` matches the domain and its subdomains. A handshake without an
    ``Origin`` header is allowed: browsers always send one, so only non-browser
    clients omit it, and those are not exposed to cross-site WebSocket hijacking.

    Args:
        allowed_hosts: host patterns, as in ``ALLOWED_HOSTS``.
    """

    def __init__(self, allowed_hosts: list[str] | tuple[str, ...]) -> None:
        self.allowed_hosts = tuple(allowed_hosts)

    def __call__(self, origin: str | None) -> bool:
        """Tell whether a handshake with this ``Origin`` header may proceed."""
        if origin is None:
            return True
        parts = split_origin(origin)
        if parts is None:
            return False
        domain = parts[1]  # lowercased, no port
        if ":" in domain:
            domain = f"[{domain}]"  # IPv6, written as ALLOWED_HOSTS writes it
        return bool(validate_host(domain, self.allowed_hosts))

    def __repr__(self) -> str:
        return f"AllowedHostsOrigins({list(self.allowed_hosts)!r})"


def _fail(setting: str, message: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"{setting}: {message}")


@contextlib.contextmanager
def _as_improperly_configured() -> Iterator[None]:
    """Turn the shared checks' :exc:`~wsgiws.config.ConfigError` into Django's exception."""
    try:
        yield
    except ConfigError as exc:
        raise ImproperlyConfigured(str(exc)) from exc


def _load_port() -> int | None:
    with _as_improperly_configured():
        return check_port("WEBSOCKET_PORT", getattr(settings, "WEBSOCKET_PORT", None))


def _load_host() -> str:
    with _as_improperly_configured():
        return check_host("WEBSOCKET_HOST", getattr(settings, "WEBSOCKET_HOST", DEFAULT_HOST))


def _load_middleware() -> tuple[str, ...]:
    paths = getattr(settings, "WEBSOCKET_MIDDLEWARE", DEFAULT_MIDDLEWARE)
    if isinstance(paths, str) or not isinstance(paths, (list, tuple)):
        raise _fail(
            "WEBSOCKET_MIDDLEWARE",
            f"must be a list of dotted paths to middleware, got {paths!r}",
        )
    classes = []
    for path in paths:
        if not isinstance(path, str):
            raise _fail("WEBSOCKET_MIDDLEWARE", f"entries must be strings, got {path!r}")
        if path in _REMOVED_MIDDLEWARE:
            raise _fail("WEBSOCKET_MIDDLEWARE", f"{path!r}: {_REMOVED_MIDDLEWARE[path]}")
        try:
            classes.append(import_string(path))
        except Exception as exc:  # ImportError, or e.g. a model of an app not installed
            raise _fail("WEBSOCKET_MIDDLEWARE", f"cannot import {path!r}: {exc}") from exc
    _check_order(paths, classes)
    return tuple(paths)


def _check_order(paths: list[str] | tuple[str, ...], classes: list[Any]) -> None:
    """Refuse the authentication middleware without the session middleware before it.

    Django would only notice on the first request; a handshake refused with 500 is
    a poor way to learn it.
    """
    from django.apps import apps

    if not apps.is_installed("django.contrib.auth"):
        return  # AuthenticationMiddleware cannot be in use (its import would fail)
    from django.contrib.auth.middleware import AuthenticationMiddleware
    from django.contrib.sessions.middleware import SessionMiddleware

    for index, cls in enumerate(classes):
        if isinstance(cls, type) and issubclass(cls, AuthenticationMiddleware):
            before = classes[:index]
            if not any(isinstance(c, type) and issubclass(c, SessionMiddleware) for c in before):
                raise _fail(
                    "WEBSOCKET_MIDDLEWARE",
                    f"{paths[index]!r} needs "
                    "'django.contrib.sessions.middleware.SessionMiddleware' before it",
                )


def _load_origins() -> tuple[str, ...] | Callable[[str | None], bool] | str | None:
    origins = getattr(settings, "WEBSOCKET_ALLOWED_ORIGINS", None)
    if origins is None:
        hosts = list(settings.ALLOWED_HOSTS)
        if settings.DEBUG and not hosts:
            hosts = list(DEBUG_ALLOWED_HOSTS)
        if "*" in hosts:
            return None
        return AllowedHostsOrigins(hosts)
    with _as_improperly_configured():
        return check_origins(
            "WEBSOCKET_ALLOWED_ORIGINS", origins, none_means="to follow ALLOWED_HOSTS"
        )


def _load_options() -> dict[str, Any]:
    with _as_improperly_configured():
        return check_options(
            "WEBSOCKET_OPTIONS", getattr(settings, "WEBSOCKET_OPTIONS", {}), RESERVED_OPTIONS
        )


def load() -> WebSocketSettings:
    """Read and validate the ``WEBSOCKET_*`` settings.

    Raises:
        ImproperlyConfigured: a setting has a wrong value; the message starts with
            the setting's name.
    """
    return WebSocketSettings(
        host=_load_host(),
        port=_load_port(),
        middleware=_load_middleware(),
        origins=_load_origins(),
        options=_load_options(),
    )


@contextlib.contextmanager
def database_hygiene() -> Iterator[None]:
    """Close stale database connections before and after a handler event.

    Django does the same around every request (its ``request_started`` and
    ``request_finished`` signals call ``close_old_connections``): connections past
    ``CONN_MAX_AGE`` or broken by an error are closed, so a worker thread never
    hands a handler a connection the database has dropped.
    """
    from django.db import close_old_connections

    close_old_connections()
    try:
        yield
    finally:
        close_old_connections()


def server_options(ws_settings: WebSocketSettings | None = None) -> dict[str, Any]:
    """Keyword arguments for :class:`~wsgiws.WebSocketMiddleware` or
    :class:`~wsgiws.Server` from the settings.

    They include ``port`` (``None`` in same-port mode), ``origins`` and the
    ``handler_context`` that keeps database connections fresh, so that a server built
    by hand behaves like the one :func:`~wsgiws.django.get_wsgi_application` builds::

        application = WebSocketMiddleware(my_wsgi_app, **server_options())
    """
    ws = ws_settings if ws_settings is not None else load()
    kwargs: dict[str, Any] = dict(ws.options)
    kwargs.update(host=ws.host, port=ws.port, origins=ws.origins, handler_context=database_hygiene)
    return kwargs
