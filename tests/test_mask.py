"""Payload masking: the C accelerator and the pure-Python fallback against a reference,
the wsproto hook, and which implementation runs.

Both implementations are tested in every run: the fallback is importable as
:func:`wsgiws.mask.apply_mask_python` whatever runs by default, and a subprocess runs a
server with ``WSGIWS_NO_SPEEDUPS=1``. The C extension is compiled by the editable
install of the test environment (``setup.py``); a test fails if it is missing where
a C compiler is present.
"""

from __future__ import annotations

import itertools
import logging
import operator
import os
import random
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from array import array
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect
from wsproto.frame_protocol import FrameProtocol, Opcode

import wsgiws
import wsgiws.deflate
import wsgiws.mask

from .helpers import TIMEOUT, serve

Apply = Callable[[Any, Any], bytes]

try:
    from wsgiws._speedups import apply_mask as c_apply_mask
except ImportError:  # pragma: no cover - test_accelerator_is_built says why
    C_BUILT = False
else:
    C_BUILT = True

IMPLEMENTATIONS = ["c", "python"]


@pytest.fixture(params=IMPLEMENTATIONS, scope="module")
def apply(request: pytest.FixtureRequest) -> Apply:
    if request.param == "python":
        return wsgiws.mask.apply_mask_python
    if not C_BUILT:  # pragma: no cover
        pytest.skip("wsgiws._speedups is not built")
    return c_apply_mask


def reference(data: Any, mask: Any) -> bytes:
    """Obviously right, slow: XOR byte by byte with the key repeated."""
    return bytes(map(operator.xor, memoryview(data).tobytes(), itertools.cycle(bytes(mask))))


@st.composite
def buffers(draw: st.DrawFn, sizes: st.SearchStrategy[int]) -> Any:
    """A bytes-like object of a drawn size: bytes, bytearray, or a memoryview slice
    of either at any offset (so at any alignment)."""
    size = draw(sizes)
    offset = draw(st.integers(0, 15))
    raw = random.Random(draw(st.integers(0, 2**32))).randbytes(offset + size + 7)
    kind = draw(st.sampled_from(["bytes", "bytearray", "view of bytes", "view of bytearray"]))
    container = bytearray(raw) if kind.endswith("bytearray") else raw
    if kind.startswith("view"):
        return memoryview(container)[offset : offset + size]
    return container[offset : offset + size]


masks = st.binary(min_size=4, max_size=4).flatmap(
    lambda key: st.sampled_from([key, bytearray(key), memoryview(key)])
)


@given(data=buffers(st.integers(0, 300)), mask=masks)
@settings(max_examples=300, deadline=None)
def test_small(apply: Apply, data: Any, mask: Any) -> None:
    assert apply(data, mask) == reference(data, mask)


@given(data=buffers(st.integers(0, 300_000)), mask=masks)
@settings(max_examples=60, deadline=None)
def test_medium(apply: Apply, data: Any, mask: Any) -> None:
    assert apply(data, mask) == reference(data, mask)


@given(data=buffers(st.integers(1 << 20, 5 << 20)), mask=masks)
@settings(max_examples=6, deadline=None)
def test_several_mebibytes(apply: Apply, data: Any, mask: Any) -> None:
    assert apply(data, mask) == reference(data, mask)


@given(
    size=st.integers(0, 200_000),
    cuts=st.lists(st.integers(0, 200_000), max_size=6),
    mask=st.binary(min_size=4, max_size=4),
)
@settings(max_examples=100, deadline=None)
def test_in_place_piece_by_piece(size: int, cuts: list[int], mask: bytes) -> None:
    """Unmasking the pieces of a buffer in place, each in the key's phase of its
    offset, gives the whole buffer unmasked; bytes outside the pieces stay as they were."""
    data = os.urandom(size)
    buffer = bytearray(data)
    marks = sorted({c % (size + 1) for c in cuts} | {0, size})
    skipped = marks[1:2]  # the second piece is left alone
    for low, high in itertools.pairwise(marks):
        if low not in skipped:
            wsgiws.mask.apply_mask_in_place(buffer, mask, low, high)
    expected = reference(data, mask)
    if len(marks) > 2:
        expected = expected[: marks[1]] + data[marks[1] : marks[2]] + expected[marks[2] :]
    assert buffer == expected


