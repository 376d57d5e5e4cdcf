// Cluster delivery: three nodes on two redis shards. Every event published
// through any node reaches every session of its user on every node, with the
// same seqs in the same order and the same bytes, and nobody else's session.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { api, publish, startServer } from '../e2e/lib/harness.mjs';
import {
  assertSeqs,
  connectUser,
  figures,
  history,
  publishBatch,
  range,
  shardOf,
  startCluster,
  waitEvents,
  waitNodeReady,
} from './lib/cluster.mjs';

const USERS = 20;
const EVENTS_PER_USER = 120; // 2400 events in all
const BATCH_USERS = 10; // each batch: 4 events of each of 10 users (40 events)
const PUBLISHERS = 3; // concurrent publisher loops, each through the next node in turn

test('20 users, sessions spread over 3 nodes, mixed batches through every node: each session gets exactly 1..N of its user', { timeout: 120000 }, async (t) => {
  const cl = await startCluster(t, { nodes: 3, shards: 2, args: ['--max-connections-per-user', '10'] });
  const [n0, n1, n2] = cl.nodes;
  const nodes = cl.nodes;
  const users = range(0, USERS - 1).map((i) => `dl_${i}_${randomBytes(3).toString('hex')}`);
  const quiet = [`dl_quiet_a_${randomBytes(3).toString('hex')}`, `dl_quiet_b_${randomBytes(3).toString('hex')}`];
  const shardsUsed = new Set(users.map((u) => shardOf(u, 2)));
  assert.equal(shardsUsed.size, 2, 'the users cover both shards');

  // user i: sessions on nodes i%3 and (i+1)%3; every fourth user also on the third node
  const sessions = [];
  for (const [i, user] of users.entries()) {
    const on = [i % 3, (i + 1) % 3];
    if (i % 4 === 0) on.push((i + 2) % 3);
    for (const k of on) sessions.push({ user, node: k, c: await connectUser(nodes[k], user) });
  }
  const quietSessions = [];
  for (const user of quiet) for (const node of nodes) quietSessions.push({ user, c: await connectUser(node, user) });
  for (const s of sessions) assert.equal(s.c.hello.seq, 0, `${s.user} starts at seq 0`);
  const epochs = new Map();
  for (const s of sessions) {
    if (!epochs.has(s.user)) epochs.set(s.user, s.c.hello.epoch);
    assert.equal(s.c.hello.epoch, epochs.get(s.user), `${s.user}: one epoch on every node`);
  }

  // Publishers: PUBLISHERS loops take batches from one queue; a batch goes to the next node in turn.
  const batches = [];
  const sent = Object.fromEntries(users.map((u) => [u, 0]));
  const rounds = EVENTS_PER_USER / 4;
  for (let r = 0; r < rounds; r++) {
    for (let g = 0; g < USERS / BATCH_USERS; g++) {
      const batch = [];
      for (let rep = 0; rep < 4; rep++) {
        for (const u of users.slice(g * BATCH_USERS, (g + 1) * BATCH_USERS)) {
          const n = ++sent[u];
          batch.push({ user_id: u, type: 'dl_note', n, body: `${u}#${n}` });
        }
      }
      batches.push(batch);
    }
  }
  const bySeq = Object.fromEntries(users.map((u) => [u, new Map()])); // seq -> the event's n
  let next = 0;
  let posted = 0;
  const t0 = Date.now();
  await Promise.all(range(1, PUBLISHERS).map(async () => {
    while (next < batches.length) {
      const k = next++;
      const batch = batches[k];
      const receipts = await publishBatch(nodes[k % 3], batch);
      posted++;
      const lastSeqOf = {};
      receipts.forEach((r, i) => {
        const u = batch[i].user_id;
        assert.ok(!bySeq[u].has(r.seq), `${u}: seq ${r.seq} handed out twice`);
        bySeq[u].set(r.seq, batch[i].n);
        assert.equal(r.epoch, epochs.get(u), `${u}: receipt epoch`);
        if (lastSeqOf[u] !== undefined) assert.ok(r.seq > lastSeqOf[u], `${u}: the batch's events keep array order`);
        lastSeqOf[u] = r.seq;
      });
    }
  }));
  const publishMs = Date.now() - t0;
  assert.equal(posted, batches.length);
  for (const u of users) {
    assert.deepEqual([...bySeq[u].keys()].sort((a, b) => a - b), range(1, EVENTS_PER_USER), `${u}: the receipts are exactly seq 1..${EVENTS_PER_USER}`);
  }

  // Every session: exactly 1..N of its user, payloads as the receipts say.
  await Promise.all(sessions.map((s) => waitEvents(s.c, EVENTS_PER_USER, { timeoutMs: 60000, what: `${s.user} on node ${s.node}` })));
  await Promise.all([...sessions, ...quietSessions].map((s) => s.c.sync(15000)));
  const firstOf = new Map(); // user -> events of its first session
  let deliveries = 0;
  for (const s of sessions) {
    const evs = s.c.events();
    assertSeqs(evs, 1, EVENTS_PER_USER, `${s.user} on node ${s.node}`);
    for (const e of evs) {
      assert.equal(e.user_id, s.user, `${s.user} on node ${s.node} received a foreign event ${JSON.stringify(e).slice(0, 200)}`);
      assert.equal(e.type, 'dl_note');
      assert.equal(e.epoch, epochs.get(s.user));
      assert.equal(e.n, bySeq[s.user].get(e.seq), `${s.user} seq ${e.seq}: payload of the event that got this seq`);
      assert.equal(e.body, `${s.user}#${e.n}`);
    }
    // concurrent batches interleave, so n need not rise with seq; every node must deliver the same stream
    if (!firstOf.has(s.user)) firstOf.set(s.user, evs);
    else assert.deepEqual(evs, firstOf.get(s.user), `${s.user}: node ${s.node} got other bytes (event_id, timestamp, ...) than another node`);
    deliveries += evs.length;
  }
  for (const s of quietSessions) {
    assert.deepEqual(s.c.events(), [], `${s.user} published nothing and must receive nothing`);
    assert.ok(s.c.isOpen);
  }

  // history reads the same stream on every node
  for (const u of users.slice(0, 3)) {
    const hs = await Promise.all([n0, n1, n2].map((n) => history(n, u, 0)));
    for (const h of hs) {
      assert.equal(h.epoch, epochs.get(u));
      assert.equal(h.seq, EVENTS_PER_USER);
      assert.deepEqual(h.events, firstOf.get(u), `history of ${u} is what the sessions received`);
    }
  }
  figures(t, {
    suite: 'cluster-delivery', test: 'spread', nodes: 3, shards: 2, users: USERS, sessions: sessions.length,
    published: USERS * EVENTS_PER_USER, acknowledged: USERS * EVENTS_PER_USER, delivered: deliveries,
    expected_deliveries: sessions.length * EVENTS_PER_USER, lost: 0, publish_ms: publishMs,
  });
});

