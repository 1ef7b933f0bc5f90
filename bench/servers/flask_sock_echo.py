"""Echo + broadcast server on flask-sock (the WSGI peer) under Werkzeug's threaded
server: a thread per connection, and simple-websocket's own reader thread per
connection.

simple-websocket has no permessage-deflate and flask-sock no broadcast: a
broadcast round sends each message to every member in turn from the thread
that received ``go``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from typing import Any

from _common import (
    MAX_MESSAGE_SIZE,
    announce_port,
    broadcast_payloads,
    parse_args,
    parse_go,
)
from flask import Flask
from flask_sock import ConnectionClosed, Sock
from werkzeug.serving import make_server

app = Flask(__name__)
app.config["SOCK_SERVER_OPTIONS"] = {"max_message_size": MAX_MESSAGE_SIZE}
sock = Sock(app)

MEMBERS: set[Any] = set()
MEMBERS_LOCK = threading.Lock()


@sock.route("/echo")
def echo(ws: Any) -> None:
    while True:
        ws.send(ws.receive())


@sock.route("/bcast")
def bcast(ws: Any) -> None:
    try:
        while True:
            message = ws.receive()
            if message == "join":
                with MEMBERS_LOCK:
                    MEMBERS.add(ws)
                ws.send("joined")
            elif (go := parse_go(message)) is not None:
                with MEMBERS_LOCK:
                    members = list(MEMBERS)
                for payload in broadcast_payloads(*go):
                    for member in members:
                        with contextlib.suppress(ConnectionClosed, OSError):
                            member.send(payload)
    finally:
        with MEMBERS_LOCK:
            MEMBERS.discard(ws)


def main() -> None:
    args = parse_args(__doc__ or "")
    if args.deflate:
        raise SystemExit("flask_sock_echo: simple-websocket has no permessage-deflate")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = make_server(args.host, args.port, app, threaded=True)
    announce_port(server.server_port)
    # Exit at once: a graceful shutdown waits on every connection's threads.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