@pytest.mark.parametrize("size", [0, 1, 3, 4, 7, 8, 15, 16, 17, 63, 64, 65, 1024, 1025, 65537])
@pytest.mark.parametrize("offset", range(8))
def test_every_alignment(apply: Apply, size: int, offset: int) -> None:
    raw = os.urandom(size + offset)
    data = memoryview(raw)[offset:]
    assert apply(data, b"\x01\x80\xff\x5a") == reference(data, b"\x01\x80\xff\x5a")


@pytest.mark.parametrize(
    "data",
    [
        memoryview(bytes(range(256)) * 40)[1::3],  # non-contiguous
        memoryview(bytearray(range(200)))[::-1],  # negative stride
        memoryview(array("I", range(1000))),  # items of 4 bytes
        memoryview(array("H", range(1000)))[3::2],  # both
        memoryview(bytes(range(240))).cast("B", (12, 20)),  # two dimensions
        memoryview(bytes(range(240))).cast("c"),  # another one-byte format
        array("d", [1.5, -2.0, 3.25]),
    ],
    ids=["strided", "reversed", "uint32", "uint16-strided", "2d", "char", "array"],
)
def test_any_buffer(apply: Apply, data: Any) -> None:
    """Any buffer is masked as its bytes in C order (what ``bytes(view)`` gives)."""
    assert apply(data, b"abcd") == reference(data, b"abcd")


def test_result_is_new_bytes(apply: Apply) -> None:
    data = bytearray(b"hello, world")
    out = apply(data, b"\x00\x00\x00\x00")
    assert type(out) is bytes
    assert out == data
    data[0] = 0
    assert out == b"hello, world"


@pytest.mark.parametrize("mask", [b"", b"abc", b"abcde", bytearray(8)])
def test_mask_must_have_four_bytes(apply: Apply, mask: bytes) -> None:
    with pytest.raises(ValueError, match=rf"^mask must be 4 bytes long, not {len(mask)}$"):
        apply(b"data", mask)


@pytest.mark.parametrize(
    ("data", "mask"), [("text", b"abcd"), (None, b"abcd"), (5, b"abcd"), (b"data", "abcd")]
)
def test_not_bytes_like(apply: Apply, data: Any, mask: Any) -> None:
    with pytest.raises(TypeError):
        apply(data, mask)


# -- which implementation runs -----------------------------------------------------


def test_accelerator_is_built() -> None:
    """Where a C compiler and Python's headers are present, the install compiled the
    extension, and it runs."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if not shutil.which(compiler):  # pragma: no cover
        pytest.skip(f"no C compiler ({compiler}) here: the fallback is expected")
    headers = os.path.join(sysconfig.get_path("include"), "Python.h")
    if not os.path.exists(headers):  # pragma: no cover
        pytest.skip(f"no {headers} (python3-dev) here: the fallback is expected")
    assert C_BUILT, "wsgiws._speedups was not built: see the output of the install"
    if os.environ.get("WSGIWS_NO_SPEEDUPS", "") in ("", "0"):
        assert wsgiws.mask.ACCELERATED
        assert wsgiws.mask.apply_mask is c_apply_mask
        assert wsgiws.mask.IMPLEMENTATION == "C (wsgiws._speedups)"


def test_server_logs_which_runs(
    registry: wsgiws.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="wsgiws.server"), serve(registry):
        pass
    assert f"payload masking in {wsgiws.mask.IMPLEMENTATION}" in caplog.messages


# A server echoing one large binary and one large text message, run with
# WSGIWS_NO_SPEEDUPS=1 in a subprocess (the variable is read at import).
FALLBACK_ECHO = """
import os, sys
import wsgiws, wsgiws.mask, wsgiws.deflate
from websockets.sync.client import connect

assert not wsgiws.mask.ACCELERATED
assert wsgiws.mask.apply_mask is wsgiws.mask.apply_mask_python
print(wsgiws.mask.IMPLEMENTATION)
assert wsgiws.deflate.MASKER_PATCHED

registry = wsgiws.Registry()

@wsgiws.Namespace(r"/echo", registry=registry)
class Echo(wsgiws.BaseWSClass):
    @classmethod
    def on_message(cls, websocket, message):
        websocket.send(message)

