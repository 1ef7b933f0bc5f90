"""Broadcast and chat server on ``wsgiws.Server``, with the Redis group backend.

Run several of these on one port (``--reuse-port``, SO_REUSEPORT) and one Redis: the
kernel spreads the load generator's clients over them, as over gunicorn workers. A
``go`` received by any of them sends to group ``g`` with ``wsgiws.group("g").send``:
its own members get each message directly, the others' through Redis. Without
``--redis`` it is one process with the default in-memory backend.

Speaks the load generator's protocols (``bench/loadgen/loadgen.mjs``):

* ``/bcast``: ``join`` joins group ``g`` and is answered ``joined``;
  ``go <round> <n> <size>`` sends the round's n binary messages to the group;
* ``/chat``: ``join <group>`` joins that group and is answered ``joined``; each
  binary message is then sent to the sender's group, the sender included.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "servers"))

from _common import MAX_MESSAGE_SIZE
from wsgiws_echo import serve_until_signal  # also registers /echo and /bcast

import wsgiws
from wsgiws.redis_groups import RedisBackend


@wsgiws.Namespace(r"/chat")
class Chat(wsgiws.BaseWSClass):
    @classmethod
    def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
        if isinstance(message, str):
            if message.startswith("join "):
                websocket.room = message[5:]
                websocket.join(message[5:])
                websocket.send("joined")
            return
        wsgiws.group(websocket.room).send(message)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--redis", help="redis:// URL (loopback); none: one process alone")
    parser.add_argument("--reuse-port", action="store_true")
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("benchmark servers only listen on loopback")
    backend = None
    if args.redis:
        backend = RedisBackend(args.redis)
        wsgiws.set_group_backend(backend)
        if not backend.wait_ready(30):
            raise SystemExit("broadcast_server: not subscribed to Redis within 30 s")
    server = wsgiws.Server(
        host=args.host,
        port=args.port,
        max_message_size=MAX_MESSAGE_SIZE,
        reuse_port=args.reuse_port,
        ping_interval=None,  # the load generator reads frames raw and answers no ping
    )
    try:
        serve_until_signal(server)
    finally:
        if backend is not None:
            stats = backend.stats
            backend.close()
            print(f"broadcast_server: {json.dumps(stats.as_dict())}", file=sys.stderr)


if __name__ == "__main__":
    main()
