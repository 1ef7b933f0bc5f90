"""Management commands of the wsgiws Django adapter."""

from __future__ import annotations
