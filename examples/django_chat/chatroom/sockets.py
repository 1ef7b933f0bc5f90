"""The chat's WebSocket handler, found at startup because the module is ``sockets.py``.

``DjangoMiddlewareMixin`` runs the session and authentication middleware on the
handshake, so ``websocket.user`` is the logged-in user: anonymous visitors are
refused, and every message goes out with its sender's username.
"""

from __future__ import annotations

import json
from typing import Any

import wsgiws
from wsgiws.django import DjangoMiddlewareMixin

from .models import Message

#: Messages a newcomer receives from the room's history.
HISTORY = 50
MAX_TEXT = 2000


def room_group(room: str) -> wsgiws.Group:
    """The group of everyone connected to ``room``."""
    return wsgiws.group(f"chat:{room}")


@wsgiws.Namespace(r"/ws/chat/(?P<room>[-a-zA-Z0-9_]{1,32})")
class ChatRoom(DjangoMiddlewareMixin, wsgiws.BaseWSClass):
    """One logged-in person in one room (handlers run on worker threads)."""

    @classmethod
    def on_connect(cls, websocket: Any, path: str) -> None:
        if not websocket.user.is_authenticated:
            raise wsgiws.Reject(reason="log in first", status=403)
        websocket.room = room = websocket.match.group("room")
        recent = Message.objects.filter(room=room).select_related("author")
        history = [m.as_json() for m in reversed(recent.order_by("-created", "-id")[:HISTORY])]
        websocket.send_json({"type": "welcome", "user": websocket.user.get_username(),
                             "room": room, "history": history})  # fmt: skip
        websocket.join(f"chat:{room}")
        room_group(room).send_json(
            {"type": "join", "user": websocket.user.get_username()}, exclude=websocket
        )

    @classmethod
    def on_message(cls, websocket: Any, message: str | bytes) -> None:
        try:
            text = str(json.loads(message)["text"]).strip()[:MAX_TEXT]
        except (ValueError, KeyError, TypeError):
            return  # not a chat message: ignore it
        if text:
            stored = Message.objects.create(room=websocket.room, author=websocket.user, text=text)
            room_group(websocket.room).send_json(stored.as_json())

    @classmethod
    def on_close(cls, websocket: Any) -> None:
        if hasattr(websocket, "room"):  # not refused in on_connect
            room_group(websocket.room).send_json(
                {"type": "leave", "user": websocket.user.get_username()}, exclude=websocket
            )
