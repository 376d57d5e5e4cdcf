// Chaos: many JS clients (several per user) receive a continuous stream
// while a driver cuts random connections and makes some clients stop reading
// until the server cuts them with 4003. At the end every client holds exactly
// its user's seq range, each event once and in order, and the server's memory
// is back near where it started.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import WebSocket from 'ws';
import { AgentwireClient } from '../../clients/js/agentwire.js';
import { useServer, api, metricValue, pollUntil, withTimeout } from './lib/harness.mjs';

const USERS = Number(process.env.CHAOS_USERS ?? 20);
const PER_USER = Number(process.env.CHAOS_CLIENTS_PER_USER ?? 3);
const EVENTS_PER_USER = Number(process.env.CHAOS_EVENTS_PER_USER ?? 600);
const PAD = 2048; // random (incompressible) filler per event, so a stalled reader fills its buffers
const BATCH = 200;
const HISTORY_TTL_MS = 10000;

const rssKiB = (pid) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);
const rand = (n) => Math.floor(Math.random() * n);

async function metrics(srv) {
  const r = await api(srv, 'GET', '/metrics', undefined, { key: null });
  return r.text ?? r.body ?? '';
}

test('chaos: random cuts and stalled readers lose nothing and duplicate nothing', { timeout: 240000 }, async (t) => {
  const srv = await useServer(t, [
    '--queue-limit-bytes', '65536',
    '--send-buffer-bytes', '65536',
    '--history-size', String(EVENTS_PER_USER + 100),
    '--history-ttl-ms', String(HISTORY_TTL_MS),
    '--max-connections-per-user', String(PER_USER + 2),
  ]);
  const users = Array.from({ length: USERS }, (_, i) => `chaos_u${i}`);
  const clients = [];
  for (const user of users) {
    for (let c = 0; c < PER_USER; c++) {
      const client = new AgentwireClient({
        url: `ws://127.0.0.1:${srv.port}/ws`,
        getToken: () => srv.token(user),
        WebSocket,
        // no permessage-deflate: a stalled reader must fill its buffers with
        // the bytes of the stream, and ws inflates on a thread pool
        webSocketOptions: { perMessageDeflate: false },
        backoffBaseMs: 20,
        backoffMaxMs: 300,
        heartbeat: false,
      });
      const seen = [];
      client.on('event', (ev) => seen.push(ev));
      clients.push({ user, client, seen, stalls: 0 });
    }
  }
  t.after(() => Promise.all(clients.map(({ client }) => client.close().catch(() => {}))));
  await Promise.all(clients.map(({ client }) => client.connect()));
  const rssStart = rssKiB(srv.proc.pid);

  // Publisher: sequential batches, events of one user in order.
  let publishing = true;
  const sent = Object.fromEntries(users.map((u) => [u, 0]));
  const publisher = (async () => {
    const total = USERS * EVENTS_PER_USER;
    for (let k = 0; k < total; k += BATCH) {
      const batch = [];
      for (let i = k; i < Math.min(k + BATCH, total); i++) {
        const user = users[i % USERS];
        batch.push({ user_id: user, type: 'progress_update', n: ++sent[user], pad: randomBytes((PAD * 3) / 4).toString('base64') });
      }
      const r = await api(srv, 'POST', '/api/v1/publish/batch', batch);
      assert.equal(r.status, 200);
      assert.ok(r.json.every((x) => typeof x.seq === 'number'), 'every event accepted');
    }
    publishing = false;
  })();

  // Driver: cut random connections; stall random readers until the server cuts them.
  let cuts = 0;
  let stalls = 0;
  const stalled = new Set();
  const driver = (async () => {
    while (publishing) {
      const entry = clients[rand(clients.length)];
      const sock = entry.client.socket;
      if (sock && sock.readyState === WebSocket.OPEN && !stalled.has(entry)) {
        // a stall needs enough of the stream still to come to fill the
        // client's and the server's buffers past --queue-limit-bytes, or the
        // server never sees a slow consumer and the stalled reader only
        // wakes when its events leave history (a reset): first half only
        if (Math.random() < 0.3 && stalled.size < 4 && sent[entry.user] < EVENTS_PER_USER / 2) {
          stalled.add(entry);
          stalls++;
          const connId = entry.client.connectionId;
          sock._socket.pause();
          // resume reading once the server has dropped this connection
          pollUntil(async () => {
            const r = await api(srv, 'GET', `/api/v1/users/${entry.user}/connections`);
            return !r.json.connections.some((c) => c.connection_id === connId);
          }, { timeoutMs: 60000, intervalMs: 50, what: 'the stalled connection to be cut' })
            .finally(() => { sock._socket.resume(); stalled.delete(entry); });
        } else {
          cuts++;
          sock.terminate();
        }
      }
      await new Promise((r) => setTimeout(r, 25));
    }
  })();

  await publisher;
  await driver;
  await pollUntil(() => stalled.size === 0, { timeoutMs: 60000, what: 'stalled readers to be released' });
  await pollUntil(() => clients.every(({ client }) => client.lastSeq === EVENTS_PER_USER), {
    timeoutMs: 90000,
    intervalMs: 100,
    what: () => `every client to reach seq ${EVENTS_PER_USER}: ${clients
      .filter(({ client }) => client.lastSeq !== EVENTS_PER_USER)
      .map(({ user, client }) => `${user}@${client.lastSeq}/${client.status}`).join(', ')}`,
  });

  let reconnects = 0;
  let duplicatesDropped = 0;
  for (const { user, client, seen } of clients) {
    assert.equal(client.counters.resets, 0, `${user}: no reset (history held everything)`);
    assert.equal(seen.length, EVENTS_PER_USER, `${user}: exactly ${EVENTS_PER_USER} events`);
    seen.forEach((ev, i) => {
      assert.equal(ev.seq, i + 1, `${user}: event ${i} has seq ${i + 1}`);
      assert.equal(ev.n, i + 1, `${user}: content matches its seq`);
      assert.equal(ev.user_id, user, 'only the user\'s own events');
    });
    reconnects += client.counters.reconnects;
    duplicatesDropped += client.counters.duplicatesDropped;
  }
  const m = await metrics(srv);
  const cut4003 = Number(/agentwire_closes_total\{code="4003"\} (\d+)/.exec(m)[1]);
  assert.ok(cuts > 0, 'the driver cut connections');
  assert.ok(cut4003 > 0, 'some stalled readers were cut with 4003');

  // Memory: close every client, let history expire, then compare.
  await Promise.all(clients.map(({ client }) => client.close()));
  await pollUntil(async () => {
    const text = await metrics(srv);
    return metricValue(text, 'agentwire_connections') === 0 &&
      metricValue(text, 'agentwire_history_events') === 0 &&
      metricValue(text, 'agentwire_queue_bytes') === 0;
  }, { timeoutMs: HISTORY_TTL_MS + 15000, intervalMs: 200, what: 'connections, queues and history to empty' });
  // Freed frames wait in the loops' frame caches for a second or two before
  // they go back (and the server trims its heap after them): wait for that.
  const sanitized = readFileSync(`/proc/${srv.proc.pid}/maps`, 'utf8').includes('libasan');
  const RSS_SLACK_KIB = 16 * 1024;
  if (!sanitized) {
    await pollUntil(async () => {
      const text = await metrics(srv);
      return metricValue(text, 'agentwire_frame_cache_bytes') < 1024 * 1024 &&
        rssKiB(srv.proc.pid) - rssStart < RSS_SLACK_KIB;
    }, { timeoutMs: 10000, intervalMs: 200, what: 'frame caches to empty and memory to go back' }).catch(() => {});
  }
  const rssEnd = rssKiB(srv.proc.pid);
  const figures = {
    clients: clients.length, users: USERS, events: USERS * EVENTS_PER_USER,
    deliveries: clients.length * EVENTS_PER_USER, driver_cuts: cuts, stalls, cuts_4003: cut4003,
    reconnect_attempts: reconnects, duplicates_dropped: duplicatesDropped, losses: 0, duplicates: 0,
    rss_start_kib: rssStart, rss_end_kib: rssEnd,
  };
  t.diagnostic(`chaos figures ${JSON.stringify(figures)}`);
  console.log(`chaos figures ${JSON.stringify(figures)}`);
  // AddressSanitizer keeps freed memory in quarantine (and checks leaks at exit
  // instead), so RSS says nothing under it.
  if (!sanitized) {
    assert.ok(rssEnd - rssStart < RSS_SLACK_KIB, `server memory back near its start: ${rssStart} KiB -> ${rssEnd} KiB`);
  }
});
