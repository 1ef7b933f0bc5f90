"""Handler threads: a pool, and a serial executor per connection.

Theory of operation
-------------------

Invariant 1 (the loop thread never runs user code) and invariant 2 (events of one
connection reach its handler chain one at a time, in order) are both kept here.

:class:`WorkerPool` is a fixed-size set of daemon threads fed by one queue. Threads are
started lazily, up to ``size``, when a task arrives and no thread is idle. It is not a
``concurrent.futures`` executor on purpose: those refuse new work once interpreter
shutdown has begun, which is exactly when ``on_close`` must still run for every client.

Waking a thread costs a system call, and on a busy core a context switch and a hand-off
of the GIL, so the pool wakes as few as it can: a task submitted while a thread is
active is left to that thread, and the loop thread's submits of one pass wake one
thread at its end (:meth:`WorkerPool.defer_wakeups`). So that a handler that blocks
does not hold up the tasks queued behind it, an idle thread watches the queue while
tasks wait behind an active one, and takes the first once it has waited
:data:`STALL`.

:class:`SerialExecutor` belongs to one connection. ``submit()`` appends a task to the
connection's deque; if no task of that connection is queued or running, one *drain*
job is put in the pool. The drain runs the connection's tasks in order, a few at a
time; if more remain it re-enqueues itself behind other connections' work, so that a
chatty client cannot monopolise a thread. Hence at most one task of a connection runs
at any time, and tasks run in submission order.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

from .log import handlers_logger as logger

__all__ = ["SerialExecutor", "WorkerPool"]

Task = Callable[[], object]

#: Tasks one drain runs before yielding its thread to other connections.
BATCH = 8
#: Seconds the first task in the queue may wait, while a thread is busy, before an
#: idle thread takes it (see WorkerPool._watch).
STALL = 0.002


class WorkerPool:
    """A lazily grown pool of daemon threads running callables in FIFO order.

    Args:
        size: the maximum number of threads.
        name: prefix of the thread names.
    """

    def __init__(self, size: int, name: str = "wsgiws-worker") -> None:
        self.size = size
        self.name = name
        self._lock = threading.Lock()
        # Under _lock: the tasks no thread took yet (None: a thread's stop signal).
        self._jobs: collections.deque[Task | None] = collections.deque()
        # Under _lock: when each of _jobs was submitted (time.monotonic()).
        self._since: collections.deque[float] = collections.deque()
        self._threads: list[threading.Thread] = []
        # Under _lock. Each thread waits on a lock of its own, released exactly once
        # per wake-up. Idle threads wait in _sleepers (the most recent last: woken
        # first, its stack and caches still warm), except the watcher, which polls
        # every STALL seconds while a thread is active (see _watch); _summoned is a
        # sleeper woken to become the watcher, not yet watching.
        self._sleepers: list[threading.Lock] = []
        self._watcher: threading.Lock | None = None
        self._summoned: threading.Lock | None = None
        # Threads running a task or woken to look for one. A task submitted while a
        # thread is active wakes no one: that thread takes it after its current one.
        self._active = 0
        self._shutdown = False
        # The thread whose submits wake no one until it calls flush() (see
        # defer_wakeups), and whether such a submit found no thread active.
        self._deferring: int | None = None
        self._wake_deferred = False

    def submit(self, task: Task) -> None:
        """Run ``task`` on a pool thread. Callable from any thread."""
        with self._lock:
            self._jobs.append(task)
            self._since.append(time.monotonic())
            if self._shutdown:
                return
            if self._active:
                self._summon_locked()
            elif self._deferring == threading.get_ident():
                self._wake_deferred = True
            else:
                self._wake_locked()

    def defer_wakeups(self, enabled: bool = True) -> None:
        """While enabled, submits from the calling thread wake no thread until it
        calls :meth:`flush`: the loop thread submits the tasks of one pass over its
        ready sockets, then wakes one thread for all of them, once it has no more to
        do. Disabling flushes."""
        self._deferring = threading.get_ident() if enabled else None
        if not enabled:
            self.flush()

    def flush(self) -> None:
        """Wake a thread for the tasks submitted since the last flush, if none is
        active. Called by the thread of :meth:`defer_wakeups` (the loop, after each
        pass)."""
        if self._wake_deferred:
            with self._lock:
                self._wake_deferred = False
                if self._jobs and not self._shutdown:
                    if not self._active:
                        self._wake_locked()
                    if self._active and len(self._jobs) > 1:
                        self._summon_locked()  # tasks wait behind the one taken first

    def shutdown(self, timeout: float | None = None) -> None:
        """Let queued tasks finish, stop the threads, and wait up to ``timeout``."""
        with self._lock:
            self._shutdown = True
            threads = list(self._threads)
            self._jobs.extend([None] * len(threads))
            self._since.extend([0.0] * len(threads))
            idle = self._sleepers
            if self._watcher is not None:
                idle.append(self._watcher)
            self._sleepers, self._watcher = [], None
            self._active += len(idle)
        for wake in idle:
            wake.release()
        current = threading.current_thread()
        for thread in threads:
            if thread is not current:
                thread.join(timeout)

    # -- under _lock -----------------------------------------------------------------

    def _wake_locked(self) -> None:
        """Make one more thread active: the watcher, a sleeper, or a new thread."""
        if self._watcher is not None:
            wake, self._watcher = self._watcher, None
        elif self._sleepers:
            wake = self._sleepers.pop()
        elif len(self._threads) < self.size:
            wake = self._start_locked()
        else:
            return
        self._active += 1
        wake.release()

    def _summon_locked(self) -> None:
        """Tasks wait behind an active thread: make sure an idle thread watches them
        (a sleeper, or a new thread), unless one does or is on its way."""
        if self._watcher is not None or self._summoned is not None:
            return
        if self._sleepers:
            wake = self._sleepers.pop()
        elif len(self._threads) < self.size and not self._shutdown:
            wake = self._start_locked()
        else:
            return
        self._summoned = wake
        wake.release()

    def _start_locked(self) -> threading.Lock:
        """Start a thread, waiting on the lock returned until it is released."""
        wake = threading.Lock()
        wake.acquire()
        thread = threading.Thread(
            target=self._work,
            args=(wake,),
            name=f"{self.name}-{len(self._threads)}",
            daemon=True,
        )
        self._threads.append(thread)
        thread.start()
        return wake

    # -- pool threads ----------------------------------------------------------------

    def _work(self, wake: threading.Lock) -> None:
        lock = self._lock
        jobs = self._jobs
        since = self._since
        active = False
        while True:
            if not active:
                wake.acquire()  # released once per wake-up
                with lock:
                    watching = self._summoned is wake
                    if watching:
                        self._summoned = None
                        self._watcher = wake
                # Summoned: watch. Else a waker counted this thread active.
                active = self._watch(wake) if watching else True
                continue
            task: Task | None = None
            with lock:
                if jobs:
                    task = jobs.popleft()
                    since.popleft()
                    if task is None:
                        return
                else:
                    self._active -= 1
                    active = False
                    watching = self._active > 0 and self._watcher is None and self._summoned is None
                    if watching:
                        self._watcher = wake
                    else:
                        self._sleepers.append(wake)
            if task is None:
                if watching:
                    active = self._watch(wake)
                continue
            try:
                task()
            except BaseException:  # pragma: no cover - tasks handle their own errors
                logger.error("unexpected internal error in a worker", exc_info=True)

    def _watch(self, wake: threading.Lock) -> bool:
        """Watch the queue as the idle watcher. True: this thread is active again
        (``wake`` held); False: it must wait on ``wake`` (released already if it was
        woken, else it went to sleep).

        Tasks submitted while a thread is active wake no one, so a task that blocks
        (a query, a sleep) would hold up those queued behind it. The watcher looks at
        the queue every STALL seconds while a thread is active: if the first task in
        line was submitted STALL seconds ago or more, it takes it, and summons another
        idle thread to watch in its place; if nothing waits, it goes back to sleep.
        A task thus waits at most about two STALL periods for a thread, while the
        pool has one, also in a steady stream of tasks that each block for less than
        STALL (the queue then grows behind the active threads, and the watcher adds
        one thread per STALL until it stops growing); a burst of quick tasks is run
        by the thread already awake.
        """
        lock = self._lock
        jobs = self._jobs
        since = self._since
        while not wake.acquire(timeout=STALL):
            with lock:
                if self._watcher is not wake:
                    return False  # woken since the timeout: the release is pending
                if not self._shutdown and (self._active == 0 or not jobs):
                    # Nothing waits: sleep until a submit wakes or summons a thread
                    # (no polling while a long handler runs with nothing behind it).
                    self._watcher = None
                    self._sleepers.append(wake)
                    return False
                if self._shutdown or time.monotonic() - since[0] >= STALL:
                    # Stalled: take that task, and leave another idle thread watching.
                    self._watcher = None
                    self._active += 1
                    self._summon_locked()
                    return True
        return True  # woken by a waker, which counted this thread active


class SerialExecutor:
    """Run one connection's tasks one at a time, in order, on a :class:`WorkerPool`."""

    __slots__ = ("_lock", "_pool", "_running", "_tasks")

    def __init__(self, pool: WorkerPool) -> None:
        self._pool = pool
        self._lock = threading.Lock()
        # A list, not a deque: a connection queues a few tasks (one per read), and
        # an empty list is a tenth of an empty deque's size (memory per connection).
        self._tasks: list[Task] = []
        self._running = False

    def submit(self, task: Task) -> None:
        """Queue ``task`` after this connection's earlier tasks. Callable from any thread."""
        with self._lock:
            self._tasks.append(task)
            if self._running:
                return
            self._running = True
        self._pool.submit(self._drain)

    def idle(self) -> bool:
        """True when no task of this connection is queued or running. Any thread."""
        return not self._running

    def _drain(self) -> None:
        for _ in range(BATCH):
            with self._lock:
                if not self._tasks:
                    self._running = False
                    return
                task = self._tasks.pop(0)
            try:
                task()
            except BaseException:  # pragma: no cover - tasks handle their own errors
                logger.error("unexpected internal error in a handler task", exc_info=True)
        with self._lock:
            if not self._tasks:
                self._running = False
                return
        self._pool.submit(self._drain)
