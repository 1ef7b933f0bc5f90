"""Fixtures for the browser tests: headless Chromium and the chat examples."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, expect, sync_playwright

from tests.helpers import FACTOR

from ..helpers import free_port
from .support import ROOT, Example

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: The chat examples the browser tests run against.
EXAMPLES = {
    "wsgiref": ROOT / "examples" / "wsgiref_chat" / "app.py",
    "flask": ROOT / "examples" / "flask_chat" / "app.py",
    "bottle": ROOT / "examples" / "bottle_chat" / "app.py",
}

expect.set_options(timeout=int(15_000 * FACTOR))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of this directory with ``browser``."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """Headless Chromium, shared by the tests of this directory.

    Package scope, not session: Playwright's sync API keeps an asyncio loop running
    on the main thread while it is open, and Django refuses ORM calls in a thread
    with a running loop (SynchronousOnlyOperation) in the tests that follow.
    """
    if not os.path.exists(CHROMIUM):  # pragma: no cover - depends on the machine
        pytest.skip(f"{CHROMIUM} is missing (Debian package chromium; nox installs it as root)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def contexts(browser: Browser) -> Iterator[list[BrowserContext]]:
    """A list for the test's browser contexts (one per person), all closed after."""
    opened: list[BrowserContext] = []
    try:
        yield opened
    finally:
        for context in opened:
            with contextlib.suppress(Exception):  # a context may already be closed
                context.close()


@pytest.fixture(scope="module", params=sorted(EXAMPLES))
def example(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Example]:
    """One chat example running as a subprocess on a free loopback port (the Flask
    one keeps its database and key in a temporary folder, across restarts)."""
    args = ("--data", str(tmp_path_factory.mktemp("chat"))) if request.param == "flask" else ()
    running = Example(EXAMPLES[request.param], free_port(), *args)
    try:
        running.start()
        yield running
    finally:
        running.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """The directory for screenshots (git ignores it)."""
    path = ROOT / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path
