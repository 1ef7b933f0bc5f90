"""Groups across processes through a real redis-server (``RedisBackend``).

Each server is a subprocess running ``tests.redis.group_app``; clients are the
``websockets`` library (or a raw socket for the member that stops reading).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.parse
import urllib.request
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from ..helpers import FACTOR, TIMEOUT, stalled_client, wait_for
from .conftest import RedisServer, Spawner

pytestmark = pytest.mark.redis


#: The first message of each member: ``{"hello": <server pid>, "id": <connection id>}``.
HELLO: weakref.WeakKeyDictionary[ClientConnection, dict[str, Any]] = weakref.WeakKeyDictionary()


def ws_url(port: int | str, path: str) -> str:
    return f"ws://127.0.0.1:{port}{path}"


@contextlib.contextmanager
def members(
    port: int | str, group: str, count: int, **options: Any
) -> Iterator[list[ClientConnection]]:
    """``count`` clients in ``group`` on the server at ``port``, hello already read."""
    with contextlib.ExitStack() as stack:
        clients = []
        for _ in range(count):
            client = stack.enter_context(
                connect(ws_url(port, f"/room/{group}"), open_timeout=TIMEOUT, **options)
            )
            hello = json.loads(client.recv(timeout=TIMEOUT))
            assert "hello" in hello
            HELLO[client] = hello
            clients.append(client)
        yield clients


def command(ctl: ClientConnection, **cmd: Any) -> Any:
    """Send one command to a ``/ctl`` connection and return its answer."""
    ctl.send(json.dumps(cmd))
    return json.loads(ctl.recv(timeout=3 * TIMEOUT))


def http_get(port: int | str, path: str, **query: str) -> Any:
    url = f"http://127.0.0.1:{port}{path}?{urllib.parse.urlencode(query)}"
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        return json.loads(response.read())


def expect_all(clients: list[ClientConnection], message: str) -> None:
    """Each client's next message is ``message``."""
    for client in clients:
        assert client.recv(timeout=TIMEOUT) == message


def test_members_in_two_processes_get_messages_from_a_third_process_and_a_wsgi_view(
    redis_server: RedisServer, spawn: Spawner
) -> None:
    """Members on two servers get each message of a script and a WSGI view exactly once."""
    a = spawn.app("serve", redis_server.url, name="a")
    b = spawn.app("serve", redis_server.url, name="b")
    view = spawn.app("wsgi", redis_server.url, name="view")
    port_a, port_b, port_view = a.expect("PORT"), b.expect("PORT"), view.expect("PORT")
    with (
        members(port_a, "lobby", 2) as on_a,
        members(port_b, "lobby", 2) as on_b,
        members(port_a, "elsewhere", 1) as outsiders,
    ):
        lobby = on_a + on_b
        script = spawn.app(
            "send", redis_server.url, "--group", "lobby", "--text", "from-script", name="script"
        )
        assert script.process.wait(3 * TIMEOUT) == 0, script.stderr()
        expect_all(lobby, "from-script")

        assert http_get(port_view, "/send", group="lobby", text="from-view")["ok"] == "send"
        expect_all(lobby, "from-view")

        # Exactly once: the next message after both is the end marker, for everyone.
        http_get(port_view, "/send", group="lobby", text="end")
        expect_all(lobby, "end")
        # The member of another group got none of them.
        http_get(port_view, "/send", group="elsewhere", text="marker")
        expect_all(outsiders, "marker")


