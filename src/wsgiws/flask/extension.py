"""``WebSockets``: the Flask extension."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar

from flask import Flask, has_app_context
from flask.globals import app_ctx

from ..handlers import BaseWSClass
from ..middleware import WebSocketMiddleware
from ..routing import Registry, default_registry
from . import conf

if TYPE_CHECKING:
    from ..handlers import Chain
    from ..server import Server

__all__ = ["EXTENSION_NAME", "LayeredRegistry", "WebSockets"]

#: The key of ``app.extensions``.
EXTENSION_NAME = "wsgiws"

H = TypeVar("H", bound=type[BaseWSClass])
HandlerContext = Callable[[], AbstractContextManager[object]]


class LayeredRegistry(Registry):
    """A registry of its own routes, then those of another one.

    The extension's registry when none is given: the handlers of
    :meth:`WebSockets.namespace` come first, then those registered with
    :func:`wsgiws.Namespace` (the default registry), which every server serves.
    """

    def __init__(self, fallback: Registry) -> None:
        super().__init__()
        self.fallback = fallback

    def match(self, path: str) -> tuple[Chain, re.Match[str]] | None:
        """The first match among the own routes, else among the fallback's."""
        found = super().match(path)
        return found if found is not None else self.fallback.match(path)

    def __iter__(self) -> Iterator[tuple[str, type[BaseWSClass]]]:
        return iter([*super().__iter__(), *self.fallback])

    def __len__(self) -> int:
        return super().__len__() + len(self.fallback)

    def __repr__(self) -> str:
        return f"<LayeredRegistry {list(super().__iter__())!r} then {self.fallback!r}>"


@contextlib.contextmanager
def app_event_context(app: Flask, inner: HandlerContext | None = None) -> Iterator[None]:
    """The app context around one handler event, then ``inner`` (the user's
    ``handler_context``) inside it. Leaving it runs the app's
    ``teardown_appcontext`` functions (Flask-SQLAlchemy removes its session there)."""
    with app.app_context():
        if inner is None:
            yield
        else:
            with inner():
                yield


class WebSockets:
    """The Flask extension: WebSocket handlers served with the app.

    ::

        app = Flask(__name__)
        ws = WebSockets(app)          # or: ws = WebSockets(); ws.init_app(app)

    :meth:`init_app` wraps ``app.wsgi_app`` in a :class:`~wsgiws.WebSocketMiddleware`
    (WebSockets on the app's own port; ``WEBSOCKET_PORT`` for a separate one), whose
    server starts at once, and stores the extension as
    ``app.extensions["wsgiws"]``. Every handler event (``on_connect``, each
    ``on_message``, ``on_close``) of that server runs inside the app's application
    context, on a worker thread: ``current_app``, ``g`` and Flask-SQLAlchemy's
    ``db.session`` work in any handler, and the app's ``teardown_appcontext``
    functions run after each event. :class:`~wsgiws.flask.FlaskMixin` adds the
    request context of the handshake (``session``, ``request``, ``url_for``,
    ``current_user``).

    Args:
        app: the app, or ``None`` to call :meth:`init_app` later (app factories).
        registry: the handlers to serve. By default the extension's own
            (:meth:`namespace`), then those registered with :func:`wsgiws.Namespace`.
        **options: the settings of :mod:`wsgiws.flask.conf` by their lower-case
            names (``port``, ``host``, ``origins``, ``handoff`` and every server
            option); they win over the app's ``WEBSOCKET_*`` config keys.

    Raises:
        TypeError: an unknown option.
    """

    def __init__(
        self, app: Flask | None = None, *, registry: Registry | None = None, **options: Any
    ) -> None:
        unknown = sorted(set(options) - set(conf.KEYS))
        if unknown:
            raise TypeError(
                f"WebSockets() got unknown option(s): {', '.join(unknown)}; known: "
                f"{', '.join(sorted(conf.KEYS))}"
            )
        #: The routes served by this extension's servers.
        self.registry: Registry = (
            registry if registry is not None else LayeredRegistry(default_registry)
        )
        self.options = options
        self._middlewares: dict[Flask, WebSocketMiddleware] = {}
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Serve this extension's handlers with ``app``.

        Raises:
            wsgiws.config.ConfigError: a ``WEBSOCKET_*`` key or option is wrong (the
                message starts with its name).
            RuntimeError: ``app`` already has a wsgiws extension.
        """
        if EXTENSION_NAME in app.extensions:
            raise RuntimeError(f"the app {app.name!r} already has a wsgiws WebSockets extension")
        settings = conf.load(app.config, self.options, subdomain_matching=app.subdomain_matching)
        kwargs = settings.server_kwargs()
        kwargs["handler_context"] = _bind(app, kwargs.get("handler_context"))
        middleware = WebSocketMiddleware(app.wsgi_app, registry=self.registry, **kwargs)
        app.wsgi_app = middleware  # type: ignore[method-assign]
        app.extensions[EXTENSION_NAME] = self
        self._middlewares[app] = middleware

    def namespace(self, pattern: str | re.Pattern[str]) -> Callable[[H], H]:
        """Class decorator registering a handler with this extension only::

        @ws.namespace(r"/chat/(?P<room>\\w+)")
        class Chat(FlaskMixin, BaseWSClass): ...
        """
        return self.registry.namespace(pattern)

    def middleware(self, app: Flask | None = None) -> WebSocketMiddleware:
        """The :class:`~wsgiws.WebSocketMiddleware` serving ``app``.

        Without ``app``: the only app of this extension, or else ``current_app``.

        Raises:
            RuntimeError: the extension was not initialised for that app.
        """
        if app is None:
            if len(self._middlewares) == 1:
                return next(iter(self._middlewares.values()))
            if has_app_context():
                app = app_ctx.app
        found = self._middlewares.get(app) if app is not None else None
        if found is None:
            raise RuntimeError(
                "this WebSockets extension is not initialised for "
                + (f"the app {app.name!r}" if app is not None else "one app (pass app=)")
            )
        return found

    @property
    def server(self) -> Server:
        """The :class:`~wsgiws.Server` of the app (see :meth:`middleware`)."""
        return self.middleware().server

    @property
    def port(self) -> int | None:
        """The separate port of the app (the bound one for ``0``), or ``None``."""
        return self.middleware().port

    def close(self) -> None:
        """Stop the servers of every app of this extension (they also stop at exit)."""
        for middleware in self._middlewares.values():
            middleware.close()

    def __repr__(self) -> str:
        apps = ", ".join(app.name for app in self._middlewares)
        return f"<WebSockets [{apps}]>"


def _bind(app: Flask, inner: HandlerContext | None) -> HandlerContext:
    def handler_context() -> AbstractContextManager[object]:
        return app_event_context(app, inner)

    return handler_context
