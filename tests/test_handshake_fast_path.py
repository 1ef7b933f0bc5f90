"""The protocol's fast path for the opening handshake against h11 and wsproto.

:class:`~wsgiws.protocol.ServerProtocol` parses a plain request head that arrives
whole in the first read itself (``fast=True``, the default) and writes the 101 for it
by hand; anything else (a head cut over several reads, a refused or unusual request)
goes to h11 and wsproto, the reference. Fed the same bytes in the same pieces, a
protocol with the fast path and one without (``fast=False``) must return the same
events for every piece — the same parsed request, or the same refusal with its
status and reason — write the same bytes, end in the same state, and after
``accept`` (with or without a subprotocol, with or without permessage-deflate)
write the same 101 and parse what followed the head the same way. The heads are
random and adversarial: every header of the handshake missing, repeated, empty or
wrong, names in any case, whitespace and tabs around values, folded lines, bytes
outside ASCII, control characters, body headers, bad methods, versions and targets,
percent-escapes valid and not, lists with empty elements, bare line feeds, heads
over ``max_request_size``, all cut at random points.
"""

from __future__ import annotations

import base64
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto.connection import ConnectionState
from wsproto.utilities import ProtocolError

from wsgiws.protocol import HandshakeRequest, ServerProtocol, State

from .helpers import FACTOR, close_payload, frame
from .protocol_oracle import pieces

DIFF = settings(
    max_examples=3000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

KEY = base64.b64encode(b"0123456789abcdef").decode()

NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-!#$%&'*+.^_`|~"
TOKENS = st.text(alphabet=NAME_CHARS, min_size=1, max_size=12)
#: Header values: mostly visible ASCII and spaces, sometimes tabs, obs-text, controls.
VALUES = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30),
    st.text(alphabet=st.characters(min_codepoint=0x09, max_codepoint=0xFF), max_size=12),
    st.sampled_from(["", " ", "\t", "a\tb", "\x00", "\x7f", "é", "\r", "\n"]),
)
#: Values for the handshake's own headers: the right one, near misses and junk.
GOOD = {
    "Host": ["example.com", "127.0.0.1:8000", "[::1]:80", "xn--e1afmkfd.xn--p1ai", "h"],
    "Upgrade": ["websocket", "WebSocket", "WEBSOCKET"],
    "Connection": ["Upgrade", "upgrade", "keep-alive, Upgrade", "Upgrade,keep-alive", "UPGRADE"],
    "Sec-WebSocket-Key": [KEY],
    "Sec-WebSocket-Version": ["13"],
}
BAD = {
    "Host": ["", " ", "xn--", "a..b", "xn--zz", "é"],
    "Upgrade": ["", "websockets", "h2c", "websocket, h2c"],
    "Connection": ["", "close", "keep-alive", "upgrades", "Upgrade;"],
    "Sec-WebSocket-Key": [
        "",
        "abc",
        base64.b64encode(b"0123456789abcde").decode(),
        base64.b64encode(b"0123456789abcdefg").decode(),
        KEY[:-2] + "!!",
        KEY + " ",
    ],
    "Sec-WebSocket-Version": ["", "8", "12", "13, 8", "013", " 13", "14"],
}
EXTRA = [
    ("Origin", ["http://example.com", "null", ""]),
    ("Sec-WebSocket-Protocol", ["chat", "chat, superchat", "a,,b", ",", "", " x , y "]),
    (
        "Sec-WebSocket-Extensions",
        [
            "permessage-deflate",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_max_window_bits=10, permessage-deflate",
            "x-webkit-deflate-frame",
            "permessage-deflate; server_max_window_bits=7",
            "",
        ],
    ),
    ("Content-Length", ["0", "5", "", "0, 0"]),
    ("Transfer-Encoding", ["chunked", "identity"]),
    ("User-Agent", ["test/1.0", "Mozilla/5.0 (X11; Linux x86_64)"]),
    ("Cookie", ["a=b; c=d", "x" * 300]),
    ("Expect", ["100-continue"]),
]
TARGETS = st.one_of(
    st.sampled_from(
        [
            "/",
            "/echo",
            "/echo?x=1&y=%20",
            "/a%20b",
            "/caf%C3%A9",
            "/%ff",
            "/%zz",
            "/%",
            "*",
            "http://h/x",
            "",
            "/a b",
            "/é",
            "//x?",
            "/?",
            "/#frag",
        ]
    ),
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20).map(
        lambda t: "/" + t
    ),
)


