"""The public surface."""

from __future__ import annotations

import wsgiws


def test_public_names() -> None:
    """The names the seed and the docs promise are exported."""
    for name in (
        "Server",
        "WebSocketMiddleware",
        "Namespace",
        "Registry",
        "BaseWSClass",
        "BaseMixin",
        "WebSocket",
        "Reject",
        "Skip",
        "ConnectionClosed",
    ):
        assert name in wsgiws.__all__
        assert hasattr(wsgiws, name)


def test_reject_validates_its_arguments() -> None:
    """Reject refuses codes that cannot be sent and non-error statuses."""
    import pytest

    with pytest.raises(ValueError, match="1006"):
        wsgiws.Reject(1006)
    with pytest.raises(ValueError, match="status"):
        wsgiws.Reject(status=200)
    assert "4000" in str(wsgiws.Reject(4000, "why"))
