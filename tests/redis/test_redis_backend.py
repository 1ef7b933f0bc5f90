"""RedisBackend on its own: a Redis that is not there yet, fork, options."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

import wsgiws
from wsgiws.redis_groups import RedisBackend

from ..helpers import TIMEOUT, free_port, serve, wait_for
from .conftest import RedisServer, Spawner

pytestmark = pytest.mark.redis


@pytest.fixture(autouse=True)
def in_memory_backend_after() -> Iterator[None]:
    """Each test ends with the default in-memory backend back in place."""
    yield
    wsgiws.set_group_backend(wsgiws.InMemoryBackend())


def test_redis_absent_at_start_then_there(
    tmp_path: Path, registry: wsgiws.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """Without Redis, local members are served and losses logged; it connects once Redis starts."""
    redis_server = RedisServer(tmp_path)
    redis_server.port = free_port()  # nothing listens there yet
    backend = RedisBackend(redis_server.url, reconnect_delay=0.05, reconnect_max_delay=0.2)
    caplog.set_level(logging.INFO, logger="wsgiws.groups")

    @wsgiws.Namespace(r"/member", registry=registry)
    class Member(wsgiws.BaseWSClass):
        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            websocket.join("absent")

    try:
        wsgiws.set_group_backend(backend)
        with (
            serve(registry) as server,
            connect(f"ws://127.0.0.1:{server.port}/member", open_timeout=TIMEOUT) as member,
        ):
            wait_for(lambda: "cannot connect to redis://127.0.0.1" in caplog.text)
            assert not backend.connected and not backend.wait_ready(0.01)
            wsgiws.group("absent").send("local-1")
            wsgiws.group("absent").send("local-2")
            assert member.recv(timeout=TIMEOUT) == "local-1"
            assert member.recv(timeout=TIMEOUT) == "local-2"
            assert backend.lost_messages == 2
            assert "could not be published and are lost (Redis is unreachable)" in caplog.text

            redis_server.start()
            try:
                assert backend.wait_ready(3 * TIMEOUT)
                assert "2 message(s) sent by this process while cut off were lost" in caplog.text
                # Now messages go through Redis, and come back to no one twice.
                with contextlib.closing(redis_server.client()) as client:
                    assert client.pubsub_numsub(backend.channel) == [(backend.channel.encode(), 1)]
                wsgiws.group("absent").send("through")
                assert backend.flush(TIMEOUT)
                assert member.recv(timeout=TIMEOUT) == "through"
                assert backend.lost_messages == 2
            finally:
                backend.close()
                redis_server.stop()
    finally:
        backend.close()
    assert "2 message(s) were lost in this process in all" in caplog.text


def test_fork_restarts_the_backend_in_the_child(redis_server: RedisServer, spawn: Spawner) -> None:
    """After os.fork() the child has its own origin and threads, and both processes publish."""
    server = spawn.app("serve", redis_server.url, name="server")
    port = server.expect("PORT")
    with connect(f"ws://127.0.0.1:{port}/room/forked", open_timeout=TIMEOUT) as member:
        assert "hello" in json.loads(member.recv(timeout=TIMEOUT))
        forker = spawn.app(
            "fork", redis_server.url, "--group", "forked", "--text", "hi", name="fork"
        )
        assert forker.expect("CHILD") == "0", forker.stderr()
        assert member.recv(timeout=TIMEOUT) == "hi from the child"
        assert member.recv(timeout=TIMEOUT) == "hi from the parent"


def test_options_are_checked() -> None:
    """Wrong option values are refused with ValueError naming the option."""
    for kwargs, name in (
        ({"url": ""}, "url"),
        ({"max_pending": 0}, "max_pending"),
        ({"reconnect_delay": 0}, "reconnect_delay"),
        ({"reconnect_max_delay": -1}, "reconnect_max_delay"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"health_check_interval": True}, "health_check_interval"),
    ):
        with pytest.raises(ValueError, match=name):
            RedisBackend(**kwargs)
    backend = RedisBackend("redis://user:secret@127.0.0.1:1/0", channel_prefix="app:")
    assert "secret" not in repr(backend) and "user" not in repr(backend)
    assert backend.channel == "app:messages"
    backend.close()
    with pytest.raises(RuntimeError, match="closed"):
        backend.start(wsgiws.groups.hub)


def test_received_gaps_duplicates_and_garbage_are_reported(
    redis_server: RedisServer, registry: wsgiws.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """A gap in another process's sequence is logged as lost; duplicates and garbage are dropped."""
    from wsgiws.groups import Envelope
    from wsgiws.redis_groups import pack

    @wsgiws.Namespace(r"/member", registry=registry)
    class Member(wsgiws.BaseWSClass):
        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            websocket.join("seq")

    caplog.set_level(logging.INFO, logger="wsgiws.groups")
    backend = RedisBackend(redis_server.url)
    try:
        wsgiws.set_group_backend(backend)
        assert backend.wait_ready(TIMEOUT)
        with (
            serve(registry) as server,
            connect(f"ws://127.0.0.1:{server.port}/member", open_timeout=TIMEOUT) as member,
            contextlib.closing(redis_server.client()) as other,
        ):
            origin = "elsewhere:1:abcd"

            def publish(seq: int, text: str) -> None:
                data = pack(origin, seq, Envelope("group", "seq", text))
                other.publish(backend.channel, data)

            publish(1, "one")
            publish(2, "two")
            other.publish(backend.channel, b"not a wsgiws message")
            publish(5, "five")  # 3 and 4 never came
            publish(5, "five again")  # a duplicate sequence number
            publish(4, "late four")  # older than the last one: dropped too
            own = pack(backend.origin, 1, Envelope("group", "seq", "own echo"))
            other.publish(backend.channel, own)  # our own message, echoed: ignored
            publish(6, "six")
            assert [member.recv(timeout=TIMEOUT) for _ in range(4)] == [
                "one",
                "two",
                "five",
                "six",
            ]
        assert "ignoring a malformed message" in caplog.text
        assert f"2 message(s) from {origin} did not arrive" in caplog.text
    finally:
        backend.close()
