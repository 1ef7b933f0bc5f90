"""Groups and broadcast in one process (the in-memory backend), over real sockets.

Servers run in the test process, so that the tests can call the group API from
their own threads and look at the hub; clients are the ``websockets`` library, or
a raw socket for a member that never reads.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

import wsgiws
from wsgiws.groups import Envelope, LocalHub, hub
from wsgiws.redis_groups import pack, unpack
from wsgiws.session import Session

from .helpers import TIMEOUT, serve, stalled_client, wait_for


@pytest.fixture(autouse=True)
def in_memory_backend() -> Iterator[None]:
    """Each test starts and ends with the default in-memory backend."""
    wsgiws.set_group_backend(wsgiws.InMemoryBackend())
    yield
    wsgiws.set_group_backend(wsgiws.InMemoryBackend())


def unique(prefix: str = "g") -> str:
    """A group name no other test uses (groups are process-wide)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Rooms:
    """The ``/room`` endpoint: joins the groups named by ``?join=``, answers commands.

    Every connection first receives ``{"id": <its id>}``. Commands (JSON text):
    ``join``/``leave`` a group, ``groups`` (answers the sorted names), ``say`` (sends to
    a group, excluding the sender).
    """

    def __init__(self, registry: wsgiws.Registry) -> None:
        self.sockets: dict[str, wsgiws.WebSocket] = {}
        self.closes: dict[str, tuple[int | None, list[str]]] = {}
        self.lock = threading.Lock()
        #: What ``say_and_wait`` waits for after sending.
        self.release = threading.Event()
        #: Set by ``say_and_wait`` once the handler returns.
        self.returned = threading.Event()
        rooms = self

        @wsgiws.Namespace(r"/room", registry=registry)
        class Room(wsgiws.BaseWSClass):
            @classmethod
            def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
                for name in websocket.query.getlist("join"):
                    websocket.join(name)
                with rooms.lock:
                    rooms.sockets[websocket.id] = websocket
                websocket.send_json({"id": websocket.id})

            @classmethod
            def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
                command = json.loads(message)
                op = command["op"]
                if op == "join":
                    websocket.join(command["group"])
                elif op == "leave":
                    websocket.leave(command["group"])
                elif op == "say":
                    wsgiws.group(command["group"]).send(command["text"], exclude=websocket)
                    return
                elif op == "say_and_wait":
                    wsgiws.group(command["group"]).send(command["text"], exclude=websocket)
                    rooms.release.wait(TIMEOUT)  # a handler that blocks after sending
                    rooms.returned.set()
                    return
                elif op == "mixed":
                    # Group sends and direct replies, interleaved, to a member of the group.
                    group = wsgiws.group(command["group"])
                    for i in range(command["count"]):
                        group.send(f"g{i}")
                        websocket.send(f"d{i}")
                    return
                websocket.send_json({"groups": sorted(websocket.groups)})

            @classmethod
            def on_close(cls, websocket: wsgiws.WebSocket) -> None:
                with rooms.lock:
                    rooms.closes[websocket.id] = (websocket.close_code, sorted(websocket.groups))


@contextlib.contextmanager
def clients(
    server: wsgiws.Server, *groups: str, count: int = 1, **options: Any
) -> Iterator[list[tuple[ClientConnection, str]]]:
    """``count`` clients of ``/room`` joined to ``groups``, with their connection ids."""
    query = "&".join(f"join={g}" for g in groups)
    with contextlib.ExitStack() as stack:
        result = []
        for _ in range(count):
            client = stack.enter_context(
                connect(
                    f"ws://127.0.0.1:{server.port}/room?{query}", open_timeout=TIMEOUT, **options
                )
            )
            result.append((client, json.loads(client.recv(timeout=TIMEOUT))["id"]))
        yield result


def ask(client: ClientConnection, **command: Any) -> Any:
    """Send a command to a ``/room`` connection and return its JSON answer."""
    client.send(json.dumps(command))
    return json.loads(client.recv(timeout=TIMEOUT))


def nothing_else(client: ClientConnection, connection_id: str) -> None:
    """Assert the client got nothing more: its next message is a marker sent to it alone."""
    marker = f"marker-{uuid.uuid4().hex}"
    assert wsgiws.send_to(connection_id, marker) is True
    assert client.recv(timeout=TIMEOUT) == marker


@pytest.fixture
def rooms(registry: wsgiws.Registry) -> Rooms:
    """The /room endpoint on the test's registry."""
    return Rooms(registry)


