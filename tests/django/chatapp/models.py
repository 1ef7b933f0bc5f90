"""The test app's model, and a handler defined in ``models.py`` as djwebsockets did."""

from __future__ import annotations

from django.conf import settings
from django.db import models

import wsgiws


class Note(models.Model):  # type: ignore[misc]  # Django ships no type hints
    """A message a WebSocket handler stored."""

    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.CASCADE)
    connection_id = models.CharField(max_length=64, db_index=True)
    text = models.TextField()


@wsgiws.Namespace(r"/django/from-models")
class FromModels(wsgiws.BaseWSClass):
    """Registered because Django imports every app's ``models.py``."""

    @classmethod
    def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
        websocket.send("models.py")
