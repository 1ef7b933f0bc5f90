"""The selector loop with bare socketpairs: wake-ups, timers, readiness."""

from __future__ import annotations

import contextlib
import functools
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from wsgiws import loop as loop_module
from wsgiws.loop import SelectorLoop, current_burst, open_burst

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


def test_deferred_callbacks_run_after_a_wake_up_in_order(loop: SelectorLoop) -> None:
    """defer_threadsafe queues without waking; one wake_threadsafe runs the burst,
    in order with the other callbacks."""
    seen: list[tuple[int, bool]] = []
    done = threading.Event()

    def record(i: int) -> None:
        seen.append((i, loop.in_loop_thread()))

    for i in range(100):
        loop.defer_threadsafe(functools.partial(record, i))
    loop.defer_threadsafe(done.set)
    loop.wake_threadsafe()
    loop.wake_threadsafe()  # a second wake-up is harmless
    assert done.wait(TIMEOUT)
    assert seen == [(i, True) for i in range(100)]
    seen.clear()
    done.clear()

    def from_loop() -> None:
        loop.defer_threadsafe(done.set)
        loop.wake_threadsafe()

    on_loop(loop, from_loop)
    assert done.wait(TIMEOUT)  # deferred from the loop thread: the next pass runs it


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


def test_cancel_twice_and_after_firing(loop: SelectorLoop) -> None:
    """cancel() is idempotent, and harmless once the timer has run."""
    fired = threading.Event()
    handles = []

    def arm() -> None:
        handles.append(loop.call_later(0, fired.set))
        handles.append(loop.call_later(3600, lambda: None))

    on_loop(loop, arm)
    assert fired.wait(TIMEOUT)
    on_loop(loop, lambda: None)
    fired_handle, pending = handles
    on_loop(loop, fired_handle.cancel)  # already out of the heap
    on_loop(loop, pending.cancel)
    on_loop(loop, pending.cancel)  # counted once
    assert loop._cancelled_timers == 1


def test_compaction_keeps_live_timers(loop: SelectorLoop) -> None:
    """Compacting the heap drops cancelled timers only; the others still fire."""
    fired = threading.Event()

    def churn() -> None:
        loop.call_later(0.05, fired.set)
        for _ in range(600):
            loop.call_later(3600, lambda: None).cancel()
        loop.call_later(0, lambda: None)

    on_loop(loop, churn)
    assert fired.wait(TIMEOUT)
    assert loop._cancelled_timers == 0


