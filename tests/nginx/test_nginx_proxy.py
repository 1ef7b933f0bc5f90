"""A real nginx in front of the app: same-port and separate-port modes.

nginx runs the configurations of the deployment guide (``docs/deployment.rst``),
read from the guide itself, with loopback ports substituted: ``proxy_http_version
1.1`` plus the ``Upgrade`` and ``Connection`` headers, which nginx does not pass on
by itself (they are hop-by-hop).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.helpers import TIMEOUT, free_port
from tests.servers.procs import ServerProcess, running

pytestmark = pytest.mark.nginx

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)

#: The deployment guide, whose nginx configurations this module runs.
GUIDE = Path(__file__).resolve().parents[2] / "docs" / "deployment.rst"

#: The frame around the guide's snippets: paths in a temporary directory, foreground.
CONFIG = """
daemon off;
master_process off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 128; }}
http {{
  access_log {tmp}/access.log;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
{snippets}
}}
"""


def guide_snippets() -> dict[str, str]:
    """The guide's ``code-block:: nginx`` blocks, by caption."""
    snippets: dict[str, str] = {}
    lines = GUIDE.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip() != ".. code-block:: nginx":
            continue
        caption = lines[i + 1].strip().removeprefix(":caption:").strip()
        body = []
        for text in lines[i + 2 :]:
            if text and not text.startswith("    "):
                break
            body.append(text)
        snippets[caption] = "\n".join(body)
    return snippets


def nginx_config(tmp: Path, ports: dict[str, int], backends: dict[str, ServerProcess]) -> str:
    """The guide's configurations with loopback ports for the listeners and upstreams."""
    snippets = guide_snippets()
    same = snippets["same-port mode"]
    same = same.replace("listen 80;", f"listen 127.0.0.1:{ports['same']};")
    same = same.replace("127.0.0.1:8000", f"127.0.0.1:{backends['gunicorn-gthread'].port}")
    separate = snippets["separate-port mode"]
    separate = separate.replace("listen 80;", f"listen 127.0.0.1:{ports['separate']};")
    separate = separate.replace(
        "127.0.0.1:8001", f"127.0.0.1:{ws_port_of(backends['wsgiref+port'])}"
    )
    separate = separate.replace("127.0.0.1:8000", f"127.0.0.1:{backends['wsgiref+port'].port}")
    parts = [snippets["http level: the Connection header to send upstream"], same, separate]
    return CONFIG.format(tmp=tmp, snippets="\n".join(parts))


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    """gunicorn (gthread) in same-port mode, wsgiref with a separate WebSocket port."""
    with running(["gunicorn-gthread", "wsgiref+port"], tmp_path_factory.mktemp("logs")) as s:
        yield s


def ws_port_of(server: ServerProcess) -> int:
    """The separate WebSocket port the middleware logged."""
    return int(server.log().split("listening on 127.0.0.1:")[1].split()[0])


@pytest.fixture(scope="module")
def nginx(
    backends: dict[str, ServerProcess], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, int]]:
    """A foreground nginx on two free loopback ports; yields them by mode."""
    if NGINX is None:
        pytest.skip("nginx is not installed (Debian package nginx)")
    tmp: Path = tmp_path_factory.mktemp("nginx")
    ports = {"same": free_port(), "separate": free_port()}
    conf = tmp / "nginx.conf"
    conf.write_text(nginx_config(tmp, ports, backends))
    with (tmp / "stderr.log").open("wb") as err:
        proc = subprocess.Popen(
            [NGINX, "-e", str(tmp / "error.log"), "-p", str(tmp), "-c", str(conf)],
            stdout=err,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 3 * TIMEOUT
        for port in ports.values():
            while True:
                assert proc.poll() is None, (tmp / "error.log").read_text()
                assert time.monotonic() < deadline, "nginx did not answer in time"
                with (
                    contextlib.suppress(OSError, urllib.error.URLError),
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2),
                ):
                    break
                time.sleep(0.05)
        yield ports
    finally:
        proc.send_signal(signal.SIGQUIT)  # graceful shutdown
        try:
            proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=TIMEOUT)
        errors = [
            line
            for line in (tmp / "error.log").read_text().splitlines()
            if any(level in line for level in ("[error]", "[crit]", "[alert]", "[emerg]"))
        ]
        assert errors == [], errors


@pytest.mark.parametrize("mode", ["same", "separate"])
def test_websocket_through_nginx(nginx: dict[str, int], mode: str) -> None:
    """Through nginx, a WebSocket echoes, HTTP works meanwhile, and the close code arrives."""
    port = nginx[mode]
    with connect(f"ws://127.0.0.1:{port}/ws/echo", open_timeout=TIMEOUT) as ws:
        welcome = ws.recv(timeout=TIMEOUT)
        assert isinstance(welcome, str) and welcome.startswith("welcome ")
        ws.send("through nginx")
        assert ws.recv(timeout=TIMEOUT) == "through nginx"
        ws.send(b"\x01\x02" * 40000)
        assert ws.recv(timeout=TIMEOUT) == b"\x01\x02" * 40000
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/page", timeout=TIMEOUT) as r:
            assert r.read().startswith(b"http /page pid ")
        ws.send("still here")
        assert ws.recv(timeout=TIMEOUT) == "still here"
        ws.close(4003, "bye")
    assert ws.close_code == 4003


def test_backend_logs_are_clean(nginx: dict[str, int], backends: dict[str, ServerProcess]) -> None:
    """The backends behind nginx log no error during the WebSocket lifetimes above."""
    for server in backends.values():
        assert server.errors() == [], server.log()
