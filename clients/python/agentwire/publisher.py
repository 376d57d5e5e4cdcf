"""Publishers for agentwire's HTTP API (docs/protocol.md, "HTTP API"), on httpx.

:class:`Publisher` is synchronous, :class:`AsyncPublisher` is for asyncio; both
have the same methods. Every publish carries an idempotency key (a fresh uuid4
unless you give one), so the retries on 503 and on connection errors are exact:
the server answers a retry with the first publish's receipt instead of
publishing twice.
"""
from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Tuple,
    Union,
)
from urllib.parse import quote

import httpx

from .errors import (
    AgentwireError,
    ConnectionFailed,
    ServerError,
    error_from_item,
    error_from_response,
    parse_json,
)
from .retry import RetryPolicy, RetryState, parse_retry_after

if TYPE_CHECKING:  # pragma: no cover
    from .run import Run, SyncRun

__all__ = [
    "Publisher",
    "AsyncPublisher",
    "Receipt",
    "Ticket",
    "ConnectionInfo",
    "History",
    "BatchResult",
    "BATCH_MAX",
    "DEFAULT_URL",
]

#: The server takes at most this many events per batch; longer lists are sent in slices.
BATCH_MAX = 1000
#: Where the publisher connects when neither ``url`` nor ``$AGENTWIRE_URL`` says.
DEFAULT_URL = "http://127.0.0.1:8080"
_USER_AGENT = "agentwire-python/0.1"


@dataclass(frozen=True)
class Receipt:
    """What a successful publish answers: the event's place in the user's stream."""

    seq: int
    epoch: str
    event_id: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Receipt":
        return cls(seq=int(data["seq"]), epoch=str(data["epoch"]), event_id=str(data["event_id"]))


#: One item of :meth:`Publisher.publish_batch`'s answer: a receipt, or the error
#: of that event (not raised).
BatchResult = Union[Receipt, AgentwireError]


@dataclass(frozen=True)
class Ticket:
    """A one-time WebSocket ticket (``?ticket=``) and its expiry (ms since the Unix epoch)."""

    ticket: str
    expires_at: int


@dataclass(frozen=True)
class ConnectionInfo:
    """One live connection of a user."""

    connection_id: str
    remote_addr: Optional[str]
    connected_at: Optional[int]
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class History:
    """A user's retained events after ``since``; ``epoch`` is ``None`` for an unknown user."""

    user_id: str
    epoch: Optional[str]
    seq: int
    first_seq: Optional[int]
    events: List[Dict[str, Any]]


@dataclass
class _Call:
    method: str
    path: str
    json: Any = None
    params: Optional[Dict[str, Any]] = None
    headers: Dict[str, str] = field(default_factory=dict)
    api_key: bool = True  # send the API key as Bearer


def _user_path(user_id: str, action: str) -> str:
    if not isinstance(user_id, str) or not user_id:
        raise ValueError("user_id must be a non-empty string")
    return f"/api/v1/users/{quote(user_id, safe='')}/{action}"


def _base_url(url: Optional[str]) -> str:
    url = (url or os.environ.get("AGENTWIRE_URL") or DEFAULT_URL).rstrip("/")
    if url.startswith("ws://"):
        url = "http://" + url[5:]
    elif url.startswith("wss://"):
        url = "https://" + url[6:]
    for suffix in ("/ws", "/api/v1/websocket"):
        if url.endswith(suffix):
            url = url[: -len(suffix)]
    return url


def _new_key() -> str:
    return str(uuid.uuid4())