def test_io_callback_exception_is_logged_and_loop_survives(
    loop: SelectorLoop, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception in a readiness callback is logged; the loop goes on."""
    a, b = socket.socketpair()
    failed = threading.Event()

    def on_read() -> None:
        a.recv(100)
        failed.set()
        raise RuntimeError("bug in a callback")

    on_loop(loop, lambda: loop.add_socket(a, on_read))
    b.sendall(b"x")
    assert failed.wait(TIMEOUT)
    on_loop(loop, lambda: loop.remove_socket(a))
    assert any("unexpected internal error" in r.getMessage() for r in caplog.records)
    a.close()
    b.close()


def test_unwatching_an_unwatched_socket_does_nothing(loop: SelectorLoop) -> None:
    a, b = socket.socketpair()
    on_loop(loop, lambda: loop.watch(a, None, None))
    on_loop(loop, lambda: None)
    a.close()
    b.close()


def test_run_threadsafe_runs_at_once_on_the_loop_thread(loop: SelectorLoop) -> None:
    """On the loop thread run_threadsafe runs before returning; elsewhere it queues."""
    order: list[str] = []

    def on_the_loop() -> None:
        loop.run_threadsafe(lambda: order.append("inline"))
        order.append("after")

    on_loop(loop, on_the_loop)
    assert order == ["inline", "after"]
    done = threading.Event()
    loop.run_threadsafe(done.set)
    assert done.wait(TIMEOUT)
    assert not loop.in_loop_thread()


def test_check_thread_refuses_other_threads(loop: SelectorLoop) -> None:
    """Once the loop runs, check_thread() passes on its thread and names any other."""
    on_loop(loop, loop.check_thread)
    with pytest.raises(AssertionError, match="not from the test loop thread"):
        loop.check_thread()


def test_wake_up_when_the_pair_is_full_or_closed() -> None:
    """A full wake-up pair means a wake-up is pending; a closed one, a closed loop."""
    loop = SelectorLoop("idle")
    with contextlib.suppress(BlockingIOError):
        while True:
            loop._wake_w.send(b"\0" * 65536)
    loop.call_soon_threadsafe(lambda: None)  # BlockingIOError: a wake-up is pending
    loop.close()
    loop.close()  # closing twice is harmless
    loop._wake_pending = False
    loop.call_soon_threadsafe(lambda: None)  # OSError: nobody will run it


def test_callbacks_queued_by_callbacks_run_on_the_next_pass(loop: SelectorLoop) -> None:
    """A callback queued from the loop thread runs on the next pass, without a wake-up."""
    done = threading.Event()
    on_loop(loop, lambda: loop.call_soon_threadsafe(done.set))
    assert done.wait(TIMEOUT)


def test_pass_hook_runs_after_the_callbacks_of_each_pass(loop: SelectorLoop) -> None:
    """The pass hook runs on the loop thread after what a pass ran, before the loop
    waits again; None removes it."""
    seen: list[str] = []
    done = threading.Event()

    def hook() -> None:
        seen.append("hook")
        if "callback" in seen:
            done.set()

    on_loop(loop, lambda: loop.set_pass_hook(hook))
    loop.call_soon_threadsafe(lambda: seen.append("callback"))
    assert done.wait(TIMEOUT)
    assert seen.index("hook", seen.index("callback")) == seen.index("callback") + 1
    on_loop(loop, lambda: loop.set_pass_hook(None))
    count = len(seen)
    on_loop(loop, lambda: None)
    assert len(seen) == count


class Writer:
    """A ``loop.Writer`` that records which thread wrote it."""

    def __init__(self) -> None:
        self.threads: list[int] = []
        self.written = threading.Event()

    def write_queued(self) -> None:
        self.threads.append(threading.get_ident())
        self.written.set()


def in_new_thread(fn: Callable[[], None]) -> None:
    """Run ``fn`` on a new thread (a fresh per-thread burst) and re-raise its error."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # pragma: no cover - re-raised below
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    if errors:
        raise errors[0]


def test_burst_writes_at_close_on_the_calling_thread(loop: SelectorLoop) -> None:
    """What a handler call queued is written once, by its thread, when it ends;
    bursts do not nest, and current_burst is None outside one."""
    in_new_thread(functools.partial(burst_at_close, loop))


def burst_at_close(loop: SelectorLoop) -> None:
    assert current_burst() is None
    burst = open_burst()
    assert burst is not None and current_burst() is burst
    assert open_burst() is None  # nested: the outer one writes
    writers = [Writer() for _ in range(3)]
    burst.sending = True
    for writer in writers:
        burst.add(writer, loop)
    burst.sent()  # within BURST_HOLD: nothing written yet
    burst.close()
    assert current_burst() is None
    assert all(w.threads == [threading.get_ident()] for w in writers)
    burst.close()  # nothing left
    assert all(len(w.threads) == 1 for w in writers)


def test_burst_writes_when_held_too_long(
    loop: SelectorLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread that keeps sending writes what it queued once it waited BURST_HOLD."""
    monkeypatch.setattr(loop_module, "BURST_HOLD", 0.0)
    in_new_thread(functools.partial(burst_held_too_long, loop))


def burst_held_too_long(loop: SelectorLoop) -> None:
    burst = open_burst()
    assert burst is not None
    try:
        writer = Writer()
        burst.sending = True  # as a broadcast does: the loop leaves the burst alone
        burst.add(writer, loop)
        burst.sent()
        assert writer.threads == [threading.get_ident()]
    finally:
        burst.close()


def test_burst_of_a_quiet_thread_is_written_by_the_loop(loop: SelectorLoop) -> None:
    """A thread that queued and then blocks (still in its handler call) has its
    writes written by the loop thread; so does a burst last armed on a loop that
    stopped since."""
    stopped = SelectorLoop("stopped")  # never runs: its check never comes
    in_new_thread(functools.partial(quiet_burst, stopped, loop))
    stopped.close()


def quiet_burst(stopped: SelectorLoop, loop: SelectorLoop) -> None:
    burst = open_burst()
    assert burst is not None
    first = Writer()
    burst.add(first, stopped)
    burst.close()  # written by this thread; the check armed on `stopped` is void
    assert first.threads == [threading.get_ident()]
    burst = open_burst()
    assert burst is not None
    try:
        writer = Writer()
        burst.add(writer, loop)
        burst.sent()
        assert writer.written.wait(TIMEOUT)  # blocks: the loop writes
        assert writer.threads == [loop.thread_id]
    finally:
        burst.close()
    assert len(writer.threads) == 1
