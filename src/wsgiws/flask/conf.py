"""The ``WEBSOCKET_*`` config keys of the Flask extension, and their validation.

Every option of :class:`~wsgiws.flask.WebSockets` can be given as a keyword argument
or as a key of ``app.config``; a keyword argument wins over the config key.

==============================  =========================  =================================
config key                      keyword argument           meaning
==============================  =========================  =================================
``WEBSOCKET_PORT``              ``port``                   unset or ``None``: WebSockets on
                                                           the WSGI server's own port
                                                           (same-port mode); an integer: a
                                                           separate port (``0``: a free one)
``WEBSOCKET_HOST``              ``host``                   address of the separate port
                                                           (default ``"127.0.0.1"``)
``WEBSOCKET_ALLOWED_ORIGINS``   ``origins``                ``"*"``: no check; a list: exact
                                                           origins; a callable decides;
                                                           unset: the ``Origin`` must match
                                                           ``SERVER_NAME`` when it is set,
                                                           else the server's default applies
``WEBSOCKET_HANDOFF``           ``handoff``                see :class:`~wsgiws.WebSocketMiddleware`
``WEBSOCKET_<OPTION>``          ``<option>``               any server option in upper case:
                                                           ``WEBSOCKET_PING_INTERVAL``,
                                                           ``WEBSOCKET_MAX_MESSAGE_SIZE``,
                                                           ``WEBSOCKET_WORKERS`` ...
==============================  =========================  =================================

A wrong value raises :exc:`~wsgiws.config.ConfigError` (a :exc:`ValueError`) whose
message starts with the key's name, when the extension is initialised: an unknown
``WEBSOCKET_*`` key is an error too, since a misspelt key would otherwise be ignored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Final

from ..config import (
    DEFAULT_HOST,
    ConfigError,
    check_host,
    check_options,
    check_origins,
    check_port,
    split_origin,
)
from ..middleware import HANDOFF_MODES
from ..options import Options

__all__ = ["PREFIX", "FlaskWebSocketSettings", "ServerNameOrigins", "load"]

#: The prefix of the extension's config keys.
PREFIX: Final = "WEBSOCKET_"

#: Keyword arguments that are not server options, with their config keys.
_OWN: Final = {
    "port": "WEBSOCKET_PORT",
    "host": "WEBSOCKET_HOST",
    "origins": "WEBSOCKET_ALLOWED_ORIGINS",
    "handoff": "WEBSOCKET_HANDOFF",
}
#: Server options, with their config keys (``origins`` has its own name above).
_OPTIONS: Final = {
    f.name: PREFIX + f.name.upper() for f in dataclasses.fields(Options) if f.name != "origins"
}
#: Every keyword argument of the extension, with its config key.
KEYS: Final = {**_OWN, **_OPTIONS}

OriginsOption = tuple[str, ...] | Callable[[str | None], bool] | str | None


@dataclasses.dataclass(frozen=True)
class FlaskWebSocketSettings:
    """The validated settings of one app.

    Attributes:
        host: address of the separate port.
        port: the separate port, or ``None`` for same-port mode.
        handoff: the ``handoff`` argument of :class:`~wsgiws.WebSocketMiddleware`.
        origins_set: whether ``origins`` was given (else the server's default applies).
        origins: the ``origins`` server option, when ``origins_set``.
        options: the other server options, as keyword arguments.
    """

    host: str
    port: int | None
    handoff: str
    origins_set: bool
    origins: OriginsOption
    options: dict[str, Any]

    def server_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`~wsgiws.WebSocketMiddleware`."""
        kwargs = dict(self.options)
        kwargs.update(host=self.host, port=self.port, handoff=self.handoff)
        if self.origins_set:
            kwargs["origins"] = self.origins
        return kwargs


class ServerNameOrigins:
    """Allow a browser's ``Origin`` when it names the host of Flask's ``SERVER_NAME``.

    The scheme must be ``http`` or ``https``. When ``SERVER_NAME`` has a port, the
    origin's port (or its scheme's default) must be the same; without one any port
    is allowed. With ``subdomains`` (the app's ``subdomain_matching``), subdomains of
    the name are allowed too. A handshake without an ``Origin`` header is allowed:
    browsers always send one, so only non-browser clients omit it, and those are not
    exposed to cross-site WebSocket hijacking.

    Args:
        server_name: ``SERVER_NAME``: ``host`` or ``host:port``.
        subdomains: also allow ``*.host``.
    """

    def __init__(self, server_name: str, *, subdomains: bool = False) -> None:
        parts = split_origin(f"http://{server_name}")
        if parts is None:
            raise ConfigError("SERVER_NAME", f"{server_name!r} is not a host[:port]")
        self.server_name = server_name
        self.host = parts[1]
        self.port = parts[2]
        self.subdomains = subdomains

    def __call__(self, origin: str | None) -> bool:
        """Tell whether a handshake with this ``Origin`` header may proceed."""
        if origin is None:
            return True
        parts = split_origin(origin)
        if parts is None:
            return False
        scheme, host, port = parts
        if host != self.host and not (self.subdomains and host.endswith("." + self.host)):
            return False
        if self.port is None:
            return True
        return (port if port is not None else (443 if scheme == "https" else 80)) == self.port

    def __repr__(self) -> str:
        return f"ServerNameOrigins({self.server_name!r}, subdomains={self.subdomains})"


def _check_option(key: str, name: str, value: Any) -> Any:
    try:
        Options.from_kwargs(**{name: value})
    except (TypeError, ValueError) as exc:
        raise ConfigError(key, str(exc)) from exc
    return value


def load(
    config: Mapping[str, Any],
    kwargs: Mapping[str, Any],
    *,
    subdomain_matching: bool = False,
) -> FlaskWebSocketSettings:
    """Read and validate the settings of an app.

    Args:
        config: the app's ``config``.
        kwargs: the extension's keyword arguments (they win over ``config``).
        subdomain_matching: the app's ``subdomain_matching`` (see
            :class:`ServerNameOrigins`).

    Raises:
        ConfigError: a value is wrong, or a ``WEBSOCKET_*`` key is unknown; the
            message starts with the key's name (``WebSockets(name=)`` for a keyword
            argument).
        TypeError: an unknown keyword argument.
    """
    unknown_kwargs = sorted(set(kwargs) - set(KEYS))
    if unknown_kwargs:
        raise TypeError(
            f"WebSockets() got unknown option(s): {', '.join(unknown_kwargs)}; known: "
            f"{', '.join(sorted(KEYS))}"
        )
    known_keys = set(KEYS.values())
    for key in config:
        if isinstance(key, str) and key.startswith(PREFIX) and key not in known_keys:
            raise ConfigError(key, f"unknown setting; known ones: {', '.join(sorted(known_keys))}")

    values: dict[str, tuple[str, Any]] = {}  # name -> (where, value)
    for name, key in KEYS.items():
        if name in kwargs:
            values[name] = (f"WebSockets({name}=)", kwargs[name])
        elif config.get(key) is not None:
            values[name] = (key, config[key])

    def value(name: str, default: Any = None) -> tuple[str, Any]:
        return values.get(name, (KEYS[name], default))

    port = check_port(*value("port"))
    host = check_host(*value("host", DEFAULT_HOST))
    where, handoff = value("handoff", "auto")
    if handoff not in HANDOFF_MODES:
        raise ConfigError(where, f"must be one of {', '.join(HANDOFF_MODES)}; got {handoff!r}")
    if handoff == "off" and port is None:
        raise ConfigError(where, "'off' serves no WebSocket without WEBSOCKET_PORT")

    origins_set = True
    origins: OriginsOption
    where, given = value("origins")
    server_name = config.get("SERVER_NAME")
    if given is None:
        if server_name:
            origins = ServerNameOrigins(str(server_name), subdomains=subdomain_matching)
        else:
            origins_set, origins = False, None
    elif callable(given):
        origins = given
    else:
        origins = check_origins(where, given, none_means="to follow SERVER_NAME")

    options: dict[str, Any] = {}
    for name in _OPTIONS:
        if name in values:
            where, option = values[name]
            options[name] = _check_option(where, name, option)
    check_options(PREFIX + "*", options)
    return FlaskWebSocketSettings(
        host=host,
        port=port,
        handoff=handoff,
        origins_set=origins_set,
        origins=origins,
        options=options,
    )
