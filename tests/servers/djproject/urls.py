"""One catch-all view answering like ``matrix_app.http_app``."""

from __future__ import annotations

import os

from django.http import HttpRequest, HttpResponse
from django.urls import re_path


def echo_path(request: HttpRequest) -> HttpResponse:
    """Answer with the path and the process id."""
    return HttpResponse(f"http {request.path} pid {os.getpid()}\n", content_type="text/plain")


urlpatterns = [re_path(r"^.*$", echo_path)]
