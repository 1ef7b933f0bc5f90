"""Payload masking speed: wsgiws's C accelerator, its pure-Python fallback, and
wsproto's own masker (what wsgiws replaces), in µs per call for a few sizes; then
the time wsproto's frame parser takes to read one 1 MiB client frame in 64 KiB
reads with each masker (the server's share of a large message, without sockets).

    python bench/mask.py [--repeat N]

Each figure is the best of ``--repeat`` timeit runs, the contenders taking turns
(the machine's noise only ever adds time). One-line equivalents for a single figure:

    python -m timeit -s "import os; from wsgiws.mask import apply_mask as f; \\
        d = os.urandom(1 << 20); k = os.urandom(4)" "f(d, k)"
    python -m timeit -s "import os; from wsgiws.mask import apply_mask_python as f; \\
        d = os.urandom(1 << 20); k = os.urandom(4)" "f(d, k)"
"""

from __future__ import annotations

import argparse
import os
import timeit
from collections.abc import Callable

import wsproto.frame_protocol
from wsproto.frame_protocol import FrameProtocol

from wsgiws.deflate import ORIGINAL_MASKER
from wsgiws.mask import IMPLEMENTATION, Masker, apply_mask, apply_mask_python

SIZES = [16, 125, 1024, 4096, 65536, 1 << 20, 4 << 20]
READ = 65536


class PythonMasker(Masker):
    """wsgiws's masker on the pure-Python fallback, whatever runs by default."""

    __slots__ = ()

    def process(self, data: bytes | bytearray | memoryview) -> bytes:
        out = apply_mask_python(data, self._key)
        turn = len(out) & 3
        if turn:
            self._key = self._key[turn:] + self._key[:turn]
        return out


def parse(wire: bytes) -> int:
    """Feed ``wire`` to a server-side wsproto frame parser in ``READ``-byte reads."""
    server = FrameProtocol(client=False, extensions=[])
    size = 0
    for start in range(0, len(wire), READ):
        server.receive_bytes(wire[start : start + READ])
        for frame in server.received_frames():
            size += len(frame.payload)
    return size


def parser_table(repeat: int) -> None:
    """Milliseconds to parse one 1 MiB masked frame, per masker, best of ``repeat``."""
    payload = os.urandom(1 << 20)
    wire = bytes(FrameProtocol(client=True, extensions=[]).send_data(payload, fin=True))
    maskers: dict[str, object] = {"C": Masker, "Python": PythonMasker}
    if ORIGINAL_MASKER is not None:
        maskers["wsproto"] = ORIGINAL_MASKER
    best = dict.fromkeys(maskers, float("inf"))
    installed = wsproto.frame_protocol.XorMaskerSimple
    try:
        for _ in range(repeat):
            for name, masker in maskers.items():  # in turns: noise hits all alike
                wsproto.frame_protocol.XorMaskerSimple = masker  # type: ignore[misc,assignment]
                took = min(timeit.repeat(lambda: parse(wire), number=5, repeat=3)) / 5
                best[name] = min(best[name], took)
    finally:
        wsproto.frame_protocol.XorMaskerSimple = installed  # type: ignore[misc]
    print(f"\nwsproto parsing one 1 MiB client frame in {READ}-byte reads, best of {repeat}:")
    for name, took in best.items():
        print(f"{name:>9} {took * 1e3:8.2f} ms  {best.get('wsproto', took) / took:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    key = os.urandom(4)
    contenders: dict[str, Callable[[bytes], object]] = {
        "C": lambda data: apply_mask(data, key),
        "Python": lambda data: apply_mask_python(data, key),
    }
    if ORIGINAL_MASKER is not None:
        masker = ORIGINAL_MASKER
        contenders["wsproto"] = lambda data: masker(bytearray(key)).process(data)
    print(f"apply_mask runs: {IMPLEMENTATION}")
    print(f"{'size':>9} " + " ".join(f"{name + ' µs':>12}" for name in contenders))
    for size in SIZES:
        data = os.urandom(size)
        number = max(3, 2_000_000 // (size + 200))
        best = dict.fromkeys(contenders, float("inf"))
        for _ in range(args.repeat):
            for name, function in contenders.items():  # in turns: noise hits all alike
                took = timeit.timeit(lambda f=function, d=data: f(d), number=number) / number
                best[name] = min(best[name], took)
        print(f"{size:>9} " + " ".join(f"{took * 1e6:12.2f}" for took in best.values()))
    parser_table(args.repeat)


if __name__ == "__main__":
    main()
