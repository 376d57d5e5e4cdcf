// Cluster API: idempotency keys, tickets, the connections listing and
// disconnect work across nodes; a node killed with SIGKILL leaves the listing
// within about --node-ttl-ms.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { api, expectRefusal, connectReady, pollUntil, publish } from '../e2e/lib/harness.mjs';
import {
  connectionIds,
  connectUser,
  figures,
  history,
  startCluster,
  userOnShard,
} from './lib/cluster.mjs';

const T = { timeout: 60000 };
const rid = (p) => `${p}_${randomBytes(4).toString('hex')}`;

/** POST /api/v1/tickets with the user's JWT as Bearer. */
const requestTicket = (node, user) => api(node, 'POST', '/api/v1/tickets', undefined, { key: node.token(user) });

/* ---------------- idempotency ---------------- */

test('idempotency: the same key through node 0, then 1 (header), then 2 (body field) returns one receipt; one event is delivered', T, async (t) => {
  const cl = await startCluster(t, { nodes: 3, shards: 2 });
  const [n0, n1, n2] = cl.nodes;
  for (const shard of [0, 1]) {
    const user = userOnShard(shard, 2, 'idem');
    const conns = [await connectUser(n0, user), await connectUser(n1, user), await connectUser(n2, user)];
    const key = rid('key');
    const r0 = await publish(n0, { user_id: user, type: 'charge', amount: 5 }, { headers: { 'Idempotency-Key': key } });
    const r1 = await publish(n1, { user_id: user, type: 'charge', amount: 5 }, { headers: { 'Idempotency-Key': key } });
    const r2 = await publish(n2, { user_id: user, type: 'charge', amount: 6, idempotency_key: key });
    assert.deepEqual(r1, r0, `shard ${shard}: node 1 answered another receipt for the same key`);
    assert.deepEqual(r2, r0, `shard ${shard}: node 2 (body field) answered another receipt for the same key`);
    const after = await publish(n1, { user_id: user, type: 'after' });
    assert.equal(after.seq, r0.seq + 1, 'a retried key must not take a seq');
    // a batch element with the same key, through yet another node, is the same event too
    const batch = await api(n2, 'POST', '/api/v1/publish/batch', [{ user_id: user, type: 'charge', amount: 7, idempotency_key: key }]);
    assert.equal(batch.status, 200, batch.text);
    assert.equal(batch.json[0].seq, r0.seq);
    assert.equal(batch.json[0].event_id, r0.event_id);
    for (const [i, c] of conns.entries()) {
      const got = await c.nextMessage((m) => m.type === 'after');
      assert.equal(got.seq, after.seq);
      await c.sync();
      const charges = c.events().filter((e) => e.type === 'charge');
      assert.equal(charges.length, 1, `node ${i}: the event with one key was delivered ${charges.length} times`);
      assert.equal(charges[0].amount, 5, 'the first publish is the one kept');
      assert.equal(charges[0].event_id, r0.event_id);
      assert.equal('idempotency_key' in charges[0], false, 'the key is stripped');
    }
    const h = await history(n0, user, 0);
    assert.deepEqual(h.events.map((e) => e.type), ['charge', 'after'], 'history holds the event once');
    // the same key for another user is another event
    const other = rid('idem_other');
    const ro = await publish(n2, { user_id: other, type: 'charge' }, { headers: { 'Idempotency-Key': key } });
    assert.equal(ro.seq, 1);
    assert.notEqual(ro.event_id, r0.event_id);
  }
});

test('idempotency: one key sent to all three nodes at the same moment publishes one event', T, async (t) => {
  const cl = await startCluster(t, { nodes: 3, shards: 2 });
  const user = rid('idemrace');
  const c = await connectUser(cl.nodes[1], user);
  let dupes = 0;
  const ROUNDS = 10;
  for (let round = 0; round < ROUNDS; round++) {
    const key = rid(`k${round}`);
    const rs = await Promise.all(cl.nodes.map((n, i) => publish(n, { user_id: user, type: 'once', round, from: i }, { headers: { 'Idempotency-Key': key } })));
    if (new Set(rs.map((r) => r.event_id)).size !== 1) dupes++;
    assert.deepEqual(rs[1], rs[0], `round ${round}: nodes 0 and 1 answered different receipts`);
    assert.deepEqual(rs[2], rs[0], `round ${round}: nodes 0 and 2 answered different receipts`);
  }
  const last = await publish(cl.nodes[0], { user_id: user, type: 'end' });
  assert.equal(last.seq, ROUNDS + 1, 'each round took one seq');
  await c.nextMessage((m) => m.type === 'end');
  const once = c.events().filter((e) => e.type === 'once');
  assert.deepEqual(once.map((e) => e.round), [...Array(ROUNDS).keys()], 'one event per round');
  figures(t, { suite: 'cluster-api', test: 'idempotency-race', rounds: ROUNDS, duplicate_rounds: dupes });
});

