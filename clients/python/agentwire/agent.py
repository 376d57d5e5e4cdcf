"""Helpers for agentwire's two agent backends (docs/agents.md): ``exec:`` (a process
per run) and ``http:`` (a POST per run, NDJSON streamed back).

You write the agent once, as a generator of events that takes the
:class:`~agentwire.events.RunRequest`::

    from agentwire.agent import run_exec_agent
    from agentwire.events import ToolCall, thinking, partial_result

    async def agent(req):
        yield thinking("Counting the letters.")
        call = ToolCall("letter_count", {"text": req.user_request})
        yield call.start()
        yield call.complete({"letters": sum(c.isalpha() for c in req.user_request)})
        yield partial_result("Done.")
        # no agent_completed needed: the helper sends it (success, the pieces joined)

    if __name__ == "__main__":
        run_exec_agent(agent)                       # --agent 'exec:python3 my_agent.py'

and serve the same function over HTTP with :func:`serve_http_agent` (standard
library), :func:`aiohttp_app` or :func:`asgi_app` (``--agent http:http://host:port/run``).

The agent may be an async generator function (or any function returning an
async iterable) or a plain generator function (or one returning an iterable).
What the helpers do for every backend:

- each event is checked (a mapping with a string ``type``) and written as one
  JSON line, at once (flushed);
- ``agent_started`` is dropped with a warning: the server publishes it itself;
- the server stamps ``user_id``, ``thread_id`` and ``run_id``: leave them out;
- after the agent's own ``agent_completed`` nothing more is read from it;
- when the agent ends without ``agent_completed``, the helper sends one:
  ``success`` with the ``partial_result`` pieces joined as ``final_response``,
  or ``error`` with the exception's message when the agent raised (the
  traceback goes to stderr, which the exec backend puts in the server's log);
- when the run is cancelled (exec: SIGTERM; http: the server drops the
  connection), the agent's generator is closed, so its ``finally`` blocks run,
  and nothing more is sent (the server completes the run ``cancelled``).

This module needs the standard library only (``aiohttp`` only for
:func:`aiohttp_app` / :func:`aiohttp_handler`), so exec agents run on any Python 3.8+.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import select
import signal
import socket
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import (
    IO,
    Any,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    TextIO,
    Union,
)
from urllib.parse import urlsplit

from .events import Event, RunRequest, agent_completed, describe_error

__all__ = [
    "AgentFunction",
    "RunRequest",
    "iter_events",
    "aiter_events",
    "ndjson_lines",
    "encode_event",
    "run_exec_agent",
    "exec_main",
    "make_http_server",
    "serve_http_agent",
    "asgi_app",
    "aiohttp_handler",
    "aiohttp_app",
]

EventSource = Union[AsyncIterable[Mapping[str, Any]], Iterable[Mapping[str, Any]]]
#: An agent: takes the run request, returns (or is a generator of) its events.
AgentFunction = Callable[[RunRequest], EventSource]

NDJSON = "application/x-ndjson"


def encode_event(event: Mapping[str, Any]) -> bytes:
    """One event as one NDJSON line (UTF-8, newline-terminated)."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def _request_of(data: Union[RunRequest, Mapping[str, Any]]) -> RunRequest:
    return data if isinstance(data, RunRequest) else RunRequest.from_dict(data)


