"""``DjangoMiddlewareMixin``: Django middleware on the WebSocket handshake.

On ``on_connect`` (a worker thread) the mixin builds a real
:class:`~django.core.handlers.wsgi.WSGIRequest` from the handshake's environ (the WSGI
server's own environ in same-port mode) and runs it through ``WEBSOCKET_MIDDLEWARE``,
assembled the way Django assembles ``MIDDLEWARE``: each middleware factory wraps the
next ``get_response`` and every layer goes through Django's
``convert_exception_to_response``. The innermost ``get_response`` returns a marker
response meaning "pass through". Any other response means a middleware answered
instead (a redirect to the login page, a 403, a 429 ...), and the handshake is
refused:

* a 4xx or 5xx response refuses with the same status;
* any other status (a 3xx redirect, a 200 page) refuses with 403 Forbidden.
  Browsers do not follow redirects of a WebSocket handshake, and clients that do
  would send a WebSocket handshake to an HTML page.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured, MiddlewareNotUsed
from django.core.handlers.exception import convert_exception_to_response
from django.core.handlers.wsgi import WSGIRequest
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponse
from django.utils.functional import LazyObject, empty
from django.utils.module_loading import import_string

from ..exceptions import Reject
from ..handlers import BaseMixin
from . import conf

if TYPE_CHECKING:
    from ..websocket import WebSocket

__all__ = ["DjangoMiddlewareMixin", "PassThrough", "WSGIMixin", "middleware_chain"]

GetResponse = Callable[[HttpRequest], Any]


class PassThrough(HttpResponse):  # type: ignore[misc]  # Django ships no type hints
    """The response of the innermost ``get_response``: every middleware passed."""


def _pass_through(request: HttpRequest) -> HttpResponse:
    return PassThrough()


_lock = threading.Lock()
_chain: GetResponse | None = None


def _build_chain(paths: tuple[str, ...]) -> GetResponse:
    handler: GetResponse = convert_exception_to_response(_pass_through)
    for path in reversed(paths):
        middleware = import_string(path)
        if not getattr(middleware, "sync_capable", True):
            raise ImproperlyConfigured(
                f"WEBSOCKET_MIDDLEWARE: {path!r} is async-only; handshakes run "
                f"synchronously on worker threads"
            )
        try:
            instance = middleware(handler)
        except MiddlewareNotUsed:
            continue
        if instance is None:
            raise ImproperlyConfigured(
                f"WEBSOCKET_MIDDLEWARE: middleware factory {path!r} returned None"
            )
        handler = convert_exception_to_response(instance)
    return handler


def middleware_chain() -> GetResponse:
    """Return the ``WEBSOCKET_MIDDLEWARE`` chain, built once (again after a change
    of the setting, e.g. by ``override_settings`` in tests).

    Raises:
        ImproperlyConfigured: ``WEBSOCKET_MIDDLEWARE`` is wrong.
    """
    global _chain
    chain = _chain
    if chain is None:
        with _lock:
            if _chain is None:
                _chain = _build_chain(conf.load().middleware)
            chain = _chain
    return chain


def _reset_chain(*, setting: str, **kwargs: Any) -> None:
    global _chain
    if setting in ("WEBSOCKET_MIDDLEWARE", "INSTALLED_APPS"):
        with _lock:
            _chain = None


setting_changed.connect(_reset_chain, dispatch_uid="wsgiws.django.mixins.reset_chain")


def refusal_status(status: int) -> int:
    """The handshake status for a middleware's response status (see the module doc)."""
    return status if 400 <= status <= 599 else int(HTTPStatus.FORBIDDEN)


def _resolve(user: Any) -> Any:
    """Evaluate ``request.user`` now (it is lazy) and return the object itself."""
    if isinstance(user, LazyObject):
        if user._wrapped is empty:
            user._setup()
        return user._wrapped
    return user


class DjangoMiddlewareMixin(BaseMixin):
    """Run ``WEBSOCKET_MIDDLEWARE`` on the handshake; set ``request``, ``user``,
    ``session``.

    Put it left of :class:`~wsgiws.BaseWSClass`; its ``on_connect`` runs before the
    handler's::

        @Namespace(r"/chat/")
        class Chat(DjangoMiddlewareMixin, BaseWSClass):
            @classmethod
            def on_message(cls, websocket, message):
                websocket.send(f"{websocket.user.username}: {message}")

    After the handshake:

    * ``websocket.request``: the :class:`~django.core.handlers.wsgi.WSGIRequest`
      of the handshake, after the middleware.
    * ``websocket.user``: ``request.user`` resolved on the worker thread during the
      handshake (a user, or ``AnonymousUser``); ``None`` without an authentication
      middleware.
    * ``websocket.session``: ``request.session`` (``None`` without a session
      middleware). Changes made in handlers are kept by ``websocket.session.save()``
      with a server-side session engine (database, cache, file); the client's
      cookie is not changed after the handshake.

    A middleware that answers instead of passing through refuses the handshake (see
    :mod:`wsgiws.django.mixins`).
    """

    @classmethod
    def on_connect(cls, websocket: WebSocket, path: str) -> None:
        """Run the middleware chain on a ``WSGIRequest`` of the handshake (worker thread)."""
        # A copy: middleware may change request.META, which is the environ itself.
        request = WSGIRequest(dict(websocket.environ))
        response = middleware_chain()(request)
        if not isinstance(response, PassThrough):
            status = refusal_status(response.status_code)
            raise Reject(
                status=status,
                reason=f"refused by Django middleware ({response.status_code} "
                f"{response.reason_phrase})",
            )
        websocket.request = request  # type: ignore[attr-defined]
        websocket.user = _resolve(getattr(request, "user", None))  # type: ignore[attr-defined]
        websocket.session = getattr(request, "session", None)  # type: ignore[attr-defined]


#: djwebsockets' name of the mixin.
WSGIMixin = DjangoMiddlewareMixin
