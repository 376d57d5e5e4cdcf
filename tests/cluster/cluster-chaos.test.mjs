// Cluster chaos (tests/e2e/chaos.test.mjs on three nodes): many JS clients
// (several per user) receive a continuous stream published through all nodes,
// and every reconnect goes to a random live node. A driver cuts random
// connections and makes some clients stop reading until their node cuts them
// with 4003; a fifth of the way through, one node is killed with SIGKILL and
// its clients move to the others. At the end every client holds exactly its
// user's seq range, each event once and in order, with no reset.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import { AgentwireClient } from '../../clients/js/agentwire.js';
import { api, metricValue, pollUntil } from '../e2e/lib/harness.mjs';
import { figures, publishBatch, startCluster } from './lib/cluster.mjs';

const USERS = Number(process.env.CLUSTER_CHAOS_USERS ?? 12);
const PER_USER = Number(process.env.CLUSTER_CHAOS_CLIENTS_PER_USER ?? 3);
const EVENTS_PER_USER = Number(process.env.CLUSTER_CHAOS_EVENTS_PER_USER ?? 400);
const PAD = 2048; // random (incompressible) filler per event, so a stalled reader fills its buffers
const BATCH = 50;
const BATCH_PACE_MS = 15; // the publisher's pace, so that the driver acts throughout the stream
const NODE_TTL_MS = 2000;
const KILL_NODE = process.env.CLUSTER_CHAOS_KILL !== '0';

const rand = (n) => Math.floor(Math.random() * n);

async function metrics(srv) {
  const r = await api(srv, 'GET', '/metrics', undefined, { key: null });
  return r.text ?? '';
}

