"""The wsproto patch of wsgiws.deflate: fail loudly if wsproto changes under it.

``BoundedDeflate`` bounds decompression by reading private attributes of wsproto's
``PerMessageDeflate``. If a wsproto release renamed one, the override could stop
applying and silently remove the limit: these tests say so by name instead.
"""

from __future__ import annotations

import inspect
import zlib
from importlib.metadata import version

from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode, RsvBits

from wsgiws.deflate import PRIVATE_ATTRIBUTES, BoundedDeflate, between_frames

WHY = (
    "wsgiws.deflate.BoundedDeflate bounds decompression with these attributes; "
    "adapt src/wsgiws/deflate.py to wsproto {version} and update the wsproto pin "
    "in pyproject.toml"
)


def test_wsproto_still_has_the_private_attributes_the_patch_uses() -> None:
    """Every private attribute BoundedDeflate reads exists on a fresh PerMessageDeflate."""
    extension = PerMessageDeflate()
    missing = [name for name in PRIVATE_ATTRIBUTES if not hasattr(extension, name)]
    assert not missing, (
        f"wsproto {version('wsproto')} has no PerMessageDeflate.{', '.join(missing)}: "
        + WHY.format(version=version("wsproto"))
    )


def test_wsproto_still_calls_the_overridden_hooks() -> None:
    """The two hooks BoundedDeflate overrides are still PerMessageDeflate's own."""
    for name in ("frame_inbound_payload_data", "frame_inbound_complete", "frame_inbound_header"):
        assert name in vars(PerMessageDeflate), (
            f"wsproto {version('wsproto')} no longer defines "
            f"PerMessageDeflate.{name}: " + WHY.format(version=version("wsproto"))
        )
    source = inspect.getsource(PerMessageDeflate.frame_inbound_header)
    for name in ("_inbound_compressed", "_inbound_is_compressible", "_decompressor"):
        assert name in source, (
            f"wsproto {version('wsproto')}'s frame_inbound_header no longer sets "
            f"{name}: " + WHY.format(version=version("wsproto"))
        )


def compress(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-15)
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def inflate(extension: BoundedDeflate, payload: bytes) -> bytes | CloseReason:
    """Drive the extension the way wsproto's frame decoder does, for one frame."""
    proto = FrameProtocol(client=False, extensions=[extension])
    result = extension.frame_inbound_header(
        proto,
        Opcode.TEXT,
        RsvBits(True, False, False),
        len(payload),
    )
    assert result == RsvBits(True, False, False)
    data = extension.frame_inbound_payload_data(proto, payload)
    if isinstance(data, CloseReason):
        return data
    tail = extension.frame_inbound_complete(proto, True)
    if isinstance(tail, CloseReason):
        return tail
    return data + (tail or b"")


def negotiated(max_message_size: int | None) -> BoundedDeflate:
    extension = BoundedDeflate(max_message_size)
    extension.accept("permessage-deflate")
    return extension


def test_the_patch_bounds_inflation_through_wsproto_hooks() -> None:
    """Called as wsproto calls it, the extension inflates up to the limit, not past it."""
    assert inflate(negotiated(1000), compress(b"a" * 1000)) == b"a" * 1000
    assert inflate(negotiated(1000), compress(b"a" * 1001)) == CloseReason.MESSAGE_TOO_BIG
    assert inflate(negotiated(None), compress(b"a" * 5000)) == b"a" * 5000
    assert inflate(negotiated(1000), b"\xff\xff garbage") == (
        CloseReason.INVALID_FRAME_PAYLOAD_DATA
    )


def test_client_no_context_takeover_starts_each_message_afresh() -> None:
    """With client_no_context_takeover the decompressor is dropped after each message."""
    extension = BoundedDeflate(1000)
    extension.accept("permessage-deflate; client_no_context_takeover")
    for _ in range(2):
        assert inflate(extension, compress(b"b" * 500)) == b"b" * 500


def test_wsproto_still_has_the_parser_state_between_frames_reads() -> None:
    """between_frames reads wsproto's parser state through these private attributes."""
    connection = Connection(ConnectionType.SERVER)
    proto = getattr(connection, "_proto", None)
    assert proto is not None, "wsproto's Connection has no _proto: " + WHY.format(
        version=version("wsproto")
    )
    for name in ("_frame_decoder", "_message_decoder"):
        assert hasattr(proto, name), f"wsproto's FrameProtocol has no {name}: " + WHY.format(
            version=version("wsproto")
        )
    decoder = proto._frame_decoder
    assert hasattr(decoder.buffer, "buffer") and hasattr(decoder, "header")
    assert hasattr(proto._message_decoder, "opcode")
    ws = WSConnection(ConnectionType.SERVER)
    assert not between_frames(ws)  # no connection before the handshake
