"""``manage.py runserver`` with its autoreloader, and ``manage.py runwebsockets``.

Each test runs the test project's ``manage.py`` as a subprocess in its own process
group (as a terminal would), on fixed free ports: a restart must bind the same port
again.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidMessage
from websockets.sync.client import ClientConnection, connect

from ..helpers import TIMEOUT, free_port, wait_for
from .conftest import Process, create_user, port_is_free, session_cookie

pytestmark = [pytest.mark.django, pytest.mark.slow]

#: A module the autoreloader watches (imported at startup by the app config).
WATCHED = Path(__file__).resolve().parent / "chatapp" / "sockets.py"


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    """Collect the subprocesses a test starts and kill whatever is left at the end."""
    started: list[Process] = []
    yield started
    for process in started:
        process.stop()


def connect_pid(url: str, timeout: float = 3 * TIMEOUT) -> int:
    """Connect to ``/django/pid`` until it works (the server may be starting)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with connect(url, open_timeout=TIMEOUT) as ws:
                return int(ws.recv(timeout=TIMEOUT))
        except (OSError, ConnectionClosed, InvalidMessage):
            # Refused, or accepted by the backlog of a server on its way out.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)  # polling a server that is (re)starting: no event to await


def touch(path: Path) -> None:
    """Change ``path``'s modification time (its content stays the same)."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, max(time.time_ns(), stat.st_mtime_ns + 10**9)))


def touch_until_reload(ws: ClientConnection, path: Path = WATCHED) -> ConnectionClosed:
    """Touch ``path`` until the reload closes ``ws`` (a client of the old child);
    return how it was closed.

    A retry covers a touch that lands while a restart caused by another edit (the
    reloader watches every imported module) has not taken its first snapshot yet.
    """
    for _ in range(3):
        touch(path)
        try:
            message = ws.recv(timeout=TIMEOUT)
        except ConnectionClosed as closed:
            return closed
        except TimeoutError:
            continue
        raise AssertionError(f"unexpected message {message!r}")
    raise AssertionError(f"touching {path.name} three times did not restart the server")


@pytest.mark.parametrize("mode", ["separate-port", "same-port"])
def test_runserver_autoreload(django_project: Path, processes: list[Process], mode: str) -> None:
    """The serving child runs the loop, a code change restarts it on the same port,
    and Ctrl-C ends every process and frees the ports at once."""
    http_port = free_port()
    if mode == "separate-port":
        ws_port = free_port()
        env = {"WSGIWS_DJANGO_TEST_WS_PORT": str(ws_port)}
    else:
        ws_port = http_port
        env = {"WSGIWS_DJANGO_TEST_WS_PORT": "same"}
    env["WSGIWS_DJANGO_TEST_DB"] = str(django_project)
    server = Process(["runserver", f"127.0.0.1:{http_port}"], env)
    processes.append(server)
    url = f"ws://127.0.0.1:{ws_port}/django/pid"

    first = connect_pid(url)
    assert first != server.proc.pid  # the reloader's child serves, not the parent
    # Django middleware on the handshake: a real environ from runserver (same-port
    # mode) or one built from the request (separate port).
    user = create_user("erin")
    with connect(
        f"ws://127.0.0.1:{ws_port}/django/whoami",
        additional_headers={"Cookie": session_cookie(user.username)},
        open_timeout=TIMEOUT,
    ) as ws:
        assert json.loads(ws.recv(timeout=TIMEOUT))["user"] == user.username
    with connect(url, open_timeout=TIMEOUT) as old:
        assert int(old.recv(timeout=TIMEOUT)) == first
        # The old child closes its clients with 1001 (going away) on its way out.
        closed = touch_until_reload(old)
        assert closed.rcvd is not None and closed.rcvd.code == 1001
    second = connect_pid(url)
    assert second not in (first, server.proc.pid)
    output = server.output()
    assert "already in use" not in output and "Errno 98" not in output, output

    # Ctrl-C in the terminal: SIGINT to the whole process group.
    server.interrupt()
    server.proc.wait(3 * TIMEOUT)
    wait_for(lambda: not server.group_alive(), 3 * TIMEOUT, "a process survived Ctrl-C")
    assert port_is_free(ws_port)
    assert port_is_free(http_port)


def test_runwebsockets_command(django_project: Path, processes: list[Process]) -> None:
    """``manage.py runwebsockets`` serves the handlers alone, with Django's sessions."""
    user = create_user("dave")
    cookie = session_cookie(user.username)
    command = Process(
        ["runwebsockets", "--port", "0"],
        {"WSGIWS_DJANGO_TEST_DB": str(django_project), "WSGIWS_DJANGO_TEST_WS_PORT": "same"},
    )
    processes.append(command)
    found = command.wait_line(r"WebSocket server \(pid (\d+)\) at ws://127\.0\.0\.1:(\d+)/")
    assert int(found.group(1)) == command.proc.pid
    url = f"ws://127.0.0.1:{found.group(2)}/django/whoami"
    with connect(url, additional_headers={"Cookie": cookie}, open_timeout=TIMEOUT) as ws:
        assert json.loads(ws.recv(timeout=TIMEOUT))["user"] == user.username
    command.interrupt()
    assert command.proc.wait(3 * TIMEOUT) == 0
    assert port_is_free(int(found.group(2)))


def test_runwebsockets_reload(django_project: Path, processes: list[Process]) -> None:
    """``runwebsockets --reload`` restarts on a code change, on the same port."""
    port = free_port()
    command = Process(
        ["runwebsockets", "--reload"],
        {"WSGIWS_DJANGO_TEST_DB": str(django_project), "WSGIWS_DJANGO_TEST_WS_PORT": str(port)},
    )
    processes.append(command)
    url = f"ws://127.0.0.1:{port}/django/pid"
    first = connect_pid(url)
    assert first != command.proc.pid
    with connect(url, open_timeout=TIMEOUT) as old:
        assert int(old.recv(timeout=TIMEOUT)) == first
        # Closed with 1001 once the old child has released the port.
        closed = touch_until_reload(old)
        assert closed.rcvd is not None and closed.rcvd.code == 1001
    assert connect_pid(url) not in (first, command.proc.pid)
    command.interrupt()
    command.proc.wait(3 * TIMEOUT)
    wait_for(lambda: not command.group_alive(), 3 * TIMEOUT, "a process survived Ctrl-C")
    assert port_is_free(port)


def test_runwebsockets_needs_a_port(django_project: Path, processes: list[Process]) -> None:
    """Without ``WEBSOCKET_PORT`` or ``--port``, the command fails naming the setting."""
    command = Process(
        ["runwebsockets"],
        {"WSGIWS_DJANGO_TEST_DB": str(django_project), "WSGIWS_DJANGO_TEST_WS_PORT": "same"},
    )
    processes.append(command)
    assert command.proc.wait(3 * TIMEOUT) == 1
    command.wait_line(r"WEBSOCKET_PORT: set it")
