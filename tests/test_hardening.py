"""Hardening over real sockets: strict order on protocol failures, user callables off
the loop thread, shutdown races, descriptor exhaustion."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin
from wsproto.events import CloseConnection, Event, TextMessage

import wsgiws

from .helpers import TIMEOUT, RawClient, frame, serve, wait_for

TEXT, BINARY, CONT, CLOSE = 0x1, 0x2, 0x0, 0x8


def echo_namespace(registry: wsgiws.Registry, gate: threading.Event | None = None) -> None:
    @wsgiws.Namespace(r"/echo", registry=registry)
    class Echo(wsgiws.BaseWSClass):
        @classmethod
        def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
            if gate is not None and message == "wait":
                gate.wait(TIMEOUT)
            websocket.send(message)


def events_until_close(client: RawClient) -> list[Event]:
    events: list[Event] = []
    while True:
        event = client.next_event()
        events.append(event)
        if isinstance(event, CloseConnection):
            return events


def texts_and_close(events: list[Event]) -> tuple[list[str], int]:
    texts = [e.data for e in events if isinstance(e, TextMessage)]
    close = events[-1]
    assert isinstance(close, CloseConnection)
    return texts, close.code


# -- point 1: strict order on a protocol failure -----------------------------------------


@pytest.mark.parametrize(
    ("violation", "code"),
    [
        (frame(0x3, b"reserved opcode"), 1002),
        (frame(TEXT, b"x", rsv=2), 1002),
        (frame(CONT, b"no message"), 1002),
        (frame(TEXT, b"bad \xff utf-8"), 1007),
        (frame(BINARY, b"", length=10**6), 1009),
    ],
    ids=["opcode", "rsv", "continuation", "utf8", "too-big"],
)
def test_answers_before_violation_go_out_before_close(
    registry: wsgiws.Registry, violation: bytes, code: int
) -> None:
    """Messages in the same burst as a violation reach the handler in order, their
    answers precede the close frame, and nothing after the violation is read."""
    echo_namespace(registry)
    with serve(registry, max_message_size=1000) as server, RawClient(server.port, "/echo") as c:
        c.accept()
        burst = b"".join(frame(TEXT, f"m{i}".encode()) for i in range(5))
        c.send_raw(burst + violation + frame(TEXT, b"after"))
        texts, close_code = texts_and_close(events_until_close(c))
        assert texts == [f"m{i}" for i in range(5)]
        assert close_code == code


def test_slow_handler_does_not_hold_the_close_back(registry: wsgiws.Registry) -> None:
    """A handler busy past close_timeout: the close frame goes out at close_timeout."""
    gate = threading.Event()
    echo_namespace(registry, gate)
    try:
        with (
            serve(registry, close_timeout=0.5) as server,
            RawClient(server.port, "/echo") as c,
        ):
            c.accept()
            started = time.monotonic()
            c.send_raw(frame(TEXT, b"wait") + frame(0x3, b"bad"))
            event = c.next_event()
            assert isinstance(event, CloseConnection) and event.code == 1002
            assert time.monotonic() - started < TIMEOUT / 2
            gate.set()
    finally:
        gate.set()


# -- point 5: user callables off the loop thread ---------------------------------------------


def test_raising_origins_callable_answers_500_and_frees(
    registry: wsgiws.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """An ``origins`` callable that raises: 500 with a body, traceback logged, the
    connection freed (it used to get no answer and stay counted)."""

    def broken(origin: str | None) -> bool:
        raise RuntimeError("origins blew up")

    echo_namespace(registry)
    with serve(registry, origins=broken) as server, RawClient(server.port, "/echo") as c:
        status, _, body = c.rejection()
        assert status == 500
        assert body.strip()
        wait_for(lambda: server.connections == 0, message="connection still counted")
        assert any(
            r.exc_info is not None and "origins blew up" in str(r.exc_info[1])
            for r in caplog.records
        )
        # The loop is unharmed: the next client gets its answer too.
        with RawClient(server.port, "/echo") as again:
            assert again.rejection()[0] == 500


def test_slow_origins_callable_stalls_no_one_else(registry: wsgiws.Registry) -> None:
    """A slow ``origins`` callable (a database lookup) does not stall other clients."""
    gate = threading.Event()

    def slow(origin: str | None) -> bool:
        if origin == "https://slow.test":
            gate.wait(TIMEOUT)
        return True

    echo_namespace(registry)
    uri = ""
    results: list[object] = []

    def slow_client() -> None:
        try:
            with connect(uri, origin=Origin("https://slow.test"), open_timeout=TIMEOUT) as ws:
                ws.send("slow")
                results.append(ws.recv(TIMEOUT))
        except Exception as exc:  # reported by the assertion below
            results.append(exc)

    with serve(registry, origins=slow) as server:
        uri = f"ws://127.0.0.1:{server.port}/echo"
        thread = threading.Thread(target=slow_client)
        thread.start()
        try:
            with connect(uri, origin=Origin("https://fast.test"), open_timeout=3) as ws:
                ws.send("fast")
                assert ws.recv(3) == "fast"
            assert not results  # still waiting for its origin check
        finally:
            gate.set()
            thread.join(TIMEOUT)
    assert results == ["slow"]


def test_raising_handler_context_answers_500_and_frees(registry: wsgiws.Registry) -> None:
    """``handler_context`` that raises on entry: 500 for the handshake, freed."""

    def context() -> object:
        raise RuntimeError("no context")

    echo_namespace(registry)
    with (
        serve(registry, handler_context=context) as server,
        RawClient(server.port, "/echo") as c,
    ):
        status, _, _ = c.rejection()
        assert status == 500
        wait_for(lambda: server.connections == 0, message="connection still counted")


# -- point 6: shutdown race ----------------------------------------------------------


def test_handler_close_during_shutdown_spares_the_others(registry: wsgiws.Registry) -> None:
    """A connection whose handler closes while ``close()`` reaches it: every other
    client still gets 1001 at once, not 1006 after close_timeout.

    The race is made certain: the test holds the first connection's lock while the
    loop reaches it in the shutdown, then does what ``websocket.close()`` does under
    that lock (queue a close frame), and lets the loop go on.
    """
    echo_namespace(registry)
    close_timeout = 5.0
    with serve(registry, close_timeout=close_timeout) as server, contextlib.ExitStack() as stack:
        uri = f"ws://127.0.0.1:{server.port}/echo"
        clients: list[ClientConnection] = [
            stack.enter_context(connect(uri, open_timeout=TIMEOUT)) for _ in range(4)
        ]
        if True:
            for ws in clients:
                ws.send("up")
                assert ws.recv(TIMEOUT) == "up"
            first = server._open_sessions()[0]
            transport = first.transport
            loop_thread = server._thread
            assert loop_thread is not None and loop_thread.ident is not None
            closer = threading.Thread(target=server.close)
            with transport.lock:
                closer.start()

                def loop_blocked() -> bool:
                    frame_ = sys._current_frames().get(loop_thread.ident or 0)
                    return frame_ is not None and frame_.f_code.co_name == "_shutdown"

                wait_for(loop_blocked, message="the loop never reached the shutdown")
                # What close_threadsafe() does under the lock, from a handler.
                transport.proto.close(1000, "handler closed")
                transport._write_locked(transport.proto.data_to_send())
                transport._set_close(1000, "handler closed")
            server.loop.call_soon_threadsafe(transport._locally_closed)
            started = time.monotonic()
            codes = []
            for ws in clients:
                with pytest.raises(ConnectionClosed) as info:
                    ws.recv(TIMEOUT)
                assert info.value.rcvd is not None
                codes.append(info.value.rcvd.code)
            assert time.monotonic() - started < close_timeout / 2
            assert sorted(codes) == [1000, 1001, 1001, 1001]
            closer.join(TIMEOUT)


# -- point 8: descriptor exhaustion ------------------------------------------------------


FLOOD_SERVER = """
import logging, resource, sys
import wsgiws
logging.basicConfig(level=logging.ERROR, format="%(name)s %(message)s")
registry = wsgiws.Registry()

