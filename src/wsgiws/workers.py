"""Handler threads: a pool, and a serial executor per connection.

Theory of operation
-------------------

Invariant 1 (the loop thread never runs user code) and invariant 2 (events of one
connection reach its handler chain one at a time, in order) are both kept here.

:class:`WorkerPool` is a fixed-size set of daemon threads fed by one queue. Threads are
started lazily, up to ``size``, when a task arrives and no thread is idle. It is not a
``concurrent.futures`` executor on purpose: those refuse new work once interpreter
shutdown has begun, which is exactly when ``on_close`` must still run for every client.

:class:`SerialExecutor` belongs to one connection. ``submit()`` appends a task to the
connection's deque; if no task of that connection is queued or running, one *drain*
job is put in the pool. The drain runs the connection's tasks in order, a few at a
time; if more remain it re-enqueues itself behind other connections' work, so that a
chatty client cannot monopolise a thread. Hence at most one task of a connection runs
at any time, and tasks run in submission order.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from .log import handlers_logger as logger

__all__ = ["SerialExecutor", "WorkerPool"]

Task = Callable[[], object]

#: Tasks one drain runs before yielding its thread to other connections.
BATCH = 8


class WorkerPool:
    """A lazily grown pool of daemon threads running callables in FIFO order.

    Args:
        size: the maximum number of threads.
        name: prefix of the thread names.
    """

    def __init__(self, size: int, name: str = "wsgiws-worker") -> None:
        self.size = size
        self.name = name
        self._queue: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        # Under _lock: threads waiting for a task, and tasks no thread took yet. A
        # thread is started when the queued tasks outnumber the idle threads.
        self._idle = 0
        self._queued = 0
        self._shutdown = False

    def submit(self, task: Task) -> None:
        """Run ``task`` on a pool thread. Callable from any thread."""
        self._queue.put(task)
        with self._lock:
            self._queued += 1
            if self._shutdown:
                return
            if self._queued > self._idle and len(self._threads) < self.size:
                thread = threading.Thread(
                    target=self._work,
                    name=f"{self.name}-{len(self._threads)}",
                    daemon=True,
                )
                self._threads.append(thread)
                self._idle += 1  # counted before it starts
                thread.start()

    def shutdown(self, timeout: float | None = None) -> None:
        """Let queued tasks finish, stop the threads, and wait up to ``timeout``."""
        with self._lock:
            self._shutdown = True
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(None)
        current = threading.current_thread()
        for thread in threads:
            if thread is not current:
                thread.join(timeout)

    def _work(self) -> None:
        get = self._queue.get
        while True:
            task = get()
            with self._lock:
                self._idle -= 1
                self._queued -= 1
            if task is None:
                return
            try:
                task()
            except BaseException:  # pragma: no cover - tasks handle their own errors
                logger.error("unexpected internal error in a worker", exc_info=True)
            with self._lock:
                self._idle += 1


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
