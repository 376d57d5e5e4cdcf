"""The http helpers: the same agent served by aiohttp (aiohttp_app), by the
standard library (make_http_server) and as ASGI (asgi_app), and the real
server pointed at it with --agent http:URL."""
from __future__ import annotations

import asyncio
import json
import threading
from typing import Any, Dict, List

import httpx
from aiohttp import web

from agentwire.agent import aiohttp_app, asgi_app, make_http_server, ndjson_lines
from agentwire.events import ToolCall, agent_completed, partial_result, thinking
from conftest import WAIT, check_seqs, run_of, uid


class Agent:
    """An agent whose slow runs tell the test when their generator was closed."""

    def __init__(self) -> None:
        self.closed: Dict[str, threading.Event] = {}
        self.lock = threading.Lock()

    def closed_event(self, run_id: str) -> threading.Event:
        with self.lock:
            return self.closed.setdefault(run_id, threading.Event())

    async def __call__(self, request):  # an async generator function
        closed = self.closed_event(request.run_id)
        try:
            text = request.user_request
            if text == "slow":
                yield thinking("slow")
                await asyncio.sleep(3600)
            if text == "raise":
                yield partial_result("so far")
                raise ValueError("the model refused")
            yield thinking("Reversing the words.")
            call = ToolCall("reverse", {"text": text})
            yield call.start()
            reversed_text = " ".join(reversed(text.split()))
            yield call.complete({"text": reversed_text})
            for word in reversed_text.split():
                yield partial_result(word + " ")
            yield agent_completed("success", reversed_text)
        finally:
            closed.set()


async def wait_thread_event(ev: threading.Event, timeout: float = WAIT) -> None:
    ok = await asyncio.get_running_loop().run_in_executor(None, ev.wait, timeout)
    assert ok, "timed out waiting for the agent's generator to be closed"


async def exercise(start_server, url: str, agent: Agent) -> None:
    srv = start_server("--agent", f"http:{url}", "--agent-name", "py-http")
    user = uid()
    async with srv.subscriber(user) as sub:
        ack = await sub.start_agent("one two three four")
        events = await sub.collect(run_of(ack["run_id"]), WAIT)
        check_seqs(events)
        assert [e["type"] for e in events] == [
            "agent_started", "agent_thinking", "tool_executing", "tool_completed",
            "partial_result", "partial_result", "partial_result", "partial_result",
            "agent_completed"]
        assert events[0]["agent_name"] == "py-http"
        assert events[3]["results"] == {"text": "four three two one"}
        assert events[-1]["final_response"] == "four three two one"

        # two runs at once
        a1, a2 = await asyncio.gather(sub.start_agent("a b"), sub.start_agent("c d"))
        got: List[Dict[str, Any]] = []
        waiting = {a1["run_id"], a2["run_id"]}

        def both_done(e: Dict[str, Any]) -> bool:
            if e.get("type") == "agent_completed":
                waiting.discard(e["run_id"])
            return not waiting

        got = await sub.collect(both_done, WAIT)
        finals = {e["run_id"]: e["final_response"] for e in got if e["type"] == "agent_completed"}
        assert finals == {a1["run_id"]: "b a", a2["run_id"]: "d c"}

        # an agent that raises: the helper completes the run with its error
        ack = await sub.start_agent("raise")
        events = await sub.collect(run_of(ack["run_id"]), WAIT)
        assert events[-1]["status"] == "error" and events[-1]["error"] == "the model refused"
        assert events[-1]["final_response"] == "so far"

        # stop_agent: the server drops the request, the helper closes the generator
        ack = await sub.start_agent("slow")
        await sub.collect(lambda e: e.get("type") == "agent_thinking", WAIT)
        await sub.stop_agent(ack["run_id"])
        events = await sub.collect(run_of(ack["run_id"]), WAIT)
        assert events[-1]["status"] == "cancelled"
        return ack["run_id"]


async def test_aiohttp_app_as_http_agent(start_server):
    agent = Agent()
    runner = web.AppRunner(aiohttp_app(agent, "/run"))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        slow_run = await exercise(start_server, f"http://127.0.0.1:{port}/run", agent)
        # aiohttp cancels the handler when the server drops the connection
        await wait_thread_event(agent.closed_event(slow_run))
    finally:
        await runner.cleanup()


