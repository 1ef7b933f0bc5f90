"""The Flask adapter under gunicorn's gthread workers, in same-port mode."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from websockets.sync.client import connect

from ..helpers import TIMEOUT
from ..servers.procs import ServerProcess, Spec, _gunicorn
from .conftest import login
from .flaskapp import close_app, create_app

pytestmark = [pytest.mark.flask, pytest.mark.slow]


def test_gunicorn_gthread_same_port(tmp_path: Path) -> None:
    """Two gthread workers serve the app and its sockets on gunicorn's own port: a
    login through the app gives the socket that user, and writes through
    ``db.session`` land in the database."""
    database = tmp_path / "app.sqlite3"
    close_app(create_app(str(database)))  # the tables and users, made once
    argv = _gunicorn("gthread", 2, "--threads", "4")[:-1]
    spec = Spec(
        "handoff",
        (*argv, "tests.flask.flaskapp:app"),
        env=(("WSGIWS_FLASK_TEST_DB", str(database)),),
        workers=2,
    )
    server = ServerProcess("gunicorn-flask", spec, tmp_path)
    try:
        server.wait_ready()
        base = server.url("").rstrip("/")
        cookie = login(base, "alice")
        for _ in range(6):  # several connections, spread over the workers
            with connect(
                server.url("/ws/whoami", websocket=True),
                additional_headers={"Cookie": cookie},
                open_timeout=TIMEOUT,
            ) as client:
                info = json.loads(client.recv(timeout=TIMEOUT))
                assert info["user"] == info["current_user"] == "alice"
                assert info["external_url"] == f"{base}/login"
                client.send("whoami")
                assert json.loads(client.recv(timeout=TIMEOUT))["user"] == "alice"
        with connect(
            server.url("/ws/write", websocket=True),
            additional_headers={"Cookie": cookie},
            open_timeout=TIMEOUT,
        ) as client:
            for n in range(20):
                client.send(f"note {n}")
                assert str(client.recv(timeout=TIMEOUT)).startswith("stored ")
        with urllib.request.urlopen(f"{base}/notes", timeout=TIMEOUT) as response:
            assert json.loads(response.read()) == {"notes": 20}
        assert len(server.worker_pids()) == 2
    finally:
        server.stop()
    assert server.errors() == [], server.log()