def test_join_leave_and_groups(registry: wsgiws.Registry, rooms: Rooms) -> None:
    """join/leave change websocket.groups and who receives a group message."""
    a, b = unique(), unique()
    with serve(registry) as server, clients(server, a) as [(client, cid)]:
        assert ask(client, op="join", group=b) == {"groups": sorted([a, b])}
        assert ask(client, op="join", group=b) == {"groups": sorted([a, b])}  # twice: no-op
        wsgiws.group(b).send("to-b")
        assert client.recv(timeout=TIMEOUT) == "to-b"
        assert ask(client, op="leave", group=b) == {"groups": [a]}
        assert ask(client, op="leave", group=b) == {"groups": [a]}  # not a member: no-op
        wsgiws.group(b).send("lost")
        wsgiws.group(a).send("to-a")
        assert client.recv(timeout=TIMEOUT) == "to-a"  # "lost" never came
        assert [ws.id for ws in wsgiws.group(a).members] == [cid]
        assert len(wsgiws.group(a)) == 1 and len(wsgiws.group(b)) == 0
        assert b not in hub.group_names()


def test_members_only_text_binary_and_json(registry: wsgiws.Registry, rooms: Rooms) -> None:
    """A group message reaches each member once, as text, binary or JSON, and no one else."""
    name = unique()
    with (
        serve(registry) as server,
        clients(server, name, count=3) as members,
        clients(server, unique()) as [(outsider, outsider_id)],
    ):
        group = wsgiws.group(name)
        assert len(group) == 3
        group.send("text")
        group.send(b"\x00\xffbinary")
        group.send(bytearray(b"bytearray"))
        group.send_json({"n": 1, "list": [1, 2]})
        for client, cid in members:
            assert client.recv(timeout=TIMEOUT) == "text"
            assert client.recv(timeout=TIMEOUT) == b"\x00\xffbinary"
            assert client.recv(timeout=TIMEOUT) == b"bytearray"
            assert client.recv(timeout=TIMEOUT) == '{"n":1,"list":[1,2]}'
            nothing_else(client, cid)
        nothing_else(outsider, outsider_id)
        with pytest.raises(TypeError):
            group.send(42)  # type: ignore[arg-type]


def test_exclude_by_websocket_or_id(registry: wsgiws.Registry, rooms: Rooms) -> None:
    """exclude= skips one member, given as its WebSocket or its id (typically the sender)."""
    name = unique()
    with serve(registry) as server, clients(server, name, count=3) as members:
        (c1, id1), (c2, id2), (c3, _) = members
        wsgiws.group(name).send("not-1", exclude=rooms.sockets[id1])
        wsgiws.group(name).send("not-2", exclude=id2)
        c3.send(json.dumps({"op": "say", "group": name, "text": "from-3"}))
        expected = {c1: ["not-2", "from-3"], c2: ["not-1", "from-3"], c3: ["not-1", "not-2"]}
        for client, messages in expected.items():
            assert [client.recv(timeout=TIMEOUT) for _ in messages] == messages
        for client, cid in members:
            nothing_else(client, cid)


def test_leave_all_groups_on_close_after_on_close(registry: wsgiws.Registry, rooms: Rooms) -> None:
    """A closed connection leaves its groups once on_close has run (which still sees them)."""
    a, b = unique(), unique()
    with serve(registry) as server:
        with clients(server, a, b) as [(_, cid)]:
            assert len(wsgiws.group(a)) == 1
        wait_for(lambda: cid in rooms.closes)
        assert rooms.closes[cid] == (1000, sorted([a, b]))
        wait_for(lambda: hub.find(cid) is None)
        assert len(wsgiws.group(a)) == 0 and len(wsgiws.group(b)) == 0
        assert not {a, b} & hub.group_names()
        assert wsgiws.send_to(cid, "gone") is False
        with pytest.raises(wsgiws.ConnectionClosed):
            rooms.sockets[cid].join(a)
        assert rooms.sockets[cid].groups == frozenset()


