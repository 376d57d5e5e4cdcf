"""The run helper against the real server, observed through the subscriber."""
from __future__ import annotations

import asyncio
import threading

import pytest

from agentwire import RunOrder
from conftest import WAIT, check_seqs, run_of, uid


async def test_a_successful_run_publishes_the_five_events_in_order(server):
    user = uid()
    async with server.subscriber(user) as sub, server.async_publisher() as aw:
        async with aw.run(user, "thread-1", agent_name="helper", model="m1") as run:
            assert run.run_id.startswith("run_")
            await run.thinking("Looking it up")
            async with run.tool("weather", {"city": "Oslo"}) as t:
                t.result = {"sky": "clear"}
            await run.progress(message="half way", percent=50)
            await run.partial("It is ")

            async def tokens():
                yield "clear"
                yield "."

            assert await run.stream(tokens()) == "clear."
            await run.emit("citation", url="https://example.org")
        assert run.status == "success" and run.completed
        assert t.duration is not None and t.duration >= 0

        events = await sub.collect(run_of(run.run_id), WAIT)
        check_seqs(events)
        assert [e["type"] for e in events] == [
            "agent_started", "agent_thinking", "tool_executing", "tool_completed",
            "progress_update", "partial_result", "partial_result", "partial_result", "citation",
            "agent_completed"]
        assert all(e["run_id"] == run.run_id and e["thread_id"] == "thread-1" for e in events)
        started, thinking, executing, completed = events[:4]
        assert started["agent_name"] == "helper" and started["model"] == "m1"
        assert thinking["reasoning"] == "Looking it up"
        assert executing["tool_name"] == "weather" and executing["parameters"] == {"city": "Oslo"}
        assert completed["tool_name"] == "weather" and completed["results"] == {"sky": "clear"}
        assert isinstance(completed["duration"], (int, float)) and completed["duration"] >= 0
        assert "error" not in completed
        assert events[4]["percent"] == 50
        assert [e["content"] for e in events[5:8]] == ["It is ", "clear", "."]
        assert events[8]["url"] == "https://example.org"
        done = events[-1]
        assert done["status"] == "success" and done["final_response"] == "It is clear."
        assert "error" not in done


async def test_an_exception_ends_the_run_with_error_and_is_reraised(server):
    user = uid()
    async with server.subscriber(user) as sub, server.async_publisher() as aw:
        with pytest.raises(ZeroDivisionError):
            async with aw.run(user, "t", agent_name="helper") as run:
                await run.partial("partial answer")
                1 / 0
        assert run.status == "error"
        events = await sub.collect(run_of(run.run_id), WAIT)
        done = events[-1]
        assert done["status"] == "error" and done["error"] == "division by zero"
        assert done["final_response"] == "partial answer"


async def test_an_exception_in_a_tool_completes_the_tool_with_error_then_the_run(server):
    user = uid()
    async with server.subscriber(user) as sub, server.async_publisher() as aw:
        with pytest.raises(KeyError):
            async with aw.run(user, "t", agent_name="helper") as run:
                async with run.tool("lookup", {"key": "k"}):
                    raise KeyError("k")
        events = await sub.collect(run_of(run.run_id), WAIT)
        assert [e["type"] for e in events] == [
            "agent_started", "tool_executing", "tool_completed", "agent_completed"]
        tool_done = events[2]
        assert tool_done["tool_name"] == "lookup" and tool_done["results"] is None
        assert tool_done["error"] == "'k'"
        assert events[3]["status"] == "error" and events[3]["error"] == "'k'"


async def test_a_tool_error_handled_inside_the_run_lets_the_run_succeed(server):
    user = uid()
    async with server.subscriber(user) as sub, server.async_publisher() as aw:
        async with aw.run(user, "t", agent_name="helper") as run:
            try:
                async with run.tool("flaky", {}) as t:
                    t.result = {"partial": True}
                    raise RuntimeError("timeout talking to the API")
            except RuntimeError:
                pass
            async with run.tool("flaky", {}) as t2:
                t2.result = 42
            run.final_response = "done on the second try"
        events = await sub.collect(run_of(run.run_id), WAIT)
        assert [e["type"] for e in events][1:5] == [
            "tool_executing", "tool_completed", "tool_executing", "tool_completed"]
        assert events[2]["error"] == "timeout talking to the API"
        assert events[2]["results"] == {"partial": True}
        assert events[4]["results"] == 42 and "error" not in events[4]
        assert events[-1]["status"] == "success"
        assert events[-1]["final_response"] == "done on the second try"


