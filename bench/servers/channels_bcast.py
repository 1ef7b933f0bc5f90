"""Broadcast server on Django Channels with ``channels_redis``: the field's reference.

    python bench/servers/channels_bcast.py --redis redis://127.0.0.1:PORT/0 [--port N]

A Daphne server (one process) whose consumer speaks the load generator's broadcast
protocol: ``join`` adds the connection to group ``g`` (``group_add``) and answers
``joined``; ``go <round> <n> <size>`` sends the n messages with ``group_send``, each
of which the layer carries through Redis to every member's consumer. The layer's
``capacity`` and the Redis client's ``socket_timeout`` are raised so that it neither
drops messages nor times out under this load. Needs ``pip install "channels[daphne]"
channels-redis``.
"""

from __future__ import annotations

import argparse
import socket
import sys
from typing import Any

import django
from _common import announce_port, broadcast_payloads, parse_go
from django.conf import settings


def configure(redis_url: str) -> None:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-only",
        ALLOWED_HOSTS=["*"],
        INSTALLED_APPS=["channels"],
        ASGI_APPLICATION="channels_bcast.application",
        CHANNEL_LAYERS={
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {
                    "hosts": [
                        {"address": redis_url, "socket_timeout": 120, "max_connections": 4000}
                    ],
                    "capacity": 1_000_000,
                    "expiry": 120,
                    "group_expiry": 3600,
                },
            }
        },
    )
    django.setup()


def make_application() -> Any:
    from channels.generic.websocket import AsyncWebsocketConsumer
    from channels.routing import ProtocolTypeRouter, URLRouter
    from django.urls import path

    class Bcast(AsyncWebsocketConsumer):  # type: ignore[misc]
        async def receive(
            self, text_data: str | None = None, bytes_data: bytes | None = None
        ) -> None:
            if text_data == "join":
                await self.channel_layer.group_add("g", self.channel_name)
                await self.send(text_data="joined")
            elif text_data is not None and (go := parse_go(text_data)) is not None:
                for payload in broadcast_payloads(*go):
                    await self.channel_layer.group_send("g", {"type": "bcast", "data": payload})

        async def bcast(self, event: dict[str, Any]) -> None:
            await self.send(bytes_data=event["data"])

    return ProtocolTypeRouter({"websocket": URLRouter([path("bcast", Bcast.as_asgi())])})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--redis", required=True)
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("benchmark servers only listen on loopback")
    configure(args.redis)
    application = make_application()
    from daphne.server import Server

    port = args.port
    if not port:
        with socket.socket() as probe:
            probe.bind((args.host, 0))
            port = probe.getsockname()[1]
    server = Server(
        application,
        endpoints=[f"tcp:port={port}:interface={args.host}"],
        ready_callable=lambda: announce_port(port),
        verbosity=0,
        ping_interval=3600,
        websocket_handshake_timeout=30,
    )
    sys.stdout.flush()
    server.run()


if __name__ == "__main__":
    main()
