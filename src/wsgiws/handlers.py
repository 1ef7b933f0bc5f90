"""Handler classes, mixins, and the chain that runs them for each event.

For ``class Handler(M1, M2, BaseWSClass)`` each event runs ``M2``, then ``M1``, then
``Handler`` (mixins right to left, as djwebsockets did). Each class runs only the
methods it defines itself, so nothing runs twice, and every method gets ``cls`` bound
to the handler class. The chain is computed once, when the class is registered.

A mixin may also wrap whole events: its ``event_context(websocket, event)``
classmethod returns a context manager entered around every function of the event
(mixins and handler), rightmost mixin outermost. The Flask adapter's mixin pushes the
app's request context there, so that the handler's own methods run inside it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, ClassVar, Final

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

    Set ``inline = True`` on a handler class whose ``on_message`` (and the
    ``on_message`` of its mixins) never blocks — no I/O but ``websocket.send``, no
    lock held long, no sleep — to run it on the server's loop thread, which saves
    the hand-off to a worker. The risk is the whole server's: while an inline
    handler runs, no other connection is read or written, and a handler that blocks
    stalls every client. ``on_connect`` and ``on_close`` still run on workers.
    """

    #: Run ``on_message`` on the loop thread (see above). Off by default.
    inline: ClassVar[bool] = False

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

    A mixin that must run code *around* each event (set up a context before the
    first function of the chain, tear it down after the handler) defines
    ``event_context(cls, websocket, event)``, a classmethod returning a context
    manager; ``event`` is ``"on_connect"``, ``"on_message"`` or ``"on_close"``.
    Exceptions raised by the chain pass through it, and it may raise
    :exc:`~wsgiws.Reject` or :exc:`~wsgiws.Skip` itself.
    """


Method = Callable[..., Any]

#: Reusable: ``nullcontext`` keeps no state.
_NO_CONTEXT: Final = contextlib.nullcontext()


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
        contexts: the mixins' ``event_context`` functions, outermost first.
        inline: the handler declared ``inline = True``: messages run on the loop thread.
    """

    handler: type[BaseWSClass]
    connect: tuple[tuple[Method, bool], ...]
    message: tuple[tuple[Method, bool], ...]
    close: tuple[tuple[Method, bool], ...]
    contexts: tuple[Method, ...] = ()
    inline: bool = False

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
        contexts = tuple(
            function
            for function in (_function(mixin, "event_context") for mixin in mixins)
            if function is not None
        )
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
        return cls(
            handler,
            chains["on_connect"],
            chains["on_message"],
            chains["on_close"],
            contexts,
            inline=handler.inline is True,
        )

    def _around(self, websocket: WebSocket, event: str) -> AbstractContextManager[object]:
        """The mixins' event contexts around one event (a no-op when there are none)."""
        if not self.contexts:
            return _NO_CONTEXT
        return self._entered(websocket, event)

    @contextlib.contextmanager
    def _entered(self, websocket: WebSocket, event: str) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for function in self.contexts:
                context: AbstractContextManager[object] = function(self.handler, websocket, event)
                stack.enter_context(context)
            yield

    def run_connect(self, websocket: WebSocket, path: str) -> None:
        """Run ``on_connect``; :exc:`Skip` ends the chain early, :exc:`Reject` propagates."""
        try:
            with self._around(websocket, "on_connect"):
                for function, _ in self.connect:
                    function(self.handler, websocket, path)
        except Skip:
            pass

    def run_message(self, websocket: WebSocket, message: str | bytes) -> None:
        """Run ``on_message``; a mixin's non-``None`` return replaces the message."""
        try:
            if self.contexts:
                with self._entered(websocket, "on_message"):
                    self._run_steps(websocket, message)
            else:  # the common case, once per message: no context manager at all
                self._run_steps(websocket, message)
        except Skip:
            pass

    def _run_steps(self, websocket: WebSocket, message: str | bytes) -> None:
        for function, is_mixin in self.message:
            result = function(self.handler, websocket, message)
            if is_mixin and result is not None:
                message = result

    def run_close(self, websocket: WebSocket) -> None:
        """Run ``on_close``."""
        try:
            with self._around(websocket, "on_close"):
                for function, _ in self.close:
                    function(self.handler, websocket)
        except Skip:
            pass
