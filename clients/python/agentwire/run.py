"""The run helper: one agent run published through the HTTP API, with the five
agent events in the order the server requires.

>>> async with aw.run(user_id, thread_id, agent_name="helper") as run:   # doctest: +SKIP
...     await run.thinking("Looking up the weather")
...     async with run.tool("weather", {"city": "Oslo"}) as t:
...         t.result = await get_weather("Oslo")
...     await run.partial("It is ")
...     await run.partial("sunny.")
... # agent_completed: success, final_response "It is sunny."

``agent_started`` is published on entry (with a fresh ``run_id`` unless you
give one), ``agent_completed`` on exit: ``success``; ``error`` when an
exception escapes (its message in ``error``; the exception is re-raised);
``cancelled`` on ``asyncio.CancelledError`` (or ``KeyboardInterrupt``). A tool
block publishes ``tool_executing``, then ``tool_completed`` with the measured
``duration`` and ``t.result`` (or the exception's message in ``error``).
"""
from __future__ import annotations

import asyncio
import uuid
from types import TracebackType
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncIterable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Type,
    Union,
)

from . import events as E
from .errors import AgentwireError

if TYPE_CHECKING:  # pragma: no cover
    from .publisher import AsyncPublisher, Publisher, Receipt

__all__ = ["Run", "SyncRun", "ToolBlock", "SyncToolBlock"]

_RESERVED = {"agent_started", "agent_completed", "tool_executing", "tool_completed"}


def _status_for(exc: Optional[BaseException]) -> "tuple[str, Optional[str]]":
    if exc is None:
        return "success", None
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled", "cancelled"
    if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
        return "cancelled", E.describe_error(exc)
    return "error", E.describe_error(exc)


def _note(exc: BaseException, err: AgentwireError, what: str) -> None:
    add_note = getattr(exc, "add_note", None)  # Python 3.11+
    if add_note is not None:
        add_note(f"agentwire: publishing {what} failed too: {err}")


class _RunBase:
    """State and event building shared by :class:`Run` and :class:`SyncRun`."""

    def __init__(
        self,
        user_id: str,
        thread_id: Optional[str],
        *,
        agent_name: str,
        run_id: Optional[str] = None,
        **fields: Any,
    ) -> None:
        if not isinstance(user_id, str) or not user_id:
            raise ValueError("user_id must be a non-empty string")
        if not isinstance(agent_name, str) or not agent_name:
            raise ValueError("agent_name must be a non-empty string")
        self.user_id = user_id
        self.thread_id = thread_id or f"thread_{uuid.uuid4().hex}"
        self.run_id = run_id or E.new_run_id()
        self.agent_name = agent_name
        self.started_fields: Dict[str, Any] = dict(fields)
        #: The answer published in ``agent_completed``; by default the
        #: ``partial_result`` pieces joined.
        self.final_response: Optional[str] = None
        #: The completion status once the run is closed.
        self.status: Optional[str] = None
        #: The receipt of the latest event this run published.
        self.last_receipt: Optional["Receipt"] = None
        self._pieces: List[str] = []
        self._started = False

    @property
    def response(self) -> str:
        """What ``agent_completed`` will say: ``final_response``, or the partial pieces joined."""
        if self.final_response is not None:
            return self.final_response
        return "".join(self._pieces)

    @property
    def completed(self) -> bool:
        """The run's ``agent_completed`` was published."""
        return self.status is not None

    def _stamp(self, ev: E.Event) -> E.Event:
        ev["thread_id"] = self.thread_id
        ev["run_id"] = self.run_id
        return ev

    def _check_open(self) -> None:
        if not self._started:
            raise RuntimeError("the run has not started: use it as a context manager")
        if self.status is not None:
            raise RuntimeError(f"the run is already completed ({self.status})")

    def _started_event(self) -> E.Event:
        return E.agent_started(self.thread_id, self.run_id, self.agent_name, **self.started_fields)

    def _custom(self, type_: str, fields: Mapping[str, Any]) -> E.Event:
        if type_ in _RESERVED:
            raise ValueError(f"{type_} is published by the run helper itself (use run.tool(), "
                             "run.complete() or the context manager)")
        ev: E.Event = {"type": type_}
        ev.update(fields)
        ev["type"] = type_
        return self._stamp(ev)

    def _completion(self, status: str, final_response: Optional[str], error: Optional[str],
                    fields: Mapping[str, Any]) -> E.Event:
        if final_response is not None:
            self.final_response = final_response
        return self._stamp(E.agent_completed(status, self.response, error=error, **fields))


