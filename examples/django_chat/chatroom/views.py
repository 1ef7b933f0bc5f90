"""The chat page and a sign-up form (Django's login views do the rest)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render


@login_required  # type: ignore[untyped-decorator]  # Django ships no type hints
def room(request: HttpRequest, name: str = "lobby") -> HttpResponse:
    """The chat room ``name``; its script connects to ``/ws/chat/<name>``."""
    return render(
        request,
        "chatroom/room.html",
        {"room": name, "ws_port": getattr(settings, "WEBSOCKET_PORT", None) or ""},
    )


def signup(request: HttpRequest) -> HttpResponse:
    """Create an account and log it in."""
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        login(request, form.save())
        return redirect("room")
    return render(request, "registration/signup.html", {"form": form})
