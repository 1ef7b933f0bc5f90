#!/usr/bin/env python
"""``manage.py`` of the test project; run it from the repository root."""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    # The project is the package tests.django.project: the repository root must be
    # importable, also in the autoreloader's child process.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django.project.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