@wsgiws.Namespace(r"/echo", registry=registry)
class Echo(wsgiws.BaseWSClass):
    @classmethod
    def on_message(cls, websocket, message):
        websocket.send(message)

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (96, hard))
server = wsgiws.Server(port=0, registry=registry, handshake_timeout=60, backlog=512, workers=2)
server.start()
print(server.port, flush=True)
sys.stdin.readline()
server.close()
"""


def echo_round(clients: list[ClientConnection], tag: str) -> None:
    for i, ws in enumerate(clients):
        ws.send(f"{tag}-{i}")
        assert ws.recv(TIMEOUT) == f"{tag}-{i}"


def test_descriptor_flood_keeps_established_connections() -> None:
    """A flood of connections up to the server's descriptor limit: established clients
    keep echoing, accept() failures back off instead of spinning, and once
    descriptors free up the server accepts again."""
    with (
        subprocess.Popen(
            [sys.executable, "-c", FLOOD_SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as proc,
        contextlib.ExitStack() as stack,
    ):
        assert proc.stdout is not None and proc.stdin is not None and proc.stderr is not None
        port = int(proc.stdout.readline())
        uri = f"ws://127.0.0.1:{port}/echo"
        established = [stack.enter_context(connect(uri, open_timeout=TIMEOUT)) for _ in range(5)]
        flood = [
            stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT))
            for _ in range(300)  # bounded: far more than the server's 96 descriptors
        ]
        # Out of descriptors now: the established clients are still served.
        deadline = time.monotonic() + 2.0
        rounds = 0
        while time.monotonic() < deadline:
            echo_round(established, str(rounds))
            rounds += 1
        assert rounds >= 3
        # A newcomer waits in the backlog while the flood holds the descriptors.
        with pytest.raises(TimeoutError), connect(uri, open_timeout=1.0):
            pass
        for sock in flood:
            sock.close()
        # Descriptors free up as the server reads the flood's EOFs: it accepts again.
        give_up = time.monotonic() + TIMEOUT
        while True:
            try:
                with connect(uri, open_timeout=2.0) as newcomer:
                    newcomer.send("again")
                    assert newcomer.recv(TIMEOUT) == "again"
                break
            except TimeoutError:
                if time.monotonic() > give_up:
                    raise
        echo_round(established, "still")
        for ws in established:
            ws.close()
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(TIMEOUT) == 0
        stderr = proc.stderr.read()
    failures = [line for line in stderr.splitlines() if "accept failed" in line]
    # Backing off: a few failures per second of exhaustion, not a busy loop.
    assert 1 <= len(failures) <= 40, (len(failures), stderr[-2000:])
