"""``FlaskMixin``: the Flask request context of the handshake, in every handler event.

What runs when, on a worker thread, for a connection served by the
:class:`~wsgiws.flask.WebSockets` extension:

``on_connect`` (before the 101 response)
    The app context is pushed (by the extension); the mixin builds a request
    context from the handshake's environ and pushes it, which opens the session
    through ``app.session_interface``; the app's ``url_value_preprocessors`` and
    ``before_request`` functions run (``app.preprocess_request()``). An
    :func:`~flask.abort` there, or in any ``on_connect`` of the chain, refuses the
    handshake with its status; a response returned by a ``before_request``
    function refuses it with the response's status (4xx and 5xx as they are, any
    other status as 403: browsers do not follow a redirect of a WebSocket
    handshake). Then ``websocket.session`` and ``websocket.user`` are set and the
    chain runs.
``on_message`` and ``on_close``
    The app context and a fresh request context of the same handshake environ are
    pushed around the event, with the connection's session object (not reopened).
    ``before_request`` functions do not run again. An ``abort()`` with a 4xx status
    closes the connection with 1008 (policy violation).
After each event
    A server-side session (any ``session_interface`` other than Flask's signed
    cookie) is saved through ``save_session``; then ``teardown_request`` and
    ``teardown_appcontext`` functions run, as after a request.

Never run: ``after_request`` functions (there is no response), error handlers
(an exception in a handler is logged and closes the connection with 1011), and the
``request_started``/``request_finished`` signals.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from contextlib import AbstractContextManager
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from flask import Flask, has_app_context
from flask.ctx import RequestContext
from flask.globals import app_ctx
from flask.sessions import SecureCookieSessionInterface, SessionMixin
from werkzeug.exceptions import HTTPException

from ..exceptions import Reject, Skip
from ..handlers import BaseMixin

if TYPE_CHECKING:
    from ..websocket import WebSocket

__all__ = ["FlaskMixin", "refusal_status"]

#: The attribute of the ``WebSocket`` holding the connection's Flask state.
_STATE = "_wsgiws_flask"


@dataclasses.dataclass(frozen=True)
class _Handshake:
    """What later events of a connection need from its handshake."""

    app: Flask
    environ: dict[str, Any]
    session: SessionMixin


def refusal_status(status: int) -> int:
    """The handshake status for a response status: 4xx and 5xx as they are, else 403."""
    return status if 400 <= status <= 599 else int(HTTPStatus.FORBIDDEN)


def _status_of(exc: HTTPException) -> int:
    if exc.code is not None:
        return exc.code
    if exc.response is not None:  # abort(response)
        return exc.response.status_code
    return int(HTTPStatus.INTERNAL_SERVER_ERROR)  # pragma: no cover - werkzeug sets one


def _refuse(exc: HTTPException) -> Reject:
    status = _status_of(exc)
    return Reject(status=refusal_status(status), reason=f"refused by the app ({status})")


def _app() -> Flask:
    if not has_app_context():
        raise RuntimeError(
            "FlaskMixin needs the app context that the wsgiws.flask.WebSockets "
            "extension pushes around each event: serve this handler with "
            "WebSockets(app), not with a bare WebSocketMiddleware"
        )
    return app_ctx.app


def _before_request(app: Flask) -> None:
    try:
        returned = app.preprocess_request()
    except HTTPException as exc:
        raise _refuse(exc) from None
    if returned is not None:
        response = app.make_response(returned)
        raise Reject(
            status=refusal_status(response.status_code),
            reason=f"refused by a before_request function ({response.status_code})",
        )


def _current_user(app: Flask) -> Any:
    """Flask-Login's user (loaded now), or ``None`` when the app has no LoginManager."""
    if getattr(app, "login_manager", None) is None:
        return None
    from flask_login import current_user

    return current_user._get_current_object()


def _save_session(app: Flask, session: SessionMixin) -> None:
    """Save a server-side session; a cookie session has no response to carry it."""
    interface = app.session_interface
    if isinstance(interface, SecureCookieSessionInterface) or interface.is_null_session(session):
        return
    interface.save_session(app, session, app.response_class())


@contextlib.contextmanager
def _pushed(context: RequestContext) -> Iterator[None]:
    """Push ``context``; pop it (teardown_request) with the exception Flask would
    report: none for a refusal, a skip or an HTTP error, else the handler's."""
    context.push()
    error: BaseException | None = None
    try:
        yield
    except (Reject, Skip, HTTPException):
        raise
    except BaseException as exc:
        error = exc
        raise
    finally:
        context.pop(error)


@contextlib.contextmanager
def _handshake(websocket: WebSocket) -> Iterator[None]:
    app = _app()
    environ = dict(websocket.environ)  # a copy: Flask and werkzeug write to it
    context = RequestContext(app, environ)
    with _pushed(context):
        _before_request(app)
        session = context.session
        setattr(websocket, _STATE, _Handshake(app, environ, session))
        websocket.session = session  # type: ignore[attr-defined]
        websocket.user = _current_user(app)  # type: ignore[attr-defined]
        try:
            yield
        except Skip:
            _save_session(app, session)
            raise
        except HTTPException as exc:
            raise _refuse(exc) from None
        _save_session(app, session)


@contextlib.contextmanager
def _event(websocket: WebSocket, event: str) -> Iterator[None]:
    state: _Handshake | None = getattr(websocket, _STATE, None)
    if state is None:  # pragma: no cover - on_connect always ran first
        raise RuntimeError(f"{event} before the handshake's request context was made")
    context = RequestContext(state.app, state.environ, session=state.session)
    with _pushed(context):
        try:
            yield
        except Skip:
            _save_session(state.app, state.session)
            raise
        except HTTPException as exc:
            status = _status_of(exc)
            if event == "on_message" and 400 <= status <= 499:
                raise Reject(reason=f"{status} {HTTPStatus(status).phrase}") from None
            raise
        _save_session(state.app, state.session)


class FlaskMixin(BaseMixin):
    """Run every event inside the Flask request context of the handshake.

    Put it left of :class:`~wsgiws.BaseWSClass` in a handler served by the
    :class:`~wsgiws.flask.WebSockets` extension::

        @ws.namespace(r"/chat")
        class Chat(FlaskMixin, BaseWSClass):
            @classmethod
            def on_connect(cls, websocket, path):
                if not current_user.is_authenticated:
                    abort(401)

            @classmethod
            def on_message(cls, websocket, message):
                websocket.send(f"{current_user.username}: {message}")

    After the handshake:

    * ``websocket.session``: the Flask session opened on the handshake (the same
      object as ``flask.session`` in every event of the connection).
    * ``websocket.user``: Flask-Login's user loaded on the handshake (a user, or the
      anonymous user); ``None`` when the app has no ``LoginManager``. In later
      events ``current_user`` is loaded again from the session, as for a request.

    See :mod:`wsgiws.flask.mixins` for what runs when, and what does not.
    """

    @classmethod
    def event_context(cls, websocket: WebSocket, event: str) -> AbstractContextManager[None]:
        """The request context around one event (see the module documentation)."""
        if event == "on_connect":
            return _handshake(websocket)
        return _event(websocket, event)
