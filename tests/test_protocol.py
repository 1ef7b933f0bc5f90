"""RFC 6455 conformance of the sans-IO protocol: real wsproto client, bytes between.

Frames the client must not send are built by hand with :func:`tests.helpers.frame`.
"""

from __future__ import annotations

import threading
import zlib

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import ProtocolError

from wsgiws.protocol import (
    CloseReceived,
    Failed,
    HandshakeRequest,
    MessageReceived,
    PongReceived,
    PreparedMessage,
    ServerProtocol,
    State,
    encode_frame,
    encode_message,
)

from .helpers import close_payload, frame

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def assert_state(server: ServerProtocol, state: State) -> None:
    # A function, so that the type checker does not narrow server.state for good.
    assert server.state is state


def client_events(client: WSConnection, data: bytes) -> list[Event]:
    client.receive_data(data)
    return list(client.events())


def open_pair(
    max_message_size: int | None = 1024,
) -> tuple[ServerProtocol, WSConnection]:
    server = ServerProtocol(max_message_size=max_message_size)
    client = WSConnection(ConnectionType.CLIENT)
    [request] = server.receive_data(client.send(Request(host="localhost", target="/chat?x=1")))
    assert isinstance(request, HandshakeRequest)
    assert server.accept() == []
    [accepted] = client_events(client, server.data_to_send())
    assert isinstance(accepted, AcceptConnection)
    return server, client


def failure(server: ServerProtocol, client: WSConnection, data: bytes) -> tuple[int, Failed]:
    """Feed ``data``; expect a protocol failure; return the close code the client got."""
    events = server.receive_data(data)
    assert isinstance(events[-1], Failed), events
    assert server.state is State.CLOSED
    [close] = [
        e for e in client_events(client, server.data_to_send()) if isinstance(e, CloseConnection)
    ]
    assert close.code == events[-1].code
    return close.code, events[-1]


# -- handshake ---------------------------------------------------------------------


def test_handshake_request_fields() -> None:
    """A valid upgrade yields the path (decoded), query string, headers and offers."""
    server = ServerProtocol()
    client = WSConnection(ConnectionType.CLIENT)
    [request] = server.receive_data(
        client.send(
            Request(
                host="h",
                target="/a%20b?q=1&q=2",
                subprotocols=["chat", "v2"],
                extra_headers=[(b"X-Token", b"t")],
            )
        )
    )
    assert isinstance(request, HandshakeRequest)
    assert request.path == "/a b"
    assert request.query_string == "q=1&q=2"
    assert request.subprotocols == ("chat", "v2")
    assert request.header("x-token") == "t"
    assert request.header("x-absent") is None


def test_handshake_in_small_pieces() -> None:
    """A request arriving one byte at a time is assembled."""
    server = ServerProtocol()
    data = WSConnection(ConnectionType.CLIENT).send(Request(host="h", target="/"))
    events = []
    for i in range(len(data)):
        events += server.receive_data(data[i : i + 1])
    assert [type(e) for e in events] == [HandshakeRequest]


def test_bytes_after_request_are_kept_for_after_accept() -> None:
    """Frames pipelined right behind the request are parsed once the 101 is sent."""
    server = ServerProtocol()
    client = WSConnection(ConnectionType.CLIENT)
    data = client.send(Request(host="h", target="/")) + frame(TEXT, b"early")
    [request] = server.receive_data(data)
    assert isinstance(request, HandshakeRequest)
    assert server.accept() == [MessageReceived("early")]


def raw_request(lines: list[bytes]) -> list[object]:
    server = ServerProtocol()
    events = server.receive_data(b"\r\n".join(lines) + b"\r\n\r\n")
    response = WSConnection(ConnectionType.CLIENT)
    # Parse the answer with an h11 client, through wsproto's client handshake.
    response.send(Request(host="h", target="/"))
    out = server.data_to_send()
    assert server.state is State.CLOSED
    return [*events, *client_events(response, out)]


UPGRADE = [
    b"GET /chat HTTP/1.1",
    b"Host: localhost",
    b"Upgrade: websocket",
    b"Connection: Upgrade",
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
]


