"""Chat messages, stored so that people who join see the recent ones."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Message(models.Model):  # type: ignore[misc]  # Django ships no type hints
    """One message in one room."""

    room = models.SlugField(max_length=32, db_index=True)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    text = models.TextField(max_length=2000)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created", "id"]

    def as_json(self) -> dict[str, object]:
        """The message as the page's script receives it."""
        return {
            "type": "message",
            "name": self.author.get_username(),
            "text": self.text,
            "time": self.created.timestamp(),
        }
