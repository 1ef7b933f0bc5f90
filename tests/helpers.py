"""Shared test helpers: a deadline unit, a raw WebSocket client, a served registry."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    Event,
    RejectConnection,
    RejectData,
    Request,
)

import wsgiws

#: Scales every timeout, for slow machines: WSGIWS_TESTS_TIMEOUT_FACTOR=3.
FACTOR = float(os.environ.get("WSGIWS_TESTS_TIMEOUT_FACTOR", "1"))
#: A generous wait for something that should happen "at once".
TIMEOUT = 10.0 * FACTOR


def wait_for(condition: Callable[[], object], timeout: float = TIMEOUT, message: str = "") -> None:
    """Poll ``condition`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(message or f"condition not met within {timeout} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


@contextlib.contextmanager
def serve(registry: wsgiws.Registry, **options: Any) -> Iterator[wsgiws.Server]:
    """Run a Server for ``registry`` on a free loopback port for the ``with`` block."""
    options.setdefault("close_timeout", 2.0)
    server = wsgiws.Server(host="127.0.0.1", port=0, registry=registry, **options)
    server.start()
    try:
        yield server
    finally:
        server.close()


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
    length: int | None = None,
) -> bytes:
    """Encode a client frame by hand, so that tests can also send invalid ones."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


def free_port() -> int:
    """Return a loopback port that was free a moment ago (for servers that cannot bind 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    """Tell whether something accepts TCP connections on ``port``."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def stalled_client(port: int, path: str) -> socket.socket:
    """Open a WebSocket with a small receive window, for a client that never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window
    sock.settimeout(TIMEOUT)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, "closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def address(server: wsgiws.Server) -> tuple[str, int]:
    """The loopback address a test server listens on."""
    assert server.port is not None, "the server has no listening port"
    return ("127.0.0.1", server.port)


def close_payload(code: int, reason: bytes = b"") -> bytes:
    """The payload of a close frame."""
    return struct.pack("!H", code) + reason


class RawClient:
    """A blocking client over a real socket: a wsproto client parses what the
    server sends, and :meth:`send_raw` writes arbitrary bytes (valid or not)."""

    def __init__(
        self,
        port: int | None,
        path: str = "/",
        *,
        headers: list[tuple[bytes, bytes]] | None = None,
        subprotocols: list[str] | None = None,
        handshake: bool = True,
        sock: socket.socket | None = None,
    ) -> None:
        if sock is None:
            assert port is not None, "the server has no listening port"
            sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        else:
            sock.settimeout(TIMEOUT)
        self.sock = sock
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: list[Event] = []
        self.eof = False
        if handshake:
            self.sock.sendall(
                self.ws.send(
                    Request(
                        host=f"127.0.0.1:{port}",
                        target=path,
                        extra_headers=headers or [],
                        subprotocols=subprotocols or [],
                    )
                )
            )

    def next_event(self, timeout: float = TIMEOUT) -> Event:
        """Return the next event from the server; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.ws.events():
                self.events.append(event)
                return event
            if self.eof:
                raise EOFError("server closed the connection")
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise AssertionError("no event from the server in time") from None
            except ConnectionResetError:
                data = b""
            if not data:
                self.eof = True
                self.ws.receive_data(None)
            else:
                self.ws.receive_data(data)

    def accept(self) -> AcceptConnection:
        """Wait for the handshake to succeed."""
        event = self.next_event()
        assert isinstance(event, AcceptConnection), event
        return event

    def rejection(self) -> tuple[int, dict[bytes, bytes], bytes]:
        """Wait for a refused handshake: status, headers, body."""
        event = self.next_event()
        assert isinstance(event, RejectConnection), event
        body = b""
        while event.has_body:
            data = self.next_event()
            assert isinstance(data, RejectData)
            body += data.data
            if data.body_finished:
                break
        return event.status_code, {k.lower(): v for k, v in event.headers}, body

    def send(self, event: Event) -> None:
        """Send a wsproto event."""
        self.sock.sendall(self.ws.send(event))

    def send_raw(self, data: bytes) -> None:
        """Send bytes as they are."""
        self.sock.sendall(data)

    def read_until_eof(self, timeout: float = TIMEOUT) -> bytes:
        """Read raw bytes until the server closes the connection."""
        deadline = time.monotonic() + timeout
        chunks = []
        while True:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise AssertionError("server did not close the connection in time") from None
            except ConnectionResetError:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def live_processes() -> Iterator[tuple[int, int, int]]:
    """``(pid, parent pid, process group)`` of every live (non-zombie) process, from
    ``/proc``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after ")".
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z":
            yield int(entry.name), int(fields[1]), int(fields[2])


#: The head of the scripts :func:`run_script` runs: a namespace ``/pid`` whose
#: handler sends the serving process's pid.
SCRIPT_HEAD = """
import os, signal, sys, time
import wsgiws

@wsgiws.Namespace(r"/pid")
class Pid(wsgiws.BaseWSClass):
    @classmethod
    def on_connect(cls, websocket, path):
        websocket.send(str(os.getpid()))
"""


def run_script(body: str) -> subprocess.Popen[str]:
    """Run :data:`SCRIPT_HEAD` followed by ``body`` in a new interpreter, with pipes."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SCRIPT_HEAD) + textwrap.dedent(body)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