def test_refused_handshake_leaves_groups(registry: wsgiws.Registry) -> None:
    """A connection refused in on_connect after joining a group does not stay in it."""
    name = unique()
    seen: list[str] = []

    @wsgiws.Namespace(r"/refused", registry=registry)
    class Refused(wsgiws.BaseWSClass):
        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            websocket.join(name)
            seen.append(websocket.id)
            raise wsgiws.Reject(reason="no")

    with serve(registry) as server:
        with (
            pytest.raises(Exception, match="403"),
            connect(f"ws://127.0.0.1:{server.port}/refused", open_timeout=TIMEOUT),
        ):
            pass
        wait_for(lambda: seen and hub.find(seen[0]) is None)
        assert name not in hub.group_names()


def test_send_to_by_id(registry: wsgiws.Registry, rooms: Rooms) -> None:
    """send_to queues to a local connection by id and reports an unknown id."""
    with serve(registry) as server, clients(server, count=2) as [(c1, id1), (c2, id2)]:
        assert wsgiws.send_to(id2, "for-2") is True
        assert wsgiws.send_to(id1, b"for-1") is True
        assert c2.recv(timeout=TIMEOUT) == "for-2"
        assert c1.recv(timeout=TIMEOUT) == b"for-1"
        assert wsgiws.send_to("0123456789abcdef", "nobody") is False
        with pytest.raises(TypeError):
            wsgiws.send_to(rooms.sockets[id1], "x")  # type: ignore[arg-type]
        nothing_else(c1, id1)
        nothing_else(c2, id2)


def test_sending_to_no_one(registry: wsgiws.Registry) -> None:
    """Sending to an empty group or broadcasting to a server with no connection is fine."""
    with serve(registry) as server:
        wsgiws.group(unique()).send("nobody")
        wsgiws.group(unique()).send_json({"nobody": True})
        wsgiws.broadcast("nobody")
        assert server.broadcast("nobody") == 0


def test_server_broadcast_is_local_and_wsgiws_broadcast_reaches_all(
    registry: wsgiws.Registry, rooms: Rooms
) -> None:
    """server.broadcast reaches that server's connections; wsgiws.broadcast every server's."""
    with (
        serve(registry) as s1,
        serve(registry) as s2,
        clients(s1, count=2) as on_1,
        clients(s2) as on_2,
    ):
        assert s1.broadcast("only-1") == 2
        for client, _ in on_1:
            assert client.recv(timeout=TIMEOUT) == "only-1"
        nothing_else(*on_2[0])
        wsgiws.broadcast(b"everyone")
        for client, cid in on_1 + on_2:
            assert client.recv(timeout=TIMEOUT) == b"everyone"
            nothing_else(client, cid)


def test_group_api_from_many_threads(registry: wsgiws.Registry, rooms: Rooms) -> None:
    """Concurrent senders and joiners: each member gets each message once, in sender order."""
    name = unique()
    senders, per_sender = 8, 200
    with (
        serve(registry) as server,
        clients(server, name, count=4, max_queue=None) as members,
        clients(server, max_queue=None) as [(churner, churner_id)],
    ):
        churning = rooms.sockets[churner_id]
        start = threading.Barrier(senders + 1)
        errors: list[BaseException] = []

        def send(k: int) -> None:
            try:
                start.wait(TIMEOUT)
                group = wsgiws.group(name)
                for i in range(per_sender):
                    group.send(f"{k}:{i}")
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=send, args=(k,)) for k in range(senders)]
        for thread in threads:
            thread.start()
        start.wait(TIMEOUT)
        for i in range(500):  # membership changes while the senders run
            (churning.join if i % 2 == 0 else churning.leave)(name)
            len(wsgiws.group(name))
        churning.leave(name)
        for thread in threads:
            thread.join(TIMEOUT)
        assert not errors

        def check(messages: list[str], complete: bool) -> None:
            last = [-1] * senders
            for message in messages:
                k, i = map(int, message.split(":"))
                assert i > last[k], f"out of order or twice: {message}"
                if complete:
                    assert i == last[k] + 1
                last[k] = i
            if complete:
                assert last == [per_sender - 1] * senders

        for client, cid in members:
            check([str(client.recv(timeout=TIMEOUT)) for _ in range(senders * per_sender)], True)
            nothing_else(client, cid)
        marker = f"end-{uuid.uuid4().hex}"
        wsgiws.send_to(churner_id, marker)
        got = []
        while (message := churner.recv(timeout=TIMEOUT)) != marker:
            got.append(str(message))
        check(got, False)


