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
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http.request import validate_host
from django.utils.module_loading import import_string

from ..options import Options

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
#: The separate port listens on loopback unless told otherwise, like ``runserver``.
DEFAULT_HOST: Final = "127.0.0.1"
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
    origins: tuple[str, ...] | Callable[[str | None], bool] | None
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
        try:
            parts = urlsplit(origin.strip())
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            return False
        if parts.scheme.lower() not in ("http", "https"):
            return False
        if parts.path or parts.query or parts.fragment or parts.username is not None:
            return False  # an origin is scheme://host[:port], nothing more
        domain = (parts.hostname or "").removesuffix(".")  # lowercased, no port
        if ":" in domain:
            domain = f"[{domain}]"  # IPv6, written as ALLOWED_HOSTS writes it
        return bool(domain) and validate_host(domain, self.allowed_hosts)

    def __repr__(self) -> str:
        return f"AllowedHostsOrigins({list(self.allowed_hosts)!r})"


def _fail(setting: str, message: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"{setting}: {message}")


def _load_port() -> int | None:
    port = getattr(settings, "WEBSOCKET_PORT", None)
    if port is None:
        return None
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise _fail(
            "WEBSOCKET_PORT",
            f"must be an integer from 0 to 65535, or None for the WSGI server's own "
            f"port; got {port!r}",
        )
    return port


def _load_host() -> str:
    host = getattr(settings, "WEBSOCKET_HOST", DEFAULT_HOST)
    if not isinstance(host, str):
        raise _fail("WEBSOCKET_HOST", f"must be a host name or address, got {host!r}")
    return host


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


def _load_origins() -> tuple[str, ...] | Callable[[str | None], bool] | None:
    origins = getattr(settings, "WEBSOCKET_ALLOWED_ORIGINS", None)
    if origins is None:
        hosts = list(settings.ALLOWED_HOSTS)
        if settings.DEBUG and not hosts:
            hosts = list(DEBUG_ALLOWED_HOSTS)
        if "*" in hosts:
            return None
        return AllowedHostsOrigins(hosts)
    if origins == "*":
        return None
    if isinstance(origins, str) or not isinstance(origins, (list, tuple)):
        raise _fail(
            "WEBSOCKET_ALLOWED_ORIGINS",
            f"must be a list of origins such as 'https://example.com', '*', or None "
            f"to follow ALLOWED_HOSTS; got {origins!r}",
        )
    if "*" in origins:
        return None
    for origin in origins:
        if not isinstance(origin, str):
            raise _fail("WEBSOCKET_ALLOWED_ORIGINS", f"entries must be strings, got {origin!r}")
        if origin == "":
            continue  # allows handshakes without an Origin header
        try:
            parts = urlsplit(origin)
            valid = bool(parts.scheme and parts.hostname) and not (
                parts.path or parts.query or parts.fragment or parts.username
            )
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            valid = False
        if not valid:
            raise _fail(
                "WEBSOCKET_ALLOWED_ORIGINS",
                f"{origin!r} is not an origin (scheme://host[:port], e.g. 'https://example.com')",
            )
    return tuple(origins)


def _load_options() -> dict[str, Any]:
    options = getattr(settings, "WEBSOCKET_OPTIONS", {})
    if not isinstance(options, dict):
        raise _fail("WEBSOCKET_OPTIONS", f"must be a dict of server options, got {options!r}")
    for name, where in RESERVED_OPTIONS.items():
        if name in options:
            raise _fail("WEBSOCKET_OPTIONS", f"{name!r} is set by {where}, not here")
    try:
        Options.from_kwargs(**options)
    except (TypeError, ValueError) as exc:
        raise _fail("WEBSOCKET_OPTIONS", str(exc)) from exc
    return dict(options)


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
