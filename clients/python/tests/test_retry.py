"""Retries: a small local HTTP server in front of the real one answers 503 with
Retry-After, or drops answers, then forwards; the publisher's retries must be
exact (same idempotency key, one event) and bounded."""
from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional

import httpx
import pytest

import agentwire
from agentwire import ConnectionFailed, InvalidEvent, Receipt, RetryPolicy, Unavailable
from conftest import uid


class Front:
    """A threaded HTTP server; ``script(n, request)`` decides each answer:
    ("forward",), ("status", code, body, headers), ("drop_after_forward",),
    ("rewrite", fn) (forward, then fn(json) -> json)."""

    def __init__(self, target: Optional[str], script: Callable[[int, Dict[str, Any]], tuple]) -> None:
        self.target = target
        self.script = script
        self.requests: List[Dict[str, Any]] = []
        self.lock = threading.Lock()
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.handle_any()

            def do_POST(self) -> None:
                self.handle_any()

            def handle_any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                req = {"method": self.command, "path": self.path, "headers": dict(self.headers),
                       "body": body, "at": time.monotonic()}
                with front.lock:
                    front.requests.append(req)
                    n = len(front.requests)
                action = front.script(n, req)
                if action[0] == "status":
                    _, code, payload, headers = action
                    data = json.dumps(payload).encode()
                    self.send_response(code)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                fwd = {k: v for k, v in req["headers"].items()
                       if k.lower() in ("authorization", "idempotency-key", "content-type")}
                with httpx.Client() as client:
                    resp = client.request(self.command, front.target + self.path, content=body,
                                          headers=fwd)
                if action[0] == "drop_after_forward":  # the answer is lost on the way back
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                data = resp.content
                if action[0] == "rewrite":
                    data = json.dumps(action[1](resp.json())).encode()
                self.send_response(resp.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "Front":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)

    def keys(self) -> List[Optional[str]]:
        return [r["headers"].get("Idempotency-Key") for r in self.requests]


UNAVAILABLE = {"error": "unavailable", "message": "try later"}
FAST = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05, max_elapsed=20)


def test_503_with_retry_after_is_retried_after_that_time_with_the_same_key(server):
    user = uid()

    def script(n, req):
        return ("status", 503, UNAVAILABLE, {"Retry-After": "1"}) if n == 1 else ("forward",)

    with Front(server.http_url, script) as front, \
            agentwire.Publisher(front.url, server.api_key, retry=FAST) as aw:
        receipt = aw.publish(user, {"type": "note"})
        assert receipt.seq == 1
        assert len(front.requests) == 2
        waited = front.requests[1]["at"] - front.requests[0]["at"]
        assert waited >= 0.99, f"Retry-After: 1 honoured, waited {waited:.3f} s"
        keys = front.keys()
        assert keys[0] and keys[0] == keys[1], keys
    with server.publisher() as direct:
        assert direct.history(user).seq == 1


async def test_a_lost_answer_is_retried_exactly_async(server):
    user = uid()
    script = lambda n, req: ("drop_after_forward",) if n == 1 else ("forward",)  # noqa: E731
    with Front(server.http_url, script) as front:
        async with agentwire.AsyncPublisher(front.url, server.api_key, retry=FAST) as aw:
            receipt = await aw.publish(user, {"type": "note", "text": "once"})
        assert len(front.requests) == 2
        assert front.keys()[0] == front.keys()[1]
    async with server.async_publisher() as direct:
        h = await direct.history(user)
        assert h.seq == 1, "the first attempt published, the retry did not publish again"
        assert h.events[0]["event_id"] == receipt.event_id


def test_a_lost_answer_is_retried_exactly_sync(server):
    user = uid()
    script = lambda n, req: ("drop_after_forward",) if n <= 2 else ("forward",)  # noqa: E731
    with Front(server.http_url, script) as front, \
            agentwire.Publisher(front.url, server.api_key, retry=FAST) as aw:
        receipt = aw.publish(user, {"type": "note"})
        assert len(front.requests) == 3 and len(set(front.keys())) == 1
    with server.publisher() as direct:
        assert [e["event_id"] for e in direct.history(user).events] == [receipt.event_id]


def test_retries_are_bounded_in_attempts(server):
    script = lambda n, req: ("status", 503, UNAVAILABLE, {"Retry-After": "0"})  # noqa: E731
    with Front(None, script) as front, \
            agentwire.Publisher(front.url, "k", retry=FAST) as aw:
        with pytest.raises(Unavailable) as err:
            aw.publish(uid(), {"type": "note"})
        assert (err.value.status, err.value.code, err.value.message) == (503, "unavailable", "try later")
        assert err.value.retry_after == 0
        assert len(front.requests) == FAST.max_attempts


def test_retries_are_bounded_in_time(server):
    script = lambda n, req: ("status", 503, UNAVAILABLE, {"Retry-After": "100"})  # noqa: E731
    policy = RetryPolicy(max_attempts=10, max_elapsed=5)
    with Front(None, script) as front, agentwire.Publisher(front.url, "k", retry=policy) as aw:
        started = time.monotonic()
        with pytest.raises(Unavailable) as err:
            aw.publish(uid(), {"type": "note"})
        assert time.monotonic() - started < 5, "a wait past max_elapsed is not taken"
        assert err.value.retry_after == 100
        assert len(front.requests) == 1


