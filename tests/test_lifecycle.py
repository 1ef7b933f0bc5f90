"""Server lifecycle: start, close with 1001, the port freed, atexit, fork."""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import wsgiws

from .helpers import TIMEOUT, address, run_script, serve


def echo(registry: wsgiws.Registry) -> None:
    @wsgiws.Namespace(r"/", registry=registry)
    class Echo(wsgiws.BaseWSClass):
        @classmethod
        def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
            websocket.send(message)


def test_port_is_free_right_after_close(registry: wsgiws.Registry) -> None:
    """After close() the same port can be bound again at once (SO_REUSEADDR)."""
    echo(registry)
    with serve(registry) as server, connect(f"ws://127.0.0.1:{server.port}/") as ws:
        ws.send("x")
        assert ws.recv(TIMEOUT) == "x"
        port = server.port
    again = wsgiws.Server(port=port, registry=registry)
    again.start()
    try:
        assert again.port == port
    finally:
        again.close()


def test_close_waits_for_peer_then_drops(registry: wsgiws.Registry) -> None:
    """A client that never answers the close frame is dropped after the timeout."""
    echo(registry)
    with serve(registry, close_timeout=0.3) as server:
        sock = socket.create_connection(address(server))
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        sock.settimeout(TIMEOUT)
        assert sock.recv(4096).startswith(b"HTTP/1.1 101")
        server.close()  # returns although the client never answers
        assert not server.running
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        assert data[:2] == b"\x88\x16" and data[2:4] == (1001).to_bytes(2, "big")
        sock.close()


def test_start_twice_and_close_twice(registry: wsgiws.Registry) -> None:
    """start() on a started server raises; close() twice is harmless."""
    server = wsgiws.Server(port=0, registry=registry)
    server.start()
    with pytest.raises(wsgiws.InvalidState, match="starts once"):
        server.start()
    server.close()
    server.close()
    assert not server.running


def test_bind_error_is_raised_in_caller(registry: wsgiws.Registry) -> None:
    """A port in use raises OSError from start(), not in a background thread."""
    with serve(registry) as server:
        other = wsgiws.Server(port=server.port, registry=registry)
        with pytest.raises(OSError):
            other.start()


def test_serve_forever_until_closed_from_another_thread(
    registry: wsgiws.Registry,
) -> None:
    """serve_forever() blocks until another thread calls close()."""
    echo(registry)
    server = wsgiws.Server(port=0, registry=registry)
    server.start()
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    with connect(f"ws://127.0.0.1:{server.port}/") as ws:
        ws.send("hi")
        assert ws.recv(TIMEOUT) == "hi"
    server.close()
    thread.join(TIMEOUT)
    assert not thread.is_alive()


def test_middleware_passes_http_through_and_owns_server(
    registry: wsgiws.Registry,
) -> None:
    """The WSGI wrapper calls the app untouched and closes its server."""
    calls = []

    def app(environ: Any, start_response: Any) -> list[bytes]:
        calls.append(environ["PATH_INFO"])
        return [b"ok"]

    echo(registry)
    with wsgiws.WebSocketMiddleware(app, port=0, registry=registry) as wrapped:
        assert wrapped({"PATH_INFO": "/x"}, None) == [b"ok"]  # type: ignore[arg-type]
        with connect(f"ws://127.0.0.1:{wrapped.server.port}/") as ws:
            ws.send("y")
            assert ws.recv(TIMEOUT) == "y"
    assert calls == ["/x"]
    assert not wrapped.server.running


