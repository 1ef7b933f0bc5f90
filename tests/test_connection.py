"""The connection (session + transport) over a socketpair, with a fake host: no Server.

A :class:`FakeHost` gives the session exactly what its ``Host`` interface asks for —
options, a real loop thread, a real worker pool, routes, a group hub of its own — and
records what the session tells it. The client side is a wsproto client on the other
end of a :func:`socket.socketpair`.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from wsproto.events import BytesMessage, CloseConnection, TextMessage

import wsgiws
from wsgiws.groups import LocalHub
from wsgiws.loop import SelectorLoop
from wsgiws.options import Options
from wsgiws.protocol import PreparedMessage, State
from wsgiws.session import QUICK_STREAK, Session
from wsgiws.workers import WorkerPool

from .helpers import TIMEOUT, RawClient, wait_for


class FakeHost:
    """What a session needs of its server, and nothing else (see session.Host)."""

    def __init__(self, registry: wsgiws.Registry, **options: Any) -> None:
        options.setdefault("close_timeout", 2.0)
        self.options = Options.from_kwargs(**options)
        self.registry = registry
        self.secure = False
        self.hub = LocalHub()
        self.loop = SelectorLoop("fake-host")
        self.pool = WorkerPool(4)
        self.closed: list[Session] = []
        self.done: list[Session] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self.loop.run, daemon=True)
        self._thread.start()

    def connection_closed(self, session: Session) -> None:
        with self._cond:
            self.closed.append(session)
            self._cond.notify_all()

    def session_done(self, session: Session) -> None:
        with self._cond:
            self.done.append(session)
            self._cond.notify_all()

    def wait_done(self, session: Session) -> None:
        with self._cond:
            assert self._cond.wait_for(
                lambda: session in self.done and session in self.closed, TIMEOUT
            ), "the session's lifecycle did not end"

    def connect(self, path: str = "/echo", *, handshake: bool = True) -> tuple[Session, RawClient]:
        """A session on one end of a socketpair, a raw client on the other."""
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        session = Session(self, ours, ("127.0.0.1", 40000), environ=None)
        session.transport.start()
        return session, RawClient(None, path, sock=theirs, handshake=handshake)

    def stop(self) -> None:
        self.loop.stop_threadsafe()
        self._thread.join(TIMEOUT)
        self.loop.close()
        self.pool.shutdown(timeout=1)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.closed = threading.Event()

    def add(self, kind: str, value: Any) -> None:
        self.events.append((kind, value))
        if kind == "close":
            self.closed.set()


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def registry(rec: Recorder) -> wsgiws.Registry:
    registry = wsgiws.Registry()

    @wsgiws.Namespace(r"/echo", registry=registry)
    class Echo(wsgiws.BaseWSClass):
        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            rec.add("connect", path)
            if websocket.query.get("early"):
                websocket.send("early")  # before the 101: queued by the protocol
            if websocket.query.get("join"):
                websocket.join(websocket.query["join"])
            if websocket.query.get("bye"):
                websocket.close(4000, "bye")

        @classmethod
        def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
            rec.add("message", message)
            if isinstance(message, bytes):
                websocket.send(message)
                return
            if message == "boom":
                raise ValueError("handler bug")
            if message == "reject":
                raise wsgiws.Reject(4001, "go away")
            websocket.send(message)

        @classmethod
        def on_close(cls, websocket: wsgiws.WebSocket) -> None:
            rec.add("close", (websocket.close_code, websocket.groups))

    @wsgiws.Namespace(r"/refuse", registry=registry)
    class Refuse(wsgiws.BaseWSClass):
        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            raise wsgiws.Reject(status=401, reason="who are you")

    @wsgiws.Namespace(r"/crash", registry=registry)
    class Crash(wsgiws.BaseWSClass):
        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            raise RuntimeError("connect bug")

    return registry


@pytest.fixture
def host(registry: wsgiws.Registry) -> Iterator[FakeHost]:
    host = FakeHost(registry)
    yield host
    host.stop()


def test_echo_and_close_over_a_socketpair(host: FakeHost, rec: Recorder) -> None:
    """Handshake, a message each way, the client's close: on_close once, host told."""
    session, client = host.connect("/echo")
    with client:
        client.accept()
        client.send(TextMessage("hello"))
        event = client.next_event()
        assert isinstance(event, TextMessage) and event.data == "hello"
        client.send(BytesMessage(b"\x00\x01"))
        event = client.next_event()
        assert isinstance(event, BytesMessage) and event.data == b"\x00\x01"
        assert session.is_open() and host.hub.find(session.id) is session
        client.send(CloseConnection(1000))
        event = client.next_event()
        assert isinstance(event, CloseConnection) and event.code == 1000
    host.wait_done(session)
    assert rec.events == [
        ("connect", "/echo"),
        ("message", "hello"),
        ("message", b"\x00\x01"),
        ("close", (1000, frozenset())),
    ]
    assert host.done.count(session) == 1 and host.closed.count(session) == 1
    assert host.hub.find(session.id) is None
    assert session.transport.proto.state is State.CLOSED
    assert not session.is_open()


