"""The Django app config: finds WebSocket handlers in every installed app."""

from __future__ import annotations

from typing import Final

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules

__all__ = ["HANDLERS_MODULE", "WSGIWSConfig"]

#: The module of each installed app imported at startup, so that the handlers it
#: defines with ``@Namespace`` are registered (as ``admin.py`` is for the admin).
#: Handlers in ``models.py`` are registered too: Django imports every app's models.
HANDLERS_MODULE: Final = "sockets"


class WSGIWSConfig(AppConfig):  # type: ignore[misc]  # Django ships no type hints
    """``"wsgiws.django"`` in ``INSTALLED_APPS``."""

    name = "wsgiws.django"
    label = "wsgiws"
    verbose_name = "wsgiws WebSockets"

    def ready(self) -> None:
        """Import ``<app>.sockets`` of every installed app that has one."""
        autodiscover_modules(HANDLERS_MODULE)
