"""Flask and Flask-Login stay optional: clear hints when they are missing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ..helpers import TIMEOUT

pytestmark = pytest.mark.flask

ROOT = Path(__file__).resolve().parents[2]


def run(blocked: str, code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where package ``blocked`` cannot be imported."""
    block = textwrap.dedent(
        f"""
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == {blocked!r} or name.startswith({blocked!r} + "."):
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, Block())
        """
    )
    return subprocess.run(
        [sys.executable, "-c", block + textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3 * TIMEOUT,
    )


def test_without_flask_the_import_names_the_extra() -> None:
    """``import wsgiws`` works without Flask; ``wsgiws.flask`` says what to install."""
    result = run(
        "flask",
        """
        import wsgiws
        assert "flask" not in sys.modules
        try:
            import wsgiws.flask
        except ImportError as exc:
            print(exc)
        """,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'wsgiws.flask needs Flask: pip install "wsgiws[flask]"'


def test_without_flask_login_the_user_is_none() -> None:
    """Without Flask-Login, ``websocket.user`` is ``None`` and the session still works."""
    result = run(
        "flask_login",
        """
        from flask import Flask, session
        from wsgiws import BaseWSClass
        from wsgiws.flask import FlaskMixin, WebSockets
        from wsgiws.testing import connect

        app = Flask("no_login")
        app.config.update(SECRET_KEY="k", WEBSOCKET_PORT=0)
        ws = WebSockets(app)

        @ws.namespace(r"/who")
        class Who(FlaskMixin, BaseWSClass):
            @classmethod
            def on_connect(cls, websocket, path):
                websocket.send(f"{websocket.user!r} {dict(session)!r}")

        with connect(ws.server, "/who") as client:
            print(client.recv())
        ws.close()
        """,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "None {}"