def test_unrouted_path_is_refused_with_404_and_ends_the_lifecycle(host: FakeHost) -> None:
    """No namespace: 404, no handler runs, the host hears of the end."""
    session, client = host.connect("/nowhere")
    with client:
        status, _, body = client.rejection()
        assert status == 404 and b"/nowhere" in body
    host.wait_done(session)
    assert session.websocket is None and host.hub.find(session.id) is None


def test_refused_origin_gets_403(registry: wsgiws.Registry) -> None:
    host = FakeHost(registry, origins=["https://example.com"])
    try:
        session, client = host.connect("/echo")
        with client:
            assert client.rejection()[0] == 403
        host.wait_done(session)
    finally:
        host.stop()


def test_reject_and_exception_in_on_connect(
    host: FakeHost, caplog: pytest.LogCaptureFixture
) -> None:
    """Reject gives its status; an exception gives 500 and a traceback naming the
    connection, logged on wsgiws.handlers."""
    caplog.set_level(logging.ERROR, logger="wsgiws.handlers")
    session, client = host.connect("/refuse")
    with client:
        status, _, body = client.rejection()
        assert (status, body) == (401, b"who are you\n")
    host.wait_done(session)
    session, client = host.connect("/crash")
    with client:
        assert client.rejection()[0] == 500
    host.wait_done(session)
    [record] = [r for r in caplog.records if r.name == "wsgiws.handlers"]
    assert record.exc_info is not None and "connect bug" in str(record.exc_info[1])
    assert getattr(record, "websocket", "").startswith(session.id)
    assert record.getMessage().startswith(f"[{session.id} ")


def test_handler_exception_closes_1011_with_the_connection_in_the_log(
    host: FakeHost, rec: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="wsgiws.handlers")
    session, client = host.connect("/echo")
    with client:
        client.accept()
        client.send(TextMessage("boom"))
        event = client.next_event()
        assert isinstance(event, CloseConnection) and event.code == 1011
        client.send(event.response())
    host.wait_done(session)
    [record] = [r for r in caplog.records if r.name == "wsgiws.handlers"]
    assert getattr(record, "websocket", "") == f"{session.id} 127.0.0.1:40000 /echo"
    assert rec.events[-1] == ("close", (1011, frozenset()))


def test_reject_in_on_message_closes_with_its_code(host: FakeHost, rec: Recorder) -> None:
    session, client = host.connect("/echo")
    with client:
        client.accept()
        client.send(TextMessage("reject"))
        event = client.next_event()
        assert isinstance(event, CloseConnection) and (event.code, event.reason) == (
            4001,
            "go away",
        )
        client.send(event.response())
    host.wait_done(session)
    assert rec.events[-1] == ("close", (4001, frozenset()))


def test_frames_and_close_from_on_connect_follow_the_101(host: FakeHost, rec: Recorder) -> None:
    """What on_connect sends goes through the protocol and comes right after the 101,
    and a close asked for there follows it."""
    session, client = host.connect("/echo?early=1&bye=1&join=room")
    with client:
        client.accept()
        event = client.next_event()
        assert isinstance(event, TextMessage) and event.data == "early"
        event = client.next_event()
        assert isinstance(event, CloseConnection) and event.code == 4000
        client.send(event.response())
    host.wait_done(session)
    assert rec.events[-1] == ("close", (4000, frozenset({"room"})))
    assert host.hub.group_names() == frozenset()


