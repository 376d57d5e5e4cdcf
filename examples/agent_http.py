#!/usr/bin/env python3
"""An agentwire HTTP agent, on the Python SDK's http helper (standard library only).

Run it, then point agentwire at it:

    python3 examples/agent_http.py --port 9090 &
    build/agentwire --agent http:http://127.0.0.1:9090/run

For each run agentwire POSTs the run request (JSON) and reads the response body
as newline-delimited JSON events while they stream in (chunked encoding, one
chunk per event). serve_http_agent runs each request in its own thread; the
same generator can be served by aiohttp (agentwire.agent.aiohttp_app) or any
ASGI server (agentwire.agent.asgi_app).
"""
import argparse
import asyncio
import os
import sys

try:
    import agentwire  # noqa: F401  (installed: pip install clients/python)
except ImportError:  # a checkout: use clients/python next to this file
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clients", "python"))

from agentwire.agent import serve_http_agent
from agentwire.events import ToolCall, agent_completed, partial_result, thinking


async def agent(request):
    text = request.user_request
    yield thinking("Reversing the words.")
    call = ToolCall("reverse", {"text": text})
    yield call.start()
    reversed_text = " ".join(reversed(text.split()))
    yield call.complete({"text": reversed_text})
    for word in reversed_text.split():
        yield partial_result(word + " ")
        await asyncio.sleep(0.05)
    yield agent_completed("success", reversed_text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9090)
    args = parser.parse_args()
    serve_http_agent(agent, args.host, args.port, "/run")  # prints "agent listening on http://…/run"


if __name__ == "__main__":
    main()
