"""Checks shared by the framework adapters' ``WEBSOCKET_*`` settings.

The Django adapter reads them from ``django.conf.settings``, the Flask adapter from
``app.config``; both validate the values here, so that the same mistake gets the same
message whatever the framework. Every check raises :exc:`ConfigError` with a message
that starts with the name of the setting (``"WEBSOCKET_PORT: must be ..."``); each
adapter turns it into its framework's own exception where it has one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from .options import SAME_ORIGIN, Options

__all__ = [
    "DEFAULT_HOST",
    "ConfigError",
    "check_host",
    "check_options",
    "check_origins",
    "check_port",
    "split_origin",
]

#: The separate port listens on loopback unless told otherwise, like ``runserver``
#: and ``flask run``.
DEFAULT_HOST: Final = "127.0.0.1"

OriginsOption = tuple[str, ...] | Callable[[str | None], bool] | str | None


class ConfigError(ValueError):
    """A ``WEBSOCKET_*`` setting has a wrong value; the message starts with its name."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        #: The name of the setting.
        self.setting = setting


def check_port(setting: str, port: Any) -> int | None:
    """Return ``port`` if it is ``None`` (same-port mode) or a port number (``0``: any)."""
    if port is None:
        return None
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(
            setting,
            f"must be an integer from 0 to 65535, or None for the WSGI server's own "
            f"port; got {port!r}",
        )
    return port


def check_host(setting: str, host: Any) -> str:
    """Return ``host`` if it is a string (a host name or address)."""
    if not isinstance(host, str):
        raise ConfigError(setting, f"must be a host name or address, got {host!r}")
    return host


def split_origin(origin: str) -> tuple[str, str, int | None] | None:
    """Split an ``Origin`` header into ``(scheme, host, port)``, or ``None`` if it is
    not a web origin.

    The scheme and host are lowercased, a trailing dot of the host is dropped, an
    IPv6 host keeps no brackets, and ``port`` is ``None`` when the origin names none.
    Only ``http`` and ``https`` origins are accepted (those are the ones browsers
    send for pages), and only ``scheme://host[:port]``: a path, query, fragment or
    user part means the value is not an origin.
    """
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        return None
    if parts.path or parts.query or parts.fragment or parts.username is not None:
        return None
    host = (parts.hostname or "").removesuffix(".")
    if not host:
        return None
    return scheme, host, port


def check_origins(setting: str, origins: Any, *, none_means: str) -> OriginsOption:
    """Validate an explicit origins setting and return the ``origins`` server option.

    ``"*"`` (or a list holding it) means no check (``None``); ``"same-origin"`` is
    the server's own check of the ``Origin`` against the ``Host``; a list or tuple must hold
    origins such as ``"https://example.com"``; ``""`` in it allows handshakes without
    an ``Origin`` header. ``None`` is the caller's to interpret (``none_means``
    describes it in the error message).
    """
    if origins == "*":
        return None
    if origins == SAME_ORIGIN:
        return SAME_ORIGIN
    if isinstance(origins, str) or not isinstance(origins, (list, tuple)):
        raise ConfigError(
            setting,
            f"must be a list of origins such as 'https://example.com', '*', "
            f"{SAME_ORIGIN!r}, or None {none_means}; got {origins!r}",
        )
    if "*" in origins:
        return None
    for origin in origins:
        if not isinstance(origin, str):
            raise ConfigError(setting, f"entries must be strings, got {origin!r}")
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
            raise ConfigError(
                setting,
                f"{origin!r} is not an origin (scheme://host[:port], e.g. 'https://example.com')",
            )
    return tuple(origins)


def check_options(
    setting: str, options: Any, reserved: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Validate a dict of server options (see :class:`~wsgiws.options.Options`).

    Args:
        setting: the name used in error messages.
        options: the dict to check.
        reserved: options the adapter sets itself, mapped to where they are set.
    """
    if not isinstance(options, dict):
        raise ConfigError(setting, f"must be a dict of server options, got {options!r}")
    for name, where in (reserved or {}).items():
        if name in options:
            raise ConfigError(setting, f"{name!r} is set by {where}, not here")
    try:
        Options.from_kwargs(**options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(setting, str(exc)) from exc
    return dict(options)
