// Cluster under Redis failures: a shard killed with SIGKILL (with and without
// an appendfsync-always AOF) or frozen with SIGSTOP. Publishes to its users
// answer 503 unavailable with Retry-After within --redis-timeout-ms, /readyz
// says 503 naming redis, new upgrades of its users get 503, open WebSockets stay
// open, the other shard's users are not affected, and everything recovers
// without restarting a node. Durable: every acknowledged event survives exactly
// once, same epoch. Not durable: a new epoch, live sessions closed with 1001.
//
// Each test prints one `FIGURES {json}` line: published (attempts),
// acknowledged (200), failed, delivered, lost (acknowledged but gone).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { api, expectRefusal, pollUntil, publish, withTimeout } from '../e2e/lib/harness.mjs';
import {
  assertSeqs,
  connectUser,
  figures,
  history,
  range,
  readyz,
  shardOf,
  startCluster,
  userOnShard,
  waitEvents,
} from './lib/cluster.mjs';

const REDIS_TIMEOUT_MS = 1000;
const MARGIN_MS = 4000; // a loaded two-core machine
const ARGS = ['--redis-timeout-ms', String(REDIS_TIMEOUT_MS)];

/** POST /api/v1/publish; resolves {res, ms} (never throws for a status). */
async function timedPublish(node, event, opts = {}) {
  const t0 = Date.now();
  const res = await api(node, 'POST', '/api/v1/publish', event, { timeoutMs: REDIS_TIMEOUT_MS + MARGIN_MS + 5000, ...opts });
  return { res, ms: Date.now() - t0 };
}

/** Asserts a 503 unavailable with a Retry-After header, answered within the Redis timeout plus the margin. */
function assertUnavailable({ res, ms }, what) {
  assert.equal(res.status, 503, `${what}: expected 503, got ${res.status} ${res.text.slice(0, 300)}`);
  assert.equal(res.json?.error, 'unavailable', `${what}: ${res.text.slice(0, 300)}`);
  const ra = res.headers.get('retry-after');
  assert.ok(ra !== null, `${what}: no Retry-After header`);
  assert.match(ra, /^\d+$/, `${what}: Retry-After ${JSON.stringify(ra)} is not a number of seconds`);
  assert.ok(Number(ra) >= 1, `${what}: Retry-After ${ra}`);
  assert.ok(ms <= REDIS_TIMEOUT_MS + MARGIN_MS, `${what}: answered after ${ms} ms (--redis-timeout-ms ${REDIS_TIMEOUT_MS})`);
}

async function assertNotReady(node, what) {
  const r = await pollUntil(async () => {
    const x = await readyz(node);
    return x.status === 503 ? x : false;
  }, { timeoutMs: REDIS_TIMEOUT_MS + MARGIN_MS + 5000, intervalMs: 50, what: `${what}: /readyz to answer 503` });
  assert.match(r.text, /redis/i, `${what}: /readyz body names redis: ${r.text}`);
}

const waitReady = (nodes, timeoutMs = 30000) => Promise.all(nodes.map((n) => pollUntil(async () => (await readyz(n)).status === 200,
  { timeoutMs, intervalMs: 50, what: `node ${n.index}: /readyz to answer 200 again` })));

const authHeaders = (node, user) => ({ headers: { Authorization: `Bearer ${node.token(user)}` } });

/* ------------------------------------------------------------------ */

