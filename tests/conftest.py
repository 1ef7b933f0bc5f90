"""Fixtures shared by the whole suite."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

import wsgiws


def pytest_configure(config: pytest.Config) -> None:
    """Let the servers the tests start take Ctrl-C (SIGINT) as a terminal sends it.

    A shell starts background jobs with SIGINT ignored, and an ignored signal stays
    ignored across exec: Django's runserver would then never see the SIGINT that its
    tests send. A handler of our own is reset to the default in every child.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def registry() -> Iterator[wsgiws.Registry]:
    """A fresh registry, so that tests do not see each other's namespaces."""
    yield wsgiws.Registry()
