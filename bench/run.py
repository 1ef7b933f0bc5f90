"""wsgiws benchmark orchestrator: the table of issue 11, in one run.

Starts each WebSocket server under test as a subprocess on 127.0.0.1 (port 0,
the server prints its port), pinned to one CPU with ``taskset``, drives it with
a load generator pinned to another, samples both processes' CPU time (and the
server's memory), and writes a table of figures and ratios (``wsgiws / peer``)
as Markdown and JSON. The generators, in ``bench/loadgen``: ``wsgen.c`` (C,
compiled for each run when a C compiler is there) for the broadcast and
handshake scenarios, where a Node.js client would fill its core first, and
``loadgen.mjs`` (Node.js, npm ``ws``) for the others, or all of them without a
compiler or with ``--generator node``.

    python bench/run.py [--quick] [--servers A,B] [--scenarios X,Y] [--repeat N]
                        [--out PREFIX] [--json PATH] [--no-pin] [--generator G]

Everything talks to loopback only, and every load loop is bounded both in
count and in wall time.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
LOADGEN_DIR = BENCH_DIR / "loadgen"
SERVERS_DIR = BENCH_DIR / "servers"
RESULTS_DIR = BENCH_DIR / "results"
HOST = "127.0.0.1"
SUBJECT = "wsgiws"
#: The peer every server is compared with in the issue's table.
REFERENCE = "websockets-asyncio"
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: Fraction of its core above which the load generator may be the bottleneck:
#: a throughput figure measured above it is flagged invalid (a lower bound).
LOADGEN_SATURATION = 0.9
#: Fraction of a core that other processes may use on the server's core (or on the
#: generator's) during a measurement before its figure is flagged invalid.
OTHER_LOAD_LIMIT = 0.1
#: Upper bound for the open-files limit this process raises itself to.
MAX_NOFILE = 65_536
#: The C load generator; the generator scenarios it runs by default (where Node.js
#: fills its core first), and all those it implements (``--generator c``; echo
#: without permessage-deflate).
WSGEN_SOURCE = LOADGEN_DIR / "wsgen.c"
WSGEN_SCENARIOS = frozenset({"broadcast", "handshake"})
WSGEN_ALL = WSGEN_SCENARIOS | {"echo"}
#: What one unit of each generator scenario is, for the generator's CPU per unit.
GEN_UNITS = {
    "echo": ("received", "message"),
    "broadcast": ("deliveries", "delivery"),
    "handshake": ("handshakes", "handshake"),
    "chat": ("deliveries", "delivery"),
}


@dataclass(frozen=True)
class ServerSpec:
    name: str
    script: str
    description: str
    needs: str  # module that must import for this server to run
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    deflate: bool = True  # speaks permessage-deflate
    #: Only these scenarios (empty: all).
    only: tuple[str, ...] = ()
    #: Run only when the probe of wsgiws says so (see ``main``).
    variant: str = ""


SERVERS: tuple[ServerSpec, ...] = (
    ServerSpec(SUBJECT, "wsgiws_echo.py", "wsgiws.Server, handlers on the worker pool", "wsgiws"),
    ServerSpec(
        "wsgiws-inline",
        "wsgiws_echo.py",
        "wsgiws.Server, handlers inline on the loop thread (opt-in mode)",
        "wsgiws",
        args=("--inline",),
        variant="inline",
    ),
    ServerSpec(
        "wsgiws-pure",
        "wsgiws_echo.py",
        "wsgiws.Server without its C accelerator (WSGIWS_NO_SPEEDUPS=1)",
        "wsgiws",
        env=(("WSGIWS_NO_SPEEDUPS", "1"),),
        only=("large-1",),
        variant="accelerated",
    ),
    ServerSpec(
        REFERENCE,
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
    ServerSpec("aiohttp", "aiohttp_echo.py", "aiohttp web.WebSocketResponse", "aiohttp"),
    ServerSpec(
        "picows", "picows_echo.py", "picows ws_create_server (Cython)", "picows", deflate=False
    ),
    ServerSpec(
        "flask-sock",
        "flask_sock_echo.py",
        "flask-sock on Werkzeug's threaded server (WSGI, thread per connection)",
        "flask_sock",
        deflate=False,
    ),
)


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    path: str
    metric: str  # key in the result data
    unit: str
    full: dict[str, Any]  # load generator options (--key value)
    quick: dict[str, Any]
    needs_group: bool = False
    #: Extra server options; scenarios with the same ones share server processes.
    server_args: tuple[str, ...] = ()
    #: Each server is started afresh for this scenario, and stopped after it.
    fresh_server: bool = False
    lower_is_better: bool = False
    #: Issue 11's goal for wsgiws against websockets (asyncio): ratio, or for
    #: ``lower_is_better`` an absolute ceiling in ``unit``.
    goal: float | None = None
    #: Run by default (others only when named with --scenarios).
    default: bool = True
    #: The generator's CPU decides whether the figure is valid.
    gen_bound: bool = True

    def params(self, quick: bool) -> dict[str, Any]:
        return self.quick if quick else self.full


def _echo(
    connections: int, size: int, window: int, count: int, warmup: int, duration: float
) -> dict[str, Any]:
    return {
        "scenario": "echo",
        "connections": connections,
        "size": size,
        "window": window,
        "count": count,
        "warmup": warmup,
        "duration": duration,
    }


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        key="echo-1",
        title="echo 64 B, 1 connection, request/response",
        path="/echo",
        metric="msgs_per_s",
        unit="msg/s",
        full=_echo(1, 64, 1, 100_000, 500, 3),
        quick=_echo(1, 64, 1, 500, 50, 1),
        goal=1.5,
    ),
    Scenario(
        key="echo-64",
        title="echo 64 B, 64 connections, request/response",
        path="/echo",
        metric="msgs_per_s",
        unit="msg/s",
        full=_echo(64, 64, 1, 10_000, 20, 3),
        quick=_echo(64, 64, 1, 20, 2, 1),
        goal=1.8,
    ),
    Scenario(
        key="echo-64x32",
        title="echo 64 B, 64 connections x 32 in flight",
        path="/echo",
        metric="msgs_per_s",
        unit="msg/s",
        full=_echo(64, 64, 32, 50_000, 64, 3),
        quick=_echo(64, 64, 32, 64, 32, 1),
        goal=2.5,
    ),
    Scenario(
        key="large-1",
        title="echo 1 MiB binary, 1 connection",
        path="/echo",
        metric="mb_per_s",
        unit="MB/s",
        full=_echo(1, 2**20, 1, 2_000, 3, 3),
        quick=_echo(1, 2**20, 1, 10, 1, 1),
        goal=1.0,  # with the C accelerator; 0.5 in pure Python (see goal_for)
    ),
    Scenario(
        key="handshake",
        title="handshakes, 32 in parallel (open, close handshake, TCP close)",
        path="/echo",
        metric="handshakes_per_s",
        unit="hs/s",
        # At most 15,000 cycles: each leaves a TIME_WAIT entry on loopback.
        full={
            "scenario": "handshake",
            "parallel": 32,
            "count": 15_000,
            "warmup": 200,
            "duration": 3,
        },
        quick={
            "scenario": "handshake",
            "parallel": 32,
            "count": 100,
            "warmup": 32,
            "duration": 1,
        },
        goal=1.7,
    ),
    Scenario(
        key="memory",
        title="memory per idle connection, 10,000 open, all answering",
        path="/echo",
        metric="kib_per_conn",
        unit="KiB/conn",
        full={
            "scenario": "idle",
            "connections": 10_000,
            "size": 64,
            "warmup": 32,
            "connect-batch": 64,
            "duration": 45,
            "hold": 1,
        },
        quick={
            "scenario": "idle",
            "connections": 100,
            "size": 64,
            "warmup": 8,
            "connect-batch": 32,
            "duration": 10,
            "hold": 1,
        },
        fresh_server=True,
        lower_is_better=True,
        goal=10_000 / 1024,  # 10 KB
        gen_bound=False,
    ),
    Scenario(
        key="broadcast",
        title="broadcast: 1,000 clients, 100 x 64 B messages, until all delivered",
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
        goal=3.0,
    ),
    Scenario(
        key="deflate",
        title="echo 1 KiB JSON text, 64 connections, request/response, permessage-deflate",
        path="/echo",
        metric="msgs_per_s",
        unit="msg/s",
        full={**_echo(64, 1024, 1, 10_000, 20, 3), "deflate": 1},
        quick={**_echo(64, 1024, 1, 20, 2, 1), "deflate": 1},
        server_args=("--deflate",),
        goal=1.0,
    ),
    Scenario(
        # 64 x 8 x 1 MiB = 512 MiB each way, at most.
        key="large-64",
        title="echo 1 MiB binary, 64 connections, 1 in flight each",
        path="/echo",
        metric="mb_per_s",
        unit="MB/s",
        full=_echo(64, 2**20, 1, 8, 1, 15),
        quick=_echo(64, 2**20, 1, 1, 0, 3),
        default=False,
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
    #: A measurement, but not one to trust (saturated generator, lost messages...).
    invalid: list[str] = field(default_factory=list)

    def metric(self, scenario: Scenario) -> float | None:
        value = self.data.get(scenario.metric)
        return float(value) if self.ok and value is not None else None

    @property
    def valid(self) -> bool:
        return self.ok and not self.invalid


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


def cpu_busy_seconds() -> dict[int, float]:
    """Busy time (all but idle and iowait) of each CPU since boot, from /proc/stat."""
    busy: dict[int, float] = {}
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return busy
    for line in lines:
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            ticks = [int(v) for v in values[:8]]
            busy[int(name[3:])] = (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK
    return busy


def proc_rss_bytes(pid: int) -> int | None:
    """Resident set size of a process, from /proc/PID/status."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def raise_fd_limit(need: int = 0) -> tuple[int, int] | None:
    """Raise this process's open-files limit (inherited by the servers and the
    generator): the soft limit to the hard one, and the hard one to ``need`` when
    that is higher and allowed (root), never above :data:`MAX_NOFILE`."""
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want_hard = hard
    if hard != resource.RLIM_INFINITY and hard < min(need, MAX_NOFILE):
        want_hard = min(need, MAX_NOFILE)
    want_soft = want_hard if want_hard != resource.RLIM_INFINITY else MAX_NOFILE
    want_soft = min(want_soft, MAX_NOFILE) if soft < MAX_NOFILE else soft
    for limits in ((want_soft, want_hard), (min(want_soft, hard), hard)):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
            break
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft, hard


