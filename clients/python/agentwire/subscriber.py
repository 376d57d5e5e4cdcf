"""A WebSocket subscriber for backend consumers and tests, on ``websockets``.

It delivers one user's events **in order, once each, with nothing missing** for
as long as the server's history allows, and says so when it cannot (a reset):

- credentials: a JWT (``token``: a string, or a callable, sync or async, called
  before every connect) sent as ``Authorization: Bearer``, or a one-time ticket
  (``ticket``: a callable returning a fresh ticket before every connect);
- reconnect with exponential backoff and full jitter (``random() *
  min(backoff_max, backoff_base * 2**n)``; ``n`` back to 0 after each
  ``connection_established``);
- exact resume: every reconnect asks for ``?since=<last seq>&epoch=<epoch>``;
- duplicates (a ``seq`` at or below the last one) are dropped; a gap (a ``seq``
  jump, another epoch) drops the socket and resumes from the last ``seq``;
- a reset when the server answers ``resumed: false`` to a resume: the
  subscriber adopts the new position and calls ``on_reset`` (which may reload
  state and return the ``seq`` it covered).

>>> async with Subscriber("ws://127.0.0.1:8080/ws", token=jwt) as sub:   # doctest: +SKIP
...     ack = await sub.start_agent("What is 6*7?")
...     async for event in sub:
...         print(event["seq"], event["type"])

Same semantics as the JavaScript client (clients/js/README.md, "Delivery semantics").
"""
from __future__ import annotations

import asyncio
import inspect
import json
import logging
import random as _random
import uuid
from dataclasses import dataclass
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Dict,
    List,
    Mapping,
    Optional,
    Union,
)
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import websockets
import websockets.exceptions as wsx

from .errors import (
    ConnectionFailed,
    ConnectionLost,
    NotConnected,
    ReplyError,
    RequestTimeout,
    Unauthorized,
)
from .retry import parse_retry_after

__all__ = ["Subscriber", "Reset", "Counters", "Credential"]

log = logging.getLogger("agentwire.subscriber")

#: A credential: the value itself, or a callable (sync or async) giving a fresh one.
Credential = Union[str, Callable[[], Union[str, Awaitable[str]]]]

_CONTROL = frozenset({"pong", "heartbeat_ack", "ack", "error", "resume_failed", "connection_established"})
_GAP_CODE = 4000


@dataclass(frozen=True)
class Reset:
    """The stream could not be resumed: where it goes on from, and the position lost."""

    epoch: str
    seq: int
    previous_epoch: Optional[str]
    previous_seq: Optional[int]


@dataclass
class Counters:
    """What the subscriber did: reconnect attempts, duplicates dropped, resets, gaps seen."""

    reconnects: int = 0
    duplicates_dropped: int = 0
    resets: int = 0
    gaps: int = 0


class _Gap(Exception):
    pass


class _Fatal:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_STOP = object()


def _ws_url(url: str) -> str:
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path if parts.path not in ("", "/") else "/ws"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


async def _call(source: Any) -> Any:
    value = source() if callable(source) else source
    if inspect.isawaitable(value):
        value = await value
    return value


