"""permessage-deflate with bounded inflation, and faster masking: the one place
wsproto is patched.

Why this module exists
----------------------

wsproto's :class:`~wsproto.extensions.PerMessageDeflate` inflates a compressed
message without any limit, so a frame of a few kilobytes could expand to gigabytes
before any size check ran (a "zip bomb"; invariant 4: every buffer is bounded).
wsproto offers no hook for a limit, so :class:`BoundedDeflate` overrides its inbound
extension callbacks and, to do so, reads and writes three **private** attributes of
``PerMessageDeflate``:

* ``_decompressor`` — the :func:`zlib.decompressobj` of the current message;
* ``_inbound_compressed`` — whether the current message has RSV1 set;
* ``_inbound_is_compressible`` — whether its opcode may be compressed.

The same override fixes a wsproto 1.3.2 bug: its hooks run for control frames too,
and a control frame between the fragments of a compressed message made it forget
that the message is compressed (1007 on a valid message). Control frames now pass
through untouched; which frame is being read comes from the public ``header``
attribute of wsproto's frame decoder.

Payload masking
---------------

wsproto's frame parser and serialiser mask and unmask payloads with
``wsproto.frame_protocol.XorMaskerSimple``, a module-level class looked up each time
a frame header is parsed or a client frame is built; wsproto offers no hook to
choose another. Importing this module replaces it with :class:`wsgiws.mask.Masker`,
which computes the same bytes in C when the accelerator is built
(``wsgiws._speedups``) and otherwise in pure Python (faster than wsproto's on small
frames, on a par on large ones). The replacement is process-wide: every wsproto
connection in the process (wsgiws's own, ``wsgiws.testing``'s client, or one of the
application's) masks through it, with the same results. :data:`MASKER_PATCHED` tells
whether it is in place; if a wsproto release renamed the class, wsproto is left as
it is (correct, only slower) and ``tests/test_mask.py`` fails with a message naming
this module.

:func:`between_frames` tells the protocol's fast path when wsproto's parser is
between frames (no byte buffered, no fragmented message begun), which needs the
private ``_proto`` of wsproto's ``Connection`` and the ``_frame_decoder`` and
``_message_decoder`` of its ``FrameProtocol``.

This is the only module of wsgiws that touches a private attribute of wsproto (or
of h11), or replaces anything in it. The supported wsproto versions are pinned in
``pyproject.toml`` (upper bound included), and ``tests/test_deflate.py`` fails with
a message naming this module if a wsproto release renames or removes any of these
attributes: without that check, an upgrade could silently drop the decompression
limit.
"""

from __future__ import annotations

import zlib
from typing import Final

import wsproto.frame_protocol
from wsproto import WSConnection
from wsproto.connection import Connection
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits

from .mask import Masker

__all__ = [
    "MASKER_PATCHED",
    "ORIGINAL_MASKER",
    "PRIVATE_ATTRIBUTES",
    "BoundedDeflate",
    "between_frames",
]

#: wsproto's own masker class, or ``None`` if this wsproto has none by that name.
ORIGINAL_MASKER: Final = getattr(wsproto.frame_protocol, "XorMaskerSimple", None)

if ORIGINAL_MASKER is not None:
    wsproto.frame_protocol.XorMaskerSimple = Masker  # type: ignore[misc,assignment]

#: ``True`` when wsproto masks and unmasks through :class:`wsgiws.mask.Masker`.
MASKER_PATCHED: Final = getattr(wsproto.frame_protocol, "XorMaskerSimple", None) is Masker

#: The parameters a client may put in a permessage-deflate offer (RFC 7692 §7).
OFFER_PARAMETERS: Final = (
    "server_no_context_takeover",
    "client_no_context_takeover",
    "server_max_window_bits",
    "client_max_window_bits",
)


def valid_offer(offer: str) -> bool:
    """Tell whether a permessage-deflate offer may be accepted (RFC 7692 §7).

    Every parameter must be one of :data:`OFFER_PARAMETERS`, at most once; the
    ``*_no_context_takeover`` ones take no value, ``server_max_window_bits`` takes
    a window size from 8 to 15 and ``client_max_window_bits`` takes one or none
    (a quoted value, which §7.1 allows, is declined: wsproto cannot parse it).
    wsproto accepts unknown parameters and raises for a window size that is not a
    number; an offer that fails here is declined instead (§5: a server MUST
    decline an offer with an unknown parameter or an invalid value).
    """
    seen: set[str] = set()
    for param in offer.split(";")[1:]:
        name, eq, value = (part.strip() for part in param.partition("="))
        if name not in OFFER_PARAMETERS or name in seen:
            return False
        seen.add(name)
        window = value.isdigit() and value[0] != "0" and 8 <= int(value) <= 15
        if name.endswith("no_context_takeover"):
            if eq:
                return False
        elif (eq or name == "server_max_window_bits") and not window:
            return False
    return True


