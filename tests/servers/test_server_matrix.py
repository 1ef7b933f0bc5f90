"""Same-port WebSockets under real WSGI servers, each run as a subprocess.

The matrix (see ``procs.MATRIX``): wsgiref (alone and with a separate port too),
werkzeug's dev server under Flask (hand-off, and ``handoff="park"``), gunicorn sync
and gthread workers with several workers, with and without ``--preload``, gunicorn's
gevent worker (monkey-patched), gevent's pywsgi, Django's ``runserver`` with its
autoreloader, uWSGI (``--http-socket`` with processes and with threads, its HTTP
router with ``--http-websockets``), and the fallbacks (a 501 naming the server and the
fix): waitress, gunicorn terminating TLS itself, uWSGI's router without
``--http-websockets``, mod_wsgi. Separate-port mode under prefork servers (gunicorn
with and without ``--preload``, uWSGI with and without ``--lazy-apps``, Apache with
mod_wsgi daemon processes behind mod_proxy_wstunnel) is served by every worker and
never by the master, and waitress stopped by SIGTERM sends 1001. All servers start at
once, in parallel, for the whole module; each is stopped its documented way.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from tests.helpers import TIMEOUT, frame
from tests.servers.procs import AVAILABLE, MATRIX, ServerProcess, children, running

#: Servers whose own port serves WebSockets (by hand-off, parked thread or proxy).
HANDOFF = [n for n in AVAILABLE if MATRIX[n].mode in ("handoff", "park", "proxied")]
#: Servers whose workers are forked processes serving the same port.
PREFORK = [n for n in AVAILABLE if MATRIX[n].workers and MATRIX[n].mode != "refuse"]
#: Servers whose stop may drop WebSockets (1006) before the 1001 gets through.
RACY_STOP = ("django", "uwsgi-router")
#: Servers whose application also listens on a separate WebSocket port.
SEPARATE = [n for n in AVAILABLE if MATRIX[n].ws_port]

#: The headers of a WebSocket upgrade request.
UPGRADE_HEADERS = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}

#: How long a WebSocket is held open: twice gunicorn's ``--timeout 5``.
HOLD = 10.0


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    """Every server of the matrix, started in parallel, stopped at the end."""
    log_dir: Path = tmp_path_factory.mktemp("server-logs")
    with running(AVAILABLE, log_dir) as started:
        yield started


@pytest.mark.parametrize("name", list(MATRIX))
def test_server_is_installed(name: str) -> None:
    """Every server of the matrix runs here (CI installs them all); else say which not."""
    if MATRIX[name].missing:
        pytest.skip(MATRIX[name].missing)


def ws_connect(
    server: ServerProcess, path: str = "/ws/echo", port: int | None = None
) -> ClientConnection:
    """Open a WebSocket on the server's own port (or ``port``)."""
    if port is not None:
        return connect(f"ws://127.0.0.1:{port}{path}", open_timeout=TIMEOUT, close_timeout=TIMEOUT)
    return connect(
        server.url(path, websocket=True),
        ssl=server.ssl_context,
        open_timeout=TIMEOUT,
        close_timeout=TIMEOUT,
    )


def http_get(server: ServerProcess, path: str = "/") -> str:
    """Fetch ``path`` over plain HTTP (HTTPS for a TLS server) from the server's port."""
    with urllib.request.urlopen(server.url(path), timeout=TIMEOUT, context=server.ssl_context) as r:
        assert r.status == 200
        return str(r.read().decode())


def welcome_pid(ws: ClientConnection) -> int:
    """Read the message on_connect sends before the 101; return its process id."""
    message = ws.recv(timeout=TIMEOUT)
    assert isinstance(message, str) and message.startswith("welcome "), message
    return int(message.split()[1])


@pytest.mark.parametrize("name", HANDOFF)
def test_echo_text_and_binary_then_close_with_code(
    servers: dict[str, ServerProcess], name: str
) -> None:
    """A WebSocket on the app's own port echoes text and binary and closes with its code."""
    server = servers[name]
    with ws_connect(server) as ws:
        welcome_pid(ws)
        ws.send("héllo")
        assert ws.recv(timeout=TIMEOUT) == "héllo"
        ws.send(b"\x00\xff" * 3)
        assert ws.recv(timeout=TIMEOUT) == b"\x00\xff" * 3
        big = bytes(range(256)) * 1024  # 256 KiB: several socket writes each way
        ws.send(big)
        assert ws.recv(timeout=TIMEOUT) == big
        ws.close(4000, "done")
    assert ws.close_code == 4000
    assert ws.close_reason == "done"


