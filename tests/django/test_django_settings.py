"""The ``WEBSOCKET_*`` settings: defaults, derived origins, and errors naming the setting."""

from __future__ import annotations

import json
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from ..helpers import TIMEOUT
from .conftest import ws_url

SESSION = "django.contrib.sessions.middleware.SessionMiddleware"
AUTH = "django.contrib.auth.middleware.AuthenticationMiddleware"

pytestmark = pytest.mark.django


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("WEBSOCKET_PORT", "8001"),
        ("WEBSOCKET_PORT", -1),
        ("WEBSOCKET_PORT", 65536),
        ("WEBSOCKET_PORT", True),
        ("WEBSOCKET_HOST", 127),
        ("WEBSOCKET_MIDDLEWARE", SESSION),
        ("WEBSOCKET_MIDDLEWARE", [SESSION, 42]),
        ("WEBSOCKET_MIDDLEWARE", ["no.such.Middleware"]),
        ("WEBSOCKET_MIDDLEWARE", [AUTH]),  # needs the session middleware first
        ("WEBSOCKET_MIDDLEWARE", [AUTH, SESSION]),
        ("WEBSOCKET_ALLOWED_ORIGINS", "https://example.com"),
        ("WEBSOCKET_ALLOWED_ORIGINS", ["example.com"]),
        ("WEBSOCKET_ALLOWED_ORIGINS", ["https://example.com/path"]),
        ("WEBSOCKET_ALLOWED_ORIGINS", ["https://example.com:99999"]),
        ("WEBSOCKET_ALLOWED_ORIGINS", [None]),
        ("WEBSOCKET_OPTIONS", [("ping_interval", 5)]),
        ("WEBSOCKET_OPTIONS", {"no_such_option": 1}),
        ("WEBSOCKET_OPTIONS", {"ping_interval": -1}),
        ("WEBSOCKET_OPTIONS", {"origins": ["https://example.com"]}),
        ("WEBSOCKET_OPTIONS", {"handler_context": None}),
    ],
)
def test_wrong_setting_names_itself(setting: str, value: Any) -> None:
    """A wrong ``WEBSOCKET_*`` value raises ``ImproperlyConfigured`` naming the setting."""
    from django.core.exceptions import ImproperlyConfigured
    from django.test.utils import override_settings

    from wsgiws.django import conf

    with override_settings(**{setting: value}), pytest.raises(ImproperlyConfigured) as info:
        conf.load()
    assert str(info.value).startswith(f"{setting}: ")


def test_removed_middleware_is_explained() -> None:
    """djwebsockets' ``SessionAuthenticationMiddleware`` gets a message saying what to do."""
    from django.core.exceptions import ImproperlyConfigured
    from django.test.utils import override_settings

    from wsgiws.django import conf

    removed = "django.contrib.auth.middleware.SessionAuthenticationMiddleware"
    with (
        override_settings(WEBSOCKET_MIDDLEWARE=[SESSION, AUTH, removed]),
        pytest.raises(ImproperlyConfigured, match=r"removed in Django 2\.0"),
    ):
        conf.load()


def test_wrong_setting_stops_get_wsgi_application() -> None:
    """``get_wsgi_application`` fails at startup on a wrong setting, not at the first use."""
    from django.core.exceptions import ImproperlyConfigured
    from django.test.utils import override_settings

    from wsgiws.django import get_wsgi_application

    with (
        override_settings(WEBSOCKET_PORT="eighty"),
        pytest.raises(ImproperlyConfigured, match=r"^WEBSOCKET_PORT: "),
    ):
        get_wsgi_application()


