"""The small examples run as scripts and do what their docstrings say."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from .helpers import TIMEOUT, free_port, listening, wait_for

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def run_example() -> Iterator[Callable[..., int]]:
    """Start ``examples/<script>`` on a free port; the processes are killed after the test."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(script: str, *args: str) -> int:
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-u", str(ROOT / "examples" / script), "--port", str(port), *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        processes.append(process)
        wait_for(
            lambda: process.poll() is not None or listening(port),
            timeout=3 * TIMEOUT,
            message=f"{script} did not listen",
        )
        assert process.poll() is None, process.stdout.read() if process.stdout else b""
        return port

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung example
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()


def test_echo_server_script(run_example: Callable[..., int]) -> None:
    """examples/echo_server.py greets, then echoes text and binary messages."""
    port = run_example("echo_server.py")
    with connect(f"ws://127.0.0.1:{port}/echo", open_timeout=TIMEOUT) as ws:
        assert "welcome" in str(ws.recv(timeout=TIMEOUT))
        ws.send("ping")
        assert ws.recv(timeout=TIMEOUT) == "ping"
        ws.send(b"\x00\x01")
        assert ws.recv(timeout=TIMEOUT) == b"\x00\x01"


def test_wsgiref_app_serves_page_and_websocket_on_one_port(run_example: Callable[..., int]) -> None:
    """examples/wsgiref_app.py serves its page and /shout on one port, and pushes the time."""
    port = run_example("wsgiref_app.py")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=TIMEOUT) as response:
        assert b"/shout" in response.read()
    with connect(f"ws://127.0.0.1:{port}/shout", open_timeout=TIMEOUT) as ws:
        ws.send("hello")
        replies: list[dict[str, object]] = []
        while not any("reply" in r for r in replies):
            replies.append(json.loads(ws.recv(timeout=TIMEOUT)))
        assert {"reply": "HELLO!"} in replies
        while not any("time" in r for r in replies):
            replies.append(json.loads(ws.recv(timeout=TIMEOUT)))


def test_desktop_monitor_pushes_samples(run_example: Callable[..., int]) -> None:
    """examples/desktop/monitor.py sends its history, then a sample per interval."""
    port = run_example("desktop/monitor.py", "--interval", "0.1")
    with connect(f"ws://127.0.0.1:{port}/monitor", open_timeout=TIMEOUT) as ws:
        assert json.loads(ws.recv(timeout=TIMEOUT))["type"] == "history"
        for _ in range(3):
            message = json.loads(ws.recv(timeout=TIMEOUT))
            assert message["type"] == "sample"
            assert len(message["sample"]["load"]) == 3
            assert 0 <= message["sample"]["cpu"] <= 100


def test_chat_protocol(run_example: Callable[..., int]) -> None:
    """The chat refuses a nameless handshake, ignores junk, and relays messages with names."""
    port = run_example("wsgiref_chat/app.py")
    with pytest.raises(InvalidStatus) as info:
        connect(f"ws://127.0.0.1:{port}/chat/lobby", open_timeout=TIMEOUT)
    assert info.value.response.status_code == 400
    url = f"ws://127.0.0.1:{port}/chat/proto?name="
    with (
        connect(url + "Ada", open_timeout=TIMEOUT) as ada,
        connect(url + "B%C3%A9a", open_timeout=TIMEOUT) as bea,
    ):
        assert json.loads(ada.recv(timeout=TIMEOUT))["online"] == ["Ada"]
        assert json.loads(bea.recv(timeout=TIMEOUT))["online"] == ["Ada", "Béa"]
        bea.send("not json")
        bea.send(json.dumps({"text": "  hello <b>  "}))
        seen = [json.loads(ada.recv(timeout=TIMEOUT)) for _ in range(4)]
        types = [m["type"] for m in seen]
        assert types.count("join") == 1 and types.count("message") == 1
        message = next(m for m in seen if m["type"] == "message")
        assert (message["name"], message["text"]) == ("Béa", "hello <b>")
