"""The documentation: it builds without warnings, and every Python code block runs.

Each ``.. code-block:: python`` of ``docs/*.rst`` and ``README.rst`` is written to a
file and run with this interpreter in a subprocess, so that a block cannot touch the
test process and the docs show only what really works. A block must finish by
itself (start servers on port 0, or close them) unless it is marked, with an reST
comment on the line before its directive:

``.. docs-test: serves``
    The block runs a server until it is stopped (``serve_forever()``). The ports
    8000-8009 written in it are replaced with free ones; the test waits until every
    one of them accepts connections, checks that the process is still alive and has
    printed no traceback, then stops it.
``.. docs-test: fragment - <reason>``
    The block is an excerpt that cannot run on its own (a line of a project's
    ``wsgi.py`` that needs its settings module): it is only compiled.
``.. docs-test: skip - <reason>``
    The block is not even Python that compiles on its own (pseudo-code).

Blocks that do not run must be rare and say why:
:func:`test_blocks_that_do_not_run_are_rare_and_justified` caps them.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from wsgiws.options import Options

from .helpers import FACTOR, free_port, listening, wait_for

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: Seconds a block may run.
BLOCK_TIMEOUT = 60.0 * FACTOR
#: At most this many blocks may be fragments or skipped, over all the docs.
MAX_NOT_RUN = 6

DIRECTIVE = re.compile(r"^(?P<indent>\s*)\.\. (?:code-block|code|sourcecode):: (?:python3?|py)\s*$")
MARKER = re.compile(
    r"^\s*\.\. docs-test: (?P<mode>skip|serves|fragment)\b\s*(?:-\s*)?(?P<reason>.*)$"
)
PORT = re.compile(r"\b800\d\b")


@dataclasses.dataclass(frozen=True)
class Block:
    """One Python code block of the docs."""

    path: Path
    line: int
    code: str
    mode: str  # "run", "serves", "fragment" or "skip"
    reason: str = ""

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def extract(path: Path) -> list[Block]:
    """Return the Python code blocks of an reST file, with their markers."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    for number, line in enumerate(lines):
        found = DIRECTIVE.match(line)
        if found is None:
            continue
        indent = len(found.group("indent"))
        previous = number - 1
        while previous >= 0 and not lines[previous].strip():
            previous -= 1
        marker = MARKER.match(lines[previous]) if previous >= 0 else None
        body_start = number + 1
        while (
            body_start < len(lines)
            and lines[body_start].strip().startswith(":")
            and _indent(lines[body_start]) > indent
        ):
            body_start += 1  # directive options (:caption: ...)
        end = body_start
        while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > indent):
            end += 1
        code = textwrap.dedent("\n".join(lines[body_start:end])).strip("\n") + "\n"
        blocks.append(
            Block(
                path=path,
                line=number + 1,
                code=code,
                mode=marker.group("mode") if marker else "run",
                reason=marker.group("reason").strip() if marker else "",
            )
        )
    return blocks


def all_blocks() -> list[Block]:
    """Every Python block of the docs and the README."""
    files = [*sorted(DOCS.glob("*.rst")), ROOT / "README.rst"]
    return [block for path in files if path.exists() for block in extract(path)]


BLOCKS = all_blocks()


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.mode == "run"], ids=lambda b: b.id)
def test_block_runs(block: Block, tmp_path: Path) -> None:
    """A code block of the docs runs to completion without error."""
    script = tmp_path / "snippet.py"
    script.write_text(block.code, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
    )
    assert result.returncode == 0, (
        f"{block.id} failed:\n{block.code}\n--- output ---\n{result.stdout}{result.stderr}"
    )


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.mode == "serves"], ids=lambda b: b.id)
def test_serving_block_serves(block: Block, tmp_path: Path) -> None:
    """A code block that runs a server listens on its ports and stays up without error."""
    ports = {written: free_port() for written in sorted(set(PORT.findall(block.code)))}
    assert ports, f"{block.id} is marked 'serves' but names no port 8000-8009"
    code = PORT.sub(lambda m: str(ports[m.group(0)]), block.code)
    script = tmp_path / "snippet.py"
    script.write_text(code, encoding="utf-8")
    output = tmp_path / "output.txt"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-u", str(script)], cwd=tmp_path, stdout=sink, stderr=sink
        )
        try:
            wait_for(
                lambda: process.poll() is not None or all(map(listening, ports.values())),
                timeout=BLOCK_TIMEOUT,
                message=f"{block.id} did not listen on {sorted(ports.values())}",
            )
            time.sleep(0.2)  # a moment for an error right after listening to show
            alive = process.poll() is None
        finally:
            process.terminate()
            try:
                process.wait(timeout=10 * FACTOR)
            except subprocess.TimeoutExpired:  # pragma: no cover - a stuck snippet
                process.kill()
                process.wait()
    text = output.read_text(encoding="utf-8", errors="replace")
    assert alive, f"{block.id} exited:\n{code}\n--- output ---\n{text}"
    assert "Traceback" not in text, f"{block.id} printed an error:\n{text}"


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.mode == "fragment"], ids=lambda b: b.id)
def test_fragment_compiles(block: Block) -> None:
    """A code block that is an excerpt is valid Python."""
    compile(block.code, block.id, "exec")


def test_blocks_that_do_not_run_are_rare_and_justified() -> None:
    """Blocks marked 'fragment' or 'skip' give a reason, and there are few of them."""
    not_run = [b for b in BLOCKS if b.mode in ("fragment", "skip")]
    for block in not_run:
        assert len(block.reason) > 10, f"{block.id}: say why the block cannot run"
    assert len(not_run) <= MAX_NOT_RUN, [b.id for b in not_run]


def test_blocks_are_found() -> None:
    """The extractor finds the blocks of the docs, so that the tests above mean something."""
    assert len([b for b in BLOCKS if b.mode == "run"]) >= 15
    quickstart = extract(DOCS / "quickstart.rst")
    assert any("serve_forever" in b.code and b.mode == "serves" for b in quickstart)


def test_options_table_matches_the_code() -> None:
    """docs/options.rst lists every server option, with the default the code has."""
    text = (DOCS / "options.rst").read_text(encoding="utf-8")
    rows = re.findall(r"^   \* - ``(\w+)``\n     - (.+)$", text, flags=re.MULTILINE)
    documented = dict(rows)
    fields = {f.name: f.default for f in dataclasses.fields(Options)}
    assert set(documented) == set(fields)
    for name, cell in documented.items():
        literal = re.match(r"``(.+?)``", cell)
        if literal is None:
            continue  # computed defaults (workers) are described in words
        assert ast.literal_eval(literal.group(1)) == fields[name], name


def test_docs_build_without_warnings(tmp_path: Path) -> None:
    """Sphinx builds the documentation with warnings turned into errors."""
    out = tmp_path / "html"
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", DOCS, out],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (out / "index.html").exists()
