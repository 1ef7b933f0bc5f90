"""Server options: defaults, the reasons behind them, and their validation."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Final, Literal
from urllib.parse import urlsplit

__all__ = ["SAME_ORIGIN", "Compression", "OnFork", "Options", "same_origin"]

#: The default of the ``origins`` option: a browser's handshake must come from a
#: page of the host it connects to (any port); clients that send no ``Origin`` pass.
SAME_ORIGIN: Final = "same-origin"
#: Values of the ``compression`` option.
Compression = Literal["deflate"]
#: Values of the ``on_fork`` option.
OnFork = Literal["restart", "stop"]

#: 1 MiB. The ``websockets`` library defaults ``max_size`` to 1 MiB as well; chat
#: messages and dashboard updates are far below it, and a bigger message is more often
#: a mistake or an attack than a need.
DEFAULT_MAX_MESSAGE_SIZE: Final = 2**20
#: Seconds a client has to send its complete upgrade request (websockets'
#: ``open_timeout`` is 10 s).
DEFAULT_HANDSHAKE_TIMEOUT: Final = 10.0
#: Keepalive: 20 s between pings and 20 s to answer, as websockets does. Proxies
#: commonly drop idle connections after 60 s (nginx ``proxy_read_timeout``).
DEFAULT_PING_INTERVAL: Final = 20.0
DEFAULT_PING_TIMEOUT: Final = 20.0
#: Seconds to wait for the peer's close frame (websockets: 10 s).
DEFAULT_CLOSE_TIMEOUT: Final = 10.0
#: Bytes queued for a client before it counts as a slow reader and is closed with
#: 1008. Sixteen max-size messages: generous for bursts, bounded for a stalled peer.
DEFAULT_WRITE_LIMIT: Final = 16 * 2**20
#: Messages received but not yet handled, per connection, before the server stops
#: reading from that client (websockets' ``max_queue`` default is 16).
DEFAULT_MAX_QUEUE: Final = 16
#: Handler threads. Handlers may block (an ORM query), so the pool is wider than the
#: core count, as ``concurrent.futures.ThreadPoolExecutor`` sizes its own pool.
DEFAULT_WORKERS: Final = min(32, (os.cpu_count() or 1) + 4)
#: Concurrent open connections; past it new TCP connections are refused at accept.
DEFAULT_MAX_CONNECTIONS: Final = 10_000


def _positive_or_none(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds or None, got {value!r}")


def _positive_int(name: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        hint = " or None" if allow_none else ""
        raise ValueError(f"{name} must be a positive integer{hint}, got {value!r}")


@dataclasses.dataclass(frozen=True, slots=True)
class Options:
    """Validated, immutable server options.

    Every ``*_timeout`` and ``*_interval`` is in seconds; ``None`` disables it.
    Every ``max_*`` and ``write_limit`` is a count of bytes or items.
    """

    # WebSocket
    #: Subprotocols the server speaks, in order of preference; the first one the
    #: client offers is selected. Empty: none is selected.
    subprotocols: tuple[str, ...] = ()
    #: ``"deflate"`` negotiates permessage-deflate (RFC 7692) when the client offers
    #: it — every browser does; ``None`` never compresses. Inflation is bounded by
    #: ``max_message_size``. Default on, as in the websockets library.
    compression: Compression | None = "deflate"
    #: Which pages may open a WebSocket (cross-site WebSocket hijacking, see the
    #: security docs). ``"same-origin"`` (the default): a request without ``Origin``
    #: (not a browser) passes, a browser's passes when the ``Origin`` host equals the
    #: ``Host`` header's host, whatever the ports. A list: the allowed values of the
    #: ``Origin`` header; a request without the header passes only if ``""`` is
    #: listed, a page opened from disk only if ``"null"`` is. A callable
    #: ``(origin: str | None) -> bool`` decides instead (for patterns such as
    #: subdomains); it runs on a worker thread before ``on_connect`` (an exception in it
    #: answers 500). ``None`` allows every origin. A refused origin
    #: gets HTTP 403 (see :meth:`origin_allowed`).
    origins: tuple[str, ...] | Callable[[str | None], bool] | str | None = SAME_ORIGIN

    # Timeouts
    handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT
    ping_interval: float | None = DEFAULT_PING_INTERVAL
    ping_timeout: float | None = DEFAULT_PING_TIMEOUT
    close_timeout: float | None = DEFAULT_CLOSE_TIMEOUT

    # Limits
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE
    max_queue: int = DEFAULT_MAX_QUEUE
    write_limit: int = DEFAULT_WRITE_LIMIT
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    # Threads and sockets
    workers: int = DEFAULT_WORKERS
    backlog: int = 128
    #: ``SO_REUSEPORT`` on the listening socket. ``None``: on where several processes
    #: of a prefork server import the application and bind the port each (gunicorn
    #: workers, uWSGI ``--lazy-apps``, mod_wsgi), off elsewhere.
    reuse_port: bool | None = None
    #: After ``os.fork()``, a running server restarts its loop in the child
    #: (``"restart"``) or stays stopped there (``"stop"``).
    on_fork: OnFork = "restart"
    #: A context manager factory entered around every handler event (``on_connect``,
    #: each ``on_message``, ``on_close``) on its worker thread, e.g. to release
    #: per-thread resources the way a web framework does around each request (the
    #: Django adapter closes stale database connections here). ``None``: nothing.
    handler_context: Callable[[], AbstractContextManager[object]] | None = None

    def __post_init__(self) -> None:
        for name in (
            "handshake_timeout",
            "ping_interval",
            "ping_timeout",
            "close_timeout",
        ):
            _positive_or_none(name, getattr(self, name))
        _positive_int("max_message_size", self.max_message_size, allow_none=True)
        for name in (
            "max_queue",
            "write_limit",
            "max_connections",
            "workers",
            "backlog",
        ):
            _positive_int(name, getattr(self, name))
        if self.reuse_port is not None and not isinstance(self.reuse_port, bool):
            raise ValueError(f"reuse_port must be a bool or None, got {self.reuse_port!r}")
        if self.compression not in ("deflate", None):
            raise ValueError(f"compression must be 'deflate' or None, got {self.compression!r}")
        if self.on_fork not in ("restart", "stop"):
            raise ValueError(f"on_fork must be 'restart' or 'stop', got {self.on_fork!r}")
        if not all(isinstance(p, str) and p for p in self.subprotocols):
            raise ValueError(f"subprotocols must be non-empty strings, got {self.subprotocols!r}")
        if isinstance(self.origins, str):
            if self.origins != SAME_ORIGIN:
                raise ValueError(
                    f"origins must be {SAME_ORIGIN!r}, a sequence of origins, a callable "
                    f"or None, not the string {self.origins!r}"
                )
        elif (
            self.origins is not None
            and not callable(self.origins)
            and not all(isinstance(o, str) for o in self.origins)
        ):
            raise ValueError(f"origins must be strings or a callable, got {self.origins!r}")
        if self.handler_context is not None and not callable(self.handler_context):
            raise ValueError(
                f"handler_context must be callable or None, got {self.handler_context!r}"
            )

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> Options:
        """Build options from keyword arguments, naming any unknown one."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise TypeError(
                f"unknown option(s): {', '.join(unknown)}; known options: "
                f"{', '.join(sorted(names))}"
            )
        for name in ("subprotocols", "origins"):
            value = kwargs.get(name)
            if name == "origins" and (callable(value) or value == SAME_ORIGIN):
                continue
            if isinstance(value, str):
                raise ValueError(f"{name} must be a sequence of strings, not a string")
            if isinstance(value, Sequence) or (value is not None and not isinstance(value, tuple)):
                kwargs[name] = tuple(value)
        return cls(**kwargs)

    def origin_allowed(self, origin: str | None, host: str | None = None) -> bool:
        """Tell whether a handshake with this ``Origin`` header may proceed.

        ``host`` is the request's ``Host`` header, which the default
        ``"same-origin"`` compares with the origin's host (see :func:`same_origin`).
        With ``origins=None`` every request is allowed. With a list the header must
        equal one of the listed origins (compared case-insensitively, as origins are
        scheme://host[:port]); a request without the header is allowed only when the
        list contains ``""`` — browsers always send it, other clients usually don't.
        """
        if self.origins is None:
            return True
        if isinstance(self.origins, str):
            return same_origin(origin, host)
        if callable(self.origins):
            return bool(self.origins(origin))
        if origin is None:
            return "" in self.origins
        return origin.lower() in (o.lower() for o in self.origins)


def _host_of(authority: str) -> str:
    """The host of ``host[:port]`` (an IPv6 literal keeps its brackets), lowercased."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        end = authority.find("]")
        return authority[: end + 1] if end > 0 else ""
    return authority.partition(":")[0].removesuffix(".")


def same_origin(origin: str | None, host: str | None) -> bool:
    """Tell whether a handshake comes from a page of the host it connects to.

    A request without ``Origin`` passes: browsers always send one (RFC 6454 §7.2),
    so only non-browser clients omit it, and those carry no victim's cookies. A
    browser's ``Origin`` (``scheme://host[:port]``, ``http`` or ``https``) passes
    when its host equals the host of the ``Host`` header; ports are not compared,
    so a page served on one port may connect to WebSockets on another. Anything
    else is refused, ``Origin: null`` (a page opened from disk, a sandboxed frame)
    included.
    """
    if origin is None:
        return True
    if not host:
        return False
    try:
        parts = urlsplit(origin.strip())
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return False
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return False
    if parts.path or parts.query or parts.fragment or "@" in parts.netloc:
        return False
    origin_host = _host_of(parts.netloc)
    return bool(origin_host) and origin_host == _host_of(host)
