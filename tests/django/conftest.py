"""Fixtures of the Django adapter's tests.

Django is set up (``DJANGO_SETTINGS_MODULE``, a temporary SQLite database, the
migrations) only when a test of this directory runs, and the environment variables
are restored afterwards; other tests never see Django configured by these fixtures.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..helpers import TIMEOUT, live_processes

#: The settings module of the test project.
SETTINGS = "tests.django.project.settings"
#: The repository root (the test project is the package ``tests.django.project``).
ROOT = Path(__file__).resolve().parents[2]
#: The test project's ``manage.py``.
MANAGE = Path(__file__).resolve().parent / "manage.py"
#: Password of the users the tests create.
PASSWORD = "correct horse battery staple"

_ENV_KEYS = ("DJANGO_SETTINGS_MODULE", "WSGIWS_DJANGO_TEST_DB", "WSGIWS_DJANGO_TEST_WS_PORT")


@pytest.fixture(scope="session", autouse=True)
def django_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Set up Django with the test project's settings and a migrated SQLite database.

    The environment variables are set only while Django reads them (settings are
    loaded once, at setup) and restored at once, so that subprocesses started by
    other tests never inherit them.
    """
    from django.conf import settings

    if settings.configured:
        if settings.SETTINGS_MODULE != SETTINGS:
            raise RuntimeError("Django was configured by another test with other settings")
        yield Path(settings.DATABASES["default"]["NAME"])
        return
    db = tmp_path_factory.mktemp("django") / "db.sqlite3"
    saved = {key: os.environ.get(key) for key in _ENV_KEYS}
    os.environ.update(
        DJANGO_SETTINGS_MODULE=SETTINGS,
        WSGIWS_DJANGO_TEST_DB=str(db),
        WSGIWS_DJANGO_TEST_WS_PORT="0",
    )
    try:
        import django

        django.setup()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    try:
        yield db
    finally:
        from django.db import connections

        connections.close_all()


@pytest.fixture(scope="session")
def application(django_project: Path) -> Iterator[Any]:
    """The test project's ``wsgi.application``: its WebSocket server is on a free port."""
    saved = os.environ.get("DJANGO_SETTINGS_MODULE")
    try:
        from tests.django.project.wsgi import application  # its setdefault: undone below
    finally:
        if saved is None:
            os.environ.pop("DJANGO_SETTINGS_MODULE", None)
        else:
            os.environ["DJANGO_SETTINGS_MODULE"] = saved
    try:
        yield application
    finally:
        application.close()


def ws_url(application: Any, path: str) -> str:
    """The ``ws://`` URL of ``path`` on the application's separate port."""
    return f"ws://127.0.0.1:{application.port}{path}"


def create_user(prefix: str = "user") -> Any:
    """Create a user with a unique name and :data:`PASSWORD`."""
    from django.contrib.auth import get_user_model

    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    return get_user_model().objects.create_user(name, password=PASSWORD)


def session_cookie(username: str) -> str:
    """Log ``username`` in with Django's test client; return the ``Cookie`` header."""
    from django.test import Client

    client = Client()
    assert client.login(username=username, password=PASSWORD)
    return f"sessionid={client.cookies['sessionid'].value}"


def port_is_free(port: int) -> bool:
    """Tell whether a listening socket can be bound to ``port`` right now."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class Process:
    """A ``manage.py`` subprocess in its own process group, its output collected.

    Args:
        args: the ``manage.py`` arguments.
        env: extra environment variables.
        script: the ``manage.py`` to run.
        cwd: the working directory.
    """

    def __init__(
        self,
        args: list[str],
        env: dict[str, str],
        *,
        script: Path = MANAGE,
        cwd: Path = ROOT,
    ) -> None:
        inherited = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
        full_env = {**inherited, **env, "PYTHONUNBUFFERED": "1"}
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, str(script), *args],
            cwd=cwd,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # a process group, like a terminal's
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_line(
        self, pattern: str, start: int = 0, timeout: float = 3 * TIMEOUT
    ) -> re.Match[str]:
        """Wait for an output line from index ``start`` on matching ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        index = start
        with self._cond:
            while True:
                while index < len(self.lines):
                    found = regex.search(self.lines[index])
                    if found is not None:
                        return found
                    index += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"no line matching {pattern!r}; output:\n" + "\n".join(self.lines)
                    )
                self._cond.wait(min(remaining, 0.5))

    def wait_http(self, port: int, timeout: float = 3 * TIMEOUT) -> None:
        """Wait until ``port`` answers an HTTP request (any status), as a deployment's
        health check would; fail if the process exits or ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        while True:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
            try:
                conn.request("HEAD", "/")
                conn.getresponse().read()
                return
            except OSError:
                pass  # not listening yet
            finally:
                conn.close()
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"nothing answers on port {port}; output:\n{self.output()}")
            time.sleep(0.05)  # polling a starting server: no event to await

    def output(self) -> str:
        """Everything the process printed so far."""
        with self._cond:
            return "\n".join(self.lines)

    def interrupt(self) -> None:
        """Send SIGINT to the whole process group, as Ctrl-C in a terminal does."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def stop(self) -> None:
        """Kill the process group if anything in it is still running."""
        with contextlib.suppress(ProcessLookupError):  # the group is gone already
            os.killpg(self.proc.pid, signal.SIGKILL)
        try:
            self.proc.wait(TIMEOUT)
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self._reader.join(TIMEOUT)

    def group_alive(self) -> bool:
        """Tell whether any process of the group is still running (zombies aside)."""
        return bool(group_members(self.proc.pid))


def group_members(pgid: int) -> list[int]:
    """The live (non-zombie) processes of a process group."""
    return [pid for pid, _, group in live_processes() if group == pgid]
