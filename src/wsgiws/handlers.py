"""Handler classes, mixins, and the chain that runs them for each event.

For ``class Handler(M1, M2, BaseWSClass)`` each event runs ``M2``, then ``M1``, then
``Handler`` (mixins right to left, as djwebsockets did). Each class runs only the
methods it defines itself, so nothing runs twice, and every method gets ``cls`` bound
to the handler class. The chain is computed once, when the class is registered.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .exceptions import Skip

if TYPE_CHECKING:
    from .websocket import WebSocket

__all__ = ["BaseMixin", "BaseWSClass", "Chain"]

EVENTS = ("on_connect", "on_message", "on_close")


class BaseWSClass:
    """Base class of WebSocket handlers; decorate subclasses with ``Namespace``.

    Override any of the three classmethods. They run on a worker thread, never on the
    server's loop thread, one event of a connection at a time: ``on_connect`` first,
    then ``on_message`` for each message in arrival order, and ``on_close`` last,
    exactly once. Blocking in a handler (a database query, a sleep) delays only its
    own connection.

    ::

        @Namespace(r"/echo")
        class Echo(BaseWSClass):
            @classmethod
            def on_message(cls, websocket, message):
                websocket.send(message)
    """

    @classmethod
    def on_connect(cls, websocket: WebSocket, path: str) -> None:
        """Called before the handshake completes; raise :exc:`~wsgiws.Reject` to refuse it.

        Messages sent here are delivered right after the 101 response.
        """

    @classmethod
    def on_message(cls, websocket: WebSocket, message: str | bytes) -> None:
        """Called for each complete message: ``str`` for text, ``bytes`` for binary."""

    @classmethod
    def on_close(cls, websocket: WebSocket) -> None:
        """Called once when the connection has ended, whatever the cause.

        ``websocket.close_code`` and ``websocket.close_reason`` tell why.
        """


class BaseMixin:
    """Base class of mixins: code that runs before the handler for each event.

    A mixin defines any of ``on_connect``, ``on_message`` and ``on_close`` as
    classmethods. Its ``on_message`` may return a replacement message (``None``
    keeps the current one). Raising :exc:`~wsgiws.Skip` drops the event for the rest of
    the chain; raising :exc:`~wsgiws.Reject` refuses the handshake or closes the
    connection.
    """


Method = Callable[..., Any]


def _function(owner: type, name: str) -> Method | None:
    attr = owner.__dict__.get(name)
    if attr is None:
        return None
    if isinstance(attr, classmethod):
        return attr.__func__
    if isinstance(attr, staticmethod):
        raise TypeError(f"{owner.__qualname__}.{name} must be a classmethod, not a staticmethod")
    if callable(attr):
        # A plain function: called the same way as a classmethod (seed examples
        # sometimes forgot the decorator).
        return attr  # type: ignore[no-any-return]
    raise TypeError(f"{owner.__qualname__}.{name} must be a classmethod")


@dataclasses.dataclass(frozen=True, slots=True)
class Chain:
    """The functions run for each event of one handler class, in order.

    Fields:
        handler: the handler class; every function is called with it as ``cls``.
        connect, message, close: ``(function, is_mixin)`` pairs, mixins first.
    """

    handler: type[BaseWSClass]
    connect: tuple[tuple[Method, bool], ...]
    message: tuple[tuple[Method, bool], ...]
    close: tuple[tuple[Method, bool], ...]

    @classmethod
    def build(cls, handler: type[BaseWSClass]) -> Chain:
        """Compute the chain of ``handler`` (mixins right to left, then the handler)."""
        if not (isinstance(handler, type) and issubclass(handler, BaseWSClass)):
            raise TypeError(f"handler must be a subclass of BaseWSClass, got {handler!r}")
        mro = handler.__mro__
        mixins = [
            c
            for c in reversed(mro)
            if issubclass(c, BaseMixin) and c is not BaseMixin and not issubclass(c, BaseWSClass)
        ]
        chains: dict[str, tuple[tuple[Method, bool], ...]] = {}
        for name in EVENTS:
            steps: list[tuple[Method, bool]] = []
            for mixin in mixins:
                function = _function(mixin, name)
                if function is not None:
                    steps.append((function, True))
            for owner in mro:
                if issubclass(owner, BaseWSClass):
                    function = _function(owner, name)
                    if function is not None:
                        if owner is not BaseWSClass:  # the base's methods do nothing
                            steps.append((function, False))
                        break
            chains[name] = tuple(steps)
        return cls(handler, chains["on_connect"], chains["on_message"], chains["on_close"])

    def run_connect(self, websocket: WebSocket, path: str) -> None:
        """Run ``on_connect``; :exc:`Skip` ends the chain early, :exc:`Reject` propagates."""
        try:
            for function, _ in self.connect:
                function(self.handler, websocket, path)
        except Skip:
            pass

    def run_message(self, websocket: WebSocket, message: str | bytes) -> None:
        """Run ``on_message``; a mixin's non-``None`` return replaces the message."""
        try:
            for function, is_mixin in self.message:
                result = function(self.handler, websocket, message)
                if is_mixin and result is not None:
                    message = result
        except Skip:
            pass

    def run_close(self, websocket: WebSocket) -> None:
        """Run ``on_close``."""
        try:
            for function, _ in self.close:
                function(self.handler, websocket)
        except Skip:
            pass
