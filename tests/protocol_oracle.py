"""What the server may answer to any input: shared by the property tests and the fuzzer.

:func:`check_handshake` and :func:`check_stream` feed bytes to a
:class:`~wsgiws.protocol.ServerProtocol` in the given pieces and assert the
invariants that hold for every input, valid or not:

* no exception escapes (the loop thread would die with it);
* a handshake gets exactly one answer: the parsed request, or an HTTP error with an
  allowed status whose response parses as HTTP;
* after the handshake every event is one of the protocol's; a failure carries an
  allowed close code, comes last and leaves the connection closed; what the server
  writes parses as a valid server stream (a wsproto client reads it without error);
* memory stays bounded: the protocol keeps at most ``max_message_size`` bytes of
  message plus one frame header and one control frame, whatever was announced.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
)
from wsproto.extensions import PerMessageDeflate

from wsgiws.protocol import (
    CloseReceived,
    Event,
    Failed,
    HandshakeRequest,
    MessageReceived,
    PongReceived,
    ServerProtocol,
    State,
)

#: Statuses a refused handshake may get.
HANDSHAKE_STATUSES = frozenset({400, 405, 426, 431, 505})
#: Close codes a protocol failure may carry (1006: the peer's EOF, no frame sent).
FAILURE_CODES = frozenset({1002, 1007, 1009, 1006})
#: A frame header (14) and a control frame's payload (125), with room to spare.
SLACK = 256


def pieces(data: bytes, sizes: Sequence[int]) -> list[bytes]:
    """Cut ``data`` into consecutive pieces of the given sizes (cycled; 0 means 1)."""
    out, i, k = [], 0, 0
    while i < len(data):
        size = max(1, sizes[k % len(sizes)]) if sizes else len(data)
        out.append(data[i : i + size])
        i += size
        k += 1
    return out


def held_bytes(server: ServerProtocol) -> int:
    """Bytes the protocol holds for input not yet complete (messages and frames)."""
    held = server._size + len(server._pending) + len(server._stash)
    connection = getattr(server._ws, "connection", server._ws)  # a Connection once open
    proto = getattr(connection, "_proto", None)
    decoder = getattr(proto, "_frame_decoder", None)
    buffer = getattr(decoder, "buffer", None)
    if buffer is not None:
        held += len(buffer)
    return held


def check_handshake(chunks: Iterable[bytes], max_request_size: int = 4096) -> Event | None:
    """Feed a request head in ``chunks``; return the single answer, or None if
    the input ended before the head did."""
    server = ServerProtocol(max_request_size=max_request_size)
    answers: list[Event] = []
    for chunk in chunks:
        events = server.receive_data(chunk)
        answers += events
        if answers:
            break
    assert len(answers) <= 1, answers
    if not answers:
        return None
    [answer] = answers
    out = server.data_to_send()
    if isinstance(answer, HandshakeRequest):
        assert out == b""
        assert server.state is State.CONNECTING
        return answer
    assert isinstance(answer, Failed), answer
    if answer.status is None:
        assert answer.code == 1006  # the connection ended during the handshake
        return answer
    assert answer.status in HANDSHAKE_STATUSES, answer
    assert server.state is State.CLOSED
    client = WSConnection(ConnectionType.CLIENT)
    client.send(Request(host="h", target="/"))
    client.receive_data(out)
    response = list(client.events())
    assert isinstance(response[0], RejectConnection), response
    assert response[0].status_code == answer.status
    body = b"".join(e.data for e in response if isinstance(e, RejectData))
    assert body.strip(), "a refusal must say why"
    return answer


def open_server(
    max_message_size: int | None, deflate: bool, hold: bool = False
) -> tuple[ServerProtocol, WSConnection]:
    """An accepted server protocol and the wsproto client that reads its output."""
    server = ServerProtocol(max_message_size=max_message_size, hold_failure_close=hold)
    client = WSConnection(ConnectionType.CLIENT)
    offer = [PerMessageDeflate()] if deflate else []
    [request] = server.receive_data(client.send(Request(host="h", target="/", extensions=offer)))
    assert isinstance(request, HandshakeRequest)
    assert server.accept(compression=deflate) == []
    client.receive_data(server.data_to_send())
    [accepted] = client.events()
    assert isinstance(accepted, AcceptConnection)
    return server, client


def check_stream(
    chunks: Iterable[bytes],
    *,
    max_message_size: int | None = 4096,
    deflate: bool = False,
    hold: bool = False,
) -> tuple[list[Event], list[object]]:
    """Feed frames after an accepted handshake; return the server's events and what
    the client read (pongs, the close frame).

    With ``hold`` the protocol holds a violation's close frame back: none may be
    written until :meth:`~wsgiws.protocol.ServerProtocol.close_failed`, called here
    once the input is fed."""
    server, client = open_server(max_message_size, deflate, hold)
    events: list[Event] = []
    read: list[object] = []

    def read_output() -> None:
        out = server.data_to_send()
        if out:
            client.receive_data(out)
            for seen in client.events():
                assert isinstance(seen, (Pong, CloseConnection, Ping)), seen
                if isinstance(seen, CloseConnection):
                    assert seen.code != 1006
                read.append(seen)

    for chunk in chunks:
        new = server.receive_data(chunk)
        if events and isinstance(events[-1], (Failed, CloseReceived)):
            assert new == [], "events after the end of the connection"
        events += new
        read_output()
        if max_message_size is not None:
            assert held_bytes(server) <= max_message_size + SLACK, held_bytes(server)
    if hold and events and isinstance(events[-1], Failed) and events[-1].code != 1006:
        assert server.failure_pending and server.state is State.OPEN
        assert not any(isinstance(e, CloseConnection) for e in read), "close not held"
        assert server.close_failed()
        read_output()
    for index, event in enumerate(events):
        assert isinstance(event, (MessageReceived, PongReceived, CloseReceived, Failed)), event
        if isinstance(event, MessageReceived) and max_message_size is not None:
            data = event.data
            size = (
                len(data.encode("utf-8", "surrogatepass")) if isinstance(data, str) else len(data)
            )
            assert size <= max_message_size
        if isinstance(event, (Failed, CloseReceived)):
            assert index == len(events) - 1, "nothing may follow the end"
            assert server.state is State.CLOSED
        if isinstance(event, Failed):
            assert event.status is None
            assert event.code in FAILURE_CODES, event
            closes = [e for e in read if isinstance(e, CloseConnection)]
            assert [c.code for c in closes] == [event.code], (closes, event)
    return events, read