test('cluster chaos: random cuts, stalled readers and a killed node lose nothing and duplicate nothing', { timeout: 200000 }, async (t) => {
  const cl = await startCluster(t, {
    nodes: 3,
    shards: 2,
    args: [
      '--queue-limit-bytes', '65536',
      '--send-buffer-bytes', '65536',
      '--history-size', String(EVENTS_PER_USER + 100),
      '--max-connections-per-user', String(PER_USER * 4),
      '--node-ttl-ms', String(NODE_TTL_MS),
    ],
  });
  const live = [...cl.nodes]; // nodes that new connections may go to
  const victim = cl.nodes[2];
  // Every new socket goes to a random live node: the client's URL names node 0,
  // this constructor rewrites its port.
  class HoppingWebSocket extends WebSocket {
    constructor(url, protocols, opts) {
      const u = new URL(url);
      u.port = String(live[rand(live.length)].port);
      super(u.toString(), protocols, opts);
    }
  }
  const users = Array.from({ length: USERS }, (_, i) => `cchaos_u${i}_${randomBytes(3).toString('hex')}`);
  const clients = [];
  for (const user of users) {
    for (let c = 0; c < PER_USER; c++) {
      const client = new AgentwireClient({
        url: `ws://127.0.0.1:${cl.nodes[0].port}/ws`,
        getToken: () => cl.token(user),
        WebSocket: HoppingWebSocket,
        webSocketOptions: { perMessageDeflate: false },
        backoffBaseMs: 20,
        backoffMaxMs: 300,
        heartbeat: false,
      });
      const seen = [];
      const nodesSeen = new Set();
      client.on('event', (ev) => seen.push(ev));
      client.on('open', () => { if (client.socket) nodesSeen.add(new URL(client.socket.url).port); });
      clients.push({ user, client, seen, nodesSeen });
    }
  }
  t.after(() => Promise.all(clients.map(({ client }) => client.close().catch(() => {}))));
  await Promise.all(clients.map(({ client }) => client.connect()));

  // Publisher: sequential batches through the live nodes in turn, events of one user in order.
  let publishing = true;
  let killed = false;
  const sent = Object.fromEntries(users.map((u) => [u, 0]));
  const total = USERS * EVENTS_PER_USER;
  let batches = 0;
  let published = 0;
  const publisher = (async () => {
    try {
      for (let k = 0; k < total; k += BATCH) {
        const batch = [];
        for (let i = k; i < Math.min(k + BATCH, total); i++) {
          const user = users[i % USERS];
          batch.push({ user_id: user, type: 'progress_update', n: ++sent[user], pad: randomBytes((PAD * 3) / 4).toString('base64') });
        }
        const node = live[batches++ % live.length];
        const res = await publishBatch(node, batch, { timeoutMs: 20000 });
        res.forEach((r, i) => assert.equal(r.seq, batch[i].n, `${batch[i].user_id}: seq of event n=${batch[i].n}`));
        published += batch.length;
        await new Promise((r) => setTimeout(r, BATCH_PACE_MS));
        if (!killed && k + BATCH >= total / 5) {
          // a fifth of the way: kill node 2; its clients reconnect to nodes 0 and 1
          killed = true;
          if (KILL_NODE) {
            live.splice(live.indexOf(victim), 1);
            await victim.kill9();
          }
        }
      }
    } finally {
      publishing = false;
    }
  })();

  // Driver: cut random connections; once node 2 is dead, stall random readers until their node cuts them.
  let cuts = 0;
  let stalls = 0;
  const stalled = new Set();
  const driver = (async () => {
    while (publishing) {
      const entry = clients[rand(clients.length)];
      const sock = entry.client.socket;
      if (sock && sock.readyState === WebSocket.OPEN && !stalled.has(entry)) {
        const port = Number(new URL(sock.url).port);
        const node = live.find((n) => n.port === port);
        // stalls only where enough of the stream is still to come for the reader to fall behind
        if (killed && published < total / 2 && node && Math.random() < 0.3 && stalled.size < 4) {
          stalled.add(entry);
          stalls++;
          const connId = entry.client.connectionId;
          sock._socket.pause();
          // resume reading once the cluster has dropped this connection
          pollUntil(async () => {
            const r = await api(cl.nodes[0], 'GET', `/api/v1/users/${entry.user}/connections`);
            return r.status === 200 && !r.json.connections.some((c) => c.connection_id === connId);
          }, { timeoutMs: 30000, intervalMs: 50, what: 'the stalled connection to be cut' })
            .catch(() => {})
            .finally(() => { sock._socket.resume(); stalled.delete(entry); });
        } else if (node) {
          cuts++;
          sock.terminate();
        }
      }
      await new Promise((r) => setTimeout(r, 25));
    }
  })();

  const t0 = Date.now();
  await publisher;
  await driver;
  const publishMs = Date.now() - t0;
  await pollUntil(() => stalled.size === 0, { timeoutMs: 60000, what: 'stalled readers to be released' });
  const releasedMs = Date.now() - t0;
  await pollUntil(() => clients.every(({ client }) => client.lastSeq === EVENTS_PER_USER), {
    timeoutMs: 90000,
    intervalMs: 100,
    what: () => `every client to reach seq ${EVENTS_PER_USER}: ${clients
      .filter(({ client }) => client.lastSeq !== EVENTS_PER_USER)
      .map(({ user, client }) => `${user}@${client.lastSeq}/${client.status}`).join(', ')}`,
  });

  let reconnects = 0;
  let duplicatesDropped = 0;
  let gaps = 0;
  const nodesUsed = new Set();
  for (const { user, client, seen, nodesSeen } of clients) {
    assert.equal(client.counters.resets, 0, `${user}: no reset (the shared history held everything)`);
    assert.equal(seen.length, EVENTS_PER_USER, `${user}: exactly ${EVENTS_PER_USER} events`);
    seen.forEach((ev, i) => {
      if (ev.seq !== i + 1) assert.fail(`${user}: event ${i} has seq ${ev.seq}`);
      if (ev.n !== i + 1) assert.fail(`${user}: seq ${ev.seq} carries n=${ev.n}`);
      if (ev.user_id !== user) assert.fail(`${user}: received an event of ${ev.user_id}`);
    });
    reconnects += client.counters.reconnects;
    duplicatesDropped += client.counters.duplicatesDropped;
    gaps += client.counters.gaps;
    for (const p of nodesSeen) nodesUsed.add(p);
  }
  // a live connection never skips a seq (a gap would be the cluster losing an event in delivery)
  assert.equal(gaps, 0, `${gaps} gaps seen on live connections`);
  let cut4003 = 0;
  for (const n of new Set(live)) {
    const m = await metrics(n);
    const x = /agentwire_closes_total\{code="4003"\} (\d+)/.exec(m);
    cut4003 += x ? Number(x[1]) : 0;
  }
  assert.ok(cuts > 0, 'the driver cut connections');
  assert.ok(stalls > 0, 'the driver stalled readers');
  assert.ok(cut4003 > 0, 'some stalled readers were cut with 4003');
  assert.equal(nodesUsed.size, new Set(cl.nodes.map((n) => n.port)).size, 'clients used all three nodes');

  // every client closed: the surviving nodes hold no connection and no queue
  await Promise.all(clients.map(({ client }) => client.close()));
  for (const n of new Set(live)) {
    await pollUntil(async () => {
      const text = await metrics(n);
      return metricValue(text, 'agentwire_connections') === 0 && metricValue(text, 'agentwire_queue_bytes') === 0;
    }, { timeoutMs: 15000, intervalMs: 200, what: `node ${n.index}: connections and queues to empty` });
  }
  figures(t, {
    suite: 'cluster-chaos', nodes: 3, shards: 2, clients: clients.length, users: USERS, events: total,
    deliveries: clients.length * EVENTS_PER_USER, driver_cuts: cuts, stalls, cuts_4003: cut4003, node_killed: KILL_NODE,
    reconnect_attempts: reconnects, publish_ms: publishMs, stalls_released_ms: releasedMs, duplicates_dropped: duplicatesDropped, gaps, losses: 0, duplicates: 0,
  });
});
