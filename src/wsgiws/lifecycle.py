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

This module is at the bottom of the layers: it imports nothing of wsgiws but the
loggers, so any module may register a hook.
"""

from __future__ import annotations

import atexit
import enum
import os
from collections.abc import Callable

from .log import server_logger

__all__ = ["ExitStage", "ForkStage", "after_fork_in_child", "at_exit"]

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
    for hook in _ordered(_exit_hooks):
        try:
            hook()
        except Exception:  # pragma: no cover - best effort at exit
            server_logger.error("error in exit hook %r", hook, exc_info=True)


def _run_fork_hooks() -> None:
    for hook in _ordered(_fork_hooks):
        try:
            hook()
        except Exception:  # pragma: no cover - a bug; the later stages still run
            server_logger.error("error in fork hook %r", hook, exc_info=True)


atexit.register(_run_exit_hooks)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_run_fork_hooks)
