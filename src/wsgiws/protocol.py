"""The sans-IO protocol of one server-side connection: bytes in, events and bytes out.

Theory of operation
-------------------

:class:`ServerProtocol` parses the opening handshake with h11 (bounded in size), hands
the parsed request to wsproto through ``initiate_upgrade_connection`` — the same entry
point a WSGI server's already-parsed request takes — and then lets wsproto parse and
validate frames. A plain, valid request head that arrives whole in the first read is
parsed and checked here instead, and its 101 written by hand (anything unusual or
refused goes to h11 and wsproto; ``tests/test_handshake_fast_path.py`` checks that both
give the same answers). The common case has a fast path: while wsproto is between frames,
complete unfragmented text and binary frames are parsed here (one header check, one
unmask, one inflation with permessage-deflate, one decode per message) and anything
else is left to wsproto, the reference;
``tests/test_fast_path.py`` checks on random and adversarial streams, cut at random
points, that both give the same events, bytes and close codes. On top of wsproto it
assembles fragmented messages under ``max_message_size`` and maps every failure to
exactly one answer: an HTTP response during the handshake, a close frame afterwards.
It never raises for bad input.

It has no socket, no thread and no clock. The caller feeds bytes with
:meth:`~ServerProtocol.receive_data` (which returns events), issues commands
(:meth:`~ServerProtocol.accept`, :meth:`~ServerProtocol.reject`,
:meth:`~ServerProtocol.send_message`, :meth:`~ServerProtocol.close`, ...) and collects
the bytes to write with :meth:`~ServerProtocol.data_to_send`. The caller serialises
access (one lock per connection).

It owns the connection's :class:`State`: nothing outside it sets the state. Every
byte the server sends goes through it, data frames included: a frame encoded once
for many connections (:class:`PreparedMessage`) is queued as is with
:meth:`~ServerProtocol.send_encoded`, and bytes are handed out without being copied
when a single frame is queued. Frames sent while the handshake is being decided (by
``on_connect``) are kept and queued right after the 101 response, or dropped with
a refusal; :attr:`~ServerProtocol.early_size` lets the caller bound them.

Encoding and compression of data frames happens in :func:`encode_message` and
:class:`PreparedMessage`, outside the caller's lock; the wsproto patch that bounds
inflation lives in :mod:`wsgiws.deflate`.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import dataclasses
import enum
import re
import struct
import threading
import zlib
from collections.abc import Iterable, Sequence
from http import HTTPStatus
from typing import Final, Protocol
from urllib.parse import unquote

import h11
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, Opcode
from wsproto.utilities import (
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    generate_accept_token,
    split_comma_header,
)

from .deflate import BoundedDeflate, between_frames
from .mask import ACCELERATED, apply_mask, apply_mask_in_place

__all__ = [
    "CloseReceived",
    "Failed",
    "HandshakeRequest",
    "MessageReceived",
    "PongReceived",
    "PreparedMessage",
    "ServerProtocol",
    "State",
    "encode_frame",
    "encode_message_parts",
]

Headers = Sequence[tuple[bytes, bytes]]

#: Upper bound of the request line plus headers of the opening handshake. h11's own
#: default (16 KiB) follows node and tomcat; browsers' cookie-heavy handshakes fit.
MAX_REQUEST_SIZE: Final = 16 * 1024
#: RFC 6455 §5.5: control frames carry at most 125 bytes of payload.
MAX_CONTROL_PAYLOAD: Final = 125
#: Messages shorter than this are sent uncompressed even with permessage-deflate:
#: below it deflate rarely saves bytes and always costs CPU (RFC 7692 §6 lets a
#: sender leave any message uncompressed).
COMPRESSION_THRESHOLD: Final = 128
#: An incomplete binary frame on the fast path with at least this many bytes of
#: payload is received into a buffer of its exact size (:meth:`ServerProtocol.receive_buffer`)
#: once a quarter of its payload has arrived; a smaller one waits in the stash.
FRAME_BUFFER_MIN: Final = 16 * 1024
#: Unmask a frame received into its buffer piece by piece as the pieces arrive (in
#: place, while they are in cache), then copy it once into ``bytes``: what suits the
#: pure-Python masking. With the C accelerator the whole payload is unmasked at the
#: end, in the one pass that makes the ``bytes``.
UNMASK_AS_RECEIVED: bool = not ACCELERATED
#: A message of at least this many bytes is queued as its frame header and its
#: payload, not copied into one frame (:func:`encode_message_parts`).
SPLIT_FRAME_MIN: Final = 64 * 1024
#: The largest receive buffer :class:`BufferPool` keeps for reuse.
POOLED_BUFFER_MAX: Final = 4 * 2**20


class BufferPool:
    """Receive buffers of large frames, kept for the next large frame.

    A frame's payload buffer is used from its header to its last byte, then copied
    once into the message's ``bytes``. Allocating a fresh megabyte for every
    message costs more than the copy: the allocator returns freed memory to the
    system and every page of the next buffer faults in again. So a finished buffer
    is kept (one: the longest given back, of at most ``max_size`` bytes) and handed
    to the next large frame that fits, from its header on (a buffer the server
    holds anyway). Safe from any thread (list operations are atomic).
    """

    __slots__ = ("_free", "max_size")

    def __init__(self, max_size: int = POOLED_BUFFER_MAX) -> None:
        self.max_size = max_size
        self._free: list[bytearray] = []

    def take(self, size: int) -> bytearray | None:
        """The kept buffer if it holds at least ``size`` bytes (content undefined),
        else ``None``."""
        try:
            buffer = self._free.pop()
        except IndexError:
            return None
        if len(buffer) >= size:
            return buffer
        self.give(buffer)
        return None

    def give(self, buffer: bytearray) -> None:
        """Return a buffer that nothing uses any more: kept if the pool has none or
        a shorter one, and it is at most ``max_size`` bytes long."""
        if len(buffer) > self.max_size:
            return
        free = self._free
        try:
            if not free:
                free.append(buffer)
            elif len(free[0]) < len(buffer):
                free[0] = buffer
        except IndexError:  # taken by another thread meanwhile
            pass


#: The process's pool, shared by every connection.
frame_buffers: Final = BufferPool()


class State(enum.Enum):
    """Where a connection stands; simpler than wsproto's, which it follows."""

    #: Waiting for, or deciding on, the opening handshake.
    CONNECTING = 1
    #: Handshake accepted; messages flow.
    OPEN = 2
    #: A close frame was sent and the peer's is awaited.
    CLOSING = 3
    #: Nothing more will be sent or received; the transport should be closed.
    CLOSED = 4


