// Cluster resume: a client that read up to seq k on one node reconnects to
// another with ?since=k&epoch=E and gets exactly k+1.. (no gap, no duplicate),
// while publishes through every node race the reconnects; GET /api/v1/history
// reads the same shared stream on every node.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import { test } from 'node:test';
import { api, frameReader, publish, upgradeRequest, withTimeout } from '../e2e/lib/harness.mjs';
import {
  assertSeqs,
  connectUser,
  figures,
  history,
  publishBatch,
  range,
  shardOf,
  startCluster,
  userOnShard,
  waitEvents,
} from './lib/cluster.mjs';

const FOREIGN_EPOCH = 'ffffffffffffffff';

/**
 * Publishes batches of `batch` events {type:'race', marker:'<tag>m<k>'} to user,
 * each batch through the next node in turn, until stop() or max events.
 * Records every receipt: receipts.get(seq) = {marker, event_id, epoch}.
 * nextBatch() resolves after the next accepted batch.
 */
function startPublisher(t, nodes, user, { batch = 5, max = 5000, pad = '', tag = '' } = {}) {
  let published = 0;
  let stopped = false;
  let error = null;
  let waiters = [];
  const receipts = new Map();
  let turn = 0;
  const loop = (async () => {
    try {
      while (!stopped && published < max) {
        const base = published;
        const events = range(base + 1, base + batch).map((k) => ({ user_id: user, type: 'race', marker: `${tag}m${k}`, pad }));
        const res = await publishBatch(nodes[turn++ % nodes.length], events);
        res.forEach((r, i) => {
          assert.ok(!receipts.has(r.seq), `${user}: seq ${r.seq} handed out twice`);
          receipts.set(r.seq, { marker: events[i].marker, event_id: r.event_id, epoch: r.epoch });
        });
        published += batch;
        const w = waiters;
        waiters = [];
        for (const x of w) x.resolve();
      }
    } catch (err) {
      error = err;
    }
    for (const x of waiters) x.reject(error || new Error('the publisher stopped'));
    waiters = [];
  })();
  t.after(async () => { stopped = true; await loop; });
  return {
    receipts,
    get published() { return published; },
    nextBatch: () => withTimeout(new Promise((resolve, reject) => {
      if (error || stopped) reject(error || new Error('the publisher stopped'));
      else waiters.push({ resolve, reject });
    }), 20000, `the publisher of ${user} to post a batch`),
    async stop() {
      stopped = true;
      await loop;
      if (error) throw error;
      return published;
    },
  };
}

test('clients hop to another node on every reconnect while every node publishes: the union is 1..N once each', { timeout: 150000 }, async (t) => {
  const cl = await startCluster(t, { nodes: 3, shards: 2, args: ['--max-connections-per-user', '20'] });
  const nodes = cl.nodes;
  const USERS = 4;
  const CYCLES = 9; // three times round the three nodes
  const users = range(0, USERS - 1).map((i) => userOnShard(i % 2, 2, `hop${i}`));
  const pad = 'p'.repeat(300);

  const runs = await Promise.all(users.map(async (user, ui) => {
    const witness = await connectUser(nodes[ui % 3], user); // stays on one node all along
    let at = (ui + 1) % 3;
    let conn = await connectUser(nodes[at], user);
    const epoch = conn.hello.epoch;
    assert.equal(witness.hello.epoch, epoch, `${user}: one epoch on every node`);
    const pub = startPublisher(t, nodes, user, { batch: 5, pad, tag: `${ui}` });
    const segments = [];
    const hops = [];
    let last = 0;
    let missedTotal = 0;
    const processed = (c) => {
      // connection_established, then only events (and the pong of a final sync)
      const data = c.messages.map((m) => m.data).filter((m) => m.type !== 'pong');
      assert.equal(data[0].type, 'connection_established');
      assert.deepEqual(data.slice(1).filter((m) => m.type !== 'race'), [], `${user}: only events after connection_established`);
      return data.slice(1);
    };
    for (let cycle = 0; cycle < CYCLES; cycle++) {
      if (cycle % 3 !== 2) { // let events flow; every third cycle drop at once (perhaps mid-replay)
        await pub.nextBatch();
        await pub.nextBatch();
      }
      const seen = processed(conn); // taken before the close: later arrivals are not processed
      if (cycle % 2) conn.terminate();
      else conn.ws.close(1000);
      segments.push(seen);
      if (seen.length) last = seen.at(-1).seq;
      if (cycle % 3 === 0) for (let i = 0; i < 3; i++) await pub.nextBatch(); // missed while offline
      at = (at + 1) % 3;
      conn = await connectUser(nodes[at], user, { since: last, epoch });
      hops.push(at);
      assert.equal(conn.hello.epoch, epoch, `${user} cycle ${cycle}: epoch on node ${at}`);
      assert.equal(conn.hello.resumed, true, `${user} cycle ${cycle}, since ${last} on node ${at}: ${JSON.stringify(conn.hello)}`);
      assert.equal(conn.hello.missed, conn.hello.seq - last, `${user} cycle ${cycle}: missed = seq - since: ${JSON.stringify(conn.hello)}`);
      missedTotal += conn.hello.missed;
    }
    const N = await pub.stop();
    await waitEvents(conn, N - last, { timeoutMs: 30000, what: `${user}'s last connection` });
    await waitEvents(witness, N, { timeoutMs: 30000, what: `${user}'s witness` });
    await conn.sync();
    await witness.sync();
    segments.push(processed(conn));
    return { user, epoch, pub, N, segments, witness, missedTotal, hops };
  }));

  let deliveries = 0;
  let replayed = 0;
  for (const { user, epoch, pub, N, segments, witness, missedTotal, hops } of runs) {
    const union = segments.flat();
    assertSeqs(union, 1, N, `${user}: the union of all its connections`);
    for (const e of union) {
      const r = pub.receipts.get(e.seq);
      assert.equal(e.epoch, epoch);
      assert.equal(e.marker, r.marker, `${user}: (epoch, seq ${e.seq}) names ${r.marker}, got ${e.marker}`);
      assert.equal(e.event_id, r.event_id, `${user} seq ${e.seq}: event_id`);
    }
    assertSeqs(witness.events(), 1, N, `${user}: the witness`);
    assert.deepEqual(union, witness.events(), `${user}: the hopping client and the witness saw the same bytes`);
    assert.ok(missedTotal > 0, `${user}: no reconnect missed anything (replay not exercised)`);
    assert.deepEqual(new Set(hops), new Set([0, 1, 2]), `${user}: hopped over all three nodes`);
    deliveries += union.length;
    replayed += missedTotal;
  }
  figures(t, {
    suite: 'cluster-resume', test: 'hop', users: USERS, reconnects: USERS * CYCLES,
    published: runs.reduce((a, r) => a + r.N, 0), delivered: deliveries, replayed, lost: 0, duplicates: 0,
  });
});