def test_messages_of_every_kind_and_header_size_from_any_thread(host: FakeHost) -> None:
    """``send_message`` from a thread of the test: text (sized in encoded bytes) and
    binary of every header size, bytearray and memoryview, arrive as sent, in order;
    once closed it raises ConnectionClosed."""
    session, client = host.connect("/echo")
    with client:
        client.accept()
        messages: list[Any] = []  # bytearray and memoryview too
        for size in (0, 1, 125, 126, 127, 65_535, 65_536, 70_000):
            messages.append(os.urandom(size))
            messages.append("x" * size)
        messages += ["\u00e9" * 62 + "x", "\u00e9" * 63, bytearray(b"ab" * 100), memoryview(b"cd")]
        for message in messages:
            session.send_message(message)
        for message in messages:
            data: str | bytes = "" if isinstance(message, str) else b""
            while True:
                event = client.next_event()
                assert isinstance(
                    event, (TextMessage if isinstance(message, str) else BytesMessage)
                )
                data += event.data  # type: ignore[operator]
                if event.message_finished:
                    break
            assert data == (message if isinstance(message, str) else bytes(message))
        client.send(CloseConnection(1000))
        client.next_event()
    host.wait_done(session)
    with pytest.raises(wsgiws.ConnectionClosed):
        session.send_message("late")
    with pytest.raises(wsgiws.ConnectionClosed):
        session.send_message(b"x" * 100_000)


def test_broadcast_frame_and_any_thread_sends(host: FakeHost) -> None:
    """A prepared message and sends from another thread reach the client in order."""
    session, client = host.connect("/echo")
    with client:
        client.accept()
        prepared = PreparedMessage("to all")

        def send() -> None:
            session.send_prepared(prepared)
            session.send_message(b"bytes")

        sender = threading.Thread(target=send)
        sender.start()
        sender.join(TIMEOUT)
        first, second = client.next_event(), client.next_event()
        assert isinstance(first, TextMessage) and first.data == "to all"
        assert isinstance(second, BytesMessage) and second.data == b"bytes"
        assert session.transport.queued_bytes() == 0
        session.close_threadsafe(1000, "done")
        event = client.next_event()
        assert isinstance(event, CloseConnection) and event.code == 1000
        client.send(event.response())
    host.wait_done(session)
    with pytest.raises(wsgiws.ConnectionClosed):
        session.send_message("late")


def test_shutdown_and_abort_from_any_thread(host: FakeHost, rec: Recorder) -> None:
    """The host's shutdown sends 1001; abort drops a connection at once."""
    session, client = host.connect("/echo")
    with client:
        client.accept()
        session.transport.shutdown(1001, "server shutting down")  # from this thread
        event = client.next_event()
        assert isinstance(event, CloseConnection) and event.code == 1001
        client.send(event.response())
    host.wait_done(session)
    other, client = host.connect("/echo")
    with client:
        client.accept()
        wait_for(lambda: ("connect", "/echo") in rec.events[1:])
        other.transport.abort(1001, "server shutting down")
        assert client.read_until_eof() == b""
    host.wait_done(other)
    assert other.close_code == 1001


def test_handshake_timeout_without_request(registry: wsgiws.Registry) -> None:
    host = FakeHost(registry, handshake_timeout=0.05)
    try:
        session, client = host.connect("/echo", handshake=False)
        with client:
            assert client.read_until_eof() == b""
        host.wait_done(session)
        assert session.close_code == 1006 and session.websocket is None
    finally:
        host.stop()


def test_flow_control_pauses_and_resumes_reading(registry: wsgiws.Registry, rec: Recorder) -> None:
    """Past max_queue unhandled messages the transport stops reading, then resumes."""
    host = FakeHost(registry, max_queue=2)
    try:
        session, client = host.connect("/echo")
        with client:
            client.accept()
            for i in range(20):
                client.send(TextMessage(str(i)))
            for i in range(20):
                event = client.next_event()
                assert isinstance(event, TextMessage) and event.data == str(i)
            client.send(CloseConnection(1000))
            client.next_event()
        host.wait_done(session)
        messages = [value for kind, value in rec.events if kind == "message"]
        assert messages == [str(i) for i in range(20)]
    finally:
        host.stop()