@pytest.mark.parametrize(
    ("lines", "status"),
    [
        ([*UPGRADE, b"Sec-WebSocket-Version: 8"], 426),
        ([*UPGRADE], 400),  # no version at all
        ([b"POST /chat HTTP/1.1", *UPGRADE[1:], b"Sec-WebSocket-Version: 13"], 405),
        (
            [
                UPGRADE[0],
                UPGRADE[1],
                UPGRADE[3],
                UPGRADE[4],
                b"Sec-WebSocket-Version: 13",
            ],
            400,
        ),
        ([*UPGRADE[:4], b"Sec-WebSocket-Version: 13"], 400),  # no key
        (
            [b"GET /chat HTTP/1.1", *UPGRADE[2:], b"Sec-WebSocket-Version: 13"],
            400,
        ),  # no host
        ([b"GARBAGE"], 400),
        ([*UPGRADE, b"Sec-WebSocket-Version: 13", b"X-Big: " + b"a" * 20000], 431),
    ],
    ids=[
        "wrong-version",
        "no-version",
        "post",
        "no-upgrade",
        "no-key",
        "no-host",
        "garbage",
        "too-big",
    ],
)
def test_bad_handshake_gets_http_error(lines: list[bytes], status: int) -> None:
    """Each malformed upgrade gets the right HTTP status and a readable body."""
    events = raw_request(lines)
    failed = events[0]
    assert isinstance(failed, Failed)
    assert failed.status == status
    [reject] = [e for e in events if isinstance(e, RejectConnection)]
    assert reject.status_code == status
    body = b"".join(e.data for e in events if isinstance(e, RejectData))
    assert body.strip()
    if status == 426:
        assert (b"sec-websocket-version", b"13") in [(k.lower(), v) for k, v in reject.headers]


def test_reject_answers_with_status_and_body() -> None:
    """reject() writes the status and the reason as a plain-text body."""
    server = ServerProtocol()
    client = WSConnection(ConnectionType.CLIENT)
    server.receive_data(client.send(Request(host="h", target="/")))
    server.reject(404, "no WebSocket endpoint at /")
    events = client_events(client, server.data_to_send())
    assert isinstance(events[0], RejectConnection)
    assert events[0].status_code == 404
    assert b"".join(e.data for e in events[1:] if isinstance(e, RejectData)) == (
        b"no WebSocket endpoint at /\n"
    )


def test_subprotocol_in_accept() -> None:
    """accept(subprotocol) answers with the selected subprotocol."""
    server = ServerProtocol()
    client = WSConnection(ConnectionType.CLIENT)
    server.receive_data(client.send(Request(host="h", target="/", subprotocols=["a", "b"])))
    server.accept("b")
    [accepted] = client_events(client, server.data_to_send())
    assert isinstance(accepted, AcceptConnection)
    assert accepted.subprotocol == "b"


