"""The chat app's config."""

from __future__ import annotations

from django.apps import AppConfig


class ChatConfig(AppConfig):  # type: ignore[misc]  # Django ships no type hints
    name = "chatroom"
    default_auto_field = "django.db.models.BigAutoField"
