"""wss:// with a real TLS stack: certificates made by trustme for 127.0.0.1."""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Iterator

import pytest
import trustme
from websockets.sync.client import connect

import wsgiws

from .helpers import TIMEOUT, address, serve


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def contexts(ca: trustme.CA) -> Iterator[tuple[ssl.SSLContext, ssl.SSLContext]]:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client_context)
    yield server_context, client_context


def echo(registry: wsgiws.Registry) -> None:
    @wsgiws.Namespace(r"/", registry=registry)
    class Echo(wsgiws.BaseWSClass):
        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            websocket.send(websocket.environ["wsgi.url_scheme"])

        @classmethod
        def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
            websocket.send(message)


def test_wss_echo_small_and_large(
    registry: wsgiws.Registry, contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    """Messages small and larger than a TLS record round-trip over wss://."""
    echo(registry)
    server_context, client_context = contexts
    with (
        serve(registry, ssl_context=server_context, max_message_size=4 * 2**20) as server,
        connect(f"wss://127.0.0.1:{server.port}/", ssl=client_context, max_size=None) as ws,
    ):
        assert ws.recv(TIMEOUT) == "https"
        for size in (1, 20_000, 3 * 2**20):
            payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
            ws.send(payload)
            assert ws.recv(TIMEOUT) == payload


def test_wss_burst_of_large_and_small_messages(
    registry: wsgiws.Registry, contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    """Large messages (received into their own buffers, replies written as header and
    payload) and small ones, sent in a burst over wss://, echo in order."""
    echo(registry)
    server_context, client_context = contexts
    sizes = [300_000, 5, 2**20, 70_000, 1, 65_536, 3]
    payloads = [bytes([i % 256]) * size for i, size in enumerate(sizes)]
    with (
        serve(registry, ssl_context=server_context, max_message_size=2 * 2**20) as server,
        connect(f"wss://127.0.0.1:{server.port}/", ssl=client_context, max_size=None) as ws,
    ):
        assert ws.recv(TIMEOUT) == "https"
        for i, payload in enumerate(payloads):
            ws.send(payload)
            ws.send(str(i))
        for i, payload in enumerate(payloads):
            assert ws.recv(TIMEOUT) == payload
            assert ws.recv(TIMEOUT) == str(i)


def test_plaintext_client_on_tls_port_harms_no_one(
    registry: wsgiws.Registry, contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    """A client speaking plain HTTP to the TLS port is dropped; TLS clients go on."""
    echo(registry)
    server_context, client_context = contexts
    with (
        serve(registry, ssl_context=server_context) as server,
        connect(f"wss://127.0.0.1:{server.port}/", ssl=client_context) as ws,
    ):
        assert ws.recv(TIMEOUT) == "https"
        with socket.create_connection(address(server)) as plain:
            plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            plain.settimeout(TIMEOUT)
            with contextlib.suppress(ConnectionResetError):
                while plain.recv(4096):
                    pass  # the server closes the connection
        ws.send("still here")
        assert ws.recv(TIMEOUT) == "still here"


def test_ssl_context_type_is_checked() -> None:
    """A wrong ssl_context is a readable TypeError."""
    with pytest.raises(TypeError, match="ssl_context"):
        wsgiws.Server(ssl_context="cert.pem")  # type: ignore[arg-type]