# -- framing -----------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 100_000])
@pytest.mark.parametrize("binary", [False, True])
def test_message_sizes_round_trip(size: int, binary: bool) -> None:
    """Every payload-length encoding works both ways (7-bit, 16-bit, 64-bit)."""
    server, client = open_pair(max_message_size=None)
    data: str | bytes
    if binary:
        data = bytes(range(256)) * (size // 256) + bytes(size % 256)
        sent: Event = BytesMessage(data=data)
    else:
        data = "é" * (size // 2) + "a" * (size % 2)  # size bytes of UTF-8
        sent = TextMessage(data=data)
    assert server.receive_data(client.send(sent)) == [MessageReceived(data)]
    server.send_message(data)
    [received] = client_events(client, server.data_to_send())
    assert isinstance(received, (TextMessage, BytesMessage))
    assert received.data == data


def test_encode_frame_matches_wsproto() -> None:
    """Frames encoded once for broadcast are what wsproto decodes."""
    _, client = open_pair()
    for payload in (b"", b"x" * 125, b"y" * 126, b"z" * 70000):
        [message] = client_events(client, encode_frame(BINARY, payload))  # type: ignore[arg-type]
        assert isinstance(message, BytesMessage)
        assert message.data == payload


def test_fragmented_message_with_interleaved_ping() -> None:
    """Fragments are reassembled; a ping between them is answered at once."""
    server, client = open_pair()
    events = server.receive_data(
        frame(TEXT, b"hel", fin=False)
        + frame(PING, b"p1")
        + frame(CONT, b"lo ", fin=False)
        + frame(PONG, b"unsolicited")
        + frame(CONT, b"world")
    )
    assert events == [PongReceived(b"unsolicited"), MessageReceived("hello world")]
    [pong] = client_events(client, server.data_to_send())
    assert isinstance(pong, Pong)
    assert pong.payload == b"p1"


def test_binary_fragments() -> None:
    """Binary fragments are reassembled into bytes."""
    server, _ = open_pair()
    events = server.receive_data(frame(BINARY, b"\x00\x01", fin=False) + frame(CONT, b"\x02"))
    assert events == [MessageReceived(b"\x00\x01\x02")]


def test_ping_answered_with_same_payload() -> None:
    """A ping gets a pong with the same payload."""
    server, client = open_pair()
    assert server.receive_data(frame(PING, b"payload")) == []
    [pong] = client_events(client, server.data_to_send())
    assert isinstance(pong, Pong)
    assert pong.payload == b"payload"


def test_server_ping() -> None:
    """send_ping() reaches the client as a ping."""
    server, client = open_pair()
    server.send_ping(b"ka")
    [ping] = client_events(client, server.data_to_send())
    assert isinstance(ping, Ping)
    assert ping.payload == b"ka"


@pytest.mark.parametrize("rsv", [1, 2, 4])
def test_reserved_bits_fail_with_1002(rsv: int) -> None:
    """A frame with a reserved bit set (no extension negotiated) closes with 1002."""
    server, client = open_pair()
    assert failure(server, client, frame(TEXT, b"x", rsv=rsv))[0] == 1002


@pytest.mark.parametrize("opcode", [0x3, 0x7, 0xB, 0xF])
def test_unknown_opcode_fails_with_1002(opcode: int) -> None:
    """Reserved opcodes close with 1002."""
    server, client = open_pair()
    assert failure(server, client, frame(opcode, b"x"))[0] == 1002


def test_unmasked_client_frame_fails_with_1002() -> None:
    """RFC 6455 §5.1: a client frame must be masked."""
    server, client = open_pair()
    assert failure(server, client, frame(TEXT, b"x", mask=False))[0] == 1002


def test_continuation_without_start_fails() -> None:
    """A continuation frame with no message started closes with 1002."""
    server, client = open_pair()
    assert failure(server, client, frame(CONT, b"x"))[0] == 1002


def test_new_message_inside_fragmented_message_fails() -> None:
    """A data frame interleaved in a fragmented message closes with 1002."""
    server, client = open_pair()
    assert failure(server, client, frame(TEXT, b"a", fin=False) + frame(TEXT, b"b"))[0] == 1002


def test_invalid_utf8_fails_with_1007() -> None:
    """Text that is not UTF-8 closes with 1007."""
    server, client = open_pair()
    assert failure(server, client, frame(TEXT, b"\xff\xfe"))[0] == 1007


def test_invalid_utf8_across_fragments_fails_with_1007() -> None:
    """A truncated UTF-8 sequence completed by an invalid byte in the next fragment."""
    server, client = open_pair()
    assert server.receive_data(frame(TEXT, b"ok\xe2\x82", fin=False)) == []
    assert failure(server, client, frame(CONT, b"\x28"))[0] == 1007


def test_valid_utf8_split_across_fragments() -> None:
    """A multi-byte character split between fragments is decoded."""
    server, _ = open_pair()
    euro = "€".encode()
    events = server.receive_data(frame(TEXT, euro[:1], fin=False) + frame(CONT, euro[1:]))
    assert events == [MessageReceived("€")]


def test_truncated_utf8_at_end_of_message_fails() -> None:
    """A message ending in the middle of a character closes with 1007."""
    server, client = open_pair()
    assert failure(server, client, frame(TEXT, b"\xe2\x82"))[0] == 1007


def test_oversize_control_frame_fails() -> None:
    """Control frames carry at most 125 bytes (RFC 6455 §5.5)."""
    server, client = open_pair()
    assert failure(server, client, frame(PING, b"x" * 126))[0] == 1002


def test_fragmented_control_frame_fails() -> None:
    """Control frames must not be fragmented."""
    server, client = open_pair()
    assert failure(server, client, frame(PING, b"x", fin=False))[0] == 1002


def test_message_at_limit_is_accepted() -> None:
    """A message of exactly max_message_size bytes is delivered."""
    server, _ = open_pair(max_message_size=1000)
    assert server.receive_data(frame(BINARY, b"x" * 1000)) == [MessageReceived(b"x" * 1000)]


def test_message_just_over_limit_fails_with_1009() -> None:
    """One byte over max_message_size closes with 1009 and says why."""
    server, client = open_pair(max_message_size=1000)
    code, failed = failure(server, client, frame(BINARY, b"x" * 1001))
    assert code == 1009
    assert "max_message_size of 1000 bytes" in failed.reason


def test_fragmented_message_over_limit_fails_with_1009() -> None:
    """The limit applies to the reassembled message, counted in UTF-8 bytes."""
    server, client = open_pair(max_message_size=10)
    assert server.receive_data(frame(TEXT, "éé".encode(), fin=False)) == []
    assert failure(server, client, frame(CONT, "éééé".encode()))[0] == 1009  # 4 + 8 bytes


def test_huge_declared_length_fails_before_buffering() -> None:
    """A frame announcing 2**40 bytes fails as soon as its header is read
    (tests/test_strict.py covers every length form)."""
    server, client = open_pair(max_message_size=1000)
    assert failure(server, client, frame(BINARY, b"", length=2**40))[0] == 1009


# -- closing -----------------------------------------------------------------------


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1007, 1011, 3000, 4000, 4999])
def test_valid_close_code_is_echoed(code: int) -> None:
    """A valid close code is echoed back and reported."""
    server, client = open_pair()
    events = server.receive_data(frame(CLOSE, close_payload(code, b"bye")))
    assert events == [CloseReceived(code, "bye")]
    assert server.state is State.CLOSED
    [close] = client_events(client, server.data_to_send())
    assert isinstance(close, CloseConnection)
    assert close.code == code


