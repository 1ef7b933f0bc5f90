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
character), garbage, all cut at random points.
"""

from __future__ import annotations

import itertools
import os
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import Request

from wsgiws.mask import apply_mask_python
from wsgiws.protocol import ServerProtocol

from .helpers import close_payload, frame

DIFF = settings(
    max_examples=3000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LIMIT = 1000


def opened(*, fast: bool, limit: int | None) -> ServerProtocol:
    """An accepted protocol, with or without the fast path."""
    server = ServerProtocol(max_message_size=limit, fast=fast)
    client = WSConnection(ConnectionType.CLIENT)
    server.receive_data(client.send(Request(host="h", target="/")))
    server.accept()
    server.data_to_send()
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


def same_behaviour(pieces: list[bytes], limit: int | None) -> None:
    fast = opened(fast=True, limit=limit)
    reference = opened(fast=False, limit=limit)
    for piece in pieces:
        got = fast.receive_data(memoryview(bytearray(piece)))
        want = reference.receive_data(piece)
        assert got == want
        assert fast.data_to_send() == reference.data_to_send()
        assert fast.state is reference.state
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
