"""The benchmark's C load generator (``bench/loadgen/wsgen.c``) against a real
wsgiws server: it counts every broadcast delivery and every handshake cycle, and
it counts what is wrong (frames of another type or round, missing deliveries, a
wrong ``Sec-WebSocket-Accept``) as errors rather than as results.

Compiled here with ``$CC`` (default ``cc``) ``-O2``, like ``bench/run.py`` does;
skipped where there is no C compiler or no epoll (not Linux).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import wsgiws

from .helpers import FACTOR, address, serve

SOURCE = Path(__file__).resolve().parent.parent / "bench" / "loadgen" / "wsgen.c"
COMPILER = shlex.split(os.environ.get("CC") or "cc")

pytestmark = [
    pytest.mark.skipif(not SOURCE.exists(), reason="no bench/ in this tree"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="wsgen uses epoll"),
    pytest.mark.skipif(not COMPILER or shutil.which(COMPILER[0]) is None, reason="no C compiler"),
]


@pytest.fixture(scope="module")
def wsgen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wsgen") / "wsgen"
    subprocess.run(
        [*COMPILER, "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror", "-o", str(out), str(SOURCE)],
        check=True,
        timeout=120 * FACTOR,
    )
    return out


def run_wsgen(wsgen: Path, url: str, **options: Any) -> tuple[int, list[dict[str, Any]], str]:
    """Run the generator to its end: exit status, its JSON lines, its stderr."""
    cmd = [str(wsgen), "--url", url]
    for key, value in options.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60 * FACTOR)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return proc.returncode, events, proc.stderr


def result_of(events: list[dict[str, Any]]) -> dict[str, Any]:
    assert [e["event"] for e in events] == ["measure_start", "measure_end", "result"], events
    return events[-1]


def broadcast_registry(group: str, mutate: str = "") -> wsgiws.Registry:
    """The bench servers' broadcast protocol (bench/servers/_common.py), or with
    ``mutate`` a server that gets it wrong in one way."""

    class Bcast(wsgiws.BaseWSClass):
        @classmethod
        def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
            if message == "join":
                websocket.join(group)
                websocket.send("joined")
                return
            assert isinstance(message, str) and message.startswith("go ")
            round_id, n, size = (int(x) for x in message.split()[1:])
            if mutate == "one-less":
                n -= 1
            for i in range(n):
                first = round_id + 1 if mutate == "round" and i == 3 else round_id
                payload = bytes((first,)) + i.to_bytes(4, "big") + b"x" * (size - 5)
                if mutate == "text":
                    wsgiws.group(group).send(payload.decode("latin-1"))
                else:
                    wsgiws.group(group).send(payload)

    registry = wsgiws.Registry()
    registry.add(r"/bcast", Bcast)
    return registry


@pytest.fixture
def bcast_url(request: pytest.FixtureRequest) -> Iterator[str]:
    mutate = getattr(request, "param", "")
    with serve(broadcast_registry(f"wsgen-{uuid.uuid4().hex}", mutate)) as server:
        host, port = address(server)
        yield f"ws://{host}:{port}/bcast"


@pytest.mark.parametrize("size", [64, 300])
def test_broadcast_counts_every_delivery(wsgen: Path, bcast_url: str, size: int) -> None:
    # 40 messages: past the 16-frame read batch, and not a multiple of it.
    code, events, stderr = run_wsgen(
        wsgen,
        bcast_url,
        scenario="broadcast",
        connections=25,
        size=size,
        bcast_count=40,
        bcast_warmup=3,
        duration=10,
    )
    assert code == 0, stderr
    r = result_of(events)
    assert r["scenario"] == "broadcast"
    assert r["generator"] == "wsgen (C)"
    assert r["deliveries"] == r["expected_deliveries"] == 25 * 40
    assert r["errors"] == 0
    assert r["timed_out"] is False
    assert 0 < r["first_delivery_us"] <= r["client_done_p50_us"] <= r["last_delivery_us"]
    assert r["deliveries_per_s"] > 0
    assert r["loadgen_cpu_s"] >= 0
    assert r["loadgen_reads"] < r["deliveries"]  # frames were read in batches


@pytest.mark.parametrize(
    ("bcast_url", "errors"),
    # text: every frame's first byte is 0x81, not 0x82;
    # round: message 3 of the round carries another round id.
    [("text", 10 * 20), ("round", 10)],
    indirect=["bcast_url"],
)
def test_broadcast_counts_wrong_frames_as_errors(wsgen: Path, bcast_url: str, errors: int) -> None:
    code, events, stderr = run_wsgen(
        wsgen,
        bcast_url,
        scenario="broadcast",
        connections=10,
        size=64,
        bcast_count=20,
        bcast_warmup=0,
        duration=10,
    )
    assert code == 0, stderr
    r = result_of(events)
    assert r["deliveries"] == 10 * 20  # all there, but not right
    assert r["errors"] == errors


@pytest.mark.parametrize("bcast_url", ["one-less"], indirect=True)
def test_broadcast_reports_missing_deliveries(wsgen: Path, bcast_url: str) -> None:
    code, events, stderr = run_wsgen(
        wsgen,
        bcast_url,
        scenario="broadcast",
        connections=10,
        size=64,
        bcast_count=20,
        bcast_warmup=0,
        duration=1,
    )
    assert code == 0, stderr
    r = result_of(events)
    assert r["timed_out"] is True
    # The 19 frames each client got are counted, though fewer than its wake-up mark.
    assert r["deliveries"] == 10 * 19
    assert r["errors"] == 10


def echo_registry() -> wsgiws.Registry:
    class Echo(wsgiws.BaseWSClass):
        @classmethod
        def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
            websocket.send(message)

    registry = wsgiws.Registry()
    registry.add(r"/echo", Echo)
    return registry


def test_handshake_cycles(wsgen: Path) -> None:
    with serve(echo_registry()) as server:
        host, port = address(server)
        code, events, stderr = run_wsgen(
            wsgen,
            f"ws://{host}:{port}/echo",
            scenario="handshake",
            parallel=8,
            count=120,
            warmup=8,
            duration=20,
        )
    assert code == 0, stderr
    r = result_of(events)
    assert r["scenario"] == "handshake"
    assert r["handshakes"] == 120
    assert r["errors"] == 0
    assert r["timed_out"] is False and r["truncated_by_deadline"] is False
    assert r["handshakes_per_s"] > 0
    assert 0 < r["latency"]["p50_us"] <= r["latency"]["p99_us"] <= r["latency"]["max_us"]


#: What Werkzeug writes after a flask-sock WebSocket ends.
HTTP_AFTER = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


@contextlib.contextmanager
def raw_server(behaviour: str) -> Iterator[int]:
    """A hand-written server, one connection at a time: ``wrong-accept`` answers
    the upgrade with a wrong Sec-WebSocket-Accept; ``close-then-http`` completes the
    handshake, answers the close frame with its own, then writes an HTTP response;
    ``http-no-close`` writes only the HTTP response. Each then closes the socket."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def read_until(conn: socket.socket, data: bytes, end: bytes) -> bytes:
        while end not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        return data

    def serve_forever() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                request = read_until(conn, b"", b"\r\n\r\n")
                key = re.search(rb"Sec-WebSocket-Key: (\S+)", request)
                accept = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
                if behaviour != "wrong-accept" and key:
                    digest = hashlib.sha1(key.group(1) + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
                    accept = base64.b64encode(digest.digest())
                conn.sendall(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
                )
                if behaviour == "wrong-accept":
                    continue
                with contextlib.suppress(OSError):
                    conn.recv(64)  # the client's close frame (8 bytes)
                    reply = b"\x88\x02\x03\xe8" if behaviour == "close-then-http" else b""
                    conn.sendall(reply + HTTP_AFTER)

    thread = threading.Thread(target=serve_forever, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        listener.close()


@pytest.fixture
def wrong_accept_port() -> Iterator[int]:
    with raw_server("wrong-accept") as port:
        yield port


@pytest.mark.parametrize(
    ("behaviour", "handshakes"), [("close-then-http", 6), ("http-no-close", 0)]
)
def test_handshake_ignores_bytes_after_the_close_frame_only(
    wsgen: Path, behaviour: str, handshakes: int
) -> None:
    with raw_server(behaviour) as port:
        code, events, stderr = run_wsgen(
            wsgen,
            f"ws://127.0.0.1:{port}/echo",
            scenario="handshake",
            parallel=1,
            count=6,
            warmup=0,
            duration=10,
        )
    assert code == 0, stderr
    r = result_of(events)
    assert r["handshakes"] == handshakes
    assert r["errors"] == 6 - handshakes
    if handshakes == 0:
        assert r["first_error"] == "a frame that is not valid"


def test_handshake_counts_a_wrong_accept_as_a_failed_cycle(
    wsgen: Path, wrong_accept_port: int
) -> None:
    code, events, stderr = run_wsgen(
        wsgen,
        f"ws://127.0.0.1:{wrong_accept_port}/echo",
        scenario="handshake",
        parallel=2,
        count=6,
        warmup=0,
        duration=10,
    )
    assert code == 0, stderr
    r = result_of(events)
    assert r["handshakes"] == 0
    assert r["errors"] == 6


def test_broadcast_stops_on_a_wrong_accept(wsgen: Path, wrong_accept_port: int) -> None:
    code, events, stderr = run_wsgen(
        wsgen,
        f"ws://127.0.0.1:{wrong_accept_port}/bcast",
        scenario="broadcast",
        connections=3,
        duration=5,
        connect_timeout=5,
    )
    assert code == 2
    assert events == []
    assert "wrong Sec-WebSocket-Accept" in stderr


@pytest.mark.parametrize(
    "url", ["ws://192.0.2.1:80/echo", "ws://example.com/echo", "ws://[2001:db8::1]:80/"]
)
def test_refuses_targets_off_loopback(wsgen: Path, url: str) -> None:
    code, events, stderr = run_wsgen(wsgen, url, scenario="handshake", count=1, duration=1)
    assert code == 2
    assert events == []
    assert stderr.startswith("wsgen: refusing non-loopback target")


def echo_registry_off_by_one() -> wsgiws.Registry:
    class Longer(wsgiws.BaseWSClass):
        @classmethod
        def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
            assert isinstance(message, bytes)
            websocket.send(message + b"!")

    registry = wsgiws.Registry()
    registry.add(r"/echo", Longer)
    return registry


@pytest.mark.parametrize(
    ("connections", "size", "window"), [(1, 64, 1), (4, 64, 8), (2, 300, 2), (1, 70_000, 1)]
)
def test_echo_counts_every_reply(wsgen: Path, connections: int, size: int, window: int) -> None:
    with serve(echo_registry(), max_message_size=2**20) as server:
        host, port = address(server)
        code, events, stderr = run_wsgen(
            wsgen,
            f"ws://{host}:{port}/echo",
            scenario="echo",
            connections=connections,
            size=size,
            window=window,
            count=50,
            warmup=5,
            duration=20,
        )
    assert code == 0, stderr
    r = result_of(events)
    assert r["scenario"] == "echo"
    assert r["sent"] == r["received"] == connections * 50
    assert r["errors"] == r["warmup_errors"] == 0
    assert r["timed_out"] is False and r["truncated_by_deadline"] is False
    assert r["mb_per_s"] == pytest.approx(r["msgs_per_s"] * size / 1e6)
    if connections == 1:
        lat = r["latency"]
        assert 0 < lat["p50_us"] <= lat["p90_us"] <= lat["p99_us"] <= lat["max_us"]
    else:
        assert r["latency"] is None


def test_echo_counts_replies_of_another_size_as_errors(wsgen: Path) -> None:
    with serve(echo_registry_off_by_one()) as server:
        host, port = address(server)
        code, events, stderr = run_wsgen(
            wsgen,
            f"ws://{host}:{port}/echo",
            scenario="echo",
            connections=2,
            size=64,
            window=4,
            count=30,
            warmup=3,
            duration=20,
        )
    assert code == 0, stderr
    r = result_of(events)
    assert r["received"] == 60
    assert r["warmup_errors"] == 6
    assert r["errors"] == 60 + 6
