"""Fixtures of the Flask adapter's tests: a real app served by werkzeug on port 0."""

from __future__ import annotations

import http.cookiejar
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from ..helpers import TIMEOUT
from .flaskapp import PASSWORD, close_app, create_app

#: Flask-Login 0.6.3 formats the User-Agent as bytes in its session identifier
#: (``f"{addr}|{user_agent}"`` after ``.encode()``), which ``python -bb`` (the test
#: session's interpreter flag) turns into an error in every request that loads a user.
FLASK_LOGIN_BYTES_WARNING = "ignore:str\\(\\) on a bytes instance:BytesWarning:flask_login.utils"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Let Flask-Login's bytes formatting pass in this directory's tests."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.filterwarnings(FLASK_LOGIN_BYTES_WARNING))


class Served:
    """An app served by werkzeug's threaded server in a thread of this process."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = self.server.server_port
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str = "/", *, websocket: bool = False) -> str:
        return f"{'ws' if websocket else 'http'}://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(TIMEOUT)
        close_app(self.app)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """A fresh app with its own SQLite database, served on a free port."""
    served = Served(create_app(str(tmp_path / "app.sqlite3")))
    try:
        yield served
    finally:
        served.close()


def login(
    base_url: str, username: str, password: str = PASSWORD, *, expect_name: bool = True
) -> str:
    """Log in through the app's login view with a real HTTP client; return the
    ``Cookie`` header the browser would send.

    Raises:
        AssertionError: the login was refused.
    """
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    data = urllib.parse.urlencode({"username": username, "password": password}).encode()
    try:
        with opener.open(f"{base_url}/login", data=data, timeout=TIMEOUT) as response:
            assert response.status == 200
            body = response.read().decode()
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"login refused: {exc.code}") from None
    if expect_name:
        assert body == f"hello {username}"  # redirected to the index
    else:
        assert username in body  # the page names the user
    return "; ".join(f"{cookie.name}={cookie.value}" for cookie in jar)


def get_json(url: str) -> Any:
    import json

    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        return json.loads(response.read())
