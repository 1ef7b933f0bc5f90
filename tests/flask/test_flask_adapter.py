"""The Flask adapter against a real app: Flask-Login, Flask-SQLAlchemy, real sockets."""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, current_app, session
from flask.sessions import SessionInterface, SessionMixin
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from werkzeug.datastructures import CallbackDict

import wsgiws
from wsgiws.flask import ConfigError, FlaskMixin, ServerNameOrigins, WebSockets

from ..helpers import TIMEOUT, wait_for
from .conftest import Served, get_json, login
from .flaskapp import create_app

pytestmark = pytest.mark.flask


def ws(served: Served, path: str, cookie: str | None = None, **kwargs: Any) -> ClientConnection:
    headers = {"Cookie": cookie} if cookie else None
    client: ClientConnection = connect(
        served.url(path, websocket=True),
        additional_headers=headers,
        open_timeout=TIMEOUT,
        **kwargs,
    )
    return client


def recv_json(client: ClientConnection) -> Any:
    return json.loads(client.recv(timeout=TIMEOUT))


def test_logged_in_user_in_every_event(served: Served) -> None:
    """A login through the app's view makes the socket see that user, session and app."""
    cookie = login(served.base, "alice")
    with ws(served, "/ws/whoami", cookie) as client:
        connected = recv_json(client)
        client.send("whoami")
        message = recv_json(client)
    for info in (connected, message):
        assert info["user"] == "alice"
        assert info["current_user"] == "alice"
        assert info["anonymous_class"] == "User"
        assert info["theme"] == "dark"  # set by the login view
        assert info["same_session"] is True
        assert info["app"] == "tests.flask.flaskapp"
        assert info["path"] == "/ws/whoami"
        assert info["index_url"] == "/"
        assert info["external_url"] == f"http://127.0.0.1:{served.port}/login"
        assert info["user_loads"] == 1  # current_user loaded once per event, as per request
    assert connected["before_request"] is True  # before_request ran on the handshake only
    assert message["before_request"] is False


@pytest.mark.parametrize(
    "cookie",
    [None, "theme=dark", "session=not-a-signed-cookie"],
    ids=["no-cookie", "other-cookie", "tampered"],
)
def test_anonymous_user(served: Served, cookie: str | None) -> None:
    """No session cookie, or a tampered one, gives Flask-Login's anonymous user."""
    with ws(served, "/ws/whoami", cookie) as client:
        info = recv_json(client)
    assert info["user"] is None
    assert info["current_user"] is None
    assert info["anonymous_class"] == "AnonymousUserMixin"
    assert info["theme"] is None


def test_forged_session_of_another_user_is_anonymous(served: Served) -> None:
    """A valid cookie whose payload was altered fails the signature check."""
    cookie = login(served.base, "alice")
    name, _, value = cookie.partition("=")
    middle = len(value) // 2
    forged = f"{name}={value[:middle]}{'A' if value[middle] != 'A' else 'B'}{value[middle + 1 :]}"
    with ws(served, "/ws/whoami", forged) as client:
        assert recv_json(client)["user"] is None


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/ws/deny-abort", 403),  # abort(403) in before_request
        ("/ws/deny-429", 429),  # any 4xx keeps its status
        ("/ws/deny-return", 401),  # a returned response refuses with its status
        ("/ws/deny-redirect", 403),  # a redirect: browsers would not follow it
    ],
)
def test_before_request_refuses(served: Served, path: str, status: int) -> None:
    """A ``before_request`` function that aborts or answers refuses the handshake."""
    with pytest.raises(InvalidStatus) as info:
        ws(served, path)
    assert info.value.response.status_code == status


def test_abort_in_on_connect(served: Served) -> None:
    """``abort(401)`` in the handler's ``on_connect`` refuses anonymous visitors."""
    with pytest.raises(InvalidStatus) as info:
        ws(served, "/ws/members")
    assert info.value.response.status_code == 401
    cookie = login(served.base, "bob")
    with ws(served, "/ws/members", cookie) as client:
        assert client.recv(timeout=TIMEOUT) == "bob"