test('kill -9 of a shard without AOF: 503 + Retry-After, readyz 503, upgrades 503, sockets stay; restart: new epoch, live sessions closed 1001, old epoch not resumed', { timeout: 90000 }, async (t) => {
  const cl = await startCluster(t, { nodes: 2, shards: 2, args: ARGS });
  const [n0, n1] = cl.nodes;
  const U = userOnShard(0, 2, 'fu');
  const V = userOnShard(1, 2, 'fv');
  const u0 = await connectUser(n0, U);
  const u1 = await connectUser(n1, U);
  const v0 = await connectUser(n0, V);
  const F = { suite: 'cluster-failures', test: 'kill9-volatile', published: 0, acknowledged: 0, failed: 0, delivered: 0, lost: 0 };
  const before = [];
  for (let i = 1; i <= 3; i++) {
    F.published++;
    before.push(await publish(n0, { user_id: U, type: 'pre', i }));
    F.acknowledged++;
  }
  const E1 = before[0].epoch;
  const vFirst = await publish(n1, { user_id: V, type: 'pre' });
  await waitEvents(u0, 3, { what: 'U on node 0' });
  await waitEvents(u1, 3, { what: 'U on node 1' });

  await cl.redis[0].kill9();
  F.published++;
  const down = await timedPublish(n1, { user_id: U, type: 'during' });
  assertUnavailable(down, 'publish to a user of the killed shard');
  F.failed++;
  // a batch holding an event of U and one of V: either the whole batch is 503, or
  // (a bad element fails alone) U's element is refused unavailable and V's goes through
  const t0 = Date.now();
  const downBatch = await api(n0, 'POST', '/api/v1/publish/batch', [{ user_id: U, type: 'during_batch' }, { user_id: V, type: 'batch_other_shard' }], { timeoutMs: 15000 });
  const batchMs = Date.now() - t0;
  F.published += 2;
  let vSeq = vFirst.seq;
  if (downBatch.status === 503) {
    assertUnavailable({ res: downBatch, ms: batchMs }, 'a batch with an event of the killed shard');
    F.failed += 2;
  } else {
    assert.equal(downBatch.status, 200, `batch: ${downBatch.status} ${downBatch.text}`);
    const [eu, ev] = downBatch.json;
    assert.equal(eu.error, 'unavailable', `U's element of the batch: ${JSON.stringify(eu)}`);
    assert.equal(eu.seq, undefined, `U's element took no seq: ${JSON.stringify(eu)}`);
    assert.equal(ev.seq, ++vSeq, `V's element of the batch is published: ${JSON.stringify(ev)}`);
    assert.equal((await v0.nextMessage('batch_other_shard')).seq, ev.seq);
    assert.ok(batchMs <= REDIS_TIMEOUT_MS + MARGIN_MS, `the batch answered after ${batchMs} ms`);
    F.failed++;
    F.acknowledged++;
  }
  // the other shard's users are not affected
  const vr = await publish(n0, { user_id: V, type: 'other_shard' });
  F.published++;
  F.acknowledged++;
  assert.equal(vr.seq, vSeq + 1);
  assert.equal((await v0.nextMessage('other_shard')).seq, vr.seq);
  for (const n of [n0, n1]) await assertNotReady(n, `node ${n.index}`);
  for (const n of [n0, n1]) assert.equal((await api(n, 'GET', '/healthz', undefined, { key: null })).status, 200, '/healthz: the process runs');
  const refused = await expectRefusal(n1.wsUrl(), { ...authHeaders(n1, U), timeoutMs: REDIS_TIMEOUT_MS + MARGIN_MS });
  assert.equal(refused.status, 503, `a new upgrade of U: ${refused.status} ${refused.text}`);
  const vNew = await connectUser(n1, V);
  assert.equal(vNew.hello.user_id, V, 'a user of the other shard still connects');
  for (const c of [u0, u1]) {
    await c.sync();
    assert.ok(c.isOpen, 'open WebSockets stay open while the shard is down');
  }

  await cl.redis[0].restart();
  await waitReady([n0, n1]);
  F.published++;
  const after = await publish(n0, { user_id: U, type: 'after' });
  F.acknowledged++;
  assert.notEqual(after.epoch, E1, 'the stream was lost with the shard: a new epoch');
  for (const [name, c] of [['node 0', u0], ['node 1', u1]]) {
    const info = await c.waitClose(15000);
    assert.equal(info.code, 1001, `${name}: a live session of a reset stream is closed with 1001: ${JSON.stringify(info)}`);
  }
  const back = await connectUser(n1, U, { since: 3, epoch: E1 });
  assert.equal(back.hello.resumed, false, `the old epoch does not resume: ${JSON.stringify(back.hello)}`);
  assert.equal(back.hello.missed, 0);
  assert.equal(back.hello.epoch, after.epoch);
  F.published++;
  const live = await publish(n0, { user_id: U, type: 'live' });
  F.acknowledged++;
  const got = await back.nextMessage('live', 10000);
  assert.equal(got.seq, live.seq);
  assert.equal(got.epoch, after.epoch);
  const h = await history(n1, U, 0);
  assert.equal(h.epoch, after.epoch);
  assert.deepEqual(h.events.map((e) => e.type), ['after', 'live']);
  const full = await connectUser(n0, U, { since: 0, epoch: after.epoch });
  assert.equal(full.hello.resumed, true, JSON.stringify(full.hello));
  assertSeqs(await full.nextMessages(2, (m) => typeof m.seq === 'number' && m.type !== 'connection_established'), after.seq, live.seq, 'the new stream');
  // V's stream was never touched
  const hv = await history(n1, V, 0);
  assert.equal(hv.epoch, vFirst.epoch);
  assertSeqs(hv.events, 1, vr.seq, 'the other shard\'s stream');
  F.delivered = u0.events().length + u1.events().length + back.events().length;
  F.lost = before.length; // acknowledged before the kill, gone with the volatile shard
  F.retry_after = down.res.headers.get('retry-after');
  F.unavailable_ms = down.ms;
  figures(t, F);
});

