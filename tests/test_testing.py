"""wsgiws.testing: the test client and the serve() helper, against a real server."""

from __future__ import annotations

import ssl
import threading

import pytest
import trustme

import wsgiws
from wsgiws.testing import Client, HandshakeRejected, connect, serve

from .helpers import TIMEOUT


@pytest.fixture
def echo_registry(registry: wsgiws.Registry) -> wsgiws.Registry:
    """A registry with an echo endpoint and a few endpoints that misbehave on purpose."""
    closed: list[tuple[int | None, str]] = []
    closed_event = threading.Event()

    @registry.namespace(r"/echo")
    class Echo(wsgiws.BaseWSClass):
        @classmethod
        def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
            if isinstance(message, str) and message == "close me":
                websocket.close(4001, "as asked")
            else:
                websocket.send(message)

        @classmethod
        def on_close(cls, websocket: wsgiws.WebSocket) -> None:
            closed.append((websocket.close_code, websocket.close_reason))
            closed_event.set()

    @registry.namespace(r"/headers")
    class Headers(wsgiws.BaseWSClass):
        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            websocket.send_json(
                {
                    "origin": websocket.headers.get("origin"),
                    "x-test": websocket.headers.get("x-test"),
                    "query": dict(websocket.query),
                }
            )

    @registry.namespace(r"/private")
    class Private(wsgiws.BaseWSClass):
        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            raise wsgiws.Reject(reason="members only", status=403)

    registry.closed = closed  # type: ignore[attr-defined]
    registry.closed_event = closed_event  # type: ignore[attr-defined]
    return registry


def test_text_and_binary_round_trip(echo_registry: wsgiws.Registry) -> None:
    """send() and recv() carry text as str and binary as bytes, large ones included."""
    with serve(echo_registry) as server, connect(server, "/echo") as client:
        assert isinstance(client, Client)
        client.send("héllo")
        assert client.recv() == "héllo"
        payload = bytes(range(256)) * 1024
        client.send(payload)
        assert client.recv() == payload


def test_json_helpers(echo_registry: wsgiws.Registry) -> None:
    """send_json() and recv_json() serialise and parse JSON."""
    with serve(echo_registry) as server, connect(server, "/echo") as client:
        client.send_json({"a": [1, 2, None]})
        assert client.recv_json() == {"a": [1, 2, None]}


def test_client_close_reaches_the_handler(echo_registry: wsgiws.Registry) -> None:
    """close() sends its code and reason; the handler's on_close sees them."""
    with serve(echo_registry) as server:
        client = connect(server, "/echo")
        client.close(4100, "done here")
        assert client.closed
        assert client.close_code == 4100
        assert echo_registry.closed_event.wait(TIMEOUT)  # type: ignore[attr-defined]
        assert echo_registry.closed == [(4100, "done here")]  # type: ignore[attr-defined]
        client.close()  # a second close does nothing


def test_server_close_is_reported(echo_registry: wsgiws.Registry) -> None:
    """A close started by the server ends recv() with ConnectionClosed and its code."""
    with serve(echo_registry) as server, connect(server, "/echo") as client:
        client.send("close me")
        with pytest.raises(wsgiws.ConnectionClosed) as info:
            client.recv()
        assert (info.value.code, info.value.reason) == (4001, "as asked")
        assert (client.close_code, client.close_reason) == (4001, "as asked")
        with pytest.raises(wsgiws.ConnectionClosed):
            client.send("too late")


def test_iteration_ends_at_close(echo_registry: wsgiws.Registry) -> None:
    """Iterating over a client yields messages until the connection closes."""
    with serve(echo_registry) as server, connect(server, "/echo") as client:
        for text in ("one", "two", "close me"):
            client.send(text)
        assert list(client) == ["one", "two"]
        assert client.close_code == 4001


def test_server_shutdown_closes_with_1001(echo_registry: wsgiws.Registry) -> None:
    """Closing the server reaches the client as close code 1001."""
    with serve(echo_registry) as server:
        client = connect(server, "/echo")
    with pytest.raises(wsgiws.ConnectionClosed):
        client.recv()
    assert client.close_code == 1001
    assert not server.running
    client.close()


def test_recv_times_out(echo_registry: wsgiws.Registry) -> None:
    """recv() raises TimeoutError when nothing arrives in time, and the client stays usable."""
    with serve(echo_registry) as server, connect(server, "/echo") as client:
        with pytest.raises(TimeoutError):
            client.recv(timeout=0.2)
        client.send("still here")
        assert client.recv() == "still here"


