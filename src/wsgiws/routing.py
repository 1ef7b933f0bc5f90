"""Namespaces: which handler class serves which path."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

from .handlers import BaseWSClass, Chain

__all__ = ["Namespace", "Registry", "default_registry"]

H = TypeVar("H", bound=type[BaseWSClass])


class Registry:
    """An ordered set of ``regex → handler class`` routes.

    A path is matched with :func:`re.fullmatch` against each pattern in registration
    order; the first match wins. A server looks routes up at each handshake, so
    handlers registered after the server started are served too. Lookups take no
    lock (the route list is replaced, never changed in place).
    """

    def __init__(self) -> None:
        self._routes: tuple[tuple[re.Pattern[str], Chain], ...] = ()
        self._lock = threading.Lock()

    def add(self, pattern: str | re.Pattern[str], handler: type[BaseWSClass]) -> None:
        """Route paths that fully match ``pattern`` to ``handler``.

        Raises:
            TypeError: ``handler`` is not a :class:`BaseWSClass` subclass.
            ValueError: ``pattern`` is not a valid regular expression.
        """
        chain = Chain.build(handler)
        if isinstance(pattern, re.Pattern):
            compiled = pattern
        elif isinstance(pattern, str):
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid namespace pattern {pattern!r}: {exc}") from exc
        else:
            raise TypeError(f"pattern must be a str or re.Pattern, got {pattern!r}")
        with self._lock:
            self._routes = (*self._routes, (compiled, chain))

    def namespace(self, pattern: str | re.Pattern[str]) -> Callable[[H], H]:
        """Class decorator: ``@registry.namespace(r"/chat/(?P<room>\\w+)")``."""

        def register(handler: H) -> H:
            self.add(pattern, handler)
            return handler

        return register

    def match(self, path: str) -> tuple[Chain, re.Match[str]] | None:
        """Return the chain and match of the first route that fully matches ``path``."""
        for pattern, chain in self._routes:
            found = pattern.fullmatch(path)
            if found is not None:
                return chain, found
        return None

    def clear(self) -> None:
        """Remove every route (mostly for tests)."""
        with self._lock:
            self._routes = ()

    def __iter__(self) -> Iterator[tuple[str, type[BaseWSClass]]]:
        return iter([(p.pattern, c.handler) for p, c in self._routes])

    def __len__(self) -> int:
        return len(self._routes)

    def __repr__(self) -> str:
        routes = ", ".join(f"{p.pattern!r}: {c.handler.__qualname__}" for p, c in self._routes)
        return f"<Registry {{{routes}}}>"


#: The registry used when none is given to :func:`Namespace` or a server.
default_registry = Registry()


def Namespace(
    pattern: str | re.Pattern[str], *, registry: Registry | None = None
) -> Callable[[H], H]:
    """Register the decorated handler class for paths that fully match ``pattern``.

    ``pattern`` is matched with :func:`re.fullmatch` against the path, without the query
    string; named groups are available as ``websocket.match.group(...)``. With no
    ``registry``, the default registry (served by every server created without one)
    is used::

        @Namespace(r"/chat/(?P<room>[\\w-]+)")
        class Chat(BaseWSClass):
            @classmethod
            def on_message(cls, websocket, message):
                websocket.send(message)
    """
    return (registry if registry is not None else default_registry).namespace(pattern)