async def test_standard_library_server_as_http_agent(start_server):
    agent = Agent()
    httpd = make_http_server(agent, "127.0.0.1", 0, "/run")
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        slow_run = await exercise(start_server, httpd.url, agent)  # type: ignore[attr-defined]
        # a thread watching the connection cancels the async agent at once
        await wait_thread_event(agent.closed_event(slow_run))
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


async def test_standard_library_server_answers_errors():
    httpd = make_http_server(Agent(), "127.0.0.1", 0, "/run")
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        base = httpd.url.rsplit("/", 1)[0]  # type: ignore[attr-defined]
        async with httpx.AsyncClient() as client:
            assert (await client.post(base + "/other", json={})).status_code == 404
            assert (await client.get(base + "/run")).status_code == 405
            bad = await client.post(base + "/run", content=b"not json")
            assert bad.status_code == 400 and bad.json()["error"] == "bad_request"
            ok = await client.post(base + "/run", json={"run_id": "r", "user_request": "x y"})
            assert ok.headers["content-type"] == "application/x-ndjson"
            lines = [json.loads(x) for x in ok.text.splitlines()]
            assert lines[-1] == {"type": "agent_completed", "status": "success", "final_response": "y x"}
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


async def test_asgi_app_streams_ndjson():
    app = asgi_app(Agent(), path="/run")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
        resp = await client.post("/run", json={"run_id": "r1", "user_request": "hello world"})
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "application/x-ndjson"
        events = [json.loads(x) for x in resp.text.splitlines()]
        assert [e["type"] for e in events] == ["agent_thinking", "tool_executing", "tool_completed",
                                               "partial_result", "partial_result", "agent_completed"]
        assert events[-1]["final_response"] == "world hello"
        assert (await client.post("/elsewhere", json={})).status_code == 404
        assert (await client.get("/run")).status_code == 405
        assert (await client.post("/run", content=b"[")).status_code == 400


async def test_asgi_app_closes_the_agent_when_the_client_disconnects():
    agent = Agent()
    app = asgi_app(agent, path=None)
    sent: List[Dict[str, Any]] = []
    got_first = asyncio.Event()
    disconnect = asyncio.Event()
    body = json.dumps({"run_id": "slow-1", "user_request": "slow"}).encode()
    inbox = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> Dict[str, Any]:
        if inbox:
            return inbox.pop(0)
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: Dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            got_first.set()

    task = asyncio.ensure_future(app({"type": "http", "method": "POST", "path": "/anything",
                                      "headers": []}, receive, send))
    await asyncio.wait_for(got_first.wait(), WAIT)
    disconnect.set()
    await asyncio.wait_for(task, WAIT)
    await wait_thread_event(agent.closed_event("slow-1"))
    assert sent[0]["status"] == 200
    assert json.loads(sent[1]["body"]) == {"type": "agent_thinking", "reasoning": "slow"}
    assert not any(m.get("more_body") is False for m in sent[1:]), "no end after a disconnect"


async def test_asgi_lifespan():
    app = asgi_app(Agent())
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: List[Dict[str, Any]] = []

    async def receive() -> Dict[str, Any]:
        return messages.pop(0)

    async def send(m: Dict[str, Any]) -> None:
        sent.append(m)

    await asyncio.wait_for(app({"type": "lifespan"}, receive, send), WAIT)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


async def test_ndjson_lines_for_other_frameworks():
    lines = [json.loads(x) async for x in ndjson_lines(Agent(), {"run_id": "r", "user_request": "a b"})]
    assert lines[-1]["final_response"] == "b a"


def test_sync_generator_agents_are_served_too():
    def agent(req):
        yield thinking("sync")
        yield partial_result(req.user_request)

    httpd = make_http_server(agent)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        with httpx.Client() as client:
            resp = client.post(httpd.url, json={"run_id": "r", "user_request": "hey"})  # type: ignore[attr-defined]
        events = [json.loads(x) for x in resp.text.splitlines()]
        assert events[-1] == {"type": "agent_completed", "status": "success", "final_response": "hey"}
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)
