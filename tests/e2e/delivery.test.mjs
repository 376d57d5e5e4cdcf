// Events published with the HTTP API reach every connection of their user, in
// seq order, stamped by the server, exactly once, and nobody else.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { api, connectAs, publish, randomId, useServer, WAIT_MS } from './lib/harness.mjs';

const T = { timeout: 30000 };
const isEvent = (type) => (m) => m.type === type && typeof m.seq === 'number';

test('a published event reaches every connection of its user, stamped, and no one else', T, async (t) => {
  const srv = await useServer(t);
  const a1 = await connectAs(srv, 'alice');
  const a2 = await connectAs(srv, 'alice');
  const b = await connectAs(srv, 'bob');
  const payload = {
    text: 'héllo ✓ 𝄞 </script> "quoted" \\ back\nslash\ttab',
    count: 42,
    ratio: 1.5,
    negative: -7,
    big: 9007199254740991,
    flag: true,
    nothing: null,
    list: [1, 'two', { three: 3 }, []],
    nested: { a: { b: { c: ['d'] } }, empty: {} },
  };
  const before = Date.now();
  const res = await publish(srv, { user_id: 'alice', type: 'note', ...payload });
  const after = Date.now();
  assert.equal(res.seq, 1);
  assert.equal(res.epoch, a1.hello.epoch, 'events carry the epoch the connection was told');
  assert.equal(typeof res.event_id, 'string');
  assert.ok(res.event_id.length > 0);

  for (const c of [a1, a2]) {
    const ev = await c.nextMessage(isEvent('note'));
    assert.equal(ev.type, 'note');
    assert.equal(ev.seq, 1);
    assert.equal(ev.epoch, res.epoch);
    assert.equal(ev.event_id, res.event_id);
    assert.equal(ev.user_id, 'alice');
    assert.equal(typeof ev.timestamp, 'number');
    assert.ok(ev.timestamp >= before - 1000 && ev.timestamp <= after + 1000, `timestamp ${ev.timestamp} not in ${before}..${after}`);
    for (const [k, v] of Object.entries(payload)) assert.deepEqual(ev[k], v, `field ${k}`);
    const extra = Object.keys(ev).filter((k) => !(k in payload) && !['type', 'seq', 'epoch', 'event_id', 'user_id', 'timestamp'].includes(k));
    assert.deepEqual(extra, [], 'no fields beyond the publisher\'s and the envelope');
  }
  await b.sync();
  assert.deepEqual(b.events(), [], 'bob received alice\'s event');
});

test('seq is 1, 2, 3 per user, independent between users, and connection_established reports the latest', T, async (t) => {
  const srv = await useServer(t);
  const c = await connectAs(srv, 'counter');
  const results = [];
  for (let i = 0; i < 3; i++) results.push(await publish(srv, { user_id: 'counter', type: 'tick', i }));
  assert.deepEqual(results.map((r) => r.seq), [1, 2, 3]);
  assert.equal(new Set(results.map((r) => r.epoch)).size, 1);
  assert.equal(new Set(results.map((r) => r.event_id)).size, 3, 'event ids are unique');
  const evs = await c.nextMessages(3, isEvent('tick'));
  assert.deepEqual(evs.map((e) => [e.seq, e.i]), [[1, 0], [2, 1], [3, 2]]);

  // another user's stream starts at 1
  assert.equal((await publish(srv, { user_id: 'counter-2', type: 'tick' })).seq, 1);

  // a later connection learns the latest seq and gets no replay without since
  const late = await connectAs(srv, 'counter');
  assert.equal(late.hello.seq, 3);
  assert.equal(late.hello.epoch, results[0].epoch);
  assert.equal(late.hello.resumed, false);
  assert.equal(late.hello.missed, 0);
  await late.sync();
  assert.deepEqual(late.events(), [], 'a connection without since must not get old events');
  const r4 = await publish(srv, { user_id: 'counter', type: 'tick', i: 3 });
  assert.equal(r4.seq, 4);
  for (const conn of [c, late]) assert.equal((await conn.nextMessage(isEvent('tick'))).seq, 4);
});

test('events to a user with no connection still take a seq', T, async (t) => {
  const srv = await useServer(t);
  assert.equal((await publish(srv, { user_id: 'offline', type: 'note' })).seq, 1);
  assert.equal((await publish(srv, { user_id: 'offline', type: 'note' })).seq, 2);
  const c = await connectAs(srv, 'offline');
  assert.equal(c.hello.seq, 2);
});

