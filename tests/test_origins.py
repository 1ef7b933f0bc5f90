"""Cross-site WebSocket hijacking: the same-origin default and the opt-outs."""

from __future__ import annotations

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin

import wsgiws
from wsgiws.options import SAME_ORIGIN, Options, same_origin

from .helpers import TIMEOUT, serve


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        (None, "example.com", True),  # not a browser
        (None, None, True),
        ("https://example.com", "example.com", True),
        ("http://example.com:8000", "example.com:8001", True),  # ports are not compared
        ("https://EXAMPLE.com", "example.COM.", True),
        ("http://[::1]:8000", "[::1]:9000", True),
        ("http://127.0.0.1:5000", "127.0.0.1:8765", True),
        ("https://evil.test", "example.com", False),
        ("https://example.com.evil.test", "example.com", False),
        ("https://sub.example.com", "example.com", False),
        ("null", "example.com", False),  # a page from disk, a sandboxed frame
        ("file://", "example.com", False),
        ("ftp://example.com", "example.com", False),
        ("https://example.com/path", "example.com", False),
        ("https://user@example.com", "example.com", False),
        ("https://example.com:99999", "example.com", False),
        ("https://example.com", None, False),
        ("https://example.com", "", False),
        ("http://[::1", "[::1]", False),
    ],
)
def test_same_origin_rule(origin: str | None, host: str | None, allowed: bool) -> None:
    """Origin's host must equal Host's host; no Origin passes; null never does."""
    assert same_origin(origin, host) is allowed


def test_same_origin_is_the_default() -> None:
    """With no ``origins`` option, a foreign page is refused (it was allowed)."""
    options = Options()
    assert options.origins == SAME_ORIGIN
    assert options.origin_allowed("http://a.test", "a.test:1")
    assert not options.origin_allowed("http://evil.test", "a.test")
    assert Options.from_kwargs(origins="same-origin").origins == SAME_ORIGIN
    assert Options.from_kwargs(origins=None).origin_allowed("http://evil.test", "a")
    with pytest.raises(ValueError, match="same-origin"):
        Options(origins="*")
    with pytest.raises(ValueError, match="not a string"):
        Options.from_kwargs(origins="https://a.test")


def test_null_origin_only_when_listed() -> None:
    """A page opened from disk connects only where ``"null"`` is listed."""
    assert not Options().origin_allowed("null", "127.0.0.1")
    assert Options.from_kwargs(origins=["null", ""]).origin_allowed("null", "127.0.0.1")
    assert Options.from_kwargs(origins=["null", ""]).origin_allowed(None, "127.0.0.1")


def status_of(uri: str, origin: str | None) -> int:
    try:
        with connect(
            uri, origin=None if origin is None else Origin(origin), open_timeout=TIMEOUT
        ) as ws:
            ws.send("x")
            assert ws.recv(timeout=TIMEOUT) == "x"
    except InvalidStatus as exc:
        return exc.response.status_code
    return 101


def test_server_answers_by_origin(registry: wsgiws.Registry) -> None:
    """Over real sockets: same host on another port 101, foreign page and null 403."""

    @wsgiws.Namespace(r"/o", registry=registry)
    class Echo(wsgiws.BaseWSClass):
        @classmethod
        def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
            websocket.send(message)

    with serve(registry) as server:
        uri = f"ws://127.0.0.1:{server.port}/o"
        assert status_of(uri, None) == 101
        assert status_of(uri, "http://127.0.0.1:1") == 101
        assert status_of(uri, "https://evil.test") == 403
        assert status_of(uri, "null") == 403
    with serve(registry, origins=None) as server:
        assert status_of(f"ws://127.0.0.1:{server.port}/o", "https://evil.test") == 101
    with serve(registry, origins=["null"]) as server:
        uri = f"ws://127.0.0.1:{server.port}/o"
        assert status_of(uri, "null") == 101
        assert status_of(uri, None) == 403
