"""The chat page and a sign-up form (Django's login views do the rest)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.templatetags.static import static


@login_required  # type: ignore[untyped-decorator]  # Django ships no type hints
def room(request: HttpRequest) -> HttpResponse:
    """The chat page (the shared chat script, in logged-in mode); the room is the
    page's ``#hash``, and its script connects to ``/ws/chat/<room>``."""
    ws_port = getattr(settings, "WEBSOCKET_PORT", None) or ""
    return render(request, "chatroom/room.html", {"ws_port": ws_port})


def room_named(request: HttpRequest, name: str) -> HttpResponse:
    """``/room/<name>/``: the chat page opened on that room."""
    return redirect(f"/#{name}")


def favicon(request: HttpRequest) -> HttpResponse:
    """``/favicon.ico``, asked for by pages that name no icon (the login form's)."""
    return redirect(static("favicon.svg"), permanent=True)


def signup(request: HttpRequest) -> HttpResponse:
    """Create an account and log it in."""
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        login(request, form.save())
        return redirect("room")
    return render(request, "registration/signup.html", {"form": form})