def test_other_errors_are_not_retried(server):
    script = lambda n, req: ("status", 422, {"error": "invalid_event", "message": "no"}, {})  # noqa: E731
    with Front(None, script) as front, agentwire.Publisher(front.url, "k", retry=FAST) as aw:
        with pytest.raises(InvalidEvent):
            aw.publish(uid(), {"type": "note"})
        assert len(front.requests) == 1


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_connection_errors_are_retried_then_raised():
    attempts = []
    policy = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02,
                         random=lambda: attempts.append(1) or 1.0)
    with agentwire.Publisher(f"http://127.0.0.1:{closed_port()}", "k", retry=policy) as aw:
        with pytest.raises(ConnectionFailed) as err:
            aw.publish(uid(), {"type": "note"})
    assert isinstance(err.value, Unavailable)
    assert err.value.code == "connection_error" and err.value.status is None
    assert len(attempts) == 2, "two backoffs between three attempts"


async def test_async_connection_errors_are_retried_then_raised():
    policy = RetryPolicy(max_attempts=2, base_delay=0.01)
    async with agentwire.AsyncPublisher(f"http://127.0.0.1:{closed_port()}", "k", retry=policy) as aw:
        with pytest.raises(ConnectionFailed):
            await aw.publish(uid(), {"type": "note"})


def test_batch_items_that_failed_with_503_are_retried_with_their_keys(server):
    a, b = uid("a"), uid("b")

    def lose_item(index):
        def rewrite(results):
            results[index] = {"error": "unavailable", "message": "lost", "status": 503}
            return results
        return rewrite

    # b's only event fails in the answer: it is sent again alone, with its key
    script = lambda n, req: ("rewrite", lose_item(1)) if n == 1 else ("forward",)  # noqa: E731
    events = [{"user_id": a, "type": "note", "i": 0}, {"user_id": b, "type": "note", "i": 1},
              {"user_id": a, "type": "note", "i": 2}]
    with Front(server.http_url, script) as front, \
            agentwire.Publisher(front.url, server.api_key, retry=FAST) as aw:
        results = aw.publish_batch(events)
        assert all(isinstance(r, Receipt) for r in results), results
        assert len(front.requests) == 2
        first, second = (json.loads(r["body"]) for r in front.requests)
        assert len(second) == 1 and second[0]["idempotency_key"] == first[1]["idempotency_key"]
    with server.publisher() as direct:
        assert direct.history(b).seq == 1 and direct.history(a).seq == 2

    # a's first event fails but a's later one succeeded: not sent again (order)
    script2 = lambda n, req: ("rewrite", lose_item(0)) if n == 1 else ("forward",)  # noqa: E731
    with Front(server.http_url, script2) as front, \
            agentwire.Publisher(front.url, server.api_key, retry=FAST) as aw:
        events2 = [{"user_id": a, "type": "note"}, {"user_id": b, "type": "note"},
                   {"user_id": a, "type": "note"}]
        results = aw.publish_batch(events2)
        assert isinstance(results[0], Unavailable) and results[0].status == 503
        assert isinstance(results[1], Receipt) and isinstance(results[2], Receipt)
        assert len(front.requests) == 1


def test_whole_batch_503_is_retried(server):
    user = uid()
    script = lambda n, req: ("status", 503, UNAVAILABLE, {"Retry-After": "0"}) if n == 1 else ("forward",)  # noqa: E731
    with Front(server.http_url, script) as front, \
            agentwire.Publisher(front.url, server.api_key, retry=FAST) as aw:
        results = aw.publish_batch([{"type": "note"}] * 3, user_id=user)
        assert [r.seq for r in results] == [1, 2, 3]
        first, second = (json.loads(r["body"]) for r in front.requests)
        assert [e["idempotency_key"] for e in first] == [e["idempotency_key"] for e in second]


def test_retry_after_forms():
    from agentwire.retry import parse_retry_after
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("-3") == 0.0


def test_backoff_is_full_jitter_and_capped():
    p = RetryPolicy(base_delay=0.5, max_delay=4, random=lambda: 1.0)
    assert [p.backoff(n) for n in range(6)] == [0.5, 1, 2, 4, 4, 4]
    assert RetryPolicy(random=lambda: 0.0).backoff(3) == 0.0


async def test_a_run_through_a_front_that_loses_every_first_answer_comes_out_once(server):
    user = uid()
    lossy = lambda n, req: ("drop_after_forward",) if n % 2 == 1 else ("forward",)  # noqa: E731
    with Front(server.http_url, lossy) as front:
        async with agentwire.AsyncPublisher(front.url, server.api_key, retry=FAST) as aw:
            async with aw.run(user, "t", agent_name="lossy") as run:
                await run.thinking("hmm")
                async with run.tool("calc", {"x": 1}) as t:
                    t.result = 2
                await run.partial("2")
        keys = front.keys()
        assert len(keys) == 12 and all(keys[i] == keys[i + 1] for i in range(0, 12, 2))
    async with server.async_publisher() as direct:
        events = (await direct.history(user)).events
    assert [e["type"] for e in events] == ["agent_started", "agent_thinking", "tool_executing",
                                           "tool_completed", "partial_result", "agent_completed"]
    assert events[-1]["status"] == "success" and events[-1]["final_response"] == "2"
