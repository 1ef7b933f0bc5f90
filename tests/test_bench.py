"""The benchmark harness still runs: ``bench/run.py --quick`` against wsgiws and the
websockets library, every scenario, its Markdown and JSON tables written.

Needs Node.js and npm (the load generator; ``npm ci`` installs its one package on
the first run). Peers that are not installed here (aiohttp, picows, flask-sock:
the ``bench`` dependency group) are skipped by the harness with a reason. Where a
C compiler is present, the broadcast and handshake rows come from the C load
generator (``bench/loadgen/wsgen.c``), which the harness compiles for the run.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import FACTOR

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "bench" / "run.py"
COMPILER = shlex.split(os.environ.get("CC") or "cc")
HAS_CC = bool(COMPILER) and shutil.which(COMPILER[0]) is not None and sys.platform == "linux"

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
    # The C generator drives broadcast and handshake where it can be built.
    generators = report["meta"]["generators"]
    if HAS_CC:
        assert generators["c"]["scenarios"] == ["handshake", "broadcast"]
        assert "Load generator C (bench/loadgen/wsgen.c" in Path(f"{prefix}.md").read_text()
    for server in ("wsgiws", "websockets-asyncio"):
        for key in scenarios:
            data = rows[(server, key)]["loadgen"]
            expected = "c" if HAS_CC and key in ("handshake", "broadcast") else "node"
            assert data["generator_kind"] == expected, (server, key)
            if key != "memory":
                assert data["loadgen_cpu_us_per_unit"] >= 0, (server, key)
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


@pytest.mark.skipif(not HAS_CC, reason="no C compiler")
@pytest.mark.timeout(int(120 * FACTOR))
def test_generator_c_runs_echo_in_c_and_deflate_in_node(tmp_path: Path) -> None:
    prefix = tmp_path / "c"
    proc = subprocess.run(
        [
            sys.executable,
            str(RUN),
            "--quick",
            "--generator",
            "c",
            "--servers",
            "wsgiws",
            "--scenarios",
            "echo-64x32,deflate",
            "--out",
            str(prefix),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100 * FACTOR,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(Path(f"{prefix}.json").read_text())
    rows = {r["scenario"]: r for r in report["results"]}
    assert rows["echo-64x32"]["loadgen"]["generator_kind"] == "c"
    assert rows["echo-64x32"]["loadgen"]["msgs_per_s"] > 0
    assert rows["deflate"]["loadgen"]["generator_kind"] == "node"
    assert rows["deflate"]["loadgen"]["msgs_per_s"] > 0