def test_batch_of_messages_is_handled_in_order_with_replies_in_order(
    registry: wsgiws.Registry, rec: Recorder
) -> None:
    """Messages that one read completes go to the handlers as one batch, in order."""
    host = FakeHost(registry)
    try:
        session, client = host.connect("/echo")
        with client:
            client.accept()
            client.send_raw(b"".join(client.ws.send(TextMessage(str(i))) for i in range(50)))
            for i in range(50):
                event = client.next_event()
                assert isinstance(event, TextMessage) and event.data == str(i)
            client.send(CloseConnection(1000))
            client.next_event()
        host.wait_done(session)
        assert [v for k, v in rec.events if k == "message"] == [str(i) for i in range(50)]
    finally:
        host.stop()


def test_large_and_small_messages_in_a_burst_echo_in_order(
    registry: wsgiws.Registry, rec: Recorder
) -> None:
    """Large frames received into their own buffers and replies written as header and
    payload (in part by the kernel, the rest buffered) interleave with small ones in order."""
    host = FakeHost(registry, max_message_size=2 * 2**20)
    try:
        session, client = host.connect("/echo")
        with client:
            client.accept()
            session.transport.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
            sizes = [300_000, 5, 200_000, 70_000, 1, 2**20, 65_536, 65_535, 3]
            payloads = [os.urandom(size) for size in sizes]
            stream = b""
            for i, payload in enumerate(payloads):
                stream += client.ws.send(BytesMessage(payload))
                stream += client.ws.send(TextMessage(str(i)))
            client.send_raw(stream)
            for i, payload in enumerate(payloads):
                data = b""
                while True:
                    event = client.next_event()
                    assert isinstance(event, BytesMessage)
                    data += event.data
                    if event.message_finished:
                        break
                assert data == payload
                event = client.next_event()
                assert isinstance(event, TextMessage) and event.data == str(i)
            client.send(CloseConnection(1000))
            client.next_event()
        host.wait_done(session)
    finally:
        host.stop()


def test_a_slow_handler_ends_holding_replies_for_the_batch() -> None:
    """Replies to a batch are held for one send only while handlers are quick: after a
    slow call, a reply leaves before the next handler of the batch returns."""
    registry = wsgiws.Registry()
    release = threading.Event()

    @wsgiws.Namespace(r"/slow", registry=registry)
    class Slow(wsgiws.BaseWSClass):
        @classmethod
        def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
            if message == "slow":
                release.wait(0.05)  # longer than QUICK_HANDLER
            elif message == "block":
                assert release.wait(TIMEOUT)
            websocket.send(message)

    host = FakeHost(registry)
    try:
        session, client = host.connect("/slow")
        with client:
            client.accept()
            quick = [str(i) for i in range(2 * QUICK_STREAK)]  # now replies may be held
            client.send_raw(b"".join(client.ws.send(TextMessage(m)) for m in quick))
            client.send_raw(client.ws.send(TextMessage("a")) + client.ws.send(TextMessage("slow")))
            for expected in [*quick, "a", "slow"]:
                event = client.next_event()
                assert isinstance(event, TextMessage) and event.data == expected
            # "block" waits until the reply to "c" arrived: were it held, neither would.
            client.send_raw(client.ws.send(TextMessage("c")) + client.ws.send(TextMessage("block")))
            event = client.next_event()
            assert isinstance(event, TextMessage) and event.data == "c"
            release.set()
            event = client.next_event()
            assert isinstance(event, TextMessage) and event.data == "block"
            client.send(CloseConnection(1000))
            client.next_event()
        host.wait_done(session)
    finally:
        release.set()
        host.stop()


