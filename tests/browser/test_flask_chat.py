"""The Flask chat example with logins, in a real browser."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, expect

from ..helpers import free_port
from .conftest import EXAMPLES
from .support import Example, log_in, open_chat, say


@pytest.fixture(scope="module")
def flask_chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Example]:
    """The Flask chat with a database of its own."""
    data = tmp_path_factory.mktemp("flask-chat")
    running = Example(EXAMPLES["flask"], free_port(), "--data", str(data))
    try:
        running.start()
        yield running
    finally:
        running.close()


def test_two_users_chat_and_see_each_others_usernames(
    browser: Browser, contexts: list[BrowserContext], flask_chat: Example, artifacts: Path
) -> None:
    """Two people log in through the form; each message shows its sender's username."""
    ada = open_chat(browser, contexts, flask_chat.url, "ada", room="lobby")
    bob = open_chat(browser, contexts, flask_chat.url, "bob", room="lobby")
    for page in (ada, bob):
        expect(page.locator("#online .person")).to_have_text(["ada", "bob"])
        expect(page.locator("#rename")).to_be_hidden()  # the login decides the name
        expect(page.locator("#logout")).to_be_visible()

    say(ada, "hi bob")
    say(bob, "hi ada, I see your username")
    for page in (ada, bob):
        messages = page.locator("#messages .message")
        expect(messages).to_have_count(2)
        expect(messages.locator(".sender")).to_have_text(["ada", "bob"])
    expect(ada.locator("#messages .message.mine .text")).to_have_text("hi bob")
    ada.screenshot(path=str(artifacts / "chat-flask-logins.png"))


def test_login_form_refuses_a_wrong_password_and_logout_works(
    browser: Browser, contexts: list[BrowserContext], flask_chat: Example
) -> None:
    """A wrong password shows an error; logging out leads back to the form."""
    open_chat(browser, contexts, flask_chat.url, "cy")  # signs cy up
    context = browser.new_context()
    contexts.append(context)
    page = context.new_page()
    page.goto(flask_chat.url)
    expect(page.locator("#login-form")).to_be_visible()  # anonymous: the login page
    page.locator("#username").fill("cy")
    page.locator("#password").fill("not the password")
    page.locator("#login-button").click()
    expect(page.locator("#login-error")).to_contain_text("Wrong password")

    log_in(page, "cy")
    expect(page.locator("#status")).to_have_attribute("data-state", "open")
    page.locator("#logout").click()
    expect(page.locator("#login-form")).to_be_visible()
