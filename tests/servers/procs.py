"""Start and stop the real WSGI servers of the matrix as subprocesses on 127.0.0.1."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.helpers import TIMEOUT

from ..helpers import free_port, live_processes

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

    #: ``handoff`` (same-port by hand-off), ``park``, ``refuse`` (501), or
    #: ``proxied`` (the server's port proxies WebSockets to the separate port and
    #: answers 501 elsewhere).
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
    #: Whether the application also serves a separate WebSocket port (a free one,
    #: given in ``WSGIWS_TEST_WS_PORT``), and how many processes serve it.
    ws_port: bool = False
    ws_processes: int = 1
    #: The documented stop: this signal, to the whole process group or to the
    #: server's first process only.
    stop_signal: signal.Signals = signal.SIGTERM
    stop_group: bool = True
    #: Ready once the separate port accepts, before any HTTP request reached the
    #: application (proves that the server imported it at start).
    ready_by_ws_port: bool = False
    #: A pattern removed from each log line before looking for errors (mod_wsgi
    #: logs everything the application writes to stderr as ``[wsgi:error]``).
    log_prefix: str = ""
    #: Why this server cannot run here (a missing program), or "".
    missing: str = ""


MATRIX_APP = "tests.servers.matrix_app:application"


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


def _program(name: str) -> str | None:
    """A program installed next to the test interpreter (pip), else on the PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


#: uWSGI built by pip for the test interpreter (``pip install uwsgi``).
UWSGI = _program("uwsgi")


def _uwsgi(*options: str) -> tuple[str, ...]:
    argv = (UWSGI or "uwsgi", "--master", "--need-app", *options)
    return (*argv, "--module", "tests.servers.matrix_app:application")


def _uwsgi_spec(mode: str, *options: str, **kwargs: object) -> Spec:
    # SIGINT to the master only, as "uwsgi --stop pidfile" sends it: the master stops
    # the workers, which run Python's exit hooks. A worker signalled itself (SIGINT or
    # SIGQUIT to the whole group) dies without them, and uWSGI 2.0 takes SIGTERM for
    # "reload" (see the deployment guide).
    return Spec(
        mode,
        _uwsgi(*options),
        stop_signal=signal.SIGINT,
        stop_group=False,
        missing="" if UWSGI else "uwsgi is not installed (pip install uwsgi)",
        **kwargs,  # type: ignore[arg-type]
    )


#: Debian's Apache and its mod_wsgi (packages apache2, libapache2-mod-wsgi-py3).
APACHE = shutil.which("apache2") or ("/usr/sbin/apache2" * os.path.exists("/usr/sbin/apache2"))
APACHE_MODULES = Path("/usr/lib/apache2/modules")
APACHE_MISSING = (
    ""
    if APACHE and (APACHE_MODULES / "mod_wsgi.so").exists()
    else "Apache with mod_wsgi is not installed (apache2, libapache2-mod-wsgi-py3)"
)


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
    # Separate-port mode under prefork servers: the master never serves.
    "gunicorn-sync+port": Spec(
        "handoff", _gunicorn("sync", 2), workers=2, ws_port=True, ws_processes=2
    ),
    "gunicorn-sync-preload+port": Spec(
        "handoff",
        _gunicorn("sync", 2, "--preload"),
        workers=2,
        preload=True,
        ws_port=True,
        ws_processes=2,
    ),
    # waitress as its users run it: no SIGTERM handler of the application's own.
    "waitress+port": Spec(
        "refuse",
        (sys.executable, "-m", "waitress", "--listen=127.0.0.1:{port}", MATRIX_APP),
        ws_port=True,
    ),
    "uwsgi-processes": _uwsgi_spec(
        "handoff", "--processes", "2", "--http-socket", "127.0.0.1:{port}", workers=2, preload=True
    ),
    "uwsgi-threads": _uwsgi_spec(
        "handoff",
        "--processes",
        "1",
        "--threads",
        "4",
        "--http-socket",
        "127.0.0.1:{port}",
        workers=1,
        preload=True,
    ),
    "uwsgi-router": _uwsgi_spec(
        "handoff", "--processes", "2", "--http", "127.0.0.1:{port}", "--http-websockets"
    ),
    "uwsgi-router-plain": _uwsgi_spec("refuse", "--processes", "1", "--http", "127.0.0.1:{port}"),
    "uwsgi+port": _uwsgi_spec(
        "handoff",
        "--processes",
        "2",
        "--http-socket",
        "127.0.0.1:{port}",
        workers=2,
        preload=True,
        ws_port=True,
        ws_processes=2,
    ),
    "uwsgi-lazy+port": _uwsgi_spec(
        "handoff",
        "--processes",
        "2",
        "--lazy-apps",
        "--http-socket",
        "127.0.0.1:{port}",
        workers=2,
        preload=True,
        ws_port=True,
        ws_processes=2,
    ),
    # Apache's documented stop (apachectl -k stop): SIGTERM to the parent only.
    "mod_wsgi": Spec(
        "proxied",
        ("{apache}",),
        ws_port=True,
        ws_processes=2,
        stop_group=False,
        ready_by_ws_port=True,
        log_prefix=r"^\[[^]]*\] \[wsgi:error\] \[pid \d+(:tid \d+)?\]( \[remote [^]]*\])? ",
        missing=APACHE_MISSING,
    ),
}

