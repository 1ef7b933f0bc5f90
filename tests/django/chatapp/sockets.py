"""The test app's handlers, found at startup because the module is named ``sockets``."""

from __future__ import annotations

import os
from typing import Any

from django.db import connection

import wsgiws
from wsgiws.django import DjangoMiddlewareMixin

from .models import Note


@wsgiws.Namespace(r"/django/whoami(/deny|/slow-down|/boom|/login-required)?")
class WhoAmI(DjangoMiddlewareMixin, wsgiws.BaseWSClass):
    """Tells who the handshake's user is; keeps a counter in the session."""

    @classmethod
    def on_connect(cls, websocket: Any, path: str) -> None:
        user = websocket.user
        websocket.send_json(
            {
                "user": user.get_username(),
                "authenticated": user.is_authenticated,
                "class": type(user).__name__,
                "request": type(websocket.request).__name__,
                "has_session": websocket.session is not None,
            }
        )

    @classmethod
    def on_message(cls, websocket: Any, message: str | bytes) -> None:
        if message == "incr":
            websocket.session["ws_count"] = websocket.session.get("ws_count", 0) + 1
            websocket.session.save()
            websocket.send(str(websocket.session["ws_count"]))
        elif message == "db-fresh":
            # No connection left open by an earlier event on this worker thread.
            fresh = connection.connection is None
            Note.objects.exists()
            websocket.send("fresh" if fresh else "stale")
        else:
            websocket.send(message)


@wsgiws.Namespace(r"/django/notes")
class Notes(DjangoMiddlewareMixin, wsgiws.BaseWSClass):
    """Stores each message with the ORM and answers with this connection's count."""

    @classmethod
    def on_message(cls, websocket: Any, message: str | bytes) -> None:
        author = websocket.user if websocket.user.is_authenticated else None
        Note.objects.create(author=author, connection_id=websocket.id, text=str(message))
        websocket.send(str(Note.objects.filter(connection_id=websocket.id).count()))


@wsgiws.Namespace(r"/django/pid")
class Pid(wsgiws.BaseWSClass):
    """Tells which process serves the connection."""

    @classmethod
    def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
        websocket.send(str(os.getpid()))