class _Base:
    """What the two publishers share: building requests and reading answers."""

    def __init__(
        self,
        url: Optional[str],
        api_key: Optional[str],
        *,
        timeout: float,
        retry: Optional[RetryPolicy],
        headers: Optional[Mapping[str, str]],
        idempotency: bool,
    ) -> None:
        self.url = _base_url(url)
        self.api_key = api_key if api_key is not None else os.environ.get("AGENTWIRE_API_KEY")
        self.timeout = timeout
        self.retry = retry if retry is not None else RetryPolicy()
        self.idempotency = idempotency
        self._headers = {"User-Agent": _USER_AGENT, **dict(headers or {})}

    # ---- requests ----

    def _headers_for(self, call: _Call) -> Dict[str, str]:
        h = dict(call.headers)
        if call.api_key and self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        return h

    def _publish_call(
        self, user_id: str, event: Mapping[str, Any], idempotency_key: Optional[str]
    ) -> _Call:
        if not isinstance(user_id, str) or not user_id:
            raise ValueError("user_id must be a non-empty string")
        if not isinstance(event, Mapping) or not isinstance(event.get("type"), str):
            raise ValueError("an event is a mapping with a string 'type'")
        body = dict(event)
        key = body.pop("idempotency_key", None) or idempotency_key
        if key is None and self.idempotency:
            key = _new_key()
        body["user_id"] = user_id
        headers = {"Idempotency-Key": str(key)} if key else {}
        return _Call("POST", "/api/v1/publish", json=body, headers=headers)

    def _batch_items(
        self, events: Iterable[Mapping[str, Any]], user_id: Optional[str]
    ) -> List[Dict[str, Any]]:
        items: List[Dict[str, Any]] = []
        for i, ev in enumerate(events):
            if not isinstance(ev, Mapping) or not isinstance(ev.get("type"), str):
                raise ValueError(f"event {i}: an event is a mapping with a string 'type'")
            item = dict(ev)
            if user_id is not None and "user_id" not in item:
                item["user_id"] = user_id
            if not isinstance(item.get("user_id"), str) or not item["user_id"]:
                raise ValueError(f"event {i}: user_id (the target) is required")
            if self.idempotency and not item.get("idempotency_key"):
                item["idempotency_key"] = _new_key()
            items.append(item)
        return items

    @staticmethod
    def _history_call(user_id: str, since: int) -> _Call:
        if not isinstance(user_id, str) or not user_id:
            raise ValueError("user_id must be a non-empty string")
        if not isinstance(since, int) or since < 0:
            raise ValueError("since must be a non-negative integer")
        return _Call("GET", "/api/v1/history", params={"user_id": user_id, "since": since})

    @staticmethod
    def _ticket_call(token: str) -> _Call:
        if not isinstance(token, str) or not token:
            raise ValueError("token (the user's JWT) must be a non-empty string")
        return _Call("POST", "/api/v1/tickets", json={},
                     headers={"Authorization": f"Bearer {token}"}, api_key=False)

    # ---- answers ----

    @staticmethod
    def _transport_error(exc: Exception) -> AgentwireError:
        code = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection_error"
        err = ConnectionFailed(f"{type(exc).__name__}: {exc}".rstrip(": "), code=code)
        err.__cause__ = exc
        return err

    @staticmethod
    def _read(resp: httpx.Response) -> Tuple[Any, Optional[AgentwireError]]:
        """(JSON body, None) for a 2xx answer, else (body, its error)."""
        text = resp.text
        data = parse_json(text)
        if 200 <= resp.status_code < 300:
            if data is None and text.strip():
                return None, ServerError("the answer is not JSON", status=resp.status_code,
                                         code="invalid_response", body=text[:500])
            return data, None
        return data, error_from_response(
            resp.status_code, data, text=text,
            retry_after=parse_retry_after(resp.headers.get("Retry-After")),
        )

    def _retryable(self, err: AgentwireError) -> bool:
        if isinstance(err, ConnectionFailed):
            return self.retry.retry_connection_errors
        return err.status in self.retry.retry_statuses

    @staticmethod
    def _batch_update(
        items: List[Dict[str, Any]],
        pending: List[int],
        data: Any,
        results: List[Optional[BatchResult]],
        retryable: Callable[[AgentwireError], bool],
    ) -> List[int]:
        """Stores the answer of one batch attempt; the indexes worth sending again.

        An event that failed with a retryable status is sent again only when no
        later event of the same user succeeded: events to one user keep their
        order."""
        if not isinstance(data, list) or len(data) != len(pending):
            raise ServerError("the batch answer is not an array of one result per event",
                              code="invalid_response", body=data)
        for i, r in zip(pending, data):
            if isinstance(r, Mapping) and "error" in r:
                results[i] = error_from_item(r)
            elif isinstance(r, Mapping):
                results[i] = Receipt.from_json(r)
            else:
                results[i] = ServerError("a batch result is not an object", code="invalid_response",
                                         body=r)
        again: List[int] = []
        blocked: set = set()
        for i in reversed(pending):
            r = results[i]
            user = items[i]["user_id"]
            if isinstance(r, Receipt):
                blocked.add(user)
            elif isinstance(r, AgentwireError) and retryable(r) and user not in blocked:
                again.append(i)
        again.reverse()
        return again

    @staticmethod
    def _history(data: Any) -> History:
        return History(
            user_id=str(data.get("user_id", "")),
            epoch=data.get("epoch"),
            seq=int(data.get("seq") or 0),
            first_seq=data.get("first_seq"),
            events=list(data.get("events") or []),
        )

    @staticmethod
    def _connections(data: Any) -> List[ConnectionInfo]:
        return [
            ConnectionInfo(
                connection_id=str(c.get("connection_id", "")),
                remote_addr=c.get("remote_addr"),
                connected_at=c.get("connected_at"),
                raw=dict(c),
            )
            for c in (data.get("connections") or [])
        ]


