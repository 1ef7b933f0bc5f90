"""Payload masking speed: wsgiws's C accelerator, its pure-Python fallback, and
wsproto's own masker (what wsgiws replaces), in µs per call for a few sizes.

    python bench/mask.py [--repeat N]

Each figure is the best of ``--repeat`` timeit runs (the machine's noise only ever
adds time). One-line equivalents for a single figure:

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

from wsgiws.deflate import ORIGINAL_MASKER
from wsgiws.mask import IMPLEMENTATION, apply_mask, apply_mask_python

SIZES = [16, 125, 1024, 4096, 65536, 1 << 20, 4 << 20]


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
        row = []
        for function in contenders.values():
            best = min(
                timeit.repeat(lambda f=function, d=data: f(d), number=number, repeat=args.repeat)
            )
            row.append(f"{best / number * 1e6:12.2f}")
        print(f"{size:>9} " + " ".join(row))


if __name__ == "__main__":
    main()