class _Relay:
    """Checks an agent's events and tracks what its completion needs."""

    def __init__(self, request: RunRequest, auto_complete: bool, log: Optional[TextIO]) -> None:
        self.request = request
        self.auto_complete = auto_complete
        self.log = log
        self.pieces: List[str] = []
        self.completed = False

    def warn(self, text: str) -> None:
        out = self.log if self.log is not None else sys.stderr
        try:
            print(f"agentwire agent (run {self.request.run_id}): {text}", file=out, flush=True)
        except (OSError, ValueError):
            pass

    def accept(self, event: Any) -> Optional[Event]:
        if not isinstance(event, Mapping) or not isinstance(event.get("type"), str):
            raise TypeError(f"an agent event must be a mapping with a string 'type', not {event!r:.200}")
        ev: Event = dict(event)
        kind = ev["type"]
        if kind == "agent_started":
            self.warn("agent_started dropped: the server publishes it itself")
            return None
        if kind == "partial_result" and isinstance(ev.get("content"), str):
            self.pieces.append(ev["content"])
        elif kind == "agent_completed":
            self.completed = True
        return ev

    def finish(self, exc: Optional[BaseException]) -> Optional[Event]:
        if self.completed or not self.auto_complete:
            return None
        self.completed = True
        if exc is None:
            return agent_completed("success", "".join(self.pieces))
        return agent_completed("error", "".join(self.pieces), error=describe_error(exc))

    def report(self, exc: BaseException) -> None:
        self.warn("the agent raised:\n" + "".join(
            traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip())


def _open_source(agent: AgentFunction, request: RunRequest) -> EventSource:
    """agent(request); when that call itself raises, a source that raises the same
    error when iterated, so the run still ends with an ``error`` completion."""
    try:
        return _source(agent, request)
    except Exception as exc:
        error = exc

        def failing() -> Iterator[Event]:
            raise error
            yield {}  # pragma: no cover - makes this a generator

        return failing()


def _source(agent: AgentFunction, request: RunRequest) -> EventSource:
    src = agent(request)
    if inspect.isawaitable(src):
        close = getattr(src, "close", None)
        if close is not None:
            close()  # a coroutine never awaited: no warning
        raise TypeError("the agent must be a generator function (async or not) or return an "
                        "iterable of events, not a coroutine")
    return src


def iter_events(agent: AgentFunction, request: Union[RunRequest, Mapping[str, Any]], *,
                auto_complete: bool = True, log: Optional[TextIO] = None) -> Iterator[Event]:
    """The events of a synchronous agent, checked, ending with one ``agent_completed``
    (see the module's documentation). Closing this iterator closes the agent's."""
    req = _request_of(request)
    relay = _Relay(req, auto_complete, log)
    src: Any = None
    try:
        src = _source(agent, req)
        if hasattr(src, "__aiter__"):
            raise TypeError("an async agent needs aiter_events")
        for item in src:
            ev = relay.accept(item)
            if ev is not None:
                yield ev
            if relay.completed:
                break
    except Exception as exc:  # the agent failed: say so in the run
        relay.report(exc)
        done = relay.finish(exc)
        if done is not None:
            yield done
        return
    finally:
        close = getattr(src, "close", None)
        if close is not None:
            try:
                close()
            except (ValueError, RuntimeError):  # still running in another thread
                pass
    done = relay.finish(None)
    if done is not None:
        yield done


_END = object()


async def _aiterate(src: EventSource) -> AsyncIterator[Any]:
    if hasattr(src, "__aiter__"):
        async for item in src:  # type: ignore[union-attr]
            yield item
        return
    it = iter(src)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    while True:  # a blocking generator runs in a thread, so the loop goes on
        item = await loop.run_in_executor(None, next, it, _END)
        if item is _END:
            return
        yield item


async def aiter_events(agent: AgentFunction, request: Union[RunRequest, Mapping[str, Any]], *,
                       auto_complete: bool = True,
                       log: Optional[TextIO] = None) -> AsyncIterator[Event]:
    """The events of an agent (async or not), checked, ending with one
    ``agent_completed`` (see the module's documentation). ``aclose()`` (or
    cancelling the task that iterates) closes the agent's generator."""
    req = _request_of(request)
    relay = _Relay(req, auto_complete, log)
    src: Any = None
    items: Optional[AsyncIterator[Any]] = None
    try:
        src = _source(agent, req)
        items = _aiterate(src)
        async for item in items:
            ev = relay.accept(item)
            if ev is not None:
                yield ev
            if relay.completed:
                break
    except Exception as exc:
        relay.report(exc)
        done = relay.finish(exc)
        if done is not None:
            yield done
        return
    finally:
        if items is not None:
            await items.aclose()  # type: ignore[attr-defined]
        aclose = getattr(src, "aclose", None)
        if aclose is not None:
            await aclose()
        else:
            close = getattr(src, "close", None)
            if close is not None:
                try:
                    close()
                except (ValueError, RuntimeError):
                    pass
    done = relay.finish(None)
    if done is not None:
        yield done


async def ndjson_lines(agent: AgentFunction, request: Union[RunRequest, Mapping[str, Any]], *,
                       auto_complete: bool = True) -> AsyncIterator[bytes]:
    """The agent's events as NDJSON lines: the body of an http agent's answer, for
    any framework that streams an async iterator of bytes (FastAPI's
    ``StreamingResponse(ndjson_lines(agent, await request.json()), media_type="application/x-ndjson")``)."""
    events = aiter_events(agent, request, auto_complete=auto_complete)
    try:
        async for ev in events:
            yield encode_event(ev)
    finally:
        await events.aclose()  # type: ignore[attr-defined]


# ---------------------------------------------------------------- exec

def run_exec_agent(agent: AgentFunction, *, stdin: Optional[IO[bytes]] = None,
                   stdout: Optional[IO[bytes]] = None, auto_complete: bool = True,
                   handle_signals: bool = True) -> int:
    """Runs ``agent`` as an ``exec:`` agent and returns the exit status.

    Reads the run request (one JSON line) from stdin, writes each event as one
    JSON line on stdout, flushed at once. While the agent runs, ``sys.stdout``
    points to stderr, so a stray ``print()`` goes to the server's log instead of
    breaking the event stream. SIGTERM (the server's cancel or timeout) closes
    the agent's generator, so its ``finally`` blocks run. Exit status: 0, 1 when
    the agent raised, 2 for a bad run request, 143 after SIGTERM.
    """
    inp = stdin if stdin is not None else sys.stdin.buffer
    out = stdout if stdout is not None else sys.stdout.buffer
    line = inp.readline()
    try:
        request = RunRequest.from_dict(json.loads(line))
    except ValueError as exc:
        print(f"agentwire exec agent: the run request is not a JSON object: {exc}; got {line[:200]!r}",
              file=sys.stderr, flush=True)
        return 2

    failed = False

    def write(ev: Event) -> None:
        nonlocal failed
        if ev.get("type") == "agent_completed" and ev.get("status") == "error":
            failed = True
        out.write(encode_event(ev))
        out.flush()

    saved_stdout = sys.stdout
    sys.stdout = sys.stderr  # stray prints must not become event lines
    try:
        src = _open_source(agent, request)
        if hasattr(src, "__aiter__"):
            status = _exec_async(request, src, write, auto_complete, handle_signals)
        else:
            status = _exec_sync(request, src, write, auto_complete, handle_signals)
        return status or (1 if failed else 0)
    except BrokenPipeError:
        return 0  # the server closed our stdout: the run is over
    finally:
        sys.stdout = saved_stdout


class _Terminated(BaseException):
    """SIGTERM in a synchronous exec agent."""


def _exec_sync(request: RunRequest, src: EventSource, write: Callable[[Event], None],
               auto_complete: bool, handle_signals: bool) -> int:
    def on_term(signum: int, frame: Any) -> None:
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, on_term) if handle_signals else None
    events = iter_events(lambda _req: src, request, auto_complete=auto_complete)
    try:
        for ev in events:
            write(ev)
    except _Terminated:
        return 143
    finally:
        events.close()
        if handle_signals:
            signal.signal(signal.SIGTERM, previous)  # type: ignore[arg-type]
    return 0


