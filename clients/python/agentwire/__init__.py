"""agentwire: the Python SDK of the agentwire WebSocket gateway.

- :class:`Publisher` / :class:`AsyncPublisher`: the HTTP API (publish, batch,
  history, connections, disconnect, tickets), with exact retries.
- :class:`Run` / :class:`SyncRun` (``publisher.run(...)``): one agent run whose
  five agent events cannot come out of order.
- :mod:`agentwire.agent`: ``exec:`` and ``http:`` agent backends from one
  generator of events (standard library only).
- :class:`Subscriber`: a user's events over WebSocket, resumed exactly across
  reconnects.
- :mod:`agentwire.events`: builders of the protocol's events;
  :func:`make_token`: HS256 user tokens.

Names are imported lazily: ``import agentwire.agent`` or ``agentwire.events``
needs neither httpx nor websockets.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Dict, List, Tuple

__version__ = "0.1.0"

_EXPORTS: Dict[str, Tuple[str, str]] = {
    # errors (standard library)
    "AgentwireError": ("errors", "AgentwireError"),
    "BadRequest": ("errors", "BadRequest"),
    "Unauthorized": ("errors", "Unauthorized"),
    "NotFound": ("errors", "NotFound"),
    "MethodNotAllowed": ("errors", "MethodNotAllowed"),
    "RunOrder": ("errors", "RunOrder"),
    "TooLarge": ("errors", "TooLarge"),
    "InvalidEvent": ("errors", "InvalidEvent"),
    "RateLimited": ("errors", "RateLimited"),
    "ServerError": ("errors", "ServerError"),
    "Unavailable": ("errors", "Unavailable"),
    "ConnectionFailed": ("errors", "ConnectionFailed"),
    "ReplyError": ("errors", "ReplyError"),
    "RequestTimeout": ("errors", "RequestTimeout"),
    "NotConnected": ("errors", "NotConnected"),
    "ConnectionLost": ("errors", "ConnectionLost"),
    # retries (standard library)
    "RetryPolicy": ("retry", "RetryPolicy"),
    "NO_RETRY": ("retry", "NO_RETRY"),
    # events (standard library)
    "RunRequest": ("events", "RunRequest"),
    "ToolCall": ("events", "ToolCall"),
    # tokens (standard library)
    "make_token": ("tokens", "make_token"),
    # publisher (httpx)
    "Publisher": ("publisher", "Publisher"),
    "AsyncPublisher": ("publisher", "AsyncPublisher"),
    "Receipt": ("publisher", "Receipt"),
    "Ticket": ("publisher", "Ticket"),
    "History": ("publisher", "History"),
    "ConnectionInfo": ("publisher", "ConnectionInfo"),
    "BatchResult": ("publisher", "BatchResult"),
    # run helper
    "Run": ("run", "Run"),
    "SyncRun": ("run", "SyncRun"),
    # subscriber (websockets)
    "Subscriber": ("subscriber", "Subscriber"),
    "Reset": ("subscriber", "Reset"),
    "Counters": ("subscriber", "Counters"),
    # agent backends (standard library; aiohttp optional)
    "run_exec_agent": ("agent", "run_exec_agent"),
    "exec_main": ("agent", "exec_main"),
    "make_http_server": ("agent", "make_http_server"),
    "serve_http_agent": ("agent", "serve_http_agent"),
    "asgi_app": ("agent", "asgi_app"),
    "aiohttp_app": ("agent", "aiohttp_app"),
    "aiohttp_handler": ("agent", "aiohttp_handler"),
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'agentwire' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{module}", __name__), attr)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from .agent import (
        aiohttp_app,
        aiohttp_handler,
        asgi_app,
        exec_main,
        make_http_server,
        run_exec_agent,
        serve_http_agent,
    )
    from .errors import (
        AgentwireError,
        BadRequest,
        ConnectionFailed,
        ConnectionLost,
        InvalidEvent,
        MethodNotAllowed,
        NotConnected,
        NotFound,
        RateLimited,
        ReplyError,
        RequestTimeout,
        RunOrder,
        ServerError,
        TooLarge,
        Unauthorized,
        Unavailable,
    )
    from .events import RunRequest, ToolCall
    from .publisher import (
        AsyncPublisher,
        BatchResult,
        ConnectionInfo,
        History,
        Publisher,
        Receipt,
        Ticket,
    )
    from .retry import NO_RETRY, RetryPolicy
    from .run import Run, SyncRun
    from .subscriber import Counters, Reset, Subscriber
    from .tokens import make_token
