"""The protocol's fast path for data frames against wsproto: a differential test.

:class:`~wsgiws.protocol.ServerProtocol` parses whole unfragmented data frames itself
when wsproto is between frames (``fast=True``, the default) and leaves everything
else to wsproto. Fed the same byte stream in the same pieces, a protocol with the
fast path and one without (every byte through wsproto, the reference) must return
the same events for every piece — messages, pongs, close frames, failures with
their codes and reasons — write the same bytes and end in the same state. The
streams are random and adversarial: valid messages of every length encoding,
fragments, control frames inside fragmented messages, reserved bits, unmasked
frames, non-minimal and oversized lengths, invalid UTF-8 (also cut inside a
character), garbage, all cut at random points. Large binary frames, which the fast
path receives into a buffer of their own (``receive_buffer``/``received_into``, the
way the transport reads them), are cut at random points too, in both ways of
unmasking them (as they arrive, the pure-Python way, or at the end, the C way), with
``max_message_size`` around their sizes.

With permessage-deflate negotiated the fast path also inflates whole compressed
frames, on the decompressor wsproto uses for the frames it parses: compressed
streams (a real client-side compressor, with and without context takeover, every
negotiated window) mix frames of both kinds, fragments, control frames, corrupt
deflate data, messages that inflate past the limit and RSV1 where it is not allowed.
"""

from __future__ import annotations

import itertools
import os
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import Request
from wsproto.extensions import PerMessageDeflate

import wsgiws.protocol
from wsgiws.mask import apply_mask_python
from wsgiws.protocol import (
    FRAME_BUFFER_MIN,
    BufferPool,
    Event,
    Failed,
    MessageReceived,
    ServerProtocol,
    State,
)

from .helpers import close_payload, frame

DIFF = settings(
    max_examples=3000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LIMIT = 1000


@dataclass(frozen=True)
class Deflate:
    """What the client offers: permessage-deflate with these parameters."""

    no_context_takeover: bool = False
    window_bits: int = 15


def opened(
    *, fast: bool, limit: int | None, deflate: Deflate | None = None, hold: bool = False
) -> ServerProtocol:
    """An accepted protocol, with or without the fast path (and permessage-deflate)."""
    server = ServerProtocol(max_message_size=limit, fast=fast, hold_failure_close=hold)
    client = WSConnection(ConnectionType.CLIENT)
    extensions = []
    if deflate is not None:
        extensions.append(
            PerMessageDeflate(
                client_no_context_takeover=deflate.no_context_takeover,
                client_max_window_bits=deflate.window_bits,
            )
        )
    server.receive_data(client.send(Request(host="h", target="/", extensions=extensions)))
    server.accept(compression=deflate is not None)
    server.data_to_send()
    assert (server.deflate_bits is not None) is (deflate is not None)
    return server


def raw_frame(opcode: int, payload: bytes, *, fin: bool, rsv: int, mask: bool, wide: int) -> bytes:
    """A frame whose length may be encoded wider than needed (``wide``: 0, 2 or 8)."""
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    bit = 0x80 if mask else 0
    if wide == 8 or n >= 65536:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    elif wide == 2 or n >= 126:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | n])
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + apply_mask_python(payload, key)