def case(draw: st.DrawFn, name: str) -> str:
    style = draw(st.sampled_from(["as-is", "lower", "upper", "swap"]))
    return {"as-is": name, "lower": name.lower(), "upper": name.upper(), "swap": name.swapcase()}[
        style
    ]


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    """A request head (with its blank line, or not) and maybe bytes after it.

    Half of them are "clean": valid but for what the extra headers, the target and
    the values' whitespace bring, so that both the fast path and its refusals get
    their share; the others break anything with some probability.
    """
    clean = draw(st.booleans())

    def odds(n: int) -> bool:  # True about once in n draws, never when clean
        return not clean and draw(st.integers(0, n - 1)) == 0

    method = "GET" if not odds(3) else draw(st.sampled_from(["POST", "get", "HEAD", "GET "]))
    version = "HTTP/1.1" if not odds(3) else draw(st.sampled_from(["HTTP/1.0", "HTTP/2.0"]))
    target = draw(TARGETS)
    lines = [f"{method} {target} {version}"]
    if odds(10):
        lines[0] = draw(st.sampled_from(["GET / HTTP/1.1 x", "GET  / HTTP/1.1", "GET /"]))
    headers: list[tuple[str, str]] = []
    for name, good in GOOD.items():
        for _ in range(1 if not odds(5) else draw(st.sampled_from([0, 2]))):
            value = draw(st.sampled_from(good))
            if odds(4):
                value = draw(st.sampled_from(BAD[name]))
            headers.append((case(draw, name), value))
    for name, values in EXTRA:
        if clean and name in ("Content-Length", "Transfer-Encoding"):
            continue
        for _ in range(draw(st.sampled_from([0, 0, 1] if clean else [0] * 6 + [1, 1, 2]))):
            headers.append((case(draw, name), draw(st.sampled_from(values))))
    for _ in range(draw(st.integers(0, 3))):
        headers.append((draw(TOKENS), draw(VALUES) if not clean else "v a l u e"))
    headers = draw(st.permutations(headers))
    out = []
    for name, value in headers:
        before = draw(st.sampled_from(["", " ", " ", "\t", "  "]))
        after = draw(st.sampled_from(["", "", "", " ", "\t"]))
        sep = ":" if not odds(10) else draw(st.sampled_from([" :", "", "::"]))
        out.append(f"{name}{sep}{before}{value}{after}")
    if out and odds(8):
        out.insert(draw(st.integers(0, len(out))), draw(st.sampled_from([" folded", "\tx", ""])))
    if odds(10):
        out.append(draw(VALUES))  # a line without a colon, or anything
    eol = "\r\n" if not odds(10) else "\n"
    head = eol.join(lines + out) + eol
    if odds(10):
        head = draw(st.sampled_from(["\r\n", "\n", " "])) + head
    end = "\r\n" if not odds(10) else draw(st.sampled_from(["\n", "", "\r\n\r\n"]))
    tail = b""
    if draw(st.booleans()):
        tail = frame(1, draw(st.binary(max_size=20)).hex().encode(), mask=True)
    if odds(5):
        tail += draw(st.binary(max_size=20))
    return (head + end).encode("latin-1") + tail


@st.composite
def cases(draw: st.DrawFn) -> tuple[bytes, list[int], int]:
    data = draw(heads())
    whole = draw(st.integers(0, 2)) > 0  # mostly in one read: what the fast path takes
    sizes = [len(data)] if whole else draw(st.lists(st.integers(0, 80), min_size=1, max_size=6))
    limit = draw(st.sampled_from([16 * 1024] * 6 + [4096, 300, 160, 100]))
    return data, sizes, limit


def feed(server: ServerProtocol, chunk: bytes) -> tuple[object, ...]:
    events = server.receive_data(memoryview(chunk))
    return (events, server.data_to_send(), server.state)


def accept(server: ServerProtocol, subprotocol: str | None, compression: bool) -> object:
    try:
        events = server.accept(subprotocol, compression=compression)
    except ProtocolError as exc:
        return ("raised", type(exc), str(exc))
    return (events, server.data_to_send(), server.state, server.deflate_bits)


