#!/usr/bin/env python3
"""An agentwire HTTP agent, standard library only.

Run it, then point agentwire at it:

    python3 examples/agent_http.py --port 9090 &
    build/agentwire --agent http:http://127.0.0.1:9090/run

For each run agentwire POSTs the run request (JSON) and reads the response body
as newline-delimited JSON events while they stream in (chunked encoding).
"""
import argparse
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class AgentHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def send_event(self, event):
        line = (json.dumps(event) + "\n").encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))  # one chunk per event
        self.wfile.flush()

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        request = json.loads(self.rfile.read(length))
        text = request.get("user_request", "")
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        self.send_event({"type": "agent_thinking", "reasoning": "Reversing the words."})
        self.send_event({"type": "tool_executing", "tool_name": "reverse", "parameters": {"text": text}})
        started = time.monotonic()
        reversed_text = " ".join(reversed(text.split()))
        self.send_event({
            "type": "tool_completed",
            "tool_name": "reverse",
            "results": {"text": reversed_text},
            "duration": (time.monotonic() - started) * 1000,
        })
        for word in reversed_text.split():
            self.send_event({"type": "partial_result", "content": word + " "})
            time.sleep(0.05)
        self.send_event({"type": "agent_completed", "status": "success", "final_response": reversed_text})
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, fmt, *args):
        pass  # quiet


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9090)
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), AgentHandler)
    print(f"agent listening on http://{args.host}:{server.server_address[1]}/run", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
