"""Django stays optional: ``import wsgiws`` works without it installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from ..helpers import TIMEOUT
from .conftest import ROOT

pytestmark = pytest.mark.django

#: Makes ``import django`` fail in the subprocess, as if Django were not installed.
BLOCK_DJANGO = textwrap.dedent(
    """
    import sys

    class NoDjango:
        def find_spec(self, name, path=None, target=None):
            if name == "django" or name.startswith("django."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoDjango())
    """
)


def run(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where Django cannot be imported."""
    return subprocess.run(
        [sys.executable, "-c", BLOCK_DJANGO + textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3 * TIMEOUT,
    )


def test_import_wsgiws_without_django() -> None:
    """The core package and a server work with Django missing, and never import it."""
    result = run(
        """
        import wsgiws
        with wsgiws.Server(port=0) as server:
            assert server.running
        assert not any(m == "django" or m.startswith("django.") for m in sys.modules)
        try:
            import django
        except ModuleNotFoundError:
            print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_import_adapter_without_django() -> None:
    """``import wsgiws.django`` without Django fails with the install hint."""
    result = run(
        """
        try:
            import wsgiws.django
        except ImportError as exc:
            print(exc)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'wsgiws.django needs Django: pip install "wsgiws[django]"'