class Publisher(_Base):
    """Synchronous client of the HTTP API.

    >>> aw = Publisher("http://127.0.0.1:8080", api_key="…")          # doctest: +SKIP
    >>> aw.publish("u1", {"type": "note", "text": "hello"})          # doctest: +SKIP
    Receipt(seq=1, epoch='5e0c…', event_id='ev_…')

    Args:
        url: the server's base URL (``http://host:port``; a ``ws://…/ws`` URL is
            accepted too). Default: ``$AGENTWIRE_URL``, else ``http://127.0.0.1:8080``.
        api_key: the API key. Default: ``$AGENTWIRE_API_KEY``.
        timeout: seconds for each HTTP attempt.
        retry: the :class:`RetryPolicy` (``NO_RETRY`` to turn retries off).
        headers: extra headers for every request.
        idempotency: give every publish a fresh idempotency key (uuid4) when it
            has none, so that retries are exact. On by default.
        client: an ``httpx.Client`` of yours (it is not closed by :meth:`close`).
        transport: an httpx transport (for tests).
    """

    def __init__(
        self,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        *,
        timeout: float = 10.0,
        retry: Optional[RetryPolicy] = None,
        headers: Optional[Mapping[str, str]] = None,
        idempotency: bool = True,
        client: Optional[httpx.Client] = None,
        transport: Optional[httpx.BaseTransport] = None,
    ) -> None:
        super().__init__(url, api_key, timeout=timeout, retry=retry, headers=headers,
                         idempotency=idempotency)
        self._own = client is None
        self._client = client or httpx.Client(
            timeout=timeout,
            transport=transport,
            # below the server's idle keep-alive time (5 s), so a pooled
            # connection is not reused just as the server closes it
            limits=httpx.Limits(keepalive_expiry=2.0),
        )

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Closes the HTTP connections (unless the client was given)."""
        if self._own:
            self._client.close()

    def _attempt(self, call: _Call) -> Tuple[Any, Optional[AgentwireError]]:
        try:
            resp = self._client.request(
                call.method, self.url + call.path, json=call.json, params=call.params,
                headers={**self._headers, **self._headers_for(call)}, timeout=self.timeout,
            )
        except httpx.TransportError as exc:
            return None, self._transport_error(exc)
        return self._read(resp)

    def _send(self, call: _Call) -> Any:
        state = RetryState(self.retry)
        while True:
            data, err = self._attempt(call)
            if err is None:
                return data
            delay = state.next_delay(err.retry_after) if self._retryable(err) else None
            if delay is None:
                raise err
            time.sleep(delay)

    def publish(
        self, user_id: str, event: Mapping[str, Any], *, idempotency_key: Optional[str] = None
    ) -> Receipt:
        """Publishes ``event`` (a mapping with a ``type``) to ``user_id``.

        Returns the :class:`Receipt` (``seq``, ``epoch``, ``event_id``). Raises
        :class:`~agentwire.InvalidEvent` (422), :class:`~agentwire.RunOrder`
        (409), :class:`~agentwire.Unauthorized` (401),
        :class:`~agentwire.Unavailable` (503 after the retries), …

        ``idempotency_key`` (or an ``idempotency_key`` field of the event): the
        server answers a publish with a key it saw in the last 5 minutes (for
        this user) with the first receipt, without publishing again. Without
        one, a fresh uuid4 is used for this call and its retries.
        """
        return Receipt.from_json(self._send(self._publish_call(user_id, event, idempotency_key)))

    def publish_batch(
        self, events: Iterable[Mapping[str, Any]], *, user_id: Optional[str] = None
    ) -> List[BatchResult]:
        """Publishes many events (each with its ``user_id``, or ``user_id`` for
        those without) in one request per 1000 events.

        Returns one item per event, in order: a :class:`Receipt`, or the
        :class:`~agentwire.AgentwireError` of that event (returned, not raised).
        Events that failed with a retryable status (503) are sent again with
        their idempotency keys, as long as no later event of the same user
        succeeded (events to one user keep their order). A failure of the whole
        request (401, 413, …, or 503 after the retries) is raised.
        """
        items = self._batch_items(events, user_id)
        results: List[Optional[BatchResult]] = [None] * len(items)
        for start in range(0, len(items), BATCH_MAX):
            pending = list(range(start, min(start + BATCH_MAX, len(items))))
            state = RetryState(self.retry)
            while pending:
                body = [items[i] for i in pending]
                data, err = self._attempt(_Call("POST", "/api/v1/publish/batch", json=body))
                if err is None:
                    pending = self._batch_update(items, pending, data, results, self._retryable)
                    if not pending:
                        break
                    err_after: Optional[float] = None
                else:
                    if not self._retryable(err):
                        raise err
                    err_after = err.retry_after
                delay = state.next_delay(err_after)
                if delay is None:
                    if err is not None:
                        raise err
                    break  # the failed items keep their errors
                time.sleep(delay)
        return [r for r in results if r is not None]

    def connections(self, user_id: str) -> List[ConnectionInfo]:
        """The user's live connections (``GET /api/v1/users/{id}/connections``)."""
        return self._connections(self._send(_Call("GET", _user_path(user_id, "connections"))))

    def disconnect(self, user_id: str) -> int:
        """Closes every connection of the user with 4002 ``disconnected``; how many."""
        data = self._send(_Call("POST", _user_path(user_id, "disconnect")))
        return int(data.get("disconnected", 0))

    def history(self, user_id: str, since: int = 0) -> History:
        """The user's retained events with ``seq > since`` (``GET /api/v1/history``)."""
        return self._history(self._send(self._history_call(user_id, since)))

    def ticket(self, token: str) -> Ticket:
        """A one-time WebSocket ticket for the user of ``token`` (the user's JWT:
        ``POST /api/v1/tickets`` takes the user's token, not the API key)."""
        data = self._send(self._ticket_call(token))
        return Ticket(ticket=str(data["ticket"]), expires_at=int(data["expires_at"]))

    def healthy(self) -> bool:
        """``GET /readyz`` answered 200 (the node serves)."""
        try:
            return self._client.get(self.url + "/readyz", timeout=self.timeout).status_code == 200
        except httpx.TransportError:
            return False

    def run(
        self,
        user_id: str,
        thread_id: str,
        *,
        agent_name: str,
        run_id: Optional[str] = None,
        **fields: Any,
    ) -> "SyncRun":
        """A run published through this publisher: ``with aw.run(...) as run:``
        (see :class:`~agentwire.SyncRun`). ``fields`` go into ``agent_started``."""
        from .run import SyncRun

        return SyncRun(self, user_id, thread_id, agent_name=agent_name, run_id=run_id, **fields)


