"""Broadcast server on ``wsgiws.Server`` with the Redis group backend.

Run several of these on one port (``--reuse-port``, SO_REUSEPORT) and one Redis: the
kernel spreads the load generator's clients over them, as over gunicorn workers. A
``go`` received by any of them sends to group ``g`` with ``wsgiws.group("g").send``:
its own members get each message directly, the others' through Redis.

Speaks the load generator's broadcast protocol (``bench/loadgen/loadgen.mjs``):
``join`` joins group ``g`` and is answered ``joined``; ``go <round> <n> <size>``
sends the round's n binary messages to the group.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "servers"))

from _common import MAX_MESSAGE_SIZE
from wsgiws_echo import serve_until_signal  # also registers /echo and /bcast

import wsgiws
from wsgiws.redis_groups import RedisBackend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--redis", required=True, help="redis:// URL (loopback)")
    parser.add_argument("--reuse-port", action="store_true")
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("benchmark servers only listen on loopback")
    backend = RedisBackend(args.redis)
    wsgiws.set_group_backend(backend)
    if not backend.wait_ready(30):
        raise SystemExit("broadcast_server: not subscribed to Redis within 30 s")
    server = wsgiws.Server(
        host=args.host,
        port=args.port,
        max_message_size=MAX_MESSAGE_SIZE,
        reuse_port=args.reuse_port,
    )
    try:
        serve_until_signal(server)
    finally:
        backend.close()
        if backend.lost_messages:
            print(f"broadcast_server: {backend.lost_messages} message(s) lost", file=sys.stderr)


if __name__ == "__main__":
    main()
