"""The Flask chat example without a browser: logins, usernames, 401 for anonymous."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from ..helpers import TIMEOUT, free_port, listening, wait_for
from .conftest import login

pytestmark = pytest.mark.flask

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "secret words"


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[str]:
    """The example on a free port, its data in a temporary folder; its base URL."""
    port = free_port()
    script = ROOT / "examples" / "flask_chat" / "app.py"
    log = (tmp_path / "log.txt").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-u", str(script), "--port", str(port), "--data", str(tmp_path)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(
            lambda: process.poll() is not None or listening(port),
            timeout=3 * TIMEOUT,
            message="the Flask chat did not listen",
        )
        assert process.poll() is None, (tmp_path / "log.txt").read_text()
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=TIMEOUT)
        log.close()
    assert (tmp_path / "chat.sqlite3").exists()
    assert "Traceback" not in (tmp_path / "log.txt").read_text()


def test_anonymous_socket_is_refused_with_401(chat: str) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(f"ws://{chat}/chat/lobby", open_timeout=TIMEOUT)
    assert info.value.response.status_code == 401


def test_logged_in_users_chat_under_their_usernames(chat: str) -> None:
    """Users signed up through the login form chat; messages carry their usernames,
    and the ``name`` query parameter cannot pretend to be someone else."""
    ada = login(f"http://{chat}", "ada", PASSWORD, expect_name=False)
    bob = login(f"http://{chat}", "bob", PASSWORD, expect_name=False)
    url = f"ws://{chat}/chat/lobby?name=mallory"
    with (
        connect(url, additional_headers={"Cookie": ada}, open_timeout=TIMEOUT) as a,
        connect(url, additional_headers={"Cookie": bob}, open_timeout=TIMEOUT) as b,
    ):
        assert json.loads(a.recv(timeout=TIMEOUT))["name"] == "ada"  # welcome
        assert json.loads(b.recv(timeout=TIMEOUT))["name"] == "bob"
        b.send(json.dumps({"text": "hello"}))
        for client in (a, b):
            while (message := json.loads(client.recv(timeout=TIMEOUT)))["type"] != "message":
                pass
            assert (message["name"], message["text"]) == ("bob", "hello")
    # A wrong password is refused; the account keeps its first password.
    with pytest.raises(AssertionError):
        login(f"http://{chat}", "ada", "other", expect_name=False)