data = os.urandom(3 * 2**20 + 3)
text = "héllo wörld ✓ " * 70_000
with wsgiws.Server(host="127.0.0.1", port=0, registry=registry, max_message_size=8 << 20) as server:
    url = f"ws://127.0.0.1:{server.port}/echo"
    with connect(url, max_size=None) as ws:
        ws.send(data)
        assert ws.recv(float(sys.argv[1])) == data
        ws.send(text)
        assert ws.recv(float(sys.argv[1])) == text
print("echoed")
"""


def test_environment_variable_forces_the_fallback() -> None:
    env = {**os.environ, "WSGIWS_NO_SPEEDUPS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FALLBACK_ECHO), str(TIMEOUT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=6 * TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["Python (WSGIWS_NO_SPEEDUPS is set)", "echoed"]


# -- wsproto uses it ---------------------------------------------------------------


def test_wsproto_masks_through_wsgiws() -> None:
    assert wsgiws.deflate.MASKER_PATCHED, (
        "wsgiws.deflate could not replace wsproto.frame_protocol.XorMaskerSimple: "
        "this wsproto release renamed it; update src/wsgiws/deflate.py and the wsproto pin"
    )
    assert wsgiws.deflate.ORIGINAL_MASKER is not wsgiws.mask.Masker


@given(
    payload=st.binary(max_size=600),
    key=st.binary(min_size=4, max_size=4),
    cuts=st.lists(st.integers(0, 600), max_size=8),
)
@settings(max_examples=300, deadline=None)
def test_masker_equals_wsproto_masker(payload: bytes, key: bytes, cuts: list[int]) -> None:
    """Fed the same pieces, wsgiws's masker returns the bytes wsproto's own does."""
    original = wsgiws.deflate.ORIGINAL_MASKER
    assert original is not None
    ours, theirs = wsgiws.mask.Masker(key), original(bytearray(key))
    bounds = [0, *sorted(cuts), len(payload)]
    for start, end in itertools.pairwise(bounds):
        piece = payload[start:end]
        assert ours.process(piece) == bytes(theirs.process(bytearray(piece)))
    assert ours.process(payload) == bytes(theirs.process(bytearray(payload)))


@given(
    payloads=st.lists(st.binary(max_size=3000), min_size=1, max_size=4),
    cuts=st.lists(st.integers(0, 20_000), max_size=10),
)
@settings(max_examples=200, deadline=None)
def test_wsproto_frames_round_trip(payloads: list[bytes], cuts: list[int]) -> None:
    """Frames masked by wsproto's client side and split anywhere are unmasked by its
    server side into the payloads sent (both through :class:`wsgiws.mask.Masker`)."""
    client, server = FrameProtocol(client=True, extensions=[]), FrameProtocol(False, [])
    stream = b"".join(bytes(client.send_data(p, fin=True)) for p in payloads)
    received: list[bytes] = []
    bounds = [0, *sorted(c for c in cuts if c < len(stream)), len(stream)]
    for start, end in itertools.pairwise(bounds):
        server.receive_bytes(stream[start:end])
        for frame in server.received_frames():
            assert frame.opcode in (Opcode.BINARY, Opcode.CONTINUATION)
            received.append(frame.payload)  # type: ignore[arg-type]
    assert b"".join(received) == b"".join(payloads)


# -- through the server ------------------------------------------------------------


def test_large_messages_echo(registry: wsgiws.Registry) -> None:
    """Large binary, text and fragmented messages round-trip through the server."""

    @wsgiws.Namespace(r"/echo", registry=registry)
    class Echo(wsgiws.BaseWSClass):
        @classmethod
        def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
            websocket.send(message)

    data = os.urandom(2 * 2**20 + 1)
    text = "ünïcødé ✓ " * 100_000
    with (
        serve(registry, max_message_size=8 << 20) as server,
        connect(f"ws://127.0.0.1:{server.port}/echo", max_size=None) as ws,
    ):
        ws.send(data)
        assert ws.recv(TIMEOUT) == data
        ws.send(text)
        assert ws.recv(TIMEOUT) == text
        ws.send([data[:5], data[5:70_001], data[70_001:]])  # three fragments
        assert ws.recv(TIMEOUT) == data
