"""Development sessions: ``nox`` runs tests, lint and typing; see ``nox -l``.

Every session installs from ``requirements/constraints.txt``, the pinned versions the
suite was last run with (``nox -s lock`` refreshes it); ``nox -s tests_latest`` runs
the suite against the newest releases instead.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import nox

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True

PYPROJECT = nox.project.load_toml("pyproject.toml")
ROOT = Path(__file__).resolve().parent

#: The supported interpreters, lowest first (``requires-python`` and the classifiers).
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]

#: Every pinned test, lint, typing and docs dependency (``nox -s lock`` writes it).
CONSTRAINTS = ROOT / "requirements" / "constraints.txt"

#: The tool that writes the constraints, pinned like everything else.
UV = "uv==0.13.9"

#: The suite's coverage floor, checked on full runs only (a ``-k`` run covers less).
COVERAGE_FLOOR = 92

#: Debian packages the test suite runs for real, by a program (or file) each installs:
#: Redis for the group fan-out tests, nginx for the reverse-proxy tests, Chromium for
#: the browser tests, Apache with mod_wsgi and Debian's uWSGI (Python threads off) for
#: the server matrix, a C compiler to build uWSGI from PyPI and wsgiws's own C
#: extension (``wsgiws._speedups``, tested by tests/test_mask.py). Installed when
#: missing and possible (root with apt-get); otherwise those tests skip and say why.
DEBIAN_PACKAGES = {
    "redis-server": "redis-server",
    "nginx": "nginx",
    "chromium": "chromium",
    "apache2": "apache2",
    "/usr/lib/apache2/modules/mod_wsgi.so": "libapache2-mod-wsgi-py3",
    "uwsgi_python3": "uwsgi-plugin-python3",
    "gcc": "build-essential",
}


def _present(versions: list[str]) -> list[str]:
    """The ``versions`` whose ``python<version>`` is on the PATH and starts (a pyenv
    shim of a version that is installed but not selected is on the PATH and fails).
    The interpreters are tried all at once: a failing shim takes a while to say so."""
    tries = {}
    for version in versions:
        exe = shutil.which(f"python{version}")
        if exe is not None:
            tries[version] = subprocess.Popen(
                [exe, "-c", ""], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
    found = []
    for version, process in tries.items():
        try:
            if process.wait(timeout=30) == 0:
                found.append(version)
        except subprocess.TimeoutExpired:
            process.kill()
    return found


#: The supported interpreters this machine has.
PRESENT = _present(PYTHONS)

# ``nox`` alone: the tests on the lowest and the highest interpreter present, lint and
# typing. ``nox -s tests-3.12`` (or any of ``nox -l``) runs one more.
nox.options.sessions = [
    *dict.fromkeys(f"tests-{v}" for v in PRESENT[:1] + PRESENT[-1:]),
    "lint",
    "typing",
]
if not PRESENT:  # no supported interpreter under its versioned name: the current one
    nox.options.sessions[0:0] = ["tests_here"]


def install(session: nox.Session, *args: str, pinned: bool = True) -> None:
    """``pip install`` into the session, skipped when this virtualenv already got the
    same arguments with the same pins, project metadata and C sources (a restart is
    then quick).
    """
    if pinned:
        args = ("-c", str(CONSTRAINTS.relative_to(ROOT)), *args)
    digest = hashlib.sha256("\0".join(args).encode())
    # setup.py and the C source: a change must rebuild the C extension.
    for path in (CONSTRAINTS, ROOT / "pyproject.toml", ROOT / "setup.py", *ROOT.glob("src/*/*.c")):
        digest.update(path.read_bytes())
    stamp = Path(session.virtualenv.location) / ".wsgiws-installed"
    if stamp.exists() and stamp.read_text() == digest.hexdigest():
        session.log("dependencies unchanged since the last install")
        return
    stamp.unlink(missing_ok=True)
    session.install(*args)
    stamp.write_text(digest.hexdigest())


def groups(*names: str) -> list[str]:
    """The requirements of the named dependency groups of ``pyproject.toml``."""
    return [req for name in names for req in nox.project.dependency_groups(PYPROJECT, name)]


def ensure_debian_packages(session: nox.Session) -> None:
    """Install the system packages the tests use, where this machine allows it."""
    missing = [
        pkg
        for tool, pkg in DEBIAN_PACKAGES.items()
        if not (os.path.exists(tool) if os.path.isabs(tool) else shutil.which(tool))
        and not os.path.exists(f"/usr/sbin/{tool}")
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


def run_tests(session: nox.Session, *, floor: int | None) -> None:
    """Run pytest under coverage; check ``floor`` only when no arguments narrow the run."""
    session.run("coverage", "erase")
    session.run("python", "-bb", "-m", "coverage", "run", "-m", "pytest", *session.posargs)
    session.run("coverage", "combine", "--quiet", success_codes=[0, 1])
    if floor is None or session.posargs:
        session.run("coverage", "report")
    else:
        session.run("coverage", "report", f"--fail-under={floor}")


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite with coverage on one interpreter, from the pinned versions."""
    ensure_debian_packages(session)  # first: building uWSGI and _speedups needs a C compiler
    install(session, "-e", ".[django,flask,redis]", *groups("test"))
    run_tests(session, floor=COVERAGE_FLOOR)


@nox.session
def tests_here(session: nox.Session) -> None:
    """Run ``tests`` on the interpreter that runs nox, whatever its version."""
    tests(session)


@nox.session
def tests_latest(session: nox.Session) -> None:
    """Run the suite against the newest releases of every dependency (no pins, no floor).

    A failure here that ``tests`` does not show is the next release that breaks the
    suite or the library: fix it, then refresh the pins with ``nox -s lock``.
    """
    ensure_debian_packages(session)
    install(session, "--upgrade", "-e", ".[django,flask,redis]", *groups("test"), pinned=False)
    run_tests(session, floor=None)


