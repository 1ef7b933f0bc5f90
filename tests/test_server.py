"""The server over real sockets: handshake answers, the handler model, limits.

Clients are the ``websockets`` library (interop) and :class:`tests.helpers.RawClient`
(raw bytes, for what a well-behaved client never sends).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin
from wsproto.events import CloseConnection, TextMessage

import wsgiws

from .helpers import TIMEOUT, RawClient, address, close_payload, frame, serve, wait_for


def url(server: wsgiws.Server, path: str = "/") -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


class Recorder:
    """Collects what handlers saw, with an event per close for awaiting."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.closes: list[tuple[int | None, str]] = []
        self.closed = threading.Event()
        self.lock = threading.Lock()

    def add(self, name: str, value: Any = None) -> None:
        with self.lock:
            self.calls.append((name, value))

    def close(self, websocket: wsgiws.WebSocket) -> None:
        with self.lock:
            self.closes.append((websocket.close_code, websocket.close_reason))
        self.closed.set()


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


def echo(registry: wsgiws.Registry, rec: Recorder, pattern: str = r"/echo") -> None:
    @wsgiws.Namespace(pattern, registry=registry)
    class Echo(wsgiws.BaseWSClass):
        @classmethod
        def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
            websocket.send(message)

        @classmethod
        def on_close(cls, websocket: wsgiws.WebSocket) -> None:
            rec.close(websocket)


# -- handshake ---------------------------------------------------------------------


def test_echo_with_websockets_client(registry: wsgiws.Registry, rec: Recorder) -> None:
    """Text and binary messages round-trip with the websockets library's client."""
    echo(registry, rec)
    with serve(registry) as server, connect(url(server, "/echo")) as ws:
        ws.send("hello")
        assert ws.recv(TIMEOUT) == "hello"
        ws.send(b"\x00\xff")
        assert ws.recv(TIMEOUT) == b"\x00\xff"
        ws.send("x" * 500_000)
        assert ws.recv(TIMEOUT) == "x" * 500_000


def test_every_accepted_connection_has_nodelay(registry: wsgiws.Registry, rec: Recorder) -> None:
    """TCP_NODELAY holds on every connection, the first (set on it, and checked to
    be inherited from the listener) and the later ones (inherited, not set)."""
    echo(registry, rec)
    with serve(registry) as server, contextlib.ExitStack() as stack:
        clients = [stack.enter_context(connect(url(server, "/echo"))) for _ in range(3)]
        for ws in clients:
            ws.send("x")
            assert ws.recv(TIMEOUT) == "x"
        with server._lock:
            sessions = list(server._sockets)
        assert len(sessions) == 3
        for session in sessions:
            sock = session.transport.sock
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            assert sock.getblocking() is False


def test_unknown_path_gets_404(registry: wsgiws.Registry, rec: Recorder) -> None:
    """A path no namespace matches is refused with 404 (fullmatch, not search)."""
    echo(registry, rec)
    with serve(registry) as server:
        for path in ("/nope", "/echo/extra", "/x/echo"):
            with pytest.raises(InvalidStatus) as info, connect(url(server, path)):
                pass
            assert info.value.response.status_code == 404
            assert b"no WebSocket endpoint" in info.value.response.body


def test_query_string_is_not_part_of_the_match(registry: wsgiws.Registry) -> None:
    """The namespace matches the path; the query string is parsed separately."""
    seen: dict[str, Any] = {}

    @wsgiws.Namespace(r"/room/(?P<name>\w+)", registry=registry)
    class Room(wsgiws.BaseWSClass):
        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            seen.update(
                path=path,
                name=websocket.match.group("name"),
                query=dict(websocket.query),
                tags=websocket.query.getlist("tag"),
                agent=websocket.headers["USER-AGENT"],
                cookies=websocket.cookies,
                remote=websocket.remote_addr[0],
                environ_path=websocket.environ["PATH_INFO"],
                environ_query=websocket.environ["QUERY_STRING"],
            )

    with (
        serve(registry) as server,
        connect(
            url(server, "/room/lobby?user=ann&tag=a&tag=b"),
            additional_headers={"Cookie": 'sessionid=abc; bad; theme="dark"'},
            user_agent_header="test-agent",
        ),
    ):
        pass
    assert seen == {
        "path": "/room/lobby",
        "name": "lobby",
        "query": {"user": "ann", "tag": "b"},
        "tags": ["a", "b"],
        "agent": "test-agent",
        "cookies": {"sessionid": "abc", "theme": "dark"},
        "remote": "127.0.0.1",
        "environ_path": "/room/lobby",
        "environ_query": "user=ann&tag=a&tag=b",
    }


