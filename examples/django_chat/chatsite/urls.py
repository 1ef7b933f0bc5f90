"""URLs: the chat room, sign-up, and Django's login and logout views."""

from __future__ import annotations

from chatroom import views
from django.urls import include, path

urlpatterns = [
    path("", views.room, name="room"),
    path("room/<slug:name>/", views.room_named, name="room-named"),
    path("favicon.ico", views.favicon),
    path("signup/", views.signup, name="signup"),
    path("accounts/", include("django.contrib.auth.urls")),
]
