"""WebSocket payload masking (RFC 6455 §5.3), in C when built, else in pure Python.

Every frame a client sends is masked: its payload is XORed with a 4-byte key, and the
server XORs it again to read it. For large messages this is where a pure-Python
WebSocket stack spends most of its time, so wsgiws ships a small C extension,
``wsgiws._speedups``, compiled at install time when a C compiler is present (an
install without one still succeeds and runs the fallback below).

Which one runs:

* :data:`ACCELERATED` is ``True`` when :func:`apply_mask` is the C version;
  :data:`IMPLEMENTATION` says which, and why not C (``wsgiws.server`` also logs it at
  DEBUG level when a server starts).
* Setting the environment variable ``WSGIWS_NO_SPEEDUPS`` to anything but ``""`` or
  ``"0"`` before wsgiws is imported forces the pure-Python version.

The pure-Python version picks between two methods by size, as measured on CPython
3.11 (``bench/mask.py``): up to 1 KiB one big-integer XOR (the lowest fixed cost),
above it ``bytes.translate`` with one 256-byte table per key byte on the four strides
of every 64 KiB chunk (about 1 ms per MiB, against about 0.02 ms in C).

:class:`Masker` is a drop-in replacement for wsproto's ``XorMaskerSimple``:
:mod:`wsgiws.deflate` makes wsproto use it, so frames parsed by wsproto are
unmasked here too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Final

__all__ = [
    "ACCELERATED",
    "IMPLEMENTATION",
    "Masker",
    "apply_mask",
    "apply_mask_in_place",
    "apply_mask_python",
]

#: Below this payload size the big-integer XOR beats the four ``translate`` calls.
INT_XOR_MAX: Final = 1024
#: The pure-Python version translates large payloads in chunks of this size (a
#: multiple of 4, so the key stays in phase), which keeps its copies in cache.
CHUNK: Final = 65536

#: ``_XOR_TABLES[k]`` maps every byte ``b`` to ``b ^ k``.
_XOR_TABLES: Final = [bytes(b ^ k for b in range(256)) for k in range(256)]


def _flat(data: object) -> bytes | bytearray | memoryview:
    """``data`` as a flat sequence of bytes (copied if it is not one)."""
    view = memoryview(data)  # type: ignore[arg-type]  # TypeError for a non-buffer
    if view.format in ("B", "b", "c") and view.c_contiguous and view.ndim == 1:
        return view.cast("B") if view.format != "B" else view
    return view.tobytes()


def _key(mask: object) -> bytes:
    key = bytes(memoryview(mask))  # type: ignore[arg-type]  # TypeError for a non-buffer
    if len(key) != 4:
        raise ValueError(f"mask must be 4 bytes long, not {len(key)}")
    return key


def _translate(data: bytes | bytearray | memoryview, key: bytes) -> bytearray:
    out = bytearray(data)
    a, b, c, d = (_XOR_TABLES[k] for k in key)
    out[0::4] = out[0::4].translate(a)
    out[1::4] = out[1::4].translate(b)
    out[2::4] = out[2::4].translate(c)
    out[3::4] = out[3::4].translate(d)
    return out


def apply_mask_python(data: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    """Return ``data`` XORed with the 4-byte ``mask`` repeated: the pure-Python version.

    Raises:
        TypeError: ``data`` or ``mask`` is not a bytes-like object.
        ValueError: ``mask`` is not 4 bytes long.
    """
    if type(mask) is not bytes or len(mask) != 4:
        mask = _key(mask)
    if type(data) is not bytes and type(data) is not bytearray:
        data = _flat(data)
    size = len(data)
    if size <= INT_XOR_MAX:
        whole, rest = divmod(size, 4)
        stream = int.from_bytes(mask * whole + mask[:rest], "big")
        return (int.from_bytes(data, "big") ^ stream).to_bytes(size, "big")
    if size <= CHUNK:
        return bytes(_translate(data, mask))
    view = memoryview(data)
    return b"".join([_translate(view[i : i + CHUNK], mask) for i in range(0, size, CHUNK)])


def apply_mask_in_place(buffer: bytearray, mask: bytes, start: int, end: int) -> None:
    """XOR ``buffer[start:end]`` in place with ``mask``, in the phase of offset ``start``.

    The key is laid from offset 0 of ``buffer`` (``buffer[j]`` is XORed with
    ``mask[j % 4]``), so a payload can be unmasked piece by piece as it arrives,
    each piece while it is still in the processor's cache. Pure Python
    (``bytes.translate`` on the four strides of 64 KiB chunks): what the protocol
    uses for large frames when :data:`ACCELERATED` is false.
    """
    tables = [_XOR_TABLES[k] for k in mask]
    for low in range(start, end, CHUNK):
        high = min(low + CHUNK, end)
        for first in range(low, min(low + 4, high)):
            buffer[first:high:4] = buffer[first:high:4].translate(tables[first & 3])


def _disabled() -> bool:
    return os.environ.get("WSGIWS_NO_SPEEDUPS", "") not in ("", "0")


Apply = Callable[[bytes | bytearray | memoryview, bytes], bytes]


def _choose() -> tuple[Apply, str]:
    if _disabled():
        return apply_mask_python, "Python (WSGIWS_NO_SPEEDUPS is set)"
    try:
        from ._speedups import apply_mask as c_apply_mask
    except ImportError:  # not built: no C compiler at install time
        return apply_mask_python, "Python (the C extension wsgiws._speedups is not built)"
    return c_apply_mask, "C (wsgiws._speedups)"


_chosen, _implementation = _choose()

#: The function that runs: the C version when built and not disabled, else
#: :func:`apply_mask_python`. ``apply_mask(data, mask) -> bytes``.
apply_mask: Final = _chosen

#: ``True`` when :func:`apply_mask` runs in C.
ACCELERATED: Final[bool] = apply_mask is not apply_mask_python
#: Which implementation runs, and why not C when it does not.
IMPLEMENTATION: Final[str] = _implementation


class Masker:
    """Mask or unmask one frame's payload, fed in pieces; a drop-in for wsproto's
    ``XorMaskerSimple``.

    :meth:`process` returns ``bytes`` (wsproto's returns a ``bytearray``: every
    caller in wsproto accepts both, and ``bytes`` saves wsproto a copy).
    """

    __slots__ = ("_key",)

    def __init__(self, masking_key: bytes | bytearray) -> None:
        self._key = bytes(masking_key)

    def process(self, data: bytes | bytearray | memoryview) -> bytes:
        """Return the next piece of the payload, masked (or unmasked)."""
        out = apply_mask(data, self._key)
        # The next piece continues where this one stopped in the key.
        turn = len(out) & 3
        if turn:
            self._key = self._key[turn:] + self._key[:turn]
        return out