def test_wrong_version_gets_426_over_the_wire(registry: wsgiws.Registry, rec: Recorder) -> None:
    """A wrong Sec-WebSocket-Version gets 426 naming version 13."""
    echo(registry, rec)
    with (
        serve(registry) as server,
        socket.create_connection(address(server)) as sock,
    ):
        sock.sendall(
            b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 7\r\n\r\n"
        )
        sock.settimeout(TIMEOUT)
        response = b""
        while chunk := sock.recv(4096):
            response += chunk
    assert response.startswith(b"HTTP/1.1 426 ")
    assert b"Sec-WebSocket-Version: 13" in response


def test_plain_http_request_gets_400(registry: wsgiws.Registry) -> None:
    """A browser opening the WebSocket port gets a readable 400, not a hang."""
    with (
        serve(registry) as server,
        socket.create_connection(address(server)) as sock,
    ):
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(TIMEOUT)
        response = sock.recv(4096)
    assert response.startswith(b"HTTP/1.1 400 ")
    assert b"Upgrade" in response


def test_handshake_timeout_drops_silent_client(registry: wsgiws.Registry) -> None:
    """A client that never finishes its request is disconnected after handshake_timeout."""
    with (
        serve(registry, handshake_timeout=0.2) as server,
        RawClient(server.port, handshake=False) as c,
    ):
        c.send_raw(b"GET / HTTP/1.1\r\n")
        assert c.read_until_eof() == b""


def test_origin_check(registry: wsgiws.Registry, rec: Recorder) -> None:
    """A refused Origin gets 403; an allowed one connects."""
    echo(registry, rec)
    with serve(registry, origins=["https://good.example"]) as server:
        with (
            pytest.raises(InvalidStatus) as info,
            connect(url(server, "/echo"), origin=Origin("https://evil.example")),
        ):
            pass
        assert info.value.response.status_code == 403
        with connect(url(server, "/echo"), origin=Origin("https://GOOD.example")) as ws:
            ws.send("ok")
            assert ws.recv(TIMEOUT) == "ok"
        with pytest.raises(InvalidStatus), connect(url(server, "/echo")):
            pass  # no Origin header and "" not listed