test('one user published to through all three nodes at once: seqs are unique and gapless, every session sees the receipts\' order', { timeout: 90000 }, async (t) => {
  const cl = await startCluster(t, { nodes: 3, shards: 2 });
  const nodes = cl.nodes;
  const user = `race_${randomBytes(4).toString('hex')}`;
  const other = `race_other_${randomBytes(4).toString('hex')}`;
  const conns = [];
  for (const node of nodes) conns.push(await connectUser(node, user));
  const bystanders = [];
  for (const node of nodes) bystanders.push(await connectUser(node, other));
  const PER_NODE = 100;
  const receipts = new Map(); // seq -> {from, k, event_id}
  const perNode = [[], [], []];
  await Promise.all(nodes.map(async (node, from) => {
    for (let k = 1; k <= PER_NODE; k++) {
      const r = await publish(node, { user_id: user, type: 'race', from, k });
      assert.ok(!receipts.has(r.seq), `seq ${r.seq} given to two publishes (node ${from} #${k} and ${JSON.stringify(receipts.get(r.seq))})`);
      receipts.set(r.seq, { from, k, event_id: r.event_id });
      perNode[from].push(r.seq);
    }
  }));
  const total = 3 * PER_NODE;
  assert.deepEqual([...receipts.keys()].sort((a, b) => a - b), range(1, total), 'the receipts are exactly 1..300');
  for (const [from, seqs] of perNode.entries()) {
    for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1], `node ${from}: a later publish got a later seq`);
  }
  // 200 only after Redis answered: the history has every event already
  const h = await history(nodes[1], user, 0);
  assert.equal(h.seq, total);
  assertSeqs(h.events, 1, total, 'history after the last 200');

  await Promise.all(conns.map((c, i) => waitEvents(c, total, { timeoutMs: 30000, what: `session on node ${i}` })));
  await Promise.all([...conns, ...bystanders].map((c) => c.sync()));
  for (const [i, c] of conns.entries()) {
    const evs = c.events();
    assertSeqs(evs, 1, total, `session on node ${i}`);
    for (const e of evs) {
      const want = receipts.get(e.seq);
      assert.equal(e.from, want.from, `node ${i} seq ${e.seq}: from`);
      assert.equal(e.k, want.k, `node ${i} seq ${e.seq}: k`);
      assert.equal(e.event_id, want.event_id, `node ${i} seq ${e.seq}: event_id of the receipt`);
      assert.equal(e.user_id, user);
    }
    if (i > 0) assert.deepEqual(evs, conns[0].events(), `node ${i} and node 0 received the same events`);
  }
  for (const b of bystanders) assert.deepEqual(b.events(), [], 'the other user received nothing');
  assert.deepEqual((await api(nodes[2], 'GET', `/api/v1/history?user_id=${other}`)).json.events ?? [], [], 'the other user has no history');
  figures(t, { suite: 'cluster-delivery', test: 'same-user-race', published: total, acknowledged: total, delivered: 3 * total, lost: 0 });
});

