"""Development sessions: ``nox`` runs tests, lint and typing; see ``nox -l``."""

from __future__ import annotations

import os
import shutil
import subprocess

import nox

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint", "typing"]
nox.options.reuse_existing_virtualenvs = True

PYPROJECT = nox.project.load_toml("pyproject.toml")

#: Debian packages the test suite runs for real: Redis for the group fan-out tests,
#: nginx for the reverse-proxy tests, Chromium for the browser tests. Installed when
#: missing and possible (root with apt-get); otherwise those tests skip and say why.
DEBIAN_PACKAGES = {
    "redis-server": "redis-server",
    "nginx": "nginx",
    "chromium": "chromium",
}


def ensure_debian_packages(session: nox.Session) -> None:
    """Install the system packages the tests use, where this machine allows it."""
    missing = [
        pkg
        for tool, pkg in DEBIAN_PACKAGES.items()
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}")
    ]
    if not missing:
        return
    if not (shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0):
        session.warn(
            f"not installing {', '.join(missing)} (needs root and apt-get); "
            "the tests that use them will be skipped"
        )
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    session.log(f"apt-get install {' '.join(missing)}")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite with coverage on the current interpreter."""
    ensure_debian_packages(session)
    session.install("-e", ".[django,redis]", *nox.project.dependency_groups(PYPROJECT, "test"))
    session.run("coverage", "erase")
    session.run(
        "python",
        "-bb",
        "-m",
        "coverage",
        "run",
        "-m",
        "pytest",
        *session.posargs,
    )
    session.run("coverage", "combine", "--quiet", success_codes=[0, 1])
    session.run("coverage", "report", "--fail-under=85")


@nox.session
def lint(session: nox.Session) -> None:
    """Check formatting and lint with ruff."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "format", "--check", ".")
    session.run("ruff", "check", ".")


@nox.session
def typing(session: nox.Session) -> None:
    """Type-check the package, the tests and this file with mypy --strict."""
    session.install(
        "-e",
        ".[django,redis]",
        *nox.project.dependency_groups(PYPROJECT, "typing"),
        "nox",
    )
    session.run("mypy", "src", "tests", "noxfile.py")


@nox.session
def demo(session: nox.Session) -> None:
    """Run the chat demo on http://127.0.0.1:8000 (Ctrl-C to stop)."""
    session.install("-e", ".")
    session.log("Chat demo: open http://127.0.0.1:8000 in your browser (Ctrl-C to stop)")
    args = session.posargs or ["--host", "127.0.0.1", "--port", "8000"]
    session.run("python", "examples/wsgiref_chat/app.py", *args)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation with Sphinx, warnings as errors, into docs/_build/html."""
    session.install("-e", ".", *nox.project.dependency_groups(PYPROJECT, "docs"))
    build = ["sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html"]
    session.run(*build, *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks on loopback against the websockets library's servers."""
    session.install(".", "websockets")
    session.run("python", "bench/run.py", *session.posargs)