def test_abort_and_errors_in_on_message(served: Served) -> None:
    """``abort(4xx)`` in ``on_message`` closes with 1008; an exception with 1011."""
    for message, code in (("abort", 1008), ("boom", 1011)):
        with ws(served, "/ws/whoami") as client:
            recv_json(client)
            client.send(message)
            with pytest.raises(ConnectionClosedError) as info:
                client.recv(timeout=TIMEOUT)
        assert info.value.rcvd is not None and info.value.rcvd.code == code


def test_teardown_after_each_event(served: Served) -> None:
    """``teardown_request`` then ``teardown_appcontext`` run after every event."""
    teardowns: list[str] = served.app.extensions["test_teardowns"]
    teardowns.clear()
    with ws(served, "/ws/whoami") as client:
        recv_json(client)
        for _ in range(3):
            client.send("whoami")
            recv_json(client)
    # connect + 3 messages + close: each one request context inside one app context.
    wait_for(lambda: len(teardowns) >= 10, message=f"teardowns: {teardowns}")
    assert teardowns == ["request", "app"] * 5


def test_db_session_from_worker_threads(served: Served) -> None:
    """100 messages each write through ``db.session`` on worker threads; every
    connection goes back to the pool. The first message of one client blocks its
    handler until the others wrote theirs, on other worker threads."""
    db = served.app.extensions["test_db"]
    note = served.app.extensions["test_note"]
    holding, release = served.app.extensions["test_hold"]
    cookie = login(served.base, "alice")
    errors: list[BaseException] = []

    def write(client: ClientConnection, start: int) -> None:
        try:
            for n in range(start, start + 25):
                client.send(f"hold {n}" if n == 0 else f"note {n}")
                assert str(client.recv(timeout=3 * TIMEOUT)).startswith("stored ")
        except BaseException as exc:  # reported by the test's thread
            errors.append(exc)

    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(ws(served, "/ws/write", cookie)) for _ in range(4)]
        threads = [threading.Thread(target=write, args=(c, i * 25)) for i, c in enumerate(clients)]
        threads[0].start()
        assert holding.wait(TIMEOUT)
        for thread in threads[1:]:
            thread.start()
        for thread in threads[1:]:
            thread.join(3 * TIMEOUT)
        release.set()
        threads[0].join(3 * TIMEOUT)
        assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    with served.app.app_context():
        pool = served.app.extensions["test_db"].engine.pool
    # The last teardowns may still run after the last reply was sent.
    wait_for(lambda: pool.checkedout() == 0, message="a database connection was not returned")
    assert get_json(served.url("/notes")) == {"notes": 100}
    with served.app.app_context():
        rows = db.session.execute(db.select(note)).scalars().all()
        assert {r.author for r in rows} == {"alice"}
        assert len({r.thread for r in rows}) > 1  # really several worker threads
        assert all(r.thread.startswith("wsgiws-worker") for r in rows)


def test_app_context_without_the_mixin(served: Served) -> None:
    """A handler without ``FlaskMixin`` still runs in the app context (db.session)."""
    with ws(served, "/ws/plain") as client:
        client.send("count")
        assert client.recv(timeout=TIMEOUT) == "tests.flask.flaskapp 2"


def test_cookie_session_changes_last_for_the_connection(served: Served) -> None:
    """A change to the signed-cookie session is seen by later events of the same
    connection, but no response carries it: the next connection has the old one."""
    cookie = login(served.base, "alice")
    with ws(served, "/ws/session", cookie) as client:
        client.send("set theme light")
        assert client.recv(timeout=TIMEOUT) == "ok"
        client.send("get theme")
        assert client.recv(timeout=TIMEOUT) == "'light'"
    with ws(served, "/ws/session", cookie) as client:
        client.send("get theme")
        assert client.recv(timeout=TIMEOUT) == "'dark'"


class DictSession(CallbackDict[str, Any], SessionMixin):
    """A server-side session: only its id travels in the cookie."""

    def __init__(self, sid: str, initial: dict[str, Any] | None = None) -> None:
        def on_update(self: DictSession) -> None:
            self.modified = True

        super().__init__(initial, on_update)
        self.sid = sid
        self.modified = False


