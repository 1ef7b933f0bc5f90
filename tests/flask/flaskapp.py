"""The Flask app of the adapter's tests: Flask-Login, Flask-SQLAlchemy, handlers.

:func:`create_app` builds an independent app (its own database, extension and
handlers), so that tests may run two in one process. Under gunicorn the module-level
``app`` is built from the environment: ``WSGIWS_FLASK_TEST_DB`` (the SQLite file).

Handlers (registered on each app's extension, not globally):

* ``/ws/whoami``: sends what the request context shows (user, session, ``g``,
  ``url_for``), then answers ``whoami`` messages the same way;
* ``/ws/write``: each message is stored as a ``Note`` through ``db.session``; one
  starting with ``hold`` first sets the app's ``test_hold[0]`` event and waits for
  ``test_hold[1]``;
* ``/ws/deny-*``: refused by the app's ``before_request`` function;
* ``/ws/members``: ``abort(401)`` in ``on_connect`` for anonymous users;
* ``/ws/session``: ``set k v`` changes the session, ``get k`` reads it.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from flask import Flask, abort, current_app, g, redirect, request, session, url_for
from flask_login import LoginManager, UserMixin, current_user, login_user
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash

from wsgiws import BaseWSClass, WebSocket
from wsgiws.flask import FlaskMixin, WebSockets

PASSWORD = "correct horse battery staple"


def create_app(database: str, **config: Any) -> Flask:
    """An app with users ``alice`` and ``bob`` (password :data:`PASSWORD`)."""
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="test secret " + database,
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{database}",
        WEBSOCKET_CLOSE_TIMEOUT=2.0,
        **config,
    )

    class Base(DeclarativeBase):  # one per app: each app has its own models
        pass

    db = SQLAlchemy(model_class=Base)
    db.init_app(app)

    class User(UserMixin, db.Model):  # type: ignore[name-defined, misc]
        __tablename__ = "user"
        id: Mapped[int] = mapped_column(primary_key=True)
        username: Mapped[str] = mapped_column(unique=True)
        password_hash: Mapped[str]

    class Note(db.Model):  # type: ignore[name-defined, misc]
        __tablename__ = "note"
        id: Mapped[int] = mapped_column(primary_key=True)
        author: Mapped[str]
        text: Mapped[str]
        thread: Mapped[str]

    login_manager = LoginManager(app)
    login_manager.login_view = "login"

    @login_manager.user_loader  # type: ignore[untyped-decorator]
    def load_user(user_id: str) -> Any:
        g.user_loads = g.get("user_loads", 0) + 1
        return db.session.get(User, int(user_id))

    teardowns: list[str] = []
    app.extensions["test_teardowns"] = teardowns
    hold = app.extensions["test_hold"] = (threading.Event(), threading.Event())

    @app.teardown_request
    def teardown_request(exc: BaseException | None) -> None:
        teardowns.append("request")

    @app.teardown_appcontext
    def teardown_appcontext(exc: BaseException | None) -> None:
        teardowns.append("app")

    @app.before_request
    def refuse_some() -> Any:
        if request.path == "/ws/deny-abort":
            abort(403)
        if request.path == "/ws/deny-429":
            abort(429)
        if request.path == "/ws/deny-return":
            return "members only", 401
        if request.path == "/ws/deny-redirect":
            return redirect(url_for("login"))
        g.before_request_ran = True
        return None

    @app.get("/")
    def index() -> str:
        return f"hello {current_user.username if current_user.is_authenticated else 'anonymous'}"

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        if request.method == "POST":
            user = db.session.execute(
                db.select(User).filter_by(username=request.form["username"])
            ).scalar_one_or_none()
            if user is None or not check_password_hash(
                user.password_hash, request.form["password"]
            ):
                abort(401)
            login_user(user)
            session["theme"] = "dark"
            return redirect(url_for("index"))
        return "<form method=post><input name=username><input name=password></form>"

    @app.get("/notes")
    def notes() -> dict[str, int]:
        return {"notes": db.session.query(Note).count()}

    ws = WebSockets(app)

    def whoami(websocket: WebSocket) -> dict[str, Any]:
        user = websocket.user  # type: ignore[attr-defined]
        return {
            "user": user.username if user.is_authenticated else None,
            "current_user": current_user.username if current_user.is_authenticated else None,
            "anonymous_class": type(user).__name__,
            "theme": session.get("theme"),
            "same_session": websocket.session is session._get_current_object(),  # type: ignore[attr-defined]
            "app": current_app.name,
            "config": current_app.config["SECRET_KEY"],
            "index_url": url_for("index"),
            "external_url": url_for("login", _external=True),
            "path": request.path,
            "before_request": g.get("before_request_ran", False),
            "user_loads": g.get("user_loads", 0),
        }

    @ws.namespace(r"/ws/whoami")
    class WhoAmI(FlaskMixin, BaseWSClass):
        @classmethod
        def on_connect(cls, websocket: WebSocket, path: str) -> None:
            websocket.send_json({"event": "connect", **whoami(websocket)})

        @classmethod
        def on_message(cls, websocket: WebSocket, message: str | bytes) -> None:
            if message == "abort":
                abort(403)
            if message == "boom":
                raise RuntimeError("boom")
            websocket.send_json({"event": "message", **whoami(websocket)})

    @ws.namespace(r"/ws/members")
    class Members(FlaskMixin, BaseWSClass):
        @classmethod
        def on_connect(cls, websocket: WebSocket, path: str) -> None:
            if not current_user.is_authenticated:
                abort(401)
            websocket.send(current_user.username)

    @ws.namespace(r"/ws/deny-\w+")
    class Denied(FlaskMixin, BaseWSClass):
        pass

    @ws.namespace(r"/ws/write")
    class Write(FlaskMixin, BaseWSClass):
        @classmethod
        def on_message(cls, websocket: WebSocket, message: str | bytes) -> None:
            author = current_user.username if current_user.is_authenticated else "anonymous"
            if str(message).startswith("hold"):
                hold[0].set()
                hold[1].wait(10)
            note = Note(author=author, text=str(message), thread=threading.current_thread().name)
            db.session.add(note)
            db.session.commit()
            websocket.send(f"stored {note.id}")

    @ws.namespace(r"/ws/session")
    class Session(FlaskMixin, BaseWSClass):
        @classmethod
        def on_message(cls, websocket: WebSocket, message: str | bytes) -> None:
            command, _, rest = str(message).partition(" ")
            if command == "set":
                key, _, value = rest.partition(" ")
                session[key] = value
                websocket.send("ok")
            else:
                websocket.send(repr(session.get(rest)))

    @ws.namespace(r"/ws/plain")
    class Plain(BaseWSClass):
        """No mixin: the app context only."""

        @classmethod
        def on_message(cls, websocket: WebSocket, message: str | bytes) -> None:
            websocket.send(f"{current_app.name} {db.session.query(User).count()}")

    with app.app_context():
        db.create_all()
        if db.session.query(User).count() == 0:
            for name in ("alice", "bob"):
                db.session.add(User(username=name, password_hash=generate_password_hash(PASSWORD)))
            db.session.commit()
    app.extensions["test_db"] = db
    app.extensions["test_note"] = Note
    return app


def close_app(app: Flask) -> None:
    """Stop the app's WebSocket server, then close its database connections (Python
    3.13 warns about a SQLite connection left to the garbage collector)."""
    app.extensions["wsgiws"].close()
    with app.app_context():
        app.extensions["test_db"].engine.dispose()


if os.environ.get("WSGIWS_FLASK_TEST_DB"):
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app = create_app(os.environ["WSGIWS_FLASK_TEST_DB"])