@pytest.mark.timeout(int(600 * FACTOR))  # thousands of examples, on a loaded machine
@DIFF
@given(cases(), st.data())
def test_same_answers_as_h11_and_wsproto(
    case_: tuple[bytes, list[int], int], data: st.DataObject
) -> None:
    raw, sizes, limit = case_
    fast = ServerProtocol(max_request_size=limit, max_message_size=1000)
    reference = ServerProtocol(max_request_size=limit, max_message_size=1000, fast=False)
    for chunk in pieces(raw, sizes):
        assert feed(fast, chunk) == feed(reference, chunk)
    assert fast.request == reference.request
    assert fast.decision_pending == reference.decision_pending
    if not fast.decision_pending:
        return
    request = fast.request
    assert isinstance(request, HandshakeRequest)
    subprotocol = data.draw(st.sampled_from([None, "other", *request.subprotocols]))
    compression = data.draw(st.booleans())
    assert accept(fast, subprotocol, compression) == accept(reference, subprotocol, compression)
    if fast.state is State.OPEN:
        more = frame(2, b"after", mask=True) + frame(8, b"\x03\xe8", mask=True)
        assert feed(fast, more) == feed(reference, more)


def plain_head(extra: str = "") -> bytes:
    return (
        "GET /chat?room=1 HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n"
        f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()


def test_plain_head_in_one_read_takes_the_fast_path() -> None:
    server = ServerProtocol()
    [request] = server.receive_data(plain_head("Sec-WebSocket-Protocol: a, b\r\n"))
    assert isinstance(request, HandshakeRequest)
    assert request.path == "/chat" and request.query_string == "room=1"
    assert request.subprotocols == ("a", "b")
    # Neither h11 nor wsproto's handshake was involved.
    assert server._h11 is None and server._handshake is None
    server.accept("b")
    assert server.data_to_send().startswith(b"HTTP/1.1 101 Switching Protocols\r\n")


@pytest.mark.parametrize(
    "data",
    [
        plain_head()[:30],  # cut: the rest comes later
        plain_head("Content-Length: 0\r\n"),  # a body header: h11 decides
        plain_head("X:\xe9\r\n".encode("latin-1").decode("latin-1")),  # obs-text
        plain_head().replace(b"GET", b"POST"),
    ],
)
def test_anything_else_goes_to_h11(data: bytes) -> None:
    server = ServerProtocol()
    server.receive_data(data)
    assert server._h11 is not None or server._handshake is not None or not server.decision_pending


def test_extension_negotiated_through_wsproto() -> None:
    fast, reference = ServerProtocol(), ServerProtocol(fast=False)
    offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    for server in (fast, reference):
        server.receive_data(plain_head(offer))
        server.accept(compression=True)
    assert fast.data_to_send() == reference.data_to_send()
    assert fast.deflate_bits == reference.deflate_bits is not None


def test_random_key_same_accept_token() -> None:
    for _ in range(50):
        key = base64.b64encode(os.urandom(16)).decode()
        head = plain_head().replace(KEY.encode(), key.encode())
        fast, reference = ServerProtocol(), ServerProtocol(fast=False)
        for server in (fast, reference):
            server.receive_data(head)
            server.accept()
        assert fast.data_to_send() == reference.data_to_send()


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1005, 1006, 3000, 999])
@pytest.mark.parametrize("reason", [b"", b"bye"])
@pytest.mark.parametrize("before", [b"", b"hi"])
@pytest.mark.parametrize(("cut", "late"), [(0, False), (0, True), (3, False), (7, True)])
@pytest.mark.parametrize("server_closed", [False, True])
def test_close_frame_same_as_wsproto(
    code: int, reason: bytes, before: bytes, cut: int, late: bool, server_closed: bool
) -> None:
    """The closing handshake: a plain close frame (1000 or 1001, no reason) whole
    in one read is answered without wsproto; every other one, and one cut in two,
    goes to wsproto; both give the same events, reply and state."""
    data = frame(1, before) if before else b""
    data += frame(8, close_payload(code, reason) if code != 1005 else b"")
    data += frame(1, b"late") if late else b""  # bytes after the close: ignored
    results = []
    for fast in (True, False):
        server = ServerProtocol(fast=fast)
        server.receive_data(plain_head())
        server.accept()
        server.data_to_send()
        if server_closed:
            server.close(1001, "going")
            server.data_to_send()
        chunks = [data[: len(data) - cut], data[len(data) - cut :]] if cut else [data]
        results.append([feed(server, chunk) for chunk in chunks])
        if fast and code in (1000, 1001) and not (reason or cut or late or server_closed):
            assert server._ws.state is ConnectionState.OPEN  # wsproto never saw it
    assert results[0] == results[1]
