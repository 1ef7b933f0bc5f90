"""Management commands of the chat example."""

from __future__ import annotations
