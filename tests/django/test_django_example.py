"""The Django chat example, run with its one command, used through a real login."""

from __future__ import annotations

import http.client
import json
import re
import urllib.parse
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin

from ..helpers import TIMEOUT, free_port
from .conftest import ROOT, Process

pytestmark = [pytest.mark.django, pytest.mark.slow]

EXAMPLE = ROOT / "examples" / "django_chat"
PASSWORD = "wsgiws-demo"


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[int]:
    """Run ``manage.py chatdemo`` (migrate, demo users, runserver); yield its port."""
    port = free_port()
    process = Process(
        ["chatdemo", f"127.0.0.1:{port}", "--noreload"],
        {"CHAT_DB": str(tmp_path / "chat.sqlite3")},
        script=EXAMPLE / "manage.py",
        cwd=EXAMPLE,
    )
    try:
        process.wait_http(port)
        yield port
    finally:
        process.stop()


def request(
    port: int, method: str, path: str, cookies: dict[str, str], body: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    """Send one HTTP request; keep the cookies it sets in ``cookies``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}
        data = None
        if body is not None:
            data = urllib.parse.urlencode(body)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        for value in response.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(value).items():
                cookies[name] = morsel.value
        return response.status, dict(response.headers), response.read().decode()
    finally:
        conn.close()


def log_in(port: int, username: str) -> str:
    """Log in through the login form (CSRF token and all); return a Cookie header."""
    cookies: dict[str, str] = {}
    status, _, page = request(port, "GET", "/accounts/login/", cookies)
    assert status == 200
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert token is not None
    status, headers, _ = request(
        port,
        "POST",
        "/accounts/login/",
        cookies,
        {"csrfmiddlewaretoken": token.group(1), "username": username, "password": PASSWORD},
    )
    assert status == 302 and headers["Location"] == "/", (status, headers)
    assert "sessionid" in cookies
    status, _, page = request(port, "GET", "/", cookies)
    assert status == 200 and f'data-user="{username}"' in page
    return "; ".join(f"{k}={v}" for k, v in cookies.items())


def join(port: int, cookie: str | None, room: str = "lobby") -> Any:
    """Open the room's WebSocket as a browser on the page's origin would."""
    return connect(
        f"ws://127.0.0.1:{port}/ws/chat/{room}",
        origin=Origin(f"http://127.0.0.1:{port}"),
        additional_headers={"Cookie": cookie} if cookie else None,
        open_timeout=TIMEOUT,
    )


def test_chat_shows_senders_username(chat: int) -> None:
    """Two users log in; each message reaches the room with its sender's username."""
    alice, bob = log_in(chat, "alice"), log_in(chat, "bob")
    with join(chat, alice) as ws_alice:
        welcome = json.loads(ws_alice.recv(timeout=TIMEOUT))
        assert welcome["type"] == "welcome" and welcome["name"] == "alice"
        assert welcome["online"] == ["alice"]
        assert json.loads(ws_alice.recv(timeout=TIMEOUT))["type"] == "rooms"
        with join(chat, bob) as ws_bob:
            assert json.loads(ws_bob.recv(timeout=TIMEOUT))["name"] == "bob"
            joined = {"type": "join", "name": "bob", "online": ["alice", "bob"]}
            assert json.loads(ws_alice.recv(timeout=TIMEOUT)) == joined
            for ws in (ws_alice, ws_bob):
                assert json.loads(ws.recv(timeout=TIMEOUT))["rooms"]["lobby"] == 2
            ws_bob.send(json.dumps({"text": "hello from bob"}))
            for ws in (ws_alice, ws_bob):
                message = json.loads(ws.recv(timeout=TIMEOUT))
                assert message["type"] == "message"
                assert (message["name"], message["text"]) == ("bob", "hello from bob")
            ws_alice.send(json.dumps({"text": "hi bob", "name": "mallory"}))  # name ignored
            for ws in (ws_alice, ws_bob):
                message = json.loads(ws.recv(timeout=TIMEOUT))
                assert (message["name"], message["text"]) == ("alice", "hi bob")
    # A newcomer gets the history, stored with the ORM by the handler.
    with join(chat, bob) as ws_bob:
        history = json.loads(ws_bob.recv(timeout=TIMEOUT))["history"]
        assert [(m["name"], m["text"]) for m in history] == [
            ("bob", "hello from bob"),
            ("alice", "hi bob"),
        ]


def test_chat_refuses_anonymous_and_foreign_origins(chat: int) -> None:
    """Anonymous visitors and pages of other origins cannot open the chat socket."""
    with pytest.raises(InvalidStatus) as anonymous, join(chat, None):
        pass  # pragma: no cover - the handshake fails
    assert anonymous.value.response.status_code == 403
    alice = log_in(chat, "alice")
    with (
        pytest.raises(InvalidStatus) as foreign,
        connect(
            f"ws://127.0.0.1:{chat}/ws/chat/lobby",
            origin=Origin("https://evil.test"),
            additional_headers={"Cookie": alice},
            open_timeout=TIMEOUT,
        ),
    ):
        pass  # pragma: no cover - the handshake fails
    assert foreign.value.response.status_code == 403


def test_chat_page_assets_and_favicon(chat: int) -> None:
    """The chat page's script, stylesheet and icon are served: no 404 in the log."""
    alice = log_in(chat, "alice")
    cookies = dict(part.split("=", 1) for part in alice.split("; "))
    status, _, page = request(chat, "GET", "/", cookies)
    assert status == 200
    assets = re.findall(r'(?:href|src)="(/static/[^"]+)"', page)
    assert sorted(assets) == ["/static/chat.js", "/static/favicon.svg", "/static/style.css"]
    for path in assets:
        assert request(chat, "GET", path, {})[0] == 200, path
    status, headers, _ = request(chat, "GET", "/favicon.ico", {})
    assert status == 301 and headers["Location"] == "/static/favicon.svg"
    assert request(chat, "GET", "/room/python/", cookies)[1]["Location"] == "/#python"