#: The servers that can run on this machine.
AVAILABLE = [name for name, spec in MATRIX.items() if not spec.missing]

_NO_CACHE = shutil.ignore_patterns("__pycache__")
#: What a worker logs when its loop starts (wsgiws's own log lines).
_LOOP_STARTED = re.compile(r"wsgiws\.server: (running with no listening socket|listening on )")

#: Apache in the foreground with mod_wsgi in daemon mode, as in the deployment guide.
APACHE_CONF = """\
ServerRoot "{root}"
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile {root}/httpd.pid
Mutex file:{root}
ErrorLog /dev/stderr
LogLevel warn
User nobody
Group nogroup
{modules}
WSGISocketPrefix {root}/wsgi
WSGIDaemonProcess wsgiws processes=2 threads=4 python-path={code} display-name=%{{GROUP}}
WSGIScriptAlias / {code}/app.wsgi process-group=wsgiws application-group=%{{GLOBAL}}
ProxyPass /ws/ ws://127.0.0.1:{ws_port}/ws/
<Directory {code}>
  Require all granted
</Directory>
"""

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
        #: The separate WebSocket port, or None.
        self.ws_port = free_port() if spec.ws_port else None
        argv = [arg.format(port=port, apache="{apache}") for arg in spec.argv]
        env = {**os.environ, **dict(spec.env), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        if self.ws_port is not None:
            env["WSGIWS_TEST_WS_PORT"] = str(self.ws_port)
        #: A directory of this server's own (Django's settings put a watched module there).
        self.dir = log_dir / name
        self.dir.mkdir()
        env["WSGIWS_TEST_DIR"] = str(self.dir)
        self._public: str | None = None
        if argv == ["{apache}"]:
            self.port = port
            argv = self._apache_setup(port)
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

    def _apache_setup(self, port: int) -> list[str]:
        """Write an Apache configuration: mod_wsgi daemon mode (two processes, the
        application imported at start) and mod_proxy_wstunnel sending ``/ws/`` to the
        separate port, as in the deployment guide. Apache's processes run as
        ``nobody``, so the code goes to a directory they can read."""
        import h11
        import wsproto

        public = Path(tempfile.mkdtemp(prefix="wsgiws-apache-"))
        self._public = str(public)
        public.chmod(0o755)
        code = public / "code"
        for package in (ROOT / "src" / "wsgiws", Path(wsproto.__file__).parent):
            shutil.copytree(package, code / package.name, ignore=_NO_CACHE)
        shutil.copytree(Path(h11.__file__).parent, code / "h11", ignore=_NO_CACHE)
        shutil.copy(ROOT / "tests" / "servers" / "matrix_app.py", code)
        (code / "app.wsgi").write_text(
            "import os\n"
            f"os.environ['WSGIWS_TEST_WS_PORT'] = '{self.ws_port}'\n"
            "from matrix_app import application\n"
        )
        modules = "\n".join(
            f"LoadModule {name}_module {APACHE_MODULES}/mod_{name}.so"
            for name in ("mpm_event", "authz_core", "wsgi", "proxy", "proxy_wstunnel")
        )
        conf = public / "httpd.conf"
        conf.write_text(
            APACHE_CONF.format(
                root=public, port=port, ws_port=self.ws_port, code=code, modules=modules
            )
        )
        for path in [public, *public.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        return [APACHE, "-DFOREGROUND", "-f", str(conf)]

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
        while self.spec.ready_by_ws_port and not self._ws_port_accepts():
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited early:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}'s WebSocket port never opened:\n{self.log()}")
            time.sleep(0.05)
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

    def _ws_port_accepts(self) -> bool:
        assert self.ws_port is not None
        try:
            with socket.create_connection(("127.0.0.1", self.ws_port), timeout=2):
                return True
        except OSError:
            return False

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
        started = len(_LOOP_STARTED.findall(self.log()))
        return len(self.worker_pids()) >= self.spec.workers and (
            self.spec.preload or started >= self.spec.workers
        )

    def worker_pids(self) -> set[int]:
        """gunicorn's worker pids: the master's live child processes."""
        return set(children(self.proc.pid))

    def errors(self) -> list[str]:
        """Lines of the log that look like errors."""
        prefix = re.compile(self.spec.log_prefix or "^$")
        lines = [prefix.sub("", line, count=1) for line in self.log().splitlines()]
        return [line for line in lines if any(p.search(line) for p in ERROR_PATTERNS)]

    def stop(self) -> None:
        """Terminate the server's process group; kill it if it lingers (once)."""
        if self._stopped:
            return  # the group id may belong to someone else by now
        self._stopped = True
        with contextlib.suppress(ProcessLookupError):
            if self.spec.stop_group:
                os.killpg(self.proc.pid, self.spec.stop_signal)
            else:
                self.proc.send_signal(self.spec.stop_signal)
        try:
            self.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=TIMEOUT)
        finally:
            self._log.close()
            if self._public is not None:
                shutil.rmtree(self._public, ignore_errors=True)


def children(pid: int) -> list[int]:
    """The live (non-zombie) child processes of ``pid``."""
    return [child for child, parent, _ in live_processes() if parent == pid]


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