TEXTS = st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))
INVALID_UTF8 = st.sampled_from(
    [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"abc\xe2\x82", b"\xe2"]
)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    kind = draw(
        st.sampled_from(
            ["text", "binary", "big", "text-bad", "fragment", "control", "odd", "garbage"]
        )
    )
    if kind == "garbage":
        return draw(st.binary(max_size=40))
    if kind == "control":
        opcode = draw(st.sampled_from([0x8, 0x9, 0xA]))
        if opcode == 0x8:
            payload = draw(
                st.sampled_from(
                    [
                        b"",
                        close_payload(1000),
                        close_payload(4000, b"bye"),
                        close_payload(1000, b"\xff"),
                        b"\x03",
                    ]
                )
            )
        else:
            payload = draw(st.binary(max_size=130))
        return raw_frame(opcode, payload, fin=draw(st.integers(0, 5)) > 0, rsv=0, mask=True, wide=0)
    if kind == "big":
        size = draw(st.sampled_from([LIMIT - 1, LIMIT, LIMIT + 1, 70000]))
        return raw_frame(2, os.urandom(size), fin=True, rsv=0, mask=True, wide=0)
    opcode = {"text": 1, "text-bad": 1, "binary": 2, "fragment": 0, "odd": 0}[kind]
    if kind == "text":
        payload = draw(TEXTS)
    elif kind == "text-bad":
        good = draw(TEXTS)
        payload = good + draw(INVALID_UTF8) + draw(TEXTS)
    else:
        payload = draw(st.binary(max_size=300))
    fin, rsv, mask, wide = True, 0, True, 0
    if kind == "fragment":
        opcode = draw(st.sampled_from([0, 1, 2]))
        fin = draw(st.booleans())
    if kind == "odd":
        opcode = draw(st.integers(0, 15))
        fin = draw(st.booleans())
        rsv = draw(st.integers(0, 7))
        mask = draw(st.booleans())
        wide = draw(st.sampled_from([0, 2, 8]))
    elif draw(st.integers(0, 9)) == 0:
        wide = draw(st.sampled_from([2, 8]))
    return raw_frame(opcode, payload, fin=fin, rsv=rsv, mask=mask, wide=wide)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """``data`` cut at the given points (taken modulo its length)."""
    if not data:
        return []
    marks = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(marks) if b > a]


def feed_direct(proto: ServerProtocol, piece: bytes) -> list[Event]:
    """Feed ``piece`` the way the transport reads: into the protocol's frame buffer
    while it offers one, else through ``receive_data``."""
    events: list[Event] = []
    rest = memoryview(piece)
    while rest:
        target = proto.receive_buffer()
        if target is None:
            return events + proto.receive_data(rest)
        size = min(len(target), len(rest))
        target[:size] = rest[:size]
        target.release()
        events += proto.received_into(size)
        rest = rest[size:]
    return events


def same_behaviour(
    pieces: list[bytes],
    limit: int | None,
    deflate: Deflate | None = None,
    hold: bool = False,
    *,
    direct: bool = False,
) -> None:
    fast = opened(fast=True, limit=limit, deflate=deflate, hold=hold)
    reference = opened(fast=False, limit=limit, deflate=deflate, hold=hold)
    for piece in pieces:
        if direct:
            got = feed_direct(fast, piece)
        else:
            got = fast.receive_data(memoryview(bytearray(piece)))
        want = reference.receive_data(piece)
        assert got == want
        assert fast.data_to_send() == reference.data_to_send()
        assert fast.state is reference.state
        assert fast.failure_pending is reference.failure_pending
    assert fast.close_failed() == reference.close_failed()
    assert fast.data_to_send() == reference.data_to_send()
    assert fast.receive_eof() == reference.receive_eof()


@DIFF
@given(
    stream=st.lists(frames(), max_size=12),
    points=st.lists(st.integers(0, 10**6), max_size=8),
    limit=st.sampled_from([LIMIT, None]),
)
def test_fast_path_answers_like_wsproto(
    stream: list[bytes], points: list[int], limit: int | None
) -> None:
    same_behaviour(cut(b"".join(stream), points), limit)


@DIFF
@given(data=st.binary(max_size=400), points=st.lists(st.integers(0, 400), max_size=6))
def test_fast_path_on_arbitrary_bytes(data: bytes, points: list[int]) -> None:
    same_behaviour(cut(data, points), LIMIT)


def test_messages_split_byte_by_byte() -> None:
    stream = (
        frame(1, "héllo".encode())
        + frame(2, os.urandom(200))
        + frame(2, os.urandom(70000))
        + frame(1, b"x" * 300)
    )
    same_behaviour([stream[i : i + 1] for i in range(len(stream))], None)
    same_behaviour([stream[:7], stream[7:70000], stream[70000:]], None)
    same_behaviour([stream], None)
    first = len(frame(1, "héllo".encode())) + len(frame(2, b"x" * 200))
    for size in (20, 4000, 30000):
        same_behaviour(
            [stream[:first]] + [stream[i : i + size] for i in range(first, len(stream), size)],
            None,
        )


# -- permessage-deflate ---------------------------------------------------------------


