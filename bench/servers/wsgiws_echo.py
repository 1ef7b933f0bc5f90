"""Echo + broadcast server on ``wsgiws.Server`` (the library under test).

Uses only the public API: ``Namespace``, ``BaseWSClass``, ``Server`` and, for
the broadcast scenario, ``websocket.join`` + ``wsgiws.group(...).send``.

``--inline`` serves the same handlers in wsgiws's opt-in inline mode (handlers
that never block, run on the loop thread), where this version of wsgiws has
one: see :func:`inline_mode`. ``--check-inline`` prints what it found as JSON
and exits.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
import threading
from typing import Any

from _common import (
    MAX_MESSAGE_SIZE,
    announce_port,
    broadcast_payloads,
    make_parser,
    parse_args,
    parse_go,
)

import wsgiws

#: Above the 10,000 connections of the memory scenario (the default limit is 10,000).
MAX_CONNECTIONS = 65_536

#: The spellings of an inline-mode switch looked for, in order: a class attribute of
#: ``BaseWSClass`` that a handler sets to True, or a ``Server`` option.
INLINE_CLASS_ATTRIBUTES = ("inline", "run_inline", "non_blocking", "nonblocking")
INLINE_SERVER_OPTIONS = ("inline", "inline_handlers")


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


def inline_mode() -> tuple[str, wsgiws.Registry | None, dict[str, Any]] | str:
    """How this wsgiws runs handlers inline: ``(description, registry, server
    options)`` to serve ``Echo`` and ``Bcast`` that way, or the reason it cannot."""
    for name in INLINE_CLASS_ATTRIBUTES:
        if hasattr(wsgiws.BaseWSClass, name):
            registry = wsgiws.Registry()
            for pattern, handler in ((r"/echo", Echo), (r"/bcast", Bcast)):
                inline = type(f"Inline{handler.__name__}", (handler,), {name: True})
                registry.add(pattern, inline)
            return f"class attribute BaseWSClass.{name} = True", registry, {}
    fields = {f.name for f in dataclasses.fields(wsgiws.Options)}
    for name in INLINE_SERVER_OPTIONS:
        if name in fields:
            return f"server option {name}=True", None, {name: True}
    return (
        f"wsgiws {wsgiws.__version__} has no inline handler mode (looked for a"
        f" BaseWSClass attribute {' / '.join(INLINE_CLASS_ATTRIBUTES)} and a Server"
        f" option {' / '.join(INLINE_SERVER_OPTIONS)})"
    )


def main() -> None:
    parser = make_parser(__doc__ or "")
    parser.add_argument("--inline", action="store_true", help="run the handlers inline")
    parser.add_argument(
        "--check-inline", action="store_true", help="print the inline mode found as JSON, exit"
    )
    args = parse_args(__doc__ or "", parser)
    mode = inline_mode()
    if args.check_inline:
        if isinstance(mode, str):
            print(json.dumps({"inline": None, "reason": mode}))
        else:
            print(json.dumps({"inline": mode[0], "reason": ""}))
        return
    registry: wsgiws.Registry | None = None
    options: dict[str, Any] = {}
    if args.inline:
        if isinstance(mode, str):
            sys.exit(f"wsgiws_echo: --inline: {mode}")
        _, registry, options = mode
    serve_until_signal(
        wsgiws.Server(
            host=args.host,
            port=args.port,
            registry=registry,
            max_message_size=MAX_MESSAGE_SIZE,
            compression="deflate" if args.deflate else None,
            max_connections=MAX_CONNECTIONS,
            **options,
        )
    )


if __name__ == "__main__":
    main()
