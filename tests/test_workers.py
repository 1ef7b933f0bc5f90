"""The worker pool and the per-connection serial executor."""

from __future__ import annotations

import functools
import threading
import time

from wsgiws.workers import SerialExecutor, WorkerPool

from .helpers import TIMEOUT, wait_for


def test_serial_executor_runs_in_order_one_at_a_time() -> None:
    """Tasks of one executor never overlap and keep their order; executors run in parallel."""
    pool = WorkerPool(4)
    results: dict[int, list[int]] = {0: [], 1: [], 2: []}
    running = {0: 0, 1: 0, 2: 0}
    overlaps: list[int] = []
    lock = threading.Lock()
    executors = [SerialExecutor(pool) for _ in range(3)]

    def task(k: int, i: int) -> None:
        with lock:
            running[k] += 1
            if running[k] > 1:
                overlaps.append(k)
        time.sleep(0.0005)  # simulated work
        with lock:
            running[k] -= 1
            results[k].append(i)

    for i in range(100):
        for k, executor in enumerate(executors):
            executor.submit(functools.partial(task, k, i))
    wait_for(lambda: all(len(r) == 100 for r in results.values()))
    pool.shutdown(TIMEOUT)
    assert overlaps == []
    assert all(r == list(range(100)) for r in results.values())


def test_pool_grows_lazily_up_to_size() -> None:
    """Threads start only when needed and never exceed the size."""
    pool = WorkerPool(3)
    assert pool._threads == []
    release = threading.Event()
    started = threading.Semaphore(0)

    def block() -> None:
        started.release()
        release.wait(TIMEOUT)

    for _ in range(5):
        pool.submit(block)
    for _ in range(3):
        assert started.acquire(timeout=TIMEOUT)
    assert len(pool._threads) == 3
    release.set()
    pool.shutdown(TIMEOUT)
    assert not any(t.is_alive() for t in pool._threads)


def test_task_exception_does_not_kill_the_executor() -> None:
    """A failing task is logged and the next task still runs."""
    pool = WorkerPool(1)
    executor = SerialExecutor(pool)
    done = threading.Event()

    def fail() -> None:
        raise RuntimeError("boom")

    executor.submit(fail)
    executor.submit(done.set)
    assert done.wait(TIMEOUT)
    pool.shutdown(TIMEOUT)


def test_submit_after_shutdown_starts_no_thread() -> None:
    pool = WorkerPool(2)
    pool.shutdown(timeout=1)
    pool.submit(lambda: None)
    assert pool._threads == []


def test_shutdown_from_a_pool_thread_does_not_join_itself() -> None:
    pool = WorkerPool(1)
    done = threading.Event()

    def stop() -> None:
        pool.shutdown(timeout=1)
        done.set()

    pool.submit(stop)
    assert done.wait(TIMEOUT)


def test_drain_of_exactly_one_batch_stops() -> None:
    """A drain that ran exactly BATCH tasks and finds none left stops running."""
    from wsgiws.workers import BATCH

    pool = WorkerPool(1)
    executor = SerialExecutor(pool)
    gate = threading.Event()
    ran: list[int] = []
    executor.submit(gate.wait)
    for i in range(BATCH - 1):
        executor.submit(functools.partial(ran.append, i))
    gate.set()
    wait_for(lambda: len(ran) == BATCH - 1)
    wait_for(lambda: not executor._running)
    executor.submit(functools.partial(ran.append, BATCH))
    wait_for(lambda: len(ran) == BATCH)
    pool.shutdown(timeout=1)


def test_a_burst_of_deferred_tasks_wakes_one_thread() -> None:
    """Tasks submitted by the deferring thread wake no one until it flushes; then one
    thread runs them, and one more watches in case the first blocks."""
    pool = WorkerPool(4)
    ran: list[int] = []
    pool.defer_wakeups()
    for i in range(50):
        pool.submit(functools.partial(ran.append, i))
    assert pool._threads == []
    assert ran == []
    pool.flush()
    wait_for(lambda: len(ran) == 50)
    assert sorted(ran) == list(range(50))
    assert len(pool._threads) <= 2
    pool.defer_wakeups(False)
    pool.shutdown(TIMEOUT)


def test_a_deferred_task_behind_a_blocked_one_still_runs() -> None:
    """The first task of a flushed burst blocks: the next one runs on another thread."""
    pool = WorkerPool(4)
    release = threading.Event()
    done = threading.Event()
    pool.defer_wakeups()
    pool.submit(functools.partial(release.wait, TIMEOUT))
    pool.submit(done.set)
    pool.flush()
    assert done.wait(TIMEOUT)
    assert not release.is_set()
    release.set()
    pool.defer_wakeups(False)
    pool.shutdown(TIMEOUT)