class DictSessionInterface(SessionInterface):
    """Sessions kept in a dict of this process, as a Redis or database store would."""

    def __init__(self) -> None:
        self.store: dict[str, dict[str, Any]] = {}
        self.saves = 0

    def open_session(self, app: Flask, request: Any) -> DictSession:
        sid = request.cookies.get("sid")
        if sid and sid in self.store:
            return DictSession(sid, dict(self.store[sid]))
        return DictSession(f"sid-{len(self.store) + 1}")

    def save_session(self, app: Flask, session: SessionMixin, response: Any) -> None:
        assert isinstance(session, DictSession)
        if session.modified:
            self.saves += 1
            self.store[session.sid] = dict(session)
        response.set_cookie("sid", session.sid)


def test_server_side_session_is_saved(tmp_path: Path) -> None:
    """With a server-side ``session_interface``, changes made in handlers are saved."""
    app = create_app(str(tmp_path / "app.sqlite3"))
    interface = DictSessionInterface()
    app.session_interface = interface
    interface.store["known"] = {"theme": "dark"}
    served = Served(app)
    try:
        with ws(served, "/ws/session", "sid=known") as client:
            client.send("get theme")
            assert client.recv(timeout=TIMEOUT) == "'dark'"
            client.send("set theme light")
            assert client.recv(timeout=TIMEOUT) == "ok"
            # Saved when the event ends: after the handler's reply was sent.
            wait_for(lambda: interface.store["known"]["theme"] == "light")
        with ws(served, "/ws/session", "sid=known") as client:
            client.send("get theme")
            assert client.recv(timeout=TIMEOUT) == "'light'"
    finally:
        served.close()


def test_two_apps_in_one_process(tmp_path: Path) -> None:
    """Two apps keep their own handlers, config, database and users."""
    first = Served(create_app(str(tmp_path / "one.sqlite3")))
    second = Served(create_app(str(tmp_path / "two.sqlite3")))
    try:
        cookie = login(first.base, "alice")
        for served, name in ((first, "one"), (second, "two")):
            with ws(served, "/ws/whoami", cookie) as client:
                info = recv_json(client)
            assert info["config"].endswith(f"{name}.sqlite3")
            # The cookie signed by the first app's key means nothing to the second.
            assert info["user"] == ("alice" if served is first else None)
        assert first.app.extensions["wsgiws"] is not second.app.extensions["wsgiws"]
        assert (
            first.app.extensions["wsgiws"].registry is not second.app.extensions["wsgiws"].registry
        )
    finally:
        first.close()
        second.close()


def test_registry_argument_and_global_namespaces(tmp_path: Path) -> None:
    """The extension serves its own handlers, then the global ``Namespace`` ones;
    with ``registry=`` it serves that registry only."""
    registry = wsgiws.Registry()

    @registry.namespace(r"/only")
    class Only(FlaskMixin, wsgiws.BaseWSClass):
        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            websocket.send(current_app.name)

    @wsgiws.Namespace(r"/flask-adapter-test-global")
    class Global(wsgiws.BaseWSClass):
        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            websocket.send("global " + current_app.name)

    try:
        with_default = Flask("with_default")
        WebSockets(with_default, port=0)
        own = Flask("own")
        extension = WebSockets(own, registry=registry, port=0)
        assert own.extensions["wsgiws"] is extension
        try:
            port = with_default.extensions["wsgiws"].port
            with connect(f"ws://127.0.0.1:{port}/flask-adapter-test-global") as client:
                assert client.recv(timeout=TIMEOUT) == "global with_default"
            with connect(f"ws://127.0.0.1:{extension.port}/only") as client:
                assert client.recv(timeout=TIMEOUT) == "own"
            with pytest.raises(InvalidStatus) as info:
                connect(f"ws://127.0.0.1:{extension.port}/flask-adapter-test-global")
            assert info.value.response.status_code == 404
            assert len(extension.registry) == 1
            assert ("/flask-adapter-test-global", Global) in list(
                with_default.extensions["wsgiws"].registry
            )
        finally:
            with_default.extensions["wsgiws"].close()
            extension.close()
    finally:
        wsgiws.default_registry._routes = tuple(
            r for r in wsgiws.default_registry._routes if r[1].handler is not Global
        )