@dataclasses.dataclass(frozen=True, slots=True)
class HandshakeRequest:
    """A valid WebSocket upgrade request, to be accepted or rejected.

    Fields:
        target: the request target as sent (path and query string).
        path: the percent-decoded path, without the query string.
        query_string: the raw query string, without ``?``.
        headers: the request headers, names lowercased, in order.
        subprotocols: subprotocols offered by the client, in its order.
        extensions: extension offers, as sent.
    """

    target: str
    path: str
    query_string: str
    headers: tuple[tuple[str, str], ...]
    subprotocols: tuple[str, ...]
    extensions: tuple[str, ...]

    def header(self, name: str) -> str | None:
        """Return the first value of header ``name`` (lowercase), or ``None``."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclasses.dataclass(frozen=True, slots=True)
class MessageReceived:
    """A complete text (``str``) or binary (``bytes``) message."""

    data: str | bytes


@dataclasses.dataclass(frozen=True, slots=True)
class PongReceived:
    """A pong frame, e.g. the answer to a keepalive ping."""

    payload: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class CloseReceived:
    """The peer's close frame; the reply (if owed) is already queued.

    The connection is :attr:`State.CLOSED` afterwards: once the queued bytes are
    written, the transport should be closed (RFC 6455 §7.1.1: the server closes first).
    """

    code: int
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class Failed:
    """The peer broke the protocol, or the handshake was invalid.

    During the handshake an HTTP error response is queued (``status`` is set); after
    it a close frame with ``code`` is queued. Either way the connection is
    :attr:`State.CLOSED`: write what is queued, then close the transport.

    With ``hold_failure_close``, a failure of an open connection holds its close
    frame back instead (:attr:`ServerProtocol.failure_pending`): the state stays
    OPEN for sending, no more input is read, and :meth:`ServerProtocol.close_failed`
    queues the close frame once the messages before the violation were handled.
    """

    code: int
    reason: str
    status: int | None = None


Event = HandshakeRequest | MessageReceived | PongReceived | CloseReceived | Failed


def encode_frame(opcode: Opcode, payload: bytes, *, compressed: bool = False) -> bytes:
    """Encode one unmasked, final frame (a server frame, RFC 6455 §5.2).

    Server frames are not masked, so the same bytes can be written to every member
    of a broadcast; this is why data frames are encoded here rather than by wsproto.
    ``compressed`` sets RSV1, the permessage-deflate bit (RFC 7692 §6).
    """
    return frame_header(opcode, len(payload), compressed=compressed) + payload


def frame_header(opcode: Opcode, size: int, *, compressed: bool = False) -> bytes:
    """The header of an unmasked, final frame of ``size`` bytes of payload."""
    first = 0x80 | (0x40 if compressed else 0) | opcode
    if size < 126:
        return struct.pack("!BB", first, size)
    if size < 65536:
        return struct.pack("!BBH", first, 126, size)
    return struct.pack("!BBQ", first, 127, size)


def _opcode_and_payload(data: str | bytes) -> tuple[Opcode, bytes]:
    if isinstance(data, str):
        return Opcode.TEXT, data.encode()
    if isinstance(data, (bytes, bytearray, memoryview)):
        return Opcode.BINARY, bytes(data)
    raise TypeError(f"message must be str or bytes, not {type(data).__name__}")


class _Compressor(Protocol):
    """What :func:`deflate` uses of a :func:`zlib.compressobj`."""

    def compress(self, data: bytes, /) -> bytes: ...
    def flush(self, mode: int, /) -> bytes: ...


#: Each thread's compressors, by window size (see :func:`deflate`).
_compressors = threading.local()


def deflate(payload: bytes, window_bits: int) -> bytes:
    """Compress one message without context takeover (RFC 7692 §7.2.1).

    Each thread keeps one compressor per window size: setting one up allocates
    and clears some 256 KiB, more than compressing a small message costs. A full
    flush ends each message: it empties the compressor and resets its state, so
    no message refers to an earlier one (what ``server_no_context_takeover``
    promises the client), and it ends with the empty stored block whose
    ``00 00 ff ff`` is left out. If compressing fails, the compressor is dropped.
    """
    cache: dict[int, _Compressor] | None = getattr(_compressors, "by_bits", None)
    if cache is None:
        cache = _compressors.by_bits = {}
    compressor = cache.pop(window_bits, None)
    if compressor is None:
        compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -window_bits)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_FULL_FLUSH)
    cache[window_bits] = compressor
    return data[:-4]  # the empty block's 00 00 ff ff tail is implied


def encode_message(data: str | bytes, deflate_bits: int | None = None) -> bytes:
    """Encode a complete text (``str``) or binary (bytes-like) message as one frame.

    With ``deflate_bits`` (the negotiated server window size) a message of at least
    :data:`COMPRESSION_THRESHOLD` bytes is compressed.
    """
    opcode, payload = _opcode_and_payload(data)
    if deflate_bits is not None and len(payload) >= COMPRESSION_THRESHOLD:
        return encode_frame(opcode, deflate(payload, deflate_bits), compressed=True)
    return encode_frame(opcode, payload)


def encode_message_parts(data: str | bytes, deflate_bits: int | None = None) -> tuple[bytes, bytes]:
    """Like :func:`encode_message`, but a large uncompressed message comes back as its
    header and its payload (``(header, payload)``, the payload not copied), for
    :meth:`ServerProtocol.send_encoded`; else ``(frame, b"")``."""
    if deflate_bits is not None:
        return encode_message(data, deflate_bits), b""
    opcode, payload = _opcode_and_payload(data)
    if len(payload) >= SPLIT_FRAME_MIN:
        return frame_header(opcode, len(payload)), payload
    return encode_frame(opcode, payload), b""


class PreparedMessage:
    """A message encoded once for many connections (broadcasts).

    :meth:`frame` returns the frame for a connection's compression setting, computing
    each variant at most once: plain, and compressed per window size. Connections
    with permessage-deflate always use ``server_no_context_takeover``, so one
    compressed frame suits them all. Safe to share between threads (a race computes
    the same bytes twice, harmlessly).
    """

    __slots__ = ("_frames", "_opcode", "_payload")

    def __init__(self, data: str | bytes) -> None:
        self._opcode, self._payload = _opcode_and_payload(data)
        self._frames: dict[int | None, bytes] = {}

    def frame(self, deflate_bits: int | None = None) -> bytes:
        """Return the frame for a connection whose negotiated window is ``deflate_bits``."""
        if deflate_bits is not None and len(self._payload) < COMPRESSION_THRESHOLD:
            deflate_bits = None
        frame = self._frames.get(deflate_bits)
        if frame is None:
            if deflate_bits is None:
                frame = encode_frame(self._opcode, self._payload)
            else:
                compressed = deflate(self._payload, deflate_bits)
                frame = encode_frame(self._opcode, compressed, compressed=True)
            self._frames[deflate_bits] = frame
        return frame


#: Request headers that may appear only once in a handshake (RFC 9110 §5.3: a
#: field that is not a list cannot be combined). Sec-WebSocket-Key and -Version:
#: RFC 6455 §11.3.1 and §11.3.5; Origin: RFC 6454 §7.3; Host: RFC 9112 §3.2.
SINGLE_VALUE_HEADERS: Final = (
    b"host",
    b"origin",
    b"sec-websocket-key",
    b"sec-websocket-version",
    b"upgrade",
    b"content-length",
)
#: The header names as the refusal spells them.
_HEADER_SPELLING: Final = {
    b"host": "Host",
    b"origin": "Origin",
    b"sec-websocket-key": "Sec-WebSocket-Key",
    b"sec-websocket-version": "Sec-WebSocket-Version",
    b"upgrade": "Upgrade",
    b"content-length": "Content-Length",
}


def _repeated_header(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    seen: set[bytes] = set()
    for name, _ in headers:
        key = name.lower()
        if key in SINGLE_VALUE_HEADERS:
            if key in seen:
                return f"the {_HEADER_SPELLING[key]} header must appear only once"
            seen.add(key)
    return None


def _valid_key(key: bytes) -> bool:
    """True when ``key`` is the base64 encoding of 16 bytes (RFC 6455 §4.1)."""
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def _check_upgrade_headers(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """Check what RFC 6455 §4.2.1 requires beyond wsproto's checks; name a problem."""
    fields = {name.lower(): value.strip() for name, value in headers}
    if not fields.get(b"host"):
        return "the Host header is missing or empty"
    if not _valid_key(fields.get(b"sec-websocket-key", b"")):
        return "Sec-WebSocket-Key must be the base64 encoding of 16 bytes"
    if fields.get(b"content-length", b"0") not in (b"", b"0") or b"transfer-encoding" in fields:
        return "a WebSocket handshake must not have a body"
    return None