/* ---------------- tickets ---------------- */

test('tickets: made on node 0, accepted once on node 1; a second use on any node is 401', T, async (t) => {
  const cl = await startCluster(t, { nodes: 3, shards: 2 });
  const [n0, n1, n2] = cl.nodes;
  for (const shard of [0, 1]) {
    const user = userOnShard(shard, 2, 'tk');
    const res = await requestTicket(n0, user);
    assert.equal(res.status, 200, res.text);
    assert.equal(typeof res.json.ticket, 'string');
    const c = await connectReady(n1.wsUrl({ ticket: res.json.ticket }));
    assert.equal(c.hello.user_id, user, 'the ticket names its user on another node');
    for (const n of [n2, n0, n1]) {
      const again = await expectRefusal(n.wsUrl({ ticket: res.json.ticket }));
      assert.equal(again.status, 401, `second use on node ${n.index}: ${again.status} ${again.text}`);
      assert.equal(again.body?.error, 'unauthorized');
    }
    // the connection made with the ticket is a session like any other
    const r = await publish(n2, { user_id: user, type: 'via_ticket' });
    assert.equal((await c.nextMessage('via_ticket')).seq, r.seq);
  }
  // an unknown ticket is 401 everywhere
  for (const n of cl.nodes) assert.equal((await expectRefusal(n.wsUrl({ ticket: 'A'.repeat(32) }))).status, 401);
});

test('tickets: one ticket presented to the three nodes at the same moment opens exactly one connection', T, async (t) => {
  const cl = await startCluster(t, { nodes: 3, shards: 2 });
  const user = rid('tkrace');
  let accepted = 0;
  let refused = 0;
  const ROUNDS = 6;
  for (let round = 0; round < ROUNDS; round++) {
    const res = await requestTicket(cl.nodes[round % 3], user);
    assert.equal(res.status, 200, res.text);
    const outcomes = await Promise.allSettled(cl.nodes.map((n) => connectReady(n.wsUrl({ ticket: res.json.ticket }))));
    const ok = outcomes.filter((o) => o.status === 'fulfilled');
    const no = outcomes.filter((o) => o.status === 'rejected');
    for (const o of no) assert.equal(o.reason.status, 401, `a refused use is 401: ${o.reason.message}`);
    accepted += ok.length;
    refused += no.length;
    assert.equal(ok.length, 1, `round ${round}: ${ok.length} connections opened with one ticket`);
    for (const o of ok) await o.value.close();
  }
  figures(t, { suite: 'cluster-api', test: 'ticket-race', rounds: ROUNDS, accepted, refused });
});

/* ---------------- connections and disconnect ---------------- */

test('connections: every node lists the user\'s connections on all nodes; a closed one leaves every listing', T, async (t) => {
  const cl = await startCluster(t, { nodes: 3, shards: 2 });
  const [n0, n1, n2] = cl.nodes;
  const user = rid('lister');
  const other = rid('lister_other');
  const a = await connectUser(n0, user);
  const b = await connectUser(n0, user);
  const c = await connectUser(n1, user);
  const o = await connectUser(n2, other);
  const want = [a, b, c].map((x) => x.hello.connection_id).sort();
  assert.equal(new Set(want).size, 3, 'connection ids are unique across nodes');
  for (const n of cl.nodes) {
    const got = await pollUntil(async () => {
      const ids = await connectionIds(n, user);
      return ids.length === 3 ? ids : false;
    }, { timeoutMs: 10000, what: `node ${n.index} to list 3 connections` });
    assert.deepEqual(got, want, `node ${n.index} lists the user's connections on all nodes`);
    assert.deepEqual(await connectionIds(n, other), [o.hello.connection_id], `node ${n.index}: the other user`);
  }
  const res = await api(n2, 'GET', `/api/v1/users/${user}/connections`);
  for (const x of res.json.connections) {
    assert.equal(typeof x.remote_addr, 'string');
    assert.equal(typeof x.connected_at, 'number');
  }
  await b.close();
  for (const n of cl.nodes) {
    await pollUntil(async () => JSON.stringify(await connectionIds(n, user)) === JSON.stringify([a, c].map((x) => x.hello.connection_id).sort()),
      { timeoutMs: 10000, what: `node ${n.index} to drop the closed connection` });
  }
  const ghost = rid('nobody');
  for (const n of cl.nodes) assert.deepEqual(await connectionIds(n, ghost), []);
});