def test_mixin_needs_the_extension() -> None:
    """``FlaskMixin`` served by a bare middleware refuses with 500 and says why."""
    registry = wsgiws.Registry()

    @registry.namespace(r"/bare")
    class Bare(FlaskMixin, wsgiws.BaseWSClass):
        pass

    with (
        wsgiws.Server(port=0, registry=registry) as server,
        pytest.raises(InvalidStatus) as info,
    ):
        connect(f"ws://127.0.0.1:{server.port}/bare", open_timeout=TIMEOUT)
    assert info.value.response.status_code == 500


def test_separate_port_from_config(tmp_path: Path) -> None:
    """``WEBSOCKET_PORT`` serves the handlers on a port of their own, with the
    session of a cookie sent there."""
    app = create_app(str(tmp_path / "app.sqlite3"), WEBSOCKET_PORT=0)
    served = Served(app)
    try:
        extension = app.extensions["wsgiws"]
        assert extension.port
        cookie = login(served.base, "alice")
        with connect(
            f"ws://127.0.0.1:{extension.port}/ws/whoami",
            additional_headers={"Cookie": cookie},
            open_timeout=TIMEOUT,
        ) as client:
            assert recv_json(client)["user"] == "alice"
    finally:
        served.close()


# -- configuration ------------------------------------------------------------------


def init(**config: Any) -> WebSockets:
    app = Flask("config_test")
    app.config.update(config)
    return WebSockets(app)


@pytest.mark.parametrize(
    ("config", "key", "words"),
    [
        ({"WEBSOCKET_PORT": "8001"}, "WEBSOCKET_PORT", "integer from 0 to 65535"),
        ({"WEBSOCKET_PORT": 70000}, "WEBSOCKET_PORT", "integer from 0 to 65535"),
        ({"WEBSOCKET_HOST": 1}, "WEBSOCKET_HOST", "host name"),
        ({"WEBSOCKET_ALLOWED_ORIGINS": "https://a.example"}, "WEBSOCKET_ALLOWED_ORIGINS", "list"),
        ({"WEBSOCKET_ALLOWED_ORIGINS": ["a.example"]}, "WEBSOCKET_ALLOWED_ORIGINS", "origin"),
        ({"WEBSOCKET_PING_INTERVAL": -1}, "WEBSOCKET_PING_INTERVAL", "positive"),
        ({"WEBSOCKET_WORKERS": 0}, "WEBSOCKET_WORKERS", "positive integer"),
        ({"WEBSOCKET_COMPRESSION": "gzip"}, "WEBSOCKET_COMPRESSION", "deflate"),
        ({"WEBSOCKET_HANDOFF": "never"}, "WEBSOCKET_HANDOFF", "auto"),
        ({"WEBSOCKET_HANDOFF": "off"}, "WEBSOCKET_HANDOFF", "WEBSOCKET_PORT"),
        ({"WEBSOCKET_PING_INTERVALL": 5}, "WEBSOCKET_PING_INTERVALL", "unknown setting"),
        ({"SERVER_NAME": "bad name/x"}, "SERVER_NAME", "host[:port]"),
    ],
)
def test_wrong_config_names_the_key(config: dict[str, Any], key: str, words: str) -> None:
    """Each wrong value is refused at init_app with a message starting with its key."""
    with pytest.raises(ConfigError, match=f"^{key}: ") as info:
        init(**config)
    assert words in str(info.value)
    assert info.value.setting == key


def test_keyword_arguments_win_over_config() -> None:
    """Options given to the extension win over the config; each is validated too."""
    app = Flask("kwargs_test")
    app.config.update(WEBSOCKET_PORT="wrong", WEBSOCKET_PING_INTERVAL=7)
    extension = WebSockets(app, port=0, workers=2)
    try:
        options = extension.server.options
        assert extension.port
        assert options.ping_interval == 7
        assert options.workers == 2
    finally:
        extension.close()
    with pytest.raises(ConfigError, match=r"^WebSockets\(workers=\): "):
        WebSockets(Flask("x"), workers="many")
    with pytest.raises(TypeError, match=r"unknown option.*pingg"):
        WebSockets(pingg=1)


