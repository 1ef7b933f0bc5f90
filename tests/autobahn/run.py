"""Run Autobahn|Testsuite's fuzzing client against wsgiws and check the verdicts.

    python tests/autobahn/run.py PYTHON2 LIBDIR REPORTDIR [--all]

PYTHON2 is a Python 2.7 interpreter and LIBDIR a directory holding
``autobahntestsuite`` and its dependencies (``nox -s autobahn`` installs them).
The suite's cases 12.*/13.* with the largest messages (x.x.10 to x.x.18) take the
Python 2 client many minutes each; they are left out unless ``--all`` is given.
Exits non-zero if any case is FAILED or NON-STRICT (UNIMPLEMENTED and
INFORMATIONAL pass), printing the counts per verdict and the cases that fail.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: Verdicts that pass: the suite marks informational cases and the extensions a
#: server does not implement (none should remain) this way.
PASSING = {"OK", "INFORMATIONAL", "UNIMPLEMENTED"}
SLOW = [f"{section}.*.{n}" for section in (12, 13) for n in range(10, 19)]


def main() -> int:
    python2, libdir, reportdir = sys.argv[1:4]
    run_all = "--all" in sys.argv[4:]
    server = subprocess.Popen(
        [sys.executable, str(HERE / "echo_server.py"), "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        spec = {
            "outdir": reportdir,
            "servers": [{"agent": "wsgiws", "url": f"ws://127.0.0.1:{port}"}],
            "cases": ["*"],
            "exclude-cases": [] if run_all else SLOW,
            "exclude-agent-cases": {},
        }
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(spec, f)
        env = {**os.environ, "PYTHONPATH": libdir}
        subprocess.run(
            [python2, "-m", "autobahntestsuite.wstest", "-m", "fuzzingclient", "-s", f.name],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
    finally:
        server.terminate()
        server.wait(30)
    index = json.loads((Path(reportdir) / "index.json").read_text())
    results = index["wsgiws"]
    counts = collections.Counter(r["behavior"] for r in results.values())
    close_counts = collections.Counter(r["behaviorClose"] for r in results.values())
    print(f"{len(results)} cases: {dict(counts)}; closing: {dict(close_counts)}")
    bad = sorted(
        (case for case, r in results.items() if r["behavior"] not in PASSING),
        key=lambda c: [int(p) for p in c.split(".")],
    )
    for case in bad:
        print(f"  {case}: {results[case]['behavior']} (close: {results[case]['behaviorClose']})")
    print(f"report: {Path(reportdir) / 'index.html'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
