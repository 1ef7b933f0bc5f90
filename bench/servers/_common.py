"""Helpers shared by the echo/broadcast servers under test (stdlib only)."""

from __future__ import annotations

import argparse
import sys

# Large enough for the 1 MiB scenario on every server under test.
MAX_MESSAGE_SIZE = 2**21


def make_parser(description: str) -> argparse.ArgumentParser:
    """The options every server under test takes; a server may add its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--deflate",
        action="store_true",
        help="negotiate permessage-deflate when the client offers it (default: never)",
    )
    return parser


def parse_args(
    description: str, parser: argparse.ArgumentParser | None = None
) -> argparse.Namespace:
    parser = parser or make_parser(description)
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("benchmark servers only listen on loopback")
    return args


def announce_port(port: int) -> None:
    """Tell the orchestrator where we listen: the port alone on one line."""
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()


def parse_go(message: str | bytes) -> tuple[int, int, int] | None:
    """Parse ``go <round> <n> <size>``; None when ``message`` is not a go."""
    if isinstance(message, bytes) or not message.startswith("go "):
        return None
    _, round_id, n, size = message.split()
    return int(round_id) & 0xFF, min(int(n), 100_000), max(5, min(int(size), 2**20))


def broadcast_payloads(round_id: int, n: int, size: int) -> list[bytes]:
    """The n binary messages of one broadcast round: byte 0 is the round id."""
    pad = b"x" * (size - 5)
    return [bytes((round_id,)) + i.to_bytes(4, "big") + pad for i in range(n)]