def test_direct_and_group_sends_from_many_threads_keep_each_senders_order(
    registry: wsgiws.Registry, rooms: Rooms
) -> None:
    """Group sends (queued for the loop) and direct sends (written at once) from
    several threads reach each member in each sender's order, none lost or repeated;
    so do a handler's own group sends and replies."""
    name = unique()
    senders, per_sender = 6, 300
    with serve(registry) as server, clients(server, name, count=3, max_queue=None) as members:
        sockets = [rooms.sockets[cid] for _, cid in members]
        start = threading.Barrier(senders)
        errors: list[BaseException] = []

        def send(k: int) -> None:
            try:
                start.wait(TIMEOUT)
                group = wsgiws.group(name)
                for i in range(per_sender):
                    group.send(f"{k}:g{i}")
                    for websocket in sockets:
                        websocket.send(f"{k}:d{i}")
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=send, args=(k,)) for k in range(senders)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
        assert not errors
        expected = [f"{kind}{i}" for i in range(per_sender) for kind in "gd"]
        for client, cid in members:
            got: dict[str, list[str]] = {str(k): [] for k in range(senders)}
            for _ in range(senders * per_sender * 2):
                k, item = str(client.recv(timeout=TIMEOUT)).split(":")
                got[k].append(item)
            assert all(items == expected for items in got.values())
            nothing_else(client, cid)

        # A handler's own group sends and replies, interleaved.
        client, cid = members[0]
        client.send(json.dumps({"op": "mixed", "group": name, "count": 200}))
        mixed = [f"{kind}{i}" for i in range(200) for kind in "gd"]
        assert [client.recv(timeout=TIMEOUT) for _ in range(400)] == mixed
        for other, other_id in members[1:]:
            assert [other.recv(timeout=TIMEOUT) for _ in range(200)] == mixed[::2]
            nothing_else(other, other_id)


def test_group_send_is_delivered_while_the_sending_handler_blocks(
    registry: wsgiws.Registry, rooms: Rooms
) -> None:
    """A handler that group-sends and then waits: its message arrives before it returns."""
    name = unique()
    with serve(registry) as server, clients(server, name, count=2) as [(a, _), (b, _)]:
        a.send(json.dumps({"op": "say_and_wait", "group": name, "text": "hello"}))
        try:
            assert b.recv(timeout=TIMEOUT) == "hello"
            assert not rooms.returned.is_set()  # still blocked in the handler
        finally:
            rooms.release.set()
        assert rooms.returned.wait(TIMEOUT)


def test_inline_handler_group_send_is_written(registry: wsgiws.Registry) -> None:
    """A group send from an inline handler (on the loop thread) is written by that loop."""
    name = unique()

    @wsgiws.Namespace(r"/inline-say", registry=registry)
    class InlineSay(wsgiws.BaseWSClass):
        inline = True

        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            websocket.join(name)

        @classmethod
        def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
            for i in range(3):
                wsgiws.group(name).send(f"{message!s}-{i}")

    url = "ws://127.0.0.1:{}/inline-say"
    with (
        serve(registry) as server,
        connect(url.format(server.port), open_timeout=TIMEOUT) as a,
        connect(url.format(server.port), open_timeout=TIMEOUT) as b,
    ):
        wait_for(lambda: len(wsgiws.group(name)) == 2)
        a.send("hi")
        for client in (a, b):
            assert [client.recv(timeout=TIMEOUT) for _ in range(3)] == ["hi-0", "hi-1", "hi-2"]


def test_burst_while_the_loop_is_busy_is_written_by_the_sender(
    registry: wsgiws.Registry, rooms: Rooms
) -> None:
    """Group sends queue for the loop, but a member's queue that fills up before the
    loop gets to it is written by the sending thread: a burst many times write_limit
    reaches a member that reads, with the loop thread held up, and nobody is closed."""
    name = unique()
    write_limit, count, payload = 64 * 1024, 2000, os.urandom(500)  # 1 MB per member
    with (
        serve(registry, write_limit=write_limit) as server,
        clients(server, name, count=2, max_queue=None) as readers,
    ):
        received = {cid: 0 for _, cid in readers}

        def read(client: ClientConnection, cid: str) -> None:
            for i in range(count):
                message = client.recv(timeout=TIMEOUT)
                assert isinstance(message, bytes) and message[:4] == i.to_bytes(4, "big")
                received[cid] = i + 1

        threads = [threading.Thread(target=read, args=reader) for reader in readers]
        for thread in threads:
            thread.start()
        held, release = threading.Event(), threading.Event()

        def hold_the_loop() -> None:
            held.set()
            release.wait(TIMEOUT)

        server.loop.call_soon_threadsafe(hold_the_loop)
        try:
            assert held.wait(TIMEOUT)
            group = wsgiws.group(name)
            for i in range(count):
                group.send(i.to_bytes(4, "big") + payload)
            # All but the last write_limit / 2 bytes arrive while the loop is held.
            tail = write_limit // 2 // len(payload) + 1
            wait_for(lambda: min(received.values()) >= count - tail)
        finally:
            release.set()  # the loop writes the tail
        for thread in threads:
            thread.join(TIMEOUT)
        assert received == {cid: count for _, cid in readers}
        assert not rooms.closes
        for client, cid in readers:
            nothing_else(client, cid)