class Compressor:
    """The client's side of permessage-deflate: one compressor for the stream
    (context takeover) or a fresh one per message."""

    def __init__(self, window_bits: int, takeover: bool) -> None:
        self.window_bits = window_bits
        self.takeover = takeover
        self._shared = self._new()

    def _new(self) -> zlib._Compress:
        return zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -self.window_bits)

    def __call__(self, data: bytes) -> bytes:
        compressor = self._shared if self.takeover else self._new()
        out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        assert out.endswith(b"\x00\x00\xff\xff")
        return out[:-4]


@dataclass(frozen=True)
class Message:
    """A data message of a compressed stream, and how to send it."""

    opcode: int  # 1 or 2
    data: bytes
    compressed: bool
    cuts: tuple[int, ...]  # where the (compressed) payload is cut into fragments
    pings: tuple[int, ...]  # after which fragments a ping goes
    corrupt: int | None  # index of a payload byte to flip
    rsv1_on_continuation: bool
    wide: int


@dataclass(frozen=True)
class Raw:
    """Bytes sent as they are (control frames, garbage, hand-made frames)."""

    data: bytes


DEFLATE_TEXTS = st.one_of(
    TEXTS,
    st.text(alphabet="ab {}:,", max_size=600).map(str.encode),  # compresses well
    st.sampled_from([b"", '{"user": "é", "text": "hello there"}'.encode() * 20]),
)


@st.composite
def deflate_items(draw: st.DrawFn) -> Message | Raw:
    kind = draw(st.sampled_from(["message"] * 6 + ["bomb", "bad-text", "control", "rsv1", "raw"]))
    if kind == "control":
        opcode = draw(st.sampled_from([0x8, 0x9, 0xA]))
        payload = close_payload(1000) if opcode == 0x8 else draw(st.binary(max_size=20))
        rsv = 4 if draw(st.integers(0, 3)) == 0 else 0  # RSV1 on a control frame
        return Raw(raw_frame(opcode, payload, fin=True, rsv=rsv, mask=True, wide=0))
    if kind == "rsv1":  # RSV1 data frames that inflate to nothing sensible
        payload = draw(st.binary(max_size=60))
        opcode = draw(st.sampled_from([0, 1, 2]))
        fin = draw(st.booleans())
        rsv = draw(st.sampled_from([4, 4, 4, 5, 6, 2]))
        return Raw(raw_frame(opcode, payload, fin=fin, rsv=rsv, mask=True, wide=0))
    if kind == "raw":
        return Raw(draw(frames()))
    if kind == "bomb":
        data = b"\x00" * draw(st.sampled_from([LIMIT - 1, LIMIT, LIMIT + 1, 20 * LIMIT]))
        opcode = draw(st.sampled_from([1, 2]))
    elif kind == "bad-text":
        data = draw(TEXTS) + draw(INVALID_UTF8) + draw(TEXTS)
        opcode = 1
    else:
        opcode = draw(st.sampled_from([1, 2]))
        data = draw(DEFLATE_TEXTS) if opcode == 1 else draw(st.one_of(DEFLATE_TEXTS, st.binary()))
    fragments = draw(st.sampled_from([1, 1, 1, 1, 2, 3]))
    cuts = tuple(sorted(draw(st.lists(st.integers(0, 600), min_size=fragments - 1))))
    rare = draw(st.integers(0, 19))
    return Message(
        opcode=opcode,
        data=data,
        compressed=draw(st.integers(0, 4)) > 0,
        cuts=cuts,
        pings=tuple(draw(st.lists(st.integers(0, fragments - 1), max_size=2))),
        corrupt=draw(st.integers(0, 10**6)) if rare == 0 else None,
        rsv1_on_continuation=rare == 1,
        wide=draw(st.sampled_from([2, 8])) if rare == 2 else 0,
    )


def deflate_stream(items: list[Message | Raw], compress: Compressor) -> bytes:
    """The bytes of ``items``, messages compressed in order by ``compress``."""
    out = []
    for item in items:
        if isinstance(item, Raw):
            out.append(item.data)
            continue
        payload = compress(item.data) if item.compressed else item.data
        if item.corrupt is not None and payload:
            at = item.corrupt % len(payload)
            payload = payload[:at] + bytes([payload[at] ^ 0x5A]) + payload[at + 1 :]
        marks = [0, *(c % (len(payload) + 1) for c in item.cuts), len(payload)]
        marks.sort()
        last = len(marks) - 2
        for index, (a, b) in enumerate(itertools.pairwise(marks)):
            opcode = item.opcode if index == 0 else 0
            rsv = 4 if (index == 0 and item.compressed) or item.rsv1_on_continuation else 0
            out.append(
                raw_frame(
                    opcode, payload[a:b], fin=index == last, rsv=rsv, mask=True, wide=item.wide
                )
            )
            if index in item.pings:
                out.append(raw_frame(0x9, b"p", fin=True, rsv=0, mask=True, wide=0))
    return b"".join(out)


