#!/usr/bin/env python3
"""An agentwire exec agent, on the Python SDK's exec helper (standard library only).

agentwire starts it once per run (--agent 'exec:python3 examples/agent_exec.py'),
writes the run request as one JSON line on stdin, then reads one event per line
from stdout. agentwire publishes agent_started itself and stamps user_id,
thread_id and run_id on every event, so the agent only says what happens.
Anything on stderr (and any stray print) goes to agentwire's log.

run_exec_agent does the plumbing: reads the request, writes and flushes each
event the generator yields, closes the generator on SIGTERM (cancel, timeout),
and completes the run (error and its message) if the agent raises.
"""
import asyncio
import os
import sys

try:
    import agentwire  # noqa: F401  (installed: pip install clients/python)
except ImportError:  # a checkout: use clients/python next to this file
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clients", "python"))

from agentwire.agent import run_exec_agent
from agentwire.events import ToolCall, agent_completed, partial_result, thinking


async def agent(request):
    text = request.user_request
    print(f"run {request.run_id}: {len(text)} characters", file=sys.stderr, flush=True)

    yield thinking("Counting the letters of the request.")
    call = ToolCall("letter_count", {"text": text})
    yield call.start()
    letters = sum(1 for c in text if c.isalpha())
    vowels = sum(1 for c in text.lower() if c in "aeiou")
    yield call.complete({"letters": letters, "vowels": vowels})

    answer = f"Your request has {letters} letters, {vowels} of them vowels."
    for word in answer.split(" "):
        yield partial_result(word + " ")
        await asyncio.sleep(0.05)
    yield agent_completed("success", answer)


if __name__ == "__main__":
    sys.exit(run_exec_agent(agent))
