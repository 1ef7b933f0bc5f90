"""The chat's WebSocket handler, found at startup because the module is ``sockets.py``.

``DjangoMiddlewareMixin`` runs the session and authentication middleware on the
handshake, so ``websocket.user`` is the logged-in user: anonymous visitors are
refused, and every message goes out with its sender's username.

It speaks the protocol of the shared chat page (``examples/chat``): ``welcome``
(with the room's stored history), ``join``, ``leave``, ``message`` and ``rooms``.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import wsgiws
from wsgiws.django import DjangoMiddlewareMixin

from .models import Message

#: Messages a newcomer receives from the room's history.
HISTORY = 50
MAX_TEXT = 2000
#: Rooms the page offers; people may open others by name.
ROOMS = ("lobby", "python", "random")

# Membership changes and the lists derived from them happen under this lock, so
# that every "online" list sent out matches the join/leave it goes with.
_lock = threading.Lock()


def room_group(room: str) -> wsgiws.Group:
    """The group of everyone connected to ``room``."""
    return wsgiws.group(f"chat:{room}")


def _online(room: str) -> list[str]:
    """Who is in ``room``: each username once, however many tabs it has open."""
    return sorted({member.user.get_username() for member in room_group(room).members})


def _room_counts() -> dict[str, int]:
    counts = dict.fromkeys(ROOMS, 0)
    for member in wsgiws.group("chat").members:
        counts[member.room] = counts.get(member.room, 0) + 1
    return counts


@wsgiws.Namespace(r"/ws/chat/(?P<room>[-a-zA-Z0-9_]{1,32})")
class ChatRoom(DjangoMiddlewareMixin, wsgiws.BaseWSClass):
    """One logged-in person in one room (handlers run on worker threads)."""

    @classmethod
    def on_connect(cls, websocket: Any, path: str) -> None:
        if not websocket.user.is_authenticated:
            raise wsgiws.Reject(reason="log in first", status=403)
        name = websocket.user.get_username()
        websocket.room = room = websocket.match.group("room")
        recent = Message.objects.filter(room=room).select_related("author")
        history = [m.as_json() for m in reversed(recent.order_by("-created", "-id")[:HISTORY])]
        with _lock:
            websocket.join(f"chat:{room}")
            websocket.join("chat")
            online = _online(room)
            websocket.send_json(
                {"type": "welcome", "room": room, "name": name, "online": online,
                 "history": history}
            )  # fmt: skip
            room_group(room).send_json(
                {"type": "join", "name": name, "online": online}, exclude=websocket
            )
            wsgiws.group("chat").send_json({"type": "rooms", "rooms": _room_counts()})

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
        if not hasattr(websocket, "room"):
            return  # refused in on_connect
        room = websocket.room
        with _lock:
            websocket.leave(f"chat:{room}")
            websocket.leave("chat")
            online = _online(room)
            room_group(room).send_json(
                {"type": "leave", "name": websocket.user.get_username(), "online": online}
            )
            wsgiws.group("chat").send_json({"type": "rooms", "rooms": _room_counts()})