test('the server stamps the envelope: publisher seq, epoch, event_id, timestamp do not survive', T, async (t) => {
  const srv = await useServer(t);
  const c = await connectAs(srv, 'stamped');
  const res = await api(srv, 'POST', '/api/v1/publish', {
    user_id: 'stamped', type: 'note', seq: 999, epoch: 'forged', event_id: 'forged-id', timestamp: 1,
  });
  if (res.status === 422) return; // refusing envelope fields outright is also within the contract
  assert.equal(res.status, 200, res.text);
  assert.equal(res.json.seq, 1);
  const ev = await c.nextMessage(isEvent('note'));
  assert.equal(ev.seq, 1);
  assert.equal(ev.epoch, res.json.epoch);
  assert.notEqual(ev.epoch, 'forged');
  assert.equal(ev.event_id, res.json.event_id);
  assert.notEqual(ev.event_id, 'forged-id');
  assert.ok(ev.timestamp > 1);
});

test('user_id in the delivered event is always the recipient', T, async (t) => {
  const srv = await useServer(t);
  const c = await connectAs(srv, 'recipient');
  await publish(srv, { user_id: 'recipient', type: 'note' });
  const ev = await c.nextMessage(isEvent('note'));
  assert.equal(ev.user_id, 'recipient');
  // a batch element addressed to the recipient carries the recipient, even among others
  await api(srv, 'POST', '/api/v1/publish/batch', [
    { user_id: 'someone-else', type: 'note' },
    { user_id: 'recipient', type: 'note2' },
  ]);
  assert.equal((await c.nextMessage(isEvent('note2'))).user_id, 'recipient');
});

/* ---------------- idempotency ---------------- */

test('idempotency_key: a retry returns the first result, the event is delivered once, the key is stripped', T, async (t) => {
  const srv = await useServer(t);
  const c = await connectAs(srv, 'idem');
  const key = randomId('idem');
  const ev = { user_id: 'idem', type: 'charge', amount: 5, idempotency_key: key };
  const r1 = await publish(srv, ev);
  const r2 = await publish(srv, ev);
  const r3 = await publish(srv, { ...ev, amount: 6 }); // same key, same user: still the first result
  assert.deepEqual(r2, r1);
  assert.deepEqual(r3, r1);
  const next = await publish(srv, { user_id: 'idem', type: 'after' });
  assert.equal(next.seq, r1.seq + 1, 'a retry must not take a seq');

  const got = await c.nextMessage(isEvent('charge'));
  assert.equal(got.seq, r1.seq);
  assert.equal(got.amount, 5);
  assert.equal('idempotency_key' in got, false, 'idempotency_key must be stripped from the event');
  const after = await c.nextMessage(isEvent('after'));
  assert.equal(after.seq, next.seq);
  await c.sync();
  assert.equal(c.events().filter((e) => e.type === 'charge').length, 1, 'the retried event was delivered twice');
});

test('Idempotency-Key header works like the body field; keys are scoped to the target user', T, async (t) => {
  const srv = await useServer(t);
  const a = await connectAs(srv, 'idem-a');
  const b = await connectAs(srv, 'idem-b');
  const key = randomId('hdr');
  const opts = { headers: { 'Idempotency-Key': key } };
  const r1 = await publish(srv, { user_id: 'idem-a', type: 'job' }, opts);
  const r2 = await publish(srv, { user_id: 'idem-a', type: 'job' }, opts);
  assert.deepEqual(r2, r1);
  // the same key for another user is another event
  const rb = await publish(srv, { user_id: 'idem-b', type: 'job' }, opts);
  assert.equal(rb.seq, 1);
  assert.notEqual(rb.event_id, r1.event_id);
  // a different key for the same user is a new event
  const r3 = await publish(srv, { user_id: 'idem-a', type: 'job' }, { headers: { 'Idempotency-Key': `${key}-2` } });
  assert.equal(r3.seq, r1.seq + 1);

  assert.deepEqual((await a.nextMessages(2, isEvent('job'))).map((e) => e.seq), [1, 2]);
  assert.equal((await b.nextMessage(isEvent('job'))).seq, 1);
  await a.sync();
  await b.sync();
  assert.equal(a.events().length, 2);
  assert.equal(b.events().length, 1);
});

