"""``Server``: listening sockets, the loop thread, and the server's lifecycle.

The server is the one place that wires the parts together: it creates the loop and
the worker pool, accepts sockets, creates a :class:`~wsgiws.session.Session` (and
through it a :class:`~wsgiws.transport.Transport`) for each, and hands each session
itself as its :class:`~wsgiws.session.Host` — options, loop, pool, routes and the
process's group hub (:data:`wsgiws.groups.hub`).

Thread affinity: the public methods may be called from any thread (:meth:`Server.close`
from any but the loop's); the accept callback, ``_new_session``, ``_begin_close`` and
``_abort_all`` run on the loop thread (checked under ``python -X dev``).
"""

from __future__ import annotations

import contextlib
import enum
import os
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any

from wsproto.frame_protocol import CloseReason

from . import groups as _groups
from . import hosting, lifecycle
from .exceptions import InvalidState
from .log import server_logger as logger
from .loop import CHECK_THREADS, SelectorLoop
from .mask import IMPLEMENTATION as MASKING
from .options import Options
from .protocol import PreparedMessage
from .routing import Registry, default_registry
from .session import Session
from .workers import WorkerPool

__all__ = ["Server", "ServerState"]


class ServerState(enum.Enum):
    """Where a :class:`Server` stands in its lifecycle."""

    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    #: Bound in the master process of a prefork server; each worker starts the
    #: loop after the fork (see :mod:`wsgiws.hosting`).
    STANDBY = "standby"
    CLOSING = "closing"
    CLOSED = "closed"


#: Connections accepted per readiness of a listening socket, so that a flood of
#: connections cannot starve established ones of the loop.
ACCEPT_BATCH = 64
#: Seconds without accepting after accept() fails for lack of resources (EMFILE,
#: ENFILE, ENOBUFS): long enough not to spin, short enough to recover quickly.
ACCEPT_BACKOFF = 0.5

# Every server not yet closed, for the exit and fork hooks.
_servers: weakref.WeakSet[Server] = weakref.WeakSet()
# Serialises restarting loops in a process forked without Python's fork hooks, where
# the first request threads may find the loop missing at the same time.
_fork_lock = threading.Lock()


