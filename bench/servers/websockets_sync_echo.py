"""Echo + broadcast server on ``websockets.sync.server.serve`` (threaded peer).

The sync API has no ``broadcast()``; the broadcast round sends to each member
in turn from the thread that received ``go`` (one frame encoding per send).
"""

from __future__ import annotations

import contextlib
import threading

from _common import (
    MAX_MESSAGE_SIZE,
    announce_port,
    broadcast_payloads,
    parse_args,
    parse_go,
)
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

MEMBERS: set[ServerConnection] = set()
MEMBERS_LOCK = threading.Lock()


def handler(websocket: ServerConnection) -> None:
    path = websocket.request.path if websocket.request else "/"
    if path == "/echo":
        for message in websocket:
            websocket.send(message)
    elif path == "/bcast":
        try:
            for message in websocket:
                if message == "join":
                    with MEMBERS_LOCK:
                        MEMBERS.add(websocket)
                    websocket.send("joined")
                elif (go := parse_go(message)) is not None:
                    with MEMBERS_LOCK:
                        members = list(MEMBERS)
                    for payload in broadcast_payloads(*go):
                        for member in members:
                            with contextlib.suppress(ConnectionClosed):
                                member.send(payload)
        finally:
            with MEMBERS_LOCK:
                MEMBERS.discard(websocket)
    else:
        websocket.close(1008, "unknown path")


def main() -> None:
    args = parse_args(__doc__ or "")
    with serve(
        handler,
        args.host,
        args.port,
        max_size=MAX_MESSAGE_SIZE,
        compression="deflate" if args.deflate else None,
    ) as server:
        announce_port(server.socket.getsockname()[1])
        server.serve_forever()


if __name__ == "__main__":
    main()
