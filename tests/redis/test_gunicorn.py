"""Groups under gunicorn: three workers, one WebSocket port shared with SO_REUSEPORT."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import re
import socket
import sys
import urllib.request
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from ..helpers import TIMEOUT, wait_for
from .conftest import RedisServer, Spawner

pytestmark = pytest.mark.redis

WORKERS = 3
CLIENTS = 30
#: gunicorn 27 opens a control socket at a fixed path by default; concurrent runs
#: would share it.
NO_CONTROL_SOCKET = (
    ["--no-control-socket"]
    if int(importlib.metadata.version("gunicorn").split(".")[0]) >= 27
    else []
)


def http_get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=TIMEOUT) as response:
        return json.loads(response.read())


def test_broadcast_from_an_http_request_reaches_every_client_of_every_worker_once(
    redis_server: RedisServer, spawn: Spawner
) -> None:
    """30 clients spread over 3 gunicorn workers each get an HTTP-triggered broadcast once."""
    # The WebSocket port: reserved by a bound, non-listening SO_REUSEPORT socket until
    # the workers listen on it (a non-listening socket takes no connections).
    reservation = socket.socket()
    reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reservation.bind(("127.0.0.1", 0))
    ws_port = reservation.getsockname()[1]
    http = socket.create_server(("127.0.0.1", 0))
    http_port = http.getsockname()[1]
    with contextlib.closing(reservation), contextlib.closing(http):
        gunicorn = spawn(
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            str(WORKERS),
            "--bind",
            f"fd://{http.fileno()}",
            "--graceful-timeout",
            "5",
            *NO_CONTROL_SOCKET,
            "tests.redis.gunicorn_app:application",
            name="gunicorn",
            env={"WSGIWS_TEST_REDIS": redis_server.url, "WSGIWS_TEST_WS_PORT": str(ws_port)},
            pass_fds=(http.fileno(),),
        )

        def ready() -> set[int]:
            return {int(pid) for pid in re.findall(r"^READY (\d+)$", gunicorn.stderr(), re.M)}

        wait_for(
            lambda: len(ready()) == WORKERS,
            timeout=6 * TIMEOUT,
            message=f"the workers did not start:\n{gunicorn.stderr()}",
        )
    with contextlib.ExitStack() as stack:
        clients: list[ClientConnection] = []
        pids = []
        for _ in range(CLIENTS):
            client = stack.enter_context(
                connect(f"ws://127.0.0.1:{ws_port}/room/all", open_timeout=TIMEOUT)
            )
            pids.append(json.loads(client.recv(timeout=TIMEOUT))["hello"])
            clients.append(client)
        assert set(pids) <= ready()
        assert len(set(pids)) >= 2, f"all clients on one worker: {pids}"

        # The view answers once the message is in Redis (flush=1), so it precedes
        # anything published afterwards.
        sender = http_get(http_port, "/broadcast?text=to-everyone&flush=1")
        assert sender["pid"] in ready() and sender["flushed"]
        # Exactly once: a duplicate coming back through Redis would arrive before a
        # message published after it, so the next message of each client is this one.
        script = spawn.app(
            "send", redis_server.url, "--group", "all", "--text", "final", name="script"
        )
        assert script.process.wait(3 * TIMEOUT) == 0, script.stderr()
        for client in clients:
            assert client.recv(timeout=TIMEOUT) == "to-everyone"
            assert client.recv(timeout=TIMEOUT) == "final"
