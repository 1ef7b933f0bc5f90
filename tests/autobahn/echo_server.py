"""The echo server Autobahn|Testsuite's fuzzing client tests (``nox -s autobahn``).

    python tests/autobahn/echo_server.py PORT

Every path echoes every message. Limits are raised to what the suite sends (section
9 goes up to 16 MiB messages); compression is on, as by default; keepalive pings are
off so that they do not mix with the cases' frames.
"""

from __future__ import annotations

import contextlib
import sys

import wsgiws

registry = wsgiws.Registry()


@wsgiws.Namespace(r"/.*", registry=registry)
class Echo(wsgiws.BaseWSClass):
    @classmethod
    def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
        # The client may close before the echo goes out (the closing cases).
        with contextlib.suppress(wsgiws.ConnectionClosed):
            websocket.send(message)


def main() -> None:
    port = int(sys.argv[1])
    with wsgiws.Server(
        host="127.0.0.1",
        port=port,
        registry=registry,
        origins=None,  # the fuzzing client sends an Origin of its own
        max_message_size=64 * 2**20,
        write_limit=256 * 2**20,
        max_queue=64,
        ping_interval=None,
    ) as server:
        print(server.port, flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