class Run(_RunBase):
    """An asyncio run: ``async with publisher.run(user_id, thread_id, agent_name=...) as run``.

    Attributes: ``run_id``, ``thread_id``, ``user_id``, ``agent_name``,
    ``final_response`` (settable), ``status`` (after completion),
    ``last_receipt``.
    """

    def __init__(self, publisher: "AsyncPublisher", user_id: str, thread_id: Optional[str], *,
                 agent_name: str, run_id: Optional[str] = None, **fields: Any) -> None:
        super().__init__(user_id, thread_id, agent_name=agent_name, run_id=run_id, **fields)
        self.publisher = publisher

    async def _publish(self, ev: E.Event) -> "Receipt":
        receipt = await self.publisher.publish(self.user_id, ev)
        self.last_receipt = receipt
        return receipt

    async def __aenter__(self) -> "Run":
        if self._started:
            raise RuntimeError("a run is entered once")
        await self._publish(self._started_event())
        self._started = True
        return self

    async def __aexit__(self, exc_type: Optional[Type[BaseException]],
                        exc: Optional[BaseException], tb: Optional[TracebackType]) -> bool:
        if self.status is not None:
            return False
        status, error = _status_for(exc)
        try:
            await _shielded(self.complete(status, error=error))
        except AgentwireError as err:
            if exc is None:
                raise
            _note(exc, err, "agent_completed")  # the body's exception goes on
        return False

    async def thinking(self, reasoning: str, **fields: Any) -> "Receipt":
        """Publishes ``agent_thinking`` with ``reasoning``."""
        self._check_open()
        return await self._publish(self._stamp(E.thinking(reasoning, **fields)))

    async def partial(self, content: str, **fields: Any) -> "Receipt":
        """Publishes one ``partial_result`` piece (``content``); the pieces joined are
        the default ``final_response``."""
        self._check_open()
        receipt = await self._publish(self._stamp(E.partial_result(content, **fields)))
        self._pieces.append(str(content))
        return receipt

    async def stream(self, pieces: Union[AsyncIterable[str], Iterable[str]], **fields: Any) -> str:
        """Publishes each piece (say, an LLM's tokens) as a ``partial_result``;
        returns the text they make."""
        self._check_open()
        out: List[str] = []
        if hasattr(pieces, "__aiter__"):
            async for piece in pieces:  # type: ignore[union-attr]
                await self.partial(piece, **fields)
                out.append(str(piece))
        else:
            for piece in pieces:  # type: ignore[union-attr]
                await self.partial(piece, **fields)
                out.append(str(piece))
        return "".join(out)

    async def progress(self, **fields: Any) -> "Receipt":
        """Publishes a ``progress_update`` with your fields (``message``, ``percent``, …)."""
        self._check_open()
        return await self._publish(self._stamp(E.progress_update(**fields)))

    async def emit(self, type: str, **fields: Any) -> "Receipt":
        """Publishes an event of your own ``type`` inside the run (``thread_id`` and
        ``run_id`` are added). The four ordered agent events are refused: use
        :meth:`tool`, :meth:`complete` or the context manager."""
        self._check_open()
        return await self._publish(self._custom(type, fields))

    def tool(self, name: str, parameters: Optional[Mapping[str, Any]] = None,
             **fields: Any) -> "ToolBlock":
        """``async with run.tool(name, params) as t: t.result = ...``."""
        self._check_open()
        return ToolBlock(self, name, parameters, fields)

    async def complete(self, status: str = "success", final_response: Optional[str] = None, *,
                       error: Optional[str] = None, **fields: Any) -> "Receipt":
        """Publishes ``agent_completed`` now (the context manager then publishes
        nothing more). ``final_response`` defaults to the partial pieces joined."""
        self._check_open()
        receipt = await self._publish(self._completion(status, final_response, error, fields))
        self.status = status
        return receipt


class _ToolBlockBase:
    """What both kinds of tool block hold.

    Attributes: ``name``, ``parameters``, ``result``, ``duration`` (ms, after
    the block), ``fields`` (extra fields for ``tool_completed``).
    """

    def __init__(self, run: Any, name: str, parameters: Optional[Mapping[str, Any]],
                 fields: Mapping[str, Any]) -> None:
        self.run = run
        self.call = E.ToolCall(name, parameters, thread_id=run.thread_id, run_id=run.run_id)
        self.name = name
        self.parameters = self.call.parameters
        self.result: Any = None
        self.fields: Dict[str, Any] = {}
        self._start_fields = dict(fields)
        self.duration: Optional[float] = None