def compressed_size_bound(size: int) -> int:
    """The most bytes deflate may need for ``size`` bytes of input (zlib's bound).

    A compressed frame may announce this much for a message of ``size`` bytes: data
    that does not compress is stored in blocks that add a few bytes each.
    """
    return size + (size >> 12) + (size >> 14) + (size >> 25) + 64


class DeclaredSize:
    """Follows frame boundaries in the inbound stream and checks declared lengths.

    wsproto reads a data frame's payload as it arrives and only reports it in
    pieces; the size of a message is then known only once the bytes are in. RFC
    6455 §10.4 lets a server refuse a message as soon as its frame header announces
    more than it will take. This scanner reads every frame header (2 to 14 bytes,
    kept across reads) and skips the payload by counting, so it costs nothing per
    payload byte. It adds up the lengths of a fragmented message's frames.

    :meth:`feed` returns the offset just past the header that breaks the limit, or
    ``None``. Headers that wsproto refuses anyway (reserved opcodes, a continuation
    with no message, a new message inside one) are left to wsproto, which sees
    them first and answers 1002.

    Args:
        limit: ``max_message_size`` in bytes.
        deflate: whether permessage-deflate was negotiated. A compressed (RSV1)
            message counts against :func:`compressed_size_bound` of the limit, as
            its frames carry compressed bytes; inflation is bounded separately.
    """

    __slots__ = ("_compressed", "_head", "_in_message", "_skip", "deflate", "limit", "total")

    def __init__(self, limit: int, *, deflate: bool = False) -> None:
        self.limit = limit
        self.deflate = deflate
        #: Bytes announced so far by the frames of the current data message.
        self.total = 0
        self._head = bytearray()
        self._skip = 0
        self._in_message = False
        self._compressed = False

    @staticmethod
    def _header_size(head: bytearray) -> int:
        size = 2 + (4 if head[1] & 0x80 else 0)
        short = head[1] & 0x7F
        return size + (2 if short == 126 else 8 if short == 127 else 0)

    def feed(self, data: bytes | bytearray | memoryview) -> int | None:
        """Scan ``data``; return the offset just past an oversized frame's header."""
        i, n = 0, len(data)
        head = self._head
        while i < n:
            if self._skip:
                step = min(self._skip, n - i)
                self._skip -= step
                i += step
                continue
            want = 2 if len(head) < 2 else self._header_size(head)
            take = min(want - len(head), n - i)
            head += data[i : i + take]
            i += take
            if len(head) < 2 or len(head) < self._header_size(head):
                continue
            length = head[1] & 0x7F
            if length == 126:
                length = int.from_bytes(head[2:4], "big")
            elif length == 127:
                length = int.from_bytes(head[2:10], "big")
            first = head[0]
            head.clear()
            self._skip = length
            if self._check(first, length):
                return i
        return None

    def at_boundary(self) -> bool:
        """True between frames and outside a fragmented message: a complete frame
        that is a whole message may be skipped without feeding it."""
        return not self._skip and not self._head and not self._in_message

    def _check(self, first: int, length: int) -> bool:
        """Account one frame header; True if its message is now too big."""
        opcode, fin = first & 0x0F, bool(first & 0x80)
        if opcode in (Opcode.TEXT, Opcode.BINARY):
            if self._in_message:
                return False  # wsproto fails it (1002); no longer our count
            self._in_message = True
            self._compressed = self.deflate and bool(first & 0x40)
            self.total = length
        elif opcode == Opcode.CONTINUATION and self._in_message:
            self.total += length
        else:
            return False  # control frame, or refused by wsproto anyway
        if fin:
            self._in_message = False
        limit = compressed_size_bound(self.limit) if self._compressed else self.limit
        return self.total > limit


