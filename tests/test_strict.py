"""Strict RFC 6455 / 7692 answers of the sans-IO protocol, requirement by requirement.

The handshake checks of RFC 6455 §4.2.1 beyond wsproto's, the declared frame length
against ``max_message_size`` (§10.4), and control frames inside fragmented compressed
messages (§5.4, RFC 7692 §6). Each test names the answer the server now gives.
"""

from __future__ import annotations

import base64
import zlib

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

from wsgiws.protocol import (
    CloseReceived,
    DeclaredSize,
    Failed,
    HandshakeRequest,
    MessageReceived,
    PongReceived,
    ServerProtocol,
    State,
    compressed_size_bound,
)

from .helpers import close_payload, frame

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's sample: 16 bytes in base64


def client_events(client: WSConnection, data: bytes) -> list[Event]:
    client.receive_data(data)
    return list(client.events())


def answer(data: bytes) -> tuple[list[object], int, bytes]:
    """Feed a raw request; return the server's events, the status and the body."""
    server = ServerProtocol()
    events: list[object] = list(server.receive_data(data))
    out = server.data_to_send()
    head, _, body = out.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return events, status, body


def request(
    *extra: bytes, version: bytes = b"HTTP/1.1", key: bytes = KEY, host: bytes | None = b"h"
) -> bytes:
    lines = [b"GET /chat " + version]
    if host is not None:
        lines.append(b"Host: " + host)
    lines += [
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Key: " + key,
        b"Sec-WebSocket-Version: 13",
        *extra,
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n"


# -- point 2: the handshake ------------------------------------------------------------


def test_valid_request_still_accepted() -> None:
    """The reference request passes every check."""
    [event] = ServerProtocol().receive_data(request())
    assert isinstance(event, HandshakeRequest)


@pytest.mark.parametrize(
    "key",
    [
        base64.b64encode(b"x" * 15),
        base64.b64encode(b"x" * 17),
        b"not base64 at all!!!!!!=",
        b"dGhlIHNhbXBsZSBub25jZQ",  # padding missing
        b"",
        base64.b64encode(b"x" * 16) + b"AAAA",
    ],
    ids=["15-bytes", "17-bytes", "not-base64", "no-padding", "empty", "trailing"],
)
def test_key_must_be_base64_of_16_bytes(key: bytes) -> None:
    """RFC 6455 §4.1/§4.2.1: any other Sec-WebSocket-Key gets 400 naming the header."""
    events, status, body = answer(request(key=key))
    assert status == 400
    assert isinstance(events[0], Failed) and events[0].status == 400
    assert b"Sec-WebSocket-Key" in body


@pytest.mark.parametrize("version", [b"HTTP/1.0", b"HTTP/2.0", b"HTTP/0.9", b"HTTP/3.0"])
def test_other_http_version_gets_505(version: bytes) -> None:
    """RFC 6455 §4.1 asks for HTTP/1.1; another well-formed version gets 505."""
    events, status, body = answer(request(version=version))
    assert status == 505
    assert isinstance(events[0], Failed) and events[0].status == 505
    assert b"HTTP/1.1" in body and version in body


@pytest.mark.parametrize("version", [b"HTTP/1.1x", b"HTTPS/1.1", b"HTTP/11", b"http/1.1"])
def test_malformed_request_line_gets_400(version: bytes) -> None:
    """A request line that is not HTTP at all gets 400."""
    _, status, body = answer(request(version=version))
    assert status == 400
    assert body.strip()


def test_host_required() -> None:
    """A request without Host, or with an empty one, gets 400 naming Host."""
    for data in (request(host=None), request(host=b"")):
        _, status, body = answer(data)
        assert status == 400
        assert b"Host" in body


@pytest.mark.parametrize(
    ("extra", "name"),
    [
        (b"Sec-WebSocket-Key: " + KEY, b"Sec-WebSocket-Key"),
        (b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version"),
        (b"Origin: http://h\r\nOrigin: http://evil", b"Origin"),
        (b"Upgrade: websocket", b"Upgrade"),
        (b"Host: other", b"Host"),
    ],
    ids=["key", "version", "origin", "upgrade", "host"],
)
def test_repeated_single_value_header_refused(extra: bytes, name: bytes) -> None:
    """A header that may appear once and appears twice gets 400 naming it."""
    _, status, body = answer(request(extra))
    assert status == 400
    assert name.lower() in body.lower()


def test_list_headers_may_repeat() -> None:
    """Sec-WebSocket-Protocol and Connection are lists and may come in several lines."""
    [event] = ServerProtocol().receive_data(
        request(
            b"Sec-WebSocket-Protocol: a",
            b"Sec-WebSocket-Protocol: b",
            b"Connection: keep-alive",
        )
    )
    assert isinstance(event, HandshakeRequest)
    assert event.subprotocols == ("a", "b")


def test_body_refused() -> None:
    """A handshake with a body (Content-Length) gets 400."""
    _, status, body = answer(request(b"Content-Length: 3") + b"abc")
    assert status == 400
    assert b"body" in body


def test_prepared_request_checked_too() -> None:
    """A request parsed by a WSGI server gets the same checks: WSGI joins a repeated
    Sec-WebSocket-Key into one comma-separated value, which is not 16 bytes."""
    server = ServerProtocol()
    headers = [
        ("host", "h"),
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-key", f"{KEY.decode()}, {KEY.decode()}"),
        ("sec-websocket-version", "13"),
    ]
    event = server.start_from_request("/chat", headers)
    assert isinstance(event, Failed) and event.status == 400
    assert b"Sec-WebSocket-Key" in server.data_to_send()


def test_rejection_parses_as_http() -> None:
    """Each refusal is a complete HTTP/1.1 response a client can read."""
    server = ServerProtocol()
    server.receive_data(request(version=b"HTTP/1.0"))
    client = WSConnection(ConnectionType.CLIENT)
    client.send(Request(host="h", target="/"))
    events = client_events(client, server.data_to_send())
    assert isinstance(events[0], RejectConnection)
    assert events[0].status_code == 505
    assert b"".join(e.data for e in events if isinstance(e, RejectData)).strip()


# -- point 3: the declared length ----------------------------------------------------------


def open_pair(
    max_message_size: int | None = 100, deflate: bool = False
) -> tuple[ServerProtocol, WSConnection]:
    server = ServerProtocol(max_message_size=max_message_size)
    client = WSConnection(ConnectionType.CLIENT)
    extensions = [PerMessageDeflate()] if deflate else []
    [req] = server.receive_data(client.send(Request(host="h", target="/", extensions=extensions)))
    assert isinstance(req, HandshakeRequest)
    server.accept(compression=deflate)
    [accepted] = client_events(client, server.data_to_send())
    assert isinstance(accepted, AcceptConnection)
    return server, client


def close_code(server: ServerProtocol, client: WSConnection) -> int:
    [close] = [
        e for e in client_events(client, server.data_to_send()) if isinstance(e, CloseConnection)
    ]
    return close.code


@pytest.mark.parametrize("length", [101, 125, 126, 65535, 65536, 2**40, 2**63 - 1])
@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_header_over_limit_fails_at_once(length: int, opcode: int) -> None:
    """RFC 6455 §10.4: a header announcing more than max_message_size fails with 1009
    once the header is in, whatever the length field's form (7, 16 or 64 bits)."""
    server, client = open_pair(max_message_size=100)
    header = frame(opcode, b"", length=length)
    events = server.receive_data(header)
    assert [type(e) for e in events] == [Failed]
    assert isinstance(events[0], Failed) and events[0].code == 1009
    assert str(length) in events[0].reason
    assert server.state is State.CLOSED
    assert close_code(server, client) == 1009


def test_header_over_limit_in_pieces() -> None:
    """A header arriving a byte at a time is recognised when its last byte arrives."""
    server, _ = open_pair(max_message_size=100)
    header = frame(BINARY, b"", length=2**40)
    for i in range(len(header) - 1):
        assert server.receive_data(header[i : i + 1]) == []
    [failed] = server.receive_data(header[-1:])
    assert isinstance(failed, Failed) and failed.code == 1009


def test_header_at_limit_waits_for_payload() -> None:
    """Exactly max_message_size is fine: the payload is awaited and delivered."""
    server, _ = open_pair(max_message_size=100)
    data = frame(BINARY, b"x" * 100)
    assert server.receive_data(data[:20]) == []
    assert server.receive_data(data[20:]) == [MessageReceived(b"x" * 100)]


def test_fragment_running_total_over_limit() -> None:
    """The frames of a fragmented message add up: the header that passes the limit
    fails at once, before its payload."""
    server, client = open_pair(max_message_size=100)
    assert server.receive_data(frame(TEXT, b"a" * 60, fin=False)) == []
    assert server.receive_data(frame(PING, b"p")) == []
    events = server.receive_data(frame(CONT, b"", fin=True, length=41))
    assert [type(e) for e in events] == [Failed]
    assert isinstance(events[0], Failed) and events[0].code == 1009
    assert "101 bytes" in events[0].reason
    assert close_code(server, client) == 1009


def test_messages_before_oversized_header_delivered() -> None:
    """What came before the oversized header in the same read is delivered first."""
    server, _ = open_pair(max_message_size=100)
    events = server.receive_data(
        frame(TEXT, b"one") + frame(BINARY, b"two") + frame(BINARY, b"", length=10**6)
    )
    assert events[:2] == [MessageReceived("one"), MessageReceived(b"two")]
    assert isinstance(events[2], Failed) and events[2].code == 1009


def test_other_violation_in_oversized_header_wins() -> None:
    """A header that is also malformed (unmasked here) gets wsproto's 1002."""
    server, _ = open_pair(max_message_size=100)
    [failed] = server.receive_data(frame(BINARY, b"", length=10**6, mask=False))
    assert isinstance(failed, Failed) and failed.code == 1002


def test_no_limit_no_check() -> None:
    """max_message_size=None: a big header just waits for its payload."""
    server, _ = open_pair(max_message_size=None)
    assert server.receive_data(frame(BINARY, b"", length=10**9)[:14]) == []
    assert server.state is State.OPEN


def test_compressed_header_limit_allows_deflate_overhead() -> None:
    """A compressed frame may announce deflate's worst case for the limit, no more."""
    limit = 100_000
    bound = compressed_size_bound(limit)
    assert limit < bound < limit * 1.01
    server, _ = open_pair(max_message_size=limit, deflate=True)
    assert server.receive_data(frame(BINARY, b"", rsv=4, length=bound)[:14]) == []
    server, _ = open_pair(max_message_size=limit, deflate=True)
    [failed] = server.receive_data(frame(BINARY, b"", rsv=4, length=bound + 1)[:14])
    assert isinstance(failed, Failed) and failed.code == 1009


def test_declared_size_scanner_skips_payloads() -> None:
    """The scanner follows boundaries through payloads cut anywhere."""
    scanner = DeclaredSize(10)
    stream = frame(TEXT, b"0123456789") + frame(PING, b"x" * 125) + frame(BINARY, b"y" * 11)
    offsets = [scanner.feed(stream[i : i + 7]) for i in range(0, len(stream), 7)]
    found = [i * 7 + off for i, off in enumerate(offsets) if off is not None]
    assert found == [len(stream) - 11]


# -- point 4: control frames inside compressed fragmented messages ------------------------


def deflate_parts(text: bytes, parts: int, compressor: zlib._Compress) -> list[bytes]:
    data = compressor.compress(text) + compressor.flush(zlib.Z_SYNC_FLUSH)
    data = data[:-4]
    step = max(1, len(data) // parts)
    return [data[i * step : (i + 1) * step if i < parts - 1 else None] for i in range(parts)]


@pytest.mark.parametrize("control", [PING, PONG])
def test_control_frame_between_compressed_fragments(control: int) -> None:
    """RFC 6455 §5.4 / RFC 7692 §6: a ping or pong between the fragments of a compressed
    message is handled and the message is delivered intact (1007 before)."""
    server, client = open_pair(max_message_size=10_000, deflate=True)
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    text = b"compressible text " * 40
    first, middle, last = deflate_parts(text, 3, compressor)
    events = server.receive_data(
        frame(TEXT, first, fin=False, rsv=4)
        + frame(control, b"c1")
        + frame(CONT, middle, fin=False)
        + frame(control, b"c2")
        + frame(CONT, last)
    )
    messages = [e for e in events if isinstance(e, MessageReceived)]
    assert messages == [MessageReceived(text.decode())]
    assert server.state is State.OPEN
    if control == PING:
        pongs = [e for e in client_events(client, server.data_to_send()) if isinstance(e, Pong)]
        assert [p.payload for p in pongs] == [b"c1", b"c2"]
    else:
        assert [e for e in events if isinstance(e, PongReceived)] == [
            PongReceived(b"c1"),
            PongReceived(b"c2"),
        ]
    # The client kept its compression context: the next message builds on it.
    [again] = deflate_parts(text, 1, compressor)
    assert server.receive_data(frame(TEXT, again, rsv=4)) == [MessageReceived(text.decode())]


def test_uncompressed_message_between_compressed_ones_with_ping() -> None:
    """An uncompressed fragmented message with a ping inside stays uncompressed."""
    server, _ = open_pair(max_message_size=10_000, deflate=True)
    events = server.receive_data(
        frame(BINARY, b"\x00\x01", fin=False) + frame(PING, b"") + frame(CONT, b"\x02")
    )
    assert events == [MessageReceived(b"\x00\x01\x02")]


def test_compressed_control_frame_still_refused() -> None:
    """RSV1 on a control frame is a protocol error (RFC 7692 §6.1): 1002."""
    server, client = open_pair(max_message_size=10_000, deflate=True)
    [failed] = server.receive_data(frame(PING, b"x", rsv=4))
    assert isinstance(failed, Failed) and failed.code == 1002
    assert close_code(server, client) == 1002


def test_close_between_compressed_fragments_is_answered() -> None:
    """A close frame inside a compressed message closes normally (1000 echoed)."""
    server, client = open_pair(max_message_size=10_000, deflate=True)
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    first, _ = deflate_parts(b"abc" * 50, 2, compressor)
    server.receive_data(frame(TEXT, first, fin=False, rsv=4))
    server.receive_data(frame(CLOSE, close_payload(1000)))
    assert server.state is State.CLOSED
    assert close_code(server, client) == 1000


# -- point 1: the close frame of a violation held back for the answers before it ------


def assert_open(server: ServerProtocol) -> None:
    # A function, so that the type checker does not narrow server.state for good.
    assert server.state is State.OPEN


def holding(server: ServerProtocol) -> bool:
    return server.failure_pending


def open_holding_pair() -> tuple[ServerProtocol, WSConnection]:
    server = ServerProtocol(max_message_size=100, hold_failure_close=True)
    client = WSConnection(ConnectionType.CLIENT)
    server.receive_data(client.send(Request(host="h", target="/")))
    server.accept()
    client_events(client, server.data_to_send())
    return server, client


@pytest.mark.parametrize(
    ("violation", "code"),
    [
        (frame(0x3, b"x"), 1002),
        (frame(TEXT, b"\xff"), 1007),
        (frame(BINARY, b"", length=101), 1009),
        (frame(CLOSE, close_payload(1005)), 1002),
    ],
)
def test_held_failure_close(violation: bytes, code: int) -> None:
    """With hold_failure_close, a violation holds the close frame back: the answers
    to earlier messages go first, nothing after the violation is read."""
    server, client = open_holding_pair()
    events = server.receive_data(frame(TEXT, b"a") + violation + frame(TEXT, b"late"))
    assert events[0] == MessageReceived("a")
    assert isinstance(events[1], Failed) and events[1].code == code
    assert len(events) == 2
    assert server.data_to_send() == b""
    assert holding(server)
    assert_open(server)
    assert server.receive_data(frame(TEXT, b"later")) == []
    server.send_message("answer to a")
    assert server.close_failed()
    out = client_events(client, server.data_to_send())
    assert [type(e).__name__ for e in out] == ["TextMessage", "CloseConnection"]
    assert isinstance(out[1], CloseConnection) and out[1].code == code
    assert server.state is State.CLOSED and not holding(server)
    assert not server.close_failed()
    assert server.data_to_send() == b""


def test_held_failure_after_server_close() -> None:
    """A close started meanwhile (a handler's) stands: no second close frame."""
    server, client = open_holding_pair()
    server.receive_data(frame(0x3, b"x"))
    server.close(1001, "going away")
    assert server.close_failed()
    out = client_events(client, server.data_to_send())
    assert [e.code for e in out if isinstance(e, CloseConnection)] == [1001]
    assert server.state is State.CLOSED


def test_held_failure_only_when_open() -> None:
    """A violation after the server's own close frame needs no held close."""
    server, _ = open_holding_pair()
    server.close()
    server.data_to_send()
    [ended] = server.receive_data(frame(0x3, b"x"))
    assert isinstance(ended, (Failed, CloseReceived)) and ended.code == 1002
    assert server.state is State.CLOSED and not server.failure_pending


# -- permessage-deflate offers (RFC 7692 §5, §7; Autobahn section 13) ------------------


def offer_answer(offer: str) -> tuple[bytes | None, int | None]:
    """Accept a handshake with this offer; return the extension header and window."""
    server = ServerProtocol(max_message_size=1000)
    server.receive_data(request(b"Sec-WebSocket-Extensions: " + offer.encode()))
    server.accept(compression=True)
    out = server.data_to_send()
    headers = [line for line in out.split(b"\r\n") if line.lower().startswith(b"sec-websocket-ext")]
    return (headers[0].split(b": ", 1)[1] if headers else None), server.deflate_bits


@pytest.mark.parametrize(
    ("offer", "answer", "bits"),
    [
        ("permessage-deflate", b"permessage-deflate; server_no_context_takeover", 15),
        (
            "permessage-deflate; client_max_window_bits",
            b"permessage-deflate; server_no_context_takeover; client_max_window_bits=15",
            15,
        ),
        (
            "permessage-deflate; server_max_window_bits=9",
            b"permessage-deflate; server_no_context_takeover; server_max_window_bits=9",
            9,
        ),
        (
            "permessage-deflate; client_no_context_takeover",
            b"permessage-deflate; client_no_context_takeover; server_no_context_takeover",
            15,
        ),
        # Declined: unknown parameter, invalid or repeated value, 8 (zlib cannot).
        ("permessage-deflate; unknown_param", None, None),
        ("permessage-deflate; client_max_window_bits=abc", None, None),
        ("permessage-deflate; client_max_window_bits=16", None, None),
        ('permessage-deflate; client_max_window_bits="10"', None, None),
        ("permessage-deflate; server_max_window_bits", None, None),
        ("permessage-deflate; server_max_window_bits=010", None, None),
        ("permessage-deflate; server_no_context_takeover=1", None, None),
        ("permessage-deflate; server_max_window_bits=10; server_max_window_bits=11", None, None),
        ("permessage-deflate; server_max_window_bits=8", None, None),
        # The first acceptable offer wins; a declined one lets the next be tried.
        (
            "permessage-deflate; server_max_window_bits=10, permessage-deflate",
            b"permessage-deflate; server_no_context_takeover; server_max_window_bits=10",
            10,
        ),
        (
            "permessage-deflate; x=1, permessage-deflate; client_no_context_takeover",
            b"permessage-deflate; client_no_context_takeover; server_no_context_takeover",
            15,
        ),
    ],
)
def test_deflate_offers(offer: str, answer: bytes | None, bits: int | None) -> None:
    """Valid offers are accepted with their parameters; invalid ones are declined
    (the connection goes on uncompressed), never an exception (ValueError before)."""
    assert offer_answer(offer) == (answer, bits)


@pytest.mark.parametrize("bits", range(9, 16))
def test_deflate_round_trip_per_window(bits: int) -> None:
    """Compressed messages with each server window size reach a wsproto client."""
    server = ServerProtocol(max_message_size=100_000)
    client = WSConnection(ConnectionType.CLIENT)
    offer = PerMessageDeflate(server_max_window_bits=bits)
    server.receive_data(client.send(Request(host="h", target="/", extensions=[offer])))
    server.accept(compression=True)
    client_events(client, server.data_to_send())
    assert server.deflate_bits == bits
    text = "".join(f"{i} bottles of beer " for i in range(2000))
    server.send_message(text)
    [message] = client_events(client, server.data_to_send())
    assert getattr(message, "data", None) == text
    assert server.receive_data(client.send(TextMessage(data=text))) == [MessageReceived(text)]


# -- UTF-8 (Autobahn section 6): valid boundaries, invalid sequences fail fast ------------

VALID_UTF8 = [
    "\u0000",
    "\u007f",
    "\u0080",
    "\u07ff",
    "\u0800",
    "\uffff",
    "\U00010000",
    "\U0010ffff",
    "\ud7ff",
    "\ue000",
    "\ufffd",
    "κόσμε",
]
INVALID_UTF8 = [
    b"\x80",  # lone continuation byte
    b"\xbf",
    b"\xc0\xaf",  # overlong "/"
    b"\xe0\x80\xaf",
    b"\xf0\x80\x80\xaf",
    b"\xc1\xbf",  # overlong, two bytes
    b"\xed\xa0\x80",  # a UTF-16 surrogate
    b"\xed\xbf\xbf",
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\xf5",
    b"\xfe",
    b"\xff",
    b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
]


@pytest.mark.parametrize("text", VALID_UTF8, ids=range(len(VALID_UTF8)))
def test_valid_utf8_byte_by_byte(text: str) -> None:
    """Boundary characters arrive whole, fragmented one byte per frame."""
    server, _ = open_pair(max_message_size=1000)
    data = text.encode()
    frames = [
        frame(TEXT if i == 0 else CONT, data[i : i + 1], fin=i == len(data) - 1)
        for i in range(len(data))
    ]
    events = [e for f in frames for e in server.receive_data(f)]
    assert events == [MessageReceived(text)]


@pytest.mark.parametrize("data", INVALID_UTF8, ids=range(len(INVALID_UTF8)))
def test_invalid_utf8_fails_fast(data: bytes) -> None:
    """An invalid sequence closes with 1007 as soon as its bytes are in, even in the
    middle of a frame whose end has not arrived (fail fast)."""
    server, client = open_pair(max_message_size=1000)
    valid = b"ok "
    whole = frame(TEXT, valid + data + b" and more that never comes" * 3)
    # Up to the end of the invalid sequence: header (2), mask (4), then the payload.
    cut = 6 + len(valid) + len(data)
    events = server.receive_data(whole[:cut])
    assert [type(e) for e in events] == [Failed]
    assert isinstance(events[0], Failed) and events[0].code == 1007
    assert close_code(server, client) == 1007
