// cluster-script.test.mjs -- the shard's script and its keys: a shard that
// forgot the script (SCRIPT FLUSH) still takes every publish (sent again
// whole after NOSCRIPT), and /readyz reports each shard's durability as read
// with CONFIG GET at connect.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import test from 'node:test';

import { api, pollUntil, publish, useServer } from '../e2e/lib/harness.mjs';
import { connectUser, history, startCluster, userOnShard, waitEvents } from './lib/cluster.mjs';
import { startRedis } from './lib/redis.mjs';

test('after SCRIPT FLUSH every node still publishes (NOSCRIPT: the script is sent again), in order, once', { timeout: 60000 }, async (t) => {
  const cl = await startCluster(t, { nodes: 2, shards: 1 });
  const user = userOnShard(0, 1, 'flush');
  const witness = await connectUser(cl.nodes[1], user);
  const seqs = [];
  for (let round = 0; round < 3; round++) {
    assert.equal(await cl.redis[0].cli('SCRIPT', 'FLUSH'), 'OK');
    for (const n of cl.nodes) {
      const r = await publish(n, { user_id: user, type: 'flush', round });
      assert.equal(typeof r.seq, 'number', JSON.stringify(r));
      seqs.push(r.seq);
    }
  }
  assert.deepEqual(seqs, [1, 2, 3, 4, 5, 6]);
  await waitEvents(witness, 6, { what: 'the witness' });
  assert.deepEqual(witness.events().map((e) => e.seq), [1, 2, 3, 4, 5, 6]);
  assert.deepEqual((await history(cl.nodes[0], user)).events.map((e) => e.seq), [1, 2, 3, 4, 5, 6]);
});

test('/readyz names each shard with its durability: appendfsync always is durable, the default is not', { timeout: 60000 }, async (t) => {
  for (const durable of [false, true]) {
    const cl = await startCluster(t, { nodes: 1, shards: 1, durable });
    const res = await api(cl.nodes[0], 'GET', '/readyz');
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.status, 'ready');
    assert.equal(res.json.broker, 'redis');
    assert.equal(res.json.shards.length, 1);
    assert.equal(res.json.shards[0].durable, durable, res.text);
    assert.match(res.json.shards[0].durability, durable ? /appendonly=yes appendfsync=always/ : /appendonly=no/);
  }
});

test('a password in the Redis URL authenticates, and leaves /proc/PID/cmdline; a wrong one keeps the node not ready, saying why', { timeout: 60000 }, async (t) => {
  const redis = await startRedis(t);
  const pw = `pw${crypto.randomBytes(8).toString('hex')}`;
  assert.equal(await redis.cli('CONFIG', 'SET', 'requirepass', pw), 'OK');
  const common = ['--jwt-secret', 'x'.repeat(32), '--api-key', 'k'.repeat(24)];
  const good = await useServer(t, [...common, '--redis', `redis://:${pw}@127.0.0.1:${redis.port}`]);
  await pollUntil(async () => (await api(good, 'GET', '/readyz')).status === 200, { timeoutMs: 15000, what: 'node with the right password ready' });
  const cmdline = fs.readFileSync(`/proc/${good.proc.pid}/cmdline`, 'utf8');
  assert.ok(!cmdline.includes(pw), 'the password is not in /proc/PID/cmdline');
  const r = await publish(good, { user_id: 'pwuser', type: 'custom' }, { key: 'k'.repeat(24) });
  assert.equal(r.seq, 1, JSON.stringify(r));

  const plain = `redis://127.0.0.1:${redis.port}`;
  const bad = await useServer(t, [...common, '--redis', plain], {}, { checkExit: false });
  assert.ok(fs.readFileSync(`/proc/${bad.proc.pid}/cmdline`, 'utf8').includes(plain), 'a URL without password stays visible');
  const res = await pollUntil(async () => {
    const x = await api(bad, 'GET', '/readyz');
    return x.status === 503 && /auth|NOAUTH|password/i.test(x.text) ? x : null;
  }, { timeoutMs: 15000, what: 'node without the password: 503 naming authentication' });
  assert.equal(res.json.error, 'unavailable');
});

test('the channels connection killed by Redis (CLIENT KILL TYPE pubsub) while events flow: the node subscribes again and fills the gap from the stream; nothing lost or doubled', { timeout: 90000 }, async (t) => {
  const cl = await startCluster(t, { nodes: 2, shards: 1 });
  const [a, b] = cl.nodes;
  const users = [userOnShard(0, 1, 'gap'), userOnShard(0, 1, 'gap')];
  const witnesses = await Promise.all(users.map((u) => connectUser(b, u)));
  const N = 300;
  let kills = 0;
  // node B listens to its two users' channels (node A serves nobody: no channel)
  const listening = async () => String(await cl.redis[0].cli('CLIENT', 'LIST', 'TYPE', 'pubsub')).split('\n').some((l) => / sub=2 /.test(l));
  for (let i = 0; i < N; i++) {
    for (const u of users) await publish(a, { user_id: u, type: 'gap', i });
    if (i % 60 === 30) {
      // node B listens again before the next cut; events published meanwhile
      // reach it only through the stream (the gap)
      await pollUntil(listening, { timeoutMs: 15000, what: 'node B subscribed again to both channels' });
      kills += Number(await cl.redis[0].cli('CLIENT', 'KILL', 'TYPE', 'pubsub'));
    }
  }
  assert.ok(kills >= 4, `pubsub connections killed: ${kills}`);
  for (const [k, w] of witnesses.entries()) {
    await waitEvents(w, N, { what: `witness ${k}`, timeoutMs: 30000 });
    assert.deepEqual(w.events().map((e) => e.seq), Array.from({ length: N }, (_, i) => i + 1), `witness ${k}: 1..${N} once each, in order`);
    assert.deepEqual(w.events().map((e) => e.i), Array.from({ length: N }, (_, i) => i));
  }
  const m = await api(b, 'GET', '/metrics');
  const reconnects = Number(/agentwire_redis_reconnects_total\{shard="0"\} (\d+)/.exec(m.text)?.[1]);
  assert.ok(reconnects >= 1, `node B connected again: ${reconnects}`);
  const filled = Number(/agentwire_stream_gaps_filled_total (\d+)/.exec(m.text)?.[1]);
  assert.ok(filled >= 1, `gaps filled from the stream: ${filled}`);
});
