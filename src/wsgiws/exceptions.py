"""Exceptions raised by wsgiws.

The hierarchy:

* :exc:`WSGIWSError` — base class of everything below.

  * :exc:`ConnectionClosed` — ``send()`` or ``close()`` on a connection that is closed.
  * :exc:`InvalidState` (also a :exc:`RuntimeError`) — an API used at the wrong time,
    e.g. starting a server twice.
  * :exc:`Reject` — raised by a handler or mixin to refuse a handshake (in ``on_connect``)
    or to close an open connection (later).
  * :exc:`Skip` — raised by a mixin or handler to drop the current event and keep the
    connection.
"""

from __future__ import annotations

from http import HTTPStatus

from wsproto.frame_protocol import CloseReason

__all__ = [
    "ConnectionClosed",
    "InvalidState",
    "Reject",
    "Skip",
    "WSGIWSError",
]


class WSGIWSError(Exception):
    """Base class of the exceptions wsgiws raises."""


class ConnectionClosed(WSGIWSError):
    """The connection is closed: nothing more can be sent on it.

    Attributes:
        code: the close code that ended the connection (1006 when no close frame was
            exchanged), or ``None`` when it never opened.
        reason: the close reason, possibly empty.
    """

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        if self.code is None:
            return "connection is not open"
        if self.reason:
            return f"connection closed with code {self.code} ({self.reason})"
        return f"connection closed with code {self.code}"


class InvalidState(WSGIWSError, RuntimeError):
    """An operation was attempted in a state that does not allow it."""


class Skip(WSGIWSError):
    """Drop the current event; the connection stays open.

    Raised from a mixin, the handlers after it in the chain do not see the event.
    Raised from ``on_connect``, the connection is accepted without running the rest
    of the chain.
    """


class Reject(WSGIWSError):
    """Refuse the handshake, or close an open connection.

    Raised in ``on_connect``, the client receives an HTTP response with ``status``
    (and ``reason`` as a plain-text body) instead of the 101 upgrade. Raised later,
    the connection is closed with ``code`` and ``reason``.

    Args:
        code: close code used after the handshake (default 1008, policy violation).
        reason: human-readable reason, sent in the close frame or the HTTP body.
        status: HTTP status used during the handshake (default 403).
    """

    def __init__(
        self,
        code: int = CloseReason.POLICY_VIOLATION,
        reason: str = "",
        status: int = HTTPStatus.FORBIDDEN,
    ) -> None:
        if not 1000 <= code <= 4999 or code in (1004, 1005, 1006, 1015):
            raise ValueError(f"code must be a valid close code to send, got {code}")
        if not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error status (4xx/5xx), got {status}")
        super().__init__(code, reason, status)
        self.code = code
        self.reason = reason
        self.status = status

    def __str__(self) -> str:
        return f"rejected (close code {self.code}, HTTP status {self.status}): {self.reason}"