def test_empty_close_reports_1005() -> None:
    """A close frame without a code is reported as 1005 and answered."""
    server, client = open_pair()
    assert server.receive_data(frame(CLOSE)) == [CloseReceived(1005, "")]
    [close] = client_events(client, server.data_to_send())
    assert isinstance(close, CloseConnection)


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000])
def test_invalid_close_code_fails_with_1002(code: int) -> None:
    """Reserved, local-only and out-of-range close codes close with 1002."""
    server, client = open_pair()
    assert failure(server, client, frame(CLOSE, close_payload(code)))[0] == 1002


def test_one_byte_close_payload_fails() -> None:
    """A close payload of one byte is malformed."""
    server, client = open_pair()
    assert failure(server, client, frame(CLOSE, b"\x03"))[0] == 1002


def test_close_reason_invalid_utf8_fails_with_1007() -> None:
    """A close reason that is not UTF-8 closes with 1007."""
    server, client = open_pair()
    assert failure(server, client, frame(CLOSE, close_payload(1000, b"\xff")))[0] == 1007


def test_server_initiated_close() -> None:
    """close() sends a close frame; the peer's answer completes the handshake."""
    server, client = open_pair()
    server.close(1001, "going away")
    assert server.state is State.CLOSING
    [close] = client_events(client, server.data_to_send())
    assert isinstance(close, CloseConnection)
    assert (close.code, close.reason) == (1001, "going away")
    assert_state(server, State.CLOSING)
    # Data the peer sent before it saw our close is still delivered.
    assert server.receive_data(frame(TEXT, b"late")) == [MessageReceived("late")]
    assert server.receive_data(frame(CLOSE, close_payload(1001))) == [CloseReceived(1001, "")]
    assert_state(server, State.CLOSED)
    assert server.data_to_send() == b""


def test_eof_is_abnormal_closure() -> None:
    """Losing the transport without a close frame reports 1006."""
    server, _ = open_pair()
    [failed] = server.receive_eof()
    assert isinstance(failed, Failed)
    assert failed.code == 1006
    assert server.receive_data(b"more") == []


def test_cannot_send_when_not_open() -> None:
    """Commands in the wrong state raise, naming the state."""
    server = ServerProtocol()
    with pytest.raises(Exception, match="CONNECTING"):
        server.send_message("x")
    with pytest.raises(TypeError, match="str or bytes"):
        open_pair()[0].send_message(1)  # type: ignore[arg-type]


# -- permessage-deflate (RFC 7692) ---------------------------------------------------


def open_deflate_pair(max_message_size: int | None = 10_000) -> tuple[ServerProtocol, WSConnection]:
    server = ServerProtocol(max_message_size=max_message_size)
    client = WSConnection(ConnectionType.CLIENT)
    offer = PerMessageDeflate(client_max_window_bits=15)
    [request] = server.receive_data(client.send(Request(host="h", target="/", extensions=[offer])))
    assert isinstance(request, HandshakeRequest)
    server.accept(compression=True)
    [accepted] = client_events(client, server.data_to_send())
    assert isinstance(accepted, AcceptConnection)
    assert [e.name for e in accepted.extensions] == ["permessage-deflate"]
    return server, client


