"""The Django app config: finds WebSocket handlers in every installed app."""

from __future__ import annotations

from typing import Any, Final

from django.apps import AppConfig
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import autodiscover_modules

__all__ = ["HANDLERS_MODULE", "WSGIWSConfig", "check_settings"]

#: The module of each installed app imported at startup, so that the handlers it
#: defines with ``@Namespace`` are registered (as ``admin.py`` is for the admin).
#: Handlers in ``models.py`` are registered too: Django imports every app's models.
HANDLERS_MODULE: Final = "sockets"


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """System check ``wsgiws.E001``: the ``WEBSOCKET_*`` settings are valid.

    ``manage.py check`` and ``runserver`` report a wrong setting as Django reports
    its own, before anything is served.
    """
    from . import conf

    try:
        conf.load()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="wsgiws.E001")]
    return []


class WSGIWSConfig(AppConfig):  # type: ignore[misc]  # Django ships no type hints
    """``"wsgiws.django"`` in ``INSTALLED_APPS``."""

    name = "wsgiws.django"
    label = "wsgiws"
    verbose_name = "wsgiws WebSockets"

    def ready(self) -> None:
        """Import ``<app>.sockets`` of every installed app; register the check."""
        autodiscover_modules(HANDLERS_MODULE)
        checks.register(check_settings)
