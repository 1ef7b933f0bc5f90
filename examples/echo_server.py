"""A WebSocket echo server in a plain script: no WSGI application, no asyncio.

    python examples/echo_server.py                  # ws://127.0.0.1:8001/echo
    python -m websockets ws://127.0.0.1:8001/echo   # in another terminal, type lines

``wsgiws.Server`` runs its loop on a background thread; ``serve_forever()`` keeps the
script alive until Ctrl-C, which closes every connection with code 1001.
"""

from __future__ import annotations

import argparse
import contextlib

import wsgiws


@wsgiws.Namespace(r"/echo")
class Echo(wsgiws.BaseWSClass):
    """Greet each client, then send every message back."""

    @classmethod
    def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
        websocket.send("welcome: every message you send comes back")

    @classmethod
    def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
        websocket.send(message)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8001, help="port (default: 8001)")
    args = parser.parse_args()
    with wsgiws.Server(host=args.host, port=args.port) as server:
        print(f"Echo server on ws://{args.host}:{server.port}/echo (Ctrl-C to stop)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()


if __name__ == "__main__":
    main()
