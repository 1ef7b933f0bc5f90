"""What the hosting process lets wsgiws do: stop signals, forks without Python's fork
hooks, and refusing to start where Python threads never run (Debian's uWSGI)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from .helpers import TIMEOUT, free_port, run_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_with_the_default_action_sends_1001_then_ends_the_process() -> None:
    """Where SIGTERM would kill the process outright (waitress, plain scripts), clients
    get 1001 first, and the process still ends by SIGTERM."""
    with run_script(
        """
        server = wsgiws.Server(port=0, close_timeout=2)
        server.start()
        print(server.port, flush=True)
        while True:
            time.sleep(1)
        """
    ) as proc:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        with connect(f"ws://127.0.0.1:{port}/pid") as ws:
            assert ws.recv(TIMEOUT) == str(proc.pid)
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(TIMEOUT)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001
        assert proc.wait(TIMEOUT) == -signal.SIGTERM
        assert time.monotonic() - started < 3.0


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_an_application_sigterm_handler_is_left_alone() -> None:
    """A SIGTERM handler the application installed first is not replaced."""
    with run_script(
        """
        handler = lambda *args: None
        signal.signal(signal.SIGTERM, handler)
        server = wsgiws.Server(port=0)
        server.start()
        print(signal.getsignal(signal.SIGTERM) is handler, flush=True)
        server.close()
        """
    ) as proc:
        out, err = proc.communicate(timeout=TIMEOUT)
    assert out.split() == ["True"], err


@pytest.mark.skipif(sys.platform != "linux", reason="fork(2) through ctypes")
def test_copy_forked_without_fork_hooks_closes_at_once() -> None:
    """A process forked without Python's fork hooks (as uWSGI forks its workers) has a
    copy of a running server but no loop thread: closing it, as its exit hook does,
    returns at once instead of waiting for that missing thread. The parent serves on."""
    with run_script(
        """
        import ctypes
        server = wsgiws.Server(port=0)
        server.start()
        # PyDLL keeps the GIL across the call: fork(2) runs no Python fork hook.
        pid = ctypes.PyDLL(None).fork()
        if pid == 0:
            started = time.monotonic()
            server.close()
            print(f"child {time.monotonic() - started:.3f}", flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
        print(server.port, flush=True)
        sys.stdin.readline()
        server.close()
        """
    ) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        child = proc.stdout.readline().split()
        assert child[0] == "child" and float(child[1]) < 0.5, child
        port = int(proc.stdout.readline())
        with connect(f"ws://127.0.0.1:{port}/pid") as ws:
            assert ws.recv(TIMEOUT) == str(proc.pid)
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(TIMEOUT) == 0
        assert proc.stderr is not None
        assert "Traceback" not in proc.stderr.read()


#: Debian's uWSGI with its Python 3 plugin (packages uwsgi-core, uwsgi-plugin-python3):
#: Python threads are off there unless --enable-threads.
DEBIAN_UWSGI = shutil.which("uwsgi_python3")


@pytest.mark.slow
@pytest.mark.skipif(DEBIAN_UWSGI is None, reason="Debian's uwsgi-plugin-python3 is not installed")
def test_uwsgi_without_threads_fails_loudly_instead_of_hanging() -> None:
    """Debian's uWSGI without --enable-threads would accept WebSocket connections and
    never answer: the application refuses to start instead, naming the option, and
    the separate port refuses connections at once."""
    import h11
    import wsproto

    assert DEBIAN_UWSGI is not None
    # The system Python of Debian's plugin imports wsgiws, wsproto and h11 from here.
    path = Path(tempfile.mkdtemp(prefix="wsgiws-uwsgi-"))
    try:
        for package in (ROOT / "src" / "wsgiws", Path(wsproto.__file__).parent):
            shutil.copytree(package, path / package.name)
        shutil.copytree(Path(h11.__file__).parent, path / "h11")
        shutil.copy(ROOT / "tests" / "servers" / "matrix_app.py", path)
        port, ws_port = free_port(), free_port()
        env = {**os.environ, "WSGIWS_TEST_WS_PORT": str(ws_port)}
        env.pop("PYTHONPATH", None)
        argv = [DEBIAN_UWSGI, "--master", "--http-socket", f"127.0.0.1:{port}"]
        argv += ["--pythonpath", str(path), "--module", "matrix_app:application"]
        log = path / "uwsgi.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 3 * TIMEOUT
            # uWSGI's own banner mentions the option too: wait for the library's error.
            error = "RuntimeError: wsgiws needs Python threads"
            while error not in log.read_text(errors="replace"):
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            assert "Add --enable-threads" in log.read_text(errors="replace")
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", ws_port), timeout=TIMEOUT).close()
        finally:
            proc.send_signal(signal.SIGINT)  # uWSGI's stop ("uwsgi --stop")
            try:
                proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:  # pragma: no cover - a stuck server
                proc.kill()
                proc.wait(TIMEOUT)
    finally:
        shutil.rmtree(path, ignore_errors=True)