@pytest.mark.parametrize("name", HANDOFF)
def test_server_side_close_code(servers: dict[str, ServerProcess], name: str) -> None:
    """A close started by the handler reaches the client with the handler's code."""
    with ws_connect(servers[name]) as ws:
        welcome_pid(ws)
        ws.send("close 4001")
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=TIMEOUT)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4001


@pytest.mark.parametrize("name", HANDOFF)
def test_http_keeps_working_while_websockets_are_open(
    servers: dict[str, ServerProcess], name: str
) -> None:
    """Plain HTTP requests on the same port are answered while WebSockets are open."""
    server = servers[name]
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(ws_connect(server)) for _ in range(3)]
        for ws in sockets:
            welcome_pid(ws)
        for i in range(5):
            assert http_get(server, f"/page{i}").startswith(f"http /page{i} pid ")
        for i, ws in enumerate(sockets):
            ws.send(f"still open {i}")
            assert ws.recv(timeout=TIMEOUT) == f"still open {i}"


# Not uWSGI: the bytes it read past the request head stay in its own C buffer, out of
# reach (RFC 6455 clients, browsers among them, wait for the 101 before sending).
@pytest.mark.parametrize(
    "name", [n for n in HANDOFF if MATRIX[n].mode == "handoff" and not n.startswith("uwsgi")]
)
def test_frame_sent_right_behind_the_request(servers: dict[str, ServerProcess], name: str) -> None:
    """A frame the client sends in the same write as its request is not lost."""
    server = servers[name]
    client = WSConnection(ConnectionType.CLIENT)
    data = client.send(Request(host=f"127.0.0.1:{server.port}", target="/ws/echo"))
    data += frame(0x1, b"early bird")  # wsproto will not send before the 101
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        events: list[object] = []
        deadline = time.monotonic() + TIMEOUT
        texts: list[str] = []
        while len(texts) < 2 and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed; events so far: {events}"
            client.receive_data(chunk)
            for event in client.events():
                events.append(event)
                if isinstance(event, TextMessage):
                    texts.append(event.data)
        assert isinstance(events[0], AcceptConnection)
        assert texts[0].startswith("welcome ")
        assert texts[1] == "early bird"


@pytest.mark.parametrize("name", AVAILABLE)
def test_upgrade_to_unknown_path_reaches_the_app(
    servers: dict[str, ServerProcess], name: str
) -> None:
    """An upgrade request for a path with no namespace goes to the WSGI app untouched."""
    # http.client rather than a WebSocket client: wsgiref answers in HTTP/1.0.
    server = servers[name]
    conn = (
        http.client.HTTPSConnection(
            "127.0.0.1", server.port, timeout=TIMEOUT, context=server.ssl_context
        )
        if server.ssl_context is not None
        else http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    )
    try:
        conn.request("GET", "/not-a-namespace", headers=UPGRADE_HEADERS)
        response = conn.getresponse()
        body = response.read()
        if name.startswith("werkzeug"):
            # Flask's own answer: its routing refuses upgrades to non-WebSocket routes.
            assert response.status == 400 and b"Bad Request" in body
        else:
            assert response.status == 200
            assert body.startswith(b"http /not-a-namespace pid ")
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("name", "why"),
    [
        (name, why)
        for name, why in [
            ("waitress", "waitress does not expose the client socket"),
            ("waitress+port", "waitress does not expose the client socket"),
            ("gunicorn-tls", "gunicorn terminates TLS itself"),
            ("uwsgi-router-plain", "uWSGI's HTTP router (--http) closes upgraded connections"),
            ("mod_wsgi", "mod_wsgi/"),
        ]
        if name in AVAILABLE
    ],
)
def test_fallback_answers_501_naming_the_server_and_the_fix(
    servers: dict[str, ServerProcess], name: str, why: str
) -> None:
    """Where no hand-off is possible the upgrade gets a 501 that names the server and
    says to pass port= (and, for uWSGI's router, the option that fixes it)."""
    # Through Apache, /ws/ goes to the separate port; /direct/ reaches mod_wsgi.
    path = "/direct/echo" if name == "mod_wsgi" else "/ws/echo"
    with pytest.raises(InvalidStatus) as info, ws_connect(servers[name], path):
        pass  # pragma: no cover - the handshake fails
    response = info.value.response
    assert response.status_code == 501
    body = bytes(response.body or b"").decode()
    assert why in body
    assert "port" in body
    if name == "uwsgi-router-plain":
        assert "add --http-websockets" in body
    assert http_get(servers[name]).startswith("http / pid ")


