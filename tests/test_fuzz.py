"""The fuzz harness in the regular suite: its seeds, random inputs, and a short
coverage-guided run with atheris (``nox -s fuzz`` runs it longer)."""

from __future__ import annotations

import importlib.util
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from . import fuzz_protocol

HARNESS = Path(fuzz_protocol.__file__)
#: Seconds of coverage-guided fuzzing in the suite: a smoke run, not a search.
SMOKE_SECONDS = 8


def test_seeds_pass() -> None:
    """Every seed runs clean: the harness itself is sound."""
    for seed in fuzz_protocol.seeds():
        fuzz_protocol.check(seed)


def test_mutated_seeds_and_random_inputs() -> None:
    """A fixed set of mutated seeds and random inputs runs clean, without atheris."""
    rng = random.Random(12)
    inputs = []
    for seed in fuzz_protocol.seeds():
        for _ in range(60):
            mutated = bytearray(seed)
            for _ in range(rng.randint(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            inputs.append(bytes(mutated))
    inputs += [rng.randbytes(rng.randint(0, 300)) for _ in range(300)]
    for data in inputs:
        fuzz_protocol.check(data)


@pytest.mark.skipif(
    importlib.util.find_spec("atheris") is None,
    reason="atheris is not installed (its wheels are for Linux x86-64)",
)
def test_atheris_smoke(tmp_path: Path) -> None:
    """libFuzzer runs the harness for a few seconds without finding a crash."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for index, seed in enumerate(fuzz_protocol.seeds()):
        (corpus / f"seed-{index}").write_bytes(seed)
    env = {**os.environ, "PYTHONPATH": str(HARNESS.parent.parent)}
    done = subprocess.run(
        [
            sys.executable,
            str(HARNESS),
            f"-max_total_time={SMOKE_SECONDS}",
            "-rss_limit_mb=2048",
            "-timeout=20",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        timeout=SMOKE_SECONDS + 60,
        env=env,
        check=False,
    )
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name != "corpus")
    assert done.returncode == 0 and not crashes, (crashes, done.stderr[-3000:])