DEFLATE_OFFERS = st.builds(
    Deflate, no_context_takeover=st.booleans(), window_bits=st.sampled_from([9, 12, 15])
)


# Two halves of 1,250 examples each (one per client_no_context_takeover), so that
# each stays well inside the per-test timeout under coverage on a busy machine.
@pytest.mark.parametrize("no_context_takeover", [False, True])
@settings(DIFF, max_examples=1250)
@given(
    items=st.lists(deflate_items(), max_size=10),
    offer_bits=st.sampled_from([9, 12, 15]),
    takeover=st.booleans(),
    window_bits=st.sampled_from([9, 10, 12, 15]),
    points=st.lists(st.integers(0, 10**5), max_size=8),
    limit=st.sampled_from([LIMIT, None]),
    hold=st.booleans(),
)
def test_fast_path_inflates_like_wsproto(
    no_context_takeover: bool,
    items: list[Message | Raw],
    offer_bits: int,
    takeover: bool,
    window_bits: int,
    points: list[int],
    limit: int | None,
    hold: bool,
) -> None:
    """Compressed streams: the client's compressor may use context takeover where it
    was not negotiated, or a window larger than negotiated (both fail with 1007)."""
    stream = deflate_stream(items, Compressor(window_bits, takeover))
    offer = Deflate(no_context_takeover=no_context_takeover, window_bits=offer_bits)
    same_behaviour(cut(stream, points), limit, offer, hold)


@DIFF
@given(
    data=st.binary(max_size=400),
    points=st.lists(st.integers(0, 400), max_size=6),
    offer=DEFLATE_OFFERS,
)
def test_fast_path_with_deflate_on_arbitrary_bytes(
    data: bytes, points: list[int], offer: Deflate
) -> None:
    same_behaviour(cut(data, points), LIMIT, offer)


def test_decompressor_is_shared_when_frames_alternate() -> None:
    """With context takeover every message refers to the ones before it: whole
    frames (the fast path) and fragmented ones (wsproto) alternate on one
    decompressor, whatever the cuts."""
    compress = Compressor(15, takeover=True)
    texts = [f'{{"seq": {i}, "text": "hello there", "room": "lobby"}}' for i in range(12)]
    stream = b""
    for i, text in enumerate(texts):
        payload = compress(text.encode() * 4)
        if i % 3 == 1:  # fragmented, with a ping in between: wsproto parses it
            stream += raw_frame(1, payload[:5], fin=False, rsv=4, mask=True, wide=0)
            stream += raw_frame(0x9, b"", fin=True, rsv=0, mask=True, wide=0)
            stream += raw_frame(0, payload[5:], fin=True, rsv=0, mask=True, wide=0)
        else:
            stream += raw_frame(1, payload, fin=True, rsv=4, mask=True, wide=0)
    stream += raw_frame(2, b"plain", fin=True, rsv=0, mask=True, wide=0)
    expected = [MessageReceived(text * 4) for text in texts] + [MessageReceived(b"plain")]
    for offer in (Deflate(), Deflate(window_bits=15)):
        server = opened(fast=True, limit=None, deflate=offer)
        assert server.receive_data(stream) == expected
        same_behaviour([stream], None, offer)
        same_behaviour([stream[i : i + 1] for i in range(len(stream))], LIMIT, offer)
        for size in (7, 50, 300):
            same_behaviour(
                [stream[i : i + size] for i in range(0, len(stream), size)], LIMIT, offer
            )