def test_cork_holds_the_corking_threads_writes_only(registry: wsgiws.Registry) -> None:
    """While corked, a thread's frames wait for uncork; another thread's send writes
    everything buffered, in order."""
    host = FakeHost(registry)
    try:
        session, client = host.connect("/echo")
        with client:
            client.accept()
            transport = session.transport
            transport.cork()
            transport.send_message("one")
            transport.send_message("two")
            assert transport.queued_bytes() > 0
            other = threading.Thread(target=transport.send_message, args=("three",))
            other.start()
            other.join(TIMEOUT)
            for expected in ("one", "two", "three"):
                event = client.next_event()
                assert isinstance(event, TextMessage) and event.data == expected
            transport.send_message("four")
            assert transport.queued_bytes() > 0
            transport.uncork()
            assert transport.queued_bytes() == 0
            event = client.next_event()
            assert isinstance(event, TextMessage) and event.data == "four"
            client.send(CloseConnection(1000))
            client.next_event()
        host.wait_done(session)
    finally:
        host.stop()


def test_inline_handler_runs_messages_on_the_loop_thread() -> None:
    """``inline = True``: on_message runs on the loop thread, in order; on_connect
    and on_close still run on workers."""
    registry = wsgiws.Registry()
    threads: list[tuple[str, int]] = []

    @wsgiws.Namespace(r"/inline", registry=registry)
    class Inline(wsgiws.BaseWSClass):
        inline = True

        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            threads.append(("connect", threading.get_ident()))

        @classmethod
        def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
            threads.append(("message", threading.get_ident()))
            if message == "boom":
                raise ValueError("handler bug")
            websocket.send(message)

        @classmethod
        def on_close(cls, websocket: wsgiws.WebSocket) -> None:
            threads.append(("close", threading.get_ident()))

    host = FakeHost(registry)
    try:
        session, client = host.connect("/inline")
        with client:
            client.accept()
            client.send_raw(b"".join(client.ws.send(TextMessage(str(i))) for i in range(20)))
            for i in range(20):
                event = client.next_event()
                assert isinstance(event, TextMessage) and event.data == str(i)
            client.send(TextMessage("boom"))  # an exception closes with 1011, as on a worker
            event = client.next_event()
            assert isinstance(event, CloseConnection) and event.code == 1011
        host.wait_done(session)
        loop_thread = host.loop.thread_id
        kinds = {kind for kind, thread in threads if thread == loop_thread}
        assert kinds == {"message"}
        assert [kind for kind, _ in threads].count("message") == 21
        assert threads[0][0] == "connect" and threads[-1][0] == "close"
    finally:
        host.stop()


DEV_MODE_SCRIPT = """
import threading
import wsgiws
from wsgiws.loop import CHECK_THREADS, SelectorLoop
from wsgiws.testing import connect, serve

assert CHECK_THREADS

# A whole server under the checks: every loop-thread-only method runs on its thread.
registry = wsgiws.Registry()

@wsgiws.Namespace(r"/echo", registry=registry)
class Echo(wsgiws.BaseWSClass):
    @classmethod
    def on_message(cls, websocket, message):
        websocket.send(message)

with serve(registry, close_timeout=2.0) as server:
    for _ in range(2):
        with connect(f"ws://127.0.0.1:{server.port}/echo") as ws:
            ws.send("hi")
            assert ws.recv(10) == "hi"
    with connect(f"ws://127.0.0.1:{server.port}/echo") as ws:
        pass  # still open when the server closes

# A loop-thread-only method called from another thread is refused.
loop = SelectorLoop("dev")
thread = threading.Thread(target=loop.run)
thread.start()
ran = threading.Event()
loop.call_soon_threadsafe(lambda: loop.call_later(0, ran.set))
assert ran.wait(10)
for call in (lambda: loop.call_later(1, print), lambda: loop.remove_socket(loop_sock)):
    loop_sock = __import__("socket").socket()
    try:
        call()
    except AssertionError as exc:
        print("refused:", exc)
    loop_sock.close()
loop.stop_threadsafe()
thread.join(10)
loop.close()
"""


def test_loop_thread_methods_check_their_thread_in_dev_mode() -> None:
    """Under -X dev a server runs with every thread check passing, and a
    loop-thread-only method called from another thread raises."""
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-c", DEV_MODE_SCRIPT],
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 3,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    refused = "refused: called from thread 'MainThread', not from the dev loop thread"
    assert result.stdout.count(refused) == 2, (result.stdout, result.stderr)
    assert "unexpected internal error" not in result.stderr, result.stderr
