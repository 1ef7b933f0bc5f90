"""A live system monitor: a script with no WSGI app pushes CPU, memory and load.

    python examples/desktop/monitor.py
    # then open examples/desktop/monitor.html in a browser (straight from disk)

A background thread samples ``/proc`` (Linux) once a second and sends each sample
to the group ``"monitor"``; each page joins the group when it connects and first
receives the last minute of history. Standard library and wsgiws only.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import threading
import time
from pathlib import Path

import wsgiws

HISTORY: collections.deque[dict[str, object]] = collections.deque(maxlen=60)


def cpu_times() -> tuple[int, int] | None:
    """Return (busy, total) jiffies since boot from /proc/stat, or None."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def memory() -> dict[str, int] | None:
    """Return total and available memory in bytes from /proc/meminfo, or None."""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return None
    info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in lines if ":" in line}
    return {"total": info["MemTotal"], "available": info.get("MemAvailable", info["MemFree"])}


def sampler(interval: float, stop: threading.Event) -> None:
    """Sample every ``interval`` seconds and push each sample to the group."""
    previous = cpu_times()
    while not stop.wait(interval):
        current = cpu_times()
        cpu = None
        if previous and current and current[1] > previous[1]:
            cpu = round(100 * (current[0] - previous[0]) / (current[1] - previous[1]), 1)
        previous = current
        sample = {
            "time": time.time(),
            "cpu": cpu,
            "memory": memory(),
            "load": os.getloadavg(),
            "cpus": os.cpu_count(),
            "host": os.uname().nodename,
        }
        HISTORY.append(sample)
        wsgiws.group("monitor").send_json({"type": "sample", "sample": sample})


@wsgiws.Namespace(r"/monitor")
class Monitor(wsgiws.BaseWSClass):
    """Each page joins the group and gets the recent history at once."""

    @classmethod
    def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
        websocket.send_json({"type": "history", "samples": list(HISTORY)})
        websocket.join("monitor")


def main() -> None:
    parser = argparse.ArgumentParser(description="Push system load to a web page.")
    parser.add_argument("--port", type=int, default=8765, help="port (default: 8765)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    args = parser.parse_args()
    stop = threading.Event()
    threading.Thread(target=sampler, args=(args.interval, stop), daemon=True).start()
    page = Path(__file__).resolve().with_name("monitor.html").as_uri()
    # The page is opened from disk, so the browser sends "Origin: null"; the default
    # (same-origin) refuses that. A loopback-only server may accept it: "" also lets
    # clients without an Origin header (scripts, curl) connect.
    origins = ["null", ""]
    with wsgiws.Server(host="127.0.0.1", port=args.port, origins=origins) as server:
        print(f"Monitor on ws://127.0.0.1:{server.port}/monitor", flush=True)
        print(f"Open {page}?port={server.port} (Ctrl-C to stop)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
    stop.set()


if __name__ == "__main__":
    main()