class Server:
    """A WebSocket server on its own host and port, served by one loop thread.

    Use it on its own in a script with no WSGI application, or through
    :class:`~wsgiws.WebSocketMiddleware`, which creates one::

        import wsgiws

        @wsgiws.Namespace(r"/echo")
        class Echo(wsgiws.BaseWSClass):
            @classmethod
            def on_message(cls, websocket, message):
                websocket.send(message)

        with wsgiws.Server(port=8001) as server:
            server.serve_forever()

    Args:
        host: address to listen on (``"127.0.0.1"`` by default; ``""`` for all).
        port: TCP port; ``0`` picks a free one, see :attr:`port`. ``None``: no
            listening socket, the loop only serves connections handed over with
            :meth:`adopt_threadsafe` (same-port mode of
            :class:`~wsgiws.WebSocketMiddleware`).
        registry: the routes to serve; the default registry (used by
            :func:`~wsgiws.Namespace`) when ``None``.
        ssl_context: serve ``wss://``: an :class:`ssl.SSLContext` with the server's
            certificate loaded (``ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)``
            then ``load_cert_chain``). TLS handshakes run on the loop thread without
            blocking and count against ``handshake_timeout``.
        **options: see :class:`~wsgiws.options.Options`; a wrong name raises
            :exc:`TypeError`, a wrong value :exc:`ValueError` naming the option.

    The server stops on :meth:`close`, on leaving its ``with`` block, or at
    interpreter exit: every client receives close code 1001 and the port is free at
    once. After ``os.fork()`` a running server restarts its loop in the child (with
    ``on_fork="restart"``, the default) or stays stopped there (``"stop"``).

    Started in the master process of a prefork server (uWSGI without
    ``--lazy-apps``, gunicorn ``--preload``), the server only binds its port there
    and runs no thread (:attr:`ServerState.STANDBY`): each worker starts its own loop
    after the fork and accepts from the shared listener, and the master never serves
    a connection. Where Python threads cannot run (uWSGI without
    ``--enable-threads``), :meth:`start` raises :exc:`RuntimeError` naming the
    option. See :mod:`wsgiws.hosting`.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = 8001,
        registry: Registry | None = None,
        ssl_context: ssl.SSLContext | None = None,
        **options: Any,
    ) -> None:
        if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
            raise TypeError(f"ssl_context must be an ssl.SSLContext, got {ssl_context!r}")
        if port is not None and (
            not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535
        ):
            raise ValueError(f"port must be None or an integer from 0 to 65535, got {port!r}")
        if registry is not None and not isinstance(registry, Registry):
            raise TypeError(f"registry must be a wsgiws.Registry, got {registry!r}")
        self.options = Options.from_kwargs(**options)
        self.host = host
        self._port = port
        self._registry = registry
        #: The TLS context for the listening sockets (``wss://``), or ``None``.
        self.ssl_context = ssl_context
        #: True when clients connect over TLS.
        self.secure = ssl_context is not None
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._state = ServerState.NEW
        self._listeners: list[socket.socket] = []
        # Under _lock: connections whose socket is open.
        self._sockets: set[Session] = set()
        # Under _lock: connections whose handler lifecycle is not over.
        self._active: set[Session] = set()
        # Under _lock: sockets handed over by a WSGI server, not yet taken by the loop.
        # (mapped to the event to set once it is closed, for a parked request thread).
        self._adopting: dict[socket.socket, threading.Event | None] = {}
        self._thread: threading.Thread | None = None
        # The process whose loop thread this server has (or will have, in standby).
        self._pid: int | None = None
        # Under _lock: stand-ins' sinks read until the WSGI server closes its end.
        self._sinks: set[socket.socket] = set()
        self._loop_done = threading.Event()
        # Created by start(): a server that never starts holds no descriptors.
        self._loop: SelectorLoop | None = None
        self._pool: WorkerPool | None = None

    # -- public --------------------------------------------------------------------

    @property
    def loop(self) -> SelectorLoop:
        """The selector loop (internal; exists once started)."""
        if self._loop is None:
            raise InvalidState("server is not started")
        return self._loop

    @property
    def pool(self) -> WorkerPool:
        """The handler thread pool (internal; exists once started)."""
        if self._pool is None:
            raise InvalidState("server is not started")
        return self._pool

    @property
    def registry(self) -> Registry:
        """The routes this server serves."""
        return self._registry if self._registry is not None else default_registry

    @property
    def hub(self) -> _groups.LocalHub:
        """The group hub of this process, in which connections register (internal)."""
        return _groups.hub

    @property
    def port(self) -> int | None:
        """The port listened on: the bound one once started (useful with ``port=0``).

        ``None`` for a server created with ``port=None`` (no listening socket).
        """
        if self._listeners:
            return int(self._listeners[0].getsockname()[1])
        return self._port

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`close`."""
        return self._state is ServerState.RUNNING

    @property
    def connections(self) -> int:
        """The number of connections whose lifecycle is not over."""
        with self._lock:
            return len(self._active)

    def broadcast(self, message: str | bytes) -> int:
        """Send a message to every connection of this server (this process only).

        The frame is encoded once and queued to each connection without blocking;
        closed connections are skipped. Callable from any thread. To reach every
        server and every process, use :func:`wsgiws.broadcast`.

        Returns:
            The number of connections the message was queued to.
        """
        prepared = PreparedMessage(message)
        return _groups.send_prepared_to(_groups.hub.connections(self), prepared)

    def start(self) -> Server:
        """Listen and run the loop on a daemon thread; return once listening.

        Raises:
            OSError: the address cannot be bound (e.g. the port is in use).
            InvalidState: the server was started or closed already.
            RuntimeError: Python threads do not run in this process (uWSGI without
                ``--enable-threads``): the loop could never serve a client.
        """
        with self._lock:
            if self._state is not ServerState.NEW:
                raise InvalidState(f"server is {self._state.value}; a server starts once")
            self._state = ServerState.STARTING
        host = hosting.detect()
        try:
            hosting.check_threads(host)
            self._bind(host)
        except BaseException:
            with self._lock:
                self._state = ServerState.CLOSED
            raise
        lifecycle.hook_host(host)
        if host.prefork_master and self.options.on_fork == "restart":
            self._pid = os.getpid()
            with self._lock:
                self._state = ServerState.STANDBY
            _servers.add(self)
            logger.info(
                "in %s's master process: each worker will serve %s",
                host.name,
                "same-port connections" if self._port is None else f"port {self.port}",
            )
            return self
        self._start_loop()
        if self._port is None:
            logger.info("running with no listening socket (same-port mode)")
        else:
            logger.info("listening on %s:%d", self.host or "*", self.port)
        logger.debug("payload masking in %s", MASKING)
        return self

    def serve_forever(self) -> None:
        """Start if needed, then block the calling thread until :meth:`close`.

        Ctrl-C (``KeyboardInterrupt``) closes the server, then re-raises.
        """
        if self._state is ServerState.NEW:
            self.start()
        try:
            while not self._loop_done.wait(0.5):  # short waits keep Ctrl-C responsive
                pass
        except KeyboardInterrupt:
            self.close()
            raise

    def close(self, timeout: float | None = None) -> None:
        """Stop: close code 1001 to every client, then release the port and threads.

        Waits up to ``timeout`` seconds (default: the ``close_timeout`` option, else
        10) for clients to answer the close, drops the rest, runs every pending
        ``on_close``, and joins the loop thread. Callable from any thread but the
        loop's; calling it again does nothing.
        """
        with self._lock:
            state = self._state
            if state in (ServerState.CLOSING, ServerState.CLOSED):
                return
            self._state = ServerState.CLOSING
        if state is not ServerState.RUNNING or self._pid != os.getpid():
            # Not started, standby in a prefork master, or a copy forked without
            # Python's fork hooks whose loop never restarted: no loop thread to wait
            # for in this process. The connections are the parent's; close our copies.
            self._release_listeners()
            self._close_inherited()
            with self._lock:
                self._state = ServerState.CLOSED
            _servers.discard(self)
            return
        if self.loop.in_loop_thread():
            raise InvalidState("close() cannot be called from the loop thread")
        if timeout is None:
            timeout = self.options.close_timeout or 10.0
        deadline = time.monotonic() + timeout
        self.loop.call_soon_threadsafe(self._begin_close)
        with self._cond:
            self._cond.wait_for(lambda: not self._active, max(0.0, deadline - time.monotonic()))
        self.loop.call_soon_threadsafe(self._abort_all)
        with self._cond:
            # on_close handlers of dropped connections still run; give them a while.
            self._cond.wait_for(lambda: not self._active, max(1.0, deadline - time.monotonic()))
            leftover = len(self._active)
        if leftover:
            logger.warning("%d on_close handler(s) still running at close", leftover)
        self.loop.stop_threadsafe()
        self._loop_done.wait(timeout)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self.loop.close()
        self.pool.shutdown(timeout=0.5)
        with self._lock:
            self._state = ServerState.CLOSED
            orphans, self._adopting = self._adopting, {}
            sinks, self._sinks = self._sinks, set()
        for sink in sinks:
            sink.close()
        for sock, closed in orphans.items():
            sock.close()
            if closed is not None:
                closed.set()
        _servers.discard(self)
        logger.info("stopped")

    def __enter__(self) -> Server:
        if self._state is ServerState.NEW:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Server {self.host or '*'}:{self.port} {self._state.value}>"

    def adopt_threadsafe(
        self,
        sock: socket.socket,
        remote_addr: tuple[str, int],
        target: str,
        headers: Iterable[tuple[str, str]],
        environ: dict[str, Any] | None = None,
        *,
        initial: bytes = b"",
        closed: threading.Event | None = None,
    ) -> None:
        """Serve a socket whose upgrade request a WSGI server already read.

        The loop completes the handshake (``on_connect``, then 101 or an error
        response). Callable from any thread; the caller gives up ``sock``.

        Args:
            initial: bytes the WSGI server had read past the request head (frames
                the client sent right after its request); served after the 101.
            closed: set once the loop has closed ``sock`` (or refused it), for a
                caller that waits for the end of the connection.
        """
        if self._pid != os.getpid():
            self._restart_if_forked()
        with self._lock:
            running = self._state is ServerState.RUNNING
            if running:
                # Until the loop takes it, close() may have to close it: a callback
                # queued just before the loop stops never runs.
                self._adopting[sock] = closed
        if not running:
            sock.close()
            if closed is not None:
                closed.set()
            raise InvalidState(f"server is {self._state.value}")
        headers = list(headers)
        self._configure(sock)

        def adopt() -> None:
            with self._lock:
                if sock not in self._adopting:
                    return  # close() got there first and closed it
                del self._adopting[sock]
            session = self._new_session(sock, remote_addr, environ)
            if session is None:
                if closed is not None:
                    closed.set()
                return
            session.closed_event = closed
            session.transport.start_upgraded(target, headers, initial)

        self.loop.call_soon_threadsafe(adopt)

    def discard_threadsafe(self, sink: socket.socket) -> None:
        """Read and drop what arrives on ``sink`` until its peer closes, then close it.

        For the stand-in socket of a hand-off (:func:`wsgiws.handoff.take_over` with
        uWSGI): the WSGI server writes its response there, then closes its end.
        Callable from any thread; the caller gives up ``sink``.
        """
        if self._pid != os.getpid():
            self._restart_if_forked()
        with self._lock:
            running = self._state is ServerState.RUNNING
            if running:
                self._sinks.add(sink)
        if not running:
            sink.close()
            return
        sink.setblocking(False)

        def drain() -> None:
            try:
                while sink.recv(65536):
                    pass
            except (BlockingIOError, InterruptedError):
                return  # the server's end is still open
            except OSError:
                pass
            self.loop.remove_socket(sink)
            with self._lock:
                self._sinks.discard(sink)
            sink.close()

        self.loop.call_soon_threadsafe(lambda: self.loop.add_socket(sink, drain))

    # -- lifecycle internals -------------------------------------------------------

    def _bind(self, host: hosting.Host) -> None:
        if self._port is None:
            return  # same-port mode: connections only arrive through adopt_threadsafe
        reuse_port = self.options.reuse_port
        if reuse_port is None:  # several processes bind this port each: share it
            reuse_port = host.processes_bind and hasattr(socket, "SO_REUSEPORT")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.create_server(
            (self.host, self._port),
            family=family,
            backlog=self.options.backlog,
            reuse_port=reuse_port,
        )
        sock.setblocking(False)
        self._listeners = [sock]

    def _start_loop(self) -> None:
        self._pid = os.getpid()
        self._loop = SelectorLoop(f"wsgiws:{self.port}")
        self._pool = WorkerPool(self.options.workers)
        ready = threading.Event()
        self._loop_done.clear()

        def run() -> None:
            # Handler tasks submitted during a pass wake one worker at its end.
            self.pool.defer_wakeups()
            self.loop.set_pass_hook(self.pool.flush)
            for listener in self._listeners:
                self.loop.add_socket(listener, self._accept_callback(listener))
            with self._lock:
                self._state = ServerState.RUNNING
            ready.set()
            try:
                self.loop.run()
            finally:
                self.pool.defer_wakeups(False)
                self._loop_done.set()

        self._thread = threading.Thread(target=run, name=f"wsgiws-loop:{self.port}", daemon=True)
        self._thread.start()
        ready.wait()
        _servers.add(self)

    def _accept_callback(self, listener: socket.socket) -> Any:
        # What socket.accept() does, without reading the listener's family and type
        # back as enums for every connection (their conversion cost about a tenth of
        # the accept): the raw accept, then a socket object of the listener's kind.
        family, kind, proto = int(listener.family), int(listener.type), listener.proto
        raw_accept = listener._accept  # type: ignore[attr-defined]
        new_socket = socket.socket
        # Linux copies TCP_NODELAY from the listener to the sockets it accepts: set it
        # there, check on the first connection that it came along, and from then on
        # spare the setsockopt of each connection. Elsewhere, each one gets it as before.
        # 0: set it on each socket; 1: set on the listener, check the next socket;
        # 2: inherited, nothing to set.
        nodelay = [1 if _set_nodelay(listener) else 0]

        def accept() -> None:
            if CHECK_THREADS:
                self.loop.check_thread()
            for _ in range(ACCEPT_BATCH):
                try:
                    fd, addr = raw_accept()
                    sock = new_socket(family, kind, proto, fileno=fd)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:
                    # EMFILE and the like. The pending connection stays queued, so
                    # the listener stays readable: retrying at once would spin the
                    # loop and flood the log. Stop watching it for a moment.
                    logger.error("accept failed: %s; not accepting for %.1f s", exc, ACCEPT_BACKOFF)
                    self.loop.remove_socket(listener)
                    self.loop.call_later(ACCEPT_BACKOFF, resume)
                    return
                if nodelay[0] == 2:
                    sock.setblocking(False)
                else:
                    if nodelay[0] == 1:
                        nodelay[0] = 2 if _has_nodelay(sock) else 0
                    self._configure(sock)
                if self.ssl_context is not None:
                    try:
                        # The TLS handshake itself runs on the loop, without blocking.
                        sock = self.ssl_context.wrap_socket(
                            sock, server_side=True, do_handshake_on_connect=False
                        )
                    except (OSError, ValueError) as exc:
                        logger.info("TLS setup failed for %s: %s", addr[0], exc)
                        sock.close()
                        continue
                session = self._new_session(sock, addr, None)
                if session is not None:
                    session.transport.start()

        def resume() -> None:
            if listener in self._listeners and listener.fileno() >= 0:
                self.loop.add_socket(listener, accept)

        return accept

    @staticmethod
    def _configure(sock: socket.socket) -> None:
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _new_session(
        self, sock: socket.socket, addr: Any, environ: dict[str, Any] | None
    ) -> Session | None:
        if CHECK_THREADS:
            self.loop.check_thread()
        running = self._state is ServerState.RUNNING
        if not running or len(self._sockets) >= self.options.max_connections:
            if running:
                logger.warning(
                    "refusing a connection: max_connections (%d) reached",
                    self.options.max_connections,
                )
            sock.close()
            return None
        session = Session(self, sock, (str(addr[0]), int(addr[1])), environ=environ)
        with self._lock:
            self._sockets.add(session)
            self._active.add(session)
        return session

    # -- the Host interface of sessions (any thread) ---------------------------------

    def connection_closed(self, session: Session) -> None:
        """The connection's socket is closed (any thread; the loop's in practice)."""
        with self._lock:
            self._sockets.discard(session)
        if session.closed_event is not None:
            session.closed_event.set()

    def session_done(self, session: Session) -> None:
        """The connection's handler lifecycle is over (any thread)."""
        with self._cond:
            self._active.discard(session)
            if not self._active:
                self._cond.notify_all()

    # -- loop thread ---------------------------------------------------------------

    def _open_sessions(self) -> list[Session]:
        with self._lock:
            return list(self._sockets)

    def _begin_close(self) -> None:
        if CHECK_THREADS:
            self.loop.check_thread()
        self._release_listeners()
        # One connection's failure must not keep the others from their 1001.
        for session in self._open_sessions():
            try:
                session.transport.shutdown(CloseReason.GOING_AWAY, "server shutting down")
            except Exception:
                session.log.error("error while closing for shutdown", exc_info=True)
                with contextlib.suppress(Exception):
                    session.transport.abort(CloseReason.GOING_AWAY, "server shutting down")

    def _abort_all(self) -> None:
        if CHECK_THREADS:
            self.loop.check_thread()
        for session in self._open_sessions():
            try:
                session.transport.abort(CloseReason.GOING_AWAY, "server shutting down")
            except Exception:
                session.log.error("error while dropping for shutdown", exc_info=True)

    def _release_listeners(self) -> None:
        if self._listeners and self._listeners[0].fileno() >= 0:
            self._port = int(self._listeners[0].getsockname()[1])
        for listener in self._listeners:
            if self._loop is not None and self._loop.in_loop_thread():
                self.loop.remove_socket(listener)
            listener.close()
        self._listeners = []

    def _close_inherited(self) -> None:
        """Close this process's copies of a parent's loop descriptors and connections."""
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.close()  # the child's copies of the parent's descriptors
        for session in self._sockets:
            session.transport.close_after_fork()  # the parent keeps serving these
        for sock in [*self._adopting, *self._sinks]:
            sock.close()  # the parent's hand-overs, not this process's
        self._sockets = set()
        self._adopting = {}
        self._sinks = set()

    def _restart_if_forked(self) -> None:
        """Start the loop in a process forked without any fork hook having run."""
        with _fork_lock:
            if self._pid is not None and self._pid != os.getpid():
                self._after_fork_in_child()

    def _after_fork_in_child(self) -> None:
        """Rebuild what a forked child lacks: the loop thread, its selector, the pool."""
        if self._pid == os.getpid():
            return  # done already in this process (uWSGI may run two fork hooks)
        self._close_inherited()
        self._active = set()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._loop_done = threading.Event()
        self._loop = self._pool = None
        resumable = (ServerState.RUNNING, ServerState.STANDBY)
        if self.options.on_fork == "stop" or self._state not in resumable:
            self._release_listeners()
            self._state = ServerState.CLOSED
            _servers.discard(self)
            return
        self._start_loop()
        lifecycle.hook_host(hosting.detect())
        if self._port is None:
            logger.info("running in forked process %d (same-port mode)", os.getpid())
        else:
            logger.info("listening in forked process %d on port %s", os.getpid(), self.port)


def _set_nodelay(listener: socket.socket) -> bool:
    """Set TCP_NODELAY on a TCP ``listener``; False if it is not TCP or refuses."""
    if listener.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        return False
    return True


def _has_nodelay(sock: socket.socket) -> bool:
    """Whether ``sock`` already has TCP_NODELAY (inherited from its listener)."""
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    except OSError:
        return False


def close_all_servers() -> None:
    """Close every server of this process (at interpreter exit)."""
    for server in list(_servers):
        try:
            server.close(timeout=min(server.options.close_timeout or 2.0, 2.0))
        except Exception:  # pragma: no cover - best effort at exit
            logger.error("error closing %r at exit", server, exc_info=True)


def _after_fork_in_child() -> None:
    for server in list(_servers):
        server._after_fork_in_child()


lifecycle.at_exit(lifecycle.ExitStage.SERVERS, close_all_servers)
lifecycle.after_fork_in_child(lifecycle.ForkStage.SERVERS, _after_fork_in_child)
