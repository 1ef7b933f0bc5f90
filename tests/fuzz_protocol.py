"""Coverage-guided fuzzing of the sans-IO protocol with atheris (libFuzzer).

    python tests/fuzz_protocol.py -max_total_time=60        # or: nox -s fuzz

Each input is cut into a mode, a chunk size and the bytes to feed:

* byte 0, bit 0: the bytes are a request head (handshake) or frames after an
  accepted handshake; bit 1: permessage-deflate negotiated; bit 2: a
  ``max_message_size`` of 256 bytes instead of 4096; bit 3: the close frame of a
  violation held back, as the server does (``hold_failure_close``);
* byte 1: the size of the pieces the bytes are fed in (0: all at once);
* the rest: the bytes.

:func:`check` asserts the invariants of :mod:`tests.protocol_oracle` (allowed
answers only, no exception, bounded memory); any failure is a crash libFuzzer
reports with the input that caused it. ``check`` runs without atheris too: the
test suite feeds it the seeds below and random inputs (tests/test_properties.py).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``tests`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def check(data: bytes) -> None:
    """Feed one fuzzer input to a fresh protocol and check every answer."""
    from tests.protocol_oracle import check_handshake, check_stream, pieces

    if len(data) < 2:
        return
    mode, size, body = data[0], data[1], data[2:]
    chunks = pieces(body, [size] if size else [])
    if mode & 1:
        check_handshake(chunks)
    else:
        check_stream(
            chunks,
            max_message_size=256 if mode & 4 else 4096,
            deflate=bool(mode & 2),
            hold=bool(mode & 8),
        )


def seeds() -> list[bytes]:
    """Inputs that reach every part of the protocol at once, for the fuzzer to mutate."""
    from tests.helpers import close_payload, frame

    request = (
        b"GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    stream = (
        frame(0x1, b"hello", fin=False)
        + frame(0x9, b"ping")
        + frame(0x0, b" world")
        + frame(0x2, b"\x00\x01")
        + frame(0xA, b"pong")
        + frame(0x8, close_payload(1000, b"bye"))
    )
    compressed = frame(0x1, bytes.fromhex("f248cdc9c90700"), rsv=4)  # "Hello"
    return [
        b"\x01\x00" + request,
        b"\x01\x07" + request,
        b"\x00\x00" + stream,
        b"\x00\x03" + stream,
        b"\x02\x00" + compressed + stream,
        b"\x04\x00" + frame(0x2, b"", length=10_000),
        b"\x08\x00" + frame(0x1, b"before") + frame(0x3, b"reserved") + frame(0x1, b"after"),
    ]


def main() -> None:
    import atheris

    with atheris.instrument_imports():
        import h11  # noqa: F401
        import wsproto  # noqa: F401

        import tests.protocol_oracle  # noqa: F401
        import wsgiws.protocol  # noqa: F401

    args = list(sys.argv)
    if not any(not a.startswith("-") for a in args[1:]):
        # No corpus directory given: start from the seeds in a temporary one.
        corpus = tempfile.mkdtemp(prefix="wsgiws-fuzz-")
        for index, seed in enumerate(seeds()):
            Path(corpus, f"seed-{index}").write_bytes(seed)
        args.append(corpus)
    atheris.Setup(args, check)
    atheris.Fuzz()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