test('kill -9 of a durable shard (appendfsync always) mid-publish: every acknowledged event is in history once, in order, same epoch; clients resume exactly', { timeout: 120000 }, async (t) => {
  const cl = await startCluster(t, { nodes: 2, shards: 2, durable: true, args: ARGS });
  const [n0, n1] = cl.nodes;
  const U = userOnShard(0, 2, 'dur');
  const witness = await connectUser(n1, U);
  const E1 = witness.hello.epoch;

  // the publishers: three loops, each one event at a time through its node, so
  // that publishes are in flight when the shard dies; a failed one backs off as a client would
  const LOOPS = 3;
  const acked = new Map(); // marker -> receipt
  const ackOrder = [[], [], []]; // per loop, markers in the order acknowledged
  const failed = new Map(); // marker -> {status, ms, retryAfter}
  const failures = [];
  let attempts = 0;
  let stop = false;
  const notify = new Set();
  const when = (pred, timeoutMs, what) => withTimeout(new Promise((resolve) => {
    const check = () => { if (pred()) { notify.delete(check); resolve(); } };
    notify.add(check);
    check();
  }), timeoutMs, what);
  const deadline = Date.now() + 80000;
  const loop = Promise.all(range(0, LOOPS - 1).map(async (l) => {
    let k = 0;
    while (!stop && attempts < 4000 && Date.now() < deadline) {
      attempts++;
      const marker = `L${l}d${++k}`;
      let r;
      try {
        r = await timedPublish(cl.nodes[(l + k) % 2], { user_id: U, type: 'dur', marker });
      } catch (err) {
        r = { res: { status: 0, text: String(err.message), headers: new Headers(), json: null }, ms: 0 };
      }
      if (r.res.status === 200) {
        acked.set(marker, r.res.json);
        ackOrder[l].push(marker);
      } else {
        failed.set(marker, { status: r.res.status, ms: r.ms, retryAfter: r.res.headers.get('retry-after') });
        failures.push(r);
      }
      for (const f of [...notify]) f();
      if (r.res.status !== 200) await new Promise((res) => setTimeout(res, 100)); // a client's backoff, not a wait for the test
    }
  }));
  t.after(async () => { stop = true; await loop; });

  await when(() => acked.size >= 60, 30000, '60 acknowledged events before the kill');
  await cl.redis[0].kill9();
  const ackedAtKill = acked.size;
  await when(() => failed.size >= 1, 20000, 'a failed publish after the kill');
  await cl.redis[0].restart();
  await waitReady([n0, n1]);
  const ackedAtRestart = acked.size;
  await when(() => acked.size >= ackedAtRestart + 40, 30000, '40 acknowledged events after the restart');
  stop = true;
  await loop;

  for (const [marker, f] of failed) {
    assert.equal(f.status, 503, `${marker}: a failed publish answers 503 (got ${f.status})`);
    assert.ok(f.retryAfter !== null, `${marker}: Retry-After`);
    assert.ok(f.ms <= REDIS_TIMEOUT_MS + MARGIN_MS, `${marker}: answered after ${f.ms} ms`);
  }
  for (const r of failures) assert.equal(r.res.json?.error, 'unavailable', r.res.text);
  for (const order of ackOrder) {
    const seqs = order.map((m) => acked.get(m).seq);
    for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1], `one loop's acknowledged seqs rise: ${seqs[i - 1]} then ${seqs[i]}`);
  }
  assert.equal(new Set([...acked.values()].map((r) => r.seq)).size, acked.size, 'no seq acknowledged twice');
  for (const [m, r] of acked) assert.equal(r.epoch, E1, `${m}: the epoch survived the restart`);

  const h = await history(n0, U, 0);
  assert.equal(h.epoch, E1, 'history keeps the epoch');
  assertSeqs(h.events, 1, h.seq, 'history after the restart');
  const inHistory = new Map();
  for (const e of h.events) {
    assert.ok(!inHistory.has(e.marker), `${e.marker} is in history twice`);
    inHistory.set(e.marker, e);
    assert.ok(acked.has(e.marker) || failed.has(e.marker), `history holds ${e.marker}, which was never published`);
  }
  let lost = 0;
  for (const m of acked.keys()) {
    const e = inHistory.get(m);
    if (!e) { lost++; continue; }
    assert.equal(e.seq, acked.get(m).seq, `${m}: the seq of its receipt`);
    assert.equal(e.event_id, acked.get(m).event_id, `${m}: the event_id of its receipt`);
  }
  const storedUnacked = [...failed.keys()].filter((m) => inHistory.has(m)).length;

  // the witness: what it received has no gap and no duplicate; then it resumes exactly on the other node
  const wev = witness.events();
  assertSeqs(wev, 1, wev.length, `the witness (${witness.isOpen ? 'open' : `closed ${JSON.stringify(witness.closeInfo)}`})`);
  if (witness.isOpen) {
    await waitEvents(witness, h.seq, { timeoutMs: 20000, what: 'the witness to catch up' });
    await witness.sync();
    assertSeqs(witness.events(), 1, h.seq, 'the witness after recovery');
    assert.deepEqual(witness.events(), h.events, 'the witness received the history');
  }
  const k = Math.min(wev.length, ackedAtKill);
  const resumed = await connectUser(n0, U, { since: k, epoch: E1 });
  assert.equal(resumed.hello.resumed, true, `resume from ${k} with the old epoch: ${JSON.stringify(resumed.hello)}`);
  assert.equal(resumed.hello.missed, h.seq - k);
  await waitEvents(resumed, h.seq - k, { timeoutMs: 20000, what: 'the resumed client' });
  await resumed.sync();
  assertSeqs(resumed.events(), k + 1, h.seq, 'the resumed client');
  assert.deepEqual(resumed.events(), h.events.slice(k), 'resumed events are the history');

  figures(t, {
    suite: 'cluster-failures', test: 'kill9-durable', published: attempts, acknowledged: acked.size, failed: failed.size,
    acknowledged_before_kill: ackedAtKill, stored_unacknowledged: storedUnacked, delivered: witness.events().length,
    witness_closed: witness.closeInfo, lost,
  });
  assert.equal(lost, 0, `${lost} acknowledged events are not in history after the restart`);
});

