"""Django middleware on the handshake: users, sessions, refusals, origins, discovery."""

from __future__ import annotations

import json
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin

from ..helpers import TIMEOUT
from .conftest import create_user, session_cookie, ws_url

pytestmark = pytest.mark.django


def hello(application: Any, path: str, headers: dict[str, str] | None = None) -> Any:
    """Open ``path``, return the JSON message the handler sends first."""
    with connect(ws_url(application, path), additional_headers=headers, open_timeout=TIMEOUT) as ws:
        return json.loads(ws.recv(timeout=TIMEOUT))


def test_logged_in_user(application: Any) -> None:
    """A session cookie from a Django login makes ``websocket.user`` that user."""
    user = create_user("alice")
    info = hello(application, "/django/whoami", {"Cookie": session_cookie(user.username)})
    assert info == {
        "user": user.username,
        "authenticated": True,
        "class": "User",  # resolved eagerly: the user itself, not a lazy object
        "request": "WSGIRequest",
        "has_session": True,
    }


def test_anonymous_user(application: Any) -> None:
    """Without a session cookie, ``websocket.user`` is ``AnonymousUser``."""
    info = hello(application, "/django/whoami", {"Cookie": "theme=dark"})
    assert info["authenticated"] is False
    assert info["class"] == "AnonymousUser"
    assert info["has_session"] is True


def test_no_cookie_header(application: Any) -> None:
    """A handshake without any Cookie header works (djwebsockets crashed here)."""
    info = hello(application, "/django/whoami")
    assert info["class"] == "AnonymousUser"


def test_unknown_session_key_is_anonymous(application: Any) -> None:
    """A session cookie with a key the store does not know gives ``AnonymousUser``."""
    info = hello(application, "/django/whoami", {"Cookie": "sessionid=" + "x" * 32})
    assert info["class"] == "AnonymousUser"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/django/whoami/deny", 403),  # HttpResponseForbidden
        ("/django/whoami/slow-down", 429),  # any 4xx keeps its status
        ("/django/whoami/boom", 500),  # an exception, turned into 500 as Django does
        ("/django/whoami/login-required", 403),  # a redirect refuses with 403
    ],
)
def test_refusing_middleware(application: Any, path: str, status: int) -> None:
    """A middleware that answers instead of passing through refuses the handshake."""
    with pytest.raises(InvalidStatus) as info:
        hello(application, path)
    assert info.value.response.status_code == status
    assert b"refused by Django middleware" in info.value.response.body


def test_redirecting_middleware_lets_logged_in_users_through(application: Any) -> None:
    """The middleware that redirects anonymous users passes a logged-in one."""
    user = create_user("bob")
    cookie = session_cookie(user.username)
    info = hello(application, "/django/whoami/login-required", {"Cookie": cookie})
    assert info["user"] == user.username


def test_session_save_from_handler(application: Any) -> None:
    """``websocket.session.save()`` in a handler is seen by the next HTTP request."""
    from django.test import Client

    user = create_user("carol")
    cookie = session_cookie(user.username)
    with connect(
        ws_url(application, "/django/whoami"),
        additional_headers={"Cookie": cookie},
        open_timeout=TIMEOUT,
    ) as ws:
        json.loads(ws.recv(timeout=TIMEOUT))
        for expected in ("1", "2", "3"):
            ws.send("incr")
            assert ws.recv(timeout=TIMEOUT) == expected
    client = Client()
    client.cookies["sessionid"] = cookie.partition("=")[2]
    page = client.get("/session/").json()
    assert page == {"user": user.username, "ws_count": 3}


def test_handler_in_models_module(application: Any) -> None:
    """Handlers defined in an app's ``models.py`` are registered."""
    with connect(ws_url(application, "/django/from-models"), open_timeout=TIMEOUT) as ws:
        assert ws.recv(timeout=TIMEOUT) == "models.py"


@pytest.mark.parametrize(
    "origin",
    [
        "http://127.0.0.1:8000",
        "https://localhost",
        "https://chat.example.com",
        "http://example.com",
    ],
)
def test_origin_in_allowed_hosts(application: Any, origin: str) -> None:
    """By default an ``Origin`` whose host is in ``ALLOWED_HOSTS`` is accepted."""
    with connect(
        ws_url(application, "/django/from-models"),
        origin=Origin(origin),
        open_timeout=TIMEOUT,
    ) as ws:
        assert ws.recv(timeout=TIMEOUT) == "models.py"


@pytest.mark.parametrize(
    "origin", ["https://evil.test", "https://example.com.evil.test", "null", "ftp://localhost"]
)
def test_origin_not_in_allowed_hosts(application: Any, origin: str) -> None:
    """By default an ``Origin`` whose host is not in ``ALLOWED_HOSTS`` gets 403."""
    with (
        pytest.raises(InvalidStatus) as info,
        connect(
            ws_url(application, "/django/from-models"),
            origin=Origin(origin),
            open_timeout=TIMEOUT,
        ),
    ):
        pass  # pragma: no cover - the handshake fails
    assert info.value.response.status_code == 403
