"""An exec agent for the tests, on agentwire.agent.run_exec_agent. What it does
depends on the first word of the user's request; 'sync' as second word makes it
a plain (blocking) generator instead of an async one."""
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from agentwire.agent import run_exec_agent  # noqa: E402
from agentwire.events import ToolCall, partial_result, thinking  # noqa: E402


def steps(request):
    """(event or ('sleep', s) or ('raise', msg) or ('block',)) of each mode."""
    words = request.user_request.split()
    mode = words[0] if words else "ok"
    if mode == "ok":
        yield thinking(f"Thinking about {request.user_request!r}")
        call = ToolCall("word_count", {"text": request.user_request})
        yield call.start()
        yield call.complete({"words": len(words), "context": request.context})
        yield partial_result("Counted ")
        yield partial_result(f"{len(words)} words.")
    elif mode == "raise":
        yield partial_result("before the crash")
        yield ("raise", "agent exploded")
    elif mode == "print":
        print("a stray print from the agent")
        yield thinking("printed")
    elif mode == "started":
        yield {"type": "agent_started", "agent_name": "not mine"}
        yield thinking("after my agent_started")
    elif mode == "bad":
        yield thinking("about to misbehave")
        yield "not an event"
    elif mode == "slow":
        yield thinking("slow")
        yield ("block",)


async def async_agent(request):
    try:
        for step in steps(request):
            if isinstance(step, tuple) and step[0] == "raise":
                raise RuntimeError(step[1])
            if isinstance(step, tuple) and step[0] == "block":
                await asyncio.sleep(3600)
            yield step
    finally:
        print(f"cleanup {request.run_id}", file=sys.stderr, flush=True)


def sync_agent(request):
    try:
        for step in steps(request):
            if isinstance(step, tuple) and step[0] == "raise":
                raise RuntimeError(step[1])
            if isinstance(step, tuple) and step[0] == "block":
                time.sleep(3600)
            yield step
    finally:
        print(f"cleanup {request.run_id}", file=sys.stderr, flush=True)


def agent(request):
    words = request.user_request.split()
    return sync_agent(request) if len(words) > 1 and words[1] == "sync" else async_agent(request)


if __name__ == "__main__":
    sys.exit(run_exec_agent(agent))