@dataclass(frozen=True)
class Pinning:
    """Which CPU the server and the load generator run on (``taskset -c``)."""

    server_cpu: int | None
    gen_cpu: int | None
    note: str

    @property
    def enabled(self) -> bool:
        return self.server_cpu is not None

    def server_prefix(self) -> list[str]:
        return ["taskset", "-c", str(self.server_cpu)] if self.enabled else []

    def gen_prefix(self) -> list[str]:
        return ["taskset", "-c", str(self.gen_cpu)] if self.enabled else []

    def other_load(
        self,
        busy0: dict[int, float],
        busy1: dict[int, float],
        server_cpu_s: float,
        gen_cpu_s: float,
        wall_s: float,
    ) -> dict[str, float]:
        """CPU time used by other processes during a measurement, as a fraction of
        one core: on the server's core and on the generator's, or on the whole
        machine when nothing is pinned."""

        def delta(cpus: list[int]) -> float:
            return sum(busy1.get(c, 0.0) - busy0.get(c, 0.0) for c in cpus)

        if wall_s <= 0 or not busy0 or not busy1:
            return {}
        if self.server_cpu is not None and self.gen_cpu is not None:
            return {
                "server_core": max(0.0, delta([self.server_cpu]) - server_cpu_s) / wall_s,
                "gen_core": max(0.0, delta([self.gen_cpu]) - gen_cpu_s) / wall_s,
            }
        used = delta(list(busy1)) - server_cpu_s - gen_cpu_s
        return {"machine": max(0.0, used) / wall_s}


