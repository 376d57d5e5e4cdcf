"""Builders for agentwire events, standard library only.

Each function returns a plain ``dict`` with the field names of the protocol
(docs/protocol.md, PROTOCOL section 2), so a typo in a field name cannot
happen. The server stamps the envelope (``seq``, ``epoch``, ``event_id``,
``timestamp``, ``user_id``); agent backends (exec, http) also get ``thread_id``
and ``run_id`` stamped, so the builders leave them out unless given.

>>> thinking("Counting the letters.")
{'type': 'agent_thinking', 'reasoning': 'Counting the letters.'}
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

__all__ = [
    "Event",
    "AGENT_EVENT_TYPES",
    "COMPLETION_STATUSES",
    "new_run_id",
    "agent_started",
    "thinking",
    "tool_executing",
    "tool_completed",
    "partial_result",
    "progress_update",
    "agent_completed",
    "ToolCall",
    "RunRequest",
]

#: An event: a JSON object with a ``type``.
Event = Dict[str, Any]

#: The five agent events the server validates and orders.
AGENT_EVENT_TYPES = frozenset(
    {"agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"}
)

#: Values of ``agent_completed.status``.
COMPLETION_STATUSES = frozenset({"success", "error", "cancelled", "timeout"})


def new_run_id() -> str:
    """A fresh run id (``run_`` + 32 hex digits)."""
    return "run_" + uuid.uuid4().hex


def _make(type_: str, fields: Mapping[str, Any], thread_id: Optional[str] = None,
          run_id: Optional[str] = None, **required: Any) -> Event:
    """An event of ``type_``: your ``fields``, then the ids, then the required fields
    (which win over a field of the same name)."""
    ev: Event = {"type": type_}
    ev.update(fields)
    if thread_id is not None:
        ev["thread_id"] = thread_id
    if run_id is not None:
        ev["run_id"] = run_id
    ev.update(required)
    ev["type"] = type_
    return ev


def agent_started(thread_id: str, run_id: str, agent_name: str, **fields: Any) -> Event:
    """``agent_started``: opens a run (HTTP API publishers only; agent backends
    never send it, the server does)."""
    return _make("agent_started", fields, thread_id, run_id, agent_name=agent_name)


def thinking(reasoning: str, *, thread_id: Optional[str] = None, run_id: Optional[str] = None,
             **fields: Any) -> Event:
    """``agent_thinking`` with its ``reasoning`` text."""
    return _make("agent_thinking", fields, thread_id, run_id, reasoning=str(reasoning))


def tool_executing(tool_name: str, parameters: Optional[Mapping[str, Any]] = None, *,
                   thread_id: Optional[str] = None, run_id: Optional[str] = None,
                   **fields: Any) -> Event:
    """``tool_executing``: a tool starts, with its ``parameters`` (an object)."""
    return _make("tool_executing", fields, thread_id, run_id, tool_name=tool_name,
                 parameters=dict(parameters or {}))


def tool_completed(tool_name: str, results: Any, duration: float, *,
                   thread_id: Optional[str] = None, run_id: Optional[str] = None,
                   **fields: Any) -> Event:
    """``tool_completed``: answers the latest open ``tool_executing`` of ``tool_name``.
    ``duration`` is in milliseconds; ``results`` any JSON value (``None`` too)."""
    return _make("tool_completed", fields, thread_id, run_id, tool_name=tool_name,
                 results=results, duration=max(0.0, float(duration)))


def partial_result(content: str, *, thread_id: Optional[str] = None, run_id: Optional[str] = None,
                   **fields: Any) -> Event:
    """``partial_result``: one piece of the answer, in ``content`` (as the demo agent does)."""
    return _make("partial_result", fields, thread_id, run_id, content=str(content))


def progress_update(*, thread_id: Optional[str] = None, run_id: Optional[str] = None,
                    **fields: Any) -> Event:
    """``progress_update`` with any fields of yours (for example ``message``, ``percent``)."""
    return _make("progress_update", fields, thread_id, run_id)


def agent_completed(status: str = "success", final_response: str = "", *,
                    error: Optional[str] = None, thread_id: Optional[str] = None,
                    run_id: Optional[str] = None, **fields: Any) -> Event:
    """``agent_completed``: closes the run. ``status`` is one of ``success``,
    ``error``, ``cancelled``, ``timeout``; ``error`` says why when it is not a success."""
    if status not in COMPLETION_STATUSES:
        raise ValueError(f"status must be one of {sorted(COMPLETION_STATUSES)}, not {status!r}")
    ev = _make("agent_completed", fields, thread_id, run_id, status=status,
               final_response="" if final_response is None else str(final_response))
    if error is not None:
        ev["error"] = str(error)
    return ev


def describe_error(exc: BaseException) -> str:
    """The text put in an ``error`` field for an exception: its message, or its class name."""
    text = str(exc)
    return text if text else type(exc).__name__


class ToolCall:
    """One tool call, timed: ``start()`` gives its ``tool_executing``,
    ``complete(results)`` (or ``fail(error)``) its ``tool_completed`` with the
    duration since ``start()``.

    >>> call = ToolCall("letter_count", {"text": "abc"})
    >>> call.start()["type"]
    'tool_executing'
    >>> call.complete({"letters": 3})["results"]
    {'letters': 3}
    """

    def __init__(self, name: str, parameters: Optional[Mapping[str, Any]] = None,
                 *, thread_id: Optional[str] = None, run_id: Optional[str] = None) -> None:
        self.name = name
        self.parameters: Dict[str, Any] = dict(parameters or {})
        self.thread_id = thread_id
        self.run_id = run_id
        self.started: Optional[float] = None
        self.duration: Optional[float] = None  # ms, once completed

    def start(self, **fields: Any) -> Event:
        """The ``tool_executing`` event; starts the clock."""
        self.started = time.monotonic()
        return tool_executing(self.name, self.parameters, thread_id=self.thread_id,
                              run_id=self.run_id, **fields)

    def elapsed_ms(self) -> float:
        """Milliseconds since ``start()`` (0 before it)."""
        return 0.0 if self.started is None else (time.monotonic() - self.started) * 1000.0

    def complete(self, results: Any = None, **fields: Any) -> Event:
        """The ``tool_completed`` event with ``results`` and the measured duration."""
        self.duration = self.elapsed_ms()
        return tool_completed(self.name, results, self.duration, thread_id=self.thread_id,
                              run_id=self.run_id, **fields)

    def fail(self, error: Any, results: Any = None, **fields: Any) -> Event:
        """The ``tool_completed`` event of a failed call: ``error`` holds the
        exception's message (or your text), ``results`` is ``None`` unless given."""
        text = describe_error(error) if isinstance(error, BaseException) else str(error)
        return self.complete(results, error=text, **fields)


@dataclass
class RunRequest:
    """The run request the server hands an agent backend (exec: on stdin, http: as the POST body)."""

    run_id: str
    thread_id: str
    user_id: str
    user_request: str
    context: Dict[str, Any] = field(default_factory=dict)
    settings: Dict[str, Any] = field(default_factory=dict)
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunRequest":
        """Reads a run request; raises ``ValueError`` when it is not one."""
        if not isinstance(data, Mapping):
            raise ValueError("the run request must be a JSON object")
        context = data.get("context")
        settings = data.get("settings")
        return cls(
            run_id=str(data.get("run_id") or ""),
            thread_id=str(data.get("thread_id") or ""),
            user_id=str(data.get("user_id") or ""),
            user_request=str(data.get("user_request") or ""),
            context=dict(context) if isinstance(context, Mapping) else {},
            settings=dict(settings) if isinstance(settings, Mapping) else {},
            raw=dict(data),
        )
