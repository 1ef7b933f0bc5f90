"""Echo + broadcast server on ``websockets.asyncio.server.serve`` (peer)."""

from __future__ import annotations

import asyncio

from _common import (
    MAX_MESSAGE_SIZE,
    announce_port,
    broadcast_payloads,
    parse_args,
    parse_go,
)
from websockets.asyncio.server import ServerConnection, broadcast, serve

MEMBERS: set[ServerConnection] = set()


async def handler(websocket: ServerConnection) -> None:
    path = websocket.request.path if websocket.request else "/"
    if path == "/echo":
        async for message in websocket:
            await websocket.send(message)
    elif path == "/bcast":
        try:
            async for message in websocket:
                if message == "join":
                    MEMBERS.add(websocket)
                    await websocket.send("joined")
                elif (go := parse_go(message)) is not None:
                    for payload in broadcast_payloads(*go):
                        broadcast(MEMBERS, payload)
        finally:
            MEMBERS.discard(websocket)
    else:
        await websocket.close(1008, "unknown path")


async def main() -> None:
    args = parse_args(__doc__ or "")
    async with serve(
        handler,
        args.host,
        args.port,
        max_size=MAX_MESSAGE_SIZE,
        compression="deflate" if args.deflate else None,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        announce_port(port)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
