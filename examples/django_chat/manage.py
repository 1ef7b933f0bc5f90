#!/usr/bin/env python
"""``manage.py`` of the Django chat example.

python examples/django_chat/manage.py chatdemo   # then open http://127.0.0.1:8000
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
