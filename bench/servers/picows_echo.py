"""Echo + broadcast server on picows (peer): Cython, frame-level callbacks.

picows hands the application whole frames, not messages; the load generator
sends every message as one frame, so echoing each frame echoes each message.
picows has no permessage-deflate, and no broadcast helper: a broadcast round
sends each message to every member in turn (``transport.send`` queues it
without waiting).
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
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

MEMBERS: set[WSTransport] = set()


class Echo(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        elif frame.msg_type in (WSMsgType.BINARY, WSMsgType.TEXT):
            transport.send(frame.msg_type, frame.get_payload_as_memoryview())


class Bcast(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        elif frame.msg_type is WSMsgType.TEXT:
            text = frame.get_payload_as_utf8_text()
            if text == "join":
                MEMBERS.add(transport)
                transport.send(WSMsgType.TEXT, b"joined")
            elif (go := parse_go(text)) is not None:
                for payload in broadcast_payloads(*go):
                    for member in MEMBERS:
                        member.send(WSMsgType.BINARY, payload)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        MEMBERS.discard(transport)


def listener(request: WSUpgradeRequest) -> WSListener | None:
    if request.path == b"/echo":
        return Echo()
    if request.path == b"/bcast":
        return Bcast()
    return None  # 404


async def main() -> None:
    args = parse_args(__doc__ or "")
    if args.deflate:
        raise SystemExit("picows_echo: picows has no permessage-deflate")
    server = await ws_create_server(listener, args.host, args.port, max_frame_size=MAX_MESSAGE_SIZE)
    announce_port(server.sockets[0].getsockname()[1])
    await server.serve_forever()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
