"""URLs of the test project: a page that shows a session value."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import path


def session_view(request: HttpRequest) -> JsonResponse:
    """Show the user and the ``ws_count`` session value set by a WebSocket handler."""
    return JsonResponse({"user": str(request.user), "ws_count": request.session.get("ws_count")})


urlpatterns = [path("session/", session_view)]
