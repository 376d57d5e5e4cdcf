"""The publishers against the real server: receipts, batches, idempotency,
the other endpoints, and the error types."""
from __future__ import annotations

import asyncio

import httpx
import pytest

import agentwire
from agentwire import (
    AgentwireError,
    InvalidEvent,
    NotFound,
    Receipt,
    RunOrder,
    Unauthorized,
)
from conftest import WAIT, check_seqs, uid


def test_publish_returns_a_receipt_and_the_event_is_in_history(server):
    user = uid()
    with server.publisher() as aw:
        r1 = aw.publish(user, {"type": "note", "text": "hello"})
        r2 = aw.publish(user, {"type": "note", "text": "again", "user_id": "someone_else"})
        assert isinstance(r1, Receipt)
        assert (r1.seq, r2.seq) == (1, 2)
        assert r1.epoch == r2.epoch and len(r1.epoch) == 16
        assert r1.event_id.startswith("ev_") and r1.event_id != r2.event_id
        h = aw.history(user)
        assert (h.user_id, h.epoch, h.seq) == (user, r1.epoch, 2)
        assert [e["text"] for e in h.events] == ["hello", "again"]
        assert all(e["user_id"] == user for e in h.events), "the target wins over a user_id field"
        assert all("idempotency_key" not in e for e in h.events)
        check_seqs(h.events)
        assert [e["seq"] for e in aw.history(user, since=1).events] == [2]
        unknown = aw.history(uid("nobody"))
        assert (unknown.epoch, unknown.seq, unknown.events) == (None, 0, [])


def test_same_idempotency_key_twice_gives_the_same_receipt_and_one_event(server):
    user = uid()
    with server.publisher() as aw:
        a = aw.publish(user, {"type": "note", "n": 1}, idempotency_key="key-1")
        b = aw.publish(user, {"type": "note", "n": 1}, idempotency_key="key-1")
        c = aw.publish(user, {"type": "note", "n": 1, "idempotency_key": "key-2"})
        d = aw.publish(user, {"type": "note", "n": 1, "idempotency_key": "key-2"})
        e = aw.publish(user, {"type": "note", "n": 1})  # a fresh key each call
        f = aw.publish(user, {"type": "note", "n": 1})
        assert a == b and c == d
        assert len({a.seq, c.seq, e.seq, f.seq}) == 4
        assert aw.history(user).seq == 4


async def test_async_publisher_and_idempotency(server):
    user = uid()
    async with server.async_publisher() as aw:
        a = await aw.publish(user, {"type": "note"}, idempotency_key="k")
        b = await aw.publish(user, {"type": "note"}, idempotency_key="k")
        assert a == b and a.seq == 1
        h = await aw.history(user)
        assert h.seq == 1 and len(h.events) == 1


def test_batch_keeps_order_and_reports_each_item(server):
    u1, u2 = uid(), uid()
    with server.publisher() as aw:
        results = aw.publish_batch([
            {"user_id": u1, "type": "note", "i": 0},
            {"user_id": u2, "type": "note", "i": 1},
            {"user_id": u1, "type": "agent_thinking", "thread_id": "t", "run_id": "nope",
             "reasoning": "x"},                                  # no such run: 409
            {"user_id": u1, "type": "agent_thinking"},           # missing fields: 422
            {"type": "note", "i": 4},                            # user_id from the argument
        ], user_id=u2)
        assert [type(r) for r in results] == [Receipt, Receipt, RunOrder, InvalidEvent, Receipt]
        assert results[0].seq == 1 and results[1].seq == 1 and results[4].seq == 2
        assert results[2].status == 409 and results[2].code == "run_order"
        assert results[3].status == 422 and results[3].code == "invalid_event"
        assert results[3].message
        assert [e["i"] for e in aw.history(u2).events] == [1, 4]


def test_batch_retried_with_the_same_keys_publishes_nothing_twice(server):
    user = uid()
    events = [{"user_id": user, "type": "note", "i": i, "idempotency_key": f"b{i}"} for i in range(5)]
    with server.publisher() as aw:
        first = aw.publish_batch(events)
        again = aw.publish_batch(events)
        assert first == again
        assert [r.seq for r in first] == [1, 2, 3, 4, 5]
        assert aw.history(user).seq == 5


def test_batch_longer_than_the_server_limit_is_sent_in_slices(server):
    user = uid()
    with server.publisher() as aw:
        results = aw.publish_batch(({"type": "n", "i": i} for i in range(2100)), user_id=user)
        assert [r.seq for r in results] == list(range(1, 2101))


async def test_async_batch(server):
    user = uid()
    async with server.async_publisher() as aw:
        results = await aw.publish_batch([{"type": "n"}, {"type": "agent_thinking"}], user_id=user)
        assert isinstance(results[0], Receipt) and isinstance(results[1], InvalidEvent)


