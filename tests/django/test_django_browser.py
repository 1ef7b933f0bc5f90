"""The Django chat example in headless Chromium: log in, chat, see usernames."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from ..helpers import FACTOR, free_port
from .conftest import Process
from .test_django_example import EXAMPLE, PASSWORD

pytestmark = [pytest.mark.django, pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
#: Milliseconds Playwright waits for each expectation.
EXPECT_TIMEOUT = int(15_000 * FACTOR)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium (the Debian package)."""
    if not os.path.exists(CHROMIUM):  # pragma: no cover - depends on the machine
        pytest.skip(f"{CHROMIUM} is missing (Debian package chromium; nox installs it as root)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"], headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(params=["same-port", "separate-port"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The example, started with its one command; yield its base URL."""
    port = free_port()
    env = {"CHAT_DB": str(tmp_path / "chat.sqlite3")}
    if request.param == "separate-port":
        env["CHAT_WEBSOCKET_PORT"] = str(free_port())
    process = Process(
        ["chatdemo", f"127.0.0.1:{port}", "--noreload"],
        env,
        script=EXAMPLE / "manage.py",
        cwd=EXAMPLE,
    )
    try:
        process.wait_http(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop()


def log_in(browser: Browser, site: str, username: str) -> Page:
    """Open the site in a fresh context and log in through the form."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(site + "/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("#me")).to_have_text(username, timeout=EXPECT_TIMEOUT)
    expect(page.locator("#status")).to_have_attribute("data-state", "open", timeout=EXPECT_TIMEOUT)
    return page


def test_chat_in_the_browser(browser: Browser, site: str) -> None:
    """Two logged-in people chat; each line shows the sender's username."""
    alice = log_in(browser, site, "alice")
    bob = log_in(browser, site, "bob")
    try:
        expect(alice.locator("#messages .notice", has_text="bob joined")).to_have_count(
            1, timeout=EXPECT_TIMEOUT
        )
        expect(alice.locator("#online .person")).to_have_text(["alice", "bob"])
        alice.fill("#text", "hello <b>bob</b>")
        alice.press("#text", "Enter")
        line = bob.locator("#messages .message", has_text="hello")
        expect(line.locator(".sender")).to_have_text("alice", timeout=EXPECT_TIMEOUT)
        expect(line.locator(".text")).to_have_text("hello <b>bob</b>")  # text, not HTML
        bob.fill("#text", "hi alice")
        bob.press("#text", "Enter")
        reply = alice.locator("#messages .message", has_text="hi alice")
        expect(reply.locator(".sender")).to_have_text("bob", timeout=EXPECT_TIMEOUT)
        # Reloading shows the room's stored history again, with the senders.
        bob.reload()
        stored = bob.locator("#messages .message")
        expect(stored.locator(".sender")).to_have_text(["alice", "bob"], timeout=EXPECT_TIMEOUT)
    finally:
        alice.context.close()
        bob.context.close()
