"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import wsgiws


@pytest.fixture
def registry() -> Iterator[wsgiws.Registry]:
    """A fresh registry, so that tests do not see each other's namespaces."""
    yield wsgiws.Registry()
