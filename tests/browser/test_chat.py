"""The chat examples in a real browser: rooms, names, the online list, reconnection."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, expect

from .support import Example, open_chat, say


def test_message_reaches_the_room_with_the_senders_name(
    browser: Browser, contexts: list[BrowserContext], example: Example
) -> None:
    """A message sent in a room shows with its sender's name to the others in that room only."""
    ada = open_chat(browser, contexts, example.url, "Ada", room="lobby")
    bob = open_chat(browser, contexts, example.url, "Bob", room="lobby")
    cy = open_chat(browser, contexts, example.url, "Cy", room="python")
    expect(ada.locator("#online li")).to_have_count(2)

    say(ada, "hello lobby")
    message = bob.locator("#messages .message", has_text="hello lobby")
    expect(message).to_have_count(1)
    expect(message.locator(".sender")).to_have_text("Ada")

    # Cy's own message round-trips after Ada's fan-out: had Ada's reached the
    # python room, it would be on Cy's page by now.
    say(cy, "hello python")
    expect(cy.locator("#messages .message", has_text="hello python")).to_have_count(1)
    expect(cy.locator("#messages .message", has_text="hello lobby")).to_have_count(0)
    expect(bob.locator("#messages .message", has_text="hello python")).to_have_count(0)
    expect(cy.locator("#online .person")).to_have_text(["Cy"])


def test_online_list_updates_when_a_page_closes(
    browser: Browser, contexts: list[BrowserContext], example: Example
) -> None:
    """Closing a page removes its person from the others' online list, with a notice."""
    ada = open_chat(browser, contexts, example.url, "Ada", room="random")
    bob = open_chat(browser, contexts, example.url, "Bob", room="random")
    expect(ada.locator("#online li")).to_have_count(2)
    expect(ada.locator("#messages .notice", has_text="Bob joined")).to_have_count(1)

    bob.close()
    expect(ada.locator("#online li")).to_have_count(1)
    expect(ada.locator("#online .person")).to_have_text(["Ada"])
    expect(ada.locator("#messages .notice", has_text="Bob left")).to_have_count(1)


def test_pages_reconnect_after_a_server_restart(
    browser: Browser, contexts: list[BrowserContext], example: Example
) -> None:
    """Pages notice a server restart, reconnect by themselves, and chat again."""
    ada = open_chat(browser, contexts, example.url, "Ada", room="restart")
    bob = open_chat(browser, contexts, example.url, "Bob", room="restart")

    example.stop()
    for page in (ada, bob):
        expect(page.locator("#status")).not_to_have_attribute("data-state", "open")
        expect(page.locator("#send")).to_be_disabled()
    example.start()

    for page in (ada, bob):
        expect(page.locator("#status")).to_have_attribute("data-state", "open", timeout=30_000)
        expect(page.locator("#messages .notice", has_text="Reconnected")).to_have_count(1)
        # One notice per outage, however many attempts it took.
        expect(page.locator("#messages .notice", has_text="Connection lost")).to_have_count(1)
    expect(bob.locator("#online li")).to_have_count(2)
    say(bob, "back again")
    message = ada.locator("#messages .message", has_text="back again")
    expect(message).to_have_count(1)
    expect(message.locator(".sender")).to_have_text("Bob")


def test_screenshot_of_two_people_talking(
    browser: Browser, contexts: list[BrowserContext], example: Example, artifacts: Path
) -> None:
    """A conversation renders both people's messages in order (saved as a screenshot)."""
    ada = open_chat(browser, contexts, example.url, "Ada", room="python")
    grace = open_chat(browser, contexts, example.url, "Grace", room="python")
    lines = [
        (ada, "Hi Grace! Did you try the new WebSocket endpoints?"),
        (grace, "Yes: one decorator and a class with on_message. No asyncio anywhere."),
        (ada, "And it runs on the same port as the Flask app?"),
        (grace, "Same port, same process. Kill the server and the page reconnects."),
        (ada, "Nice. Shipping it today!"),
    ]
    for page, text in lines:
        say(page, text)
        expect(ada.locator("#messages .message", has_text=text)).to_have_count(1)
    expect(grace.locator("#messages .message")).to_have_count(len(lines))
    texts = ada.locator("#messages .message .text").all_inner_texts()
    assert texts == [text for _, text in lines]
    expect(ada.locator("#messages .message.mine")).to_have_count(3)
    ada.screenshot(path=str(artifacts / f"chat-{Path(example.script).parent.name}.png"))
    if example.script.parent.name == "flask_chat":
        ada.screenshot(path=str(artifacts / "chat.png"))


def test_opening_another_room_moves_the_person(
    browser: Browser, contexts: list[BrowserContext], example: Example
) -> None:
    """Opening another room from the sidebar leaves the old room and joins the new one."""
    ada = open_chat(browser, contexts, example.url, "Ada", room="first")
    bob = open_chat(browser, contexts, example.url, "Bob", room="first")
    expect(ada.locator("#online .person")).to_have_text(["Ada", "Bob"])

    bob.locator("#new-room-name").fill("second")
    bob.locator("#new-room-name").press("Enter")
    expect(bob.locator("#room-name")).to_have_text("second")
    expect(bob.locator("#messages .notice", has_text="You joined #second")).to_have_count(1)
    expect(bob.locator("#online .person")).to_have_text(["Bob"])
    expect(ada.locator("#online .person")).to_have_text(["Ada"])
    expect(ada.locator("#messages .notice", has_text="Bob left")).to_have_count(1)

    bob.locator('#rooms a[data-room="first"]').click()  # back, through the room list
    expect(ada.locator("#online .person")).to_have_text(["Ada", "Bob"])
    say(bob, "I'm back")
    expect(ada.locator("#messages .message", has_text="I'm back")).to_have_count(1)


def test_each_tab_is_its_own_person(
    browser: Browser, contexts: list[BrowserContext], example: Example
) -> None:
    """Two tabs of one browser are two people; a change of name says so once."""
    if example.script.parent.name == "flask_chat":
        pytest.skip("the Flask chat takes names from logins: one browser is one user")
    context = browser.new_context(viewport={"width": 1000, "height": 640})
    contexts.append(context)
    ada = context.new_page()
    ada.goto(f"{example.url}#tabs")
    ada.locator("#name-input").fill("Ada")
    ada.locator("#name-form button").click()
    expect(ada.locator("#online .person")).to_have_text(["Ada"])

    # A second tab of the same browser asks for a name instead of joining as Ada.
    second = context.new_page()
    second.goto(f"{example.url}#tabs")
    expect(second.locator("#welcome")).to_be_visible()
    second.locator("#name-input").fill("Bob")
    second.locator("#name-form button").click()
    expect(ada.locator("#online .person")).to_have_text(["Ada", "Bob"])
    expect(ada.locator("#messages .notice", has_text="Bob joined")).to_have_count(1)

    # A reload keeps the tab's own name.
    second.reload()
    expect(second.locator("#me")).to_have_text("Bob")
    expect(second.locator("#status")).to_have_attribute("data-state", "open")

    ada.locator("#rename").click()
    ada.locator("#name-input").fill("Grace")
    ada.locator("#name-form button").click()
    expect(ada.locator("#online .person")).to_have_text(["Bob", "Grace"])
    expect(ada.locator("#messages .notice", has_text="You are now Grace")).to_have_count(1)
    expect(ada.locator("#messages .notice", has_text="You joined #tabs")).to_have_count(1)
