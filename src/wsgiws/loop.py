"""The selector loop: readiness, wake-ups, callbacks from other threads, timers.

Theory of operation
-------------------

One :class:`SelectorLoop` runs on one thread. It owns a :mod:`selectors` selector in
which sockets are registered with a callback for readability and one for
writability. Other threads never touch the selector: they hand a callable to
:meth:`SelectorLoop.call_soon_threadsafe`, which appends it to a deque and, if the loop
may be sleeping, writes one byte to a socketpair registered in the selector. The loop
drains the pair, then runs the queued callables in order.

Timers live in a heap of ``(deadline, sequence, handle)``; a cancelled handle stays in
the heap and is skipped when it comes up (cancellation is O(1), which matters for
per-connection keepalive timers that are cancelled far more often than they fire).
The selector's timeout is the time to the next deadline.

Thread affinity: the methods named ``*_threadsafe`` (and :meth:`SelectorLoop.in_loop_thread`)
may be called from any thread. The others are the loop's API for code that already
runs on the loop thread (callbacks, timers); under ``python -X dev`` each of them
checks its caller's thread and raises :exc:`AssertionError` from any other thread.

This module knows nothing about WebSocket: it is tested with bare socketpairs.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import heapq
import itertools
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

from .log import server_logger as logger

__all__ = ["CHECK_THREADS", "Burst", "SelectorLoop", "TimerHandle", "current_burst"]

#: True under ``python -X dev``: loop-thread-only methods (here and in the
#: connection) check that they run on the loop thread.
CHECK_THREADS: Final = sys.flags.dev_mode

Callback = Callable[[], Any]

#: Seconds a burst's queued writes may wait while its thread is busy sending more
#: (past this, the thread writes them itself) or, once it went quiet (a handler
#: that blocks), before the loop writes them.
BURST_HOLD = 0.002
#: The longest a burst's queued writes wait while its thread keeps sending, however
#: long its writes take (see :meth:`Burst.sent`).
BURST_MAX_HOLD = 0.05


class TimerHandle:
    """A callback scheduled by :meth:`SelectorLoop.call_later`; ``cancel()`` stops it."""

    __slots__ = ("_loop", "callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callback, loop: SelectorLoop) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False
        self._loop: SelectorLoop | None = loop

    def cancel(self) -> None:
        """Stop the callback from running. Safe to call more than once."""
        if not self.cancelled:
            self.cancelled = True
            if self._loop is not None:  # still in the heap
                self._loop._cancelled_timers += 1


class SelectorLoop:
    """A selector loop meant to run on a single thread (see the module docstring).

    Args:
        name: used in the thread name and in log messages.
    """

    def __init__(self, name: str = "wsgiws") -> None:
        self.name = name
        self._selector = selectors.DefaultSelector()
        # The wake-up pair: the write end is written by other threads, the read end
        # is registered in the selector (websockets' shutdown_watcher, tornado's waker).
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        # fd -> (events, (on_read, on_write)) for every socket watched but the waker.
        self._watched: dict[int, tuple[int, tuple[Callback | None, Callback | None]]] = {}
        self._selector.register(self._wake_r, selectors.EVENT_READ, (self._drain_waker, None))
        # Callables queued by call_soon_threadsafe; deque append/popleft are atomic.
        self._ready: collections.deque[Callback] = collections.deque()
        # True while a wake-up byte is in flight, so that a burst of calls writes one.
        self._wake_pending = False
        self._timers: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        # Cancelled handles still in the heap; the heap is compacted when they
        # make up most of it.
        self._cancelled_timers = 0
        self._stopping = False
        self._closed = False
        #: The thread running :meth:`run`, set when it starts.
        self.thread_id: int | None = None
        self._read_buffer: memoryview | None = None
        self._pass_hook: Callback | None = None

    # -- any thread ----------------------------------------------------------------

    def call_soon_threadsafe(self, callback: Callback) -> None:
        """Run ``callback`` on the loop thread, soon. Callable from any thread."""
        self._ready.append(callback)
        if not self._wake_pending and threading.get_ident() != self.thread_id:
            self._wake_pending = True
            try:
                self._wake_w.send(b"\0")
            except BlockingIOError:
                pass  # the pair is full: a wake-up is pending already
            except OSError:
                pass  # closed: the loop is gone and the callback will not run

    def defer_threadsafe(self, callback: Callback) -> None:
        """Queue ``callback`` for the loop's next pass without waking the loop.

        For a burst of callbacks from one operation (a broadcast queues one per
        member): the caller then calls :meth:`wake_threadsafe` once. Until then the
        callback runs only when the loop wakes for another reason. Callable from any
        thread.
        """
        self._ready.append(callback)

    def wake_threadsafe(self) -> None:
        """Wake the loop so that it runs what was queued (one byte on the wake-up
        pair, none while one is in flight or on the loop thread). Any thread."""
        if not self._wake_pending and threading.get_ident() != self.thread_id:
            self._wake_pending = True
            # Full: a wake-up is pending already. Closed: the loop is gone.
            with contextlib.suppress(OSError):
                self._wake_w.send(b"\0")

    def run_threadsafe(self, callback: Callback) -> None:
        """Run ``callback`` on the loop thread: at once when called there (before
        returning), else soon. Callable from any thread."""
        if threading.get_ident() == self.thread_id:
            callback()
        else:
            self.call_soon_threadsafe(callback)

    def stop_threadsafe(self) -> None:
        """Ask :meth:`run` to return after the current iteration."""

        def stop() -> None:
            self._stopping = True

        self.call_soon_threadsafe(stop)

    def in_loop_thread(self) -> bool:
        """Tell whether the caller runs on the loop thread. Callable from any thread."""
        return threading.get_ident() == self.thread_id

    def check_thread(self) -> None:
        """Raise :exc:`AssertionError` unless called on the loop thread (or before the
        loop first ran). Loop-thread-only code calls it when :data:`CHECK_THREADS`."""
        if self.thread_id is not None and threading.get_ident() != self.thread_id:
            raise AssertionError(
                f"called from thread {threading.current_thread().name!r}, "
                f"not from the {self.name} loop thread"
            )

    # -- loop thread ---------------------------------------------------------------

    def read_buffer(self, size: int) -> memoryview:
        """A buffer of at least ``size`` bytes for ``recv_into``, shared by every
        reader on the loop thread: what is read into it must be used or copied
        before the next read (loop thread only)."""
        if CHECK_THREADS:
            self.check_thread()
        buffer = self._read_buffer
        if buffer is None or len(buffer) < size:
            buffer = self._read_buffer = memoryview(bytearray(size))
        return buffer

    def set_pass_hook(self, callback: Callback | None) -> None:
        """Run ``callback`` at the end of every pass, after the I/O callbacks, the
        timers and the queued callables, before the loop waits again (loop thread
        only). The server flushes the worker pool's wake-ups there."""
        if CHECK_THREADS:
            self.check_thread()
        self._pass_hook = callback

    def call_later(self, delay: float, callback: Callback) -> TimerHandle:
        """Run ``callback`` on the loop thread after ``delay`` seconds (loop thread only)."""
        if CHECK_THREADS:
            self.check_thread()
        handle = TimerHandle(time.monotonic() + delay, callback, self)
        heapq.heappush(self._timers, (handle.when, next(self._seq), handle))
        return handle

    def add_socket(
        self,
        sock: socket.socket,
        on_read: Callback | None,
        on_write: Callback | None = None,
    ) -> None:
        """Watch ``sock``: call ``on_read``/``on_write`` when it is ready (loop thread only)."""
        self.watch(sock, on_read, on_write)

    def watch(
        self,
        sock: socket.socket,
        on_read: Callback | None,
        on_write: Callback | None,
    ) -> None:
        """Register, modify or unregister ``sock`` so that it is watched for exactly
        the callbacks given; with neither, it is not watched (loop thread only).

        What is watched is kept in a dict, so that no call asks the selector and pays
        for an exception: connections pause and resume reading often.
        """
        if CHECK_THREADS:
            self.check_thread()
        fd = sock.fileno()
        events = (selectors.EVENT_READ if on_read else 0) | (
            selectors.EVENT_WRITE if on_write else 0
        )
        current = self._watched.get(fd)
        if events == 0:
            if current is not None:
                del self._watched[fd]
                self._selector.unregister(fd)
            return
        data = (on_read, on_write)
        if current is None:
            self._selector.register(fd, events, data)
        elif current[0] != events or current[1] != data:
            self._selector.modify(fd, events, data)
        else:
            return
        self._watched[fd] = (events, data)

    def remove_socket(self, sock: socket.socket) -> None:
        """Stop watching ``sock``; no error if it was not watched (loop thread only)."""
        if CHECK_THREADS:
            self.check_thread()
        fd = sock.fileno()
        if fd >= 0 and self._watched.pop(fd, None) is not None:
            self._selector.unregister(fd)

    def run(self) -> None:
        """Run until :meth:`stop_threadsafe`; then return (the loop stays usable)."""
        self.thread_id = threading.get_ident()
        self._stopping = False
        select = self._selector.select
        ready = self._ready
        timers = self._timers
        while not self._stopping:
            if ready:
                timeout: float | None = 0
            elif timers:
                timeout = max(0.0, timers[0][0] - time.monotonic())
            else:
                timeout = None
            for key, mask in select(timeout):
                on_read, on_write = key.data
                try:
                    if mask & selectors.EVENT_READ and on_read is not None:
                        on_read()
                    # The read callback may have unregistered or changed the socket.
                    if (
                        mask & selectors.EVENT_WRITE
                        and on_write is not None
                        and self._still_wants_write(key.fileobj, on_write)
                    ):
                        on_write()
                except Exception:
                    logger.error("unexpected internal error in %s loop", self.name, exc_info=True)
            if timers:
                now = time.monotonic()
                while timers and timers[0][0] <= now:
                    handle = heapq.heappop(timers)[2]
                    handle._loop = None
                    if handle.cancelled:
                        self._cancelled_timers -= 1
                    else:
                        self._run_callback(handle.callback)
                if self._cancelled_timers > 256 and 2 * self._cancelled_timers > len(timers):
                    self._compact_timers()
            # Run only what was queued before this pass: callbacks queued by these
            # callbacks wait for the next pass, so that I/O is never starved.
            for _ in range(len(ready)):
                self._run_callback(ready.popleft())
            if self._pass_hook is not None:
                self._run_callback(self._pass_hook)

    def close(self) -> None:
        """Release the selector and the wake-up pair (after :meth:`run` returned)."""
        if self._closed:
            return
        self._closed = True
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    # -- internals -----------------------------------------------------------------

    def _still_wants_write(self, fd: Any, on_write: Callback) -> bool:
        current = self._watched.get(fd)
        return current is not None and current[1][1] is on_write

    def _run_callback(self, callback: Callback) -> None:
        try:
            callback()
        except Exception:
            logger.error("unexpected internal error in %s loop", self.name, exc_info=True)

    def _drain_waker(self) -> None:
        # Clear the flag only after draining. Cleared before, a thread could set it
        # and write its byte in between, the drain would swallow that byte, and the
        # flag would stay set with no byte pending: every later call_soon_threadsafe
        # would skip its wake-up and wait for unrelated I/O. Cleared after, a thread
        # that saw the flag set had already queued its callback, and this pass runs it
        # (the ready queue is read after this drain).
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass
        self._wake_pending = False

    def _compact_timers(self) -> None:
        for entry in self._timers:
            if entry[2].cancelled:
                entry[2]._loop = None
        self._timers[:] = [entry for entry in self._timers if not entry[2].cancelled]
        heapq.heapify(self._timers)
        self._cancelled_timers = 0