def _exec_async(request: RunRequest, src: EventSource,
                write: Callable[[Event], None], auto_complete: bool, handle_signals: bool) -> int:
    async def main() -> int:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        terminated = False

        def on_term() -> None:
            nonlocal terminated
            terminated = True
            if task is not None:
                task.cancel()

        if handle_signals:
            loop.add_signal_handler(signal.SIGTERM, on_term)
        events = aiter_events(lambda _req: src, request, auto_complete=auto_complete)
        try:
            async for ev in events:
                write(ev)
        except asyncio.CancelledError:
            if terminated:
                return 143
            raise
        finally:
            await events.aclose()  # type: ignore[attr-defined]
            if handle_signals:
                loop.remove_signal_handler(signal.SIGTERM)
        return 0

    return asyncio.run(main())


def exec_main(agent: AgentFunction, **kwargs: Any) -> None:
    """``sys.exit(run_exec_agent(agent, **kwargs))``: the one line an exec agent's script needs."""
    sys.exit(run_exec_agent(agent, **kwargs))


# ---------------------------------------------------------------- http (standard library)

def make_http_server(agent: AgentFunction, host: str = "127.0.0.1", port: int = 0,
                     path: str = "/run", *, auto_complete: bool = True,
                     quiet: bool = True) -> ThreadingHTTPServer:
    """An ``http:`` agent on the standard library: a threaded HTTP server that
    answers ``POST path`` (the run request) with the agent's events as NDJSON,
    one chunk per event. Each run has its own thread (and its own event loop for
    an async agent). Its ``url`` attribute is the URL to give ``--agent http:``.
    Call ``serve_forever()`` (or run it in a thread) and ``shutdown()``.

    When the server drops a run (cancel, timeout), an async agent's generator is
    closed at once (a thread watches the connection); a plain generator is
    closed when its next event cannot be written.
    """

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "agentwire-agent/0.1"

        def log_message(self, fmt: str, *args: Any) -> None:
            if not quiet:
                super().log_message(fmt, *args)

        def _answer(self, status: int, code: str, message: str) -> None:
            body = json.dumps({"error": code, "message": message}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True

        def do_GET(self) -> None:  # noqa: N802
            if urlsplit(self.path).path != path:
                self._answer(404, "not_found", "no such route")
            else:
                self._answer(405, "method_not_allowed", "POST the run request")

        def do_POST(self) -> None:  # noqa: N802
            if urlsplit(self.path).path != path:
                self._answer(404, "not_found", "no such route")
                return
            try:
                length = int(self.headers.get("Content-Length") or "0")
                request = RunRequest.from_dict(json.loads(self.rfile.read(length)))
            except ValueError as exc:
                self._answer(400, "bad_request", f"the body is not a run request: {exc}")
                return
            self.send_response(200)
            self.send_header("Content-Type", NDJSON)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            try:
                src = _open_source(agent, request)
                if hasattr(src, "__aiter__"):
                    asyncio.run(self._stream_async(request, src))
                else:
                    self._stream_sync(request, src)
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except OSError:
                pass  # the server went away: the run was cancelled

        def _chunk(self, ev: Event) -> None:
            line = encode_event(ev)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.flush()

        def _stream_sync(self, request: RunRequest, src: EventSource) -> None:
            events = iter_events(lambda _req: src, request, auto_complete=auto_complete)
            try:
                for ev in events:
                    self._chunk(ev)
            finally:
                events.close()

        async def _stream_async(self, request: RunRequest, src: EventSource) -> None:
            loop = asyncio.get_running_loop()
            task = asyncio.current_task()
            done = threading.Event()

            def watch() -> None:  # the server closing the connection cancels the agent
                sock = self.connection
                while not done.is_set():
                    try:
                        readable, _, _ = select.select([sock], [], [], 0.5)
                        if readable and sock.recv(1, socket.MSG_PEEK) == b"":
                            break
                    except (OSError, ValueError):
                        break
                else:
                    return
                if not done.is_set() and task is not None:
                    loop.call_soon_threadsafe(task.cancel)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            events = aiter_events(lambda _req: src, request, auto_complete=auto_complete)
            try:
                async for ev in events:
                    self._chunk(ev)
            except asyncio.CancelledError:
                pass  # the server went away
            finally:
                done.set()
                await events.aclose()  # type: ignore[attr-defined]

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    shown = f"[{host}]" if ":" in host else host
    server.url = f"http://{shown}:{server.server_address[1]}{path}"  # type: ignore[attr-defined]
    return server


def serve_http_agent(agent: AgentFunction, host: str = "127.0.0.1", port: int = 9090,
                     path: str = "/run", *, auto_complete: bool = True,
                     announce: bool = True) -> None:
    """Serves ``agent`` with :func:`make_http_server` until interrupted; prints
    ``agent listening on <url>`` first (flushed) when ``announce``."""
    server = make_http_server(agent, host, port, path, auto_complete=auto_complete)
    if announce:
        print(f"agent listening on {server.url}", flush=True)  # type: ignore[attr-defined]
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


# ---------------------------------------------------------------- http (ASGI)

ASGIApp = Callable[[Dict[str, Any], Callable[[], Awaitable[Dict[str, Any]]],
                    Callable[[Dict[str, Any]], Awaitable[None]]], Awaitable[None]]


def asgi_app(agent: AgentFunction, *, path: Optional[str] = "/run",
             auto_complete: bool = True) -> ASGIApp:
    """An ASGI application serving ``agent`` as an ``http:`` agent (uvicorn,
    hypercorn, or mounted in FastAPI/Starlette: ``app.mount("/agent", asgi_app(agent, path=None))``).

    ``POST path`` with the run request answers 200 with NDJSON events as they
    come; ``path=None`` accepts any path. When the client goes away
    (``http.disconnect``) the agent's generator is closed.
    """

    async def send_json(send: Callable[[Dict[str, Any]], Awaitable[None]], status: int,
                        code: str, message: str) -> None:
        body = json.dumps({"error": code, "message": message}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def app(scope: Dict[str, Any], receive: Callable[[], Awaitable[Dict[str, Any]]],
                  send: Callable[[Dict[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        here = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and here.startswith(root):
            here = here[len(root):] or "/"
        if path is not None and here != path:
            await send_json(send, 404, "not_found", "no such route")
            return
        if scope.get("method") != "POST":
            await send_json(send, 405, "method_not_allowed", "POST the run request")
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            request = RunRequest.from_dict(json.loads(body))
        except ValueError as exc:
            await send_json(send, 400, "bad_request", f"the body is not a run request: {exc}")
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", NDJSON.encode()), (b"cache-control", b"no-cache")]})

        async def pump() -> None:
            events = aiter_events(agent, request, auto_complete=auto_complete)
            try:
                async for ev in events:
                    await send({"type": "http.response.body", "body": encode_event(ev),
                                "more_body": True})
            finally:
                await events.aclose()  # type: ignore[attr-defined]

        async def gone() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        if not await _pump_until_gone(pump, gone):
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


async def _pump_until_gone(pump: Callable[[], Awaitable[None]],
                           gone: Callable[[], Awaitable[None]]) -> bool:
    """Runs pump (the agent's events onto the response) until it ends or gone
    (the client left) returns first, in which case the agent is stopped.
    True when pump ran to its end; an error of pump is raised."""
    producer = asyncio.ensure_future(pump())
    watcher = asyncio.ensure_future(gone())
    try:
        await asyncio.wait({producer, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not producer.done():  # the client left (or we are cancelled): stop the agent
            producer.cancel()
        watcher.cancel()
        await asyncio.gather(producer, watcher, return_exceptions=True)
    if producer.cancelled() or (watcher.done() and not watcher.cancelled()):
        return False
    producer.result()  # an error of the transport
    return True


# ---------------------------------------------------------------- http (aiohttp)

def aiohttp_handler(agent: AgentFunction, *, auto_complete: bool = True,
                    disconnect_poll: float = 0.2) -> Callable[[Any], Awaitable[Any]]:
    """An aiohttp request handler serving ``agent`` as an ``http:`` agent:
    ``app.router.add_post("/run", aiohttp_handler(agent))``. When the server
    drops the request (cancel, timeout), the agent's generator is closed: the
    handler checks the connection every ``disconnect_poll`` seconds, since
    aiohttp 3.8 does not cancel handlers itself."""
    from aiohttp import web

    async def handler(request: "web.Request") -> "web.StreamResponse":
        try:
            run_request = RunRequest.from_dict(await request.json())
        except ValueError as exc:
            return web.json_response(
                {"error": "bad_request", "message": f"the body is not a run request: {exc}"},
                status=400)
        resp = web.StreamResponse(status=200, headers={"Content-Type": NDJSON,
                                                       "Cache-Control": "no-cache"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)

        async def pump() -> None:
            events = aiter_events(agent, run_request, auto_complete=auto_complete)
            try:
                async for ev in events:
                    await resp.write(encode_event(ev))
            finally:
                await events.aclose()  # type: ignore[attr-defined]

        async def gone() -> None:
            # aiohttp 3.8 does not cancel a handler whose client left: watch the transport
            while True:
                transport = request.transport
                if transport is None or transport.is_closing():
                    return
                await asyncio.sleep(disconnect_poll)

        try:
            if not await _pump_until_gone(pump, gone):
                return resp  # the connection is gone
        except Exception:
            return resp  # a write failed: the connection is gone
        await resp.write_eof()
        return resp

    return handler


def aiohttp_app(agent: AgentFunction, path: str = "/run", *, auto_complete: bool = True,
                disconnect_poll: float = 0.2) -> Any:
    """An ``aiohttp.web.Application`` with :func:`aiohttp_handler` at ``POST path``."""
    from aiohttp import web

    app = web.Application()
    app.router.add_post(path, aiohttp_handler(agent, auto_complete=auto_complete,
                                              disconnect_poll=disconnect_poll))
    return app
