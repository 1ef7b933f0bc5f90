"""``python manage.py runwebsockets``."""

from __future__ import annotations