class Writer(Protocol):
    """Something with bytes queued for writing (a connection's transport)."""

    def write_queued(self) -> None:
        """Write what is queued, from the calling thread. Any thread."""


class Burst:
    """Writes that one thread queued during one handler call, to write at its end.

    A broadcast from a handler queues its frame to each member without writing
    (:meth:`add` records each writer once); the thread writes them all when the
    handler returns (:meth:`close`), so a member sent many messages in one handler
    call gets them in one ``send``, and no other thread competes for the GIL to
    write them meanwhile. Bounded in time: a thread that keeps sending for more
    than :data:`BURST_HOLD` writes what it queued (:meth:`sent`); a thread that
    stops sending without returning (a handler blocking after a broadcast) has
    them written by the loop once a :data:`BURST_HOLD` went by without a broadcast
    (checked every :data:`BURST_HOLD`). Any thread.
    """

    __slots__ = (
        "_armed",
        "_cost",
        "_dirty",
        "_first",
        "_lock",
        "_seen",
        "_sent",
        "is_open",
        "sending",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dirty: list[Writer] = []
        self._first = 0.0  # when the oldest queued write was queued
        self._sent = 0  # fan-outs done (sent() calls)
        self._seen = -1  # _sent at the loop's last check
        # The token of the loop check armed for the queued writes, if any: a check
        # whose token is no longer current (written meanwhile) ends.
        self._armed: object | None = None
        self._cost = 0.0  # how long the last flush took
        #: True while the thread is in a handler call.
        self.is_open = False
        #: True while the thread queues one broadcast (set by the sender, cleared
        #: by :meth:`sent`).
        self.sending = False

    def add(self, writer: Writer, loop: SelectorLoop) -> None:
        """Write ``writer``'s queue at the end of the burst (caller may hold the
        writer's lock: this lock is taken after it, never before)."""
        with self._lock:
            if not self._dirty:
                self._first = time.monotonic()
            self._dirty.append(writer)
            if self._armed is not None:
                return
            token = self._armed = object()
        loop.call_soon_threadsafe(functools.partial(self._arm, loop, token))

    def sent(self) -> None:
        """After one broadcast: write now if the oldest queued write is too old.

        Too old: :data:`BURST_HOLD`, or four times what the last flush took (so
        that a long burst to many members spends most of its time queueing), but
        never more than :data:`BURST_MAX_HOLD`.
        """
        self.sending = False
        self._sent += 1
        if self._dirty and time.monotonic() - self._first >= min(
            max(BURST_HOLD, 4 * self._cost), BURST_MAX_HOLD
        ):
            self.flush()

    def flush(self) -> None:
        """Write every queued writer now, from the calling thread."""
        with self._lock:
            dirty, self._dirty = self._dirty, []
            self._armed = None
        start = time.monotonic()
        for writer in dirty:
            writer.write_queued()
        self._cost = time.monotonic() - start

    def close(self) -> None:
        """The handler call ended: write what it queued."""
        self.is_open = False
        if self._dirty:
            self.flush()

    def _arm(self, loop: SelectorLoop, token: object) -> None:
        loop.call_later(BURST_HOLD, functools.partial(self._check, loop, token))

    def _check(self, loop: SelectorLoop, token: object) -> None:
        # On the loop thread: write for a thread that went quiet with writes queued.
        with self._lock:
            if self._armed is not token:
                return  # written since (a later add armed its own check)
            if self.is_open and (self.sending or self._sent != self._seen):
                # Still sending (in a broadcast, or one since the last check): its
                # own sent() or close() writes.
                self._seen = self._sent
                loop.call_later(BURST_HOLD, functools.partial(self._check, loop, token))
                return
        self.flush()


_bursts = threading.local()


def current_burst() -> Burst | None:
    """The calling thread's open burst, if it is in a handler call. Any thread."""
    burst: Burst | None = getattr(_bursts, "burst", None)
    return burst if burst is not None and burst.is_open else None


def open_burst() -> Burst | None:
    """Open the calling thread's burst; None if one is open already (nested)."""
    burst: Burst | None = getattr(_bursts, "burst", None)
    if burst is None:
        burst = _bursts.burst = Burst()
    elif burst.is_open:
        return None
    burst.is_open = True
    return burst