test('SIGSTOP of a shard: its users get 503 within the timeout, the other shard\'s users are served, open sockets answer; SIGCONT: recovery, same epoch', { timeout: 90000 }, async (t) => {
  const cl = await startCluster(t, { nodes: 2, shards: 2, args: ARGS });
  const [n0, n1] = cl.nodes;
  const U = userOnShard(0, 2, 'stp');
  const V = userOnShard(1, 2, 'stv');
  const u0 = await connectUser(n0, U);
  const u1 = await connectUser(n1, U);
  const v1 = await connectUser(n1, V);
  const F = { suite: 'cluster-failures', test: 'sigstop', published: 0, acknowledged: 0, failed: 0, delivered: 0, lost: 0 };
  const pre = [];
  for (let i = 1; i <= 3; i++) { F.published++; pre.push(await publish(n1, { user_id: U, type: 'pre', marker: `pre${i}` })); F.acknowledged++; }
  const E1 = pre[0].epoch;
  // users on each shard, as the jump hash of FNV-1a 64 places them
  const onStopped = range(1, 4).map((i) => userOnShard(0, 2, `s0_${i}`));
  const onRunning = range(1, 4).map((i) => userOnShard(1, 2, `s1_${i}`));
  assert.ok(onStopped.every((u) => shardOf(u, 2) === 0));

  cl.redis[0].sigstop();
  const stoppedAt = Date.now();
  t.after(() => cl.redis[0].sigcont());
  const failedMarkers = new Set();
  const [down, others, runningOk, vEvent] = await Promise.all([
    timedPublish(n0, { user_id: U, type: 'during', marker: 'during' }),
    Promise.all(onStopped.map((u, i) => timedPublish(cl.nodes[i % 2], { user_id: u, type: 'probe' }))),
    Promise.all(onRunning.map((u, i) => timedPublish(cl.nodes[i % 2], { user_id: u, type: 'probe' }))),
    (async () => {
      const r = await publish(n0, { user_id: V, type: 'other_shard' });
      return { r, e: await v1.nextMessage('other_shard', 10000) };
    })(),
  ]);
  F.published += 1 + onStopped.length + onRunning.length + 1;
  assertUnavailable(down, 'publish to U while its shard is stopped');
  failedMarkers.add('during');
  for (const [i, x] of others.entries()) assertUnavailable(x, `publish to ${onStopped[i]} (shard 0, stopped)`);
  for (const [i, x] of runningOk.entries()) assert.equal(x.res.status, 200, `publish to ${onRunning[i]} (shard 1, running): ${x.res.status} ${x.res.text}`);
  F.failed += 1 + others.length;
  F.acknowledged += runningOk.length + 1;
  assert.equal(vEvent.e.seq, vEvent.r.seq, 'the other shard\'s events are delivered');
  for (const n of [n0, n1]) await assertNotReady(n, `node ${n.index}`);
  const refused = await expectRefusal(n1.wsUrl(), { ...authHeaders(n1, U), timeoutMs: REDIS_TIMEOUT_MS + MARGIN_MS });
  assert.equal(refused.status, 503, `a new upgrade of U while its shard is stopped: ${refused.status} ${refused.text}`);
  for (const c of [u0, u1]) {
    await c.sync(5000);
    assert.ok(c.isOpen, 'open WebSockets stay open and are served while the shard is stopped');
  }
  // keep it stopped for at least 3 s, through the nodes' timeouts and reconnect
  // attempts, publishing as a client that honours Retry-After: every publish to U
  // is 503 and the sockets are served (bounded loop)
  for (let i = 0; i < 10 && Date.now() - stoppedAt < 3000; i++) {
    const marker = `during_${i}`;
    const x = await timedPublish(cl.nodes[i % 2], { user_id: U, type: 'during', marker });
    assertUnavailable(x, `publish ${i} to U while its shard is still stopped`);
    failedMarkers.add(marker);
    F.published++;
    F.failed++;
    for (const c of [u0, u1]) await c.sync(5000);
    await new Promise((r) => setTimeout(r, Number(x.res.headers.get('retry-after')) * 1000));
  }
  F.stopped_ms = Date.now() - stoppedAt;
  assert.ok(F.stopped_ms >= 3000, `the shard stayed stopped ${F.stopped_ms} ms`);
  const stoppedFor = Date.now();

  cl.redis[0].sigcont();
  await waitReady([n0, n1]);
  F.published++;
  const after = await publish(n0, { user_id: U, type: 'after', marker: 'after' });
  F.acknowledged++;
  assert.equal(after.epoch, E1, 'the stream survived (the process was only stopped)');
  assert.ok(after.seq >= 4, `seq continues: ${after.seq}`);
  const h = await history(n1, U, 0);
  assert.equal(h.epoch, E1);
  assertSeqs(h.events, 1, after.seq, 'history after SIGCONT');
  const markers = h.events.map((e) => e.marker);
  assert.deepEqual(markers.slice(0, 3), ['pre1', 'pre2', 'pre3']);
  assert.equal(markers.at(-1), 'after');
  for (const m of markers.slice(3, -1)) assert.ok(failedMarkers.has(m), `history holds ${m} between the 503s and the next 200`);
  for (const [name, c] of [['node 0', u0], ['node 1', u1]]) {
    await waitEvents(c, after.seq, { timeoutMs: 15000, what: `U on ${name}` });
    await c.sync();
    assertSeqs(c.events(), 1, after.seq, `U on ${name}: no gap, no duplicate`);
    assert.deepEqual(c.events(), h.events, `U on ${name} received the history`);
    assert.ok(c.isOpen, `${name}: not closed (same epoch)`);
  }
  F.delivered = u0.events().length + u1.events().length;
  F.stored_unacknowledged = h.events.length - 4; // the 503 answers whose events the shard ran after SIGCONT
  F.unavailable_ms = down.ms;
  F.recovered_after_sigcont_ms = Date.now() - stoppedFor;
  figures(t, F);
});
