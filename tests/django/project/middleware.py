"""A middleware that answers some handshakes itself instead of passing them on."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.shortcuts import redirect


class RefuseMiddleware:
    """Answer paths ending in ``/deny`` (403), ``/slow-down`` (429), ``/boom`` (an
    exception, hence 500) and ``/login-required`` for anonymous users (a redirect)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path
        if path.endswith("/deny"):
            return HttpResponseForbidden("not for you")
        if path.endswith("/slow-down"):
            return HttpResponse("too many", status=429)
        if path.endswith("/boom"):
            raise RuntimeError("middleware failure (expected by the test)")
        if path.endswith("/login-required") and not request.user.is_authenticated:
            return redirect(f"/login/?next={path}")
        return self.get_response(request)