test('idempotency keys in batches published by shards (--threads 2), the same batch sent at once on several connections: each key publishes once, every retry answers its receipt', T, async (t) => {
  const srv = await useServer(t, ['--threads', '2']);
  const users = Array.from({ length: 6 }, (_, i) => `idem-shard-${i}`);
  const conns = await Promise.all(users.map((u) => connectAs(srv, u)));
  // 4 keys per user, each twice in the batch (the second a retry with another body)
  const batch = [];
  for (const round of [0, 1]) {
    for (let k = 0; k < 4; k++) {
      for (const u of users) batch.push({ user_id: u, type: 'job', k, round, idempotency_key: `key-${k}` });
    }
  }
  const answers = await Promise.all([0, 1, 2, 3].map(() => api(srv, 'POST', '/api/v1/publish/batch', batch)));
  const first = new Map(); // user/key -> receipt
  for (const res of answers) {
    assert.equal(res.status, 200, res.text.slice(0, 300));
    res.json.forEach((r, i) => {
      const { user_id: u, idempotency_key: key } = batch[i];
      assert.equal(typeof r.seq, 'number', JSON.stringify(r));
      const id = `${u}/${key}`;
      if (!first.has(id)) first.set(id, r);
      assert.deepEqual(r, first.get(id), `${id}: every answer is the first publish's receipt`);
    });
  }
  for (const [i, c] of conns.entries()) {
    const got = await c.nextMessages(4, isEvent('job'));
    assert.deepEqual(got.map((e) => e.seq), [1, 2, 3, 4], `${users[i]}: one event per key`);
    assert.deepEqual(got.map((e) => e.k).sort(), [0, 1, 2, 3]);
    for (const e of got) {
      assert.equal(e.round, 0, 'the first body of each key is the one delivered');
      assert.equal(e.event_id, first.get(`${users[i]}/key-${e.k}`).event_id);
    }
    await c.sync();
    assert.equal(c.events().filter((e) => e.type === 'job').length, 4, `${users[i]}: a key published twice`);
  }
});

/* ---------------- batch ---------------- */

test('publish/batch: results in order, a bad element fails alone, users keep array order', T, async (t) => {
  const srv = await useServer(t);
  const x = await connectAs(srv, 'bx');
  const y = await connectAs(srv, 'by');
  const res = await api(srv, 'POST', '/api/v1/publish/batch', [
    { user_id: 'bx', type: 'step', n: 1 },
    { user_id: 'by', type: 'step', n: 1 },
    { user_id: 'bx', type: 'Bad Type', n: 99 },
    { type: 'step', n: 98 },
    { user_id: 'bx', type: 'step', n: 2 },
    { user_id: 'by', type: 'step', n: 2 },
    { user_id: 'bx', type: 'step', n: 3 },
  ]);
  assert.equal(res.status, 200, res.text);
  assert.ok(Array.isArray(res.json));
  assert.equal(res.json.length, 7);
  const [r0, r1, r2, r3, r4, r5, r6] = res.json;
  for (const bad of [r2, r3]) {
    assert.equal(bad.error, 'invalid_event', JSON.stringify(bad));
    assert.equal(typeof bad.message, 'string');
    assert.equal(bad.status, 422);
    assert.equal('seq' in bad, false);
  }
  assert.deepEqual([r0.seq, r4.seq, r6.seq], [1, 2, 3]);
  assert.deepEqual([r1.seq, r5.seq], [1, 2]);
  for (const r of [r0, r1, r4, r5, r6]) {
    assert.equal(typeof r.event_id, 'string');
    assert.equal(typeof r.epoch, 'string');
  }
  const xs = await x.nextMessages(3, isEvent('step'));
  assert.deepEqual(xs.map((e) => [e.seq, e.n, e.event_id]), [[1, 1, r0.event_id], [2, 2, r4.event_id], [3, 3, r6.event_id]]);
  const ys = await y.nextMessages(2, isEvent('step'));
  assert.deepEqual(ys.map((e) => [e.seq, e.n]), [[1, 1], [2, 2]]);
  await x.sync();
  await y.sync();
  assert.equal(x.events().length, 3);
  assert.equal(y.events().length, 2);
});

test('publish/batch: an empty array gives an empty array; more than 1000 events is refused whole', T, async (t) => {
  const srv = await useServer(t);
  const c = await connectAs(srv, 'bulk');
  const empty = await api(srv, 'POST', '/api/v1/publish/batch', []);
  assert.equal(empty.status, 200, empty.text);
  assert.deepEqual(empty.json, []);
  const tooMany = Array.from({ length: 1001 }, (_, i) => ({ user_id: 'bulk', type: 'x', i }));
  const res = await api(srv, 'POST', '/api/v1/publish/batch', tooMany);
  assert.ok([400, 413, 422].includes(res.status), `1001 events: ${res.status} ${res.text.slice(0, 200)}`);
  assert.equal(typeof res.json?.error, 'string');
  // exactly 1000 is accepted
  const max = Array.from({ length: 1000 }, (_, i) => ({ user_id: 'bulk', type: 'y', i }));
  const ok = await api(srv, 'POST', '/api/v1/publish/batch', max);
  assert.equal(ok.status, 200, ok.text.slice(0, 300));
  assert.equal(ok.json.length, 1000);
  assert.equal(ok.json[999].seq, 1000, 'the refused batch must not have published anything');
  const evs = await c.nextMessages(1000, () => true, 15000);
  assert.ok(evs.every((e, i) => e.type === 'y' && e.seq === i + 1 && e.i === i));
});

