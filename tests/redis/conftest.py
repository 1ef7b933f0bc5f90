"""Fixtures of the Redis group tests: a real ``redis-server`` and server subprocesses.

Every test here carries the ``redis`` marker (``-m "not redis"`` leaves them out).
The Redis server is the Debian ``redis-server`` binary, started on a free loopback
port for each test and stopped afterwards; the tests skip only when the binary is
not installed.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from redis.crc import key_slot

import redis

from ..helpers import TIMEOUT, free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
REDIS_SERVER = shutil.which("redis-server") or (
    "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
)


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1, without persistence."""

    def __init__(self, workdir: Path, extra: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.extra = extra
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start on the current port (a free one the first time) and wait for PING."""
        assert REDIS_SERVER is not None
        for _ in range(5):
            port = self.port or self._free_port()
            log = open(self.workdir / "redis.log", "ab")  # noqa: SIM115 - owned by Popen
            self.process = subprocess.Popen(
                [
                    REDIS_SERVER,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.workdir),
                    "--daemonize",
                    "no",
                    *self.extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            log.close()
            if self._wait_ping(port):
                self.port = port
                return
            self.stop()
            if self.port:
                break  # a restart must keep its port: do not try another one
        raise RuntimeError(f"redis-server did not start; see {self.workdir / 'redis.log'}")

    def _free_port(self) -> int:
        return free_port()

    def _wait_ping(self, port: int) -> bool:
        deadline = time.monotonic() + TIMEOUT
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
        try:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    return False  # exited: the port was taken meanwhile
                try:
                    if client.ping():
                        return True
                except redis.ConnectionError:
                    time.sleep(0.02)
            return False
        finally:
            client.close()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and wait for it to exit."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(TIMEOUT)

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=2)


def raw(client: redis.Redis) -> Any:
    """``client`` for ``execute_command``, which redis-py does not type."""
    return client


class ClusterNode(RedisServer):
    """A redis-server in cluster mode; its cluster bus port (port + 10000) must be free."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(
            workdir,
            (
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "1000",
                "--cluster-require-full-coverage",
                "no",
            ),
        )

    def _free_port(self) -> int:
        for _ in range(50):
            port = free_port()
            if port + 10000 >= 65536:
                continue
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port
        raise RuntimeError("no free port with a free cluster bus port")


class RedisCluster:
    """Three master nodes on 127.0.0.1 sharing the 16384 slots, no replicas."""

    SLOTS = 16384

    def __init__(self, workdir: Path, size: int = 3) -> None:
        self.nodes = [ClusterNode(workdir / f"node{i}") for i in range(size)]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        with contextlib.closing(self.nodes[0].client()) as client:
            version = str(client.info("server")["redis_version"])
        if int(version.split(".")[0]) < 7:
            pytest.skip(f"sharded pub/sub needs Redis 7 or later, this is {version}")
        share = self.SLOTS // len(self.nodes)
        for i, node in enumerate(self.nodes):
            last = self.SLOTS - 1 if i == len(self.nodes) - 1 else (i + 1) * share - 1
            with contextlib.closing(node.client()) as client:
                raw(client).execute_command("CLUSTER", "ADDSLOTSRANGE", i * share, last)
        with contextlib.closing(self.nodes[0].client()) as first:
            for node in self.nodes[1:]:
                raw(first).execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
        self.wait_ok()

    def wait_ok(self) -> None:
        """Wait until every node reports the cluster ok and knows every node's slots."""

        def ok() -> bool:
            for node in self.nodes:
                with contextlib.closing(node.client()) as client:
                    try:
                        info = raw(client).execute_command("CLUSTER", "INFO")
                        slots = raw(client).execute_command("CLUSTER", "SLOTS")
                    except redis.RedisError:
                        return False
                text = info.decode() if isinstance(info, bytes) else str(info)
                if "cluster_state:ok" not in text or len(slots) != len(self.nodes):
                    return False
            return True

        wait_for(ok, 6 * TIMEOUT, "the cluster did not become ok")

    def node_of(self, channel: str) -> ClusterNode:
        """The node serving ``channel``'s hash slot."""
        slot = key_slot(channel.encode())
        share = self.SLOTS // len(self.nodes)
        return self.nodes[min(slot // share, len(self.nodes) - 1)]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    """Three real redis-server nodes in cluster mode (Redis 7+ for sharded pub/sub)."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    cluster = RedisCluster(tmp_path / "cluster")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, stopped after the test."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Proc:
    """A subprocess whose stdout lines are read by a thread, with its stderr in a file."""

    def __init__(
        self,
        args: list[str],
        log: Path,
        env: dict[str, str] | None = None,
        pass_fds: tuple[int, ...] = (),
    ) -> None:
        self.log = log
        full_env = {**os.environ, **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), full_env.get("PYTHONPATH", "")) if p
        )
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        with open(log, "ab") as stderr:
            self.process = subprocess.Popen(
                args,
                cwd=REPO,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                pass_fds=pass_fds,
                start_new_session=True,
            )
        self.lines: queue.Queue[str] = queue.Queue()
        assert self.process.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))

    def expect(self, prefix: str, timeout: float = 3 * TIMEOUT) -> str:
        """Return the rest of the first stdout line starting with ``prefix``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or (self.process.poll() is not None and self.lines.empty()):
                raise AssertionError(
                    f"no {prefix!r} line from {self.process.args!r}; log:\n{self.stderr()}"
                )
            try:
                line = self.lines.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue
            if line.startswith(prefix):
                return line[len(prefix) :].strip()

    def stderr(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_log(self, text: str, timeout: float = TIMEOUT) -> None:
        """Wait until ``text`` appears in the process's log."""
        wait_for(lambda: text in self.stderr(), timeout, f"{text!r} not logged:\n{self.stderr()}")

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it if needed, and reap the process."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(TIMEOUT)
        # Workers of a stopped master may linger briefly; make sure none is left.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.process.stdout is not None:
            self.process.stdout.close()


class Spawner:
    """Starts subprocesses for one test and stops all of them afterwards."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[Proc] = []

    def __call__(
        self,
        *args: str,
        name: str,
        env: dict[str, str] | None = None,
        pass_fds: tuple[int, ...] = (),
    ) -> Proc:
        proc = Proc(list(args), self.tmp_path / f"{name}.log", env, pass_fds)
        self.procs.append(proc)
        return proc

    def app(self, mode: str, redis_url: str, *extra: str, name: str) -> Proc:
        """Run ``tests.redis.group_app`` in ``mode``."""
        return self(
            sys.executable,
            "-m",
            "tests.redis.group_app",
            mode,
            "--redis",
            redis_url,
            *extra,
            name=name,
        )

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawner]:
    """Start subprocesses; each is stopped (its whole process group) after the test."""
    spawner = Spawner(tmp_path)
    try:
        yield spawner
    finally:
        spawner.stop_all()