def test_send_to_and_broadcast_reach_connections_in_other_processes(
    redis_server: RedisServer, spawn: Spawner
) -> None:
    """send_to finds a connection of another process; broadcast reaches every connection."""
    a = spawn.app("serve", redis_server.url, name="a")
    b = spawn.app("serve", redis_server.url, name="b")
    port_a, port_b = a.expect("PORT"), b.expect("PORT")
    with (
        connect(ws_url(port_a, "/ctl"), open_timeout=TIMEOUT) as ctl_a,
        connect(ws_url(port_b, "/room/x"), open_timeout=TIMEOUT) as on_b,
        connect(ws_url(port_a, "/room/y"), open_timeout=TIMEOUT) as on_a,
    ):
        id_b = json.loads(on_b.recv(timeout=TIMEOUT))["id"]
        id_a = json.loads(on_a.recv(timeout=TIMEOUT))["id"]

        assert command(ctl_a, op="send_to", id=id_b, text="to-b") == {
            "ok": "send_to",
            "local": False,
        }
        assert on_b.recv(timeout=TIMEOUT) == "to-b"
        assert command(ctl_a, op="send_to", id=id_a, text="to-a") == {
            "ok": "send_to",
            "local": True,
        }
        assert on_a.recv(timeout=TIMEOUT) == "to-a"

        # The /ctl connection is a connection too: it gets the broadcast (delivered
        # in this process at once) before the command's answer.
        ctl_a.send(json.dumps({"op": "broadcast", "text": "everyone"}))
        assert ctl_a.recv(timeout=TIMEOUT) == "everyone"
        assert json.loads(ctl_a.recv(timeout=TIMEOUT)) == {"ok": "broadcast"}
        expect_all([on_a, on_b], "everyone")


def status(ctl: ClientConnection) -> dict[str, Any]:
    result: dict[str, Any] = command(ctl, op="status")
    return result


def test_redis_restart_loss_is_counted_in_its_outage_and_equals_the_measured_loss(
    redis_server: RedisServer, spawn: Spawner
) -> None:
    """Both processes see connected False within a second of Redis stopping; what one
    sends meanwhile reaches its own members only; its reported loss is exactly what the
    other process's member missed, logged with the outage's length once Redis is back."""
    a = spawn.app("serve", redis_server.url, name="a")
    b = spawn.app("serve", redis_server.url, name="b")
    port_a, port_b = a.expect("PORT"), b.expect("PORT")
    with (
        connect(ws_url(port_a, "/ctl"), open_timeout=TIMEOUT) as ctl_a,
        connect(ws_url(port_b, "/ctl"), open_timeout=TIMEOUT) as ctl_b,
        members(port_a, "g", 1) as on_a,
        members(port_b, "g", 1) as on_b,
    ):
        command(ctl_a, op="send", group="g", text="m0")
        expect_all(on_a + on_b, "m0")

        redis_server.stop()
        stopped = time.monotonic()
        noticed: dict[str, float] = {}
        while len(noticed) < 2 and time.monotonic() - stopped < TIMEOUT:
            for name, ctl in (("a", ctl_a), ("b", ctl_b)):
                if name not in noticed and not status(ctl)["connected"]:
                    noticed[name] = time.monotonic() - stopped
        assert len(noticed) == 2 and max(noticed.values()) < 1.0 * FACTOR, noticed

        sent_in_outage = [f"m{i}" for i in range(1, 6)]
        for text in sent_in_outage:
            command(ctl_a, op="send", group="g", text=text)
            expect_all(on_a, text)  # local members are still served
        during = status(ctl_a)["stats"]
        assert during["current_outage_lost"] == len(sent_in_outage) == during["lost"]
        assert during["outages"] == 1 and not during["connected"]

        redis_server.start()
        wait_for(
            lambda: status(ctl_a)["connected"] and status(ctl_b)["connected"],
            timeout=3 * TIMEOUT,
            message="the servers did not reconnect to Redis",
        )
        a.wait_log(f"{len(sent_in_outage)} message(s) sent by this process during the outage")
        assert "after an outage of" in a.stderr()

        command(ctl_a, op="send", group="g", text="after")
        expect_all(on_a, "after")
        # What reached b's member of the outage's messages, before "after": nothing.
        arrived: list[str | bytes] = []
        while (message := on_b[0].recv(timeout=TIMEOUT)) != "after":
            arrived.append(message)
        measured_loss = len(sent_in_outage) - len(arrived)
        assert arrived == [] and measured_loss == status(ctl_a)["stats"]["lost"]
        command(ctl_b, op="send", group="g", text="from-b")
        expect_all(on_a + on_b, "from-b")
        assert status(ctl_b)["stats"]["lost"] == 0


