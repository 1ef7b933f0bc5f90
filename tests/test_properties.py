"""Property-based tests of the input path: generated handshakes and frame streams.

Hypothesis builds valid and invalid opening handshakes and frame streams (random
splits, control frames between fragments, compressed and not, a violation at the
end or none) and checks the server's answer against what the RFCs allow
(:mod:`tests.protocol_oracle`), and against the answer each input must get.
"""

from __future__ import annotations

import base64
import dataclasses
import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsgiws.protocol import CloseReceived, Failed, HandshakeRequest, MessageReceived, PongReceived

from .helpers import close_payload, frame
from .protocol_oracle import check_handshake, check_stream, pieces

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
MAX_SIZE = 2048

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- handshakes --------------------------------------------------------------------------

#: Each mutation of a valid request and the status it must get.
MUTATIONS: dict[str, int] = {
    "http/1.0": 505,
    "http/2.0": 505,
    "post": 405,
    "no-host": 400,
    "empty-host": 400,
    "no-key": 400,
    "no-upgrade": 400,
    "no-connection": 400,
    "no-version": 400,
    "version-8": 426,
    "short-key": 400,
    "long-key": 400,
    "not-base64-key": 400,
    "two-keys": 400,
    "two-origins": 400,
    "two-versions": 400,
    "body": 400,
    "huge-header": 431,
}


def build_request(mutations: set[str], key_bytes: bytes, extra: list[tuple[str, str]]) -> bytes:
    method = b"POST" if "post" in mutations else b"GET"
    version = b"HTTP/1.1"
    if "http/1.0" in mutations:
        version = b"HTTP/1.0"
    elif "http/2.0" in mutations:
        version = b"HTTP/2.0"
    key = base64.b64encode(key_bytes)
    if "short-key" in mutations:
        key = base64.b64encode(key_bytes[:8])
    elif "long-key" in mutations:
        key = base64.b64encode(key_bytes * 2)
    elif "not-base64-key" in mutations:
        key = b"!" * 24
    headers: list[tuple[bytes, bytes]] = []
    if "no-host" not in mutations:
        headers.append((b"Host", b"" if "empty-host" in mutations else b"example.com"))
    if "no-upgrade" not in mutations:
        headers.append((b"Upgrade", b"websocket"))
    if "no-connection" not in mutations:
        headers.append((b"Connection", b"keep-alive, Upgrade"))
    if "no-key" not in mutations:
        headers.append((b"Sec-WebSocket-Key", key))
        if "two-keys" in mutations:
            headers.append((b"Sec-WebSocket-Key", key))
    if "no-version" not in mutations:
        headers.append((b"Sec-WebSocket-Version", b"8" if "version-8" in mutations else b"13"))
        if "two-versions" in mutations:
            headers.append((b"Sec-WebSocket-Version", b"13"))
    if "two-origins" in mutations:
        headers += [(b"Origin", b"http://a.test"), (b"Origin", b"http://b.test")]
    if "body" in mutations:
        headers.append((b"Content-Length", b"2"))
    if "huge-header" in mutations:
        headers.append((b"X-Huge", b"a" * 5000))
    headers += [(k.encode(), v.encode()) for k, v in extra]
    lines = [method + b" /chat?room=1 " + version] + [k + b": " + v for k, v in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + (b"{}" if "body" in mutations else b"")


token = st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12).map(lambda s: "x-" + s)
header_value = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=0, max_size=40
).map(str.strip)


@PROPERTY
@given(
    mutations=st.sets(st.sampled_from(sorted(MUTATIONS)), max_size=3),
    key_bytes=st.binary(min_size=16, max_size=16),
    extra=st.lists(st.tuples(token, header_value), max_size=4),
    sizes=st.lists(st.integers(1, 300), min_size=1, max_size=8),
)
def test_generated_handshakes_get_their_answer(
    mutations: set[str], key_bytes: bytes, extra: list[tuple[str, str]], sizes: list[int]
) -> None:
    """A valid request is accepted however it is cut; a broken one gets the status of
    one of its faults, with a body."""
    data = build_request(mutations, key_bytes, extra)
    answer = check_handshake(pieces(data, sizes))
    if not mutations:
        assert isinstance(answer, HandshakeRequest), answer
        assert answer.path == "/chat" and answer.query_string == "room=1"
    else:
        assert isinstance(answer, Failed), (mutations, answer)
        assert answer.status in {MUTATIONS[m] for m in mutations}, (mutations, answer)


