"""The subscriber: exact resume across a server-side disconnect and a restart,
resets, duplicates and gaps (against a scripted WebSocket server), credentials."""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Dict, List
from urllib.parse import parse_qs, urlsplit

import pytest
import websockets

import agentwire
from agentwire import ConnectionFailed, NotConnected, ReplyError, Reset, Unauthorized
from conftest import WAIT, check_seqs, uid


def gated_token(srv, user):
    """A token callable whose calls after the first wait for the returned gate:
    the test decides when the subscriber may reconnect (no sleeps)."""
    gate = asyncio.Event()
    calls = []

    async def token() -> str:
        calls.append(time.monotonic())
        if len(calls) > 1:
            await gate.wait()
        return srv.token(user)

    return token, gate, calls


async def take(sub, n):
    return [await sub.next_event(WAIT) for _ in range(n)]


async def test_resume_across_a_server_side_disconnect_has_no_gap_and_no_duplicate(server):
    user = uid()
    token, gate, calls = gated_token(server, user)
    closed = asyncio.Event()
    async with server.subscriber(user, token=token, on_close=lambda code, reason: closed.set()) as sub, \
            server.async_publisher() as aw:
        for i in range(5):
            await aw.publish(user, {"type": "note", "i": i})
        first = await take(sub, 5)
        assert await aw.disconnect(user) == 1   # closes with 4002
        # the 200 may come before the close (the connection's own loop closes it):
        # wait for the close, so that what follows is published while away
        await asyncio.wait_for(closed.wait(), WAIT)
        for i in range(5, 10):                  # published while the subscriber is away
            await aw.publish(user, {"type": "note", "i": i})
        gate.set()
        rest = await take(sub, 5)
        for i in range(10, 12):                 # and live again
            await aw.publish(user, {"type": "note", "i": i})
        live = await take(sub, 2)
        events = first + rest + live
        check_seqs(events)
        assert [e["i"] for e in events] == list(range(12))
        assert sub.last_close[0] == 4002
        assert len(sub.hellos) == 2 and len(calls) == 2
        second = sub.hellos[1]
        assert second["resumed"] is True and second["missed"] == 5
        assert sub.counters.duplicates_dropped == 0
        assert sub.counters.gaps == 0 and sub.counters.resets == 0
        assert sub.counters.reconnects == 1
        assert (sub.last_seq, sub.epoch) == (12, events[0]["epoch"])


async def test_resume_across_a_server_restart_with_durable_history(start_server, tmp_path):
    srv = start_server("--data-dir", str(tmp_path))
    user = uid()
    token, gate, calls = gated_token(srv, user)
    async with srv.subscriber(user, token=token) as sub:
        async with srv.async_publisher() as aw:
            for i in range(3):
                await aw.publish(user, {"type": "note", "i": i})
        first = await take(sub, 3)
        await asyncio.get_running_loop().run_in_executor(None, srv.stop)
        srv2 = start_server("--data-dir", str(tmp_path), port=srv.port, secret=srv.secret,
                            api_key=srv.api_key)
        async with srv2.async_publisher() as aw2:
            for i in range(3, 6):
                await aw2.publish(user, {"type": "note", "i": i})
            gate.set()
            rest = await take(sub, 3)
        events = first + rest
        check_seqs(events)
        assert [e["i"] for e in events] == list(range(6))
        assert sub.hellos[-1]["resumed"] is True and sub.hellos[-1]["missed"] == 3
        assert sub.counters.duplicates_dropped == 0 and sub.counters.resets == 0


