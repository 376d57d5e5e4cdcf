#!/usr/bin/env python3
"""An agentwire exec agent, standard library only.

agentwire starts it once per run (--agent 'exec:python3 examples/agent_exec.py'),
writes the run request as one JSON line on stdin, then reads one event per line
from stdout. agentwire publishes agent_started itself and stamps user_id,
thread_id and run_id on every event, so the agent only says what happens.
Anything on stderr goes to agentwire's log.
"""
import json
import sys
import time


def emit(event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()  # one line per event, as it happens


def main():
    request = json.loads(sys.stdin.readline())
    text = request.get("user_request", "")
    print(f"run {request['run_id']}: {len(text)} characters", file=sys.stderr)

    emit({"type": "agent_thinking", "reasoning": "Counting the letters of the request."})
    emit({"type": "tool_executing", "tool_name": "letter_count", "parameters": {"text": text}})
    started = time.monotonic()
    letters = sum(1 for c in text if c.isalpha())
    vowels = sum(1 for c in text.lower() if c in "aeiou")
    emit({
        "type": "tool_completed",
        "tool_name": "letter_count",
        "results": {"letters": letters, "vowels": vowels},
        "duration": (time.monotonic() - started) * 1000,
    })
    answer = f"Your request has {letters} letters, {vowels} of them vowels."
    for word in answer.split(" "):
        emit({"type": "partial_result", "content": word + " "})
        time.sleep(0.05)
    emit({"type": "agent_completed", "status": "success", "final_response": answer})


if __name__ == "__main__":
    main()