class Counting(ServerProtocol):
    """Counts the bytes that reach wsproto."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.to_wsproto = 0

    def _receive_slow(self, data: bytes) -> list[Event]:
        self.to_wsproto += len(data)
        return super()._receive_slow(data)


def test_whole_compressed_frames_take_the_fast_path() -> None:
    """Whole compressed (and plain) data frames never reach wsproto; a fragmented
    message does, and the frames after it take the fast path again."""
    server = Counting(max_message_size=LIMIT)
    client = WSConnection(ConnectionType.CLIENT)
    server.receive_data(
        client.send(Request(host="h", target="/", extensions=[PerMessageDeflate()]))
    )
    server.accept(compression=True)
    compress = Compressor(15, takeover=True)
    whole = raw_frame(1, compress(b"x" * 500), fin=True, rsv=4, mask=True, wide=0)
    plain = raw_frame(2, b"y" * 200, fin=True, rsv=0, mask=True, wide=0)
    assert server.receive_data(whole + plain) == [
        MessageReceived("x" * 500),
        MessageReceived(b"y" * 200),
    ]
    assert server.to_wsproto == 0
    payload = compress(b"z" * 300)
    fragmented = raw_frame(2, payload[:3], fin=False, rsv=4, mask=True, wide=0) + raw_frame(
        0, payload[3:], fin=True, rsv=0, mask=True, wide=0
    )
    assert server.receive_data(fragmented) == [MessageReceived(b"z" * 300)]
    assert server.to_wsproto == len(fragmented)
    again = raw_frame(1, compress(b"x" * 500), fin=True, rsv=4, mask=True, wide=0)
    assert server.receive_data(again) == [MessageReceived("x" * 500)]
    assert server.to_wsproto == len(fragmented)


@pytest.mark.parametrize("size", [LIMIT, LIMIT + 1])
def test_fast_path_bounds_inflation(size: int) -> None:
    """A compressed frame inflating past max_message_size fails with wsproto's 1009."""
    server = opened(fast=True, limit=LIMIT, deflate=Deflate())
    stream = raw_frame(2, Compressor(15, False)(b"\x00" * size), fin=True, rsv=4, mask=True, wide=0)
    events = server.receive_data(stream)
    if size == LIMIT:
        assert events == [MessageReceived(b"\x00" * LIMIT)]
    else:
        assert events == [
            Failed(1009, f"message inflates beyond max_message_size of {LIMIT} bytes")
        ]
        assert server.state is State.CLOSED


# -- large frames ---------------------------------------------------------------------