def _utf8_error(data: bytes) -> str:
    """The reason wsproto gives for a whole text message that is not UTF-8."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(data, True)
    except UnicodeDecodeError as exc:
        return str(exc)
    raise ValueError("valid UTF-8")  # pragma: no cover


#: The request line the handshake fast path takes (anything else goes to h11): GET,
#: an origin-form target of visible ASCII, HTTP/1.1.
_FAST_REQUEST_LINE: Final = re.compile(rb"GET (/[\x21-\x7e]*) HTTP/1\.1")
#: A header line the fast path takes: a token, a colon, a value of visible ASCII
#: with inner spaces and tabs, optional whitespace around it (RFC 9110 §5.5).
_FAST_HEADER_LINE: Final = re.compile(
    rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*((?:[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?)?)[ \t]*"
)
#: Headers whose handling the fast path leaves to h11 and wsproto.
_FAST_REFUSED: Final = frozenset((b"content-length", b"transfer-encoding"))
#: The 101 response's first lines, as wsproto (through h11) writes them.
_SWITCHING: Final = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
)


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


class ServerProtocol:
    """The protocol state of one server connection (see the module docstring).

    Args:
        max_message_size: largest message accepted, in bytes; ``None`` for no limit.
            A larger one fails the connection with 1009.
        max_request_size: largest opening-handshake request head, in bytes.
        hold_failure_close: on a protocol violation of the peer, hold the close frame
            back until :meth:`close_failed`, so that the answers to the messages
            received before the violation can go out first (see :class:`Failed`).
        fast: parse a plain request head that arrives whole without h11 and wsproto
            (see :meth:`_fast_handshake`), and whole unfragmented data frames without
            wsproto when it is between frames (see :meth:`_fast_frames`); ``False``
            leaves every byte to h11 and wsproto (the reference both fast paths are
            tested against).
    """

    # Slots: one of these lives as long as its connection (memory per connection).
    __slots__ = (
        "_declared",
        "_deflate",
        "_early",
        "_early_size",
        "_fast",
        "_fast_allowed",
        "_frame",
        "_frame_key",
        "_frame_len",
        "_frame_pos",
        "_h11",
        "_handshake",
        "_held_close",
        "_http_done",
        "_out",
        "_parts",
        "_pending",
        "_raw_request",
        "_seen",
        "_size",
        "_stash",
        "_ws",
        "deflate_bits",
        "hold_failure_close",
        "max_message_size",
        "max_request_size",
        "request",
        "state",
    )

    #: wsproto's frame protocol: set at accept (the slot is empty until then).
    _ws: Connection

    def __init__(
        self,
        *,
        max_message_size: int | None = None,
        max_request_size: int = MAX_REQUEST_SIZE,
        hold_failure_close: bool = False,
        fast: bool = True,
    ) -> None:
        self.max_message_size = max_message_size
        self.hold_failure_close = hold_failure_close
        # The close frame (code, reason) held back after a violation of the peer.
        self._held_close: tuple[int, str] | None = None
        self._fast_allowed = fast
        # Set at accept: the fast path runs.
        self._fast = False
        # The permessage-deflate extension, when negotiated: the fast path inflates
        # with it, on the decompressor wsproto uses too.
        self._deflate: BoundedDeflate | None = None
        # The fast path's bytes of a data frame still incomplete, when it took one.
        self._stash = bytearray()
        # A large binary frame being received by the fast path: its payload buffer
        # (from frame_buffers, maybe longer than the payload), the payload's length,
        # how much of it arrived, and its masking key.
        self._frame: bytearray | None = None
        self._frame_len = 0
        self._frame_pos = 0
        self._frame_key = b""
        self.max_request_size = max_request_size
        #: The negotiated server window size when permessage-deflate is on, else None.
        self.deflate_bits: int | None = None
        # Bytes fed during the handshake, to bound the request head.
        self._seen = 0
        self.state = State.CONNECTING
        #: The accepted handshake, once parsed.
        self.request: HandshakeRequest | None = None
        # h11, created only when the request head does not arrive whole and plain in
        # the first read (the fast path, _fast_handshake, parses that one itself).
        self._h11: h11.Connection | None = None
        # Set once the request head is parsed (or came parsed from a WSGI server).
        self._http_done = False
        # The fast path's request (target, raw headers), for wsproto if an extension
        # is to be negotiated at accept.
        self._raw_request: tuple[bytes, list[tuple[bytes, bytes]]] | None = None
        # wsproto's handshake, for a request the fast path did not take; once
        # accepted, only its Connection is kept (in _ws, set at accept).
        self._handshake: WSConnection | None = None
        # Bytes queued for the peer, as chunks: a lone frame is handed out as is.
        self._out: list[bytes] = []
        # Frames sent while the handshake is decided, queued after the 101.
        self._early: list[bytes] = []
        self._early_size = 0
        # Bytes received after the request head, replayed once the handshake is
        # accepted (wsproto itself would drop them).
        self._pending = b""
        # Checks frame headers against max_message_size once the handshake is done.
        self._declared: DeclaredSize | None = None
        # The message being assembled: its parts and size so far.
        self._parts: list[str] | list[bytes] = []
        self._size = 0

    # -- output --------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Return and forget the bytes queued for the peer."""
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

    def data_to_send_parts(self) -> tuple[bytes, bytes]:
        """Like :meth:`data_to_send`, as ``(data, payload)``: when the last thing
        queued is the payload of a large frame (:meth:`send_encoded`), it is handed
        out as ``payload``, not copied; else ``payload`` is empty."""
        out = self._out
        if len(out) > 1 and len(out[-1]) >= SPLIT_FRAME_MIN:
            payload = out.pop()
            return self.data_to_send(), payload
        return self.data_to_send(), b""

    @property
    def decision_pending(self) -> bool:
        """True from a valid handshake request until it is accepted or rejected."""
        return self.state is State.CONNECTING and self.request is not None

    @property
    def early_size(self) -> int:
        """Bytes of the frames sent before the handshake was accepted, kept for after it."""
        return self._early_size

    # -- input ---------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Feed bytes received from the peer; return the events they complete.

        ``data`` is not kept: the caller may reuse its buffer afterwards.
        """
        if self.state is State.CONNECTING:
            return self._receive_handshake(bytes(data))
        if self.state is State.CLOSED or self._held_close is not None:
            return []  # late bytes after the close or a violation: discarded
        frame = self._frame
        if frame is not None:
            view = memoryview(data)
            take = min(self._frame_len - self._frame_pos, len(view))
            frame[self._frame_pos : self._frame_pos + take] = view[:take]
            events = self._frame_received(take)
            if take < len(view):
                events += self.receive_data(view[take:])
            return events
        if self._fast and (self._stash or self._wsproto_between_frames()):
            events, used = self._fast_frames(data)
            if used == len(data):
                return events
            rest = bytes(data[used:])
            close = self._plain_close(rest)
            if close is not None:
                events.append(close)
            else:
                events += self._receive_slow(rest)
            return events
        return self._receive_slow(bytes(data))

    def receive_buffer(self) -> memoryview | None:
        """Where the next bytes from the peer may be received directly, or ``None``.

        While a large binary frame is being received by the fast path, a writable
        view of the rest of its payload: the caller may ``recv_into`` it (never more
        than the frame holds) and then report the count with :meth:`received_into`,
        sparing the copy from a read buffer. Else the caller uses
        :meth:`receive_data`. Only the caller that feeds input may call this.
        """
        frame = self._frame
        if frame is None:
            return None
        return memoryview(frame)[self._frame_pos : self._frame_len]

    def received_into(self, size: int) -> list[Event]:
        """Report ``size`` bytes written into the view from :meth:`receive_buffer`;
        return the events they complete (the frame's message, once whole)."""
        if self._frame is None:
            return []  # the connection was closed meanwhile: discarded
        return self._frame_received(size)

    def _frame_received(self, size: int) -> list[Event]:
        frame = self._frame
        assert frame is not None
        start = self._frame_pos
        end = self._frame_pos = start + size
        if UNMASK_AS_RECEIVED:
            apply_mask_in_place(frame, self._frame_key, start, end)
        if end < self._frame_len:
            return []
        self._frame = None
        with memoryview(frame)[:end] as payload:
            # The one copy of the message, into the bytes handed to the handler.
            key = self._frame_key
            message = bytes(payload) if UNMASK_AS_RECEIVED else apply_mask(payload, key)
        frame_buffers.give(frame)
        return [MessageReceived(message)]

    def _wsproto_between_frames(self) -> bool:
        """True when wsproto holds no byte and no message in progress, and the
        declared-size scanner is between frames too."""
        return (
            not self._parts
            and (self._declared is None or self._declared.at_boundary())
            and between_frames(self._ws)
        )

    def _fast_frames(self, data: bytes | bytearray | memoryview) -> tuple[list[Event], int]:
        """Parse the complete, unfragmented, masked text and binary frames at the
        start of ``data``; return their messages and how many bytes of ``data`` were
        used (all of them when the rest went to wsproto or to the stash).

        Called only when wsproto is between frames (or with a stash, which began
        between frames), so these frames mean exactly what wsproto would make of
        them. The first frame of any other kind (control, fragment, reserved bits,
        unmasked, over the limit, invalid UTF-8, a length not minimally encoded)
        stops the fast path: it and what follows are left to wsproto. An incomplete
        binary frame whose header passed is kept in ``_stash`` (at most
        ``max_message_size`` plus one read) until it is whole, or, when it is large
        and a quarter of its payload is in, received into a buffer of its payload's
        exact size (``_frame``, see :meth:`receive_buffer`); an incomplete text
        frame goes to wsproto, which checks its UTF-8 as it arrives.

        With permessage-deflate, a whole frame with RSV1 (and no other reserved
        bit) is a compressed message: it is inflated by
        :meth:`~wsgiws.deflate.BoundedDeflate.inflate_message`, on the decompressor
        wsproto uses for the frames it parses, so the two may alternate with or
        without context takeover. Compressed frames are never stashed (wsproto
        inflates an incomplete one as it arrives), and one that fails is answered
        here (see :meth:`_inflated_message`).
        """
        events: list[Event] = []
        stash = self._stash
        buf: bytes | bytearray | memoryview
        if stash:
            stash += data
            buf = stash
        else:
            buf = data
        limit = self.max_message_size
        inflater = self._deflate
        # What a compressed frame may announce (as DeclaredSize allows it).
        zlimit = 0 if limit is None else compressed_size_bound(limit)
        n = len(buf)
        i = 0
        while n - i >= 6:
            first = buf[i]
            second = buf[i + 1]
            opcode = first ^ 0x80
            compressed = False
            if opcode != 1 and opcode != 2:
                # RSV1 alone: a compressed message, with permessage-deflate (RFC 7692 §6).
                if inflater is None or (opcode != 0x41 and opcode != 0x42):
                    break  # not FIN, other reserved bits, another opcode
                opcode ^= 0x40
                compressed = True
            if not second & 0x80:
                break  # unmasked
            length = second & 0x7F
            if length < 126:
                start = i + 6
            elif length == 126:
                start = i + 8
                if n < start:
                    break
                length = (buf[i + 2] << 8) | buf[i + 3]
                if length < 126:
                    break
            else:
                start = i + 14
                if n < start:
                    break
                length = int.from_bytes(buf[i + 2 : i + 10], "big")
                if length < 65536 or length >> 63:
                    break
            if limit is not None and length > (zlimit if compressed else limit):
                break
            end = start + length
            if end > n:
                if opcode != 2 or compressed:
                    break  # wsproto reads (and inflates, checks) it as it arrives
                have = n - start
                # Receive the rest straight into a buffer of the payload's size: the
                # pool's if it has one, else a new one once a quarter of the payload
                # is in (a header alone must not make the server allocate what it
                # announces).
                frame = None
                if length >= FRAME_BUFFER_MIN:
                    frame = frame_buffers.take(length)
                    if frame is None and have * 4 >= length:
                        frame = bytearray(length)
                if frame is not None:
                    self._frame = frame
                    self._frame_len = length
                    self._frame_key = bytes(buf[start - 4 : start])
                    self._frame_pos = 0
                    self._frame[:have] = memoryview(buf)[start:n]
                    stash.clear()
                    events += self._frame_received(have)
                    return events, len(data)
                # Keep the incomplete binary frame; wsproto sees none of it yet.
                if buf is stash:
                    del stash[:i]
                else:
                    stash += buf[i:]
                return events, len(data)
            # A view of the stash, not a slice: one copy of a large payload less (a
            # temporary, released before the stash is resized below).
            payload = apply_mask(
                memoryview(stash)[start:end] if buf is stash else buf[start:end],
                bytes(buf[start - 4 : start]),
            )
            if compressed:
                assert inflater is not None
                message = self._inflated_message(inflater, payload, opcode)
                events.append(message)
                if type(message) is Failed:
                    stash.clear()
                    return events, len(data)  # what follows is discarded
                i = end
                continue
            if opcode == 1:
                try:
                    events.append(MessageReceived(payload.decode()))
                except UnicodeDecodeError:
                    break
            else:
                events.append(MessageReceived(payload))
            i = end
        if buf is stash:
            rest = bytes(stash[i:])
            stash.clear()
            if rest:
                events += self._receive_slow(rest)
            return events, len(data)
        return events, i

    def _inflated_message(
        self, inflater: BoundedDeflate, payload: bytes, opcode: int
    ) -> MessageReceived | Failed:
        """The message of a whole compressed frame, or the failure wsproto answers it with.

        The decompressor has moved on once the frame is inflated, so wsproto could
        not take a frame that fails over: the answer is given here, with wsproto's
        codes and reasons (1007 "error in extension" for corrupt deflate data, 1009
        past ``max_message_size``, 1007 with the codec's message for text that is
        not UTF-8), which ``tests/test_fast_path.py`` compares with wsproto's own.
        """
        data = inflater.inflate_message(payload)
        if isinstance(data, CloseReason):
            return self._peer_failed(data, "error in extension")
        if opcode == 2:
            return MessageReceived(data)
        try:
            return MessageReceived(data.decode())
        except UnicodeDecodeError:
            return self._peer_failed(CloseReason.INVALID_FRAME_PAYLOAD_DATA, _utf8_error(data))

    def _plain_close(self, data: bytes) -> CloseReceived | None:
        """Answer ``data`` if it is exactly a client's close frame with code 1000 or
        1001 and no reason (what a closing client sends) while the connection is
        open; else return ``None`` and leave it to wsproto.

        Called only when wsproto is between frames, so the frame means to wsproto
        what it means here: the same reply (the code echoed), the same event, the
        connection over (checked against wsproto by ``tests/test_fast_path.py``).
        """
        if len(data) != 8 or data[0] != 0x88 or data[1] != 0x82 or self.state is not State.OPEN:
            return None
        code = ((data[6] ^ data[2]) << 8) | (data[7] ^ data[3])
        if code != CloseReason.NORMAL_CLOSURE and code != CloseReason.GOING_AWAY:
            return None
        self._out.append(struct.pack("!BBH", 0x88, 2, code))
        self._closed()
        return CloseReceived(code, "")

    def _receive_slow(self, data: bytes) -> list[Event]:
        """Feed bytes to wsproto (through the declared-size check)."""
        if self._declared is not None:
            end = self._declared.feed(data)
            if end is not None:
                # Frames before the oversized one are parsed as usual, and its
                # header too (wsproto may refuse it for another reason first);
                # none of its payload is read.
                self._ws.receive_data(data[:end])
                events = self._frame_events()
                if not self._is_closed() and self._held_close is None:
                    total = self._declared.total
                    events.append(
                        self._fail(
                            CloseReason.MESSAGE_TOO_BIG,
                            f"message of {total} bytes announced, over max_message_size "
                            f"of {self.max_message_size} bytes",
                        )
                    )
                return events
        self._ws.receive_data(data)
        return self._frame_events()

    def receive_eof(self) -> list[Event]:
        """Tell that the peer closed its side; return the resulting events."""
        if self.state is State.CLOSED:
            return []
        self._closed()
        return [Failed(CloseReason.ABNORMAL_CLOSURE, "connection lost")]

    def connection_lost(self) -> None:
        """Tell that the transport is gone: nothing more is sent or received."""
        self._closed()

    def _closed(self) -> None:
        self.state = State.CLOSED
        self._early.clear()
        self._stash = bytearray()
        self._frame = None

    def start_from_request(self, target: str, headers: Iterable[tuple[str, str]]) -> Event:
        """Start from a request head that a WSGI server already parsed.

        Returns the :class:`HandshakeRequest` to decide on, or :class:`Failed` with
        the error response queued.
        """
        self._http_done = True
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        return self._upgrade(target.encode("latin-1"), raw)

    def _receive_handshake(self, data: bytes) -> list[Event]:
        if self._http_done or self.request is not None:
            # Decision pending: keep what arrives for after the 101 (bounded by the
            # caller, which stops reading while it decides).
            self._pending += data
            return []
        if self._h11 is None:
            if self._fast_allowed and not self._seen:
                request = self._fast_handshake(data)
                if request is not None:
                    return [request]
            self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_request_size)
        self._seen += len(data)
        self._h11.receive_data(data)
        try:
            event = self._h11.next_event()
        except h11.RemoteProtocolError as exc:
            return [self._fail_handshake(exc.error_status_hint, str(exc))]
        if event is h11.NEED_DATA:
            return []
        if isinstance(event, h11.ConnectionClosed) or not isinstance(event, h11.Request):
            self._closed()
            return [Failed(CloseReason.ABNORMAL_CLOSURE, "connection closed during handshake")]
        # h11 bounds a head that arrives in pieces; this bounds one that arrives whole.
        head_size = self._seen - len(self._h11.trailing_data[0])
        if head_size > self.max_request_size:
            result: Event = self._fail_handshake(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                f"request head of {head_size} bytes exceeds the limit of "
                f"{self.max_request_size} bytes",
            )
        elif event.http_version != b"1.1":
            # RFC 6455 §4.1: the handshake is an HTTP/1.1 request. RFC 9110 §15.6.6:
            # 505 for a major version the server does not support; HTTP/1.0 and
            # HTTP/2.0 in a request line cannot carry this upgrade either.
            result = self._fail_handshake(
                HTTPStatus.HTTP_VERSION_NOT_SUPPORTED,
                "a WebSocket handshake must use HTTP/1.1, not "
                f"HTTP/{event.http_version.decode('ascii', 'replace')}",
            )
        elif event.method != b"GET":
            # Checked here: initiate_upgrade_connection() assumes GET.
            result = self._fail_handshake(
                HTTPStatus.METHOD_NOT_ALLOWED,
                "a WebSocket handshake must use GET",
                [(b"Allow", b"GET")],
            )
        else:
            result = self._upgrade(event.target, list(event.headers.raw_items()))
        # A GET has no body: the next event is EndOfMessage, then h11 pauses for the
        # 101; what follows the head is the start of the WebSocket stream.
        try:
            while self._h11.next_event() not in (h11.PAUSED, h11.NEED_DATA):
                pass
        except h11.RemoteProtocolError:
            pass  # reported by the upgrade checks already, or harmless
        self._pending = self._h11.trailing_data[0]
        self._h11 = None  # done with HTTP: h11's state is not kept for the connection
        self._http_done = True
        return [result]

    def _fast_handshake(self, data: bytes) -> HandshakeRequest | None:
        """Parse and check a plain request head that arrived whole in the first read;
        return the request, or ``None`` to leave everything to h11 and wsproto.

        Plain means: a request line and header lines that h11 reads the same way
        (:data:`_FAST_REQUEST_LINE`, :data:`_FAST_HEADER_LINE`), no body header, no
        header repeated that must be single, one Connection line, and every check of
        wsproto and :func:`_check_upgrade_headers` passed. Any refusal is left to the
        reference path, so the answers to bad requests are h11's and wsproto's;
        ``tests/test_handshake_fast_path.py`` checks that both give the same requests,
        answers and bytes on random and adversarial heads cut at random points.
        """
        end = data.find(b"\r\n\r\n")
        if end < 0 or end + 4 > self.max_request_size:
            return None
        lines = data[:end].split(b"\r\n")
        line = _FAST_REQUEST_LINE.fullmatch(lines[0])
        if line is None:
            return None
        target = line.group(1)
        raw: list[tuple[bytes, bytes]] = []
        fields: dict[bytes, bytes] = {}
        subprotocols: list[str] = []
        extensions: list[str] = []
        for line_ in lines[1:]:
            header = _FAST_HEADER_LINE.fullmatch(line_)
            if header is None:
                return None
            name, value = header.groups()
            raw.append((name, value))
            key = name.lower()
            if key == b"sec-websocket-protocol":
                subprotocols += split_comma_header(value)
            elif key == b"sec-websocket-extensions":
                extensions += split_comma_header(value)
            elif key in _FAST_REFUSED or (
                key in fields and (key in SINGLE_VALUE_HEADERS or key == b"connection")
            ):
                return None
            fields[key] = value
        # wsproto's checks, then those of _check_upgrade_headers (the values are
        # stripped already, and no body header is here).
        host = fields.get(b"host")
        connection = fields.get(b"connection")
        if (
            not host
            or connection is None
            or fields.get(b"sec-websocket-version") != b"13"
            or fields.get(b"upgrade", b"").lower() != b"websocket"
            or not any(token.lower() == "upgrade" for token in split_comma_header(connection))
            or not _valid_key(fields.get(b"sec-websocket-key", b""))
        ):
            return None
        text = target.decode("ascii")
        path, _, query = text.partition("?")
        try:
            host.decode("idna")  # as wsproto does
            if "%" in path:
                path = unquote(path, errors="strict")
        except UnicodeError:
            return None
        self._http_done = True
        self._raw_request = (target, raw)
        self._pending = data[end + 4 :]
        self.request = HandshakeRequest(
            target=text,
            path=path,
            query_string=query,
            headers=tuple((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw),
            subprotocols=tuple(subprotocols),
            extensions=tuple(extensions),
        )
        return self.request

    def _upgrade(self, target: bytes, headers: list[tuple[bytes, bytes]]) -> Event:
        # Repeated single-value headers first: wsproto would silently use the last.
        problem = _repeated_header(headers)
        if problem is not None:
            return self._fail_handshake(HTTPStatus.BAD_REQUEST, problem)
        # A list header may come in several lines (RFC 9110 §5.3); wsproto reads
        # only the last Connection line, so the lines are combined first.
        connection = [v for k, v in headers if k.lower() == b"connection"]
        if len(connection) > 1:
            headers = [(k, v) for k, v in headers if k.lower() != b"connection"]
            headers.append((b"connection", b", ".join(connection)))
        # wsproto validates the upgrade headers and answers with the right status
        # (400, or 426 with Sec-WebSocket-Version: 13 for a wrong version); then the
        # requirements of RFC 6455 §4.2.1 that wsproto leaves unchecked.
        try:
            self._handshake = WSConnection(ConnectionType.SERVER)
            self._handshake.initiate_upgrade_connection(headers, target)
            events = list(self._handshake.events())
            request = events[0]
            assert isinstance(request, Request)
            path, _, query = request.target.partition("?")
            if "%" in path:
                path = unquote(path, errors="strict")
        except RemoteProtocolError as exc:
            hint = exc.event_hint
            status = hint.status_code if isinstance(hint, RejectConnection) else 400
            extra = list(hint.headers) if isinstance(hint, RejectConnection) else []
            return self._fail_handshake(status, str(exc), extra)
        except (ProtocolError, h11.ProtocolError, UnicodeError) as exc:
            return self._fail_handshake(HTTPStatus.BAD_REQUEST, f"invalid request: {exc}")
        problem = _check_upgrade_headers(headers)
        if problem is not None:
            return self._fail_handshake(HTTPStatus.BAD_REQUEST, problem)
        self.request = HandshakeRequest(
            target=request.target,
            path=path,
            query_string=query,
            headers=tuple((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in headers),
            subprotocols=tuple(request.subprotocols),
            extensions=tuple(str(e) for e in request.extensions),
        )
        return self.request

    def _fail_handshake(
        self, status: int, reason: str, headers: list[tuple[bytes, bytes]] | None = None
    ) -> Failed:
        self.reject(status, reason, headers or [])
        return Failed(CloseReason.PROTOCOL_ERROR, reason, status)

    def _frame_events(self) -> list[Event]:
        events: list[Event] = []
        for event in self._ws.events():
            if isinstance(event, (TextMessage, BytesMessage)):
                data = event.data
                self._size += _utf8_len(data) if isinstance(data, str) else len(data)
                limit = self.max_message_size
                # Defence in depth: DeclaredSize stops a message whose frames announce
                # too much, BoundedDeflate one that inflates too much, both earlier.
                if limit is not None and self._size > limit:  # pragma: no cover
                    events.append(
                        self._fail(
                            CloseReason.MESSAGE_TOO_BIG,
                            f"message of {self._size} bytes or more exceeds "
                            f"max_message_size of {limit} bytes",
                        )
                    )
                    return events
                self._parts.append(data)  # type: ignore[arg-type]
                if event.message_finished:
                    parts, self._parts, self._size = self._parts, [], 0
                    if len(parts) == 1:
                        events.append(MessageReceived(parts[0]))
                    elif isinstance(data, str):
                        events.append(MessageReceived("".join(parts)))  # type: ignore[arg-type]
                    else:
                        events.append(MessageReceived(b"".join(parts)))  # type: ignore[arg-type]
            elif isinstance(event, Ping):
                if self.state is State.OPEN:
                    self._out.append(self._ws.send(event.response()))
            elif isinstance(event, Pong):
                events.append(PongReceived(bytes(event.payload)))
            else:  # once open, wsproto yields no other event
                assert isinstance(event, CloseConnection), event
                if self._ws.state is ConnectionState.OPEN:
                    # wsproto reports a frame it could not parse as a close event
                    # while staying OPEN: this is a protocol failure of the peer.
                    events.append(self._peer_failed(event.code, event.reason or ""))
                    return events
                if self._ws.state is ConnectionState.REMOTE_CLOSING:
                    self._out.append(self._ws.send(event.response()))
                self._closed()
                events.append(CloseReceived(int(event.code), event.reason or ""))
                return events
        return events

    def _peer_failed(self, code: int, reason: str) -> Failed:
        """Fail the connection for a frame wsproto refused with ``code`` and ``reason``."""
        if code == CloseReason.MESSAGE_TOO_BIG:
            reason = f"message inflates beyond max_message_size of {self.max_message_size} bytes"
        return self._fail(code, reason)

    def _is_closed(self) -> bool:
        # A method, so that a type checker does not narrow self.state for good.
        return self.state is State.CLOSED

    def _fail(self, code: int, reason: str) -> Failed:
        if self.hold_failure_close and self.state is State.OPEN:
            self._held_close = (code, reason)
            return Failed(code, reason)
        if self._ws.state is ConnectionState.OPEN:
            self._out.append(self._ws.send(CloseConnection(code=code, reason=reason[:120])))
        self._closed()
        return Failed(code, reason)

    @property
    def failure_pending(self) -> bool:
        """True from a violation of the peer until :meth:`close_failed` (held close)."""
        return self._held_close is not None and self.state is not State.CLOSED

    def close_failed(self) -> bool:
        """Queue the close frame held back after a violation; the state becomes CLOSED.

        Returns False, doing nothing, when no close is held (or it was queued
        already). If the server started a closing handshake meanwhile, its close
        frame stands and none is added.
        """
        if not self.failure_pending:
            return False
        assert self._held_close is not None
        code, reason = self._held_close
        if self._ws.state is ConnectionState.OPEN:
            self._out.append(self._ws.send(CloseConnection(code=code, reason=reason[:120])))
        self._closed()
        return True

    # -- commands ------------------------------------------------------------------

    def accept(
        self,
        subprotocol: str | None = None,
        extra_headers: Headers = (),
        *,
        compression: bool = False,
    ) -> list[Event]:
        """Accept the handshake (queue the 101, then the frames sent meanwhile); return
        events from bytes that were received after the request, now parsed as frames.

        With ``compression``, permessage-deflate is negotiated if the client offers it.
        """
        if self.state is not State.CONNECTING or self.request is None:
            raise ProtocolError(f"cannot accept in state {self.state.name}")
        extensions: list[BoundedDeflate] = []
        if compression and any(
            offer.split(";")[0].strip() == PerMessageDeflate.name
            for offer in self.request.extensions
        ):
            extensions.append(BoundedDeflate(self.max_message_size))
        ws = self._handshake
        if ws is None and not extensions and not extra_headers:
            # A request of the fast path, nothing to negotiate: the 101 wsproto
            # would write (tests/test_handshake_fast_path.py compares the bytes).
            self._out.append(self._switching_protocols(self.request, subprotocol))
            self._ws = Connection(ConnectionType.SERVER)
        else:
            if ws is None:
                # A request of the fast path with an extension to negotiate: wsproto
                # reads the request here, as it would have at the handshake.
                assert self._raw_request is not None
                target, raw = self._raw_request
                ws = WSConnection(ConnectionType.SERVER)
                ws.initiate_upgrade_connection(raw, target)
                list(ws.events())
            self._out.append(
                ws.send(
                    AcceptConnection(
                        subprotocol=subprotocol,
                        extra_headers=list(extra_headers),
                        extensions=extensions,  # type: ignore[arg-type]
                    )
                )
            )
            if extensions and extensions[0].enabled():
                self.deflate_bits = extensions[0].server_max_window_bits
                self._deflate = extensions[0]
            assert ws.connection is not None
            self._ws = ws.connection
        self._raw_request = self._handshake = None
        if self.max_message_size is not None:
            self._declared = DeclaredSize(
                self.max_message_size, deflate=self.deflate_bits is not None
            )
        self.state = State.OPEN
        self._fast = self._fast_allowed
        # Frames sent during the decision were encoded without knowing whether
        # compression would be negotiated: they are plain frames, valid either way.
        self._out += self._early
        self._early.clear()
        self._early_size = 0
        pending, self._pending = self._pending, b""
        if pending:
            return self.receive_data(pending)
        return []

    @staticmethod
    def _switching_protocols(request: HandshakeRequest, subprotocol: str | None) -> bytes:
        key = request.header("sec-websocket-key")
        assert key is not None  # checked by _fast_handshake
        token = generate_accept_token(key.encode("latin-1"))
        if subprotocol is None:
            return b"%sSec-WebSocket-Accept: %s\r\n\r\n" % (_SWITCHING, token)
        if subprotocol not in request.subprotocols:
            raise LocalProtocolError(f"unexpected subprotocol {subprotocol}")
        return b"%sSec-WebSocket-Accept: %s\r\nSec-WebSocket-Protocol: %s\r\n\r\n" % (
            _SWITCHING,
            token,
            subprotocol.encode("ascii"),
        )

    def reject(self, status: int, reason: str = "", headers: Headers = ()) -> None:
        """Refuse the handshake with an HTTP error response (``reason`` as its body)."""
        if self.state is not State.CONNECTING:
            raise ProtocolError(f"cannot reject in state {self.state.name}")
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        body = (reason or phrase).encode() + b"\n"
        # Written by hand rather than through h11: the request may not even have
        # parsed, which leaves h11 in no state to answer it.
        head = [f"HTTP/1.1 {status} {phrase}".encode()]
        head += [name + b": " + value for name, value in headers]
        head += [
            b"Content-Type: text/plain; charset=utf-8",
            b"Content-Length: " + str(len(body)).encode(),
            b"Connection: close",
        ]
        self._out.append(b"\r\n".join(head) + b"\r\n\r\n" + body)
        self._closed()

    def send_message(self, data: str | bytes) -> None:
        """Queue a complete message (``str`` as text, ``bytes`` as binary)."""
        self.send_encoded(encode_message(data, self.deflate_bits))

    def send_encoded(self, frame: bytes, payload: bytes = b"") -> None:
        """Queue a frame encoded by :func:`encode_frame` (broadcasts encode once), or
        a frame's header and its ``payload`` (:func:`encode_message_parts`).

        While the handshake is being decided (:attr:`decision_pending`) the frame is
        kept and queued right after the 101 response, or dropped by :meth:`reject`.
        """
        if self.state is State.OPEN:
            self._out.append(frame)
            if payload:
                self._out.append(payload)
        elif self.decision_pending:
            self._early.append(frame + payload)
            self._early_size += len(frame) + len(payload)
        else:
            raise ProtocolError(f"cannot send in state {self.state.name}")

    def discard_early(self) -> None:
        """Drop the frames kept for after the 101 (the caller found them too many)."""
        self._early.clear()
        self._early_size = 0

    def send_ping(self, payload: bytes = b"") -> None:
        """Queue a ping frame."""
        if self.state is not State.OPEN:
            raise ProtocolError(f"cannot ping in state {self.state.name}")
        self._out.append(self._ws.send(Ping(payload=payload)))

    def close(self, code: int = CloseReason.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake: queue a close frame; the state becomes CLOSING."""
        if self.state is not State.OPEN:
            raise ProtocolError(f"cannot close in state {self.state.name}")
        self._out.append(self._ws.send(CloseConnection(code=code, reason=reason)))
        self.state = State.CLOSING