def test_stalled_member_is_closed_and_others_get_everything(
    registry: wsgiws.Registry, rooms: Rooms
) -> None:
    """A member that stops reading is closed with 1008 within write_limit; the others get all."""
    name = unique()
    write_limit = 1024 * 1024
    rounds, count, payload = 30, 50, "x" * 8192  # 12 MB in rounds of 400 kB
    with (
        serve(registry, write_limit=write_limit) as server,
        clients(server, name, count=2, max_queue=None) as readers,
        contextlib.closing(stalled_client(int(server.port or 0), f"/room?join={name}")),
    ):
        wait_for(lambda: len(wsgiws.group(name)) == 3)
        reader_ids = {cid for _, cid in readers}
        (stalled,) = [ws for ws in wsgiws.group(name).members if ws.id not in reader_ids]
        largest = 0
        for _ in range(rounds):
            for i in range(count):
                wsgiws.group(name).send(f"{i:04d}{payload}")
                session = stalled._connection
                assert isinstance(session, Session)
                largest = max(largest, session.transport.queued_bytes())
            for client, _ in readers:
                for i in range(count):
                    assert str(client.recv(timeout=TIMEOUT)).startswith(f"{i:04d}")
        assert 0 < largest <= write_limit
        wait_for(lambda: stalled.id in rooms.closes)
        assert rooms.closes[stalled.id][0] == 1008
        assert stalled.id not in {ws.id for ws in wsgiws.group(name).members}


class Recording:
    """A backend that records what it is asked to carry (the GroupBackend contract)."""

    def __init__(self) -> None:
        self.hub: LocalHub | None = None
        self.published: list[Envelope] = []
        self.closed = False

    def start(self, hub: LocalHub) -> None:
        self.hub = hub

    def publish(self, envelope: Envelope) -> None:
        self.published.append(envelope)

    def close(self) -> None:
        self.closed = True


def test_backend_contract(registry: wsgiws.Registry, rooms: Rooms) -> None:
    """A backend gets every message after local delivery and delivers others' through the hub."""
    name = unique()
    backend = Recording()
    wsgiws.set_group_backend(backend)
    assert wsgiws.get_group_backend() is backend and backend.hub is hub
    with serve(registry) as server, clients(server, name) as [(client, cid)]:
        wsgiws.group(name).send("local", exclude="someone")
        assert client.recv(timeout=TIMEOUT) == "local"
        assert wsgiws.send_to(cid, "direct") is True  # local: nothing to carry
        assert client.recv(timeout=TIMEOUT) == "direct"
        assert wsgiws.send_to("elsewhere", b"far") is False
        wsgiws.broadcast(memoryview(b"all"))
        assert client.recv(timeout=TIMEOUT) == b"all"
        assert backend.published == [
            Envelope("group", name, "local", "someone"),
            Envelope("one", "elsewhere", b"far"),
            Envelope("all", "", b"all"),
        ]
        # What another process sent arrives through the hub.
        assert hub.deliver(Envelope("group", name, "remote")) == 1
        assert hub.deliver(Envelope("group", name, "not-you", exclude=cid)) == 0
        assert hub.deliver(Envelope("one", cid, b"to-you")) == 1
        assert client.recv(timeout=TIMEOUT) == "remote"
        assert client.recv(timeout=TIMEOUT) == b"to-you"
    wsgiws.set_group_backend(wsgiws.InMemoryBackend())
    assert backend.closed
    with pytest.raises(TypeError, match="GroupBackend"):
        wsgiws.set_group_backend(object())  # type: ignore[arg-type]


