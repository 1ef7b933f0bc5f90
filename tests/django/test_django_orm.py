"""The ORM from handlers on worker threads, and database connection hygiene."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from websockets.sync.client import connect

from ..helpers import TIMEOUT
from .conftest import create_user, session_cookie, ws_url

#: Messages each ORM test sends.
MESSAGES = 100

pytestmark = pytest.mark.django


def test_orm_writes_across_100_messages(application: Any) -> None:
    """A handler stores each of 100 messages with the ORM, in order, on worker threads."""
    from tests.django.chatapp.models import Note

    user = create_user("writer")
    with connect(
        ws_url(application, "/django/notes"),
        additional_headers={"Cookie": session_cookie(user.username)},
        open_timeout=TIMEOUT,
    ) as ws:
        for i in range(1, MESSAGES + 1):
            ws.send(f"note {i}")
            assert ws.recv(timeout=TIMEOUT) == str(i)
    notes = list(Note.objects.filter(author=user).order_by("id"))
    assert [n.text for n in notes] == [f"note {i}" for i in range(1, MESSAGES + 1)]
    assert len({n.connection_id for n in notes}) == 1


def test_orm_writes_from_concurrent_connections(application: Any) -> None:
    """Four connections writing at once each get all their 100 rows stored."""
    from tests.django.chatapp.models import Note

    errors: list[BaseException] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        try:
            with connect(ws_url(application, "/django/notes"), open_timeout=TIMEOUT) as ws:
                for i in range(1, MESSAGES + 1):
                    ws.send(f"c{n} {i}")
                    assert ws.recv(timeout=3 * TIMEOUT) == str(i)
        except BaseException as exc:  # reported below, in the test's thread
            with lock:
                errors.append(exc)

    before = Note.objects.filter(author=None).count()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(6 * TIMEOUT)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads)
    assert Note.objects.filter(author=None).count() - before == 4 * MESSAGES


def test_no_connection_left_open_between_events(application: Any) -> None:
    """Each handler event starts with no database connection left by an earlier one.

    ``CONN_MAX_AGE`` is 0 in the test project, so Django closes the connection
    after each request; the adapter does the same after each handler event.
    """
    with connect(ws_url(application, "/django/whoami"), open_timeout=TIMEOUT) as ws:
        json.loads(ws.recv(timeout=TIMEOUT))
        for _ in range(10):
            ws.send("db-fresh")
            assert ws.recv(timeout=TIMEOUT) == "fresh"