async def test_reset_when_the_server_cannot_resume(server):
    user = uid()
    async with server.async_publisher() as aw:
        for i in range(3):
            await aw.publish(user, {"type": "note", "i": i})
        resets: List[Reset] = []

        async def on_reset(info: Reset) -> int:
            resets.append(info)
            # reload: an event published meanwhile is in the reload and also arrives live
            await aw.publish(user, {"type": "note", "i": 3})
            return (await aw.history(user)).seq

        sub = server.subscriber(user, since=1, epoch="0123456789abcdef", on_reset=on_reset)
        async with sub:
            real_epoch = sub.hello["epoch"]
            assert sub.hello["resumed"] is False
            assert resets == [Reset(epoch=real_epoch, seq=3, previous_epoch="0123456789abcdef",
                                    previous_seq=1)]
            await aw.publish(user, {"type": "note", "i": 4})
            ev = await sub.next_event(WAIT)
            assert (ev["seq"], ev["i"]) == (5, 4), "the reloaded event 4 was dropped as a duplicate"
            assert sub.counters.resets == 1 and sub.counters.duplicates_dropped == 1


async def test_starting_from_a_known_position_replays_what_follows(server):
    user = uid()
    async with server.async_publisher() as aw:
        receipts = [await aw.publish(user, {"type": "note", "i": i}) for i in range(4)]
    async with server.subscriber(user, since=2, epoch=receipts[0].epoch) as sub:
        assert sub.hello["resumed"] is True and sub.hello["missed"] == 2
        assert [e["seq"] for e in await take(sub, 2)] == [3, 4]