test('a backlog of 400 events read on another node while live publishes race the replay', { timeout: 60000 }, async (t) => {
  const cl = await startCluster(t, { nodes: 3, shards: 2 });
  const [n0, n1, n2] = cl.nodes;
  const user = `backlog_${randomBytes(4).toString('hex')}`;
  const first = await connectUser(n0, user);
  const epoch = first.hello.epoch;
  const pre = await publishBatch(n1, range(1, 3).map((k) => ({ user_id: user, type: 'race', marker: `pre${k}` })));
  await waitEvents(first, 3, { what: 'the first connection' });
  const k = first.events().at(-1).seq;
  assert.equal(k, 3);
  await first.close();
  const markers = new Map(pre.map((r, i) => [r.seq, `pre${i + 1}`]));
  const pad = 'b'.repeat(2000);
  for (let b = 0; b < 4; b++) {
    const evs = range(1, 100).map((i) => ({ user_id: user, type: 'race', marker: `b${b * 100 + i}`, pad }));
    const res = await publishBatch(n1, evs);
    res.forEach((r, i) => markers.set(r.seq, evs[i].marker));
  }
  const backlog = 403;
  const live = startPublisher(t, [n0, n1], user, { batch: 1, tag: 'live' });
  await live.nextBatch();
  const c = await connectUser(n2, user, { since: k, epoch });
  assert.equal(c.hello.resumed, true, JSON.stringify(c.hello));
  assert.equal(c.hello.epoch, epoch);
  assert.ok(c.hello.seq >= backlog + 1, JSON.stringify(c.hello));
  assert.equal(c.hello.missed, c.hello.seq - k);
  for (let i = 0; i < 10; i++) await live.nextBatch();
  const N = backlog + await live.stop();
  for (const [seq, r] of live.receipts) markers.set(seq, r.marker);
  await waitEvents(c, N - k, { timeoutMs: 30000, what: 'the resumed connection' });
  await c.sync();
  const evs = c.events();
  assertSeqs(evs, k + 1, N, 'the stream across the seam');
  for (const e of evs) assert.equal(e.marker, markers.get(e.seq), `seq ${e.seq}`);
  figures(t, { suite: 'cluster-resume', test: 'backlog', published: N, replayed: c.hello.missed, delivered: evs.length, lost: 0 });
});