class AsyncPublisher(_Base):
    """asyncio client of the HTTP API; the same methods as :class:`Publisher`, awaitable.

    >>> async with AsyncPublisher(url, api_key) as aw:              # doctest: +SKIP
    ...     async with aw.run("u1", "thread-1", agent_name="helper") as run:
    ...         await run.thinking("Looking it up")
    """

    def __init__(
        self,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        *,
        timeout: float = 10.0,
        retry: Optional[RetryPolicy] = None,
        headers: Optional[Mapping[str, str]] = None,
        idempotency: bool = True,
        client: Optional[httpx.AsyncClient] = None,
        transport: Optional[httpx.AsyncBaseTransport] = None,
    ) -> None:
        super().__init__(url, api_key, timeout=timeout, retry=retry, headers=headers,
                         idempotency=idempotency)
        self._own = client is None
        self._client = client or httpx.AsyncClient(
            timeout=timeout, transport=transport, limits=httpx.Limits(keepalive_expiry=2.0)
        )

    async def __aenter__(self) -> "AsyncPublisher":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes the HTTP connections (unless the client was given)."""
        if self._own:
            await self._client.aclose()

    close = aclose

    async def _attempt(self, call: _Call) -> Tuple[Any, Optional[AgentwireError]]:
        try:
            resp = await self._client.request(
                call.method, self.url + call.path, json=call.json, params=call.params,
                headers={**self._headers, **self._headers_for(call)}, timeout=self.timeout,
            )
        except httpx.TransportError as exc:
            return None, self._transport_error(exc)
        return self._read(resp)

    async def _send(self, call: _Call) -> Any:
        state = RetryState(self.retry)
        while True:
            data, err = await self._attempt(call)
            if err is None:
                return data
            delay = state.next_delay(err.retry_after) if self._retryable(err) else None
            if delay is None:
                raise err
            await asyncio.sleep(delay)

    async def publish(
        self, user_id: str, event: Mapping[str, Any], *, idempotency_key: Optional[str] = None
    ) -> Receipt:
        """See :meth:`Publisher.publish`."""
        call = self._publish_call(user_id, event, idempotency_key)
        return Receipt.from_json(await self._send(call))

    async def publish_batch(
        self, events: Iterable[Mapping[str, Any]], *, user_id: Optional[str] = None
    ) -> List[BatchResult]:
        """See :meth:`Publisher.publish_batch`."""
        items = self._batch_items(events, user_id)
        results: List[Optional[BatchResult]] = [None] * len(items)
        for start in range(0, len(items), BATCH_MAX):
            pending = list(range(start, min(start + BATCH_MAX, len(items))))
            state = RetryState(self.retry)
            while pending:
                body = [items[i] for i in pending]
                data, err = await self._attempt(_Call("POST", "/api/v1/publish/batch", json=body))
                if err is None:
                    pending = self._batch_update(items, pending, data, results, self._retryable)
                    if not pending:
                        break
                    err_after: Optional[float] = None
                else:
                    if not self._retryable(err):
                        raise err
                    err_after = err.retry_after
                delay = state.next_delay(err_after)
                if delay is None:
                    if err is not None:
                        raise err
                    break
                await asyncio.sleep(delay)
        return [r for r in results if r is not None]

    async def connections(self, user_id: str) -> List[ConnectionInfo]:
        """See :meth:`Publisher.connections`."""
        return self._connections(await self._send(_Call("GET", _user_path(user_id, "connections"))))

    async def disconnect(self, user_id: str) -> int:
        """See :meth:`Publisher.disconnect`."""
        data = await self._send(_Call("POST", _user_path(user_id, "disconnect")))
        return int(data.get("disconnected", 0))

    async def history(self, user_id: str, since: int = 0) -> History:
        """See :meth:`Publisher.history`."""
        return self._history(await self._send(self._history_call(user_id, since)))

    async def ticket(self, token: str) -> Ticket:
        """See :meth:`Publisher.ticket`."""
        data = await self._send(self._ticket_call(token))
        return Ticket(ticket=str(data["ticket"]), expires_at=int(data["expires_at"]))

    async def healthy(self) -> bool:
        """See :meth:`Publisher.healthy`."""
        try:
            resp = await self._client.get(self.url + "/readyz", timeout=self.timeout)
            return resp.status_code == 200
        except httpx.TransportError:
            return False

    def run(
        self,
        user_id: str,
        thread_id: str,
        *,
        agent_name: str,
        run_id: Optional[str] = None,
        **fields: Any,
    ) -> "Run":
        """A run published through this publisher: ``async with aw.run(...) as run:``
        (see :class:`~agentwire.Run`). ``fields`` go into ``agent_started``."""
        from .run import Run

        return Run(self, user_id, thread_id, agent_name=agent_name, run_id=run_id, **fields)
