"""The changes wsgiws makes to wsproto at import time, all in this module.

wsproto is the protocol's reference, and wsgiws changes none of its behaviour; it only
swaps in faster equivalents where wsproto offers no hook:

* **Payload masking.** wsproto's frame parser and serialiser mask and unmask
  payloads with ``wsproto.frame_protocol.XorMaskerSimple``, a module-level class
  looked up each time a frame header is parsed or a client frame is built. It is
  replaced by :class:`wsgiws.mask.Masker`, which computes the same bytes in C when
  the accelerator is built (``wsgiws._speedups``) and otherwise in pure Python,
  faster than wsproto's for every size. The replacement is process-wide: any wsproto
  connection in the process (wsgiws's own, ``wsgiws.testing``'s client, or one of
  the application's) masks through it, with the same results.

:data:`PATCHED` tells whether the replacement is in place. If a wsproto release
renames what is replaced here, wsproto is left as it is (correct, only slower) and
``tests/test_mask.py`` fails with a message naming this module.
"""

from __future__ import annotations

from typing import Final

import wsproto.frame_protocol

from .mask import Masker

__all__ = ["ORIGINAL_MASKER", "PATCHED"]

#: wsproto's own masker class, or ``None`` if this wsproto has none by that name.
ORIGINAL_MASKER: Final = getattr(wsproto.frame_protocol, "XorMaskerSimple", None)

if ORIGINAL_MASKER is not None:
    wsproto.frame_protocol.XorMaskerSimple = Masker  # type: ignore[misc,assignment]

#: ``True`` when wsproto masks and unmasks through :class:`wsgiws.mask.Masker`.
PATCHED: Final = getattr(wsproto.frame_protocol, "XorMaskerSimple", None) is Masker
