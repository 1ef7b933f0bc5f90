"""Echo + broadcast server on aiohttp's ``web.WebSocketResponse`` (peer).

aiohttp has no broadcast helper: a broadcast round sends each message to every
member in turn (``send_bytes``), from the handler that received ``go``.
"""

from __future__ import annotations

import asyncio
import contextlib

from _common import (
    MAX_MESSAGE_SIZE,
    announce_port,
    broadcast_payloads,
    parse_args,
    parse_go,
)
from aiohttp import WSMsgType, web

MEMBERS: set[web.WebSocketResponse] = set()
DEFLATE = False


def websocket() -> web.WebSocketResponse:
    # compress=True is aiohttp's default: off unless the scenario measures it.
    return web.WebSocketResponse(max_msg_size=MAX_MESSAGE_SIZE, compress=DEFLATE)


async def echo(request: web.Request) -> web.WebSocketResponse:
    ws = websocket()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type is WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
        elif msg.type is WSMsgType.TEXT:
            await ws.send_str(msg.data)
    return ws


async def bcast(request: web.Request) -> web.WebSocketResponse:
    ws = websocket()
    await ws.prepare(request)
    try:
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            if msg.data == "join":
                MEMBERS.add(ws)
                await ws.send_str("joined")
            elif (go := parse_go(msg.data)) is not None:
                for payload in broadcast_payloads(*go):
                    for member in list(MEMBERS):
                        with contextlib.suppress(ConnectionError):
                            await member.send_bytes(payload)
    finally:
        MEMBERS.discard(ws)
    return ws


async def main() -> None:
    global DEFLATE
    args = parse_args(__doc__ or "")
    DEFLATE = args.deflate
    app = web.Application()
    app.add_routes([web.get("/echo", echo), web.get("/bcast", bcast)])
    runner = web.AppRunner(app, access_log=None, handle_signals=True)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.Server)
    announce_port(server.sockets[0].getsockname()[1])
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
