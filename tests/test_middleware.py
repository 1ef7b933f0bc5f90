"""``WebSocketMiddleware`` in process: routing of requests, fallbacks, thread release.

The real-server matrix lives in ``tests/servers/``; these tests run a wsgiref server
on a thread of the test process, so that they can watch the WSGI call itself.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import socketserver
import ssl
import threading
from collections.abc import Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from websockets.sync.client import connect

import wsgiws
from tests.helpers import TIMEOUT, wait_for
from wsgiws import handoff
from wsgiws.middleware import is_websocket_upgrade, request_headers, request_target

UPGRADE = {
    "REQUEST_METHOD": "GET",
    "PATH_INFO": "/ws",
    "QUERY_STRING": "",
    "HTTP_HOST": "127.0.0.1",
    "HTTP_UPGRADE": "websocket",
    "HTTP_CONNECTION": "keep-alive, Upgrade",
    "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ==",
    "HTTP_SEC_WEBSOCKET_VERSION": "13",
}


def http_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """A WSGI app that names the path it got."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"app {environ['PATH_INFO']}".encode()]


class Recorder:
    """A ``start_response`` that keeps what it was given."""

    def __init__(self) -> None:
        self.status = ""
        self.headers: list[tuple[str, str]] = []

    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        self.status, self.headers = status, headers
        return lambda data: None


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """wsgiref with a thread per request."""

    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    """wsgiref's handler without access log lines on stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def wsgiref_serving(app: Any) -> Iterator[int]:
    """Serve ``app`` with a threaded wsgiref server on a free port."""
    server = make_server(
        "127.0.0.1", 0, app, server_class=ThreadingWSGIServer, handler_class=QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


class Timed:
    """Wrap a WSGI app and set an event when a call to it returns."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.returned = threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        try:
            return self.app(environ, start_response)  # type: ignore[no-any-return]
        finally:
            if environ.get("PATH_INFO") == "/ws":
                self.returned.set()


def test_upgrade_detection() -> None:
    """Only a GET with Upgrade: websocket and a Connection upgrade token is an upgrade."""
    assert is_websocket_upgrade(UPGRADE)
    assert not is_websocket_upgrade({**UPGRADE, "REQUEST_METHOD": "POST"})
    assert not is_websocket_upgrade({**UPGRADE, "HTTP_UPGRADE": "h2c"})
    assert not is_websocket_upgrade({**UPGRADE, "HTTP_CONNECTION": "keep-alive"})
    assert not is_websocket_upgrade({"REQUEST_METHOD": "GET", "PATH_INFO": "/ws"})


def test_request_target_and_headers_are_rebuilt_from_the_environ() -> None:
    """The raw URI wins; otherwise the path is re-quoted and the query appended."""
    assert request_target({**UPGRADE, "RAW_URI": "/ws?a=%20"}) == "/ws?a=%20"
    environ = {**UPGRADE, "SCRIPT_NAME": "/app", "PATH_INFO": "/w s", "QUERY_STRING": "x=1"}
    assert request_target(environ) == "/app/w%20s?x=1"
    headers = dict(request_headers({**UPGRADE, "CONTENT_TYPE": "text/plain"}))
    assert headers["sec-websocket-key"] == UPGRADE["HTTP_SEC_WEBSOCKET_KEY"]
    assert headers["content-type"] == "text/plain"


def test_plain_requests_and_unknown_paths_go_to_the_app(registry: wsgiws.Registry) -> None:
    """HTTP requests and upgrades to paths with no namespace reach the app untouched."""

    @registry.namespace(r"/ws")
    class Handler(wsgiws.BaseWSClass):
        pass

    with wsgiws.WebSocketMiddleware(http_app, registry=registry) as middleware:
        assert middleware.port is None
        recorder = Recorder()
        assert list(middleware({"PATH_INFO": "/x", "REQUEST_METHOD": "GET"}, recorder)) == [
            b"app /x"
        ]
        assert list(middleware({**UPGRADE, "PATH_INFO": "/other"}, recorder)) == [b"app /other"]
        assert recorder.status == "200 OK"