@PROPERTY
@given(data=st.binary(max_size=600), sizes=st.lists(st.integers(1, 64), min_size=1, max_size=5))
def test_arbitrary_bytes_as_handshake(data: bytes, sizes: list[int]) -> None:
    """Any bytes get an allowed answer, or none while the head is incomplete."""
    check_handshake(pieces(data, sizes))


@PROPERTY
@given(
    prefix=st.sampled_from([b"GET / HTTP/1.1\r\n", b"GET / HTTP/1.1\r\nHost: h\r\n", b""]),
    data=st.binary(max_size=300),
)
def test_mangled_heads(prefix: bytes, data: bytes) -> None:
    """A request line followed by garbage headers never escapes as an exception."""
    check_handshake([prefix + data + b"\r\n\r\n"])


# -- frame streams ----------------------------------------------------------------------


@dataclasses.dataclass
class Message:
    data: str | bytes
    fragments: int
    compressed: bool
    # Control frames after each fragment but the last: (opcode, payload).
    controls: list[list[tuple[int, bytes]]]


#: Each violation that may end a stream, and the close code it must get.
VIOLATIONS: dict[str, int] = {
    "reserved-opcode": 1002,
    "reserved-control-opcode": 1002,
    "rsv2": 1002,
    "rsv3": 1002,
    "rsv1-on-control": 1002,
    "unmasked": 1002,
    "continuation-first": 1002,
    "new-message-inside": 1002,
    "big-ping": 1002,
    "fragmented-ping": 1002,
    "bad-close-code": 1002,
    "one-byte-close": 1002,
    "invalid-utf8": 1007,
    "close-reason-not-utf8": 1007,
    "oversized-header": 1009,
    "oversized-fragments": 1009,
}


def violation_bytes(name: str) -> bytes:
    return {
        "reserved-opcode": frame(0x3, b"x"),
        "reserved-control-opcode": frame(0xB, b"x"),
        "rsv2": frame(TEXT, b"x", rsv=2),
        "rsv3": frame(TEXT, b"x", rsv=1),
        "rsv1-on-control": frame(PING, b"x", rsv=4),
        "unmasked": frame(BINARY, b"x", mask=False),
        "continuation-first": frame(CONT, b"x"),
        "new-message-inside": frame(TEXT, b"a", fin=False) + frame(TEXT, b"b"),
        "big-ping": frame(PING, b"p" * 126),
        "fragmented-ping": frame(PING, b"p", fin=False),
        "bad-close-code": frame(CLOSE, close_payload(1005)),
        "one-byte-close": frame(CLOSE, b"\x03"),
        "invalid-utf8": frame(TEXT, b"ok\xc0\xaf"),
        "close-reason-not-utf8": frame(CLOSE, close_payload(1000, b"\xff")),
        "oversized-header": frame(BINARY, b"", length=MAX_SIZE + 1),
        "oversized-fragments": frame(BINARY, b"x" * MAX_SIZE, fin=False)
        + frame(CONT, b"", length=1),
    }[name]


control = st.tuples(st.sampled_from([PING, PONG]), st.binary(max_size=125))


