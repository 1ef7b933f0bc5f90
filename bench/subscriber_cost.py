"""CPU cost per group message: local fan-out against receiving it from Redis.

    python bench/subscriber_cost.py [--messages N] [--clients 400] [--groups 40]

One process, one ``wsgiws.Server`` on loopback and a throw-away ``redis-server``;
400 raw WebSocket clients in 40 groups of 10 (they read nothing: what they get fits
in the socket buffers). Two measures, each over N messages of 64 B spread evenly
over the groups:

* ``local``: ``wsgiws.group(name).send(payload)`` in a loop; the CPU time of the
  calling thread per message (encode once, queue to 10 members);
* ``from Redis``: the same messages, published by another Redis client as another
  process would (pipelined, with a foreign origin); the CPU time of the backend's
  subscriber thread per message (read, parse, skip none, queue to 10 members),
  from ``/proc/self/task/<tid>/stat``.

The loop thread's writing is the same in both and is not counted. The machine may
be shared: the figures are indicative, the ratio is what matters.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent / "src"))

import broadcast  # noqa: E402

import redis  # noqa: E402
import wsgiws  # noqa: E402
from wsgiws.groups import Envelope  # noqa: E402
from wsgiws.redis_groups import RedisBackend, pack  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def thread_cpu(native_id: int) -> float:
    stat = Path(f"/proc/self/task/{native_id}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def raw_client(port: int, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("handshake failed")
        data += chunk
    if not data.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(data.split(b"\r\n", 1)[0].decode())
    return sock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=400)
    parser.add_argument("--groups", type=int, default=40)
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is required")
    joined = threading.Semaphore(0)
    registry = wsgiws.Registry()

    @wsgiws.Namespace(r"/g/(?P<name>\w+)", registry=registry)
    class Member(wsgiws.BaseWSClass):
        @classmethod
        def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
            websocket.join(websocket.match["name"])
            joined.release()

    workdir = tempfile.TemporaryDirectory()
    server_redis = broadcast.RedisServer(binary, workdir.name)
    backend = RedisBackend(server_redis.url)
    wsgiws.set_group_backend(backend)
    if not backend.wait_ready(30):
        raise SystemExit("not connected to Redis")
    names = [f"room{i}" for i in range(args.groups)]
    payload = b"x" * 64
    try:
        with wsgiws.Server(host="127.0.0.1", port=0, registry=registry) as server:
            assert server.port is not None
            clients = [
                raw_client(server.port, f"/g/{names[i % args.groups]}") for i in range(args.clients)
            ]
            for _ in clients:
                joined.acquire(timeout=30)
            # Local fan-out, on this thread.
            start = time.thread_time()
            for i in range(args.messages):
                wsgiws.group(names[i % args.groups]).send(payload)
            local = (time.thread_time() - start) / args.messages
            assert backend.flush(60)
            # From Redis: another "process" publishes; the subscriber thread delivers.
            subscriber = backend._subscriber
            assert subscriber is not None and subscriber.native_id is not None
            before_received = backend.stats.received
            datas = [
                (
                    backend.group_channel(names[i % args.groups]),
                    pack(
                        "elsewhere:1:bench",
                        i // args.groups + 1,
                        Envelope("group", names[i % args.groups], payload),
                    ),
                )
                for i in range(args.messages)
            ]
            other = redis.Redis.from_url(server_redis.url)
            cpu0 = thread_cpu(subscriber.native_id)
            t0 = time.monotonic()
            for k in range(0, len(datas), 1000):
                pipe = other.pipeline(transaction=False)
                for channel, data in datas[k : k + 1000]:
                    pipe.publish(channel, data)
                pipe.execute()
            deadline = time.monotonic() + 120
            while backend.stats.received - before_received < args.messages:
                if time.monotonic() > deadline:
                    raise SystemExit("the subscriber did not receive everything in 120 s")
                time.sleep(0.01)
            wall = time.monotonic() - t0
            remote = (thread_cpu(subscriber.native_id) - cpu0) / args.messages
            other.close()
            for sock in clients:
                sock.close()
    finally:
        backend.close()
        server_redis.stop()
        workdir.cleanup()
    print(
        f"{args.clients} clients in {args.groups} groups, {args.messages} messages of 64 B\n"
        f"local fan-out (sending thread):     {local * 1e6:8.1f} µs CPU per message\n"
        f"from Redis (subscriber thread):     {remote * 1e6:8.1f} µs CPU per message"
        f"  ({args.messages / wall:,.0f} msg/s received)\n"
        f"ratio from Redis / local:           {remote / local:8.2f}"
    )


if __name__ == "__main__":
    main()
