"""RedisBackend on its own: a Redis that is not there yet, fork, options."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from websockets.sync.client import connect

import redis
import wsgiws
from wsgiws.groups import Envelope
from wsgiws.protocol import PreparedMessage
from wsgiws.redis_groups import RedisBackend, pack

from ..helpers import FACTOR, TIMEOUT, free_port, serve, wait_for
from .conftest import REDIS_SERVER, RedisServer, Spawner

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
            assert backend.stats.current_outage_lost == 2
            assert "could not be published and are lost (Redis is unreachable)" in caplog.text

            redis_server.start()
            try:
                assert backend.wait_ready(3 * TIMEOUT)
                assert "2 message(s) sent by this process during the outage were lost" in (
                    caplog.text
                )
                stats = backend.stats
                assert stats.connected and stats.outages == 1 and stats.lost == 2
                assert stats.current_outage_lost == 0 and stats.outage_seconds > 0
                # Subscribed to broadcasts and to the group of the member.
                channel = backend.group_channel("absent")
                with contextlib.closing(redis_server.client()) as client:
                    assert client.pubsub_numsub(backend.channel, channel) == [
                        (backend.channel.encode(), 1),
                        (channel.encode(), 1),
                    ]
                # Now messages go through Redis, and come back to no one twice.
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
        ({"health_check_interval": None}, "health_check_interval"),
        ({"backlog_warning": 0}, "backlog_warning"),
        ({"backlog_check_interval": -1}, "backlog_check_interval"),
    ):
        with pytest.raises(ValueError, match=name):
            RedisBackend(**kwargs)
    backend = RedisBackend("redis://user:secret@127.0.0.1:1/0", channel_prefix="app:")
    assert "secret" not in repr(backend) and "user" not in repr(backend)
    assert backend.channel == "app:all" and backend.group_channel("x") == "app:g:x"
    assert not backend.cluster
    backend.close()
    clustered = RedisBackend("redis+cluster://127.0.0.1:1")
    assert clustered.cluster and clustered.url == "redis://127.0.0.1:1"
    assert "cluster=True" in repr(clustered)
    clustered.close()
    with pytest.raises(RuntimeError, match="closed"):
        backend.start(wsgiws.groups.hub)


def test_received_gaps_duplicates_and_garbage_are_reported(
    redis_server: RedisServer, registry: wsgiws.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """A gap in another process's sequence is logged as lost; duplicates and garbage are dropped."""

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
            channel = backend.group_channel("seq")

            def publish(seq: int, text: str) -> None:
                data = pack(origin, seq, Envelope("group", "seq", text))
                other.publish(channel, data)

            publish(1, "one")
            publish(2, "two")
            other.publish(channel, b"not a wsgiws message")
            publish(5, "five")  # 3 and 4 never came
            publish(5, "five again")  # a duplicate sequence number
            publish(4, "late four")  # older than the last one: dropped too
            own = pack(backend.origin, 1, Envelope("group", "seq", "own echo"))
            other.publish(channel, own)  # our own message, echoed: ignored
            publish(6, "six")
            assert [member.recv(timeout=TIMEOUT) for _ in range(4)] == [
                "one",
                "two",
                "five",
                "six",
            ]
        assert "ignoring a malformed message" in caplog.text
        assert f"2 message(s) from {origin} on {channel} did not arrive" in caplog.text
        assert backend.stats.missed == 2 and backend.stats.received == 4
    finally:
        backend.close()


@contextlib.contextmanager
def ready_backend(url: str, **options: Any) -> Iterator[RedisBackend]:
    """A RedisBackend selected for this process, connected, closed afterwards."""
    options.setdefault("reconnect_delay", 0.05)
    options.setdefault("reconnect_max_delay", 0.2)
    backend = RedisBackend(url, **options)
    try:
        wsgiws.set_group_backend(backend)
        assert backend.wait_ready(TIMEOUT)
        yield backend
    finally:
        backend.close()