@st.composite
def messages(draw: st.DrawFn, deflate: bool) -> Message:
    data: str | bytes = draw(st.one_of(st.text(max_size=300), st.binary(max_size=MAX_SIZE // 2)))
    fragments = draw(st.integers(1, 4))
    return Message(
        data=data,
        fragments=fragments,
        compressed=deflate and draw(st.booleans()),
        controls=[draw(st.lists(control, max_size=2)) for _ in range(fragments - 1)],
    )


def encode(message: Message, compressor: zlib._Compress) -> bytes:
    payload = message.data.encode() if isinstance(message.data, str) else message.data
    opcode = TEXT if isinstance(message.data, str) else BINARY
    if message.compressed:
        payload = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
        payload = payload[:-4]
    n = message.fragments
    step = -(-len(payload) // n) if payload else 0
    parts = [payload[i * step : (i + 1) * step] for i in range(n)]
    out = b""
    for i, part in enumerate(parts):
        last = i == n - 1
        out += frame(
            opcode if i == 0 else CONT,
            part,
            fin=last,
            rsv=4 if message.compressed and i == 0 else 0,
        )
        if not last:
            out += b"".join(frame(op, p) for op, p in message.controls[i])
    return out


Stream = tuple[bool, list[Message], str | None, list[int]]


@st.composite
def streams(draw: st.DrawFn) -> Stream:
    deflate = draw(st.booleans())
    sent = draw(st.lists(messages(deflate), max_size=5))
    ending = draw(st.one_of(st.none(), st.just("close"), st.sampled_from(sorted(VIOLATIONS))))
    sizes = draw(st.lists(st.integers(1, 700), min_size=1, max_size=6))
    return deflate, sent, ending, sizes


@PROPERTY
@given(streams(), st.booleans())
def test_generated_streams_get_their_answer(stream: Stream, hold: bool) -> None:
    """Messages arrive whole and in order, pings are answered, pongs reported, however
    the bytes are cut; a violation at the end gets its close code after them."""
    deflate, sent, ending, sizes = stream
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    data = b"".join(encode(m, compressor) for m in sent)
    if ending == "close":
        data += frame(CLOSE, close_payload(1000, b"bye"))
    elif ending is not None:
        data += violation_bytes(ending)
    events, read = check_stream(
        pieces(data, sizes), max_message_size=MAX_SIZE, deflate=deflate, hold=hold
    )
    received = [e.data for e in events if isinstance(e, MessageReceived)]
    assert received == [m.data for m in sent]
    controls = [c for m in sent for cs in m.controls for c in cs]
    pongs = [e.payload for e in events if isinstance(e, PongReceived)]
    assert pongs == [p for op, p in controls if op == PONG]
    answered = [e.payload for e in read if hasattr(e, "payload")]
    assert answered == [p for op, p in controls if op == PING]
    if ending is None:
        assert not any(isinstance(e, (Failed, CloseReceived)) for e in events)
    elif ending == "close":
        assert events[-1] == CloseReceived(1000, "bye")
    else:
        assert isinstance(events[-1], Failed), (ending, events[-1])
        assert events[-1].code == VIOLATIONS[ending], (ending, events[-1])


@PROPERTY
@given(
    deflate=st.booleans(),
    data=st.binary(max_size=2000),
    sizes=st.lists(st.integers(1, 300), min_size=1, max_size=5),
    hold=st.booleans(),
)
def test_arbitrary_bytes_after_handshake(
    deflate: bool, data: bytes, sizes: list[int], hold: bool
) -> None:
    """Any bytes after the handshake get allowed events and bounded memory."""
    check_stream(pieces(data, sizes), max_message_size=512, deflate=deflate, hold=hold)


@PROPERTY
@given(
    length=st.integers(0, 2**63 - 1),
    opcode=st.sampled_from([TEXT, BINARY]),
    deflate=st.booleans(),
)
def test_any_declared_length(length: int, opcode: int, deflate: bool) -> None:
    """A header alone: over the limit fails with 1009 at once; otherwise it waits."""
    head = frame(opcode, b"", length=length)
    events, _ = check_stream([head], max_message_size=MAX_SIZE, deflate=deflate)
    if length > MAX_SIZE:
        assert len(events) == 1 and isinstance(events[0], Failed) and events[0].code == 1009
    elif length == 0 and opcode == BINARY:
        assert events == [MessageReceived(b"")]
    elif length == 0:
        assert events == [MessageReceived("")]
    else:
        assert events == []
