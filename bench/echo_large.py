"""1 MiB echo through ``wsgiws.Server``: wsproto's own masker against wsgiws's
(pure Python and C), with the websockets library's client.

    python bench/echo_large.py [--size BYTES] [--rounds N] [--messages N]

Each mode runs its server in a subprocess (the masking is chosen at import time):

* ``wsproto``: every payload unmasked by wsproto's ``XorMaskerSimple``, as before
  wsgiws had its own masking: restored in wsproto, and used by the protocol's fast
  path too (which otherwise calls ``wsgiws.mask.apply_mask``);
* ``python``: wsgiws's masking with ``WSGIWS_NO_SPEEDUPS=1`` (the pure-Python fallback);
* ``c``: wsgiws's masking with the C accelerator.

Compression is off (the client offers no permessage-deflate). The modes take turns,
``--rounds`` times, each timing ``--messages`` round trips of one binary message on
one connection; the best round of each mode is reported (noise from other work on
the machine only adds time), in wall time and in the server process's CPU time,
with ratios to ``wsproto``. Loopback only; every loop bounded in count and in time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from websockets.sync.client import connect

MODES = ("wsproto", "python", "c")
DEADLINE = 300.0  # seconds for the whole run

SERVER = """
import sys
import wsproto.frame_protocol
import wsgiws, wsgiws.mask, wsgiws.deflate

mode = sys.argv[1]
if mode == "wsproto":
    import wsgiws.protocol

    wsproto_masker = wsgiws.deflate.ORIGINAL_MASKER
    wsproto.frame_protocol.XorMaskerSimple = wsproto_masker
    # The fast path of wsgiws.protocol imported apply_mask by name: give it wsproto's.
    wsgiws.protocol.apply_mask = lambda data, key: bytes(
        wsproto_masker(bytearray(key)).process(data)
    )
else:
    assert wsgiws.mask.ACCELERATED == (mode == "c"), wsgiws.mask.IMPLEMENTATION

registry = wsgiws.Registry()

@wsgiws.Namespace(r"/echo", registry=registry)
class Echo(wsgiws.BaseWSClass):
    @classmethod
    def on_message(cls, websocket, message):
        websocket.send(message)

with wsgiws.Server(host="127.0.0.1", port=0, registry=registry, max_message_size=None) as s:
    print(s.port, flush=True)
    sys.stdin.read()  # until the parent closes it
"""


def start(mode: str) -> tuple[subprocess.Popen[str], int]:
    env = dict(os.environ)
    env.pop("WSGIWS_NO_SPEEDUPS", None)
    if mode == "python":
        env["WSGIWS_NO_SPEEDUPS"] = "1"
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    return process, int(process.stdout.readline())


def cpu_seconds(pid: int) -> float:
    """CPU time of process ``pid`` so far, in nanosecond resolution: the sum over its
    threads of ``/proc/<pid>/task/<tid>/schedstat`` (Linux)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as stat:
                total += int(stat.read().split()[0])
        except FileNotFoundError:  # a thread that just ended
            pass
    return total / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1 << 20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=20)
    args = parser.parse_args()
    payload = os.urandom(args.size)
    servers = {mode: start(mode) for mode in MODES}
    best = dict.fromkeys(MODES, float("inf"))
    best_cpu = dict.fromkeys(MODES, float("inf"))
    deadline = time.monotonic() + DEADLINE
    try:
        clients = {
            mode: connect(
                f"ws://127.0.0.1:{port}/echo", max_size=None, compression=None, legacy=True
            )
            for mode, (_, port) in servers.items()
        }
        for _ in range(args.rounds):
            for mode, ws in clients.items():
                pid = servers[mode][0].pid
                ws.send(payload)  # warm-up
                assert ws.recv(30) == payload
                began, began_cpu = time.perf_counter(), cpu_seconds(pid)
                for _ in range(args.messages):
                    ws.send(payload)
                    if ws.recv(30) != payload:
                        raise SystemExit(f"{mode}: echo differs")
                best[mode] = min(best[mode], (time.perf_counter() - began) / args.messages)
                cpu = (cpu_seconds(pid) - began_cpu) / args.messages
                best_cpu[mode] = min(best_cpu[mode], cpu)
            if time.monotonic() > deadline:
                break
        for ws in clients.values():
            ws.close()
    finally:
        for process, _ in servers.values():
            assert process.stdin is not None
            process.stdin.close()
            process.wait(30)
    print(f"echo of {args.size} bytes, best of {args.rounds} rounds x {args.messages}")
    print(f"{'masking':>8} {'ms/echo':>8} {'speed':>6} {'server CPU ms/echo':>19} {'speed':>6}")
    for mode in MODES:
        print(
            f"{mode:>8} {best[mode] * 1e3:8.2f} {best['wsproto'] / best[mode]:5.2f}x"
            f" {best_cpu[mode] * 1e3:19.2f} {best_cpu['wsproto'] / best_cpu[mode]:5.2f}x"
        )


if __name__ == "__main__":
    main()