def test_pings_are_answered_while_waiting(echo_registry: wsgiws.Registry) -> None:
    """A client waiting in recv() answers the server's pings, so keepalive keeps it open."""
    with (
        serve(echo_registry, ping_interval=0.1, ping_timeout=0.3) as server,
        connect(server, "/echo") as client,
    ):
        with pytest.raises(TimeoutError):
            client.recv(timeout=1.5)  # several ping periods
        client.send("alive")
        assert client.recv() == "alive"


def test_headers_origin_and_query_are_sent(echo_registry: wsgiws.Registry) -> None:
    """Extra headers, the Origin header and the query string reach the handler."""
    with (
        serve(echo_registry, origins=["http://example.test"]) as server,
        connect(
            server,
            "/headers?room=a&room=b",
            headers=[("X-Test", "yes")],
            origin="http://example.test",
        ) as client,
    ):
        assert client.recv_json() == {
            "origin": "http://example.test",
            "x-test": "yes",
            "query": {"room": "b"},
        }


def test_subprotocol_is_negotiated(echo_registry: wsgiws.Registry) -> None:
    """The subprotocol the server selects is on the client."""
    with (
        serve(echo_registry, subprotocols=["chat.v2", "chat.v1"]) as server,
        connect(server, "/echo", subprotocols=["chat.v1"]) as client,
    ):
        assert client.subprotocol == "chat.v1"


def test_rejections_raise_with_status_and_body(echo_registry: wsgiws.Registry) -> None:
    """A refused handshake raises HandshakeRejected with the HTTP status and body."""
    with serve(echo_registry) as server:
        with pytest.raises(HandshakeRejected) as info:
            connect(server, "/private")
        assert info.value.status == 403
        assert b"members only" in info.value.body
        assert "403" in str(info.value)
        with pytest.raises(HandshakeRejected) as info:
            connect(server, "/nowhere")
        assert info.value.status == 404


def test_targets_address_url_and_middleware(echo_registry: wsgiws.Registry) -> None:
    """connect() takes a port, a (host, port) pair, a ws:// URL or a middleware."""
    with serve(echo_registry) as server:
        port = server.port
        assert port is not None
        targets: list[object] = [port, ("127.0.0.1", port), f"ws://127.0.0.1:{port}/echo"]
        for target in targets:
            path = "/" if isinstance(target, str) else "/echo"
            with connect(target, path) as client:  # type: ignore[arg-type]
                client.send("x")
                assert client.recv() == "x"

    def app(environ: object, start_response: object) -> list[bytes]:
        return []

    with (
        wsgiws.WebSocketMiddleware(app, port=0, registry=echo_registry) as middleware,
        connect(middleware, "/echo") as client,
    ):
        client.send("via middleware")
        assert client.recv() == "via middleware"


def test_bad_targets_are_refused(echo_registry: wsgiws.Registry) -> None:
    """A middleware without a port of its own, an http:// URL and other values are refused."""

    def app(environ: object, start_response: object) -> list[bytes]:
        return []

    with (
        wsgiws.WebSocketMiddleware(app, registry=echo_registry) as middleware,
        pytest.raises(ValueError, match="same-port"),
    ):
        connect(middleware, "/echo")
    with pytest.raises(ValueError, match="ws://"):
        connect("http://127.0.0.1:1/echo")
    with pytest.raises(TypeError):
        connect(True)


def test_serve_uses_the_default_registry() -> None:
    """serve() without a registry serves the default one, on a free loopback port."""
    with serve() as server:
        assert server.registry is wsgiws.default_registry
        assert server.host == "127.0.0.1"
        assert server.port
        assert server.running
    assert not server.running


def test_tls(echo_registry: wsgiws.Registry) -> None:
    """connect() speaks TLS to a server with a certificate, by context or by wss:// URL."""
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    with serve(echo_registry, ssl_context=server_context) as server:
        with connect(server, "/echo", ssl_context=client_context) as client:
            client.send("secret")
            assert client.recv() == "secret"
        with connect(f"wss://127.0.0.1:{server.port}/echo", ssl_context=client_context) as client:
            client.send(b"bytes")
            assert client.recv() == b"bytes"
        with pytest.raises(ssl.SSLError):
            connect(f"wss://127.0.0.1:{server.port}/echo")  # the test CA is not trusted
