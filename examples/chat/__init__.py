"""The chat room shared by every chat example: its WebSocket handler and its page.

Importing this package registers one namespace, ``/chat/<room>?name=<name>``:

* on connect, the connection joins the group of its room and the group ``"lobby"``
  of everyone, gets a ``welcome`` with who is online, and the room hears a ``join``;
* each message ``{"text": "..."}`` goes to the whole room with the sender's name;
* on close, the room hears a ``leave`` with the new online list.

Every server → browser message is JSON with a ``type``: ``welcome``, ``join``,
``leave``, ``message`` or ``rooms`` (how many people are in each room).

The frameworks only serve the page: :func:`page` and the files in :data:`STATIC_DIR`.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from pathlib import Path

import wsgiws

#: The page's JavaScript, stylesheet and HTML.
STATIC_DIR = Path(__file__).resolve().parent / "static"

#: Names: 1 to 24 printable characters (pages show them as text, never as HTML).
NAME = re.compile(r"[^\x00-\x1f\x7f]{1,24}")
MAX_TEXT = 2000
#: Rooms the page offers; people may open others by name.
ROOMS = ("lobby", "python", "random")

# Membership changes and the lists derived from them happen under this lock, so
# that every "online" list sent out matches the join/leave it goes with.
_lock = threading.Lock()


def _online(room: str) -> list[str]:
    return sorted(
        (member.name for member in wsgiws.group(f"room:{room}").members), key=str.casefold
    )


def _room_counts() -> dict[str, int]:
    counts = dict.fromkeys(ROOMS, 0)
    for member in wsgiws.group("everyone").members:
        counts[member.room] = counts.get(member.room, 0) + 1
    return counts


@wsgiws.Namespace(r"/chat/(?P<room>[a-z0-9_-]{1,32})")
class ChatRoom(wsgiws.BaseWSClass):
    """One person in one room."""

    @classmethod
    def name_of(cls, websocket: wsgiws.WebSocket) -> str:
        """The person's name: the ``name`` query parameter, picked on the page.
        Examples with logins override it to use the logged-in user's name."""
        name = websocket.query.get("name", "").strip()
        if not NAME.fullmatch(name):
            raise wsgiws.Reject(reason="pick a name of 1 to 24 characters", status=400)
        return name

    @classmethod
    def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
        websocket.name = name = cls.name_of(websocket)
        websocket.room = room = websocket.match.group("room")
        with _lock:
            websocket.join(f"room:{room}")
            websocket.join("everyone")
            online = _online(room)
            websocket.send_json({"type": "welcome", "room": room, "name": name, "online": online})
            wsgiws.group(f"room:{room}").send_json(
                {"type": "join", "name": name, "online": online}, exclude=websocket
            )
            wsgiws.group("everyone").send_json({"type": "rooms", "rooms": _room_counts()})

    @classmethod
    def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
        try:
            text = str(json.loads(message)["text"]).strip()[:MAX_TEXT]
        except (ValueError, KeyError, TypeError):
            return  # not a chat message: ignore it
        if text:
            wsgiws.group(f"room:{websocket.room}").send_json(
                {"type": "message", "name": websocket.name, "text": text, "time": time.time()}
            )

    @classmethod
    def on_close(cls, websocket: wsgiws.WebSocket) -> None:
        if not hasattr(websocket, "room"):
            return  # refused in on_connect
        room = websocket.room
        with _lock:
            websocket.leave(f"room:{room}")
            websocket.leave("everyone")
            online = _online(room)
            wsgiws.group(f"room:{room}").send_json(
                {"type": "leave", "name": websocket.name, "online": online}
            )
            wsgiws.group("everyone").send_json({"type": "rooms", "rooms": _room_counts()})


def page(ws_port: int | None = None) -> str:
    """Return the chat page; with ``ws_port`` its script connects to that port
    instead of the page's own (for the separate-port mode)."""
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    if ws_port is not None:
        html = html.replace('data-ws-port=""', f'data-ws-port="{int(ws_port)}"', 1)
    return html


def parse_args(description: str) -> argparse.Namespace:
    """The examples' command line: ``--host`` and ``--port`` (or ``$PORT``)."""
    import os

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("PORT", "8000")), help="port (8000)"
    )
    return parser.parse_args()
