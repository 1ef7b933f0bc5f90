"""The server hosting this process, what it needs from wsgiws and what it lets it do.

Theory of operation
-------------------

A :class:`~wsgiws.Server` runs threads of its own inside someone else's process. WSGI
servers differ in four ways that matter to it; :func:`detect` tells them apart from
what the hosting server makes visible to Python (its built-in module, or the frames
importing the application), never from command-line text.

1. **Prefork masters.** uWSGI (without ``--lazy-apps``) and gunicorn ``--preload``
   import the application in a master process that forks the workers and never
   serves a request itself. A server whose loop ran there would accept WebSocket
   connections in the master, for every worker. So in a master the server only binds
   its port (a bind error still stops the start, and the workers inherit one shared
   listener) and starts no thread at all; each worker starts its loop after the fork
   (``"standby"`` state of :class:`~wsgiws.Server`). uWSGI forks without Python's
   fork hooks unless ``--py-call-uwsgi-fork-hooks``: its own post-fork hook is used.
2. **Processes that import the application each** (gunicorn workers without
   ``--preload``, uWSGI ``--lazy-apps``, mod_wsgi daemon processes, Apache children in
   embedded mode): each binds the separate port itself, so ``reuse_port`` defaults to
   ``True`` there (``SO_REUSEPORT``: the kernel spreads connections over them).
3. **Python threads.** uWSGI before 2.0.22 (Debian's 2.0.21 among them) runs no Python
   thread but the request's unless ``--enable-threads`` or ``--threads N``: the loop
   thread would never run and clients would wait forever. The server refuses to start
   there, naming the option.
4. **Stops.** A normal stop must send close code 1001, which needs Python code to
   run before the process ends: :func:`wsgiws.lifecycle.hook_host` makes each host's
   stop (mod_wsgi's shutdown event, ``SIGTERM`` where nothing handles it) run the exit
   hooks, and uWSGI's post-fork hook run the fork hooks.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from types import FrameType, ModuleType
from typing import Any

__all__ = ["Host", "check_threads", "detect", "mod_wsgi_module", "uwsgi_module"]


@dataclasses.dataclass(frozen=True, slots=True)
class Host:
    """What :func:`detect` found about the server hosting this process."""

    #: ``"uWSGI"``, ``"mod_wsgi"``, ``"gunicorn"``, or ``""`` for anything else.
    name: str = ""
    #: The application is being imported in a master process that forks the workers
    #: serving the requests (uWSGI without ``--lazy-apps``, gunicorn ``--preload``).
    prefork_master: bool = False
    #: Several processes import the application and bind the separate port each.
    processes_bind: bool = False
    #: Python threads run (False: uWSGI without ``--enable-threads``).
    threads: bool = True


def uwsgi_module() -> ModuleType | None:
    """uWSGI's built-in ``uwsgi`` module, when this process runs under uWSGI."""
    module = sys.modules.get("uwsgi")
    return module if module is not None and hasattr(module, "opt") else None


def mod_wsgi_module() -> ModuleType | None:
    """mod_wsgi's built-in ``mod_wsgi`` module, when this process runs under mod_wsgi."""
    # The PyPI package of the same name (mod_wsgi-express) has no process_group: only
    # the module that mod_wsgi installs into an interpreter it hosts does.
    module = sys.modules.get("mod_wsgi")
    return module if module is not None and hasattr(module, "process_group") else None


def uwsgi_option(name: str) -> Any:
    """The value of a uWSGI option in this process (``None`` when not set or not uWSGI)."""
    module = uwsgi_module()
    return None if module is None else module.opt.get(name)


def _gunicorn_role(frame: FrameType | None) -> str | None:
    """``"master"`` when gunicorn's arbiter is starting the server (``--preload``),
    ``"worker"`` when a gunicorn worker is, else None.

    A worker runs below the arbiter's frames (it is forked from there), but below a
    worker's frames first.
    """
    while frame is not None:
        module = str(frame.f_globals.get("__name__"))
        if module.startswith("gunicorn.workers."):
            return "worker"
        if module == "gunicorn.arbiter":
            return "master"
        frame = frame.f_back
    return None


def detect() -> Host:
    """Describe the server hosting this process, as far as it lets Python see."""
    uwsgi = uwsgi_module()
    if uwsgi is not None:
        processes = int(getattr(uwsgi, "numproc", 1) or 1)
        # Worker 0: the process loading the application before forking workers.
        in_master = uwsgi.worker_id() == 0
        return Host(
            name="uWSGI",
            prefork_master=in_master,
            processes_bind=not in_master and processes > 1,
            threads=bool(getattr(uwsgi, "has_threads", 1)),
        )
    mod_wsgi = mod_wsgi_module()
    if mod_wsgi is not None:
        # Daemon processes import the application each, and so do the Apache
        # children in embedded mode: several processes may bind the port.
        return Host(name="mod_wsgi", processes_bind=True)
    frame = inspect.currentframe() if "gunicorn.arbiter" in sys.modules else None
    role = _gunicorn_role(frame.f_back) if frame is not None else None
    if role is not None:
        return Host(name="gunicorn", prefork_master=role == "master", processes_bind=True)
    return Host()


def check_threads(host: Host) -> None:
    """Refuse to start where the loop thread would never run.

    Raises:
        RuntimeError: naming the option that enables Python threads.
    """
    if not host.threads:
        raise RuntimeError(
            "wsgiws needs Python threads, which this uWSGI runs only with "
            "--enable-threads (or --threads N): its loop thread would never run and "
            "WebSocket clients would wait forever. Add --enable-threads (ini: "
            "enable-threads = true)."
        )