def test_handoff_off_leaves_upgrades_to_the_app(registry: wsgiws.Registry) -> None:
    """With handoff="off", even a matching upgrade goes to the app."""

    @registry.namespace(r"/ws")
    class Handler(wsgiws.BaseWSClass):
        pass

    with wsgiws.WebSocketMiddleware(http_app, registry=registry, handoff="off") as middleware:
        assert list(middleware(dict(UPGRADE), Recorder())) == [b"app /ws"]


def test_wrong_handoff_value_is_refused() -> None:
    """An unknown handoff mode raises ValueError naming it."""
    with pytest.raises(ValueError, match="handoff"):
        wsgiws.WebSocketMiddleware(http_app, handoff="sometimes")  # type: ignore[arg-type]


@pytest.mark.parametrize("port", [None, 0])
def test_server_without_socket_answers_501(registry: wsgiws.Registry, port: int | None) -> None:
    """A server exposing no socket (waitress, mod_wsgi) gets a 501 naming the separate port."""

    @registry.namespace(r"/ws")
    class Handler(wsgiws.BaseWSClass):
        pass

    with wsgiws.WebSocketMiddleware(http_app, registry=registry, port=port) as middleware:
        recorder = Recorder()
        body = b"".join(middleware({**UPGRADE, "SERVER_SOFTWARE": "mod_wsgi"}, recorder))
    assert recorder.status == "501 Not Implemented"
    assert b"mod_wsgi does not expose the client socket" in body
    if port is None:
        assert b"pass port=N" in body
    else:
        assert f"connect to port {middleware.port}".encode() in body


def test_tls_socket_is_not_taken(registry: wsgiws.Registry) -> None:
    """TLS terminated by the WSGI server cannot be handed over: 501, the socket untouched."""

    @registry.namespace(r"/ws")
    class Handler(wsgiws.BaseWSClass):
        pass

    context = ssl.create_default_context()
    with (
        socket.socket() as raw,
        context.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False) as tls,
        wsgiws.WebSocketMiddleware(http_app, registry=registry) as middleware,
    ):
        recorder = Recorder()
        body = b"".join(middleware({**UPGRADE, "gunicorn.socket": tls}, recorder))
        assert recorder.status == "501 Not Implemented"
        assert b"terminates TLS itself" in body
        assert tls.fileno() >= 0


def test_wsgi_call_returns_before_on_connect_finishes(registry: wsgiws.Registry) -> None:
    """After the hand-off the WSGI thread returns while on_connect is still running."""
    release = threading.Event()

    @registry.namespace(r"/ws")
    class Slow(wsgiws.BaseWSClass):
        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            release.wait(TIMEOUT)

        @classmethod
        def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
            websocket.send(message)

    with wsgiws.WebSocketMiddleware(http_app, registry=registry) as middleware:
        timed = Timed(middleware)
        with wsgiref_serving(timed) as port:
            opened: list[str] = []

            def client() -> None:
                with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=TIMEOUT) as ws:
                    ws.send("ping")
                    opened.append(str(ws.recv(timeout=TIMEOUT)))

            thread = threading.Thread(target=client)
            thread.start()
            try:
                assert timed.returned.wait(TIMEOUT), "the WSGI call did not return"
                assert opened == []  # the 101 waits for on_connect
            finally:
                release.set()
                thread.join(TIMEOUT)
            assert opened == ["ping"]


def test_park_holds_the_request_thread_until_the_websocket_closes(
    registry: wsgiws.Registry,
) -> None:
    """With handoff="park" the WSGI call returns only once the WebSocket has closed."""

    @registry.namespace(r"/ws")
    class Echo(wsgiws.BaseWSClass):
        @classmethod
        def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
            websocket.send(message)

    with wsgiws.WebSocketMiddleware(http_app, registry=registry, handoff="park") as middleware:
        timed = Timed(middleware)
        with wsgiref_serving(timed) as port:
            with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=TIMEOUT) as ws:
                ws.send("parked")
                assert ws.recv(timeout=TIMEOUT) == "parked"
                assert not timed.returned.is_set()
                ws.close(4005)
            assert ws.close_code == 4005
            assert timed.returned.wait(TIMEOUT), "the parked WSGI call did not return"