def test_same_port_and_separate_port_share_one_loop(servers: dict[str, ServerProcess]) -> None:
    """With port= given, both ports serve WebSockets from one server and registry."""
    server = servers["wsgiref+port"]
    ws_port = int(server.log().split("listening on 127.0.0.1:")[1].split()[0])
    assert ws_port != server.port
    with ws_connect(server) as same, ws_connect(server, port=ws_port) as separate:
        assert welcome_pid(same) == welcome_pid(separate) == server.proc.pid
        for ws in (same, separate):
            ws.send("connections")
            assert ws.recv(timeout=TIMEOUT) == "connections 2"


@pytest.mark.parametrize("name", PREFORK)
def test_every_worker_serves_websockets(servers: dict[str, ServerProcess], name: str) -> None:
    """Each worker (never the master, also where the master imported the application:
    gunicorn --preload, uWSGI) serves WebSockets on the server's port."""
    server = servers[name]
    workers = server.worker_pids()
    seen: set[int] = set()

    def one() -> int:
        with ws_connect(server) as ws:
            pid = welcome_pid(ws)
            ws.send("pid")
            reply = ws.recv(timeout=TIMEOUT)
            assert isinstance(reply, str) and reply.startswith(f"pid {pid} wsgiws-worker")
            return pid

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for _ in range(25):  # bounded: at most 100 connections
            seen.update(pool.map(lambda _: one(), range(4)))
            if seen >= workers:
                break
    assert server.proc.pid not in seen
    assert seen == workers, f"WebSockets served by {sorted(seen)}, workers {sorted(workers)}"


@pytest.mark.parametrize("name", ["wsgiref", "gunicorn-sync"])
def test_more_websockets_than_server_threads(servers: dict[str, ServerProcess], name: str) -> None:
    """Single-threaded servers hold 20 WebSockets open at once and still answer HTTP."""
    server = servers[name]
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(ws_connect(server)) for _ in range(20)]
        for ws in sockets:
            welcome_pid(ws)
        assert http_get(server, "/busy").startswith("http /busy pid ")
        for i, ws in enumerate(sockets):
            ws.send(f"n{i}")
        for i, ws in enumerate(sockets):
            assert ws.recv(timeout=TIMEOUT) == f"n{i}"


@pytest.mark.slow
def test_django_autoreload_restarts_the_loop(servers: dict[str, ServerProcess]) -> None:
    """When Django's autoreloader restarts the server, clients get 1001 and the new
    process serves WebSockets on the same port."""
    server = servers["django"]
    with ws_connect(server) as ws:
        old_pid = welcome_pid(ws)
        (server.dir / "reload_marker.py").write_text("VERSION = 1\n")
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=3 * TIMEOUT)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1001
    deadline = time.monotonic() + 3 * TIMEOUT
    while True:
        with contextlib.suppress(OSError, InvalidHandshake), ws_connect(server) as ws:
            new_pid = welcome_pid(ws)
            ws.send("after reload")
            assert ws.recv(timeout=TIMEOUT) == "after reload"
            break
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)
    assert new_pid != old_pid


@pytest.mark.slow
def test_websockets_outlive_the_request_timeout(servers: dict[str, ServerProcess]) -> None:
    """WebSockets on every server stay open past gunicorn's --timeout 5 (held 10 s)."""
    with contextlib.ExitStack() as stack:
        sockets = {name: stack.enter_context(ws_connect(servers[name])) for name in HANDOFF}
        for name in SEPARATE:
            server = servers[name]
            sockets[f"{name} port"] = stack.enter_context(ws_connect(server, port=server.ws_port))
        for ws in sockets.values():
            welcome_pid(ws)
        time.sleep(HOLD)  # the duration under test, not a synchronisation
        for name, ws in sockets.items():
            ws.send(f"after {HOLD} s on {name}")
            assert ws.recv(timeout=TIMEOUT) == f"after {HOLD} s on {name}", name
            ws.close(4002)
            assert ws.close_code == 4002, name
        for name in HANDOFF:
            assert servers[name].proc.poll() is None, name
            assert "WORKER TIMEOUT" not in servers[name].log(), name


