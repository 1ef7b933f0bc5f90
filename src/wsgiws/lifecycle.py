"""Interpreter exit and ``fork()``: the one place where their hooks are registered.

Theory of operation
-------------------

Modules that hold process-wide state (servers, the group hub, group backends) do not
call :func:`atexit.register` or :func:`os.register_at_fork` themselves: the order in
which such hooks run would then depend on the order in which modules happen to be
imported. They hand their hook to :func:`at_exit` or :func:`after_fork_in_child`
with a *stage*, and this module runs the hooks stage by stage (in registration order
within a stage). The stages, in the order they run:

At interpreter exit (:class:`ExitStage`):

1. ``SERVERS`` — every running :class:`~wsgiws.Server` closes: close code 1001 to
   each client, every pending ``on_close`` runs. What those handlers send to groups
   is still published, because…
2. ``BACKENDS`` — …group backends (Redis) close after the servers, flushing what was
   queued.

In a child process after ``os.fork()`` (:class:`ForkStage`):

1. ``GROUPS`` — the group hub starts empty (the connections belong to the parent)
   with fresh locks (a lock held by a parent thread at fork time would never be
   released in the child).
2. ``BACKENDS`` — group backends abandon the parent's threads and sockets and start
   their own, delivering into the fresh hub.
3. ``SERVERS`` — each running server rebuilds its loop thread and worker pool (or
   stays stopped with ``on_fork="stop"``), and may then serve new clients.

Hosting servers (:func:`hook_host`, called when a server starts): the hooks above
must also run where the server hosting the process bypasses Python's own:

* uWSGI forks its workers without running ``os.register_at_fork`` hooks (unless
  ``--py-call-uwsgi-fork-hooks``): its post-fork hook runs the fork stages instead
  (they run once per process, whichever hook comes first).
* mod_wsgi may skip interpreter destruction, and with it ``atexit``
  (``WSGIDestroyInterpreter Off``): its shutdown event runs the exit stages.
* A process killed by ``SIGTERM``'s default action runs no exit hook at all
  (waitress, plain scripts; the default stop of systemd and Docker). Where the
  application installed no handler of its own, in the main thread, and not under
  uWSGI or mod_wsgi (whose signals are theirs), a handler runs the exit stages, then
  ends the process by ``SIGTERM`` as the default action would have.

The exit stages run once per process, whichever of these comes first.

This module is near the bottom of the layers: it imports nothing of wsgiws but the
loggers and :mod:`wsgiws.hosting`, so any module may register a hook.
"""

from __future__ import annotations

import atexit
import contextlib
import enum
import importlib
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from . import hosting
from .log import server_logger

__all__ = ["ExitStage", "ForkStage", "after_fork_in_child", "at_exit", "hook_host"]

#: Seconds the SIGTERM handler waits for the exit stages before the process ends.
SIGTERM_EXIT_TIMEOUT = 3.0

Hook = Callable[[], None]


class ExitStage(enum.IntEnum):
    """When an exit hook runs; lower values first."""

    SERVERS = 1
    BACKENDS = 2


class ForkStage(enum.IntEnum):
    """When a hook runs in a forked child; lower values first."""

    GROUPS = 1
    BACKENDS = 2
    SERVERS = 3


_exit_hooks: list[tuple[ExitStage, Hook]] = []
_fork_hooks: list[tuple[ForkStage, Hook]] = []
# The process in which the exit stages ran, and the one in which the fork stages
# last ran (this one at import: it is nobody's child yet).
_exited_in: int | None = None
_forked_in: int = os.getpid()
# The process where hook_host installed the stop hooks, and whether uWSGI's post-fork
# hook is installed (it is inherited by every worker).
_stop_hooks_in: int | None = None
_uwsgi_fork_hooked = False


def at_exit(stage: ExitStage, hook: Hook) -> None:
    """Run ``hook`` at interpreter exit, in ``stage`` (see the module docstring)."""
    _exit_hooks.append((stage, hook))


def after_fork_in_child(stage: ForkStage, hook: Hook) -> None:
    """Run ``hook`` in the child after ``os.fork()``, in ``stage``."""
    _fork_hooks.append((stage, hook))


def _ordered(hooks: list[tuple[ExitStage, Hook]] | list[tuple[ForkStage, Hook]]) -> list[Hook]:
    # sorted() is stable: hooks of one stage keep their registration order.
    return [hook for _, hook in sorted(hooks, key=lambda entry: entry[0])]


def _run_exit_hooks() -> None:
    global _exited_in
    if _exited_in == os.getpid():
        return
    _exited_in = os.getpid()
    for hook in _ordered(_exit_hooks):
        try:
            hook()
        except Exception:  # pragma: no cover - best effort at exit
            server_logger.error("error in exit hook %r", hook, exc_info=True)


def _run_fork_hooks() -> None:
    global _forked_in
    if _forked_in == os.getpid():
        return  # ran already in this process (uWSGI may run two fork hooks)
    _forked_in = os.getpid()
    for hook in _ordered(_fork_hooks):
        try:
            hook()
        except Exception:  # pragma: no cover - a bug; the later stages still run
            server_logger.error("error in fork hook %r", hook, exc_info=True)


atexit.register(_run_exit_hooks)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_run_fork_hooks)


def hook_host(host: hosting.Host) -> None:
    """Make the hosting server's forks and stops run the stages (see the module doc)."""
    global _stop_hooks_in, _uwsgi_fork_hooked
    uwsgi = hosting.uwsgi_module()
    if uwsgi is not None and not _uwsgi_fork_hooked:
        _uwsgi_fork_hooked = True
        _hook_uwsgi_fork(uwsgi)
    if _stop_hooks_in == os.getpid():
        return
    _stop_hooks_in = os.getpid()
    mod_wsgi = hosting.mod_wsgi_module()
    if mod_wsgi is not None:
        subscribe = getattr(mod_wsgi, "subscribe_shutdown", None)
        if callable(subscribe):
            subscribe(lambda *args, **kwargs: _run_exit_hooks())
        return
    if host.name == "uWSGI" or threading.current_thread() is not threading.main_thread():
        return
    with contextlib.suppress(ValueError, OSError, AttributeError):
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)


def _hook_uwsgi_fork(uwsgi: Any) -> None:
    try:
        # The chain of the uwsgidecorators.postfork decorator, when present, so that
        # neither replaces the other.
        decorators = importlib.import_module("uwsgidecorators")
    except ImportError:
        previous = getattr(uwsgi, "post_fork_hook", None)

        def chained() -> None:
            if callable(previous):
                previous()
            _run_fork_hooks()

        setattr(uwsgi, "post_fork_hook", chained)  # noqa: B010 - a C module's hook
    else:
        decorators.postfork(_run_fork_hooks)


def _on_sigterm(signum: int, frame: Any) -> None:
    # On a thread of its own: the main thread may have been interrupted while holding
    # a lock that closing needs.
    closer = threading.Thread(target=_run_exit_hooks, name="wsgiws-sigterm", daemon=True)
    closer.start()
    closer.join(SIGTERM_EXIT_TIMEOUT)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
