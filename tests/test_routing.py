"""Namespaces and the handler chain."""

from __future__ import annotations

import re

import pytest

import wsgiws
from wsgiws.handlers import Chain


def test_first_registered_match_wins_with_fullmatch() -> None:
    """Routes are tried in registration order with re.fullmatch."""
    registry = wsgiws.Registry()

    @wsgiws.Namespace(r"/chat/.*", registry=registry)
    class Any(wsgiws.BaseWSClass):
        pass

    @wsgiws.Namespace(r"/chat/(?P<room>\w+)", registry=registry)
    class Room(wsgiws.BaseWSClass):
        pass

    found = registry.match("/chat/lobby")
    assert found is not None and found[0].handler is Any
    assert registry.match("/chat") is None
    assert registry.match("/xchat/lobby") is None
    assert list(registry) == [(r"/chat/.*", Any), (r"/chat/(?P<room>\w+)", Room)]
    assert "Room" in repr(registry)


def test_namespace_accepts_compiled_pattern_and_returns_class() -> None:
    """The decorator returns the class itself and takes compiled patterns."""
    registry = wsgiws.Registry()

    class H(wsgiws.BaseWSClass):
        pass

    assert wsgiws.Namespace(re.compile(r"/x"), registry=registry)(H) is H
    assert len(registry) == 1


def test_bad_pattern_and_bad_class_are_refused() -> None:
    """An invalid regex raises ValueError naming it; a non-handler class TypeError."""
    registry = wsgiws.Registry()
    with pytest.raises(ValueError, match=r"invalid namespace pattern '\('"):
        registry.add("(", wsgiws.BaseWSClass)
    with pytest.raises(TypeError, match="BaseWSClass"):
        registry.add("/", object)  # type: ignore[arg-type]


def test_staticmethod_handler_is_refused() -> None:
    """Handler methods must be classmethods; a staticmethod is a readable error."""

    class H(wsgiws.BaseWSClass):
        @staticmethod
        def on_message(websocket: object, message: object) -> None:
            pass

    with pytest.raises(TypeError, match="classmethod"):
        Chain.build(H)


def test_inherited_handler_methods_are_used_once() -> None:
    """A handler inheriting from another handler runs the nearest definition only."""

    class Base(wsgiws.BaseWSClass):
        @classmethod
        def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
            pass

    class Child(Base):
        pass

    chain = Chain.build(Child)
    assert [f for f, _ in chain.message] == [Base.__dict__["on_message"].__func__]
    assert chain.connect == () and chain.close == ()


def test_pattern_of_another_type_is_refused_and_clear_empties() -> None:
    registry = wsgiws.Registry()

    class Handler(wsgiws.BaseWSClass):
        pass

    with pytest.raises(TypeError, match=r"pattern must be a str or re\.Pattern"):
        registry.add(42, Handler)  # type: ignore[arg-type]
    registry.add(r"/a", Handler)
    assert len(registry) == 1
    registry.clear()
    assert len(registry) == 0 and registry.match("/a") is None
