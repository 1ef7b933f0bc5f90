"""Start and stop the real WSGI servers of the matrix as subprocesses on 127.0.0.1."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.helpers import TIMEOUT

from ..helpers import free_port

#: The repository root: subprocesses import ``tests.servers.matrix_app`` from it.
ROOT = Path(__file__).resolve().parents[2]

#: Lines that must not appear in a server's log during a normal lifetime.
ERROR_PATTERNS = [
    re.compile(r"Traceback"),
    re.compile(r"Exception"),
    re.compile(r"\berror\b", re.IGNORECASE),
    re.compile(r"Broken pipe", re.IGNORECASE),
    re.compile(r"^(WARNING|CRITICAL) wsgiws", re.MULTILINE),
]


@dataclasses.dataclass(frozen=True)
class Spec:
    """How to run one server of the matrix."""

    #: ``handoff`` (same-port by hand-off), ``park`` or ``refuse`` (501).
    mode: str
    #: The command, with ``{port}`` for servers that need a port number.
    argv: tuple[str, ...]
    #: Extra environment variables.
    env: tuple[tuple[str, str], ...] = ()
    #: gunicorn worker processes (0: not gunicorn).
    workers: int = 0
    #: Whether the app is loaded in gunicorn's master before forking.
    preload: bool = False
    #: Whether the server terminates TLS itself (a certificate is made for it).
    tls: bool = False


def _gunicorn(worker: str, workers: int, *extra: str) -> tuple[str, ...]:
    argv = [sys.executable, "-m", "gunicorn", "-k", worker, "-w", str(workers)]
    argv += ["-b", "127.0.0.1:{port}", "--timeout", "5", "--graceful-timeout", "5", *extra]
    if _gunicorn_has_control_socket():
        argv.append("--no-control-socket")  # else every instance shares one path
    return (*argv, "tests.servers.matrix_app:application")


def _gunicorn_has_control_socket() -> bool:
    try:
        from gunicorn.config import KNOWN_SETTINGS
    except ImportError:  # pragma: no cover - gunicorn is a test dependency
        return False
    return any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS)


def _in_process(kind: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "tests.servers.run_server", kind)


#: Every server of the matrix, by name.
MATRIX: dict[str, Spec] = {
    "wsgiref": Spec("handoff", _in_process("wsgiref")),
    "wsgiref+port": Spec("handoff", _in_process("wsgiref"), env=(("WSGIWS_TEST_WS_PORT", "0"),)),
    "werkzeug": Spec("handoff", _in_process("werkzeug")),
    "werkzeug-park": Spec("park", _in_process("werkzeug"), env=(("WSGIWS_TEST_HANDOFF", "park"),)),
    "gunicorn-sync": Spec("handoff", _gunicorn("sync", 3), workers=3),
    "gunicorn-gthread": Spec("handoff", _gunicorn("gthread", 2, "--threads", "4"), workers=2),
    "gunicorn-sync-preload": Spec(
        "handoff", _gunicorn("sync", 2, "--preload"), workers=2, preload=True
    ),
    "gunicorn-gthread-preload": Spec(
        "handoff",
        _gunicorn("gthread", 2, "--threads", "2", "--preload"),
        workers=2,
        preload=True,
    ),
    "gunicorn-gevent": Spec("handoff", _gunicorn("gevent", 2), workers=2),
    "gevent": Spec("handoff", _in_process("gevent")),
    "django": Spec(
        "handoff",
        (sys.executable, "-m", "django", "runserver", "127.0.0.1:{port}"),
        env=(("DJANGO_SETTINGS_MODULE", "tests.servers.djproject.settings"),),
    ),
    "waitress": Spec("refuse", _in_process("waitress")),
    "gunicorn-tls": Spec("refuse", _gunicorn("sync", 1), workers=1, tls=True),
}

#: The line ``run_server`` prints once listening on a port of its choosing (the other
#: servers are given a free port: their banners are not read).
_SERVING = re.compile(r"^SERVING (\d+)$", re.MULTILINE)


class ServerProcess:
    """One running server: its process, its port and its log (stdout and stderr)."""

    def __init__(self, name: str, spec: Spec, log_dir: Path) -> None:
        self.name = name
        self.spec = spec
        self.log_path = log_dir / f"{name}.log"
        port = free_port()
        #: The server's HTTP port (0 until ``run_server`` says which it chose).
        self.port = port if any("{port}" in arg for arg in spec.argv) else 0
        argv = [arg.format(port=port) for arg in spec.argv]
        env = {**os.environ, **dict(spec.env), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        #: A directory of this server's own (Django's settings put a watched module there).
        self.dir = log_dir / name
        self.dir.mkdir()
        env["WSGIWS_TEST_DIR"] = str(self.dir)
        #: For a TLS server: a client context trusting its certificate.
        self.ssl_context: ssl.SSLContext | None = None
        if spec.tls:
            argv[-1:-1] = self._make_certificate()
        env.pop("WERKZEUG_RUN_MAIN", None)
        self._stopped = False
        self._log = self.log_path.open("wb")
        # A session of its own, so that stop() reaches the children too (gunicorn's
        # workers, Django's autoreloaded server process).
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _make_certificate(self) -> list[str]:
        import trustme

        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        cert_file, key_file = self.dir / "cert.pem", self.dir / "key.pem"
        cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
        cert.private_key_pem.write_to_path(str(key_file))
        self.ssl_context = ssl.create_default_context()
        ca.configure_trust(self.ssl_context)
        return ["--certfile", str(cert_file), "--keyfile", str(key_file)]

    @property
    def scheme(self) -> str:
        """``https`` for a TLS server, else ``http``."""
        return "https" if self.spec.tls else "http"

    def url(self, path: str = "/", *, websocket: bool = False) -> str:
        """The URL of ``path`` on the server's own port."""
        scheme = ("wss" if self.spec.tls else "ws") if websocket else self.scheme
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def log(self) -> str:
        """The server's output so far."""
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 6 * TIMEOUT) -> None:
        """Wait until the server answers plain HTTP (and all gunicorn workers booted)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited early:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not start in time:\n{self.log()}")
            if not self.port:
                match = _SERVING.search(self.log())
                if match:
                    self.port = int(match.group(1))
            if self.port and self._answers() and self._workers_ready():
                return
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url(), timeout=2, context=self.ssl_context) as r:
                return bool(r.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def _workers_ready(self) -> bool:
        if not self.spec.workers:
            return True
        # Each worker (or, with --preload, the master once) logs the loop's start.
        started = self.log().count("running with no listening socket")
        return len(self.worker_pids()) >= self.spec.workers and (
            self.spec.preload or started >= self.spec.workers
        )

    def worker_pids(self) -> set[int]:
        """gunicorn's worker pids: the master's live child processes."""
        return set(children(self.proc.pid))

    def errors(self) -> list[str]:
        """Lines of the log that look like errors."""
        return [
            line for line in self.log().splitlines() if any(p.search(line) for p in ERROR_PATTERNS)
        ]

    def stop(self) -> None:
        """Terminate the server's process group; kill it if it lingers (once)."""
        if self._stopped:
            return  # the group id may belong to someone else by now
        self._stopped = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=TIMEOUT)
        self._log.close()


def children(pid: int) -> list[int]:
    """The live (non-zombie) child processes of ``pid``, from ``/proc``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # "pid (comm) state ppid ...": comm may hold spaces, so split after ")".
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


@contextlib.contextmanager
def running(names: list[str], log_dir: Path) -> Iterator[dict[str, ServerProcess]]:
    """Start the named servers at once, wait until all answer, stop all on exit."""
    started: dict[str, ServerProcess] = {}
    try:
        for name in names:
            started[name] = ServerProcess(name, MATRIX[name], log_dir)
        for server in started.values():
            server.wait_ready()
        yield started
    finally:
        for server in started.values():
            server.stop()