def test_interpreter_exit_closes_with_1001() -> None:
    """A script that ends without close() still sends 1001 to its clients (atexit)."""
    with run_script(
        """
        server = wsgiws.Server(port=0)
        server.start()
        print(server.port, flush=True)
        sys.stdin.readline()  # exit without calling close()
        """
    ) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        port = int(proc.stdout.readline())
        with connect(f"ws://127.0.0.1:{port}/pid") as ws:
            assert ws.recv(TIMEOUT) == str(proc.pid)
            proc.stdin.write("\n")
            proc.stdin.flush()
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(TIMEOUT)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001
        assert proc.wait(TIMEOUT) == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_restarts_the_loop() -> None:
    """After fork() the child serves on the inherited port with a loop of its own."""
    with run_script(
        """
        server = wsgiws.Server(port=0)
        server.start()
        pid = os.fork()
        if pid == 0:
            print(server.port, os.getpid(), flush=True)
            sys.stdin.readline()
            server.close()
            os._exit(0)
        server.close()  # the parent stops serving; only the child accepts now
        os.waitpid(pid, 0)
        """
    ) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        port_text, child = proc.stdout.readline().split()
        for _ in range(3):
            with connect(f"ws://127.0.0.1:{port_text}/pid") as ws:
                assert ws.recv(TIMEOUT) == child
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(TIMEOUT) == 0
        assert proc.stderr is not None
        assert "Traceback" not in proc.stderr.read()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_stays_stopped_with_on_fork_stop() -> None:
    """With on_fork="stop", the child does not serve and says so in its state."""
    with run_script(
        """
        server = wsgiws.Server(port=0, on_fork="stop")
        server.start()
        pid = os.fork()
        if pid == 0:
            print(server.running, flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
        print(server.running, flush=True)
        server.close()
        """
    ) as proc:
        out, _ = proc.communicate(timeout=TIMEOUT)
    assert out.split() == ["False", "True"]


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"max_message_size": 0}, ValueError, "max_message_size"),
        ({"ping_interval": -1}, ValueError, "ping_interval"),
        ({"handshake_timeout": "10"}, ValueError, "handshake_timeout"),
        ({"workers": 1.5}, ValueError, "workers"),
        ({"write_limit": True}, ValueError, "write_limit"),
        ({"origins": "https://a"}, ValueError, "origins"),
        ({"on_fork": "maybe"}, ValueError, "on_fork"),
        ({"max_mesage_size": 1}, TypeError, "max_mesage_size"),
        ({"port": 70000}, ValueError, "port"),
        ({"registry": {}}, TypeError, "registry"),
    ],
)
def test_bad_options_name_the_option(
    options: dict[str, object], error: type[Exception], match: str
) -> None:
    """A wrong option raises a readable error naming it."""
    with pytest.raises(error, match=match):
        wsgiws.Server(**options)  # type: ignore[arg-type]


def test_none_disables_timeouts_and_size_limit() -> None:
    """None is accepted wherever an option can be disabled."""
    options = wsgiws.Options.from_kwargs(
        max_message_size=None,
        handshake_timeout=None,
        ping_interval=None,
        ping_timeout=None,
        close_timeout=None,
        origins=None,
    )
    assert options.max_message_size is None


def test_close_releases_a_socket_handed_over_too_late(registry: wsgiws.Registry) -> None:
    """A socket handed over when the loop can no longer take it is closed by close()."""
    server = wsgiws.Server(port=None, registry=registry)
    server.start()
    server.loop.stop_threadsafe()  # the loop ends; the server still counts as running
    assert server._loop_done.wait(TIMEOUT)
    ours, theirs = socket.socketpair()
    closed = threading.Event()
    server.adopt_threadsafe(ours, ("127.0.0.1", 1), "/", [("host", "x")], closed=closed)
    server.close(timeout=0.5)
    assert closed.is_set()
    assert ours.fileno() == -1
    theirs.settimeout(TIMEOUT)
    assert theirs.recv(1) == b""  # the peer sees the connection closed
    theirs.close()


def test_out_of_descriptors_pauses_accepting_then_recovers() -> None:
    """EMFILE at accept is logged a few times, not in a busy loop, and serving resumes."""
    with run_script(
        """
        import logging, resource, socket
        logging.basicConfig(level=logging.ERROR, format="%(message)s")
        server = wsgiws.Server(port=0)
        server.start()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        held = []
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        try:
            while True:
                held.append(socket.socket())  # use up the descriptors
        except OSError:
            pass
        print(server.port, flush=True)
        sys.stdin.readline()  # the test has connected: accept() fails with EMFILE
        import time
        time.sleep(1.5)  # the duration under test: out of descriptors this long
        for sock in held:
            sock.close()
        print("freed", flush=True)
        sys.stdin.readline()
        server.close()
        """
    ) as proc:
        assert proc.stdout is not None and proc.stdin is not None and proc.stderr is not None
        port = int(proc.stdout.readline())
        waiting = socket.create_connection(("127.0.0.1", port))  # queued, not accepted
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "freed"
        waiting.close()
        with connect(f"ws://127.0.0.1:{port}/pid", open_timeout=TIMEOUT) as ws:
            assert ws.recv(TIMEOUT) == str(proc.pid)
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(TIMEOUT) == 0
        errors = [line for line in proc.stderr.read().splitlines() if "accept failed" in line]
    assert 1 <= len(errors) <= 10, errors


def test_exit_and_fork_hooks_run_by_stage_not_by_import_order() -> None:
    """Servers close before group backends at exit; after fork the hub is reset
    first, then backends restart, then servers (see wsgiws.lifecycle)."""
    import wsgiws.redis_groups  # noqa: F401  (registers the backend stages)
    from wsgiws import lifecycle

    exit_order = [hook.__module__ for hook in lifecycle._ordered(lifecycle._exit_hooks)]
    assert exit_order.index("wsgiws.server") < exit_order.index("wsgiws.redis_groups")
    fork_order = [hook.__module__ for hook in lifecycle._ordered(lifecycle._fork_hooks)]
    assert (
        fork_order.index("wsgiws.groups")
        < fork_order.index("wsgiws.redis_groups")
        < fork_order.index("wsgiws.server")
    )
