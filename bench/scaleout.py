"""Scale-out benchmark: groups across 1, 2 and 4 processes sharing a port through Redis.

    python bench/scaleout.py [--quick] [--repeat N] [--chat-rate R] [--no-channels]
                             [--json PATH]

Two scenarios, each on one ``wsgiws.Server`` process (in-memory groups) and on two
and four processes sharing one port (``SO_REUSEPORT``) with the Redis backend and
one real ``redis-server`` (``bench/broadcast_server.py``):

* ``chat``: 400 clients in 40 groups of 10 (client i in group i % 40); every client
  sends 64 B messages to its group (the server sends each to the whole group, the
  sender included), each client keeping 8 messages ahead of its own echo (enough to
  keep one process CPU-bound), 50 each (``--chat-rate R``: R messages/s per client
  instead, for latency at a load below saturation). The kernel spreads the
  clients over the processes, so most groups have members in every process. Every
  delivery is checked for exactly-once and per-sender order. Reported: messages/s
  (sent, each delivered to 10 members), deliveries/s, p50/p99 latency from sending
  to each delivery, CPU.
* ``broadcast``: 1,000 clients in one group, 100 x 64 B sent to the group at the
  request of one client (as ``bench/broadcast.py``); deliveries/s. Django Channels
  with ``channels_redis`` (one Daphne process, ``bench/servers/channels_bcast.py``)
  is the field's reference, with 10 messages instead of 100 (it is ~30x slower; the
  rate is per delivery, so comparable), skipped with a reason when Channels is not
  installed (``pip install "channels[daphne]" channels-redis``).

CPU: ``srv`` = all server processes' CPU time over the measured wall time (100% = one
core); ``max proc`` = the busiest server process; ``redis`` = redis-server's. The
machine's cores are shared by the servers, Redis and the Node.js load generator.
Loopback only; every phase is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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

import broadcast  # noqa: E402
import run  # noqa: E402

CHAT_FULL = {
    "scenario": "chat",
    "connections": 400,
    "groups": 40,
    "size": 64,
    "chat-count": 50,
    "chat-warmup": 5,
    "window": 8,
    "duration": 60,
}
CHAT_QUICK = {**CHAT_FULL, "connections": 200, "groups": 20, "chat-count": 10, "duration": 20}
BCAST = next(s for s in run.SCENARIOS if s.key == "broadcast")
#: Messages per broadcast for Channels (100 would take over a minute at its rate).
CHANNELS_BCAST_COUNT = 10


@dataclass
class Measure:
    scenario: str
    config: str
    ok: bool
    reason: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float | None:
        key = "messages_per_s" if self.scenario == "chat" else "deliveries_per_s"
        value = self.data.get(key)
        return float(value) if self.ok and value else None


def drive(
    servers: broadcast.Servers,
    redis_pid: int | None,
    scenario: str,
    config: str,
    path: str,
    params: dict[str, Any],
) -> Measure:
    """Run the load generator against ``servers``; sample CPU around the measured phase."""
    url = f"ws://{run.HOST}:{servers.port}{path}"
    cmd = ["node", str(run.LOADGEN_DIR / "loadgen.mjs"), "--url", url]
    for key, value in params.items():
        cmd += [f"--{key}", str(value)]
    proc = subprocess.Popen(
        cmd, cwd=run.LOADGEN_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    killer = threading.Timer(float(params.get("duration", 10)) * 3 + 60, proc.kill)
    killer.start()
    result: dict[str, Any] | None = None
    pids = servers.pids + ([redis_pid] if redis_pid else [])
    t0 = t1 = 0.0
    cpu0: dict[int, float] = {}
    cpu1: dict[int, float] = {}

    def sample() -> dict[int, float]:
        return {pid: run.proc_cpu_seconds(pid) or 0.0 for pid in pids}

    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "measure_start":
                t0, cpu0 = time.monotonic(), sample()
            elif event.get("event") == "measure_end":
                t1, cpu1 = time.monotonic(), sample()
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
        return Measure(scenario, config, False, reason)
    measure = Measure(scenario, config, True, data=result)
    if result.get("errors"):
        measure.reason = f"{result['errors']} lost/duplicated/reordered deliveries"
    if result.get("timed_out"):
        measure.ok = False
        measure.reason = "timed out; " + measure.reason
    if t1 > t0:
        wall = t1 - t0
        per = {pid: (cpu1[pid] - cpu0[pid]) / wall for pid in servers.pids}
        measure.cpu = {"srv": sum(per.values()), "max_proc": max(per.values())}
        if redis_pid:
            measure.cpu["redis"] = (cpu1[redis_pid] - cpu0[redis_pid]) / wall
    return measure


def median(measures: list[Measure]) -> tuple[Measure, list[float]]:
    good = sorted((m for m in measures if m.rate), key=lambda m: m.rate or 0.0)
    if not good:
        return measures[0], []
    return good[(len(good) - 1) // 2], [m.rate or 0.0 for m in good]


def channels_available(python: str) -> str | None:
    """None if Channels, channels_redis and Daphne import; else why not."""
    code = "import channels, channels_redis, daphne, django"
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    if proc.returncode:
        return 'not installed (pip install "channels[daphne]" channels-redis)'
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller counts, one pass")
    parser.add_argument("--repeat", type=int, default=None, help="passes (default 3, quick 1)")
    parser.add_argument("--chat-rate", type=float, default=0.0, help="msg/s per chat client")
    parser.add_argument("--chat-window", type=int, default=None, help="messages ahead of echo")
    parser.add_argument("--configs", default="", help="only these configurations (comma-separated)")
    parser.add_argument("--no-channels", action="store_true", help="leave out Channels")
    parser.add_argument(
        "--scenarios", default="chat,broadcast", help="comma-separated: chat,broadcast"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    started = time.monotonic()
    run.raise_fd_limit()
    node = run.ensure_loadgen()
    redis_binary = shutil.which("redis-server")
    if redis_binary is None:
        raise SystemExit("scaleout: redis-server is required (Debian package redis-server)")
    repeat = args.repeat or (1 if args.quick else 3)
    chat = dict(CHAT_QUICK if args.quick else CHAT_FULL)
    if args.chat_rate > 0:
        chat["rate"] = args.chat_rate
    if args.chat_window:
        chat["window"] = args.chat_window
    bcast = dict(BCAST.quick if args.quick else BCAST.full)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]

    env = dict(os.environ)
    src = run.REPO_DIR / "src"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src), env.get("PYTHONPATH", "")) if p)
    python = sys.executable
    workdir = tempfile.TemporaryDirectory()
    redis = broadcast.RedisServer(redis_binary, workdir.name)
    server = [python, str(BENCH_DIR / "broadcast_server.py"), "--host", run.HOST]
    with_redis = [*server, "--redis", redis.url, "--reuse-port"]
    configs: dict[str, list[list[str]]] = {
        "wsgiws-1proc": [server],
        "wsgiws-redis-2proc": [with_redis] * 2,
        "wsgiws-redis-4proc": [with_redis] * 4,
    }
    only = {c.strip() for c in args.configs.split(",") if c.strip()}
    plan: list[tuple[str, str, list[list[str]], str, dict[str, Any]]] = []
    for name, commands in configs.items():
        if only and name not in only:
            continue
        if "chat" in scenarios:
            plan.append(("chat", name, commands, "/chat", chat))
        if "broadcast" in scenarios:
            plan.append(("broadcast", name, commands, "/bcast", bcast))
    skipped: dict[str, str] = {}
    if "broadcast" in scenarios and (not only or "channels-redis-1proc" in only):
        why = "--no-channels" if args.no_channels else channels_available(python)
        if why:
            skipped["channels-redis-1proc"] = why
        else:
            channels = [
                python,
                str(run.SERVERS_DIR / "channels_bcast.py"),
                "--host",
                run.HOST,
                "--redis",
                redis.url,
            ]
            few = {**bcast, "bcast-count": min(CHANNELS_BCAST_COUNT, bcast["bcast-count"])}
            few["duration"] = max(float(bcast["duration"]), 60.0)
            few["connect-timeout"] = 60  # 1,000 group_add calls take a while
            plan.append(("broadcast", "channels-redis-1proc", [channels], "/bcast", few))

    print(
        f"scale-out bench: chat {chat['connections']} clients in {chat['groups']} groups, "
        f"{chat['chat-count']} x {chat['size']} B each; broadcast {bcast['connections']} "
        f"clients, {bcast['bcast-count']} x {bcast['size']} B; {repeat} pass(es); "
        f"python {sys.version.split()[0]}, node {node}, {os.cpu_count()} CPUs shared by "
        "servers, Redis and the load generator"
    )
    measures: dict[tuple[str, str], list[Measure]] = {(s, c): [] for s, c, *_ in plan}
    try:
        for rep in range(repeat):
            for scenario, name, commands, path, params in plan:
                run.log(f"scaleout: [{rep + 1}/{repeat}] {scenario} {name}")
                cwd = run.SERVERS_DIR
                try:
                    servers = broadcast.Servers(commands, env, cwd)
                except RuntimeError as exc:
                    measures[scenario, name].append(Measure(scenario, name, False, str(exc)))
                    continue
                try:
                    measure = drive(servers, redis.proc.pid, scenario, name, path, params)
                    if not measure.ok:
                        run.log(f"scaleout:   FAILED: {measure.reason} {servers.tail(3)}")
                finally:
                    servers.stop()
                measures[scenario, name].append(measure)
    finally:
        redis.stop()
        workdir.cleanup()

    report: dict[str, Any] = {"chat": chat, "broadcast": bcast, "repeat": repeat, "results": []}
    print()
    header = (
        f"{'scenario':<10} {'configuration':<21} {'msg/s':>8} {'deliv/s':>9} {'spread':>9}"
        f" {'p50 ms':>7} {'p99 ms':>8} {'srv CPU':>8} {'max proc':>8} {'redis':>6}"
        f" {'gen CPU':>7}  note"
    )
    print(header)
    print("-" * len(header))
    chosen: dict[tuple[str, str], Measure] = {}
    for (scenario, name), runs in measures.items():
        best, rates = median(runs)
        chosen[scenario, name] = best
        d = best.data
        lat = d.get("latency_ms") or {}
        msgs = d.get("messages_per_s") if scenario == "chat" else None
        deliv = d.get("deliveries_per_s") if best.ok else None
        print(
            f"{scenario:<10} {name:<21} {run.fmt_num(msgs):>8} {run.fmt_num(deliv):>9}"
            f" {run.spread(rates):>9} {run.fmt_num(lat.get('p50'), 1):>7}"
            f" {run.fmt_num(lat.get('p99'), 1):>8} {run.fmt_pct(best.cpu.get('srv')):>8}"
            f" {run.fmt_pct(best.cpu.get('max_proc')):>8} {run.fmt_pct(best.cpu.get('redis')):>6}"
            f" {run.fmt_pct(d.get('loadgen_cpu_frac')):>7}  {best.reason}"
        )
        report["results"].append(
            {
                "scenario": scenario,
                "config": name,
                "ok": best.ok,
                "reason": best.reason,
                "rate": best.rate,
                "runs": rates,
                "cpu": best.cpu,
                "loadgen": d,
            }
        )
    for name, reason in skipped.items():
        print(f"{'broadcast':<10} {name:<21} {'-':>8}  skipped: {reason}")
    print()
    for scenario in ("chat", "broadcast"):
        base = chosen.get((scenario, "wsgiws-1proc"))
        if base is None or not base.rate:
            continue
        for name in ("wsgiws-redis-2proc", "wsgiws-redis-4proc", "channels-redis-1proc"):
            other = chosen.get((scenario, name))
            if other and other.rate:
                print(f"{scenario}: {name} / wsgiws-1proc = {other.rate / base.rate:.2f}")
        ref = chosen.get((scenario, "channels-redis-1proc"))
        if ref and ref.rate:
            for name in ("wsgiws-redis-2proc", "wsgiws-redis-4proc"):
                mine = chosen.get((scenario, name))
                if mine and mine.rate:
                    print(f"{scenario}: {name} / channels-redis-1proc = {mine.rate / ref.rate:.1f}")
    print(
        f"\nmedian of {repeat} pass(es); chat msg/s = messages sent / time to the last "
        "delivery (each delivered to its group of 10); latency = send to delivery, over "
        f"every delivery. Total {time.monotonic() - started:.0f} s."
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(m.ok for m in chosen.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