async def test_cancelling_the_task_ends_the_run_cancelled(server):
    user = uid()
    inside = asyncio.Event()
    holder = {}

    async def agent_task(aw):
        async with aw.run(user, "t", agent_name="helper") as run:
            holder["run"] = run
            async with run.tool("slow", {}):
                inside.set()
                await asyncio.Event().wait()  # forever, until cancelled

    async with server.subscriber(user) as sub, server.async_publisher() as aw:
        task = asyncio.ensure_future(agent_task(aw))
        await asyncio.wait_for(inside.wait(), WAIT)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        run = holder["run"]
        assert run.status == "cancelled"
        events = await sub.collect(run_of(run.run_id), WAIT)
        assert [e["type"] for e in events] == [
            "agent_started", "tool_executing", "tool_completed", "agent_completed"]
        assert events[2]["error"] == "cancelled"
        assert events[3]["status"] == "cancelled" and events[3]["error"] == "cancelled"


async def test_explicit_completion_and_given_run_id(server):
    user = uid()
    async with server.subscriber(user) as sub, server.async_publisher() as aw:
        async with aw.run(user, "t", agent_name="helper", run_id="my-run-1") as run:
            await run.complete("timeout", "gave up waiting", error="upstream too slow")
            with pytest.raises(RuntimeError):
                await run.thinking("too late")
        assert run.run_id == "my-run-1" and run.status == "timeout"
        events = await sub.collect(run_of("my-run-1"), WAIT)
        assert events[-1]["status"] == "timeout" and events[-1]["error"] == "upstream too slow"
        assert events[-1]["final_response"] == "gave up waiting"
        # a run id is used once
        with pytest.raises(RunOrder):
            async with aw.run(user, "t", agent_name="helper", run_id="my-run-1"):
                pass  # pragma: no cover
        with pytest.raises(ValueError):
            async with aw.run(user, "t", agent_name="helper") as run2:
                await run2.emit("agent_completed")


async def test_a_run_the_user_stops_raises_run_order_in_the_agent(server):
    user = uid()
    async with server.subscriber(user) as sub, server.async_publisher() as aw:
        with pytest.raises(RunOrder):
            async with aw.run(user, "t", agent_name="helper") as run:
                await run.thinking("working")
                await sub.collect(lambda e: e.get("type") == "agent_thinking", WAIT)
                await sub.stop_agent(run.run_id)
                done = await sub.collect(run_of(run.run_id), WAIT)
                assert done[-1]["status"] == "cancelled"
                await run.thinking("still working?")  # the run is closed: 409
        # the helper did not publish a second agent_completed
        h = await aw.history(user)
        assert [e["type"] for e in h.events].count("agent_completed") == 1


def test_sync_run_success_error_and_interrupt(server):
    user = uid()
    with server.publisher() as aw:
        with aw.run(user, "t", agent_name="sync-helper") as run:
            run.thinking("hmm")
            with run.tool("calc", {"expr": "6*7"}) as t:
                t.result = 42
            assert run.stream(["4", "2"]) == "42"
        with pytest.raises(ValueError):
            with aw.run(user, "t", agent_name="sync-helper") as failing:
                raise ValueError("bad input")
        with pytest.raises(KeyboardInterrupt):
            with aw.run(user, "t", agent_name="sync-helper") as interrupted:
                with interrupted.tool("slow", {}):
                    raise KeyboardInterrupt
        events = aw.history(user).events
    check_seqs(events)
    by_run = {}
    for e in events:
        by_run.setdefault(e["run_id"], []).append(e)
    ok = by_run[run.run_id]
    assert [e["type"] for e in ok] == ["agent_started", "agent_thinking", "tool_executing",
                                       "tool_completed", "partial_result", "partial_result",
                                       "agent_completed"]
    assert ok[3]["results"] == 42 and ok[-1]["final_response"] == "42"
    assert by_run[failing.run_id][-1]["status"] == "error"
    assert by_run[failing.run_id][-1]["error"] == "bad input"
    assert [e["type"] for e in by_run[interrupted.run_id]] == [
        "agent_started", "tool_executing", "tool_completed", "agent_completed"]
    assert by_run[interrupted.run_id][-1]["status"] == "cancelled"


def test_sync_runs_from_threads_interleave_but_each_keeps_its_order(server):
    user = uid()
    errors = []

    def one(i):
        try:
            with server.publisher() as aw:
                with aw.run(user, f"t{i}", agent_name="w") as run:
                    for k in range(3):
                        with run.tool("step", {"k": k}) as t:
                            t.result = k
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors
    with server.publisher() as aw:
        events = aw.history(user).events
    check_seqs(events)
    assert len(events) == 4 * 8
    assert sum(1 for e in events if e["type"] == "agent_completed" and e["status"] == "success") == 4
