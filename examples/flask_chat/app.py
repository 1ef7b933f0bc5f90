"""The chat room on Flask, with logins.

    pip install "wsgiws[flask]" flask-login flask-sqlalchemy
    python examples/flask_chat/app.py            # then open http://127.0.0.1:8000

Flask-Login keeps people logged in (a username and password form; the first login
with a new username signs up), their accounts live in SQLite through
Flask-SQLAlchemy, and the ``wsgiws.flask`` extension serves the chat's sockets on
the app's own port. The chat handler is the one shared by every chat example
(``examples/chat/``), with ``FlaskMixin`` in front: each socket knows its
logged-in user, every message goes out with that username, and an anonymous
socket is refused with 401.

The database and the key that signs session cookies are kept in ``--data DIR``
(or ``$CHAT_DATA_DIR``; default: the app's instance folder), so logins survive a
restart. Under gunicorn, from this directory: ``gunicorn -k gthread --threads 8
app:app`` (one worker: the rooms live in its memory; several workers need the Redis
group backend).
"""

from __future__ import annotations

import os
import secrets
import sys
from html import escape
from pathlib import Path
from typing import Any

from flask import Flask, abort, redirect, render_template_string, request, url_for
from flask_login import (
    LoginManager,
    UserMixin,
    current_user,
    login_required,
    login_user,
    logout_user,
)
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash

from wsgiws.flask import FlaskMixin, WebSockets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import chat  # the shared chat: its handler and its page


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
login_manager = LoginManager()
login_manager.login_view = "login"
ws = WebSockets()


class User(UserMixin, db.Model):  # type: ignore[name-defined, misc]
    """A chat account."""

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(unique=True)
    password_hash: Mapped[str]


@login_manager.user_loader  # type: ignore[untyped-decorator]  # Flask-Login has no hints
def load_user(user_id: str) -> User | None:
    return db.session.get(User, int(user_id))


@ws.namespace(r"/chat/(?P<room>[a-z0-9_-]{1,32})")
class ChatRoom(FlaskMixin, chat.ChatRoom):
    """The shared chat room, for logged-in users only."""

    @classmethod
    def name_of(cls, websocket: Any) -> str:
        # FlaskMixin ran the handshake through Flask: the session cookie was read
        # and Flask-Login loaded the user (websocket.user is the same object).
        if not current_user.is_authenticated:
            abort(401)  # refuses the handshake with 401
        return str(current_user.username)


#: The shared page's name picker, and what replaces it for a logged-in user.
RENAME = '<button id="rename" class="link" type="button">change name</button>'
LOGOUT = (
    '<button id="logout" class="link" type="submit" form="logout-form">log out</button>'
    '<form id="logout-form" method="post" action="/logout" hidden></form>'
)


def chat_page(username: str) -> str:
    """The shared chat page for a logged-in user: its ``<html data-user>`` names
    the user (the page then offers no name picker), with a log-out button."""
    html = chat.page()
    html = html.replace("<html ", f'<html data-user="{escape(username, quote=True)}" ', 1)
    return html.replace(RENAME, LOGOUT, 1)


LOGIN_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Log in · wsgiws chat</title><link rel="stylesheet" href="/static/style.css">
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml"></head>
<body><div class="overlay">
<form id="login-form" class="card" method="post">
  <h2>wsgiws chat</h2>
  <p>Log in, or pick a new username and password to sign up.</p>
  {% if error %}<p id="login-error" role="alert" style="color: #b42318">{{ error }}</p>{% endif %}
  <input id="username" name="username" placeholder="Username" maxlength="24"
         autocomplete="username" value="{{ username }}" required>
  <input id="password" name="password" type="password" placeholder="Password"
         autocomplete="current-password" required>
  <button id="login-button" type="submit">Log in</button>
</form></div></body></html>"""


def create_app(data_dir: str | None = None) -> Flask:
    """The chat app, its database and secret key in ``data_dir``."""
    app = Flask(
        __name__,
        static_folder=chat.STATIC_DIR,
        static_url_path="/static",
        instance_path=str(Path(__file__).resolve().parent / "instance"),
    )
    data = Path(data_dir or app.instance_path)
    data.mkdir(parents=True, exist_ok=True)
    secret = data / "secret_key"
    if not secret.exists():
        secret.write_text(secrets.token_hex(32))
        secret.chmod(0o600)
    app.config.update(
        SECRET_KEY=secret.read_text().strip(),
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{data / 'chat.sqlite3'}",
    )
    db.init_app(app)
    login_manager.init_app(app)
    ws.init_app(app)  # WebSockets on the app's own port: ws://host:port/chat/<room>
    with app.app_context():
        db.create_all()

    @app.get("/")
    @login_required  # type: ignore[untyped-decorator]
    def index() -> str:
        return chat_page(current_user.username)

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        error = ""
        username = request.form.get("username", "").strip()
        if request.method == "POST":
            password = request.form.get("password", "")
            user = db.session.execute(
                db.select(User).filter_by(username=username)
            ).scalar_one_or_none()
            if not chat.NAME.fullmatch(username) or not password:
                error = "Pick a username of 1 to 24 characters and a password."
            elif user is None:  # a new username: sign up
                user = User(username=username, password_hash=generate_password_hash(password))
                db.session.add(user)
                db.session.commit()
            elif not check_password_hash(user.password_hash, password):
                error = "Wrong password for this username."
            if not error:
                login_user(user, remember=True)
                return redirect(url_for("index"))
        return render_template_string(LOGIN_PAGE, error=error, username=username), (
            401 if error else 200
        )

    @app.post("/logout")
    def logout() -> Any:
        logout_user()
        return redirect(url_for("login"))

    return app


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="The wsgiws chat on Flask, with logins.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("PORT", "8000")), help="port (8000)"
    )
    parser.add_argument(
        "--data",
        default=os.environ.get("CHAT_DATA_DIR"),
        help="folder of the database and the secret key (default: the instance folder)",
    )
    args = parser.parse_args()
    app = create_app(args.data)
    print(f"Chat running on http://{args.host}:{args.port} (Ctrl-C to stop)", flush=True)
    app.run(host=args.host, port=args.port, threaded=True)
else:  # imported: by gunicorn (app:app) or a test
    app = create_app(os.environ.get("CHAT_DATA_DIR"))