test('GET /api/v1/history reads one shared stream on every node, byte for byte as delivered', { timeout: 60000 }, async (t) => {
  const cl = await startCluster(t, { nodes: 3, shards: 2 });
  const nodes = cl.nodes;
  const users = [userOnShard(0, 2, 'hist'), userOnShard(1, 2, 'hist')];
  for (const user of users) {
    const witness = await connectUser(nodes[2], user);
    const receipts = [];
    for (let i = 1; i <= 30; i++) receipts.push(await publish(nodes[i % 3], { user_id: user, type: 'hist', i }));
    assert.deepEqual(receipts.map((r) => r.seq), range(1, 30));
    await waitEvents(witness, 30, { what: `${user}'s witness` });
    const delivered = witness.events();
    const all = await Promise.all(nodes.map((n) => history(n, user, 0)));
    for (const [i, h] of all.entries()) {
      assert.equal(h.user_id, user);
      assert.equal(h.epoch, receipts[0].epoch, `node ${i}: epoch`);
      assert.equal(h.seq, 30, `node ${i}: seq`);
      assertSeqs(h.events, 1, 30, `history on node ${i}`);
      assert.deepEqual(h.events, delivered, `node ${i}: history is what was delivered`);
      assert.deepEqual(h.events.map((e) => e.event_id), receipts.map((r) => r.event_id));
    }
    for (const [i, n] of nodes.entries()) {
      const h = await history(n, user, 10 + i);
      assertSeqs(h.events, 11 + i, 30, `history since ${10 + i} on node ${i}`);
      assert.deepEqual(h.events, delivered.slice(10 + i));
      const none = await history(n, user, 30);
      assert.deepEqual(none.events, [], `since the latest seq on node ${i}`);
      assert.equal(none.seq, 30);
    }
    // a publish through node 0 is in the history of node 2 as soon as it is acknowledged
    const r = await publish(nodes[0], { user_id: user, type: 'hist', i: 31 });
    const h2 = await history(nodes[2], user, 30);
    assert.deepEqual(h2.events.map((e) => e.seq), [r.seq]);
    assert.equal(h2.events[0].event_id, r.event_id);
  }
  assert.notEqual(shardOf(users[0], 2), shardOf(users[1], 2));
});

test('GET /api/v1/history on every node holds the very bytes that sessions received, escapes included (docs/protocol.md)', { timeout: 60000 }, async (t) => {
  const cl = await startCluster(t, { nodes: 3, shards: 2 });
  for (const user of [`bytes_${randomBytes(4).toString('hex')}`, `mail@example.com/ü "q" ✓+${randomBytes(3).toString('hex')}`]) {
    const witness = await connectUser(cl.nodes[1], user);
    const texts = ['plain', 'héllo ✓ 𝄞 "q" \\ \n\t </script> \u2028', '\u0001\u001f', 'a/b', '\ud83d\ude00 emoji'];
    const payloads = [
      ...texts.map((text) => ({ text })),
      { nested: { a: [1, { b: null }], t: true, f: 1.5e-7, big: 9007199254740991, neg: -0.25 } },
      { list: [], obj: {}, s: '' },
    ];
    for (const [i, p] of payloads.entries()) await publish(cl.nodes[i % 3], { user_id: user, type: 'bytes', i, ...p });
    await waitEvents(witness, payloads.length, { what: 'the witness' });
    const raw = witness.raw.map((r) => r.text).filter((x) => JSON.parse(x).type === 'bytes');
    assert.equal(raw.length, payloads.length);
    for (const [i, n] of cl.nodes.entries()) {
      const res = await api(n, 'GET', `/api/v1/history?user_id=${encodeURIComponent(user)}`);
      assert.equal(res.status, 200, res.text);
      assert.deepEqual(res.json.events, raw.map((x) => JSON.parse(x)), `node ${i}: the same events`);
      assert.ok(res.text.includes(`[${raw.join(',')}]`),
        `node ${i}: history holds the delivered bytes\n delivered: [${raw.join(',')}]\n history:   ${res.text}`);
    }
  }
});

test('GET /api/v1/history of a user never seen: epoch null, seq 0, no events, on every node (docs/protocol.md)', { timeout: 60000 }, async (t) => {
  const cl = await startCluster(t, { nodes: 3, shards: 2 });
  for (const shard of [0, 1]) {
    const ghost = userOnShard(shard, 2, 'ghost');
    for (const [i, n] of cl.nodes.entries()) {
      const res = await api(n, 'GET', `/api/v1/history?user_id=${ghost}`);
      assert.equal(res.status, 200, res.text);
      assert.equal(res.json.epoch, null, `node ${i}, shard ${shard}: an unknown user has no epoch: ${res.text}`);
      assert.equal(res.json.seq, 0);
      assert.deepEqual(res.json.events, []);
    }
  }
});