def test_names_are_checked(registry: wsgiws.Registry, rooms: Rooms) -> None:
    """Group names must be non-empty strings."""
    with pytest.raises(ValueError):
        wsgiws.group("")
    with pytest.raises(TypeError):
        wsgiws.group(1)  # type: ignore[arg-type]
    with serve(registry) as server, clients(server) as [(_, cid)]:
        with pytest.raises(ValueError):
            rooms.sockets[cid].join("")
        assert repr(wsgiws.group("a")) == "<Group 'a'>"
        assert wsgiws.group("a") == wsgiws.group("a") != wsgiws.group("b")
        assert len({wsgiws.group("a"), wsgiws.group("a")}) == 1


def test_redis_backend_without_redis_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the redis package, RedisBackend says which extra to install."""
    from wsgiws.redis_groups import RedisBackend

    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ImportError, match=r'pip install "wsgiws\[redis\]"'):
        RedisBackend()


def test_redis_wire_format_round_trips_and_rejects_garbage() -> None:
    """Messages survive pack/unpack; malformed channel data is refused with ValueError."""
    for envelope in (
        Envelope("group", "room with spaces\n", "héllo\nworld", "abc"),
        Envelope("all", "", b"\x00\xff\n"),
        Envelope("one", "0123", ""),
        Envelope("group", "g", "x", ""),
    ):
        received = unpack(pack("host:1:ab", 7, envelope, now=12.5))
        assert (received.origin, received.seq, received.envelope) == (b"host:1:ab", 7, envelope)
        assert received.published == 12.5
    good = pack("o", 1, Envelope("group", "g", "x"))
    assert good.startswith(b"wsgiws/2 o ")
    for bad in (
        b"",
        b"something else\n",
        good.replace(b"wsgiws/2", b"wsgiws/9"),
        good.replace(b" gt ", b" zt "),
        good.replace(b" gt ", b" gx "),
        good.replace(b" gt ", b" g "),
        good.replace(b"o 1 ", b"o one "),
        b"wsgiws/2 o 1 at 0 0 -1\n\xff",
        b"wsgiws/2 o 1 gt 0 9 -1\ng",
        b"wsgiws/2 o 1 gt 0 -1 -1\n",
        b"wsgiws/2 o 1 gt 0 1\ng",
    ):
        with pytest.raises(ValueError):
            unpack(bad)


def test_member_in_a_slow_on_connect_is_bounded_by_write_limit(
    registry: wsgiws.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """Group messages queued while on_connect runs are bounded by write_limit too."""
    name = unique()
    joined, release = threading.Event(), threading.Event()
    connections: list[Session] = []

    @wsgiws.Namespace(r"/slow", registry=registry)
    class Slow(wsgiws.BaseWSClass):
        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            websocket.join(name)
            session = websocket._connection
            assert isinstance(session, Session)
            connections.append(session)
            joined.set()
            release.wait(TIMEOUT)  # a slow authentication, say

    write_limit = 64 * 1024
    with serve(registry, write_limit=write_limit) as server:
        port = int(server.port or 0)
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.sendall(
                f"GET /slow HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            assert joined.wait(TIMEOUT)
            (connection,) = connections
            for _ in range(100):  # 100 kB, more than write_limit
                wsgiws.group(name).send("x" * 1024)
                assert connection.transport.queued_bytes() <= write_limit
            wait_for(lambda: connection.close_code == 1008)
            release.set()
            assert sock.recv(65536) == b""  # dropped before any 101
        wait_for(lambda: hub.find(connection.id) is None)
    assert name not in hub.group_names()
    assert "more than write_limit" in caplog.text


def test_group_send_compresses_once_for_deflate_members(registry: wsgiws.Registry) -> None:
    """Members with and without permessage-deflate each get the message intact."""
    joined = threading.Semaphore(0)

    @wsgiws.Namespace(r"/mixed", registry=registry)
    class Mixed(wsgiws.BaseWSClass):
        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            websocket.join("mixed")
            joined.release()

    text = "a long, repetitive broadcast " * 200
    with (
        serve(registry) as server,
        connect(f"ws://127.0.0.1:{server.port}/mixed") as deflating,
        connect(f"ws://127.0.0.1:{server.port}/mixed", compression=None) as plain,
    ):
        assert joined.acquire(timeout=TIMEOUT) and joined.acquire(timeout=TIMEOUT)
        assert [e.name for e in deflating.protocol.extensions] == ["permessage-deflate"]
        wsgiws.group("mixed").send(text)
        assert deflating.recv(TIMEOUT) == text
        assert plain.recv(TIMEOUT) == text
