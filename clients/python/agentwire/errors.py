"""Typed errors of the agentwire client.

Every error the HTTP API answers is ``{"error": "<code>", "message": "…"}``; the
client raises the subclass of :class:`AgentwireError` that matches the status,
with the server's ``code`` and ``message`` kept as they were. This module uses
the standard library only.
"""
from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Optional, Type

__all__ = [
    "AgentwireError",
    "BadRequest",
    "Unauthorized",
    "NotFound",
    "MethodNotAllowed",
    "RunOrder",
    "TooLarge",
    "InvalidEvent",
    "RateLimited",
    "ServerError",
    "Unavailable",
    "ConnectionFailed",
    "ReplyError",
    "RequestTimeout",
    "NotConnected",
    "ConnectionLost",
    "error_from_response",
]


class AgentwireError(Exception):
    """Base class of every error raised by this package.

    Attributes:
        status: the HTTP status of the answer, or ``None`` when there was none
            (connection failure, WebSocket reply).
        code: the server's error code (``invalid_event``, ``run_order``, …), or
            the client's own (``connection_error``, ``timeout``, ``gave_up``, …).
        message: the server's human-readable message.
        body: the decoded JSON body of the answer (or ``None``).
        retry_after: seconds from the ``Retry-After`` header, when present.
    """

    default_code = "error"

    def __init__(
        self,
        message: str,
        *,
        status: Optional[int] = None,
        code: Optional[str] = None,
        body: Any = None,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or self.default_code
        self.message = message
        self.body = body
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f"{self.status} " if self.status is not None else ""
        return f"{where}{self.code}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, "
            f"message={self.message!r})"
        )


class BadRequest(AgentwireError):
    """400: the body is not JSON (``invalid_json``) or the request is unreadable (``bad_request``)."""

    default_code = "bad_request"


class Unauthorized(AgentwireError):
    """401 ``unauthorized``: missing or wrong API key, or a bad user JWT (tickets, WebSocket)."""

    default_code = "unauthorized"


class NotFound(AgentwireError):
    """404 ``not_found``: no such route."""

    default_code = "not_found"


class MethodNotAllowed(AgentwireError):
    """405 ``method_not_allowed``."""

    default_code = "method_not_allowed"


class RunOrder(AgentwireError):
    """409 ``run_order``: the event breaks its run's order (unknown or closed run,
    a ``run_id`` used before, a ``tool_completed`` that answers nothing, …)."""

    default_code = "run_order"


class TooLarge(AgentwireError):
    """413 ``too_large``: body too big, or a batch of more than 1000 events."""

    default_code = "too_large"


class InvalidEvent(AgentwireError):
    """422 ``invalid_event``: the event lacks a required field or has a bad one."""

    default_code = "invalid_event"


class RateLimited(AgentwireError):
    """429: ``too_many_tickets`` or ``too_many_connections``."""

    default_code = "rate_limited"


class ServerError(AgentwireError):
    """Any other status of 500 and above (or an unexpected one)."""

    default_code = "server_error"


class Unavailable(AgentwireError):
    """503 ``unavailable`` (still so after the configured retries)."""

    default_code = "unavailable"


class ConnectionFailed(Unavailable):
    """The server could not be reached or did not answer, after the retries
    (``code`` is ``connection_error`` or ``timeout``). A subclass of
    :class:`Unavailable`, so ``except Unavailable`` covers both."""

    default_code = "connection_error"


class ReplyError(AgentwireError):
    """A WebSocket request answered with an ``error`` message (``too_many_runs``,
    ``invalid_message``, …) or ``resume_failed``; ``body`` is the reply."""


class RequestTimeout(AgentwireError):
    """A WebSocket request got no reply in time."""

    default_code = "timeout"


class NotConnected(AgentwireError):
    """A WebSocket request was made while the subscriber had no open connection.
    Requests are never queued or resent (a resent ``start_agent`` would start a
    second run)."""

    default_code = "not_connected"


class ConnectionLost(AgentwireError):
    """The WebSocket closed before the request's reply came."""

    default_code = "connection_closed"


_BY_STATUS: Dict[int, Type[AgentwireError]] = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    405: MethodNotAllowed,
    409: RunOrder,
    413: TooLarge,
    422: InvalidEvent,
    429: RateLimited,
    503: Unavailable,
}


def _class_for(status: int) -> Type[AgentwireError]:
    cls = _BY_STATUS.get(status)
    if cls is not None:
        return cls
    if status == 431:
        return BadRequest
    if 400 <= status < 500:
        return AgentwireError
    return ServerError


def error_from_response(
    status: int,
    body: Any,
    *,
    text: str = "",
    retry_after: Optional[float] = None,
) -> AgentwireError:
    """Builds the error for an HTTP answer ``status`` with JSON ``body`` (or raw ``text``)."""
    code: Optional[str] = None
    message = ""
    if isinstance(body, Mapping):
        if isinstance(body.get("error"), str):
            code = body["error"]
        if isinstance(body.get("message"), str):
            message = body["message"]
    if not message:
        message = text.strip()[:500] or f"HTTP {status}"
    return _class_for(status)(message, status=status, code=code, body=body, retry_after=retry_after)


def error_from_item(item: Mapping[str, Any]) -> AgentwireError:
    """Builds the error of one failed item of a batch (``{"error","message","status"}``)."""
    status = item.get("status")
    st = status if isinstance(status, int) else 0
    return error_from_response(st, item)


def parse_json(text: str) -> Any:
    """``json.loads`` that answers ``None`` for a body that is not JSON."""
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return None