def test_a_process_receives_only_the_messages_of_its_groups(
    redis_server: RedisServer, spawn: Spawner
) -> None:
    """A process with no member in a group gets none of its messages from Redis."""
    a = spawn.app("serve", redis_server.url, name="a")
    b = spawn.app("serve", redis_server.url, name="b")
    port_a, port_b = a.expect("PORT"), b.expect("PORT")
    with (
        connect(ws_url(port_a, "/ctl"), open_timeout=TIMEOUT) as ctl_a,
        connect(ws_url(port_b, "/ctl"), open_timeout=TIMEOUT) as ctl_b,
        members(port_a, "only-a", 1) as on_a,
        members(port_b, "only-b", 1) as on_b,
        members(port_b, "both", 1) as both_b,
        members(port_a, "both", 1) as both_a,
    ):
        for _ in range(20):
            command(ctl_b, op="send", group="only-b", text="b")
            command(ctl_a, op="send", group="only-a", text="a")
        command(ctl_b, op="send", group="both", text="shared")
        expect_all(both_a + both_b, "shared")
        assert [on_b[0].recv(timeout=TIMEOUT) for _ in range(20)] == ["b"] * 20
        assert [on_a[0].recv(timeout=TIMEOUT) for _ in range(20)] == ["a"] * 20
        # a received only b's message to "both"; b none of a's messages.
        assert status(ctl_a)["stats"]["received"] == 1
        assert status(ctl_b)["stats"]["received"] == 0
        assert status(ctl_a)["stats"]["channels"] == 3  # all, only-a, both


def test_exactly_once_and_in_order_while_members_join_and_leave_under_traffic(
    redis_server: RedisServer, spawn: Spawner
) -> None:
    """Chat-like traffic in several groups over two processes while other members
    come and go: every member gets each sender's messages exactly once, in order, with
    no gap from its first message on, and the last one of each sender."""
    a = spawn.app("serve", redis_server.url, name="a")
    b = spawn.app("serve", redis_server.url, name="b")
    ports = [a.expect("PORT"), b.expect("PORT")]
    groups, per_group, count = 3, 4, 60
    deadline = time.monotonic() + 6 * TIMEOUT

    def check(received: list[str], sender_ids: set[str]) -> dict[str, list[int]]:
        by_sender: dict[str, list[int]] = {}
        for text in received:
            sender, _, number = text.partition(":")
            by_sender.setdefault(sender, []).append(int(number))
        for sender, numbers in by_sender.items():
            assert sender in sender_ids
            assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), (
                f"{sender}: not exactly once and in order: {numbers}"
            )
        return by_sender

    with contextlib.ExitStack() as stack:
        stable: list[tuple[str, ClientConnection]] = []
        for g in range(groups):
            for i in range(per_group):
                port = ports[i % 2]
                client = stack.enter_context(
                    connect(ws_url(port, f"/room/churn{g}"), open_timeout=TIMEOUT, max_queue=None)
                )
                json.loads(client.recv(timeout=TIMEOUT))
                stable.append((f"churn{g}", client))
        results: dict[int, list[str]] = {}
        churn_results: list[tuple[str, list[str]]] = []
        stop_churn = threading.Event()
        errors: list[BaseException] = []

        def sender(n: int, client: ClientConnection) -> None:
            try:
                for i in range(count):
                    client.send(f"s{n}:{i}")
                    if i % 10 == 0:
                        time.sleep(0.005)
            except BaseException as exc:  # reported by the test thread
                errors.append(exc)

        def receiver(n: int, client: ClientConnection) -> None:
            got: list[str] = []
            want = count * per_group
            try:
                while len(got) < want and time.monotonic() < deadline:
                    got.append(str(client.recv(timeout=3 * TIMEOUT)))
            except BaseException as exc:
                errors.append(exc)
            results[n] = got

        def churner(k: int) -> None:
            rounds = 0
            while not stop_churn.is_set() and rounds < 40 and time.monotonic() < deadline:
                group = f"churn{(k + rounds) % groups}"
                with connect(
                    ws_url(ports[(k + rounds) % 2], f"/room/{group}"), open_timeout=TIMEOUT
                ) as client:
                    json.loads(client.recv(timeout=TIMEOUT))
                    got = []
                    with contextlib.suppress(TimeoutError):
                        for _ in range(20):
                            got.append(str(client.recv(timeout=0.2)))
                    churn_results.append((group, got))
                rounds += 1

        threads = [threading.Thread(target=churner, args=(k,)) for k in range(4)]
        threads += [
            threading.Thread(target=receiver, args=(n, c)) for n, (_, c) in enumerate(stable)
        ]
        threads += [threading.Thread(target=sender, args=(n, c)) for n, (_, c) in enumerate(stable)]
        for thread in threads:
            thread.start()
        for thread in threads[4:]:
            thread.join(6 * TIMEOUT)
        stop_churn.set()
        for thread in threads[:4]:
            thread.join(6 * TIMEOUT)
        assert not errors, errors
        group_of = {n: g for n, (g, _) in enumerate(stable)}
        for n, got in results.items():
            senders = {f"s{m}" for m, g in group_of.items() if g == group_of[n]}
            by_sender = check(got, senders)
            # Stable members were there from the start: everything, from 0 to the last.
            assert {s: (v[0], len(v)) for s, v in by_sender.items()} == {
                s: (0, count) for s in senders
            }
        assert churn_results
        for group, got in churn_results:
            check(got, {f"s{m}" for m, g in group_of.items() if g == group})


