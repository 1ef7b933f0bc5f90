"""The ``origins`` callable and the ``handler_context`` option, over real sockets."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin

import wsgiws

from .helpers import TIMEOUT, serve, wait_for


def test_origins_callable_decides(registry: wsgiws.Registry) -> None:
    """A callable ``origins`` accepts or refuses (403) each handshake by its Origin."""
    seen: list[str | None] = []

    def allowed(origin: str | None) -> bool:
        seen.append(origin)
        return origin is None or origin.endswith(".example.com")

    @wsgiws.Namespace(r"/o", registry=registry)
    class Echo(wsgiws.BaseWSClass):
        @classmethod
        def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
            websocket.send(message)

    with serve(registry, origins=allowed) as server:
        uri = f"ws://127.0.0.1:{server.port}/o"
        with connect(uri, origin=Origin("https://a.example.com"), open_timeout=TIMEOUT) as ws:
            ws.send("hi")
            assert ws.recv(timeout=TIMEOUT) == "hi"
        with connect(uri, open_timeout=TIMEOUT) as ws:
            ws.send("no origin")
            assert ws.recv(timeout=TIMEOUT) == "no origin"
        with (
            pytest.raises(InvalidStatus) as info,
            connect(uri, origin=Origin("https://evil.test"), open_timeout=TIMEOUT),
        ):
            pass
        assert info.value.response.status_code == 403
    assert seen == ["https://a.example.com", None, "https://evil.test"]


def test_origins_rejects_bad_values() -> None:
    """Non-string origins that are not a callable either are refused by name."""
    with pytest.raises(ValueError, match="origins"):
        wsgiws.Options.from_kwargs(origins=[1])
    with pytest.raises(ValueError, match="handler_context"):
        wsgiws.Options.from_kwargs(handler_context=42)


def test_handler_context_wraps_every_event(registry: wsgiws.Registry) -> None:
    """``handler_context`` wraps each event on the thread that runs the handler."""
    log: list[tuple[str, str, str]] = []
    lock = threading.Lock()
    closed = threading.Event()

    @contextlib.contextmanager
    def context() -> Iterator[None]:
        name = threading.current_thread().name
        with lock:
            log.append(("enter", name, ""))
        try:
            yield
        finally:
            with lock:
                log.append(("exit", name, ""))

    @wsgiws.Namespace(r"/c", registry=registry)
    class Handler(wsgiws.BaseWSClass):
        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            with lock:
                log.append(("connect", threading.current_thread().name, ""))

        @classmethod
        def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
            with lock:
                log.append(("message", threading.current_thread().name, str(message)))
            websocket.send(message)

        @classmethod
        def on_close(cls, websocket: wsgiws.WebSocket) -> None:
            with lock:
                log.append(("close", threading.current_thread().name, ""))
            closed.set()

    with serve(registry, handler_context=context) as server:
        with connect(f"ws://127.0.0.1:{server.port}/c", open_timeout=TIMEOUT) as ws:
            for text in ("a", "b"):
                ws.send(text)
                assert ws.recv(timeout=TIMEOUT) == text
        assert closed.wait(TIMEOUT)
        wait_for(lambda: log[-1][0] == "exit", message="context not exited after on_close")
    kinds = [entry[0] for entry in log]
    assert kinds == [
        "enter", "connect", "exit",
        "enter", "message", "exit",
        "enter", "message", "exit",
        "enter", "close", "exit",
    ]  # fmt: skip
    for i in range(0, len(log), 3):
        assert log[i][1] == log[i + 1][1] == log[i + 2][1]  # same worker thread
        assert not log[i][1].startswith("wsgiws-loop")


def test_mixin_event_context_wraps_the_whole_chain(registry: wsgiws.Registry) -> None:
    """A mixin's ``event_context`` wraps every function of an event (other mixins and
    the handler), rightmost mixin outermost, inside ``handler_context``; it sees the
    chain's exceptions, and a ``Reject`` it raises refuses the handshake."""
    log: list[str] = []
    closed = threading.Event()

    def recorder(name: str) -> type[wsgiws.BaseMixin]:
        class Recorder(wsgiws.BaseMixin):
            @classmethod
            @contextlib.contextmanager
            def event_context(cls, websocket: wsgiws.WebSocket, event: str) -> Iterator[None]:
                if websocket.query.get("refuse") == name:
                    raise wsgiws.Reject(status=401)
                log.append(f"{name}<{event}")
                try:
                    yield
                except RuntimeError:
                    log.append(f"{name}!")
                    raise
                finally:
                    log.append(f"{name}>")

            @classmethod
            def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
                log.append(f"{name}.on_message")

        return Recorder

    @contextlib.contextmanager
    def outer() -> Iterator[None]:
        log.append("handler_context<")
        yield
        log.append("handler_context>")

    @wsgiws.Namespace(r"/e", registry=registry)
    class Handler(recorder("left"), recorder("right"), wsgiws.BaseWSClass):  # type: ignore[misc]
        @classmethod
        def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
            log.append("handler.on_message")
            if message == "boom":
                raise RuntimeError("boom")
            websocket.send(message)

        @classmethod
        def on_close(cls, websocket: wsgiws.WebSocket) -> None:
            closed.set()

    with serve(registry, handler_context=outer) as server:
        uri = f"ws://127.0.0.1:{server.port}/e"
        with pytest.raises(InvalidStatus) as info:
            connect(uri + "?refuse=left", open_timeout=TIMEOUT)
        assert info.value.response.status_code == 401
        log.clear()
        with connect(uri, open_timeout=TIMEOUT) as ws:
            ws.send("hi")
            assert ws.recv(timeout=TIMEOUT) == "hi"
            ws.send("boom")
            assert closed.wait(TIMEOUT)
        wait_for(lambda: log[-1] == "handler_context>", message=f"log: {log}")
    assert log == [
        "handler_context<", "right<on_connect", "left<on_connect", "left>", "right>",
        "handler_context>",
        "handler_context<", "right<on_message", "left<on_message",
        "right.on_message", "left.on_message", "handler.on_message",
        "left>", "right>", "handler_context>",
        "handler_context<", "right<on_message", "left<on_message",
        "right.on_message", "left.on_message", "handler.on_message",
        "left!", "left>", "right!", "right>",
        "handler_context<", "right<on_close", "left<on_close", "left>", "right>",
        "handler_context>",
    ]  # fmt: skip
