"""Errors raised by django-websocket.

The hierarchy::

    WebSocketError
    ├── HandshakeError              (HTTP answer before any upgrade; carries .status)
    │   ├── BadRequest              400: malformed opening handshake (RFC 6455 §4.2.1)
    │   ├── UnsupportedVersion      426 + Sec-WebSocket-Version: 13 (RFC 6455 §4.4)
    │   ├── ForbiddenHandshake      403: refused by policy (e.g. Origin, RFC 6455 §10.2)
    │   ├── HeadersTooLarge         431: handshake headers over the limit
    │   └── ServiceUnavailable      503: connection cap reached or shutting down
    ├── ProtocolError               (after the upgrade; carries the close .code to send)
    │   ├── InvalidFrame            1002: RFC 6455 §5 framing rule broken
    │   ├── InvalidPayload          1007: text that is not UTF-8 (RFC 6455 §8.1)
    │   ├── PolicyViolation         1008
    │   └── MessageTooBig           1009
    ├── ConnectionClosed            the connection is closed; .code and .reason of the close
    └── InvalidState                an operation that the connection's state forbids

Protocol errors and handshake errors are the only exceptions the protocol core raises for bad
input: one place (the exception's own attributes) maps each to its close code or HTTP status.
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus

__all__ = [
    "WebSocketError",
    "HandshakeError",
    "BadRequest",
    "UnsupportedVersion",
    "ForbiddenHandshake",
    "HeadersTooLarge",
    "ServiceUnavailable",
    "ProtocolError",
    "InvalidFrame",
    "InvalidPayload",
    "PolicyViolation",
    "MessageTooBig",
    "ConnectionClosed",
    "InvalidState",
]


class WebSocketError(Exception):
    """Base class of every error raised by django-websocket."""


class HandshakeError(WebSocketError):
    """The opening handshake is refused; ``status`` and ``headers`` are the HTTP answer."""

    status: HTTPStatus = HTTPStatus.BAD_REQUEST
    headers: tuple[tuple[str, str], ...] = ()

    def __init__(self, message: str = "", *, headers: Iterable[tuple[str, str]] | None = None) -> None:
        super().__init__(message or self.status.phrase)
        if headers is not None:
            self.headers = tuple(headers)


class BadRequest(HandshakeError):
    status = HTTPStatus.BAD_REQUEST


class UnsupportedVersion(HandshakeError):
    # RFC 6455 §4.4: answer with the versions we speak.
    status = HTTPStatus.UPGRADE_REQUIRED
    headers = (("Sec-WebSocket-Version", "13"),)


class ForbiddenHandshake(HandshakeError):
    status = HTTPStatus.FORBIDDEN


class HeadersTooLarge(HandshakeError):
    status = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE


class ServiceUnavailable(HandshakeError):
    status = HTTPStatus.SERVICE_UNAVAILABLE


class ProtocolError(WebSocketError):
    """The peer broke the protocol; ``code`` is the close code to fail the connection with."""

    code: int = 1002

    def __init__(self, message: str = "", *, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class InvalidFrame(ProtocolError):
    code = 1002


class InvalidPayload(ProtocolError):
    code = 1007


class PolicyViolation(ProtocolError):
    code = 1008


class MessageTooBig(ProtocolError):
    code = 1009


class ConnectionClosed(WebSocketError):
    """Raised when sending on a connection that is closed (or closing)."""

    def __init__(self, code: int | None = None, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        detail = f"code {code}" if code is not None else "no close code"
        super().__init__(f"the WebSocket connection is closed ({detail}{', ' + repr(reason) if reason else ''})")


class InvalidState(WebSocketError):
    """An operation the connection's current state does not allow (e.g. accepting twice)."""
