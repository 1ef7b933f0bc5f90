"""Helpers for the browser tests: the chat examples as subprocesses, and page actions."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.helpers import FACTOR

ROOT = Path(__file__).resolve().parents[2]
#: Seconds an example may take to serve its page after its start.
START_TIMEOUT = 30.0 * FACTOR


class Example:
    """A chat example running as a subprocess on a fixed loopback port."""

    def __init__(self, script: Path, port: int, *args: str) -> None:
        self.script = script
        self.port = port
        self.args = args
        self.url = f"http://127.0.0.1:{port}/"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()

    def start(self) -> None:
        """Start the example and wait until it answers HTTP on its port."""
        self.process = subprocess.Popen(
            [sys.executable, "-u", str(self.script), "--port", str(self.port), *self.args],
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT
        delay = 0.02
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.script.name} exited early:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    if response.status == 200:
                        return
            except urllib.error.HTTPError:
                return  # it answers HTTP (a WebSocket-only server refuses plain GET)
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.script.name} did not serve {self.url}:\n{self.log()}")
            time.sleep(delay)  # a subprocess gives no readiness signal: poll it
            delay = min(delay * 2, 0.2)

    def stop(self) -> None:
        """Kill the example (as a crash would) and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self.process = None

    def restart(self) -> None:
        """Kill the example and start it again on the same port."""
        self.stop()
        self.start()

    def log(self) -> str:
        """Return everything the example printed so far."""
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def close(self) -> None:
        """Stop the example and free its log file."""
        self.stop()
        self._log.close()


def open_chat(
    browser: Browser, contexts: list[BrowserContext], url: str, name: str, room: str = "lobby"
) -> Page:
    """Open the chat as a new person (own browser context): pick ``name``, join ``room``.

    Where the example asks for a login (the Flask chat), ``name`` logs in with
    :data:`PASSWORD` (the first login signs up) and the page uses that username.
    """
    context = browser.new_context(viewport={"width": 1000, "height": 640})
    contexts.append(context)
    page = context.new_page()
    page.goto(f"{url}#{room}")
    if page.locator("#login-form").count():
        log_in(page, name)
        page.goto(f"{url}#{room}")
    else:
        page.locator("#name-input").fill(name)
        page.locator("#name-form button").click()
    expect(page.locator("#status")).to_have_attribute("data-state", "open")
    expect(page.locator("#online")).to_contain_text(name)
    return page


#: The password of every account the browser tests make in the Flask chat.
PASSWORD = "correct horse battery staple"


def log_in(page: Page, username: str, password: str = PASSWORD) -> None:
    """Fill in and send the Flask chat's login form; wait for the chat page."""
    page.locator("#username").fill(username)
    page.locator("#password").fill(password)
    page.locator("#login-button").click()
    expect(page.locator("#me")).to_have_text(username)


def say(page: Page, text: str) -> None:
    """Type ``text`` in the composer and send it with Enter."""
    page.locator("#text").fill(text)
    page.locator("#text").press("Enter")
