"""The benchmark harness still runs: ``bench/run.py --quick`` against wsgiws and the
websockets library, every scenario, its Markdown and JSON tables written.

Needs Node.js and npm (the load generator; ``npm ci`` installs its one package on
the first run). Peers that are not installed here (aiohttp, picows, flask-sock:
the ``bench`` dependency group) are skipped by the harness with a reason.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import FACTOR

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "bench" / "run.py"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("node") is None or shutil.which("npm") is None,
        reason="the load generator needs Node.js and npm",
    ),
    pytest.mark.skipif(not RUN.exists(), reason="no bench/ in this tree"),
]


@pytest.mark.timeout(int(240 * FACTOR))
def test_quick_bench_produces_every_row(tmp_path: Path) -> None:
    prefix = tmp_path / "quick"
    proc = subprocess.run(
        [
            sys.executable,
            str(RUN),
            "--quick",
            "--servers",
            "wsgiws,websockets-asyncio,wsgiws-inline",
            "--out",
            str(prefix),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=200 * FACTOR,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(Path(f"{prefix}.json").read_text())
    scenarios = [s["key"] for s in report["scenarios"]]
    assert scenarios == [
        "echo-1",
        "echo-64",
        "echo-64x32",
        "large-1",
        "handshake",
        "memory",
        "broadcast",
        "deflate",
    ]
    rows = {(r["server"], r["scenario"]): r for r in report["results"]}
    for server in ("wsgiws", "websockets-asyncio"):
        for key in scenarios:
            row = rows[(server, key)]
            assert row["ok"], (server, key, row["reason"])
            metric = next(s["metric"] for s in report["scenarios"] if s["key"] == key)
            assert row["loadgen"][metric] > 0, (server, key)
    # The inline variant runs when wsgiws has the mode, else it is named as skipped.
    skipped = report["meta"]["skipped_servers"]
    assert ("wsgiws-inline" in skipped) != bool(report["meta"]["wsgiws"]["inline"])
    ratios = {e["scenario"]: e for e in report["ratios"]}
    assert ratios["echo-1"]["vs_websockets-asyncio"] is not None
    assert ratios["memory"]["goals"]["wsgiws"]["goal"] == pytest.approx(10_000 / 1024)
    markdown = Path(f"{prefix}.md").read_text()
    assert "## Against websockets-asyncio" in markdown
    assert "## wsgiws / each peer" in markdown
    assert markdown.count("\n| ") >= 3 * len(scenarios)