class Subscriber:
    """One user's event stream over WebSocket; an async iterator of events.

    Args:
        url: ``ws://host:port/ws`` (``http://host:port`` works too).
        token: the user's JWT, or a callable (sync or async) returning one,
            called before every connect. Sent as ``Authorization: Bearer``.
        ticket: a callable (sync or async) returning a fresh one-time ticket
            (a string, or an :class:`agentwire.Ticket`) before every connect,
            for example ``lambda: publisher.ticket(jwt)``. Give ``token`` or ``ticket``.
        since, epoch: a start position (the state you loaded): the first
            connect resumes from it. Without them the stream starts at the
            server's latest ``seq`` (nothing older is replayed).
        on_reset: called (and awaited when it returns an awaitable) with a
            :class:`Reset` when the server could not resume. Events wait
            meanwhile. It may return the ``seq`` its reload covered: events up
            to it are then dropped as duplicates.
        on_open: called (and awaited when it returns an awaitable) with each
            ``connection_established``, after the position was updated.
        on_close: called with ``(code, reason)`` of each socket that ended
            (``code`` is the close code, an HTTP status for a refused
            handshake, 4000 for a socket dropped on a gap, ``None`` when the
            connection failed without one).
        reconnect: reconnect after a close that :meth:`close` did not cause
            (``False``: the iterator ends with the first socket; ``last_close`` says why).
        backoff_base, backoff_max: seconds; full-jitter backoff bounds.
        max_retries: consecutive failed attempts before giving up (``None``: never).
        connect_timeout: seconds for the handshake and ``connection_established``.
        request_timeout: default seconds a request waits for its reply.
        queue_size: events held for the reader; when it is full the subscriber
            stops reading the socket (the server then treats it as a slow consumer,
            and it resumes later without loss). Replies are read by the same loop:
            keep iterating while you make requests.
        headers: extra handshake headers.
        max_size: largest message accepted, in bytes.
        random: the jitter's source of numbers in [0, 1) (for tests).
    """

    def __init__(
        self,
        url: str = "ws://127.0.0.1:8080/ws",
        *,
        token: Optional[Credential] = None,
        ticket: Optional[Callable[[], Any]] = None,
        since: Optional[int] = None,
        epoch: Optional[str] = None,
        on_reset: Optional[Callable[[Reset], Any]] = None,
        on_open: Optional[Callable[[Dict[str, Any]], Any]] = None,
        on_close: Optional[Callable[[Optional[int], str], Any]] = None,
        reconnect: bool = True,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        max_retries: Optional[int] = None,
        connect_timeout: float = 10.0,
        request_timeout: float = 10.0,
        queue_size: int = 10000,
        headers: Optional[Mapping[str, str]] = None,
        max_size: Optional[int] = 16 * 1024 * 1024,
        random: Callable[[], float] = _random.random,
    ) -> None:
        if token is None and ticket is None:
            raise ValueError("give token (a JWT or a callable) or ticket (a callable)")
        if (since is None) != (epoch is None):
            raise ValueError("give since and epoch together")
        self.url = _ws_url(url)
        self._token = token
        self._ticket = ticket
        self._refreshable = ticket is not None or callable(token)
        self.last_seq: Optional[int] = since
        self.epoch: Optional[str] = epoch
        self.on_reset = on_reset
        self.on_open = on_open
        self.on_close = on_close
        self.reconnect = reconnect
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_retries = max_retries
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.headers = dict(headers or {})
        self.max_size = max_size
        self.random = random
        self.counters = Counters()
        #: ``connecting``, ``open``, ``reconnecting`` or ``closed``.
        self.status = "closed"
        #: The latest ``connection_established``.
        self.hello: Optional[Dict[str, Any]] = None
        #: Every ``connection_established`` received, oldest first (at most 100).
        self.hellos: List[Dict[str, Any]] = []
        #: The latest reset, if any.
        self.last_reset: Optional[Reset] = None
        #: The close code and reason of the latest socket that ended.
        self.last_close: Optional[tuple] = None
        self.queue_size = queue_size
        self._queue: Optional["asyncio.Queue[Any]"] = None  # made by connect(), in its loop
        self._ws: Any = None
        self._runner: Optional["asyncio.Task[None]"] = None
        self._first: Optional["asyncio.Future[Dict[str, Any]]"] = None
        self._pending: Dict[str, "asyncio.Future[Dict[str, Any]]"] = {}
        self._closing = False
        self._wake: Optional[asyncio.Event] = None
        self._ids = 0

    # ---- properties ----

    @property
    def connection_id(self) -> Optional[str]:
        return self.hello.get("connection_id") if self.hello else None

    @property
    def user_id(self) -> Optional[str]:
        return self.hello.get("user_id") if self.hello else None

    @property
    def connected(self) -> bool:
        return self.status == "open"

    # ---- lifecycle ----

    async def connect(self) -> Dict[str, Any]:
        """Starts the subscriber; returns the first ``connection_established``.
        Raises :class:`~agentwire.Unauthorized` (a fixed credential refused),
        :class:`~agentwire.ConnectionFailed` (gave up), …"""
        if self._runner is None:
            loop = asyncio.get_running_loop()
            self._queue = asyncio.Queue(maxsize=self.queue_size)  # in the running loop
            self._closing = False
            self._first = loop.create_future()
            self._wake = asyncio.Event()
            self.status = "connecting"
            self._runner = loop.create_task(self._run())
        assert self._first is not None
        return await asyncio.shield(self._first)

    async def close(self) -> None:
        """Closes for good: the iterator ends, no reconnect."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        ws = self._ws
        if ws is not None:
            try:
                await asyncio.wait_for(ws.close(), 5)
            except (asyncio.TimeoutError, OSError, wsx.WebSocketException):
                pass
        runner, self._runner = self._runner, None
        if runner is not None and not runner.done():
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        if self._first is not None and not self._first.done():
            self._first.set_exception(ConnectionLost("closed before connecting", code="closed"))
            self._first.exception()  # retrieved
        self.status = "closed"
        if self._queue is not None:
            try:
                self._queue.put_nowait(_STOP)
            except asyncio.QueueFull:
                pass

    async def __aenter__(self) -> "Subscriber":
        await self.connect()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # ---- events ----

    def __aiter__(self) -> AsyncIterator[Dict[str, Any]]:
        return self

    async def __anext__(self) -> Dict[str, Any]:
        if self._runner is None and not self._closing:
            await self.connect()
        if self._queue is None:
            raise StopAsyncIteration
        while True:
            if self._closing and self._queue.empty():
                raise StopAsyncIteration
            item = await self._queue.get()
            if item is _STOP:
                raise StopAsyncIteration
            if self._closing:
                raise StopAsyncIteration
            if isinstance(item, _Fatal):
                self._queue.put_nowait(item)  # every later call raises it too
                raise item.error
            return item

    async def next_event(self, timeout: Optional[float] = None) -> Dict[str, Any]:
        """The next event; ``asyncio.TimeoutError`` after ``timeout`` seconds."""
        return await asyncio.wait_for(self.__anext__(), timeout)

    async def collect(self, until: Callable[[Dict[str, Any]], bool],
                      timeout: Optional[float] = None) -> List[Dict[str, Any]]:
        """Events up to and including the first for which ``until(event)`` is true
        (``asyncio.TimeoutError`` when it does not come within ``timeout`` seconds)."""
        out: List[Dict[str, Any]] = []

        async def take() -> List[Dict[str, Any]]:
            async for ev in self:
                out.append(ev)
                if until(ev):
                    return out
            raise ConnectionLost("the subscriber closed", code="closed")

        return await asyncio.wait_for(take(), timeout)

    # ---- requests ----

    async def request(self, type: str, payload: Optional[Mapping[str, Any]] = None, *,
                      timeout: Optional[float] = None) -> Dict[str, Any]:
        """Sends a client message and returns its reply (the message that echoes its
        ``message_id``). An ``error`` or ``resume_failed`` reply raises
        :class:`~agentwire.ReplyError` with the server's code. Requests are
        never queued nor resent: :class:`~agentwire.NotConnected` when no socket is open."""
        ws = self._ws
        if ws is None or self.status != "open":
            raise NotConnected("no open connection")
        self._ids += 1
        mid = f"py{self._ids}_{uuid.uuid4().hex[:8]}"
        msg: Dict[str, Any] = {"type": type, "message_id": mid}
        if payload is not None:
            msg["payload"] = dict(payload)
        fut: "asyncio.Future[Dict[str, Any]]" = asyncio.get_running_loop().create_future()
        self._pending[mid] = fut
        try:
            try:
                await ws.send(json.dumps(msg))
            except wsx.ConnectionClosed as exc:
                raise ConnectionLost(f"the connection closed ({exc.code})") from exc
            try:
                reply = await asyncio.wait_for(fut, timeout if timeout is not None else self.request_timeout)
            except asyncio.TimeoutError:
                raise RequestTimeout(f"no reply to {type} in time") from None
        finally:
            self._pending.pop(mid, None)
        if reply.get("type") in ("error", "resume_failed"):
            code = reply.get("code") or reply.get("type")
            raise ReplyError(str(reply.get("message") or reply.get("reason") or code), code=code,
                             body=reply)
        return reply

    async def start_agent(self, user_request: str, *, thread_id: Optional[str] = None,
                          context: Optional[Mapping[str, Any]] = None,
                          settings: Optional[Mapping[str, Any]] = None,
                          timeout: Optional[float] = None) -> Dict[str, Any]:
        """``start_agent``: returns the ``ack`` (``run_id``, ``thread_id``)."""
        payload: Dict[str, Any] = {"user_request": user_request}
        if thread_id is not None:
            payload["thread_id"] = thread_id
        if context is not None:
            payload["context"] = dict(context)
        if settings is not None:
            payload["settings"] = dict(settings)
        return await self.request("start_agent", payload, timeout=timeout)

    async def send_message(self, content: str, *, thread_id: Optional[str] = None,
                           references: Any = None,
                           timeout: Optional[float] = None) -> Dict[str, Any]:
        """``user_message``: returns the ``ack`` (``run_id``, ``thread_id``)."""
        payload: Dict[str, Any] = {"content": content}
        if thread_id is not None:
            payload["thread_id"] = thread_id
        if references is not None:
            payload["references"] = references
        return await self.request("user_message", payload, timeout=timeout)

    async def stop_agent(self, run_id: str, *, timeout: Optional[float] = None) -> Dict[str, Any]:
        """``stop_agent``: the run ends with ``agent_completed`` ``cancelled``."""
        return await self.request("stop_agent", {"run_id": run_id}, timeout=timeout)

    async def ping(self, *, timeout: Optional[float] = None) -> Dict[str, Any]:
        """``ping``: returns the ``pong``."""
        return await self.request("ping", {}, timeout=timeout)

    # ---- the connection loop ----

    def _backoff(self, attempt: int) -> float:
        return self.random() * min(self.backoff_max, self.backoff_base * (2 ** min(attempt, 62)))

    async def _sleep(self, seconds: float) -> None:
        if seconds <= 0 or self._wake is None:
            return
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def _open(self) -> Any:
        url = self.url
        query = [(k, v) for k, v in parse_qsl(urlsplit(url).query) if k not in ("since", "epoch", "ticket")]
        headers = dict(self.headers)
        if self.last_seq is not None and self.epoch is not None:
            query += [("since", str(self.last_seq)), ("epoch", self.epoch)]
        if self._ticket is not None:
            t = await _call(self._ticket)
            query.append(("ticket", str(getattr(t, "ticket", t))))
        else:
            headers["Authorization"] = f"Bearer {await _call(self._token)}"
        parts = urlsplit(url)
        url = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))
        return await websockets.connect(  # type: ignore[attr-defined]
            url, extra_headers=headers, open_timeout=self.connect_timeout,
            max_size=self.max_size, close_timeout=2,
        )

    async def _run(self) -> None:
        attempt = 0
        stuck_gaps = 0
        try:
            while not self._closing:
                opened = False
                gap = False
                fatal: Optional[BaseException] = None
                code: Optional[int] = None
                retry_after: Optional[float] = None
                ws = None
                progress_at = self.last_seq
                try:
                    ws = await self._open()
                    self._ws = ws
                    raw = await asyncio.wait_for(ws.recv(), self.connect_timeout)
                    hello = json.loads(raw)
                    if not isinstance(hello, dict) or hello.get("type") != "connection_established":
                        raise ConnectionFailed(f"expected connection_established, got {str(raw)[:200]}",
                                               code="protocol_error")
                    opened = True
                    attempt = 0
                    self.status = "open"
                    await self._on_hello(hello)
                    if self._first is not None and not self._first.done():
                        self._first.set_result(hello)
                    if self.on_open is not None:
                        await _call(lambda: self.on_open(hello))  # type: ignore[misc]
                    while True:
                        raw = await ws.recv()
                        try:
                            msg = json.loads(raw)
                        except ValueError:
                            log.warning("agentwire: a message that is not JSON: %.200r", raw)
                            continue
                        if isinstance(msg, dict):
                            await self._dispatch(msg)
                except _Gap:
                    gap = True
                    self.counters.gaps += 1
                    code = _GAP_CODE
                    self.last_close = (_GAP_CODE, "gap")
                    try:
                        await ws.close(_GAP_CODE, "gap")
                    except (OSError, wsx.WebSocketException):
                        pass
                except wsx.InvalidStatusCode as exc:
                    code = exc.status_code
                    self.last_close = (code, "handshake refused")
                    retry_after = parse_retry_after(exc.headers.get("Retry-After")) if exc.headers else None
                    if exc.status_code in (401, 403) and not self._refreshable:
                        fatal = Unauthorized(f"the handshake was refused with HTTP {exc.status_code}",
                                             status=exc.status_code)
                except wsx.ConnectionClosed as exc:
                    code = exc.code
                    self.last_close = (exc.code, exc.reason)
                except (OSError, asyncio.TimeoutError, wsx.WebSocketException, ValueError) as exc:
                    log.debug("agentwire: connection attempt failed: %r", exc)
                except ConnectionFailed as exc:
                    log.warning("agentwire: %s", exc)
                except Exception as exc:  # a credential callable or a callback raised
                    log.warning("agentwire: connection attempt failed: %r", exc)
                finally:
                    self._ws = None
                    if ws is not None:
                        try:
                            await asyncio.wait_for(ws.close(), 3)
                        except (asyncio.TimeoutError, OSError, wsx.WebSocketException):
                            pass
                    for fut in self._pending.values():
                        if not fut.done():
                            fut.set_exception(ConnectionLost("the connection closed"))
                            fut.exception()
                if self._closing:
                    break
                if self.on_close is not None:
                    reason = self.last_close[1] if self.last_close and self.last_close[0] == code else ""
                    try:
                        await _call(lambda: self.on_close(code, reason))  # type: ignore[misc]
                    except Exception as exc:
                        log.warning("agentwire: on_close raised %r", exc)
                if code == 4001 and not self._refreshable:
                    fatal = Unauthorized("the token expired and cannot be renewed (give a callable)",
                                         code="token_expired")
                if fatal is not None:
                    raise fatal
                if not self.reconnect:
                    break  # the iterator ends; last_close says why
                # how long to wait
                if gap:
                    stuck_gaps = stuck_gaps + 1 if self.last_seq == progress_at else 0
                    delay = 0.0 if stuck_gaps == 0 else self._backoff(stuck_gaps)
                elif code == 4001:
                    delay = 0.0
                elif code == 1008:
                    delay = self.backoff_max / 2 + self.random() * self.backoff_max / 2
                else:
                    delay = self._backoff(attempt)
                if retry_after is not None:  # a refused handshake (503 draining) said when
                    delay = max(delay, min(retry_after, self.backoff_max))
                if not opened and not gap:
                    attempt += 1
                    if self.max_retries is not None and attempt > self.max_retries:
                        raise ConnectionFailed(f"gave up after {attempt} failed attempts (last: {code})",
                                               code="gave_up")
                self.status = "reconnecting"
                self.counters.reconnects += 1
                await self._sleep(delay)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # fatal: the iterator raises it
            self.status = "closed"
            if self._first is not None and not self._first.done():
                self._first.set_exception(exc)
                self._first.exception()
            assert self._queue is not None
            await self._queue.put(_Fatal(exc))
            return
        self.status = "closed"
        if self._first is not None and not self._first.done():
            self._first.set_exception(ConnectionLost(f"could not connect (last: {self.last_close})",
                                                     code="closed"))
            self._first.exception()
        if not self._closing and self._queue is not None:
            await self._queue.put(_STOP)

    async def _on_hello(self, hello: Dict[str, Any]) -> None:
        self.hello = hello
        self.hellos.append(hello)
        del self.hellos[:-100]
        epoch, seq = hello.get("epoch"), hello.get("seq")
        if not isinstance(epoch, str) or not isinstance(seq, int):
            return
        if self.last_seq is None or self.epoch is None:
            self.epoch, self.last_seq = epoch, seq
            return
        if hello.get("resumed") and epoch == self.epoch:
            return  # the missed events follow
        if epoch == self.epoch and seq == self.last_seq:
            return  # nothing was missed
        info = Reset(epoch=epoch, seq=seq, previous_epoch=self.epoch, previous_seq=self.last_seq)
        self.counters.resets += 1
        self.last_reset = info
        self.epoch, self.last_seq = epoch, seq
        if self.on_reset is not None:
            covered = await _call(lambda: self.on_reset(info))  # type: ignore[misc]
            if isinstance(covered, Mapping):
                covered = covered.get("seq")
            if isinstance(covered, int) and not isinstance(covered, bool) and covered > self.last_seq:
                self.last_seq = covered

    async def _dispatch(self, msg: Dict[str, Any]) -> None:
        kind = msg.get("type")
        mid = msg.get("message_id")
        if isinstance(mid, str) and mid in self._pending and kind in _CONTROL:
            fut = self._pending[mid]
            if not fut.done():
                fut.set_result(msg)
            return
        if kind in _CONTROL or not isinstance(msg.get("seq"), int):
            if kind == "error":
                log.warning("agentwire: server error %s: %s", msg.get("code"), msg.get("message"))
            return
        seq = msg["seq"]
        if msg.get("epoch") != self.epoch:
            raise _Gap()
        assert self.last_seq is not None
        if seq <= self.last_seq:
            self.counters.duplicates_dropped += 1
            return
        if seq != self.last_seq + 1:
            raise _Gap()
        self.last_seq = seq
        assert self._queue is not None
        await self._queue.put(msg)