#: The private attributes of ``PerMessageDeflate`` that :class:`BoundedDeflate` uses.
PRIVATE_ATTRIBUTES: Final = ("_decompressor", "_inbound_compressed", "_inbound_is_compressible")


class BoundedDeflate(PerMessageDeflate):
    """permessage-deflate whose inflation is bounded by ``max_message_size``.

    Each message may inflate to at most ``max_message_size`` bytes; past that the
    connection fails with 1009. The server always asks for
    ``server_no_context_takeover``, which lets a broadcast compress a message once
    for every member (:class:`~wsgiws.protocol.PreparedMessage`).
    """

    def __init__(self, max_message_size: int | None) -> None:
        super().__init__(server_no_context_takeover=True)
        self.max_message_size = max_message_size
        # Bytes inflated so far for the current message.
        self._inflated = 0

    # wsproto 1.3.2 runs the inbound hooks for control frames too and, on a control
    # frame's completion, forgets that the data message it interrupted is compressed:
    # the next continuation frame would then be taken for plain bytes (1007 on a valid
    # message). Control frames are never compressed (RFC 7692 §6.1), so here they
    # pass through without touching the state of the message around them.

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        if opcode.iscontrol():
            return CloseReason.PROTOCOL_ERROR if rsv.rsv1 else RsvBits(False, False, False)
        return super().frame_inbound_header(proto, opcode, rsv, payload_length)

    @staticmethod
    def _in_control_frame(proto: FrameDecoder | FrameProtocol) -> bool:
        header = getattr(proto, "header", None)
        return header is not None and header.opcode.iscontrol()

    def accept(self, offer: str) -> bool | str | None:
        # wsproto asks every offer in turn and lets a later one override what an
        # earlier one set: the first acceptable offer wins (RFC 7692 §5.1).
        if self.enabled() or not valid_offer(offer):
            return None
        return super().accept(offer)

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        assert self._decompressor is not None
        try:
            if self.max_message_size is None:
                out = self._decompressor.decompress(data)
            else:
                left = self.max_message_size - self._inflated
                out = self._decompressor.decompress(data, left + 1)
                if len(out) > left:
                    return CloseReason.MESSAGE_TOO_BIG
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(out)
        return out

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if (
            not self._inbound_compressed
            or not self._inbound_is_compressible
            or self._in_control_frame(proto)
        ):
            return data
        return self._inflate(bytes(data))

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if not fin or self._in_control_frame(proto):
            return None
        compressed = self._inbound_compressed and self._inbound_is_compressible
        self._inbound_compressed = None
        if not compressed:
            self._inflated = 0
            return None
        out = self._inflate(b"\x00\x00\xff\xff")
        self._inflated = 0
        if self.client_no_context_takeover:
            self._decompressor = None
        return out

    def inflate_message(self, payload: bytes) -> bytes | CloseReason:
        """Inflate a whole message that arrived as one compressed frame.

        For the protocol's fast path: ``payload`` is the unmasked payload of a
        final text or binary frame with RSV1 set that arrived whole while wsproto
        was between messages (:func:`between_frames`). This does what wsproto's
        calls of the inbound hooks above do for such a frame, in the same order on
        the same decompressor (created with the negotiated client window, kept
        between messages unless ``client_no_context_takeover``), so frames parsed
        here and frames parsed by wsproto may alternate: the payload, then the
        empty block that ends the message, each inflation bounded by
        ``max_message_size``. Returns the message, or the close code wsproto's
        hooks would fail the frame with (1007 for corrupt data, 1009 past the
        bound); after a failure the connection is done and the state is not reused.
        """
        if self._decompressor is None:
            self._decompressor = zlib.decompressobj(-self.client_max_window_bits)
        out = self._inflate(payload)
        if isinstance(out, CloseReason):
            return out
        end = self._inflate(b"\x00\x00\xff\xff")
        self._inflated = 0
        if isinstance(end, CloseReason):
            return end
        if self.client_no_context_takeover:
            self._decompressor = None
        return out + end if end else out


def between_frames(ws: WSConnection | Connection) -> bool:
    """True when wsproto's parser holds no byte and no message is in progress.

    Then a complete, unfragmented data frame means the same to wsproto whoever
    parses it: :meth:`wsgiws.protocol.ServerProtocol.receive_data` parses such frames
    itself (tested against wsproto in ``tests/test_fast_path.py``).
    """
    connection = ws.connection if isinstance(ws, WSConnection) else ws
    if connection is None:  # before the handshake is accepted
        return False
    proto = connection._proto
    decoder = proto._frame_decoder
    return (
        not decoder.buffer.buffer
        and decoder.header is None
        and proto._message_decoder.opcode is None
    )
