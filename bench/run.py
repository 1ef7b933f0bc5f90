"""wsgiws benchmark orchestrator.

Starts each WebSocket server under test as a subprocess on 127.0.0.1 (port 0,
the server prints its port), drives it with the Node.js load generator in
``bench/loadgen`` (npm ``ws``), samples both processes' CPU time, prints a
table and the ratios ``wsgiws / websockets`` per scenario.

    python bench/run.py [--quick] [--json PATH] [--servers A,B] [--scenarios X,Y]

Everything talks to loopback only, and every load loop is bounded both in
message count and in wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
REPO_DIR = BENCH_DIR.parent
LOADGEN_DIR = BENCH_DIR / "loadgen"
SERVERS_DIR = BENCH_DIR / "servers"
HOST = "127.0.0.1"
SUBJECT = "wsgiws"
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOADGEN_SATURATION = 0.8  # fraction of one core above which we warn


@dataclass(frozen=True)
class ServerSpec:
    name: str
    script: str
    description: str
    needs: str  # module that must import for this server to run


SERVERS: tuple[ServerSpec, ...] = (
    ServerSpec(SUBJECT, "wsgiws_echo.py", "wsgiws.Server (selector loop thread)", "wsgiws"),
    ServerSpec(
        "websockets-asyncio",
        "websockets_asyncio_echo.py",
        "websockets.asyncio.server.serve",
        "websockets",
    ),
    ServerSpec(
        "websockets-sync",
        "websockets_sync_echo.py",
        "websockets.sync.server.serve (thread per connection)",
        "websockets",
    ),
)


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    path: str
    metric: str  # key in the loadgen result; higher is better
    unit: str
    full: dict[str, Any]
    quick: dict[str, Any]
    needs_group: bool = False


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        key="latency",
        title="echo round-trip, 1 conn, 64 B, 1 in flight",
        path="/echo",
        metric="msgs_per_s",
        unit="msg/s",
        full={
            "scenario": "echo",
            "connections": 1,
            "size": 64,
            "window": 1,
            "count": 10_000,
            "warmup": 1_000,
            "duration": 10,
        },
        quick={
            "scenario": "echo",
            "connections": 1,
            "size": 64,
            "window": 1,
            "count": 500,
            "warmup": 100,
            "duration": 2,
        },
    ),
    Scenario(
        key="throughput",
        title="echo throughput, 64 conns, 64 B, window 16/conn",
        path="/echo",
        metric="msgs_per_s",
        unit="msg/s",
        full={
            "scenario": "echo",
            "connections": 64,
            "size": 64,
            "window": 16,
            "count": 2_000,
            "warmup": 100,
            "duration": 10,
        },
        quick={
            "scenario": "echo",
            "connections": 64,
            "size": 64,
            "window": 16,
            "count": 100,
            "warmup": 16,
            "duration": 2,
        },
    ),
    Scenario(
        key="large-1",
        title="echo 1 MiB messages, 1 conn, 1 in flight",
        path="/echo",
        metric="mb_per_s",
        unit="MB/s",
        full={
            "scenario": "echo",
            "connections": 1,
            "size": 2**20,
            "window": 1,
            "count": 500,
            "warmup": 5,
            "duration": 10,
        },
        quick={
            "scenario": "echo",
            "connections": 1,
            "size": 2**20,
            "window": 1,
            "count": 20,
            "warmup": 2,
            "duration": 2,
        },
    ),
    Scenario(
        # 64 x 8 x 1 MiB = 512 MiB each way, at most.
        key="large-64",
        title="echo 1 MiB messages, 64 conns, 1 in flight/conn, 512 MiB total",
        path="/echo",
        metric="mb_per_s",
        unit="MB/s",
        full={
            "scenario": "echo",
            "connections": 64,
            "size": 2**20,
            "window": 1,
            "count": 8,
            "warmup": 1,
            "duration": 15,
        },
        quick={
            "scenario": "echo",
            "connections": 64,
            "size": 2**20,
            "window": 1,
            "count": 1,
            "warmup": 0,
            "duration": 3,
        },
    ),
    Scenario(
        key="broadcast",
        title="broadcast, 1000 clients in one group, 100 x 64 B",
        path="/bcast",
        metric="deliveries_per_s",
        unit="deliv/s",
        full={
            "scenario": "broadcast",
            "connections": 1000,
            "size": 64,
            "bcast-count": 100,
            "bcast-warmup": 5,
            "duration": 20,
        },
        quick={
            "scenario": "broadcast",
            "connections": 200,
            "size": 64,
            "bcast-count": 10,
            "bcast-warmup": 2,
            "duration": 3,
        },
        needs_group=True,
    ),
)


@dataclass
class Result:
    server: str
    scenario: str
    ok: bool
    reason: str = ""
    skipped: bool = False
    data: dict[str, Any] = field(default_factory=dict)
    server_cpu_s: float | None = None
    server_cpu_frac: float | None = None
    runs: list[float] = field(default_factory=list)  # metric of every good run

    def metric(self, scenario: Scenario) -> float | None:
        value = self.data.get(scenario.metric)
        return float(value) if self.ok and value is not None else None


# --------------------------------------------------------------- helpers ----


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all its threads), from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def raise_fd_limit() -> None:
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard != resource.RLIM_INFINITY else 65536
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ImportError, ValueError, OSError):
        pass


def probe_wsgiws(env: dict[str, str]) -> dict[str, Any] | None:
    code = (
        "import json, wsgiws\n"
        "print(json.dumps({'server': hasattr(wsgiws, 'Server'),"
        " 'group': hasattr(wsgiws, 'group'),"
        " 'version': getattr(wsgiws, '__version__', '?'),"
        " 'file': getattr(wsgiws, '__file__', '?')}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        return None
    info: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return info


def module_version(module: str) -> str | None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import {module}; print(getattr({module}, '__version__', '?'))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def ensure_loadgen() -> str:
    node = shutil.which("node")
    if node is None:
        raise SystemExit("bench: node (>= 18) is required for the load generator")
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 18:
        raise SystemExit(f"bench: node >= 18 required, found {version}")
    if not (LOADGEN_DIR / "node_modules" / "ws").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit("bench: npm is required to install the load generator (npm ci)")
        log("bench: installing the load generator (npm ci in bench/loadgen)")
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=LOADGEN_DIR,
            check=True,
            timeout=300,
        )
    return version


def ws_version() -> str:
    try:
        pkg = json.loads((LOADGEN_DIR / "node_modules" / "ws" / "package.json").read_text())
        return str(pkg.get("version", "?"))
    except (OSError, ValueError):
        return "?"


# ---------------------------------------------------------------- server ----


class RunningServer:
    def __init__(self, spec: ServerSpec, env: dict[str, str]) -> None:
        self.spec = spec
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(SERVERS_DIR / spec.script),
                "--host",
                HOST,
                "--port",
                "0",
            ],
            cwd=SERVERS_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self.port = self._read_port(timeout=30.0)

    def _read_port(self, timeout: float) -> int:
        box: list[str] = []

        def reader() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                if line.strip().isdigit():
                    box.append(line.strip())
                    return

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        t.join(timeout)
        if not box:
            self.stop()
            raise RuntimeError(
                f"{self.spec.name} did not print its port within {timeout:.0f}s: "
                + self.stderr_tail()
            )
        return int(box[0])

    def stderr_tail(self, n: int = 15) -> str:
        self._stderr.seek(0)
        lines = self._stderr.read().strip().splitlines()
        return "\n".join(lines[-n:]) or "(no stderr)"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            t0 = time.monotonic()
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                log(f"bench: {self.spec.name} ignored SIGTERM for 5 s; killing it")
                self.proc.kill()
                self.proc.wait(5)
            if time.monotonic() - t0 > 1:
                log(f"bench: {self.spec.name} took {time.monotonic() - t0:.1f} s to stop")
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


def run_loadgen(server: RunningServer, scenario: Scenario, params: dict[str, Any]) -> Result:
    url = f"ws://{HOST}:{server.port}{scenario.path}"
    cmd = ["node", str(LOADGEN_DIR / "loadgen.mjs"), "--url", url]
    for key, value in params.items():
        cmd += [f"--{key}", str(value)]
    hard_timeout = float(params.get("duration", 10)) * 3 + 60
    proc = subprocess.Popen(
        cmd, cwd=LOADGEN_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    killer = threading.Timer(hard_timeout, proc.kill)
    killer.start()
    cpu0 = cpu1 = t0 = t1 = None
    result: dict[str, Any] | None = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            kind = event.get("event")
            if kind == "measure_start":
                t0, cpu0 = time.monotonic(), proc_cpu_seconds(server.proc.pid)
            elif kind == "measure_end":
                t1, cpu1 = time.monotonic(), proc_cpu_seconds(server.proc.pid)
            elif kind == "result":
                result = event
        stderr = proc.stderr.read() if proc.stderr else ""
        proc.wait()
    finally:
        killer.cancel()
    name = server.spec.name
    if result is None:
        reason = f"loadgen exit {proc.returncode}: {stderr.strip()[-300:]}"
        if not server.alive():
            reason += f" | server died: {server.stderr_tail(5)}"
        return Result(name, scenario.key, ok=False, reason=reason)
    res = Result(name, scenario.key, ok=True, data=result)
    if result.get("errors"):
        res.reason = f"{result['errors']} lost/bad messages"
    if result.get("timed_out"):
        res.ok = False
        res.reason = "timed out before all messages came back; " + res.reason
    if None not in (cpu0, cpu1, t0, t1):
        assert cpu0 is not None and cpu1 is not None and t0 is not None and t1 is not None
        res.server_cpu_s = cpu1 - cpu0
        res.server_cpu_frac = res.server_cpu_s / max(t1 - t0, 1e-9)
    return res


def server_pass(
    spec: ServerSpec,
    scenarios: list[Scenario],
    env: dict[str, str],
    quick: bool,
    skip_group: bool,
) -> list[Result]:
    """Start one server, run every scenario against it once, stop it."""
    try:
        server = RunningServer(spec, env)
    except RuntimeError as exc:
        log(f"bench: {exc}")
        return [Result(spec.name, sc.key, False, "server failed to start") for sc in scenarios]
    out: list[Result] = []
    try:
        for sc in scenarios:
            if sc.needs_group and skip_group:
                reason = "wsgiws.group does not exist yet"
                log(f"bench:   {sc.key}: skipped ({reason})")
                out.append(Result(spec.name, sc.key, False, reason, skipped=True))
                continue
            if not server.alive():
                reason = f"server died: {server.stderr_tail(5)}"
                out.append(Result(spec.name, sc.key, False, reason))
                continue
            log(f"bench:   {sc.key}: {sc.title}")
            res = run_loadgen(server, sc, sc.quick if quick else sc.full)
            if not res.ok:
                log(f"bench:   {sc.key}: FAILED: {res.reason}")
            out.append(res)
    finally:
        server.stop()
    return out


def pick_median(candidates: list[Result], scenario: Scenario) -> Result:
    """The run with the median result (its latencies etc. come with it)."""
    good = [r for r in candidates if r.metric(scenario) is not None]
    if not good:
        return candidates[0]
    good.sort(key=lambda r: r.metric(scenario) or 0.0)
    chosen = good[(len(good) - 1) // 2]
    chosen.runs = [r.metric(scenario) or 0.0 for r in good]
    if len(good) < len(candidates):
        failed = len(candidates) - len(good)
        chosen.reason = "; ".join(
            x for x in (chosen.reason, f"{failed}/{len(candidates)} runs failed") if x
        )
    return chosen


# ----------------------------------------------------------------- report ----


def fmt_num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def spread(runs: list[float]) -> str:
    """min..max of the runs as +/- percent around the median."""
    if len(runs) < 2:
        return "-"
    med = sorted(runs)[(len(runs) - 1) // 2]
    lo, hi = min(runs), max(runs)
    return f"-{(med - lo) / med * 100:.0f}/+{(hi - med) / med * 100:.0f}%"


def print_table(results: list[Result], scenarios: list[Scenario]) -> None:
    header = (
        f"{'scenario':<11} {'server':<19} {'result':>11} {'unit':<8} {'spread':>9}"
        f" {'p50 µs':>8} {'p99 µs':>9} {'gen CPU':>8} {'srv CPU':>8}  note"
    )
    print(header)
    print("-" * len(header))
    by_key = {s.key: s for s in scenarios}
    for r in results:
        sc = by_key[r.scenario]
        if not r.data:
            print(
                f"{sc.key:<11} {r.server:<19} {'-':>11} {'':<8} {'':>9}"
                f" {'':>8} {'':>9} {'':>8} {'':>8}  {r.reason}"
            )
            continue
        d = r.data
        lat = d.get("latency") or {}
        gen = d.get("loadgen_cpu_frac")
        notes = [r.reason] if r.reason else []
        if sc.key == "broadcast":
            notes.append(
                f"last delivery {fmt_num(d.get('last_delivery_us', 0) / 1000, 1)} ms,"
                f" first {fmt_num(d.get('first_delivery_us') or 0, 0)} µs,"
                f" gen {fmt_num(d.get('loadgen_cpu_us_per_delivery'), 1)} µs/delivery"
            )
        if d.get("truncated_by_deadline"):
            notes.append("stopped by the time cap")
        if gen is not None and gen > LOADGEN_SATURATION:
            notes.append("gen >80% of a core")
        metric = d.get(sc.metric)
        digits = 1 if sc.unit == "MB/s" else 0
        print(
            f"{sc.key:<11} {r.server:<19} {fmt_num(metric, digits):>11} {sc.unit:<8}"
            f" {spread(r.runs):>9}"
            f" {fmt_num(lat.get('p50_us')):>8} {fmt_num(lat.get('p99_us')):>9}"
            f" {fmt_pct(gen):>8} {fmt_pct(r.server_cpu_frac):>8}  {'; '.join(notes)}"
        )


def compute_ratios(results: list[Result], scenarios: list[Scenario]) -> list[dict[str, Any]]:
    ratios: list[dict[str, Any]] = []
    for sc in scenarios:
        rows = {r.server: r for r in results if r.scenario == sc.key}
        subject = rows.get(SUBJECT)
        peers = {name: r.metric(sc) for name, r in rows.items() if name != SUBJECT and r.metric(sc)}
        best_peer = max(peers, key=lambda n: peers[n] or 0.0) if peers else None
        entry: dict[str, Any] = {
            "scenario": sc.key,
            "metric": sc.metric,
            "best_peer": best_peer,
        }
        mine = subject.metric(sc) if subject else None
        for name, value in peers.items():
            entry[f"vs_{name}"] = (mine / value) if (mine is not None and value) else None
        if sc.key == "latency" and subject and subject.ok:
            my_p50 = (subject.data.get("latency") or {}).get("p50_us")
            for name in peers:
                peer_p50 = (rows[name].data.get("latency") or {}).get("p50_us")
                if my_p50 and peer_p50:
                    entry[f"p50_vs_{name}"] = my_p50 / peer_p50
        ratios.append(entry)
    return ratios


def print_ratios(ratios: list[dict[str, Any]], peer_names: list[str]) -> None:
    print()
    print(f"ratios {SUBJECT} / peer on the scenario's result (> 1.00 means {SUBJECT} is faster)")
    header = f"{'scenario':<11} " + " ".join(f"{'vs ' + n:>22}" for n in peer_names)
    header += f"  {'best peer':<19}"
    print(header)
    print("-" * len(header))
    for entry in ratios:
        cells = []
        for name in peer_names:
            value = entry.get(f"vs_{name}")
            cells.append(f"{'-' if value is None else f'{value:.2f}x':>22}")
        line = f"{entry['scenario']:<11} " + " ".join(cells) + f"  {entry['best_peer'] or '-':<19}"
        p50s = [
            f"p50 vs {n}: {entry[f'p50_vs_{n}']:.2f}x" for n in peer_names if f"p50_vs_{n}" in entry
        ]
        if p50s:
            line += "  (latency, lower is better: " + ", ".join(p50s) + ")"
        print(line)


# ------------------------------------------------------------------- main ----


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: small counts, < 30 s")
    parser.add_argument("--json", metavar="PATH", help="also write all results to PATH as JSON")
    parser.add_argument(
        "--servers",
        help="comma-separated subset of: " + ", ".join(s.name for s in SERVERS),
    )
    parser.add_argument(
        "--scenarios",
        help="comma-separated subset of: " + ", ".join(s.key for s in SCENARIOS),
    )
    parser.add_argument(
        "--repeat",
        type=int,
        metavar="N",
        help="passes over all servers (default 3, --quick 1); the median is reported",
    )
    args = parser.parse_args(argv)

    started = time.monotonic()
    raise_fd_limit()
    node_version = ensure_loadgen()

    servers = list(SERVERS)
    if args.servers:
        wanted = set(args.servers.split(","))
        servers = [s for s in servers if s.name in wanted]
    scenarios = list(SCENARIOS)
    if args.scenarios:
        wanted = set(args.scenarios.split(","))
        scenarios = [s for s in scenarios if s.key in wanted]

    # wsgiws must be importable by the server subprocess: normally it is
    # installed (nox -s bench); fall back to the repo's src/ layout.
    env = dict(os.environ)
    wsgiws_info = probe_wsgiws(env)
    wsgiws_note = "installed package"
    if wsgiws_info is None and (REPO_DIR / "src" / "wsgiws").is_dir():
        fallback = dict(env)
        fallback["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_DIR / "src"), env.get("PYTHONPATH", "")) if p
        )
        wsgiws_info = probe_wsgiws(fallback)
        if wsgiws_info is not None:
            env = fallback
            wsgiws_note = "from src/ (fallback: not installed)"
    websockets_version = module_version("websockets")

    skips: dict[str, str] = {}
    if wsgiws_info is None or not wsgiws_info.get("server"):
        skips[SUBJECT] = "wsgiws (with wsgiws.Server) is not importable"
    if websockets_version is None:
        skips["websockets-asyncio"] = skips["websockets-sync"] = "websockets is not importable"
    group_missing = wsgiws_info is not None and not wsgiws_info.get("group")

    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    meta = {
        "mode": "quick" if args.quick else "full",
        "repeat": repeat,
        "python": platform.python_version(),
        "node": node_version,
        "ws": ws_version(),
        "websockets": websockets_version,
        "wsgiws": wsgiws_info,
        "wsgiws_source": wsgiws_note if wsgiws_info else None,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }
    wsgiws_desc = f"{wsgiws_info['version']} ({wsgiws_note})" if wsgiws_info else "n/a (missing)"
    print(
        f"wsgiws bench ({meta['mode']}): python {meta['python']}, node {node_version}, "
        f"ws {meta['ws']}, websockets {websockets_version}, wsgiws {wsgiws_desc}, "
        f"{meta['cpus']} CPUs shared by server and load generator"
    )

    runs: dict[tuple[str, str], list[Result]] = {}
    for rep in range(repeat):
        for spec in servers:
            if spec.name in skips:
                if rep == 0:
                    log(f"bench: skipping {spec.name}: {skips[spec.name]}")
                for sc in scenarios:
                    runs.setdefault((spec.name, sc.key), []).append(
                        Result(spec.name, sc.key, False, skips[spec.name], skipped=True)
                    )
                continue
            label = f"[{rep + 1}/{repeat}] " if repeat > 1 else ""
            log(f"bench: {label}starting {spec.name} ({spec.description})")
            skip_group = spec.name == SUBJECT and group_missing
            for res in server_pass(spec, scenarios, env, args.quick, skip_group):
                runs.setdefault((res.server, res.scenario), []).append(res)
    results = [pick_median(runs[(spec.name, sc.key)], sc) for spec in servers for sc in scenarios]

    print()
    print_table(results, scenarios)
    peer_names = [s.name for s in servers if s.name != SUBJECT]
    ratios = compute_ratios(results, scenarios)
    if any(s.name == SUBJECT for s in servers) and peer_names:
        print_ratios(ratios, peer_names)
    elapsed = time.monotonic() - started
    print()
    print(
        f"result = median of {repeat} run(s), spread = min/max around it. "
        "gen CPU = load generator CPU time / measured wall time (Node.js, 100% = "
        f"one core; >{LOADGEN_SATURATION:.0%} = it may share the bottleneck); "
        "srv CPU = server process CPU time / wall time (all threads). "
        f"Server and generator share the machine's {os.cpu_count()} cores. "
        f"Total run time {elapsed:.1f} s."
    )

    if args.json:
        payload = {
            "meta": meta,
            "scenarios": [
                {
                    "key": s.key,
                    "title": s.title,
                    "metric": s.metric,
                    "unit": s.unit,
                    "params": s.quick if args.quick else s.full,
                }
                for s in scenarios
            ],
            "results": [
                {
                    "server": r.server,
                    "scenario": r.scenario,
                    "ok": r.ok,
                    "reason": r.reason,
                    "server_cpu_s": r.server_cpu_s,
                    "server_cpu_frac": r.server_cpu_frac,
                    "runs": r.runs,
                    "loadgen": r.data,
                }
                for r in results
            ],
            "ratios": ratios,
            "elapsed_s": elapsed,
        }
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
        log(f"bench: wrote {args.json}")
    failed = [r for r in results if not r.ok and not r.skipped]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