test('AGENTWIRE_REDIS turns cluster mode on like --redis; a cluster node runs one event loop whatever --threads says', { timeout: 60000 }, async (t) => {
  const cl = await startCluster(t, { nodes: 1, shards: 2, args: ['--threads', '4'] });
  const a = cl.nodes[0];
  const listening = a.logs.find((l) => l.msg === 'listening');
  assert.equal(listening.threads, 1, `--threads 4 in cluster mode: ${JSON.stringify(listening)}`);
  // a node configured through the environment only
  const b = await startServer(['--drain-timeout-ms', '2000', '--jwt-secret', cl.secret, '--api-key', cl.apiKey], { AGENTWIRE_REDIS: cl.urls });
  t.after(() => b.stop({ check: true }));
  b.apiKey = cl.apiKey;
  b.token = cl.token;
  await waitNodeReady(b);
  assert.ok(!b.args.includes('--redis'), 'no --redis flag on node b');
  const users = [`env_${randomBytes(4).toString('hex')}`, `env_${randomBytes(4).toString('hex')}`];
  for (const user of users) {
    const onB = await connectUser(b, user);
    const onA = await connectUser(a, user);
    const r1 = await publish(a, { user_id: user, type: 'via_a' });
    const r2 = await publish(b, { user_id: user, type: 'via_b' });
    assert.deepEqual([r1.seq, r2.seq], [1, 2], 'one seq counter for both nodes');
    for (const c of [onA, onB]) {
      await waitEvents(c, 2, { what: user });
      assert.deepEqual(c.events().map((e) => [e.seq, e.type]), [[1, 'via_a'], [2, 'via_b']]);
    }
    assert.deepEqual((await history(b, user, 0)).events, onA.events());
  }
});