@contextmanager
def unmasking(as_received: bool) -> Iterator[None]:
    """Unmask large frames as their pieces arrive (the pure-Python way) or at the end."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(wsgiws.protocol, "UNMASK_AS_RECEIVED", as_received)
        yield


BIG_LIMIT = 3 * FRAME_BUFFER_MIN
BIG_SIZES = [
    FRAME_BUFFER_MIN - 1,
    FRAME_BUFFER_MIN,
    BIG_LIMIT - 1,
    BIG_LIMIT,
    BIG_LIMIT + 1,
    65536,
    200_000,
]


@st.composite
def big_frames(draw: st.DrawFn) -> bytes:
    """Mostly large binary frames (some over ``BIG_LIMIT``), among other frames."""
    if draw(st.integers(0, 3)) == 0:
        return draw(frames())
    size = draw(st.sampled_from(BIG_SIZES))
    opcode = draw(st.sampled_from([2, 2, 2, 1]))
    wide = 8 if draw(st.integers(0, 9)) == 0 else 0
    return raw_frame(opcode, os.urandom(size), fin=True, rsv=0, mask=True, wide=wide)


@settings(DIFF, max_examples=400)
@given(
    stream=st.lists(big_frames(), min_size=1, max_size=4),
    points=st.lists(st.integers(0, 10**6), max_size=10),
    limit=st.sampled_from([BIG_LIMIT, None]),
    direct=st.booleans(),
    as_received=st.booleans(),
)
def test_large_frames_cut_anywhere(
    stream: list[bytes], points: list[int], limit: int | None, direct: bool, as_received: bool
) -> None:
    with unmasking(as_received):
        same_behaviour(cut(b"".join(stream), points), limit, direct=direct)


BIG_RAW = st.sampled_from(BIG_SIZES).map(
    lambda size: Raw(raw_frame(2, os.urandom(size), fin=True, rsv=0, mask=True, wide=0))
)


@settings(DIFF, max_examples=200)
@given(
    items=st.lists(st.one_of(deflate_items(), BIG_RAW), max_size=6),
    offer=DEFLATE_OFFERS,
    takeover=st.booleans(),
    points=st.lists(st.integers(0, 10**6), max_size=8),
    limit=st.sampled_from([BIG_LIMIT, None]),
    direct=st.booleans(),
    as_received=st.booleans(),
)
def test_large_frames_between_compressed_ones(
    items: list[Message | Raw],
    offer: Deflate,
    takeover: bool,
    points: list[int],
    limit: int | None,
    direct: bool,
    as_received: bool,
) -> None:
    """With permessage-deflate, large uncompressed binary frames (received into
    their own buffer) among compressed messages leave the shared decompressor alone."""
    stream = deflate_stream(items, Compressor(offer.window_bits, takeover))
    with unmasking(as_received):
        same_behaviour(cut(stream, points), limit, offer, direct=direct)


@pytest.mark.parametrize("as_received", [False, True])
@pytest.mark.parametrize("size", [1, 7, 4096, 65536, 300_000])
def test_large_frames_in_even_pieces(size: int, as_received: bool) -> None:
    stream = frame(2, os.urandom(2**20)) + frame(1, b"hi") + frame(2, os.urandom(70000))
    pieces = [stream[i : i + size] for i in range(0, len(stream), size)]
    if size == 1:
        pieces = [*pieces[:5000], b"".join(pieces[5000:])]  # byte by byte, briefly
    with unmasking(as_received):
        for direct in (False, True):
            for limit in (None, 2**20, 2**20 - 1, 70000):
                same_behaviour(pieces, limit, direct=direct)


def test_frame_buffer_only_once_a_quarter_is_in() -> None:
    """A header alone does not make the server allocate what it announces."""
    wsgiws.protocol.frame_buffers.take(0)  # empty the pool
    proto = opened(fast=True, limit=None)
    payload = os.urandom(400_000)
    data = frame(2, payload)
    quarter = 14 + len(payload) // 4
    assert proto.receive_data(data[: quarter - 1]) == []
    assert proto.receive_buffer() is None  # still in the stash
    assert proto.receive_data(data[quarter - 1 : quarter]) == []
    target = proto.receive_buffer()
    assert target is not None and len(target) == len(data) - quarter
    target[:] = data[quarter:]
    target.release()
    assert proto.received_into(len(data) - quarter) == [MessageReceived(payload)]
    assert proto.receive_buffer() is None


def test_frame_buffer_dropped_when_the_connection_ends() -> None:
    proto = opened(fast=True, limit=None)
    data = frame(2, os.urandom(100_000))
    proto.receive_data(data[:60_000])
    assert proto.receive_buffer() is not None
    proto.connection_lost()
    assert proto.receive_buffer() is None
    assert proto.received_into(10) == []
    assert proto.receive_data(data[60_000:]) == []


def test_buffer_pool_keeps_one_buffer_up_to_its_limit() -> None:
    pool = BufferPool(max_size=1000)
    assert pool.take(1) is None
    first = bytearray(500)
    pool.give(first)
    assert pool.take(400) is first  # reused, though longer than asked
    pool.give(first)
    assert pool.take(600) is None  # too short
    assert pool.take(1) is first  # but kept
    second = bytearray(600)
    pool.give(first)
    pool.give(second)  # longer: replaces it
    pool.give(bytearray(20))  # the pool keeps one
    assert pool.take(1) is second
    assert pool.take(1) is None
    pool.give(bytearray(2000))  # over the limit: dropped
    assert pool.take(1) is None
    pool.give(first)
    assert pool.take(501) is None  # too short: stays
    assert pool.take(500) is first


def test_pooled_buffer_taken_from_the_header_on() -> None:
    """A buffer the pool already holds is used from the frame's header on."""
    pool = wsgiws.protocol.frame_buffers
    pool.take(0)
    pool.give(bytearray(200_000))
    proto = opened(fast=True, limit=None)
    payload = os.urandom(150_000)
    data = frame(2, payload)
    assert proto.receive_data(data[:20]) == []
    target = proto.receive_buffer()
    assert target is not None and len(target) == len(data) - 20
    target.release()
    assert proto.receive_data(data[20:]) == [MessageReceived(payload)]