@pytest.mark.parametrize("name", SEPARATE)
def test_separate_port_echo(servers: dict[str, ServerProcess], name: str) -> None:
    """The separate port echoes text and binary and closes with the client's code."""
    server = servers[name]
    with ws_connect(server, port=server.ws_port) as ws:
        welcome_pid(ws)
        ws.send("héllo")
        assert ws.recv(timeout=TIMEOUT) == "héllo"
        ws.send(b"\x00\xff" * 3)
        assert ws.recv(timeout=TIMEOUT) == b"\x00\xff" * 3
        ws.close(4000, "done")
    assert ws.close_code == 4000


@pytest.mark.parametrize("name", [n for n in SEPARATE if MATRIX[n].ws_processes > 1])
def test_separate_port_served_by_every_worker_never_the_master(
    servers: dict[str, ServerProcess], name: str
) -> None:
    """Under a prefork server every worker process serves the separate port (its own
    SO_REUSEPORT listener, or the master's listener inherited) and the master none."""
    server = servers[name]
    seen: set[int] = set()

    def one() -> int:
        with ws_connect(server, port=server.ws_port) as ws:
            return welcome_pid(ws)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for _ in range(25):  # bounded: at most 100 connections
            seen.update(pool.map(lambda _: one(), range(4)))
            if len(seen) >= MATRIX[name].ws_processes:
                break
    assert server.proc.pid not in seen
    assert seen <= set(children(server.proc.pid)), (seen, server.log())
    assert len(seen) == MATRIX[name].ws_processes, f"served by {sorted(seen)}"


@pytest.mark.parametrize("name", AVAILABLE)
def test_server_log_has_no_error(servers: dict[str, ServerProcess], name: str) -> None:
    """After all the above, the server's log holds no traceback or error line."""
    server = servers[name]
    errors = server.errors()
    if MATRIX[name].mode in ("refuse", "proxied"):
        expected = "cannot serve a WebSocket on the WSGI server's port"
        assert any(expected in line for line in errors), server.log()
        errors = [line for line in errors if expected not in line]
    assert errors == [], server.log()
    assert "open" in server.log() or MATRIX[name].mode in ("refuse", "proxied")


def test_shutdown_with_websockets_open(servers: dict[str, ServerProcess]) -> None:
    """Stopping each server (SIGTERM) with a WebSocket open sends 1001 and logs no error.

    Django's autoreloader turns SIGTERM into ``sys.exit(0)`` in the main thread, so
    the exit hook usually sends 1001; a process torn down before the hook runs drops
    its clients (1006). uWSGI kills its HTTP router at the moment it tells the workers
    to stop, so their 1001 may find the router gone (1006). Both are accepted for them.
    """
    # Not through Apache's mod_proxy_wstunnel: Apache's stop waits for its proxy
    # connections and kills them after ~8 s, before it tells mod_wsgi's daemon
    # processes to stop (see the deployment guide); connections straight to the
    # separate port get 1001.
    direct = [name for name in HANDOFF if MATRIX[name].mode != "proxied"]
    with contextlib.ExitStack() as stack:
        sockets = {name: stack.enter_context(ws_connect(servers[name])) for name in direct}
        for name in SEPARATE:
            server = servers[name]
            sockets[f"{name} port"] = stack.enter_context(ws_connect(server, port=server.ws_port))
        for ws in sockets.values():
            welcome_pid(ws)
        for name in AVAILABLE:
            servers[name].stop()
            assert servers[name].errors() == [] or MATRIX[name].mode in ("refuse", "proxied"), (
                servers[name].log()
            )
        for name, ws in sockets.items():
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=TIMEOUT)
            code = info.value.rcvd.code if info.value.rcvd is not None else 1006
            assert code in ((1001, 1006) if name in RACY_STOP else (1001,)), name
