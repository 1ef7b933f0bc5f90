"""A real nginx in front of the app: same-port and separate-port modes.

The configurations are the ones the deployment guide shows (``docs/deployment.rst``):
``proxy_http_version 1.1`` plus the ``Upgrade`` and ``Connection`` headers, which
nginx does not pass on by itself (they are hop-by-hop).
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

from tests.helpers import TIMEOUT
from tests.servers.procs import ServerProcess, free_port, running

pytestmark = pytest.mark.nginx

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)

#: What every WebSocket location needs (the guide's snippet).
UPGRADE = """
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_read_timeout 1h;
"""

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
  map $http_upgrade $connection_upgrade {{
    default upgrade;
    ''      close;
  }}
  # Same-port mode: one upstream serves HTTP and WebSockets.
  server {{
    listen 127.0.0.1:{same_listen};
    location / {{
      proxy_pass http://127.0.0.1:{same_port};{upgrade}
    }}
  }}
  # Separate-port mode: WebSocket paths go to the middleware's own port.
  server {{
    listen 127.0.0.1:{separate_listen};
    location /ws/ {{
      proxy_pass http://127.0.0.1:{ws_port};{upgrade}
    }}
    location / {{
      proxy_pass http://127.0.0.1:{http_port};
    }}
  }}
}}
"""


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
    conf.write_text(
        CONFIG.format(
            tmp=tmp,
            upgrade=UPGRADE,
            same_listen=ports["same"],
            same_port=backends["gunicorn-gthread"].port,
            separate_listen=ports["separate"],
            ws_port=ws_port_of(backends["wsgiref+port"]),
            http_port=backends["wsgiref+port"].port,
        )
    )
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