def test_error_types_carry_the_server_code(server):
    user = uid()
    with server.publisher() as aw:
        with pytest.raises(InvalidEvent) as bad:
            aw.publish(user, {"type": "agent_thinking", "thread_id": "t", "run_id": "r"})
        assert (bad.value.status, bad.value.code) == (422, "invalid_event")
        assert "reasoning" in bad.value.message
        with pytest.raises(InvalidEvent):
            aw.publish(user, {"type": "Bad Type"})
        with pytest.raises(RunOrder) as order:
            aw.publish(user, {"type": "tool_completed", "thread_id": "t", "run_id": "r",
                              "tool_name": "x", "results": None, "duration": 1})
        assert (order.value.status, order.value.code) == (409, "run_order")
        with pytest.raises(NotFound) as nf:
            aw._send(agentwire.publisher._Call("GET", "/api/v1/nothing-here"))
        assert nf.value.code == "not_found"
        assert isinstance(bad.value, AgentwireError) and isinstance(order.value, AgentwireError)
        with pytest.raises(ValueError):
            aw.publish("", {"type": "note"})
        with pytest.raises(ValueError):
            aw.publish(user, {"text": "no type"})
    with agentwire.Publisher(server.http_url, "wrong-key") as wrong:
        with pytest.raises(Unauthorized) as unauth:
            wrong.publish(user, {"type": "note"})
        assert (unauth.value.status, unauth.value.code) == (401, "unauthorized")
        with pytest.raises(Unauthorized):
            wrong.publish_batch([{"type": "note"}], user_id=user)
        with pytest.raises(Unauthorized):
            wrong.history(user)


async def test_async_error_types(server):
    user = uid()
    async with server.async_publisher() as aw:
        with pytest.raises(InvalidEvent):
            await aw.publish(user, {"type": "agent_completed", "thread_id": "t", "run_id": "r"})
        with pytest.raises(RunOrder):
            await aw.publish(user, {"type": "agent_completed", "thread_id": "t", "run_id": "r",
                                    "status": "success", "final_response": ""})
    async with agentwire.AsyncPublisher(server.http_url, "nope") as wrong:
        with pytest.raises(Unauthorized):
            await wrong.publish(user, {"type": "note"})


async def test_connections_disconnect_and_odd_user_ids(server):
    user = "odd user/with?chars&é"
    async with server.async_publisher() as aw:
        assert await aw.connections(user) == []
        async with server.subscriber(user) as sub:
            conns = await aw.connections(user)
            assert len(conns) == 1 and conns[0].connection_id == sub.connection_id
            assert conns[0].remote_addr and conns[0].connected_at
            r = await aw.publish(user, {"type": "note"})
            ev = await sub.next_event(WAIT)
            assert ev["seq"] == r.seq and ev["user_id"] == user
            assert (await aw.history(user)).events[0]["event_id"] == r.event_id
        assert await aw.disconnect(user) == 0


async def test_ticket_is_one_time_and_needs_the_users_jwt(server):
    user = uid()
    token = server.token(user)
    async with server.async_publisher() as aw:
        t = await aw.ticket(token)
        assert t.ticket and t.expires_at > 0
        with pytest.raises(Unauthorized):
            await aw.ticket("not-a-jwt")
        with pytest.raises(Unauthorized):
            await aw.ticket(server.api_key)  # the API key is not a user's token
        tickets = []

        async def fresh_ticket():
            tk = await aw.ticket(token)
            tickets.append(tk.ticket)
            return tk

        reopened = asyncio.Event()

        def on_open(hello):
            if len(tickets) >= 2:
                reopened.set()

        async with server.subscriber(user, ticket=fresh_ticket, on_open=on_open) as sub:
            assert sub.user_id == user
            await aw.publish(user, {"type": "note"})
            assert (await sub.next_event(WAIT))["type"] == "note"
            # a reconnect takes a fresh ticket: the first one was spent
            assert await aw.disconnect(user) == 1
            await asyncio.wait_for(reopened.wait(), WAIT)
            await aw.publish(user, {"type": "note", "n": 2})
            assert (await sub.next_event(WAIT))["n"] == 2
            assert len(tickets) == 2 and len(set(tickets)) == 2
        # a spent ticket is refused
        async with httpx.AsyncClient() as raw:
            r = await raw.get(f"{server.http_url}/ws?ticket={tickets[0]}", headers={
                "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
            assert r.status_code == 401


def test_sync_endpoints(server):
    user = uid()
    with server.publisher() as aw:
        assert aw.healthy()
        assert aw.connections(user) == []
        assert aw.disconnect(user) == 0
        t = aw.ticket(server.token(user))
        assert t.ticket
    assert not agentwire.Publisher("http://127.0.0.1:1", "k",
                                   retry=agentwire.NO_RETRY).healthy()


def test_url_forms_and_environment(server, monkeypatch):
    monkeypatch.setenv("AGENTWIRE_URL", server.ws_url)
    monkeypatch.setenv("AGENTWIRE_API_KEY", server.api_key)
    with agentwire.Publisher() as aw:
        assert aw.url == server.http_url
        assert aw.publish(uid(), {"type": "note"}).seq == 1