def test_factory_pattern_and_twice() -> None:
    """``init_app`` later, for several apps; twice on one app is an error."""
    extension = WebSockets(port=0)
    first, second = Flask("first"), Flask("second")
    extension.init_app(first)
    extension.init_app(second)
    try:
        assert first.extensions["wsgiws"] is second.extensions["wsgiws"] is extension
        with pytest.raises(RuntimeError, match="one app"):
            extension.middleware()
        with second.app_context():
            assert extension.middleware() is extension.middleware(second)
        assert extension.middleware(first).port != extension.middleware(second).port
        with pytest.raises(RuntimeError, match="already has"):
            extension.init_app(first)
        with pytest.raises(RuntimeError, match="not initialised for the app 'third'"):
            extension.middleware(Flask("third"))
        assert "first" in repr(extension)
    finally:
        extension.close()


def test_handler_context_option_runs_inside_the_app_context() -> None:
    """A ``handler_context`` of the user's is entered inside the app context."""
    seen: list[str] = []

    @contextlib.contextmanager
    def mine() -> Any:
        seen.append(current_app.name)
        yield

    registry = wsgiws.Registry()

    @registry.namespace(r"/ctx")
    class Ctx(wsgiws.BaseWSClass):
        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            websocket.send("hi")

    app = Flask("ctx_app")
    extension = WebSockets(app, registry=registry, port=0, handler_context=mine)
    try:
        with connect(f"ws://127.0.0.1:{extension.port}/ctx") as client:
            assert client.recv(timeout=TIMEOUT) == "hi"
        assert seen[0] == "ctx_app"
    finally:
        extension.close()


@pytest.mark.parametrize(
    ("server_name", "subdomains", "origin", "allowed"),
    [
        ("example.com", False, "https://example.com", True),
        ("example.com", False, "http://example.com:8080", True),  # no port: any port
        ("example.com", False, "https://evil.example", False),
        ("example.com", False, "https://chat.example.com", False),
        ("example.com", True, "https://chat.example.com", True),
        ("example.com", True, "https://evilexample.com", False),
        ("example.com:8000", False, "http://example.com:8000", True),
        ("example.com:8000", False, "http://example.com", False),
        ("example.com:443", False, "https://EXAMPLE.com", True),
        ("example.com", False, "null", False),
        ("example.com", False, "https://example.com/path", False),
        ("example.com", False, None, True),  # not a browser
    ],
)
def test_server_name_origins(
    server_name: str, subdomains: bool, origin: str | None, allowed: bool
) -> None:
    """With ``SERVER_NAME``, a browser's ``Origin`` must name that host."""
    assert ServerNameOrigins(server_name, subdomains=subdomains)(origin) is allowed


def test_origins_from_config() -> None:
    """``SERVER_NAME`` sets the origin check; an explicit setting wins over it."""
    app = Flask("origins_app", subdomain_matching=True)
    app.config.update(SERVER_NAME="chat.example", WEBSOCKET_PORT=0)
    extension = WebSockets(app)
    try:
        origins = extension.server.options.origins
        assert isinstance(origins, ServerNameOrigins)
        assert origins.subdomains and origins.host == "chat.example"
        assert "chat.example" in repr(origins)
    finally:
        extension.close()
    for given, expected in (("*", None), (["https://a.example"], ("https://a.example",))):
        other = Flask("explicit")
        other.config.update(SERVER_NAME="chat.example", WEBSOCKET_ALLOWED_ORIGINS=given)
        extension = WebSockets(other, port=0)
        try:
            assert extension.server.options.origins == expected
        finally:
            extension.close()


def test_session_proxy_is_the_websocket_session(served: Served) -> None:
    """``flask.session`` and ``websocket.session`` are one object in each event."""
    assert session is not None  # the proxy imported above is the one the app uses
    with ws(served, "/ws/whoami") as client:
        assert recv_json(client)["same_session"] is True