/* ---------------- fan-out under concurrency ---------------- */

test('fan-out: 50 users x 2-3 connections, concurrent batches: each gets exactly its own events in order', { timeout: 90000 }, async (t) => {
  const srv = await useServer(t);
  const USERS = 50;
  const users = Array.from({ length: USERS }, (_, i) => `fan-${i}`);
  const conns = new Map(users.map((u) => [u, []]));
  const wanted = [];
  users.forEach((u, i) => { for (let k = 0; k < 2 + (i % 2); k++) wanted.push(u); });
  for (let i = 0; i < wanted.length; i += 25) {
    const chunk = await Promise.all(wanted.slice(i, i + 25).map((u) => connectAs(srv, u)));
    chunk.forEach((c) => conns.get(c.hello.user_id).push(c));
  }
  assert.equal([...conns.values()].flat().length, wanted.length);

  // rounds of concurrent batches; element j of batch b goes to a pseudo-random user
  const ROUNDS = 2;
  const BATCHES = 4;
  const PER_BATCH = 150;
  const expected = new Map(users.map((u) => [u, []])); // user -> [{marker, batch, idx}]
  const resultByMarker = new Map();
  let rnd = 12345;
  const next = () => { rnd = (rnd * 1103515245 + 12345) % 2147483648; return rnd; };
  for (let round = 0; round < ROUNDS; round++) {
    const batches = [];
    for (let b = 0; b < BATCHES; b++) {
      const batch = [];
      for (let j = 0; j < PER_BATCH; j++) {
        const user = users[next() % USERS];
        const marker = `r${round}b${b}j${j}`;
        batch.push({ user_id: user, type: 'fan', marker, batch: `r${round}b${b}`, j });
        expected.get(user).push({ marker, batch: `r${round}b${b}`, j });
      }
      batches.push(batch);
    }
    const responses = await Promise.all(batches.map((batch) => api(srv, 'POST', '/api/v1/publish/batch', batch)));
    responses.forEach((res, b) => {
      assert.equal(res.status, 200, res.text.slice(0, 300));
      assert.equal(res.json.length, PER_BATCH);
      res.json.forEach((r, j) => {
        assert.equal(typeof r.seq, 'number', `batch ${b} slot ${j}: ${JSON.stringify(r)}`);
        resultByMarker.set(batches[b][j].marker, r);
      });
    });
  }

  // the API's seqs: per user exactly 1..n
  for (const [user, list] of expected) {
    const seqs = list.map((e) => resultByMarker.get(e.marker).seq).sort((a, b) => a - b);
    assert.deepEqual(seqs, list.map((_, i) => i + 1), `API seqs for ${user}`);
  }

  // every connection: exactly its user's events, seq 1..n, batch order kept
  await Promise.all([...conns].flatMap(([user, cs]) => cs.map(async (c) => {
    const n = expected.get(user).length;
    const evs = await c.nextMessages(n, isEvent('fan'), 30000);
    assert.deepEqual(evs.map((e) => e.seq), evs.map((_, i) => i + 1), `seq of ${user}`);
    for (const e of evs) {
      assert.equal(e.user_id, user, `${user} got ${e.marker}`);
      const r = resultByMarker.get(e.marker);
      assert.ok(r, `unknown marker ${e.marker}`);
      assert.equal(e.seq, r.seq, `${e.marker}: delivered seq vs API seq`);
      assert.equal(e.event_id, r.event_id);
    }
    assert.deepEqual(evs.map((e) => e.marker).sort(), expected.get(user).map((e) => e.marker).sort(), `markers of ${user}`);
    const lastJ = new Map();
    for (const e of evs) {
      assert.ok((lastJ.get(e.batch) ?? -1) < e.j, `${user}: ${e.marker} out of its batch order`);
      lastJ.set(e.batch, e.j);
    }
    await c.sync(WAIT_MS * 2);
    assert.equal(c.events().length, n, `${user}: extra events after the expected ones`);
  })));

  // the connections of one user saw the same stream
  for (const [user, cs] of conns) {
    const streams = cs.map((c) => c.events().map((e) => e.marker).join(','));
    assert.ok(streams.every((s) => s === streams[0]), `connections of ${user} disagree`);
  }
});