class Scripted:
    """A WebSocket server whose connections follow script[n](ws, query)."""

    def __init__(self, scripts):
        self.scripts = scripts
        self.queries: List[Dict[str, List[str]]] = []
        self.close_codes: List[Any] = []
        self.headers: List[Any] = []
        self.server = None

    async def handler(self, ws, path):
        n = len(self.queries)
        self.queries.append(parse_qs(urlsplit(path).query))
        self.headers.append(ws.request_headers)
        try:
            await self.scripts[n](ws)
        finally:
            await ws.wait_closed()
            self.close_codes.append(ws.close_code)

    async def __aenter__(self):
        self.server = await websockets.serve(self.handler, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/ws"
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()


def hello(epoch="e1", seq=0, resumed=False, missed=0):
    return json.dumps({"type": "connection_established", "connection_id": "c1", "user_id": "u",
                       "epoch": epoch, "seq": seq, "resumed": resumed, "missed": missed,
                       "heartbeat_interval_ms": 25000})


def ev(seq, epoch="e1"):
    return json.dumps({"type": "note", "seq": seq, "epoch": epoch, "user_id": "u"})


async def test_duplicates_are_dropped_and_a_gap_resumes_from_the_last_seq():
    async def first(ws):
        await ws.send(hello(seq=0))
        for s in (1, 2, 2, 1, 3, 5):  # two duplicates, then a gap (4 is missing)
            await ws.send(ev(s))

    async def second(ws):
        await ws.send(hello(seq=5, resumed=True, missed=2))
        for s in (4, 5, 6):
            await ws.send(ev(s))

    async with Scripted([first, second]) as fake:
        async with agentwire.Subscriber(fake.url, token="tok", backoff_base=0.01) as sub:
            events = [await sub.next_event(WAIT) for _ in range(6)]
            assert [e["seq"] for e in events] == [1, 2, 3, 4, 5, 6]
            assert sub.counters.duplicates_dropped == 2 and sub.counters.gaps == 1
        assert fake.queries[0] == {}
        assert fake.queries[1] == {"since": ["3"], "epoch": ["e1"]}
        assert fake.close_codes[0] == 4000, "the client dropped the socket with the gap"
        assert fake.headers[0]["Authorization"] == "Bearer tok"


async def test_another_epoch_mid_stream_is_a_gap_then_a_reset():
    async def first(ws):
        await ws.send(hello(seq=0))
        await ws.send(ev(1))
        await ws.send(ev(1, epoch="e2"))  # a new epoch: this socket cannot be trusted

    async def second(ws):
        await ws.send(hello(epoch="e2", seq=7, resumed=False))
        await ws.send(ev(8, epoch="e2"))

    resets = []
    async with Scripted([first, second]) as fake:
        async with agentwire.Subscriber(fake.url, token="tok", backoff_base=0.01,
                                        on_reset=resets.append) as sub:
            events = [await sub.next_event(WAIT) for _ in range(2)]
            assert [(e["epoch"], e["seq"]) for e in events] == [("e1", 1), ("e2", 8)]
    assert resets == [Reset(epoch="e2", seq=7, previous_epoch="e1", previous_seq=1)]
    assert fake.queries[1] == {"since": ["1"], "epoch": ["e1"]}


async def test_a_refused_fixed_token_raises_unauthorized(server):
    sub = server.subscriber(uid(), token="not-a-jwt")
    with pytest.raises(Unauthorized) as err:
        await sub.connect()
    assert err.value.status == 401
    await sub.close()


async def test_giving_up_after_max_retries():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    sub = agentwire.Subscriber(f"ws://127.0.0.1:{port}/ws", token="t", backoff_base=0.01,
                               max_retries=2)
    with pytest.raises(ConnectionFailed) as err:
        await sub.connect()
    assert err.value.code == "gave_up"
    with pytest.raises(ConnectionFailed):
        await sub.next_event(WAIT)  # the iterator raises it too
    await sub.close()


@pytest.mark.timeout(90)
async def test_token_expiry_4001_reconnects_with_a_fresh_token(server):
    user = uid()
    tokens = []

    def token() -> str:
        ttl = 3 if not tokens else 3600
        tokens.append(ttl)
        return server.token(user, ttl=ttl)

    closes = []
    reopened = asyncio.Event()

    def on_open(hello):
        if len(tokens) > 1:
            reopened.set()

    async with server.subscriber(user, token=token, on_open=on_open,
                                 on_close=lambda code, reason: closes.append(code)) as sub, \
            server.async_publisher() as aw:
        await aw.publish(user, {"type": "note", "i": 0})
        assert (await sub.next_event(WAIT))["i"] == 0
        # the server closes with 4001 at exp; the subscriber reconnects at once
        await asyncio.wait_for(reopened.wait(), 30)
        await aw.publish(user, {"type": "note", "i": 1})
        ev = await sub.next_event(WAIT)
        assert (ev["i"], ev["seq"]) == (1, 2)
        assert closes == [4001] and tokens == [3, 3600]
        assert sub.hellos[1]["resumed"] is True
        assert sub.counters.resets == 0 and sub.counters.gaps == 0


@pytest.mark.timeout(90)
async def test_token_expiry_with_a_fixed_token_ends_the_iterator(server):
    user = uid()
    sub = server.subscriber(user, token=server.token(user, ttl=3))
    async with sub:
        with pytest.raises(Unauthorized) as err:
            await sub.next_event(30)
        assert err.value.code == "token_expired"


async def test_requests_and_replies(server):
    user = uid()
    sub = server.subscriber(user)
    with pytest.raises(NotConnected):
        await sub.ping()
    async with sub:
        pong = await sub.ping()
        assert pong["type"] == "pong"
        with pytest.raises(ReplyError) as err:
            await sub.request("no_such_message", {})
        assert err.value.code == "unknown_type"
        with pytest.raises(ReplyError) as err2:
            await sub.request("start_agent", {"thread_id": "t"})  # user_request is required
        assert err2.value.code == "invalid_message"
    with pytest.raises(NotConnected):
        await sub.ping()


async def test_close_ends_the_iterator(server):
    user = uid()
    sub = server.subscriber(user)
    await sub.connect()
    done = asyncio.ensure_future(sub.collect(lambda e: False))
    await sub.close()
    with pytest.raises(agentwire.ConnectionLost):
        await asyncio.wait_for(done, WAIT)
    assert sub.status == "closed"


async def test_without_reconnect_the_iterator_ends_with_the_socket(server):
    user = uid()
    async with server.subscriber(user, reconnect=False) as sub, server.async_publisher() as aw:
        await aw.publish(user, {"type": "note"})
        assert (await sub.next_event(WAIT))["seq"] == 1
        assert await aw.disconnect(user) == 1
        with pytest.raises(StopAsyncIteration):
            await sub.next_event(WAIT)
        assert sub.last_close[0] == 4002 and sub.status == "closed"