test('resume on another node: a foreign epoch or a since ahead gets resumed false and nothing; since = latest gets resumed true, missed 0', { timeout: 60000 }, async (t) => {
  const cl = await startCluster(t, { nodes: 3, shards: 2 });
  const [n0, n1, n2] = cl.nodes;
  const user = `ep_${randomBytes(4).toString('hex')}`;
  const rs = await publishBatch(n0, range(1, 5).map((i) => ({ user_id: user, type: 'note', i })));
  const epoch = rs[0].epoch;

  const foreign = await connectUser(n1, user, { since: 2, epoch: FOREIGN_EPOCH });
  assert.equal(foreign.hello.resumed, false, JSON.stringify(foreign.hello));
  assert.equal(foreign.hello.missed, 0);
  assert.equal(foreign.hello.seq, 5);
  assert.equal(foreign.hello.epoch, epoch);
  const ahead = await connectUser(n2, user, { since: 9, epoch });
  assert.equal(ahead.hello.resumed, false, JSON.stringify(ahead.hello));
  assert.equal(ahead.hello.missed, 0);
  const latest = await connectUser(n2, user, { since: 5, epoch });
  assert.equal(latest.hello.resumed, true, JSON.stringify(latest.hello));
  assert.equal(latest.hello.missed, 0);
  const zero = await connectUser(n1, user, { since: 0, epoch });
  assert.equal(zero.hello.resumed, true, JSON.stringify(zero.hello));
  assert.equal(zero.hello.missed, 5);
  await waitEvents(zero, 5, { what: 'since 0' });
  for (const c of [foreign, ahead, latest]) {
    await c.sync();
    assert.deepEqual(c.events(), [], 'nothing replayed');
  }
  // live events flow to all of them
  const r = await publish(n0, { user_id: user, type: 'note', i: 6 });
  for (const c of [foreign, ahead, latest, zero]) {
    const e = await c.nextMessage((m) => m.type === 'note' && m.seq === r.seq);
    assert.equal(e.event_id, r.event_id);
  }
  await zero.sync();
  assertSeqs(zero.events(), 1, 6, 'since 0 then live');
});

test('a client that read the newest events on one node resumes on a node still catching up with them (its channel backlog unread): resumed true, missed 0', { timeout: 90000 }, async (t) => {
  const cl = await startCluster(t, { nodes: 2, shards: 1 });
  const [a, b] = cl.nodes;
  const user = `lag_${randomBytes(4).toString('hex')}`;
  const anchor = await connectUser(b, user); // node B serves the user already: its copy is live
  const reader = await connectUser(a, user);
  let total = 0;
  for (let round = 0; round < 3; round++) {
    let sock;
    b.proc.kill('SIGSTOP'); // B's channel messages wait in its socket, unread
    try {
      const n = 300;
      const events = Array.from({ length: n }, (_, i) => ({ user_id: user, type: 'lag', round, i, pad: 'x'.repeat(1024) }));
      const res = await api(a, 'POST', '/api/v1/publish/batch', events);
      assert.equal(res.status, 200, res.text);
      total += n;
      await waitEvents(reader, total, { what: `reader on A, round ${round}` });
      const last = reader.events().at(-1);
      assert.equal(last.seq, total);
      // the upgrade to B, resuming from what A delivered, is in B's socket
      // before B reads its channel backlog
      sock = net.connect(b.port, '127.0.0.1');
      b.sockets.add(sock);
      sock.on('error', () => {});
      await once(sock, 'connect');
      const q = new URLSearchParams({ since: String(last.seq), epoch: last.epoch, token: b.token(user) });
      await new Promise((resolve) => sock.write(upgradeRequest({ path: `/ws?${q}` }), resolve));
    } finally {
      b.proc.kill('SIGCONT');
    }
    let head = Buffer.alloc(0);
    const rest = await withTimeout(new Promise((resolve, reject) => {
      const onData = (c) => {
        head = Buffer.concat([head, c]);
        const k = head.indexOf('\r\n\r\n');
        if (k < 0) return;
        sock.off('data', onData);
        resolve(head.subarray(k + 4));
      };
      sock.on('data', onData);
      sock.on('close', () => reject(new Error('closed before the response')));
    }), 15000, 'the upgrade response from B');
    assert.match(head.toString('latin1'), /^HTTP\/1\.1 101 /);
    const frames = frameReader(sock, rest);
    const hello = JSON.parse((await frames.next(15000)).payload.toString());
    assert.equal(hello.type, 'connection_established');
    assert.equal(hello.resumed, true, `round ${round}: ${JSON.stringify(hello)}`);
    assert.equal(hello.missed, 0, JSON.stringify(hello));
    assert.equal(hello.seq, total);
    sock.destroy();
  }
  await waitEvents(anchor, total, { what: 'the anchor on node B' });
  assert.deepEqual(anchor.events().map((e) => e.seq), Array.from({ length: total }, (_, i) => i + 1));
});