def member_namespace(registry: wsgiws.Registry) -> None:
    """``/member/<group>`` joins the group in on_connect, then says ``joined``."""

    @wsgiws.Namespace(r"/member/(?P<group>[\w-]+)", registry=registry)
    class Member(wsgiws.BaseWSClass):
        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            websocket.join(websocket.match["group"])
            websocket.send("joined")

        @classmethod
        def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
            websocket.leave(websocket.match["group"])
            websocket.send("left")


def numsub(redis_server: RedisServer, *channels: str) -> list[int]:
    with contextlib.closing(redis_server.client()) as client:
        return [count for _, count in client.pubsub_numsub(*channels)]


def test_subscriptions_follow_membership_and_join_closes_the_race(
    redis_server: RedisServer, registry: wsgiws.Registry
) -> None:
    """A group's channel is subscribed by its first member, and a message published by
    another process right after join() returned reaches the new member, every time."""
    member_namespace(registry)
    with (
        ready_backend(redis_server.url) as backend,
        serve(registry) as server,
        contextlib.closing(redis_server.client()) as other,
    ):
        url = f"ws://127.0.0.1:{server.port}/member"
        for i in range(40):  # each group new, so each join subscribes anew
            name = f"race-{i}"
            channel = backend.group_channel(name)
            with connect(f"{url}/{name}", open_timeout=TIMEOUT) as member:
                assert member.recv(timeout=TIMEOUT) == "joined"
                # No waiting: published the moment join() has returned.
                other.publish(channel, pack("elsewhere:1:x", 1, Envelope("group", name, "hi")))
                assert member.recv(timeout=TIMEOUT) == "hi"
                assert numsub(redis_server, channel) == [1]
                member.send("leave")
                assert member.recv(timeout=TIMEOUT) == "left"
                wait_for(lambda channel=channel: numsub(redis_server, channel) == [0])  # type: ignore[misc]
        # Unsubscribed with its last member: only the broadcast channel is left.
        assert backend.stats.channels == 1
        assert backend.stats.received == 40


def test_leaving_and_joining_again_at_once_keeps_the_subscription(
    redis_server: RedisServer, registry: wsgiws.Registry
) -> None:
    """The last member leaving and one joining right after, whatever the order in which
    Redis answers the unsubscription and the new subscription, leave the group
    subscribed: a message published right after the join arrives, and no outage."""

    @wsgiws.Namespace(r"/flip", registry=registry)
    class Flip(wsgiws.BaseWSClass):
        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            websocket.join("flip")

        @classmethod
        def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
            websocket.leave("flip")
            if message == "pause":
                time.sleep(0.001 * (hash(websocket.id) % 3))
            websocket.join("flip")
            websocket.send("flipped")

    with (
        ready_backend(redis_server.url) as backend,
        serve(registry) as server,
        contextlib.closing(redis_server.client()) as other,
        connect(f"ws://127.0.0.1:{server.port}/flip", open_timeout=TIMEOUT) as member,
    ):
        channel = backend.group_channel("flip")
        for seq in range(1, 61):
            member.send("pause" if seq % 2 else "now")
            assert member.recv(timeout=TIMEOUT) == "flipped"
            other.publish(channel, pack("elsewhere:1:x", seq, Envelope("group", "flip", str(seq))))
            assert member.recv(timeout=TIMEOUT) == str(seq)
        assert backend.stats.outages == 0 and backend.stats.missed == 0


