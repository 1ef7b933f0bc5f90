"""The Django adapter: ``wsgiws.django`` (install with ``pip install "wsgiws[django]"``).

Add ``"wsgiws.django"`` to ``INSTALLED_APPS`` and, in the project's ``wsgi.py``, use
:func:`get_wsgi_application` from here instead of Django's. Handlers live in each
app's ``sockets.py`` (found at startup) or in its ``models.py``. See
:mod:`wsgiws.django.conf` for the ``WEBSOCKET_*`` settings.

Names are imported on first use, so that listing this package in ``INSTALLED_APPS``
imports nothing that needs the app registry.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

try:
    import django  # noqa: F401 - only to fail early with the install hint
except ImportError as exc:  # pragma: no cover - tested in a subprocess without Django
    raise ImportError('wsgiws.django needs Django: pip install "wsgiws[django]"') from exc

if TYPE_CHECKING:
    from .conf import server_options
    from .mixins import DjangoMiddlewareMixin, WSGIMixin
    from .wsgi import get_wsgi_application

__all__ = ["DjangoMiddlewareMixin", "WSGIMixin", "get_wsgi_application", "server_options"]

_LAZY = {
    "DjangoMiddlewareMixin": "mixins",
    "WSGIMixin": "mixins",
    "get_wsgi_application": "wsgi",
    "server_options": "conf",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