def test_subprotocol_negotiation(registry: wsgiws.Registry) -> None:
    """The first server subprotocol the client offers is selected; on_connect may override."""
    chosen: list[str | None] = []

    @wsgiws.Namespace(r"/", registry=registry)
    class Proto(wsgiws.BaseWSClass):
        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            chosen.append(websocket.subprotocol)
            if "override" in websocket.subprotocols:
                websocket.subprotocol = "override"

    with serve(registry, subprotocols=["v2", "v1"]) as server:
        with connect(url(server), subprotocols=["v1", "v2"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "v2"
        with connect(url(server), subprotocols=["v1", "override"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "override"
        with connect(url(server)) as ws:
            assert ws.subprotocol is None
    assert chosen == ["v2", "v1", None]


# -- protocol violations over the wire ------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(0x1, b"x", rsv=4), 1002),
        (frame(0x3, b"x"), 1002),
        (frame(0x1, b"\xc3\x28"), 1007),
        (frame(0x9, b"x" * 126), 1002),
        (frame(0x8, close_payload(1005)), 1002),
        (frame(0x1, b"x", mask=False), 1002),
        (frame(0x2, b"x" * 1025), 1009),
    ],
    ids=["rsv", "opcode", "utf8", "big-ping", "close-1005", "unmasked", "too-big"],
)
def test_violation_closes_with_code_and_calls_on_close(
    registry: wsgiws.Registry, rec: Recorder, data: bytes, code: int
) -> None:
    """A protocol violation closes with its RFC 6455 code; on_close sees the code."""
    echo(registry, rec)
    with (
        serve(registry, max_message_size=1024) as server,
        RawClient(server.port, "/echo") as c,
    ):
        c.accept()
        c.send_raw(data)
        event = c.next_event()
        assert isinstance(event, CloseConnection)
        assert event.code == code
        assert c.read_until_eof() == b""  # the server closes the TCP connection
        assert rec.closed.wait(TIMEOUT)
    assert rec.closes == [(code, rec.closes[0][1])]


def test_violation_harms_no_other_connection(registry: wsgiws.Registry, rec: Recorder) -> None:
    """One client's protocol error leaves another client's connection working."""
    echo(registry, rec)
    with serve(registry) as server, connect(url(server, "/echo")) as good:
        with RawClient(server.port, "/echo") as bad:
            bad.accept()
            bad.send_raw(frame(0x1, b"\xff"))
            assert isinstance(bad.next_event(), CloseConnection)
        good.send("still here")
        assert good.recv(TIMEOUT) == "still here"


def test_fragments_with_ping_over_the_wire(registry: wsgiws.Registry, rec: Recorder) -> None:
    """Fragments and an interleaved ping: pong first, then the echoed whole message."""
    echo(registry, rec)
    with serve(registry) as server, RawClient(server.port, "/echo") as c:
        c.accept()
        c.send_raw(frame(0x1, b"ab", fin=False) + frame(0x9, b"p") + frame(0x0, b"cd"))
        pong = c.next_event()
        assert type(pong).__name__ == "Pong"
        message = c.next_event()
        assert isinstance(message, TextMessage)
        assert message.data == "abcd"


# -- handler model -----------------------------------------------------------------


def test_mixins_run_right_to_left_each_once(registry: wsgiws.Registry, rec: Recorder) -> None:
    """For H(M1, M2, BaseWSClass): M2, M1, then H, each defining class once, cls is H."""

    class M1(wsgiws.BaseMixin):
        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            rec.add("M1.connect", cls.__name__)

        @classmethod
        def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> str | None:
            rec.add("M1.message", message)
            return f"{message!s}+M1"

    class M2(wsgiws.BaseMixin):
        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            rec.add("M2.connect", cls.__name__)

        @classmethod
        def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
            rec.add("M2.message", message)  # returns None: message unchanged

        @classmethod
        def on_close(cls, websocket: wsgiws.WebSocket) -> None:
            rec.add("M2.close", cls.__name__)

    @wsgiws.Namespace(r"/", registry=registry)
    class H(M1, M2, wsgiws.BaseWSClass):
        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            rec.add("H.connect", cls.__name__)

        @classmethod
        def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
            rec.add("H.message", message)
            websocket.send("done")

        @classmethod
        def on_close(cls, websocket: wsgiws.WebSocket) -> None:
            rec.add("H.close", cls.__name__)
            rec.close(websocket)

    with serve(registry) as server:
        with connect(url(server)) as ws:
            ws.send("m")
            assert ws.recv(TIMEOUT) == "done"
        assert rec.closed.wait(TIMEOUT)
    assert rec.calls == [
        ("M2.connect", "H"),
        ("M1.connect", "H"),
        ("H.connect", "H"),
        ("M2.message", "m"),
        ("M1.message", "m"),
        ("H.message", "m+M1"),
        ("M2.close", "H"),
        ("H.close", "H"),
    ]


def test_skip_drops_one_event(registry: wsgiws.Registry) -> None:
    """A mixin raising Skip hides that message from the handler; the connection stays."""

    class DropSecrets(wsgiws.BaseMixin):
        @classmethod
        def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
            if message == "secret":
                raise wsgiws.Skip

    @wsgiws.Namespace(r"/", registry=registry)
    class H(DropSecrets, wsgiws.BaseWSClass):
        @classmethod
        def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
            websocket.send(message)

    with serve(registry) as server, connect(url(server)) as ws:
        ws.send("secret")
        ws.send("public")
        assert ws.recv(TIMEOUT) == "public"


def test_reject_in_on_connect_refuses_handshake(registry: wsgiws.Registry, rec: Recorder) -> None:
    """Reject in on_connect answers with its HTTP status; on_close never runs."""

    class Auth(wsgiws.BaseMixin):
        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            if websocket.query.get("token") != "good":
                raise wsgiws.Reject(status=401, reason="bad token")

    @wsgiws.Namespace(r"/", registry=registry)
    class H(Auth, wsgiws.BaseWSClass):
        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            rec.add("H.connect")

        @classmethod
        def on_close(cls, websocket: wsgiws.WebSocket) -> None:
            rec.close(websocket)

    with serve(registry) as server:
        with pytest.raises(InvalidStatus) as info, connect(url(server, "/?token=bad")):
            pass
        assert info.value.response.status_code == 401
        assert info.value.response.body == b"bad token\n"
        with connect(url(server, "/?token=good")):
            pass
        assert rec.closed.wait(TIMEOUT)
    assert rec.calls == [("H.connect", None)]
    assert len(rec.closes) == 1


def test_reject_after_handshake_closes_with_code(registry: wsgiws.Registry, rec: Recorder) -> None:
    """Reject in on_message closes with its close code and reason."""

    @wsgiws.Namespace(r"/", registry=registry)
    class H(wsgiws.BaseWSClass):
        @classmethod
        def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
            raise wsgiws.Reject(4003, "not allowed")

        @classmethod
        def on_close(cls, websocket: wsgiws.WebSocket) -> None:
            rec.close(websocket)

    with serve(registry) as server, connect(url(server)) as ws:
        ws.send("x")
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(TIMEOUT)
        assert info.value.rcvd is not None
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (4003, "not allowed")
        assert rec.closed.wait(TIMEOUT)
    assert rec.closes == [(4003, "not allowed")]


def test_messages_sent_in_on_connect_follow_the_101(registry: wsgiws.Registry) -> None:
    """Messages sent during on_connect arrive first, in order."""

    @wsgiws.Namespace(r"/", registry=registry)
    class H(wsgiws.BaseWSClass):
        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            websocket.send("one")
            websocket.send_json({"two": 2})

        @classmethod
        def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
            websocket.send(message)

    with serve(registry) as server, connect(url(server)) as ws:
        ws.send("three")
        assert [ws.recv(TIMEOUT) for _ in range(3)] == ["one", '{"two":2}', "three"]


def test_handler_exception_closes_1011_and_isolates(
    registry: wsgiws.Registry, rec: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler exception is logged with traceback, closes 1011, calls on_close once,
    and another connection keeps working."""

    @wsgiws.Namespace(r"/", registry=registry)
    class H(wsgiws.BaseWSClass):
        @classmethod
        def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
            if message == "boom":
                raise ValueError("handler bug")
            websocket.send(message)

        @classmethod
        def on_close(cls, websocket: wsgiws.WebSocket) -> None:
            rec.close(websocket)

    caplog.set_level(logging.ERROR, logger="wsgiws.handlers")
    with (
        serve(registry) as server,
        connect(url(server)) as other,
        connect(url(server)) as ws,
    ):
        ws.send("boom")
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(TIMEOUT)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1011
        other.send("fine")
        assert other.recv(TIMEOUT) == "fine"
        assert rec.closed.wait(TIMEOUT)
        assert rec.closes[0][0] == 1011
    [record] = [r for r in caplog.records if r.name == "wsgiws.handlers"]
    assert record.exc_info is not None and "handler bug" in str(record.exc_info[1])


def test_on_connect_exception_gets_500(
    registry: wsgiws.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception in on_connect refuses the handshake with 500 and is logged."""

    @wsgiws.Namespace(r"/", registry=registry)
    class H(wsgiws.BaseWSClass):
        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            raise RuntimeError("no database")

    caplog.set_level(logging.ERROR, logger="wsgiws.handlers")
    with (
        serve(registry) as server,
        pytest.raises(InvalidStatus) as info,
        connect(url(server)),
    ):
        pass
    assert info.value.response.status_code == 500
    assert b"no database" not in info.value.response.body  # no internals to the client
    assert any("no database" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


def test_per_connection_order_and_no_overlap(registry: wsgiws.Registry) -> None:
    """Messages of one connection are handled one at a time, in order, even when the
    handler is slow, while other connections proceed in parallel."""
    active: dict[str, int] = {}
    overlap: list[str] = []
    lock = threading.Lock()

    @wsgiws.Namespace(r"/", registry=registry)
    class H(wsgiws.BaseWSClass):
        @classmethod
        def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
            with lock:
                active[websocket.id] = active.get(websocket.id, 0) + 1
                if active[websocket.id] > 1:
                    overlap.append(websocket.id)
            time.sleep(0.001)  # a slow handler, not synchronisation
            with lock:
                active[websocket.id] -= 1
            websocket.send(message)

    n = 200
    with serve(registry, workers=8) as server, contextlib.ExitStack() as stack:
        clients = [stack.enter_context(connect(url(server))) for _ in range(4)]
        for c in clients:
            for i in range(n):
                c.send(str(i))
        for c in clients:
            assert [c.recv(TIMEOUT) for _ in range(n)] == [str(i) for i in range(n)]
    assert overlap == []


def test_slow_handler_does_not_stall_others(registry: wsgiws.Registry) -> None:
    """A handler blocked on one connection leaves other connections served."""
    release = threading.Event()

    @wsgiws.Namespace(r"/", registry=registry)
    class H(wsgiws.BaseWSClass):
        @classmethod
        def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
            if message == "block":
                release.wait(TIMEOUT)
            websocket.send(message)

    with (
        serve(registry) as server,
        connect(url(server)) as blocked,
        connect(url(server)) as free,
    ):
        blocked.send("block")
        free.send("hi")
        assert free.recv(TIMEOUT) == "hi"
        release.set()
        assert blocked.recv(TIMEOUT) == "block"


def test_send_from_another_thread(registry: wsgiws.Registry) -> None:
    """websocket.send() works from threads that are not handler threads."""
    sockets: list[wsgiws.WebSocket] = []
    ready = threading.Event()

    @wsgiws.Namespace(r"/", registry=registry)
    class H(wsgiws.BaseWSClass):
        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            sockets.append(websocket)
            ready.set()

    with serve(registry) as server, connect(url(server)) as ws:
        assert ready.wait(TIMEOUT)

        def sender(i: int) -> None:
            for j in range(50):
                sockets[0].send(f"{i}:{j}")

        threads = [threading.Thread(target=sender, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        got = [str(ws.recv(TIMEOUT)) for _ in range(200)]
        for i in range(4):
            assert [m for m in got if m.startswith(f"{i}:")] == [f"{i}:{j}" for j in range(50)]


def test_on_close_exactly_once_for_every_cause(registry: wsgiws.Registry, rec: Recorder) -> None:
    """Peer close, TCP drop, handler close and server stop each call on_close once."""
    echo(registry, rec)

    @wsgiws.Namespace(r"/close-me", registry=registry)
    class Closer(wsgiws.BaseWSClass):
        @classmethod
        def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
            websocket.close(4000, "by handler")
            websocket.close(4001, "twice is a no-op")

        @classmethod
        def on_close(cls, websocket: wsgiws.WebSocket) -> None:
            rec.close(websocket)

    with serve(registry) as server:
        with connect(url(server, "/echo")) as ws:  # peer close
            ws.send("x")
            ws.recv(TIMEOUT)
        with RawClient(server.port, "/echo") as raw:  # TCP drop
            raw.accept()
        with connect(url(server, "/close-me")) as ws:  # handler close
            ws.send("x")
            with pytest.raises(ConnectionClosed):
                ws.recv(TIMEOUT)
        wait_for(lambda: len(rec.closes) == 3)
        with connect(url(server, "/echo")) as stopping:
            stopping.send("x")
            stopping.recv(TIMEOUT)
            server.close()
            # close() returned: on_close of the last one has run.
            with pytest.raises(ConnectionClosed) as info:
                stopping.recv(TIMEOUT)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001
    assert sorted(code or 0 for code, _ in rec.closes) == [1000, 1001, 1006, 4000]


def test_send_after_close_raises(registry: wsgiws.Registry, rec: Recorder) -> None:
    """Sending on a closed connection raises ConnectionClosed with the code."""
    kept: list[wsgiws.WebSocket] = []

    @wsgiws.Namespace(r"/", registry=registry)
    class H(wsgiws.BaseWSClass):
        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            kept.append(websocket)

        @classmethod
        def on_close(cls, websocket: wsgiws.WebSocket) -> None:
            rec.close(websocket)

    with serve(registry) as server:
        with connect(url(server)):
            pass
        assert rec.closed.wait(TIMEOUT)
        assert kept[0].closed
        with pytest.raises(wsgiws.ConnectionClosed, match="1000"):
            kept[0].send("late")


# -- limits and keepalive ------------------------------------------------------------


def test_slow_reader_is_closed_1008_and_others_unaffected(
    registry: wsgiws.Registry, rec: Recorder
) -> None:
    """A client that stops reading is closed once write_limit is passed; the others go on."""
    sockets: dict[str, wsgiws.WebSocket] = {}

    @wsgiws.Namespace(r"/(?P<who>\w+)", registry=registry)
    class H(wsgiws.BaseWSClass):
        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            sockets[websocket.match["who"]] = websocket

        @classmethod
        def on_close(cls, websocket: wsgiws.WebSocket) -> None:
            rec.close(websocket)

    with (
        serve(registry, write_limit=256 * 1024) as server,
        connect(url(server, "/good")) as good,
    ):
        with RawClient(server.port, "/stalled") as stalled:
            stalled.accept()
            stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            wait_for(lambda: "stalled" in sockets and "good" in sockets)
            chunk = "x" * 65536
            sent = 0
            with pytest.raises(wsgiws.ConnectionClosed):
                for _ in range(2000):  # at most 128 MiB, far past any socket buffer
                    sockets["stalled"].send(chunk)
                    sockets["good"].send("tick")
                    sent += 1
                    assert good.recv(TIMEOUT) == "tick"
            assert rec.closed.wait(TIMEOUT)
            assert rec.closes == [(1008, "client too slow to read")]
        sockets["good"].send("after")
        assert good.recv(TIMEOUT) == "after"


def test_keepalive_ping_timeout_closes_1011(registry: wsgiws.Registry, rec: Recorder) -> None:
    """A client that never answers pings is closed with 1011."""
    echo(registry, rec)
    with (
        serve(registry, ping_interval=0.1, ping_timeout=0.2) as server,
        RawClient(server.port, "/echo") as c,
    ):
        c.accept()
        # Read frames without answering (RawClient's wsproto would not auto-reply).
        event = c.next_event()
        assert type(event).__name__ == "Ping"
        while not isinstance(event, CloseConnection):
            event = c.next_event()
        assert event.code == 1011
        assert rec.closed.wait(TIMEOUT)
    assert rec.closes == [(1011, "keepalive ping timeout")]


def test_keepalive_answered_keeps_connection(registry: wsgiws.Registry, rec: Recorder) -> None:
    """A client answering pings stays connected past several ping timeouts."""
    echo(registry, rec)
    with (
        serve(registry, ping_interval=0.05, ping_timeout=0.1) as server,
        connect(url(server, "/echo")) as ws,
    ):
        pings = 0
        deadline = time.monotonic() + 0.6
        while time.monotonic() < deadline:  # websockets answers pings while we wait
            with pytest.raises(TimeoutError):
                ws.recv(0.1)
            pings += 1
        ws.send("alive")
        assert ws.recv(TIMEOUT) == "alive"
    assert pings >= 5


def test_backpressure_stops_reading_from_flooding_client(
    registry: wsgiws.Registry,
) -> None:
    """With a blocked handler, the server holds at most about max_queue messages."""
    release = threading.Event()
    handled: list[int] = []
    conns: list[Any] = []

    @wsgiws.Namespace(r"/", registry=registry)
    class H(wsgiws.BaseWSClass):
        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            conns.append(websocket._connection)

        @classmethod
        def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
            release.wait(TIMEOUT)
            handled.append(1)

    payload = "y" * 60_000
    with serve(registry, max_queue=4) as server, RawClient(server.port) as c:
        c.accept()
        c.sock.setblocking(False)
        sent = 0
        try:
            for _ in range(2000):
                c.send(TextMessage(data=payload))
                sent += 1
        except BlockingIOError:
            pass  # the server stopped reading: the client's send buffer filled up
        assert sent < 2000
        queued_max = conns[0]._queued
        # One read of READ_SIZE bytes may complete a few messages beyond max_queue.
        assert queued_max <= 4 + 256 * 1024 // 60_000 + 1
        release.set()


def test_permessage_deflate_with_websockets_client(
    registry: wsgiws.Registry, rec: Recorder
) -> None:
    """The websockets client negotiates permessage-deflate; compression=None turns it off."""
    echo(registry, rec)
    text = "the same words again " * 2000
    with serve(registry) as server, connect(url(server, "/echo")) as ws:
        assert [e.name for e in ws.protocol.extensions] == ["permessage-deflate"]
        ws.send(text)
        assert ws.recv(TIMEOUT) == text
    with serve(registry, compression=None) as server, connect(url(server, "/echo")) as ws:
        assert ws.protocol.extensions == []
        ws.send(text)
        assert ws.recv(TIMEOUT) == text


def test_debug_log_names_frames_without_payloads(
    registry: wsgiws.Registry, rec: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """DEBUG lines give each frame's type and size, never its content or the query."""
    echo(registry, rec)
    caplog.set_level(logging.DEBUG, logger="wsgiws.connection")
    with serve(registry) as server, connect(url(server, "/echo?token=s3cret")) as ws:
        ws.send("hello secret")
        assert ws.recv(TIMEOUT) == "hello secret"
    assert rec.closed.wait(TIMEOUT)
    lines = [r.getMessage() for r in caplog.records if r.name == "wsgiws.connection"]
    assert any(line.endswith("< TEXT [12]") for line in lines), lines
    assert any(line.endswith("> TEXT [12]") for line in lines), lines
    assert any(line.endswith("< CLOSE 1000") for line in lines), lines
    assert not any("secret" in line for line in lines), lines