def test_a_silent_redis_is_noticed_within_a_second(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis that stops answering without closing the connection (SIGSTOP) turns
    ``connected`` False within a second; the backend reconnects once it answers again."""
    caplog.set_level(logging.INFO, logger="wsgiws.groups")
    with ready_backend(redis_server.url) as backend:
        assert redis_server.process is not None
        pid = redis_server.process.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            stopped = time.monotonic()
            wait_for(lambda: not backend.connected, timeout=3 * FACTOR)
            noticed = time.monotonic() - stopped
            wsgiws.group("quiet").send("lost while Redis is stopped")
            assert backend.stats.current_outage_lost == 1
        finally:
            os.kill(pid, signal.SIGCONT)
        assert noticed < 1.0 * FACTOR
        assert backend.wait_ready(3 * TIMEOUT)
        stats = backend.stats
        assert stats.outages == 1 and stats.lost == 1 and stats.connected
        assert "PING" in caplog.text
        assert "after an outage of" in caplog.text
        assert "1 message(s) sent by this process during the outage were lost" in caplog.text


def test_a_failed_publish_starts_an_outage_at_once(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """When publishing fails (its connection killed), connected turns False and the
    message is counted lost in that outage, before the subscriber notices anything."""
    caplog.set_level(logging.INFO, logger="wsgiws.groups")
    with (
        ready_backend(redis_server.url) as backend,
        contextlib.closing(redis_server.client()) as admin,
    ):
        wsgiws.group("p").send("first")  # opens the publishing connection
        assert backend.flush(TIMEOUT)
        assert backend.stats.published == 1
        name = f"wsgiws:{os.getpid()}:pub"
        (publisher,) = [c["id"] for c in admin.client_list() if c["name"] == name]
        assert admin.client_kill_filter(_id=publisher) == 1
        wsgiws.group("p").send("second")
        assert backend.flush(TIMEOUT)
        assert backend.stats.lost == 1
        assert backend.stats.outages == 1
        assert backend.wait_ready(TIMEOUT)
        assert "1 message(s) sent by this process during the outage were lost" in caplog.text
        wsgiws.group("p").send("third")
        assert backend.flush(TIMEOUT)
        assert backend.stats.published == 2 and backend.stats.lost == 1


class BlockedHub(wsgiws.groups.LocalHub):
    """A hub whose deliveries from Redis wait until released: a subscriber falling behind."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def deliver_batch(self, batch: list[tuple[Envelope, PreparedMessage]]) -> int:
        self.release.wait(3 * TIMEOUT)
        return 0

    def deliver(self, envelope: Envelope, prepared: PreparedMessage | None = None) -> int:
        self.release.wait(3 * TIMEOUT)
        return 0


def test_a_subscriber_falling_behind_is_reported_long_before_redis_drops_it(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The backlog waiting in Redis is measured, in stats and a warning, once past
    backlog_warning."""
    caplog.set_level(logging.INFO, logger="wsgiws.groups")
    hub = BlockedHub()
    backend = RedisBackend(
        redis_server.url, backlog_warning=256 * 1024, backlog_check_interval=0.05
    )
    try:
        backend.start(hub)
        assert backend.wait_ready(TIMEOUT)
        payload = b"x" * 4096
        with contextlib.closing(redis_server.client()) as other:
            pipe = other.pipeline(transaction=False)
            # 12 MB: more than the socket buffers hold, less than Redis's limits.
            for seq in range(1, 3001):
                pipe.publish(backend.channel, pack("o:1:x", seq, Envelope("all", "", payload)))
            pipe.execute()
        wait_for(lambda: backend.stats.backlog_bytes > 256 * 1024)
        wait_for(lambda: "the subscriber is falling behind" in caplog.text)
        hub.release.set()
        wait_for(lambda: backend.stats.received == 3000, timeout=3 * TIMEOUT)
        wait_for(lambda: backend.stats.backlog_bytes < 256 * 1024)
        assert backend.stats.max_backlog_bytes > 256 * 1024
        assert backend.connected and backend.stats.missed == 0
    finally:
        hub.release.set()
        backend.close()


def test_resp_values_are_parsed_and_commands_encoded() -> None:
    """The RESP2 reader handles every reply type, and waits for a value cut short."""
    from wsgiws.redis_groups import RespError, _command, _Incomplete, _parse

    assert _command("PUBLISH", b"ch", 7) == b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$1\r\n7\r\n"
    data = b"+OK\r\n:42\r\n$-1\r\n*-1\r\n-ERR no\r\n*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nhi\r\n"
    values, pos = [], 0
    while pos < len(data):
        value, pos = _parse(data, pos)
        values.append(value)
    assert values[:4] == [b"OK", 42, None, None]
    assert isinstance(values[4], RespError) and str(values[4]) == "ERR no"
    assert values[5] == [b"message", b"c", b"hi"]
    for cut in (b"$5\r\nab", b"*2\r\n:1\r\n", b":1"):
        with pytest.raises(_Incomplete):
            _parse(cut, 0)
    with pytest.raises(ValueError, match="not RESP2"):
        _parse(b"!oops\r\n", 0)


def test_every_message_is_published_or_counted_lost(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """With a tiny queue, senders faster than Redis lose messages, and each is counted:
    published + lost = sent. After close(), a message is lost at once."""
    caplog.set_level(logging.INFO, logger="wsgiws.groups")
    with ready_backend(redis_server.url, max_pending=1) as backend:
        sent = 2000
        for i in range(sent):
            backend.publish(Envelope("group", "fast", str(i)))
        assert backend.flush(TIMEOUT)
        stats = backend.stats
        assert stats.lost > 0 and stats.published + stats.lost == sent
        assert stats.outages == 0 and stats.connected and stats.pending == 0
        assert "more than max_pending=1 queued" in caplog.text
    backend.publish(Envelope("group", "fast", "after close"))
    assert backend.stats.lost == stats.lost + 1


def test_cluster_mode_against_a_plain_redis_says_why_it_cannot_connect(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """cluster=True on a Redis without cluster support: not connected, and the log says why."""
    caplog.set_level(logging.INFO, logger="wsgiws.groups")
    backend = RedisBackend(redis_server.url, cluster=True, reconnect_delay=0.05)
    try:
        backend.start(wsgiws.groups.hub)
        wait_for(lambda: "CLUSTER SLOTS failed" in caplog.text)
        assert not backend.connected and backend.stats.outages == 1
    finally:
        backend.close()


def test_tls_rediss_url(tmp_path: Path, registry: wsgiws.Registry) -> None:
    """A rediss:// URL (TLS, certificate checked against a CA) works both ways."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    port = free_port()
    args = [REDIS_SERVER, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"]
    args += ["--tls-cert-file", str(tmp_path / "cert.pem")]
    args += ["--tls-key-file", str(tmp_path / "key.pem")]
    args += ["--tls-ca-cert-file", str(tmp_path / "ca.pem"), "--tls-auth-clients", "no"]
    args += ["--save", "", "--appendonly", "no", "--dir", str(tmp_path)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={tmp_path / 'ca.pem'}"
    other = redis.Redis.from_url(url, socket_connect_timeout=2)

    def answers() -> bool:
        try:
            return bool(other.ping())
        except redis.ConnectionError:
            return False

    member_namespace(registry)
    try:
        wait_for(answers, message="redis-server with TLS did not start")
        with (
            ready_backend(url) as backend,
            serve(registry) as server,
            connect(f"ws://127.0.0.1:{server.port}/member/secure", open_timeout=TIMEOUT) as m,
        ):
            assert m.recv(timeout=TIMEOUT) == "joined"
            data = pack("elsewhere:1:x", 1, Envelope("group", "secure", "over TLS"))
            other.publish(backend.group_channel("secure"), data)
            assert m.recv(timeout=TIMEOUT) == "over TLS"
            wsgiws.group("secure").send("and back")
            assert m.recv(timeout=TIMEOUT) == "and back"
            assert backend.flush(TIMEOUT) and backend.stats.published == 1
            assert backend.stats.received == 1 and backend.connected
    finally:
        other.close()
        process.terminate()
        process.wait(TIMEOUT)