def choose_pinning(disabled: bool) -> Pinning:
    if disabled:
        return Pinning(None, None, "not pinned (--no-pin)")
    if shutil.which("taskset") is None:
        return Pinning(None, None, "not pinned: taskset (util-linux) is not installed")
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return Pinning(None, None, "not pinned: no CPU affinity on this system")
    if len(cpus) < 2:
        return Pinning(None, None, f"not pinned: only {len(cpus)} CPU available")
    server_cpu, gen_cpu = cpus[0], cpus[1]
    # This process (reading the generator's output) stays off the server's CPU.
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {gen_cpu})
    return Pinning(
        server_cpu, gen_cpu, f"server on CPU {server_cpu}, load generator on CPU {gen_cpu}"
    )


def probe_wsgiws(env: dict[str, str]) -> dict[str, Any] | None:
    code = (
        "import json, wsgiws\n"
        "try:\n"
        "    import wsgiws.mask as m\n"
        "    accel = {'accelerated': bool(m.ACCELERATED), 'implementation': m.IMPLEMENTATION}\n"
        "except ImportError:\n"
        "    accel = {'accelerated': False, 'implementation': 'Python (no wsgiws.mask)'}\n"
        "print(json.dumps({'server': hasattr(wsgiws, 'Server'),"
        " 'group': hasattr(wsgiws, 'group'),"
        " 'version': getattr(wsgiws, '__version__', '?'),"
        " 'file': getattr(wsgiws, '__file__', '?'), **accel}))\n"
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
    check = subprocess.run(
        [sys.executable, str(SERVERS_DIR / "wsgiws_echo.py"), "--check-inline"],
        env=env,
        cwd=SERVERS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    try:
        inline = json.loads(check.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        inline = {"inline": None, "reason": f"--check-inline failed: {check.stderr[-300:]}"}
    info["inline"] = inline.get("inline")
    info["inline_reason"] = inline.get("reason", "")
    return info


def module_version(module: str) -> str | None:
    dist = {"flask_sock": "flask-sock"}.get(module, module)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import {module}, importlib.metadata as m; print(m.version({dist!r}))",
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


def build_wsgen(build_dir: Path) -> tuple[Path | None, str]:
    """Compile ``wsgen.c`` into ``build_dir`` with ``$CC`` (default ``cc``) and
    ``-O2``: the path of the program and how it was built, or None and why not."""
    compiler = shlex.split(os.environ.get("CC") or "cc")
    if not compiler or shutil.which(compiler[0]) is None:
        return None, f"no C compiler ({' '.join(compiler) or '$CC is empty'} not found)"
    if not sys.platform.startswith("linux"):
        return None, "wsgen needs Linux (epoll)"
    out = build_dir / "wsgen"
    cmd = [*compiler, "-O2", "-std=c99", "-o", str(out), str(WSGEN_SOURCE)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{' '.join(compiler)} failed: {exc}"
    if proc.returncode != 0 or not out.exists():
        said = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return None, f"{' '.join(compiler)} failed: {said[:200]}"
    return out, f"{' '.join(compiler)} -O2"


@dataclass
class Generators:
    """Which load generator drives each generator scenario: the C one (``wsgen``)
    where it is built and implements the scenario, else the Node.js one."""

    wsgen: Path | None
    wsgen_note: str  # how it was built, or why there is none
    node: str | None = None  # Node.js version, once checked
    scenarios: frozenset[str] = WSGEN_SCENARIOS  # those the C one runs

    def kind(self, params: dict[str, Any]) -> str:
        scenario = params.get("scenario")
        if self.wsgen is None or scenario not in self.scenarios:
            return "node"
        return "node" if scenario == "echo" and params.get("deflate") else "c"

    def command(self, params: dict[str, Any], url: str) -> list[str]:
        if self.kind(params) == "c":
            assert self.wsgen is not None
            cmd = [str(self.wsgen), "--url", url]
        else:
            cmd = ["node", str(LOADGEN_DIR / "loadgen.mjs"), "--url", url]
        for key, value in params.items():
            cmd += [f"--{key}", str(value)]
        return cmd

    def label(self, kind: str) -> str:
        if kind == "c":
            return f"C (bench/loadgen/wsgen.c, {self.wsgen_note})"
        return f"Node.js {self.node or '?'} (bench/loadgen/loadgen.mjs, ws {ws_version()})"


def prepare_generators(choice: str, params: list[dict[str, Any]], build_dir: Path) -> Generators:
    """Build the C generator (unless ``choice`` is ``node``) and check Node.js
    where a scenario needs it. ``choice`` ``c`` makes a failed build an error, and
    runs every scenario the C generator implements on it (echo too)."""
    wsgen, note = (None, "not used (--generator node)")
    if choice != "node":
        wsgen, note = build_wsgen(build_dir)
        if wsgen is None:
            if choice == "c":
                raise SystemExit(f"bench: the C load generator could not be built: {note}")
            log(f"bench: the Node.js generator runs every scenario: {note}")
    gens = Generators(wsgen, note, scenarios=WSGEN_ALL if choice == "c" else WSGEN_SCENARIOS)
    if any(gens.kind(p) == "node" for p in params):
        gens.node = ensure_loadgen()
    return gens


def gen_cpu_per_unit(data: dict[str, Any]) -> tuple[float, str] | None:
    """The generator's CPU time per unit of work (µs), and the unit's name."""
    key, unit = GEN_UNITS.get(str(data.get("scenario")), (None, ""))
    count = data.get(key) if key else None
    cpu = data.get("loadgen_cpu_s")
    if not count or cpu is None:
        return None
    return float(cpu) * 1e6 / float(count), unit


def ws_version() -> str:
    try:
        pkg = json.loads((LOADGEN_DIR / "node_modules" / "ws" / "package.json").read_text())
        return str(pkg.get("version", "?"))
    except (OSError, ValueError):
        return "?"


# ---------------------------------------------------------------- server ----


class RunningServer:
    def __init__(
        self,
        spec: ServerSpec,
        env: dict[str, str],
        extra_args: tuple[str, ...] = (),
        pinning: Pinning | None = None,
    ) -> None:
        self.spec = spec
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in stop)
        prefix = pinning.server_prefix() if pinning else []
        self.proc = subprocess.Popen(
            [
                *prefix,  # taskset execs the server: proc.pid is the server's
                sys.executable,
                str(SERVERS_DIR / spec.script),
                "--host",
                HOST,
                "--port",
                "0",
                *spec.args,
                *extra_args,
            ],
            cwd=SERVERS_DIR,
            env={**env, **dict(spec.env)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self.port = self._read_port(timeout=60.0)

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
        if self._stderr.closed:
            return "(closed)"
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


def _reply(stdin: IO[str] | None) -> None:
    if stdin is not None:
        with contextlib.suppress(OSError, ValueError):
            stdin.write("\n")
            stdin.flush()


def run_loadgen(
    server: RunningServer,
    scenario: Scenario,
    params: dict[str, Any],
    pinning: Pinning | None = None,
    gens: Generators | None = None,
) -> Result:
    url = f"ws://{HOST}:{server.port}{scenario.path}"
    prefix = pinning.gen_prefix() if pinning else []
    gens = gens or Generators(None, "not used")
    gen_kind = gens.kind(params)
    cmd = [*prefix, *gens.command(params, url)]
    hard_timeout = float(params.get("duration", 10)) * 3 + 90
    proc = subprocess.Popen(
        cmd,
        cwd=LOADGEN_DIR,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    killer = threading.Timer(hard_timeout, proc.kill)
    killer.start()
    cpu0 = cpu1 = t0 = t1 = None
    busy0: dict[int, float] = {}
    busy1: dict[int, float] = {}
    rss: dict[str, int | None] = {}
    result: dict[str, Any] | None = None
    pid = server.proc.pid
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            kind = event.get("event")
            if kind == "measure_start":
                t0, cpu0, busy0 = time.monotonic(), proc_cpu_seconds(pid), cpu_busy_seconds()
            elif kind == "measure_end":
                t1, cpu1, busy1 = time.monotonic(), proc_cpu_seconds(pid), cpu_busy_seconds()
            elif kind == "hold":
                rss[str(event.get("phase"))] = proc_rss_bytes(pid)
                _reply(proc.stdin)
            elif kind == "result":
                result = event
        stderr = proc.stderr.read() if proc.stderr else ""
        proc.wait()
    finally:
        killer.cancel()
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
    name = server.spec.name
    if result is None:
        lines = stderr.strip().splitlines()
        said = next(
            (x for x in lines if x.startswith(("loadgen:", "wsgen:"))), lines[-1] if lines else ""
        )
        reason = f"loadgen exit {proc.returncode}: {said[:300]}"
        if not server.alive():
            reason += f" | server died: {server.stderr_tail(5)}"
        return Result(
            name, scenario.key, ok=False, reason=reason, data={"generator_kind": gen_kind}
        )
    result["generator_kind"] = gen_kind
    per_unit = gen_cpu_per_unit(result)
    if per_unit is not None:
        result["loadgen_cpu_us_per_unit"], result["loadgen_unit"] = per_unit
    res = Result(name, scenario.key, ok=True, data=result)
    if scenario.metric == "kib_per_conn":
        memory_figure(res, rss, int(params.get("connections", 0)))
        said = server.stderr_tail(1)
        if res.invalid and said not in ("(no stderr)", "(closed)"):
            res.invalid.append(f"server said: {said[:200]}")
    if result.get("errors") and scenario.metric != "kib_per_conn":
        what = "failed cycles" if scenario.metric == "handshakes_per_s" else "lost/bad messages"
        first = f" (the first: {result['first_error']})" if result.get("first_error") else ""
        res.invalid.append(f"{result['errors']} {what}{first}")
    if result.get("timed_out") and scenario.metric != "kib_per_conn":
        res.ok = False
        res.reason = "timed out before all messages came back"
    gen = result.get("loadgen_cpu_frac")
    if scenario.gen_bound and gen is not None and gen > LOADGEN_SATURATION:
        res.invalid.append(f"generator at {gen:.0%} of its core: a lower bound")
    if None not in (cpu0, cpu1, t0, t1):
        assert cpu0 is not None and cpu1 is not None and t0 is not None and t1 is not None
        res.server_cpu_s = cpu1 - cpu0
        res.server_cpu_frac = res.server_cpu_s / max(t1 - t0, 1e-9)
        if pinning is not None:
            other = pinning.other_load(
                busy0, busy1, res.server_cpu_s, float(result.get("loadgen_cpu_s") or 0), t1 - t0
            )
            res.data["other_load"] = other
            for where, frac in other.items():
                if frac > OTHER_LOAD_LIMIT:
                    label = where.replace("_", " ").replace("gen", "generator's")
                    label = label.replace("server core", "server's core")
                    shown = f"{min(frac, 1.0):.0%}"  # tick accounting can overshoot
                    res.invalid.append(f"other processes used {shown} of the {label}")
    return res


def memory_figure(res: Result, rss: dict[str, int | None], wanted: int) -> None:
    """KiB per connection from the memory samples of the ``idle`` scenario."""
    base, loaded = rss.get("baseline"), rss.get("loaded")
    d = res.data
    d["rss_baseline_bytes"], d["rss_loaded_bytes"] = base, loaded
    conns = int(d.get("connections") or 0)
    if base is None or loaded is None or conns == 0:
        res.ok = False
        res.reason = "no memory samples (server gone, or the generator did not hold)"
        return
    d["kib_per_conn"] = (loaded - base) / conns / 1024
    if conns < wanted:
        error = d.get("connect_error") or "?"
        res.invalid.append(f"only {conns} of {wanted} connections opened ({error})")
    if d.get("answered", 0) < conns or d.get("answered_again", 0) < conns:
        res.invalid.append(
            f"not all answering: {d.get('answered')} then {d.get('answered_again')} of {conns}"
        )


def start_server(
    spec: ServerSpec, env: dict[str, str], args: tuple[str, ...], pinning: Pinning
) -> RunningServer | str:
    try:
        return RunningServer(spec, env, args, pinning)
    except (RuntimeError, OSError) as exc:
        log(f"bench: {exc}")
        return f"server failed to start: {str(exc)[-300:]}"


def run_batch(
    specs: list[ServerSpec],
    scenarios: list[Scenario],
    env: dict[str, str],
    quick: bool,
    pinning: Pinning,
    skip: dict[tuple[str, str], str],
    gens: Generators | None = None,
) -> list[Result]:
    """Run ``scenarios`` (same server options) on every server of ``specs``.

    The servers run side by side (idle but for the one measured) and each
    scenario goes over all of them in turn, so the figures of one scenario are
    measured close together in time. A server that dies is restarted for the
    next scenario. With ``fresh_server``, each server is started for the
    scenario alone.
    """
    args = scenarios[0].server_args
    fresh = scenarios[0].fresh_server
    running: dict[str, RunningServer | str] = {}
    out: list[Result] = []

    def server_for(spec: ServerSpec) -> RunningServer | str:
        current = running.get(spec.name)
        if isinstance(current, RunningServer) and not current.alive():
            log(f"bench: {spec.name} died ({current.stderr_tail(3)}); restarting it")
            current.stop()
            current = None
        if current is None:
            current = running[spec.name] = start_server(spec, env, args, pinning)
        return current

    try:
        for sc in scenarios:
            log(f"bench: {sc.key}: {sc.title}")
            for spec in specs:
                if (spec.name, sc.key) in skip:
                    reason = skip[(spec.name, sc.key)]
                    out.append(Result(spec.name, sc.key, False, reason, skipped=True))
                    continue
                server = server_for(spec)
                if isinstance(server, str):
                    out.append(Result(spec.name, sc.key, False, server))
                    continue
                res = run_loadgen(server, sc, sc.quick if quick else sc.full, pinning, gens)
                log(f"bench:   {spec.name:<19} {describe(res, sc)}")
                out.append(res)
                if fresh:
                    server.stop()
                    del running[spec.name]
    finally:
        for server in running.values():
            if isinstance(server, RunningServer):
                server.stop()
    return out


def describe(res: Result, sc: Scenario) -> str:
    if not res.ok:
        return f"FAILED: {res.reason}"
    digits = 1 if sc.unit in ("MB/s", "KiB/conn") else 0
    gen = res.data.get("loadgen_cpu_frac")
    text = f"{fmt_num(res.metric(sc), digits)} {sc.unit}"
    if sc.gen_bound:
        kind = "C" if res.data.get("generator_kind") == "c" else "Node"
        text += f" (gen {kind} {fmt_pct(gen)}, srv {fmt_pct(res.server_cpu_frac)})"
        if res.data.get("loadgen_cpu_us_per_unit") is not None:
            per = res.data["loadgen_cpu_us_per_unit"]
            text += f" gen {fmt_num(per, 2)} µs/{res.data['loadgen_unit']}"
    if res.invalid:
        text += " INVALID: " + "; ".join(res.invalid)
    return text


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


def better_ratio(sc: Scenario, mine: float | None, other: float | None) -> float | None:
    """How many times better ``mine`` is than ``other`` (> 1: better): the ratio of
    the results, inverted where lower is better (memory)."""
    if mine is None or other is None or mine <= 0 or other <= 0:
        return None
    return other / mine if sc.lower_is_better else mine / other


def goal_for(sc: Scenario, server: str, accelerated: bool) -> float | None:
    """Issue 11's goal for ``server`` (wsgiws or its pure-Python run) in ``sc``."""
    if sc.key == "large-1" and (server == "wsgiws-pure" or not accelerated):
        return 0.5
    return sc.goal


def compute_ratios(
    results: list[Result], scenarios: list[Scenario], accelerated: bool = False
) -> list[dict[str, Any]]:
    """Per scenario: each server against the reference (``x_vs_reference``), and
    wsgiws against each peer (``vs_<peer>``), with the goal and whether it is met.
    A ratio involving an invalid figure is marked in ``flagged``."""
    ratios: list[dict[str, Any]] = []
    for sc in scenarios:
        rows = {r.server: r for r in results if r.scenario == sc.key}
        subject = rows.get(SUBJECT)
        mine = subject.metric(sc) if subject else None
        entry: dict[str, Any] = {
            "scenario": sc.key,
            "metric": sc.metric,
            "lower_is_better": sc.lower_is_better,
            "flagged": [],
        }
        values = {n: r.metric(sc) for n, r in rows.items()}
        peers = {n: v for n, v in values.items() if not n.startswith(SUBJECT) and v}
        if peers:
            best = (min if sc.lower_is_better else max)(peers, key=lambda n: peers[n] or 0.0)
            entry["best_peer"] = best
        for name, value in values.items():
            if name.startswith(SUBJECT):
                continue
            entry[f"vs_{name}"] = better_ratio(sc, mine, value)
            if subject and (not subject.valid or not rows[name].valid):
                entry["flagged"].append(f"vs_{name}")
        ref = values.get(REFERENCE)
        against: dict[str, float | None] = {}
        for name, value in values.items():
            against[name] = better_ratio(sc, value, ref)
        entry["vs_reference"] = against
        goals: dict[str, Any] = {}
        for name in (SUBJECT, "wsgiws-pure"):
            if name not in rows or rows[name].skipped:
                continue
            goal = goal_for(sc, name, accelerated)
            if goal is None:
                continue
            value = values.get(name)
            if sc.lower_is_better:
                met = None if value is None else value <= goal
            else:
                r = against.get(name)
                met = None if r is None else r >= goal
            goals[name] = {"goal": goal, "met": met, "valid": rows[name].valid}
        entry["goals"] = goals
        if sc.key == "echo-1" and subject and subject.ok:
            my_p50 = (subject.data.get("latency") or {}).get("p50_us")
            for name in peers:
                peer_p50 = (rows[name].data.get("latency") or {}).get("p50_us")
                if my_p50 and peer_p50:
                    entry[f"p50_vs_{name}"] = my_p50 / peer_p50
        ratios.append(entry)
    return ratios


def fmt_ratio(value: float | None, flagged: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}x" + ("†" if flagged else "")


def cell(r: Result | None, sc: Scenario) -> str:
    if r is None:
        return ""
    if not r.ok:
        if r.skipped and r.reason.startswith("runs only"):
            return "-"
        return "skipped" if r.skipped else "failed"
    digits = 1 if sc.unit in ("MB/s", "KiB/conn") else 0
    return fmt_num(r.metric(sc), digits) + ("" if r.valid else "†")


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def markdown_report(
    results: list[Result],
    scenarios: list[Scenario],
    servers: list[ServerSpec],
    ratios: list[dict[str, Any]],
    meta: dict[str, Any],
) -> str:
    names = [s.name for s in servers]
    by = {(r.server, r.scenario): r for r in results}
    by_ratio = {e["scenario"]: e for e in ratios}
    out = [f"# wsgiws benchmark ({meta['mode']}, {meta['started_utc']})", ""]
    out.append(f"Command: `{meta['command']}`")
    out.append("")
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v)
    node = "not used" if meta["node"] == "not used" else f"{meta['node']} (ws {meta['ws']})"
    out.append(f"- Python {meta['python']}, Node.js {node}; {versions}")
    for gen in (meta.get("generators") or {}).values():
        out.append(f"- Load generator {gen['label']}: {', '.join(gen['scenarios'])}")
    wsgiws = meta.get("wsgiws") or {}
    if wsgiws:
        out.append(
            f"- wsgiws {wsgiws.get('version')} ({meta.get('wsgiws_source')}:"
            f" {wsgiws.get('file')}); masking:"
            f" {wsgiws.get('implementation')}; inline mode:"
            f" {wsgiws.get('inline') or 'none (' + str(wsgiws.get('inline_reason')) + ')'}"
        )
    out.append(f"- {meta['cpus']} CPUs; {meta['pinning']}; {meta['platform']}")
    out.append(
        f"- Load average at start {meta['loadavg_start']}, at end {meta['loadavg_end']}"
        " (measure on an otherwise idle machine)."
    )
    out.append(
        f"- Passes: {meta['repeat']} (the median is shown); total time {meta['elapsed_s']:.0f} s."
    )
    for name, reason in meta.get("skipped_servers", {}).items():
        out.append(f"- Not run: {name}: {reason}")
    out.append(
        "- † marks a figure that is not valid as it stands: the load generator used more"
        f" than {LOADGEN_SATURATION:.0%} of its core (the figure is a lower bound), or other"
        f" processes used more than {OTHER_LOAD_LIMIT:.0%} of the server's or the generator's"
        " core (a busy machine; it also favours servers with more threads), or messages"
        " were lost, or not every connection opened and answered (see the details)."
        " A ratio with † involves one."
    )
    out.append("")

    out.append("## Figures")
    out.append("")
    header = ["scenario", "unit", *names]
    rows = [
        [sc.title, sc.unit] + [cell(by.get((n, sc.key)), sc) for n in names] for sc in scenarios
    ]
    out += md_table(header, rows)
    out.append("")

    peers = [n for n in names if not n.startswith(SUBJECT)]
    subjects = [n for n in names if n.startswith(SUBJECT)]
    if REFERENCE in names:
        out.append(f"## Against {REFERENCE} (issue 11's table), with the goals for wsgiws")
        out.append("")
        out.append(
            f"Each server's result / {REFERENCE}'s (> 1.00: faster). Memory: KiB per"
            " connection (lower is better)."
        )
        out.append("")
        header = ["scenario", *[n for n in names if n != REFERENCE], "goal", "met"]
        rows = []
        for sc in scenarios:
            entry = by_ratio.get(sc.key, {})
            row = [sc.title]
            for n in names:
                if n == REFERENCE:
                    continue
                r = by.get((n, sc.key))
                if sc.lower_is_better:
                    row.append(cell(r, sc))
                else:
                    value = entry.get("vs_reference", {}).get(n)
                    ref = by.get((REFERENCE, sc.key))
                    flag = bool(r and ref and r.ok and ref.ok and (not r.valid or not ref.valid))
                    row.append(fmt_ratio(value, flag) if r and r.ok else cell(r, sc))
            goals = entry.get("goals", {})
            goal_txt, met_txt = [], []
            for n, g in goals.items():
                label = "" if n == SUBJECT else f" ({n})"
                if sc.lower_is_better:
                    goal_txt.append(f"≤ {g['goal']:.2f} {sc.unit}{label}")
                else:
                    goal_txt.append(f"≥ {g['goal']:.1f}x{label}")
                met = g["met"]
                mark = "-" if met is None else ("yes" if met else "no")
                met_txt.append(mark + ("" if g["valid"] or met is None else "†"))
            row += ["; ".join(goal_txt) or "-", "; ".join(met_txt) or "-"]
            rows.append(row)
        out += md_table(header, rows)
        out.append("")

    if SUBJECT in names and peers:
        out.append("## wsgiws / each peer")
        out.append("")
        out.append(
            "> 1.00 means wsgiws is better: faster, or for memory, fewer KiB per connection"
            " (peer KiB / wsgiws KiB)."
        )
        out.append("")
        header = ["scenario", *[f"vs {p}" for p in peers], "best peer"]
        rows = []
        for sc in scenarios:
            entry = by_ratio.get(sc.key, {})
            flagged = set(entry.get("flagged", []))
            row = [sc.title]
            for p in peers:
                row.append(fmt_ratio(entry.get(f"vs_{p}"), f"vs_{p}" in flagged))
            row.append(entry.get("best_peer") or "-")
            rows.append(row)
        out += md_table(header, rows)
        out.append("")
        if len(subjects) > 1:
            out.append(
                f"Variants of wsgiws, not compared here: {', '.join(subjects[1:])}"
                " (see the figures; the inline mode does not count toward the goals)."
            )
            out.append("")

    out.append("## Details")
    out.append("")
    header = ["scenario", "server", "result", "unit", "spread", "gen CPU", "srv CPU", "notes"]
    rows = []
    for sc in scenarios:
        for n in names:
            r = by.get((n, sc.key))
            if r is None:
                continue
            d = r.data
            notes = list(r.invalid)
            if r.reason:
                notes.append(r.reason)
            lat = d.get("latency") or {}
            if lat.get("p50_us") is not None:
                notes.append(
                    f"p50 {fmt_num(lat['p50_us'])} µs, p99 {fmt_num(lat.get('p99_us'))} µs"
                )
            if sc.metric == "kib_per_conn" and d.get("rss_loaded_bytes"):
                notes.append(
                    f"RSS {fmt_num(d['rss_baseline_bytes'] / 2**20, 1)} → "
                    f"{fmt_num(d['rss_loaded_bytes'] / 2**20, 1)} MiB with"
                    f" {d.get('connections')} open; {fmt_num(d.get('connects_per_s'))} connects/s"
                )
            if sc.key == "broadcast" and r.ok:
                notes.append(f"last delivery {fmt_num(d.get('last_delivery_us', 0) / 1000, 1)} ms")
            if sc.gen_bound and d.get("loadgen_cpu_us_per_unit") is not None:
                gen = "C" if d.get("generator_kind") == "c" else "Node"
                notes.append(
                    f"gen {gen} {fmt_num(d['loadgen_cpu_us_per_unit'], 2)} µs/{d['loadgen_unit']}"
                )
            rows.append(
                [
                    sc.key,
                    n,
                    cell(r, sc) if r.ok else "-",
                    sc.unit,
                    spread(r.runs),
                    fmt_pct(d.get("loadgen_cpu_frac")) if sc.gen_bound else "-",
                    fmt_pct(r.server_cpu_frac),
                    "; ".join(notes).replace("|", "/").replace("\n", " "),
                ]
            )
    out += md_table(header, rows)
    out.append("")
    out.append(
        "gen CPU: the load generator's CPU time / measured wall time (100% = its core),"
        " and in the notes its CPU time per unit (C: wsgen.c, Node: loadgen.mjs);"
        " srv CPU: the server process's CPU time (all threads) / the same wall time."
    )
    return "\n".join(out) + "\n"


def print_summary(markdown: str) -> None:
    print(markdown)


# ------------------------------------------------------------------- main ----


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: small counts, seconds")
    parser.add_argument(
        "--out",
        metavar="PREFIX",
        help="write PREFIX.md and PREFIX.json (default: bench/results/<UTC time>-<mode>)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the JSON to PATH")
    parser.add_argument(
        "--servers",
        help="comma-separated subset of: " + ", ".join(s.name for s in SERVERS),
    )
    parser.add_argument(
        "--scenarios",
        help="comma-separated subset of: "
        + ", ".join(s.key for s in SCENARIOS)
        + " (default: all but "
        + ", ".join(s.key for s in SCENARIOS if not s.default)
        + ")",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        metavar="N",
        default=1,
        help="passes over everything (default 1); the median is reported",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    parser.add_argument(
        "--generator",
        choices=("auto", "c", "node"),
        default="auto",
        help="load generator: auto (default) = the C one (wsgen.c) for "
        + ", ".join(sorted(WSGEN_SCENARIOS))
        + " when it builds, Node.js for the rest; c = the C one for every scenario it"
        " implements (echo too, but for deflate), an error if it does not build;"
        " node = Node.js for everything",
    )
    args = parser.parse_args(argv)

    started = time.monotonic()
    started_utc = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    loadavg_start = " ".join(f"{x:.1f}" for x in os.getloadavg())
    scenarios = [s for s in SCENARIOS if s.default]
    if args.scenarios:
        wanted = args.scenarios.split(",")
        unknown = set(wanted) - {s.key for s in SCENARIOS}
        if unknown:
            parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
        scenarios = [s for s in SCENARIOS if s.key in wanted]
    servers = list(SERVERS)
    if args.servers:
        wanted = args.servers.split(",")
        unknown = set(wanted) - {s.name for s in SERVERS}
        if unknown:
            parser.error(f"unknown servers: {', '.join(sorted(unknown))}")
        servers = [s for s in servers if s.name in wanted]

    params = [s.quick if args.quick else s.full for s in scenarios]
    most = max([int(p.get("connections", 0)) for p in params] + [0])
    limits = raise_fd_limit(2 * most + 1024)
    if limits is not None and limits[0] < most + 512:
        log(f"bench: open-files limit {limits[0]} is low for {most} connections")
    pinning = choose_pinning(args.no_pin)
    build_dir = Path(tempfile.mkdtemp(prefix="wsgiws-bench-"))
    atexit.register(shutil.rmtree, build_dir, True)
    gens = prepare_generators(
        args.generator, [sc.params(args.quick) for sc in scenarios], build_dir
    )
    node_version = gens.node or "not used"
    generators = {sc.key: gens.kind(sc.params(args.quick)) for sc in scenarios}

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
    accelerated = bool(wsgiws_info and wsgiws_info.get("accelerated"))

    versions = {m: module_version(m) for m in sorted({s.needs for s in servers} - {"wsgiws"})}
    skip_server: dict[str, str] = {}
    for spec in servers:
        if spec.needs == "wsgiws":
            if wsgiws_info is None or not wsgiws_info.get("server"):
                skip_server[spec.name] = "wsgiws (with wsgiws.Server) is not importable"
            elif spec.variant == "inline" and not wsgiws_info.get("inline"):
                skip_server[spec.name] = str(wsgiws_info.get("inline_reason"))
            elif spec.variant == "accelerated" and not accelerated:
                skip_server[spec.name] = (
                    "wsgiws runs without its C accelerator already: the wsgiws row is pure Python"
                )
        elif versions.get(spec.needs) is None:
            skip_server[spec.name] = f"{spec.needs} is not importable"
    for name, reason in skip_server.items():
        log(f"bench: skipping {name}: {reason}")
    meta_skipped = dict(skip_server)
    skip: dict[tuple[str, str], str] = {}
    for spec in servers:
        for sc in scenarios:
            if spec.name in skip_server:
                skip[(spec.name, sc.key)] = skip_server[spec.name]
            elif spec.only and sc.key not in spec.only:
                skip[(spec.name, sc.key)] = "runs only " + ", ".join(spec.only)
            elif "--deflate" in sc.server_args and not spec.deflate:
                skip[(spec.name, sc.key)] = "no permessage-deflate"
            elif sc.needs_group and spec.needs == "wsgiws" and not (wsgiws_info or {}).get("group"):
                skip[(spec.name, sc.key)] = "wsgiws.group does not exist"
    # Servers that run in none of the scenarios stay out of the tables.
    shown = [s for s in servers if any((s.name, sc.key) not in skip for sc in scenarios)]

    command = "python bench/run.py" + "".join(
        " " + shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    meta: dict[str, Any] = {
        "command": command,
        "mode": "quick" if args.quick else "full",
        "repeat": args.repeat,
        "started_utc": started_utc,
        "python": platform.python_version(),
        "node": node_version,
        "ws": ws_version(),
        "generators": {
            kind: {
                "label": gens.label(kind),
                "scenarios": [k for k, v in generators.items() if v == kind],
            }
            for kind in sorted(set(generators.values()))
        },
        "versions": versions,
        "wsgiws": wsgiws_info,
        "wsgiws_source": wsgiws_note if wsgiws_info else None,
        "cpus": os.cpu_count(),
        "pinning": pinning.note,
        "nofile": limits,
        "platform": platform.platform(),
        "loadavg_start": loadavg_start,
        "skipped_servers": meta_skipped,
    }
    log(
        f"bench ({meta['mode']}): python {meta['python']}, node {node_version}, "
        f"C generator: {gens.wsgen_note}, "
        f"{', '.join(f'{k} {v}' for k, v in versions.items())}, "
        f"wsgiws {(wsgiws_info or {}).get('version', 'missing')} ({wsgiws_note}); {pinning.note}; "
        f"load average {loadavg_start}"
    )

    # Batches: scenarios sharing server options run on the same server processes.
    batches: list[list[Scenario]] = []
    for sc in scenarios:
        if sc.fresh_server:
            batches.append([sc])
            continue
        for batch in batches:
            if not batch[0].fresh_server and batch[0].server_args == sc.server_args:
                batch.append(sc)
                break
        else:
            batches.append([sc])

    runs: dict[tuple[str, str], list[Result]] = {}
    for rep in range(args.repeat):
        if args.repeat > 1:
            log(f"bench: pass {rep + 1}/{args.repeat}")
        for batch in batches:
            specs = [s for s in servers if any((s.name, sc.key) not in skip for sc in batch)]
            for sc in batch:
                for spec in servers:
                    if spec not in specs and (spec.name, sc.key) in skip:
                        r = Result(spec.name, sc.key, False, skip[(spec.name, sc.key)], True)
                        runs.setdefault((spec.name, sc.key), []).append(r)
            if not specs:
                continue
            for res in run_batch(specs, batch, env, args.quick, pinning, skip, gens):
                runs.setdefault((res.server, res.scenario), []).append(res)
    results = [
        pick_median(runs[(spec.name, sc.key)], sc)
        for spec in shown
        for sc in scenarios
        if (spec.name, sc.key) in runs
    ]

    ratios = compute_ratios(results, scenarios, accelerated)
    elapsed = time.monotonic() - started
    meta["elapsed_s"] = elapsed
    meta["loadavg_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    markdown = markdown_report(results, scenarios, shown, ratios, meta)
    print_summary(markdown)

    payload = {
        "meta": meta,
        "scenarios": [
            {
                "key": s.key,
                "title": s.title,
                "metric": s.metric,
                "unit": s.unit,
                "lower_is_better": s.lower_is_better,
                "goal": s.goal,
                "params": s.quick if args.quick else s.full,
                "server_args": list(s.server_args),
            }
            for s in scenarios
        ],
        "servers": [
            {"name": s.name, "description": s.description, "skipped": skip_server.get(s.name)}
            for s in shown
        ],
        "results": [
            {
                "server": r.server,
                "scenario": r.scenario,
                "ok": r.ok,
                "valid": r.valid,
                "skipped": r.skipped,
                "reason": r.reason,
                "invalid": r.invalid,
                "server_cpu_s": r.server_cpu_s,
                "server_cpu_frac": r.server_cpu_frac,
                "runs": r.runs,
                "loadgen": r.data,
            }
            for r in results
        ],
        "ratios": ratios,
    }
    prefix = (
        Path(args.out)
        if args.out
        else RESULTS_DIR / (started_utc.replace(":", "").replace("-", "") + f"-{meta['mode']}")
    )
    prefix.parent.mkdir(parents=True, exist_ok=True)
    md_path, json_path = Path(f"{prefix}.md"), Path(f"{prefix}.json")
    md_path.write_text(markdown)
    text = json.dumps(payload, indent=2) + "\n"
    json_path.write_text(text)
    if args.json:
        Path(args.json).write_text(text)
    log(f"bench: wrote {md_path} and {json_path}")
    failed = [r for r in results if not r.ok and not r.skipped]
    for r in failed:
        log(f"bench: FAILED {r.server} {r.scenario}: {r.reason}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