def test_a_member_that_stops_reading_is_closed_and_delays_no_one(
    redis_server: RedisServer, spawn: Spawner
) -> None:
    """A stalled member is closed with 1008 within write_limit; the others get every message."""
    write_limit = 1024 * 1024
    # 12 MB in all, far more than write_limit and the kernel's buffers hold, sent in
    # rounds of 400 kB so that the readers never lag by anything near write_limit.
    rounds, count, size = 30, 50, 8 * 1024
    a = spawn.app("serve", redis_server.url, "--write-limit", str(write_limit), name="a")
    b = spawn.app("serve", redis_server.url, name="b")
    port_a, port_b = a.expect("PORT"), b.expect("PORT")
    with (
        connect(ws_url(port_a, "/ctl"), open_timeout=TIMEOUT) as ctl_a,
        connect(ws_url(port_b, "/ctl"), open_timeout=TIMEOUT) as ctl_b,
        # The readers' client threads read as fast as the server writes.
        members(port_a, "feed", 2, max_queue=None) as readers,
        contextlib.closing(stalled_client(int(port_a), "/room/feed")),
    ):
        before = command(ctl_a, op="members", group="feed")
        assert len(before["buffers"]) == 3
        (stalled_id,) = set(before["buffers"]) - {HELLO[r]["id"] for r in readers}

        largest = [0]
        sampling = threading.Event()

        def sample() -> None:
            with connect(ws_url(port_a, "/ctl"), open_timeout=TIMEOUT) as probe:
                while not sampling.is_set():
                    sizes = command(probe, op="members", group="feed")["buffers"].values()
                    largest[0] = max([largest[0], *sizes])

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            for _ in range(rounds):
                flood = command(ctl_b, op="flood", group="feed", count=count, size=size)
                assert flood == {"ok": "flood"}
                for reader in readers:
                    for i in range(count):
                        message = reader.recv(timeout=3 * TIMEOUT)
                        assert isinstance(message, str) and message.startswith(f"{i:08d}")
        finally:
            sampling.set()
            sampler.join(TIMEOUT)

        wait_for(lambda: command(ctl_a, op="members", group="feed")["closed"])
        after = command(ctl_a, op="members", group="feed")
        assert stalled_id not in after["buffers"]  # it left the group
        assert after["closed"] == {stalled_id: 1008}
        assert largest[0] <= write_limit
        a.wait_log("client is not reading")
