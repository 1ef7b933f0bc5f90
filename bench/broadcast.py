"""Broadcast benchmark: wsgiws groups against the ``websockets`` library's ``broadcast()``.

    python bench/broadcast.py [--quick] [--repeat N] [--no-redis] [--json PATH]

1,000 clients join one group; one of them asks the server to send 100 binary
messages of 64 B to the group. Reported: deliveries per second (100,000 / time to
the last delivery) and the time from the request to the last message reaching the
last client. Configurations, measured in the same run, round-robin:

* ``wsgiws``: one ``wsgiws.Server`` process, ``wsgiws.group("g").send()`` (the frame
  is encoded once and the same bytes are queued to every member);
* ``websockets-asyncio``: ``websockets.asyncio.server.serve`` with
  ``websockets.broadcast()``;
* ``wsgiws-redis-2proc``: two ``wsgiws.Server`` processes on one port
  (``reuse_port=True``) and a real ``redis-server``, like two gunicorn workers: the
  clients are spread over both, and half of the members get each message through
  Redis (skipped with a reason when ``redis-server`` is not installed).

The clients are the load generator of ``bench/run.py``, scenario ``broadcast``:
``bench/loadgen/wsgen.c`` (C, compiled for the run) when a C compiler is there,
else ``bench/loadgen/loadgen.mjs`` (Node.js; ``--generator node`` to choose it).
Both count frames straight off their sockets so that they are not the
bottleneck: the generator's CPU time per delivery is printed. This script
reuses ``run.py``'s servers, parameters and helpers; ``run.py --scenarios
broadcast`` runs the first two configurations too.
Loopback only; every phase is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import run  # noqa: E402

SUBJECT = "wsgiws"
PEER = "websockets-asyncio"
REDIS_CONFIG = "wsgiws-redis-2proc"
SCENARIO = next(s for s in run.SCENARIOS if s.key == "broadcast")


@dataclass
class Measure:
    config: str
    ok: bool
    reason: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    server_cpu_frac: float | None = None

    @property
    def rate(self) -> float | None:
        value = self.data.get("deliveries_per_s")
        return float(value) if self.ok and value else None


class Servers:
    """One or more server subprocesses listening on one port."""

    def __init__(self, commands: list[list[str]], env: dict[str, str], cwd: Path) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.logs: list[Any] = []
        self.port = 0
        try:
            for command in commands:
                if self.port:
                    command = [*command, "--port", str(self.port)]
                log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed in stop()
                proc = subprocess.Popen(
                    command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=log, text=True
                )
                self.procs.append(proc)
                self.logs.append(log)
                port = self._read_port(proc, timeout=60.0)
                self.port = self.port or port
        except BaseException:
            self.stop()
            raise

    def _read_port(self, proc: subprocess.Popen[str], timeout: float) -> int:
        box: list[int] = []

        def reader() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.strip().isdigit():
                    box.append(int(line))
                    return

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        thread.join(timeout)
        if not box:
            raise RuntimeError(f"{proc.args!r} printed no port: {self.tail()}")
        return box[0]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def tail(self, n: int = 10) -> str:
        lines: list[str] = []
        for log in self.logs:
            log.seek(0)
            lines += log.read().strip().splitlines()[-n:]
        return "\n".join(lines) or "(no stderr)"

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
        for log in self.logs:
            log.close()


class RedisServer:
    """A throw-away redis-server on a free loopback port, without persistence."""

    def __init__(self, binary: str, workdir: str) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as probe:
                    probe.sendall(b"PING\r\n")
                    if probe.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not start")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def drive(servers: Servers, config: str, params: dict[str, Any], gens: run.Generators) -> Measure:
    """Run the load generator's broadcast scenario against ``servers``."""
    url = f"ws://{run.HOST}:{servers.port}{SCENARIO.path}"
    cmd = gens.command(params, url)
    proc = subprocess.Popen(
        cmd, cwd=run.LOADGEN_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    killer = threading.Timer(float(params.get("duration", 10)) * 3 + 60, proc.kill)
    killer.start()
    result: dict[str, Any] | None = None
    t0 = t1 = cpu0 = cpu1 = 0.0

    def cpu() -> float:
        return sum(run.proc_cpu_seconds(pid) or 0.0 for pid in servers.pids)

    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "measure_start":
                t0, cpu0 = time.monotonic(), cpu()
            elif event.get("event") == "measure_end":
                t1, cpu1 = time.monotonic(), cpu()
            elif event.get("event") == "result":
                result = event
        stderr = proc.stderr.read() if proc.stderr else ""
        proc.wait()
    finally:
        killer.cancel()
    if result is None:
        reason = f"loadgen exit {proc.returncode}: {stderr.strip()[-300:]}"
        if not servers.alive():
            reason += f" | server died: {servers.tail(5)}"
        return Measure(config, False, reason)
    measure = Measure(config, True, data=result)
    if result.get("errors"):
        measure.reason = f"{result['errors']} lost/bad deliveries"
    if result.get("timed_out"):
        measure.ok = False
        measure.reason = "timed out; " + measure.reason
    if t1 > t0:
        measure.server_cpu_frac = (cpu1 - cpu0) / (t1 - t0)
    return measure


def median(measures: list[Measure]) -> tuple[Measure, list[float]]:
    good = sorted((m for m in measures if m.rate), key=lambda m: m.rate or 0.0)
    if not good:
        return measures[0], []
    return good[(len(good) - 1) // 2], [m.rate or 0.0 for m in good]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="200 clients, 20 messages")
    parser.add_argument("--repeat", type=int, default=None, help="passes (default 3, quick 1)")
    parser.add_argument("--no-redis", action="store_true", help="leave out the Redis setup")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--generator",
        choices=("auto", "c", "node"),
        default="auto",
        help="load generator: auto (default: C when it builds), c, or node",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    run.raise_fd_limit()
    params = dict(SCENARIO.quick if args.quick else SCENARIO.full)
    build_dir = tempfile.TemporaryDirectory(prefix="wsgiws-bench-")
    gens = run.prepare_generators(args.generator, [params], Path(build_dir.name))
    generator = gens.label(gens.kind(params))
    repeat = args.repeat or (1 if args.quick else 3)

    env = dict(os.environ)
    src = run.REPO_DIR / "src"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src), env.get("PYTHONPATH", "")) if p)
    python = sys.executable
    configs: dict[str, list[list[str]]] = {
        SUBJECT: [[python, str(run.SERVERS_DIR / "wsgiws_echo.py"), "--host", run.HOST]],
        PEER: [[python, str(run.SERVERS_DIR / "websockets_asyncio_echo.py"), "--host", run.HOST]],
    }
    skipped: dict[str, str] = {}
    redis: RedisServer | None = None
    workdir = tempfile.TemporaryDirectory()
    redis_binary = shutil.which("redis-server")
    if args.no_redis:
        skipped[REDIS_CONFIG] = "--no-redis"
    elif redis_binary is None:
        skipped[REDIS_CONFIG] = "redis-server is not installed"
    else:
        redis = RedisServer(redis_binary, workdir.name)
        one = [
            python,
            str(BENCH_DIR / "broadcast_server.py"),
            "--host",
            run.HOST,
            "--redis",
            redis.url,
            "--reuse-port",
        ]
        configs[REDIS_CONFIG] = [one, list(one)]

    print(
        f"broadcast bench: {params['connections']} clients, {params['bcast-count']} x "
        f"{params['size']} B, {repeat} pass(es); python {sys.version.split()[0]}, "
        f"load generator {generator}, "
        f"{os.cpu_count()} CPUs shared by servers, Redis and the load generator"
    )
    measures: dict[str, list[Measure]] = {name: [] for name in configs}
    try:
        for rep in range(repeat):
            for name, commands in configs.items():
                run.log(f"broadcast: [{rep + 1}/{repeat}] {name}")
                try:
                    servers = Servers(commands, env, run.SERVERS_DIR)
                except RuntimeError as exc:
                    measures[name].append(Measure(name, False, str(exc)))
                    continue
                try:
                    measures[name].append(drive(servers, name, params, gens))
                finally:
                    servers.stop()
                if not measures[name][-1].ok:
                    run.log(f"broadcast:   FAILED: {measures[name][-1].reason}")
    finally:
        if redis is not None:
            redis.stop()
        workdir.cleanup()
        build_dir.cleanup()

    print()
    header = (
        f"{'configuration':<20} {'deliveries/s':>13} {'spread':>9} {'last ms':>9}"
        f" {'first µs':>9} {'srv CPU':>8} {'gen CPU':>8} {'gen µs/deliv':>12}  note"
    )
    print(header)
    print("-" * len(header))
    report: dict[str, Any] = {"params": params, "repeat": repeat, "results": {}}
    chosen: dict[str, Measure] = {}
    for name, runs in measures.items():
        best, rates = median(runs)
        chosen[name] = best
        d = best.data
        last_ms = d.get("last_delivery_us", 0) / 1000 if best.ok else None
        print(
            f"{name:<20} {run.fmt_num(best.rate):>13} {run.spread(rates):>9}"
            f" {run.fmt_num(last_ms, 1):>9} {run.fmt_num(d.get('first_delivery_us')):>9}"
            f" {run.fmt_pct(best.server_cpu_frac):>8} {run.fmt_pct(d.get('loadgen_cpu_frac')):>8}"
            f" {run.fmt_num(d.get('loadgen_cpu_us_per_delivery'), 1):>12}  {best.reason}"
        )
        report["results"][name] = {
            "ok": best.ok,
            "reason": best.reason,
            "deliveries_per_s": best.rate,
            "runs": rates,
            "last_delivery_ms": last_ms,
            "server_cpu_frac": best.server_cpu_frac,
            "loadgen": d,
        }
    for name, reason in skipped.items():
        print(f"{name:<20} {'-':>13}  skipped: {reason}")
    peer = chosen.get(PEER)
    print()
    for name in (SUBJECT, REDIS_CONFIG):
        mine = chosen.get(name)
        if mine and mine.rate and peer and peer.rate:
            ratio = mine.rate / peer.rate
            report["results"][name]["ratio_vs_websockets"] = ratio
            print(f"{name} / {PEER}: {ratio:.2f}x deliveries/s (> 1.00: {name} is faster)")
    print(
        f"\nmedian of {repeat} pass(es) by deliveries/s; srv CPU = all server processes' CPU "
        "time / measured wall time (100% = one core); gen = the load generator "
        f"({generator}). "
        f"Total {time.monotonic() - started:.0f} s."
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(m.ok for m in chosen.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