def test_deflate_negotiated_both_ways() -> None:
    """Compressed messages round-trip; the server declares no context takeover."""
    server, client = open_deflate_pair()
    assert server.deflate_bits == 15
    text = "compress me " * 100
    assert server.receive_data(client.send(TextMessage(data=text))) == [MessageReceived(text)]
    server.send_message(text)
    wire = server.data_to_send()
    assert wire[0] & 0x40  # RSV1: compressed
    assert len(wire) < len(text) // 4
    [echoed] = client_events(client, wire)
    assert isinstance(echoed, TextMessage) and echoed.data == text
    server.send_message("tiny")  # under the threshold: sent plain
    assert not server.data_to_send()[0] & 0x40


def test_deflate_not_negotiated_without_offer_or_option() -> None:
    """No offer, or compression off: frames stay uncompressed, RSV1 is refused."""
    server, client = open_pair()
    assert server.deflate_bits is None
    assert failure(server, client, frame(TEXT, b"x", rsv=4))[0] == 1002


def test_deflate_bomb_fails_with_1009_before_inflating() -> None:
    """A small frame that inflates past max_message_size closes with 1009."""
    server, client = open_deflate_pair(max_message_size=10_000)
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = bomb.compress(b"\0" * 50_000_000) + bomb.flush(zlib.Z_SYNC_FLUSH)
    assert len(payload) < 60_000
    code, failed = failure(server, client, frame(BINARY, payload[:-4], rsv=4))
    assert code == 1009
    assert "max_message_size of 10000" in failed.reason


def test_corrupt_deflate_data_fails_with_1007() -> None:
    """Compressed data that does not inflate closes with 1007."""
    server, client = open_deflate_pair()
    assert failure(server, client, frame(BINARY, b"\xff\xff\xff\xff", rsv=4))[0] == 1007


def test_prepared_message_encodes_each_variant_once() -> None:
    """A broadcast message is encoded once per compression setting and decodes right."""
    prepared = PreparedMessage("hello " * 50)
    plain = prepared.frame(None)
    assert prepared.frame(None) is plain
    compressed = prepared.frame(15)
    assert prepared.frame(15) is compressed and compressed != plain
    _, client = open_deflate_pair()
    [message] = client_events(client, compressed)
    assert isinstance(message, TextMessage) and message.data == "hello " * 50


def server_frame_payload(wire: bytes) -> bytes:
    """The payload of one unmasked server frame."""
    length = wire[1] & 0x7F
    start = 2 if length < 126 else 4 if length == 126 else 10
    return wire[start:]


@pytest.mark.parametrize("bits", [9, 12, 15])
def test_compressed_messages_refer_to_no_earlier_message(bits: int) -> None:
    """Each thread reuses its compressor, which starts afresh with every message
    (``server_no_context_takeover``): every message inflates on its own, the same
    message twice in a row included, also with threads compressing at once."""
    messages: list[str | bytes] = [
        "hello there " * 20,
        "hello there " * 20,
        bytes(range(256)) * 20,
        "x" * 70_000,
        zlib.compress(b"incompressible") * 50,
    ]

    def check() -> None:
        for _ in range(20):
            for data in messages:
                raw = data.encode() if isinstance(data, str) else data
                for wire in (encode_message(data, bits), PreparedMessage(data).frame(bits)):
                    assert wire[0] & 0x40
                    inflater = zlib.decompressobj(-bits)
                    payload = server_frame_payload(wire) + b"\x00\x00\xff\xff"
                    assert inflater.decompress(payload) == raw

    errors: list[BaseException] = []

    def run() -> None:
        try:
            check()
        except BaseException as exc:  # reported below
            errors.append(exc)

    check()
    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors


# -- every branch of the sans-IO protocol --------------------------------------------


def test_prepared_message_leaves_short_messages_uncompressed() -> None:
    """Below the compression threshold a prepared message is the same plain frame."""
    message = PreparedMessage("hi")
    assert message.frame(15) == message.frame(None) == encode_frame(TEXT, b"hi")  # type: ignore[arg-type]


def test_eof_after_the_end_and_empty_data_during_the_handshake() -> None:
    """EOF on a closed connection yields nothing; an empty read before a request is
    the peer going away."""
    server = ServerProtocol()
    [failed] = server.receive_data(b"")
    assert isinstance(failed, Failed) and failed.code == 1006 and failed.status is None
    assert_state(server, State.CLOSED)
    assert server.receive_eof() == []
    server.connection_lost()
    assert_state(server, State.CLOSED)