def test_app_must_be_installed() -> None:
    """Without ``wsgiws.django`` in ``INSTALLED_APPS``, ``get_wsgi_application`` says so."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.test.utils import override_settings

    from wsgiws.django import get_wsgi_application

    apps = [app for app in settings.INSTALLED_APPS if app != "wsgiws.django"]
    with (
        override_settings(INSTALLED_APPS=apps),
        pytest.raises(ImproperlyConfigured, match=r"^INSTALLED_APPS: .*'wsgiws\.django'"),
    ):
        get_wsgi_application()


def test_defaults() -> None:
    """Unset settings mean same-port mode, loopback, sessions and auth middleware."""
    from django.test.utils import override_settings

    from wsgiws.django import conf

    with override_settings():
        from django.conf import settings

        for name in ("WEBSOCKET_PORT", "WEBSOCKET_HOST", "WEBSOCKET_MIDDLEWARE",
                     "WEBSOCKET_OPTIONS", "WEBSOCKET_ALLOWED_ORIGINS"):  # fmt: skip
            delattr(settings, name)
        loaded = conf.load()
    assert loaded.port is None
    assert loaded.host == "127.0.0.1"
    assert loaded.middleware == (SESSION, AUTH)
    assert loaded.options == {}
    assert isinstance(loaded.origins, conf.AllowedHostsOrigins)
    options = conf.server_options(loaded)
    assert options["port"] is None
    assert options["handler_context"] is conf.database_hygiene


@pytest.mark.parametrize(
    ("debug", "hosts", "origin", "allowed"),
    [
        (True, [], "http://localhost:8000", True),
        (True, [], "http://app.localhost:8000", True),
        (True, [], "http://127.0.0.1:8000", True),
        (True, [], "http://[::1]:8000", True),
        (True, [], "http://example.com", False),
        (False, [], "http://localhost:8000", False),  # production: nothing by default
        (False, ["example.com"], "https://example.com", True),
        (False, ["example.com"], "https://www.example.com", False),
        (False, [".example.com"], "https://www.example.com:8443", True),
        (False, ["example.com"], "javascript://example.com", False),
        (False, ["example.com"], None, True),  # no Origin: not a browser
        (False, ["Example.COM"], "https://EXAMPLE.com.", True),  # case, trailing dot
        (False, ["example.com"], "https://example.com:bad", False),
        (False, ["example.com"], "https://user@example.com", False),
    ],
)
def test_origins_follow_allowed_hosts(
    debug: bool, hosts: list[str], origin: str | None, allowed: bool
) -> None:
    """The default origin check follows ``ALLOWED_HOSTS`` as Django's ``get_host`` does."""
    from django.test.utils import override_settings

    from wsgiws.django import conf

    with override_settings(DEBUG=debug, ALLOWED_HOSTS=hosts):
        check = conf.load().origins
    assert callable(check)
    assert check(origin) is allowed


@pytest.mark.parametrize(
    ("setting", "hosts", "expected"),
    [
        (None, ["*"], None),
        ("*", ["example.com"], None),
        (["*"], ["example.com"], None),
        (["https://a.example", ""], [], ("https://a.example", "")),
    ],
)
def test_explicit_origins(setting: Any, hosts: list[str], expected: Any) -> None:
    """``"*"`` (or ``*`` in ``ALLOWED_HOSTS``) turns the check off; a list is exact."""
    from django.test.utils import override_settings

    from wsgiws.django import conf

    with override_settings(WEBSOCKET_ALLOWED_ORIGINS=setting, ALLOWED_HOSTS=hosts):
        assert conf.load().origins == expected


def test_middleware_chain_follows_setting_changes(application: Any) -> None:
    """Changing ``WEBSOCKET_MIDDLEWARE`` (``override_settings``) rebuilds the chain."""
    from django.test.utils import override_settings

    url = ws_url(application, "/django/whoami/deny")
    with (
        override_settings(WEBSOCKET_MIDDLEWARE=[SESSION, AUTH]),
        connect(url, open_timeout=TIMEOUT) as ws,
    ):
        assert json.loads(ws.recv(timeout=TIMEOUT))["class"] == "AnonymousUser"
    with pytest.raises(InvalidStatus) as info, connect(url, open_timeout=TIMEOUT):
        pass  # pragma: no cover - the handshake fails
    assert info.value.response.status_code == 403


def test_without_middleware(application: Any) -> None:
    """With an empty ``WEBSOCKET_MIDDLEWARE``, ``user`` and ``session`` are ``None``."""
    from django.test.utils import override_settings

    import wsgiws
    from wsgiws.django import DjangoMiddlewareMixin

    registry = wsgiws.Registry()
    seen: dict[str, Any] = {}

    @wsgiws.Namespace(r"/bare", registry=registry)
    class Bare(DjangoMiddlewareMixin, wsgiws.BaseWSClass):
        @classmethod
        def on_connect(cls, websocket: Any, path: str) -> None:
            seen.update(user=websocket.user, session=websocket.session)
            websocket.send("ok")

    with (
        override_settings(WEBSOCKET_MIDDLEWARE=[]),
        wsgiws.Server(port=0, registry=registry) as server,
        connect(f"ws://127.0.0.1:{server.port}/bare", open_timeout=TIMEOUT) as ws,
    ):
        assert ws.recv(timeout=TIMEOUT) == "ok"
    assert seen == {"user": None, "session": None}


def test_system_check_reports_wrong_setting() -> None:
    """``manage.py check`` reports a wrong setting as error ``wsgiws.E001``."""
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError
    from django.test.utils import override_settings

    call_command("check", verbosity=0)  # the test project's settings pass
    with (
        override_settings(WEBSOCKET_OPTIONS={"ping_interval": 0}),
        pytest.raises(SystemCheckError) as info,
    ):
        call_command("check", verbosity=0)
    assert "(wsgiws.E001) WEBSOCKET_OPTIONS: ping_interval" in str(info.value)