def test_stopping_deferral_flushes() -> None:
    pool = WorkerPool(2)
    done = threading.Event()
    pool.defer_wakeups()
    pool.submit(done.set)
    pool.defer_wakeups(False)
    assert done.wait(TIMEOUT)
    pool.shutdown(TIMEOUT)


def test_other_threads_wake_workers_while_one_defers() -> None:
    """Only the thread that asked for deferral has its wake-ups deferred."""
    pool = WorkerPool(2)
    pool.defer_wakeups()
    done = threading.Event()
    thread = threading.Thread(target=pool.submit, args=(done.set,))
    thread.start()
    thread.join(TIMEOUT)
    assert done.wait(TIMEOUT)
    pool.shutdown(TIMEOUT)


def test_a_blocked_task_does_not_hold_up_tasks_queued_behind_it() -> None:
    """Tasks submitted while a thread is busy wake no one to run them, but when the
    first in line waits while that thread stays busy, the idle watcher takes it."""
    pool = WorkerPool(4)
    release = threading.Event()
    first = threading.Event()
    pool.submit(release.wait)  # a thread starts and blocks
    pool.submit(first.set)  # queued behind it: a second thread starts to watch
    assert first.wait(TIMEOUT)
    wait_for(lambda: pool._active == 1)
    threads = len(pool._threads)
    for _ in range(3):
        done = threading.Event()
        pool.submit(done.set)  # a thread is active: an idle one is summoned to watch
        assert done.wait(TIMEOUT)
        wait_for(lambda: pool._active == 1)
    assert not release.is_set()
    assert len(pool._threads) == threads  # the idle threads took turns
    release.set()
    pool.shutdown(TIMEOUT)
    assert not any(t.is_alive() for t in pool._threads)


def test_a_task_behind_a_blocked_one_is_watched_by_a_sleeping_thread() -> None:
    """When the pool was idle, its threads sleep; a task queued behind a blocked one
    wakes one of them to watch (the server's slow-handler case)."""
    pool = WorkerPool(4)
    ran = threading.Semaphore(0)
    for _ in range(2):
        pool.submit(ran.release)
    assert ran.acquire(timeout=TIMEOUT) and ran.acquire(timeout=TIMEOUT)
    wait_for(lambda: pool._active == 0 and pool._watcher is None)
    release = threading.Event()
    blocked = threading.Event()

    def block() -> None:
        blocked.set()
        release.wait(TIMEOUT)

    pool.submit(block)
    assert blocked.wait(TIMEOUT)
    done = threading.Event()
    pool.submit(done.set)
    assert done.wait(TIMEOUT)
    assert not release.is_set()
    release.set()
    pool.shutdown(TIMEOUT)


def test_tasks_queued_behind_several_blocked_tasks_still_run() -> None:
    """Each stall brings in one more thread, up to the pool's size."""
    pool = WorkerPool(4)
    release = threading.Event()
    done = threading.Event()
    for _ in range(3):
        pool.submit(functools.partial(release.wait, TIMEOUT))
    pool.submit(done.set)
    assert done.wait(TIMEOUT)
    assert not release.is_set()
    release.set()
    pool.shutdown(TIMEOUT)
    assert not any(t.is_alive() for t in pool._threads)


def test_a_stream_of_short_blocking_tasks_spreads_over_threads() -> None:
    """Tasks that each block for less than STALL (a quick query) still run in
    parallel once they queue up: the first in line is taken by an idle thread when
    it has waited STALL, even though the head of the queue keeps changing."""
    pool = WorkerPool(8)
    lock = threading.Lock()
    running = 0
    most = 0
    left = threading.Semaphore(0)

    def task() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.001)  # blocks, like I/O: the GIL is free meanwhile
        with lock:
            running -= 1
        left.release()

    count = 200
    for _ in range(count):  # about five tasks per millisecond, each its own object
        pool.submit(functools.partial(task))
        time.sleep(0.0002)
    assert all(left.acquire(timeout=TIMEOUT) for _ in range(count))
    # On one thread the queue would only grow; more threads took over.
    assert most > 1, most
    pool.shutdown(TIMEOUT)


def test_shutdown_stops_the_idle_threads() -> None:
    pool = WorkerPool(3)
    release = threading.Event()
    ran = threading.Semaphore(0)
    pool.submit(release.wait)
    pool.submit(ran.release)
    pool.submit(ran.release)
    assert ran.acquire(timeout=TIMEOUT) and ran.acquire(timeout=TIMEOUT)
    release.set()
    wait_for(lambda: pool._active == 0 and pool._watcher is None)
    pool.shutdown(TIMEOUT)
    assert not any(t.is_alive() for t in pool._threads)