test('disconnect through node 2 closes the user\'s connections on every node with 4002 and counts them all', T, async (t) => {
  const cl = await startCluster(t, { nodes: 3, shards: 2 });
  const [n0, n1, n2] = cl.nodes;
  const user = rid('kicked');
  const bystander = rid('bystander');
  const conns = [await connectUser(n0, user), await connectUser(n0, user), await connectUser(n1, user)];
  const others = await Promise.all(cl.nodes.map((n) => connectUser(n, bystander)));
  await pollUntil(async () => (await connectionIds(n2, user)).length === 3, { timeoutMs: 10000, what: 'node 2 to list the 3 connections' });
  const res = await api(n2, 'POST', `/api/v1/users/${user}/disconnect`);
  assert.equal(res.status, 200, res.text);
  assert.deepEqual(res.json, { user_id: user, disconnected: 3 }, 'the total of every node');
  for (const [i, c] of conns.entries()) {
    const info = await c.waitClose(10000);
    assert.equal(info.code, 4002, `connection ${i}: ${JSON.stringify(info)}`);
    assert.equal(info.reason, 'disconnected');
  }
  for (const o of others) {
    await o.sync();
    assert.ok(o.isOpen, 'the bystander stays connected');
  }
  for (const n of cl.nodes) {
    await pollUntil(async () => (await connectionIds(n, user)).length === 0, { timeoutMs: 10000, what: `node ${n.index} to list none` });
  }
  const again = await api(n0, 'POST', `/api/v1/users/${user}/disconnect`);
  assert.equal(again.status, 200);
  assert.equal(again.json.disconnected, 0);
  // the user may come back on any node and events flow
  const back = await connectUser(n1, user);
  const r = await publish(n0, { user_id: user, type: 'welcome_back' });
  assert.equal((await back.nextMessage('welcome_back')).seq, r.seq);
});

test('a node killed with SIGKILL: its connections leave every listing within about --node-ttl-ms; the others stay', { timeout: 60000 }, async (t) => {
  const TTL = 2000;
  const cl = await startCluster(t, { nodes: 3, shards: 2, args: ['--node-ttl-ms', String(TTL)] });
  const [n0, n1, n2] = cl.nodes;
  const user = rid('presence');
  const keep = await connectUser(n0, user);
  const dead = [await connectUser(n1, user), await connectUser(n1, user)];
  const all = [keep, ...dead].map((c) => c.hello.connection_id).sort();
  await pollUntil(async () => JSON.stringify(await connectionIds(n2, user)) === JSON.stringify(all), { timeoutMs: 10000, what: 'node 2 to list all 3' });
  const killedAt = Date.now();
  await n1.kill9();
  let vanishedMs = null;
  for (const n of [n0, n2]) {
    await pollUntil(async () => {
      const ids = await connectionIds(n, user);
      assert.ok(ids.includes(keep.hello.connection_id), `node ${n.index} dropped the living node's connection: ${ids}`);
      return ids.length === 1;
    }, { timeoutMs: TTL + 8000, intervalMs: 100, what: `node ${n.index} to forget the dead node's connections` });
    vanishedMs ??= Date.now() - killedAt;
  }
  assert.ok(vanishedMs <= TTL + 8000);
  // disconnect counts only the living; the living connection is closed
  const res = await api(n2, 'POST', `/api/v1/users/${user}/disconnect`);
  assert.equal(res.status, 200, res.text);
  assert.equal(res.json.disconnected, 1, JSON.stringify(res.json));
  assert.equal((await keep.waitClose(10000)).code, 4002);
  figures(t, { suite: 'cluster-api', test: 'presence-expiry', node_ttl_ms: TTL, vanished_after_ms: vanishedMs });
});
