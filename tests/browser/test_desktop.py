"""The desktop monitor example: a page opened from disk shows live samples."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, expect

from ..helpers import free_port
from .support import ROOT, Example

MONITOR = ROOT / "examples" / "desktop" / "monitor.py"


@pytest.fixture
def monitor() -> Iterator[Example]:
    """The monitor script on a free port, sampling five times a second."""
    running = Example(MONITOR, free_port(), "--interval", "0.2")
    try:
        running.start()
        yield running
    finally:
        running.close()


def test_page_from_disk_shows_live_samples(
    browser: Browser, contexts: list[BrowserContext], monitor: Example, artifacts: Path
) -> None:
    """A file:// page connects to the script's Server and its numbers and charts update."""
    context = browser.new_context(viewport={"width": 1000, "height": 420})
    contexts.append(context)
    page = context.new_page()
    page.goto(f"{MONITOR.with_name('monitor.html').as_uri()}?port={monitor.port}")
    expect(page.locator("#state")).to_have_attribute("data-state", "open")
    expect(page.locator("#cpu")).to_have_text(re.compile(r"^\d+\.\d %$"))
    expect(page.locator("#mem")).to_have_text(re.compile(r"^\d+\.\d %$"))
    expect(page.locator("#load")).to_have_text(re.compile(r"^\d+\.\d\d  \d+\.\d\d  \d+\.\d\d$"))
    # Samples keep coming: the page's history grows past a few entries (counted by
    # the page: a chart's pixels say little when the machine is busy and it is flat).
    expect(page.locator("html")).to_have_attribute("data-samples", re.compile(r"^([5-9]|\d\d)$"))
    page.screenshot(path=str(artifacts / "monitor.png"))

    monitor.stop()
    expect(page.locator("#state")).not_to_have_attribute("data-state", "open")
    monitor.start()  # the page reconnects by itself
    expect(page.locator("#state")).to_have_attribute("data-state", "open", timeout=30_000)