@nox.session
def lint(session: nox.Session) -> None:
    """Check formatting and lint with ruff."""
    install(session, *groups("lint"))
    session.run("ruff", "format", "--check", ".")
    session.run("ruff", "check", ".")
    session.run("lint-imports", env={"PYTHONPATH": "src"})


@nox.session(python=PRESENT[-1] if PRESENT else None)
def typing(session: nox.Session) -> None:
    """Type-check the package, the tests and this file with mypy --strict (on the
    newest interpreter present: the pins differ by Python version, and so do the
    type hints of some test dependencies)."""
    install(session, "-e", ".[django,flask,redis]", *groups("typing"))
    session.run("mypy", "src", "tests", "noxfile.py")


@nox.session
def demo(session: nox.Session) -> None:
    """Run the chat demo on http://127.0.0.1:8000 (Ctrl-C to stop)."""
    install(session, "-e", ".")
    args = session.posargs or ["--host", "127.0.0.1", "--port", "8000"]
    session.run("python", "examples/wsgiref_chat/app.py", *args)


@nox.session
def django_demo(session: nox.Session) -> None:
    """Run the Django chat example, with logins, on http://127.0.0.1:8000 (Ctrl-C to stop)."""
    install(session, "-e", ".[django]")
    args = session.posargs or ["127.0.0.1:8000"]
    session.run("python", "examples/django_chat/manage.py", "chatdemo", *args)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation with Sphinx, warnings as errors, into docs/_build/html."""
    install(session, "-e", ".", *groups("docs"))
    build = ["sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html"]
    session.run(*build, *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmark table (bench/README.md) on loopback: wsgiws against websockets,
    aiohttp, picows and flask-sock; ``nox -s bench -- --quick`` for a smoke run."""
    install(session, ".", *groups("bench"))
    # The stamp skips unchanged dependencies, not changed sources: reinstall wsgiws
    # itself every time, so that the figures are those of this working tree.
    session.install("--no-deps", "--force-reinstall", "--quiet", ".")
    session.run("python", "bench/run.py", *session.posargs)


@nox.session
def fuzz(session: nox.Session) -> None:
    """Fuzz the sans-IO protocol with atheris for a bounded time (default 120 s):
    ``nox -s fuzz -- -max_total_time=600`` for longer. Crashes land in ``fuzz-artifacts/``."""
    install(session, "-e", ".", *groups("fuzz"))
    artifacts = ROOT / "fuzz-artifacts"
    artifacts.mkdir(exist_ok=True)
    args = session.posargs or ["-max_total_time=120"]
    session.run(
        "python",
        "tests/fuzz_protocol.py",
        "-rss_limit_mb=2048",
        f"-artifact_prefix={artifacts}/",
        *args,
        env={"PYTHONPATH": str(ROOT)},
    )


#: Autobahn|Testsuite's fuzzing client: its package pins every dependency exactly
#: (Twisted 19.10, autobahn 0.10.9, txaio 2.1 ...), the last releases for Python 2.7.
AUTOBAHN_PY2 = ["autobahntestsuite==25.10.1"]


def _python2() -> str | None:
    """A Python 2.7 interpreter: ``$PYTHON2``, ``python2.7`` on the PATH, or pyenv's."""
    candidates = [os.environ.get("PYTHON2"), shutil.which("python2.7")]
    candidates += sorted(str(p) for p in Path.home().glob(".pyenv/versions/2.7*/bin/python2.7"))
    for exe in filter(None, candidates):
        try:
            done = subprocess.run(
                [exe, "-c", "import sys; assert sys.version_info[:2] == (2, 7)"],
                capture_output=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return exe
    return None


@nox.session
def autobahn(session: nox.Session) -> None:
    """Run Autobahn|Testsuite's fuzzing client (Python 2.7) against an echo server;
    fail on any FAILED or NON-STRICT case. ``-- --all`` adds the slowest cases."""
    python2 = _python2()
    if python2 is None:
        session.error(
            "Autobahn|Testsuite's fuzzing client is Python 2.7 code: install Python 2.7 "
            "(pyenv install 2.7.18) or point $PYTHON2 at one"
        )
    install(session, "-e", ".")
    libdir = Path(session.virtualenv.location) / "py2lib"
    stamp = libdir / ".installed"
    if not stamp.exists() or stamp.read_text() != "\n".join(AUTOBAHN_PY2):
        shutil.rmtree(libdir, ignore_errors=True)
        session.run(
            python2,
            "-m",
            "pip",
            "install",
            "-q",
            "--target",
            str(libdir),
            *AUTOBAHN_PY2,
            external=True,
        )
        # zope.interface's namespace package lacks its __init__ under --target.
        (libdir / "zope" / "__init__.py").write_text(
            "__path__ = __import__('pkgutil').extend_path(__path__, __name__)\n"
        )
        stamp.write_text("\n".join(AUTOBAHN_PY2))
    reports = ROOT / "test-artifacts" / "autobahn"
    session.run(
        "python", "tests/autobahn/run.py", python2, str(libdir), str(reports), *session.posargs
    )


@nox.session
def lock(session: nox.Session) -> None:
    """Refresh ``requirements/constraints.txt``: the newest versions that fit
    ``pyproject.toml``, resolved once for every supported Python (``--universal``)."""
    install(session, UV, pinned=False)
    session.run(
        "uv",
        "pip",
        "compile",
        "pyproject.toml",
        "--all-extras",
        "--group",
        "dev",
        "--universal",
        "--python-version",
        PYTHONS[0],
        "--no-header",
        "--no-annotate",
        "--quiet",
        "-o",
        str(CONSTRAINTS),
        *session.posargs,
    )
