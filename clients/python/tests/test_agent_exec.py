"""The exec helper: the real server runs tests/agents/exec_agent.py (on
agentwire.agent.run_exec_agent) for each run started over the WebSocket."""
from __future__ import annotations

import io
import json

import pytest

from agentwire.agent import run_exec_agent
from agentwire.events import partial_result, thinking
from conftest import AGENTS, PYTHON, WAIT, check_seqs, run_of, uid

FLAVOURS = ["async", "sync"]


@pytest.fixture
def exec_server(start_server):
    return start_server("--agent", f"exec:{PYTHON} -B {AGENTS / 'exec_agent.py'}",
                        "--agent-name", "py-exec", "--agent-kill-grace-ms", "10000")


def request_text(mode: str, flavour: str, rest: str = "") -> str:
    return " ".join(x for x in (mode, "sync" if flavour == "sync" else "async", rest) if x)


async def run_once(srv, text, **kw):
    user = uid()
    async with srv.subscriber(user) as sub:
        ack = await sub.start_agent(text, **kw)
        events = await sub.collect(run_of(ack["run_id"]), WAIT)
    check_seqs(events)
    assert all(e["run_id"] == ack["run_id"] and e["thread_id"] == ack["thread_id"] for e in events)
    return ack, events


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_events_in_order_and_the_helper_completes_the_run(exec_server, flavour):
    text = request_text("ok", flavour, "three")
    ack, events = await run_once(exec_server, text, thread_id="th-1", context={"k": 1})
    assert ack["thread_id"] == "th-1"
    assert [e["type"] for e in events] == [
        "agent_started", "agent_thinking", "tool_executing", "tool_completed",
        "partial_result", "partial_result", "agent_completed"]
    assert events[0]["agent_name"] == "py-exec"
    assert events[1]["reasoning"] == f"Thinking about {text!r}"
    assert events[2]["parameters"] == {"text": text}
    assert events[3]["results"] == {"words": 3, "context": {"k": 1}}
    assert events[3]["duration"] >= 0
    done = events[-1]
    assert done["status"] == "success" and done["final_response"] == "Counted 3 words."


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_an_agent_that_raises_ends_the_run_with_its_error(exec_server, flavour):
    ack, events = await run_once(exec_server, request_text("raise", flavour))
    assert [e["type"] for e in events] == ["agent_started", "partial_result", "agent_completed"]
    assert events[-1]["status"] == "error" and events[-1]["error"] == "agent exploded"
    assert events[-1]["final_response"] == "before the crash"
    await exec_server.await_log(lambda e: e.get("msg") == "agent stderr" and e.get("run") == ack["run_id"]
                                and "RuntimeError: agent exploded" in str(e.get("line")),
                                what="the traceback in the server's log")


async def test_a_stray_print_goes_to_the_log_not_into_the_events(exec_server):
    ack, events = await run_once(exec_server, "print")
    assert [e["type"] for e in events] == ["agent_started", "agent_thinking", "agent_completed"]
    assert events[-1]["status"] == "success"
    await exec_server.await_log(lambda e: e.get("msg") == "agent stderr"
                                and e.get("line") == "a stray print from the agent",
                                what="the stray print in the server's log")


async def test_agent_started_from_the_agent_is_dropped_by_the_helper(exec_server):
    ack, events = await run_once(exec_server, "started")
    assert [e["type"] for e in events] == ["agent_started", "agent_thinking", "agent_completed"]
    assert events[0]["agent_name"] == "py-exec"


async def test_a_bad_event_ends_the_run_with_error(exec_server):
    ack, events = await run_once(exec_server, "bad")
    assert [e["type"] for e in events] == ["agent_started", "agent_thinking", "agent_completed"]
    assert events[-1]["status"] == "error" and "mapping" in events[-1]["error"]


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_stop_agent_closes_the_generator_on_sigterm(exec_server, flavour):
    user = uid()
    async with exec_server.subscriber(user) as sub:
        ack = await sub.start_agent(request_text("slow", flavour))
        first = await sub.collect(lambda e: e.get("type") == "agent_thinking", WAIT)
        assert first[-1]["run_id"] == ack["run_id"]
        await sub.stop_agent(ack["run_id"])
        rest = await sub.collect(run_of(ack["run_id"]), WAIT)
        assert rest[-1]["status"] == "cancelled"
    await exec_server.await_log(lambda e: e.get("msg") == "agent stderr"
                                and e.get("line") == f"cleanup {ack['run_id']}",
                                what="the agent's finally block after SIGTERM")


def run_local(agent, request=None):
    """run_exec_agent on in-memory pipes: (exit status, events written)."""
    line = json.dumps(request or {"run_id": "r", "thread_id": "t", "user_id": "u",
                                  "user_request": "hi"}) + "\n"
    out = io.BytesIO()
    status = run_exec_agent(agent, stdin=io.BytesIO(line.encode()), stdout=out,
                            handle_signals=False)
    return status, [json.loads(x) for x in out.getvalue().decode().splitlines()]


def test_exec_helper_locally():
    async def ok(req):
        yield thinking(req.user_request)
        yield partial_result("a")
        yield partial_result("b")

    status, events = run_local(ok)
    assert status == 0
    assert events == [{"type": "agent_thinking", "reasoning": "hi"},
                      {"type": "partial_result", "content": "a"},
                      {"type": "partial_result", "content": "b"},
                      {"type": "agent_completed", "status": "success", "final_response": "ab"}]

    def completes_then_more(req):
        yield {"type": "agent_completed", "status": "success", "final_response": "x"}
        yield thinking("never read")  # pragma: no cover

    status, events = run_local(completes_then_more)
    assert status == 0 and [e["type"] for e in events] == ["agent_completed"]

    def not_a_generator(req):
        raise ValueError("refused at once")

    status, events = run_local(not_a_generator)
    assert status == 1
    assert events == [{"type": "agent_completed", "status": "error", "final_response": "",
                       "error": "refused at once"}]

    async def coroutine(req):  # a coroutine is not an agent
        return None

    status, events = run_local(coroutine)
    assert status == 1 and "generator" in events[-1]["error"]

    out = io.BytesIO()
    assert run_exec_agent(ok, stdin=io.BytesIO(b"not json\n"), stdout=out, handle_signals=False) == 2
    assert out.getvalue() == b""