def test_take_over_redirects_the_servers_descriptor() -> None:
    """After take_over the server's fd sees EOF and EPIPE; the loop's copy is the peer."""
    server_side, client_side = socket.socketpair()
    with server_side, client_side:
        reader = server_side.makefile("rb")
        client_side.sendall(b"buffered")
        assert reader.peek(8)[:8] == b"buffered"  # the server's reader read ahead
        taken = handoff.take_over({"wsgi.input": reader})
        with taken.sock:
            assert taken.redirected
            assert taken.initial == b"buffered"
            assert server_side.recv(10) == b""  # the server now reads end-of-file
            with pytest.raises(BrokenPipeError):
                server_side.sendall(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
            taken.sock.sendall(b"to client")
            assert client_side.recv(100) == b"to client"
        reader.close()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc (Linux)")
def test_no_descriptor_is_leaked(registry: wsgiws.Registry) -> None:
    """After 30 WebSockets opened and closed, the process holds no extra descriptor."""

    @registry.namespace(r"/ws")
    class Echo(wsgiws.BaseWSClass):
        @classmethod
        def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
            websocket.send(message)

    def count() -> int:
        return len(os.listdir("/proc/self/fd"))

    with (
        wsgiws.WebSocketMiddleware(http_app, registry=registry) as middleware,
        wsgiref_serving(middleware) as port,
    ):
        with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=TIMEOUT):
            pass  # warm up: the first connection creates the worker threads
        wait_for(lambda: middleware.server.connections == 0)
        before = count()
        for i in range(30):
            with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=TIMEOUT) as ws:
                ws.send(f"m{i}")
                assert ws.recv(timeout=TIMEOUT) == f"m{i}"
        wait_for(lambda: middleware.server.connections == 0 and count() <= before)


def test_handshake_errors_are_answered_by_the_loop(registry: wsgiws.Registry) -> None:
    """On the same port, a wrong version gets 426 and a refusing on_connect its status."""

    @registry.namespace(r"/ws")
    class Picky(wsgiws.BaseWSClass):
        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            if websocket.query.get("token") != "ok":
                raise wsgiws.Reject(reason="bad token", status=401)

    with (
        wsgiws.WebSocketMiddleware(http_app, registry=registry) as middleware,
        wsgiref_serving(middleware) as port,
    ):
        headers = {
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        }
        for target, version, status in [
            ("/ws?token=ok", "8", 426),
            ("/ws?token=no", "13", 401),
        ]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
            try:
                conn.request("GET", target, headers={**headers, "Sec-WebSocket-Version": version})
                response = conn.getresponse()
                body = response.read()
            finally:
                conn.close()
            assert response.status == status, body
            if status == 426:
                assert response.getheader("Sec-WebSocket-Version") == "13"
            else:
                assert b"bad token" in body
        with connect(f"ws://127.0.0.1:{port}/ws?token=ok", open_timeout=TIMEOUT) as ws:
            ws.close(4006)
        assert ws.close_code == 4006


def test_same_port_environ_is_a_complete_wsgi_environ(registry: wsgiws.Registry) -> None:
    """The environ a same-port handler sees has an empty wsgi.input and wsgi.errors."""
    seen: dict[str, Any] = {}

    @registry.namespace(r"/env")
    class Env(wsgiws.BaseWSClass):
        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            environ = websocket.environ
            seen.update(
                body=environ["wsgi.input"].read(),
                errors=hasattr(environ["wsgi.errors"], "write"),
                path=environ["PATH_INFO"],
                query=environ["QUERY_STRING"],
                sockets=[k for k in environ if k.endswith(".socket")],
            )

    with (
        wsgiws.WebSocketMiddleware(http_app, registry=registry) as middleware,
        wsgiref_serving(middleware) as port,
        connect(f"ws://127.0.0.1:{port}/env?x=1", open_timeout=TIMEOUT),
    ):
        pass
    assert seen == {"body": b"", "errors": True, "path": "/env", "query": "x=1", "sockets": []}
