"""The selector loop with bare socketpairs: wake-ups, timers, readiness."""

from __future__ import annotations

import functools
import socket
import threading
from collections.abc import Iterator

import pytest

from wsgiws.loop import SelectorLoop

from .helpers import TIMEOUT


@pytest.fixture
def loop() -> Iterator[SelectorLoop]:
    loop = SelectorLoop("test")
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    yield loop
    loop.stop_threadsafe()
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    loop.close()


def on_loop(loop: SelectorLoop, fn: object) -> None:
    """Run ``fn`` on the loop thread and wait for it."""
    done = threading.Event()

    def run() -> None:
        fn()  # type: ignore[operator]
        done.set()

    loop.call_soon_threadsafe(run)
    assert done.wait(TIMEOUT)


def test_call_soon_threadsafe_runs_in_order_on_loop_thread(loop: SelectorLoop) -> None:
    """Callbacks from many threads run on the loop thread, each thread's in order."""
    seen: list[tuple[int, int, bool]] = []
    done = threading.Event()

    def producer(k: int) -> None:
        for i in range(500):
            loop.call_soon_threadsafe(functools.partial(record, k, i))

    def record(k: int, i: int) -> None:
        seen.append((k, i, loop.in_loop_thread()))

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    loop.call_soon_threadsafe(done.set)
    assert done.wait(TIMEOUT)
    assert len(seen) == 2000
    assert all(on_thread for _, _, on_thread in seen)
    for k in range(4):
        assert [i for kk, i, _ in seen if kk == k] == list(range(500))


def test_timers_fire_in_deadline_order_and_cancel(loop: SelectorLoop) -> None:
    """Timers fire by deadline; a cancelled timer never fires."""
    fired: list[str] = []
    done = threading.Event()

    def schedule() -> None:
        loop.call_later(0.03, lambda: fired.append("b"))
        loop.call_later(0.01, lambda: fired.append("a"))
        loop.call_later(0.02, lambda: fired.append("never")).cancel()
        loop.call_later(0.05, done.set)

    on_loop(loop, schedule)
    assert done.wait(TIMEOUT)
    assert fired == ["a", "b"]


def test_many_cancelled_timers_are_compacted(loop: SelectorLoop) -> None:
    """Cancelled timers do not accumulate without bound in the heap."""

    def churn() -> None:
        for _ in range(5000):
            loop.call_later(3600, lambda: None).cancel()
        loop.call_later(0, lambda: None)

    on_loop(loop, churn)
    on_loop(loop, lambda: None)  # one more pass, after the zero-delay timer fired
    assert len(loop._timers) < 5000


def test_readiness_callbacks_and_modify(loop: SelectorLoop) -> None:
    """A socket is watched for reading, and for writing only while asked."""
    a, b = socket.socketpair()
    a.setblocking(False)
    got = threading.Event()
    writable = threading.Event()
    data: list[bytes] = []

    def on_read() -> None:
        data.append(a.recv(100))
        got.set()

    def on_write() -> None:
        writable.set()
        loop.watch(a, on_read, None)  # stop watching writability

    on_loop(loop, lambda: loop.watch(a, on_read, on_write))
    assert writable.wait(TIMEOUT)
    b.sendall(b"ping")
    assert got.wait(TIMEOUT)
    assert data == [b"ping"]
    on_loop(loop, lambda: loop.watch(a, None, None))
    on_loop(loop, lambda: loop.remove_socket(a))  # removing twice is harmless
    a.close()
    b.close()


def test_callback_exception_is_logged_and_loop_survives(
    loop: SelectorLoop, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception in a callback is logged; later callbacks still run."""

    def fail() -> None:
        raise RuntimeError("bug")

    loop.call_soon_threadsafe(fail)
    on_loop(loop, lambda: None)
    assert any("unexpected internal error" in r.getMessage() for r in caplog.records)


def test_wake_ups_are_never_lost_under_contention(loop: SelectorLoop) -> None:
    """Callbacks queued from other threads while the loop is idle all run promptly.

    Each round has several threads queue a callback at once while the loop sleeps in
    select(); a wake-up lost to a race would leave a round unfinished.
    """

    def queue_one(barrier: threading.Barrier, done: threading.Semaphore) -> None:
        barrier.wait(TIMEOUT)
        loop.call_soon_threadsafe(done.release)

    for _ in range(300):
        barrier = threading.Barrier(4)
        done = threading.Semaphore(0)
        threads = [threading.Thread(target=queue_one, args=(barrier, done)) for _ in range(4)]
        for t in threads:
            t.start()
        for _ in range(4):
            assert done.acquire(timeout=TIMEOUT), "a callback waited for an unrelated wake-up"
        for t in threads:
            t.join()