def test_bytes_during_the_decision_are_parsed_after_accept() -> None:
    """Frames arriving while the handshake is decided wait for the 101."""
    server = ServerProtocol()
    client = WSConnection(ConnectionType.CLIENT)
    [request] = server.receive_data(client.send(Request(host="h", target="/")))
    assert isinstance(request, HandshakeRequest) and server.decision_pending
    assert server.receive_data(frame(TEXT, b"early")) == []
    assert server.accept() == [MessageReceived("early")]
    assert not server.decision_pending


def test_frames_sent_during_the_decision_follow_the_101_or_are_dropped() -> None:
    """send_encoded() before accept() keeps the frame for after the 101; reject() or
    discard_early() drops it; after the end it is refused."""
    server = ServerProtocol()
    client = WSConnection(ConnectionType.CLIENT)
    server.receive_data(client.send(Request(host="h", target="/")))
    server.send_message("first")
    assert server.early_size == len(encode_frame(TEXT, b"first"))  # type: ignore[arg-type]
    assert server.data_to_send() == b""
    server.accept()
    events = client_events(client, server.data_to_send())
    assert isinstance(events[0], AcceptConnection)
    assert isinstance(events[1], TextMessage) and events[1].data == "first"
    assert server.early_size == 0

    server = ServerProtocol()
    server.receive_data(WSConnection(ConnectionType.CLIENT).send(Request(host="h", target="/")))
    server.send_message("dropped")
    server.discard_early()
    assert server.early_size == 0
    server.send_message("dropped too")
    server.reject(403, "no")
    assert b"dropped" not in server.data_to_send()
    with pytest.raises(ProtocolError):
        server.send_message("late")


def test_body_bytes_that_h11_cannot_parse_after_the_head() -> None:
    """A chunked body (not allowed) whose chunk h11 cannot parse still gets one 400."""
    server = ServerProtocol()
    client = WSConnection(ConnectionType.CLIENT)
    head = client.send(
        Request(host="h", target="/", extra_headers=[(b"Transfer-Encoding", b"chunked")])
    )
    [failed] = server.receive_data(head + b"zz\r\n")
    assert isinstance(failed, Failed) and failed.status == 400


def test_undecodable_percent_encoding_in_the_path_gets_400() -> None:
    server = ServerProtocol()
    client = WSConnection(ConnectionType.CLIENT)
    [failed] = server.receive_data(client.send(Request(host="h", target="/a%ff")))
    assert isinstance(failed, Failed) and failed.status == 400
    assert failed.reason.startswith("invalid request")


def test_ping_after_our_close_gets_no_pong() -> None:
    """Once the server sent its close frame, a ping is not answered."""
    server, client = open_pair()
    server.close(1000)
    client_events(client, server.data_to_send())
    assert server.receive_data(frame(PING, b"p")) == []
    assert server.data_to_send() == b""


def test_oversized_frame_after_our_close_sends_no_second_close() -> None:
    """A too-big frame announced after our close fails without another close frame."""
    server, client = open_pair(max_message_size=100)
    server.close(1000)
    client_events(client, server.data_to_send())
    events = server.receive_data(frame(BINARY, b"", length=1000))
    assert isinstance(events[-1], Failed) and events[-1].code == 1009
    assert server.data_to_send() == b""


def test_message_inflating_past_the_limit_fails_with_1009() -> None:
    """A compressed message small on the wire that inflates past the limit: 1009."""
    server, client = open_deflate_pair(max_message_size=10_000)
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = squeeze.compress(b"a" * 20_000) + squeeze.flush(zlib.Z_SYNC_FLUSH)
    code, failed = failure(server, client, frame(TEXT, payload[:-4], rsv=4))
    assert code == 1009
    assert failed.reason == "message inflates beyond max_message_size of 10000 bytes"


def test_commands_in_the_wrong_state_raise() -> None:
    """accept, reject, ping and close refuse a state that does not allow them."""
    server = ServerProtocol()
    with pytest.raises(ProtocolError, match="cannot accept in state CONNECTING"):
        server.accept()
    server, _ = open_pair()
    with pytest.raises(ProtocolError, match="cannot reject in state OPEN"):
        server.reject(400)
    server.close()
    with pytest.raises(ProtocolError, match="cannot ping in state CLOSING"):
        server.send_ping(b"")
    with pytest.raises(ProtocolError, match="cannot close in state CLOSING"):
        server.close()


def test_reject_with_a_status_http_does_not_name() -> None:
    server = ServerProtocol()
    server.reject(499)
    assert server.data_to_send().startswith(b"HTTP/1.1 499 Error\r\n")
