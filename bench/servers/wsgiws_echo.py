"""Echo + broadcast server on ``wsgiws.Server`` (the library under test).

Uses only the public API: ``Namespace``, ``BaseWSClass``, ``Server`` and, for
the broadcast scenario, ``websocket.join`` + ``wsgiws.group(...).send``.
"""

from __future__ import annotations

import signal
import threading

from _common import (
    MAX_MESSAGE_SIZE,
    announce_port,
    broadcast_payloads,
    parse_args,
    parse_go,
)

import wsgiws


@wsgiws.Namespace(r"/echo")
class Echo(wsgiws.BaseWSClass):
    @classmethod
    def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
        websocket.send(message)


@wsgiws.Namespace(r"/bcast")
class Bcast(wsgiws.BaseWSClass):
    @classmethod
    def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
        if message == "join":
            websocket.join("g")
            websocket.send("joined")
        elif (go := parse_go(message)) is not None:
            group = wsgiws.group("g")
            for payload in broadcast_payloads(*go):
                group.send(payload)


def serve_until_signal(server: wsgiws.Server) -> None:
    """Start ``server``, announce its port, and close it on SIGTERM or SIGINT."""
    server.start()  # returns once listening; the loop runs on a daemon thread
    port = server.port
    assert port is not None  # we always listen
    announce_port(port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.close()


def main() -> None:
    args = parse_args(__doc__ or "")
    serve_until_signal(
        wsgiws.Server(host=args.host, port=args.port, max_message_size=MAX_MESSAGE_SIZE)
    )


if __name__ == "__main__":
    main()
