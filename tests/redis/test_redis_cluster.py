"""Groups over a real three-node Redis Cluster with sharded pub/sub (SSUBSCRIBE)."""

from __future__ import annotations

import contextlib
import json

import pytest
from websockets.sync.client import ClientConnection, connect

from ..helpers import TIMEOUT, wait_for
from .conftest import RedisCluster, Spawner, raw
from .test_redis_groups import command, expect_all, members, status, ws_url

pytestmark = pytest.mark.redis


def groups_on_every_node(cluster: RedisCluster, per_node: int = 1) -> dict[int, list[str]]:
    """Group names whose channels live on each node (by node index)."""
    found: dict[int, list[str]] = {i: [] for i in range(len(cluster.nodes))}
    n = 0
    while any(len(names) < per_node for names in found.values()):
        name = f"shard{n}"
        index = cluster.nodes.index(cluster.node_of(f"wsgiws:g:{name}"))
        if len(found[index]) < per_node:
            found[index].append(name)
        n += 1
    return found


def shardnumsub(cluster: RedisCluster, channel: str) -> int:
    node = cluster.node_of(channel)
    with contextlib.closing(node.client()) as client:
        reply = raw(client).execute_command("PUBSUB", "SHARDNUMSUB", channel)
    return int(reply[1])


def test_groups_spread_over_the_shards_and_survive_a_node_restart(
    redis_cluster: RedisCluster, spawn: Spawner
) -> None:
    """Members on two processes get each group's messages once, through the shard that
    owns the group's channel; a restarted node is noticed, and all is back after it."""
    by_node = groups_on_every_node(redis_cluster)
    names = [name for names in by_node.values() for name in names]
    a = spawn.app("serve", redis_cluster.url, name="a")
    b = spawn.app("serve", redis_cluster.url, name="b")
    port_a, port_b = a.expect("PORT"), b.expect("PORT")
    with contextlib.ExitStack() as stack:
        ctl_a = stack.enter_context(connect(ws_url(port_a, "/ctl"), open_timeout=TIMEOUT))
        ctl_b = stack.enter_context(connect(ws_url(port_b, "/ctl"), open_timeout=TIMEOUT))
        rooms: dict[str, list[ClientConnection]] = {}
        for name in names:
            rooms[name] = stack.enter_context(members(port_a, name, 1)) + stack.enter_context(
                members(port_b, name, 1)
            )
            # Sharded subscriptions, on the node that owns the channel: one per process.
            assert shardnumsub(redis_cluster, f"wsgiws:g:{name}") == 2

        def round_trip(tag: str) -> None:
            for name in names:
                command(ctl_a, op="send", group=name, text=f"{tag}-a-{name}")
                command(ctl_b, op="send", group=name, text=f"{tag}-b-{name}")
            for name in names:
                for client in rooms[name]:
                    got = {client.recv(timeout=TIMEOUT) for _ in range(2)}
                    assert got == {f"{tag}-a-{name}", f"{tag}-b-{name}"}

        round_trip("before")
        # A broadcast reaches every connection of both processes once.
        ctl_a.send(json.dumps({"op": "broadcast", "text": "everyone"}))
        assert ctl_a.recv(timeout=TIMEOUT) == "everyone"  # delivered here before the answer
        assert json.loads(ctl_a.recv(timeout=TIMEOUT)) == {"ok": "broadcast"}
        assert ctl_b.recv(timeout=TIMEOUT) == "everyone"
        for clients in rooms.values():
            expect_all(clients, "everyone")

        restarted = redis_cluster.nodes[0]  # the one the URL names
        restarted.stop()
        wait_for(
            lambda: not status(ctl_a)["connected"] and not status(ctl_b)["connected"],
            message="the servers did not notice that a node went away",
        )
        restarted.start()
        redis_cluster.wait_ok()
        wait_for(
            lambda: status(ctl_a)["connected"] and status(ctl_b)["connected"],
            timeout=6 * TIMEOUT,
            message="the servers did not reconnect to the cluster",
        )
        round_trip("after")
        assert all(shardnumsub(redis_cluster, f"wsgiws:g:{n}") == 2 for n in names)
        for ctl in (ctl_a, ctl_b):
            stats = status(ctl)["stats"]
            assert stats["outages"] == 1 and stats["lost"] == 0, stats
