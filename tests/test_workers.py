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