class ToolBlock(_ToolBlockBase):
    """One tool call of a :class:`Run`; set ``result`` inside the block."""

    run: "Run"

    async def __aenter__(self) -> "ToolBlock":
        await self.run._publish(self.call.start(**self._start_fields))
        return self

    async def __aexit__(self, exc_type: Optional[Type[BaseException]],
                        exc: Optional[BaseException], tb: Optional[TracebackType]) -> bool:
        if exc is None:
            ev = self.call.complete(self.result, **self.fields)
        else:
            status, error = _status_for(exc)
            ev = self.call.fail(error or status, self.result, **self.fields)
        self.duration = self.call.duration
        try:
            await _shielded(self.run._publish(ev))
        except AgentwireError as err:
            if exc is None:
                raise
            _note(exc, err, "tool_completed")
        return False


async def _shielded(coro: Any) -> Any:
    """Awaits coro so that a second cancellation does not stop it half-way."""
    task = asyncio.ensure_future(coro)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    return await asyncio.shield(task)


class SyncRun(_RunBase):
    """A blocking run: ``with publisher.run(user_id, thread_id, agent_name=...) as run``.
    The same methods as :class:`Run`, not awaited; ``KeyboardInterrupt`` ends it
    ``cancelled``."""

    def __init__(self, publisher: "Publisher", user_id: str, thread_id: Optional[str], *,
                 agent_name: str, run_id: Optional[str] = None, **fields: Any) -> None:
        super().__init__(user_id, thread_id, agent_name=agent_name, run_id=run_id, **fields)
        self.publisher = publisher

    def _publish(self, ev: E.Event) -> "Receipt":
        receipt = self.publisher.publish(self.user_id, ev)
        self.last_receipt = receipt
        return receipt

    def __enter__(self) -> "SyncRun":
        if self._started:
            raise RuntimeError("a run is entered once")
        self._publish(self._started_event())
        self._started = True
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]],
                 exc: Optional[BaseException], tb: Optional[TracebackType]) -> bool:
        if self.status is not None:
            return False
        status, error = _status_for(exc)
        try:
            self.complete(status, error=error)
        except AgentwireError as err:
            if exc is None:
                raise
            _note(exc, err, "agent_completed")
        return False

    def thinking(self, reasoning: str, **fields: Any) -> "Receipt":
        """Publishes ``agent_thinking`` with ``reasoning``."""
        self._check_open()
        return self._publish(self._stamp(E.thinking(reasoning, **fields)))

    def partial(self, content: str, **fields: Any) -> "Receipt":
        """Publishes one ``partial_result`` piece (``content``)."""
        self._check_open()
        receipt = self._publish(self._stamp(E.partial_result(content, **fields)))
        self._pieces.append(str(content))
        return receipt

    def stream(self, pieces: Iterable[str], **fields: Any) -> str:
        """Publishes each piece as a ``partial_result``; returns the text they make."""
        self._check_open()
        out: List[str] = []
        for piece in pieces:
            self.partial(piece, **fields)
            out.append(str(piece))
        return "".join(out)

    def progress(self, **fields: Any) -> "Receipt":
        """Publishes a ``progress_update`` with your fields."""
        self._check_open()
        return self._publish(self._stamp(E.progress_update(**fields)))

    def emit(self, type: str, **fields: Any) -> "Receipt":
        """Publishes an event of your own ``type`` inside the run."""
        self._check_open()
        return self._publish(self._custom(type, fields))

    def tool(self, name: str, parameters: Optional[Mapping[str, Any]] = None,
             **fields: Any) -> "SyncToolBlock":
        """``with run.tool(name, params) as t: t.result = ...``."""
        self._check_open()
        return SyncToolBlock(self, name, parameters, fields)

    def complete(self, status: str = "success", final_response: Optional[str] = None, *,
                 error: Optional[str] = None, **fields: Any) -> "Receipt":
        """Publishes ``agent_completed`` now."""
        self._check_open()
        receipt = self._publish(self._completion(status, final_response, error, fields))
        self.status = status
        return receipt


class SyncToolBlock(_ToolBlockBase):
    """One tool call of a :class:`SyncRun`; set ``result`` inside the block."""

    run: "SyncRun"

    def __enter__(self) -> "SyncToolBlock":
        self.run._publish(self.call.start(**self._start_fields))
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]],
                 exc: Optional[BaseException], tb: Optional[TracebackType]) -> bool:
        if exc is None:
            ev = self.call.complete(self.result, **self.fields)
        else:
            status, error = _status_for(exc)
            ev = self.call.fail(error or status, self.result, **self.fields)
        self.duration = self.call.duration
        try:
            self.run._publish(ev)
        except AgentwireError as err:
            if exc is None:
                raise
            _note(exc, err, "tool_completed")
        return False
