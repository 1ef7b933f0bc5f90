"""Groups across processes through a real redis-server (``RedisBackend``).

Each server is a subprocess running ``tests.redis.group_app``; clients are the
``websockets`` library (or a raw socket for the member that stops reading).
"""

from __future__ import annotations

import contextlib
import json
import threading
import urllib.parse
import urllib.request
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from ..helpers import TIMEOUT, stalled_client, wait_for
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


def test_redis_restart_is_survived_and_the_loss_is_logged(
    redis_server: RedisServer, spawn: Spawner
) -> None:
    """Without Redis local members are served and losses logged; after its restart all is back."""
    a = spawn.app("serve", redis_server.url, name="a")
    b = spawn.app("serve", redis_server.url, name="b")
    port_a, port_b = a.expect("PORT"), b.expect("PORT")
    with (
        connect(ws_url(port_a, "/ctl"), open_timeout=TIMEOUT) as ctl_a,
        connect(ws_url(port_b, "/ctl"), open_timeout=TIMEOUT) as ctl_b,
        members(port_a, "g", 1) as on_a,
        members(port_b, "g", 1) as on_b,
    ):
        command(ctl_a, op="send", group="g", text="m1")
        expect_all(on_a + on_b, "m1")

        redis_server.stop()
        wait_for(
            lambda: not status(ctl_a)["connected"] and not status(ctl_b)["connected"],
            message="the servers did not notice that Redis went away",
        )
        a.wait_log("lost the connection to redis://127.0.0.1")

        command(ctl_a, op="send", group="g", text="m2")
        expect_all(on_a, "m2")  # local members are still served
        assert status(ctl_a)["lost"] == 1
        a.wait_log("1 message(s) could not be published and are lost")

        redis_server.start()
        wait_for(
            lambda: status(ctl_a)["connected"] and status(ctl_b)["connected"],
            timeout=3 * TIMEOUT,
            message="the servers did not reconnect to Redis",
        )
        a.wait_log("1 message(s) sent by this process while cut off were lost")

        command(ctl_a, op="send", group="g", text="m3")
        expect_all(on_a + on_b, "m3")  # m2 never reached b: its next message is m3
        command(ctl_b, op="send", group="g", text="m4")
        expect_all(on_a + on_b, "m4")


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
