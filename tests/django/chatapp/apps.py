"""The test app's config."""

from __future__ import annotations

from django.apps import AppConfig


class ChatAppConfig(AppConfig):  # type: ignore[misc]  # Django ships no type hints
    name = "tests.django.chatapp"
    label = "chatapp"
    default_auto_field = "django.db.models.BigAutoField"
