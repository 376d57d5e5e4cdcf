// A server's life around its connections: handshake timeout, heartbeat
// pings, and draining on SIGTERM.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import {
  api,
  connectAs,
  expectRefusal,
  publish,
  rawSocket,
  startServer,
  useServer,
  waitSocketClose,
  withTimeout,
} from './lib/harness.mjs';

const T = { timeout: 30000 };

/* ---------------- loops and threads ---------------- */

// The names of the server's threads, from /proc (ps -L shows the same).
function threadNames(pid) {
  return fs.readdirSync(`/proc/${pid}/task`).map((tid) => {
    try { return fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim(); } catch { return null; }
  }).filter(Boolean).sort();
}

test('--threads 2 runs two named loops; --data-dir runs one loop and the writer thread, whatever --threads says', T, async (t) => {
  const two = await useServer(t, ['--threads', '2']);
  assert.deepEqual(threadNames(two.proc.pid).filter((n) => n.startsWith('aw-')), ['aw-loop-1']);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentwire-data-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const durable = await useServer(t, ['--threads', '2', '--data-dir', dir]);
  assert.deepEqual(threadNames(durable.proc.pid).filter((n) => n.startsWith('aw-')), ['aw-store']);
  // and it still serves: a publish reaches a subscriber
  const ws = await connectAs(durable, 'named');
  const res = await publish(durable, { user_id: 'named', type: 'note', n: 1 });
  const ev = await ws.nextMessage((m) => m.type === 'note');
  assert.equal(ev.seq, res.seq);
  assert.equal(ev.n, 1);
});

/* ---------------- handshake timeout ---------------- */

test('a client that sends half a request head is closed after --handshake-timeout-ms', T, async (t) => {
  const srv = await useServer(t, ['--handshake-timeout-ms', '300']);
  const ws = await connectAs(srv, 'survivor');
  const sock = await rawSocket(srv);
  const start = Date.now();
  sock.write('GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n');
  sock.on('error', () => {});
  await waitSocketClose(sock, 5000);
  const elapsed = Date.now() - start;
  assert.ok(elapsed >= 200, `closed after ${elapsed} ms, before the handshake timeout`);
  // the timeout is for handshakes only: an upgraded connection older than it lives on
  await ws.sync();
  assert.ok(ws.isOpen);
});

test('a silent TCP client is closed after --handshake-timeout-ms', T, async (t) => {
  const srv = await useServer(t, ['--handshake-timeout-ms', '300']);
  const sock = await rawSocket(srv);
  sock.on('error', () => {});
  await waitSocketClose(sock, 5000);
});

test('a client dribbling its head byte by byte is still closed at the handshake timeout', T, async (t) => {
  const srv = await useServer(t, ['--handshake-timeout-ms', '300']);
  const sock = await rawSocket(srv);
  sock.on('error', () => {});
  const head = `GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ${'a'.repeat(500)}`;
  let i = 0;
  const timer = setInterval(() => {
    if (!sock.destroyed && i < head.length) sock.write(head[i++]);
  }, 50);
  t.after(() => clearInterval(timer));
  try {
    await waitSocketClose(sock, 5000);
  } finally {
    clearInterval(timer);
  }
  assert.ok(i < head.length);
});

/* ---------------- heartbeat ---------------- */

test('--heartbeat-interval-ms 400: the client receives WebSocket pings and, answering them, stays open', T, async (t) => {
  // 400 ms: a client stalled a few hundred ms by a loaded machine still
  // answers within two intervals
  const srv = await useServer(t, ['--heartbeat-interval-ms', '400']);
  const c = await connectAs(srv, 'beating');
  assert.equal(c.hello.heartbeat_interval_ms, 400);
  const start = Date.now();
  await c.waitPings(4, 12000);
  const elapsed = Date.now() - start;
  assert.ok(elapsed >= 1000, `4 pings in ${elapsed} ms: faster than the interval`);
  await c.sync();
  assert.ok(c.isOpen, 'a client answering pings must not be closed');
});

/* ---------------- drain ---------------- */

test('SIGTERM closes every WebSocket with 1001 going_away and the process exits 0', T, async (t) => {
  const srv = await startServer();
  t.after(() => srv.stop());
  const clients = [
    await connectAs(srv, 'drain-a'),
    await connectAs(srv, 'drain-a'),
    await connectAs(srv, 'drain-b'),
  ];
  const closes = clients.map((c) => c.waitClose(15000));
  srv.signal('SIGTERM');
  const exit = await withTimeout(srv.exited, 15000, 'agentwire to exit after SIGTERM');
  const infos = await Promise.all(closes);
  for (const info of infos) {
    assert.equal(info.code, 1001, JSON.stringify(info));
    assert.equal(info.reason, 'going_away');
  }
  assert.deepEqual(exit, { code: 0, signal: null }, srv.describe());
});

/** Starts a server, holds one client that never reads (so never answers the
 * close frame: the node stays draining until that connection's close deadline),
 * sends SIGTERM, and returns once the drain has begun: another client got its
 * 1001 close. */
async function startDraining(t, extraArgs = []) {
  const srv = await startServer(['--drain-timeout-ms', '5000', ...extraArgs]);
  t.after(() => srv.stop());
  assert.equal((await api(srv, 'GET', '/readyz', undefined, { key: null })).status, 200);
  const stuck = await connectAs(srv, 'stuck');
  const watcher = await connectAs(srv, 'watcher');
  stuck.ws.pause();
  srv.signal('SIGTERM');
  assert.equal((await watcher.waitClose()).code, 1001);
  return { srv, stuck };
}

function explainRefused(err) {
  const code = err?.cause?.code || err?.code || '';
  return code === 'ECONNREFUSED'
    ? 'the listener was closed on SIGTERM, so nothing can answer 503 while draining'
    : err?.message;
}

test('while draining, /readyz answers 503', T, async (t) => {
  const { srv, stuck } = await startDraining(t);
  let res;
  try {
    res = await api(srv, 'GET', '/readyz', undefined, { key: null });
  } catch (err) {
    throw new Error(`/readyz during drain: ${explainRefused(err)}`);
  }
  assert.equal(res.status, 503, res.text);
  stuck.ws.resume();
  const exit = await withTimeout(srv.exited, 10000, 'agentwire to exit after draining');
  assert.deepEqual(exit, { code: 0, signal: null }, srv.describe());
});

test('while draining, handshakes get 503 draining, before the origin and credential checks', T, async (t) => {
  const { srv, stuck } = await startDraining(t, ['--allowed-origins', 'https://ok.example']);
  const attempt = async (opts) => {
    try {
      return await expectRefusal(srv.url, opts);
    } catch (err) {
      throw new Error(`handshake during drain: ${explainRefused(err)}`);
    }
  };
  const good = await attempt({ origin: 'https://ok.example', headers: { Authorization: `Bearer ${srv.token('late')}` } });
  assert.equal(good.status, 503, good.text);
  assert.equal(good.body?.error, 'draining');
  const badOrigin = await attempt({ origin: 'https://evil.example' });
  assert.equal(badOrigin.status, 503, `503 comes before 403: ${badOrigin.text}`);
  assert.equal(badOrigin.body?.error, 'draining');
  stuck.ws.resume();
  const exit = await withTimeout(srv.exited, 10000, 'agentwire to exit after draining');
  assert.deepEqual(exit, { code: 0, signal: null }, srv.describe());
});

test('a client that never answers the close does not hold the drain past its deadline', T, async (t) => {
  const { srv, stuck } = await startDraining(t);
  const start = Date.now();
  const exit = await withTimeout(srv.exited, 8000, 'agentwire to exit while a client ignores the close');
  assert.deepEqual(exit, { code: 0, signal: null }, srv.describe());
  assert.ok(Date.now() - start < 7000);
  stuck.ws.resume();
});

// Under AddressSanitizer (scripts/test.sh) a buffer a loop kept past its end
// is a leak report and exit status 1: what the loops keep between requests
// must go with them.
test('a server stopped right after publishing batches on both loops exits 0', T, async (t) => {
  const srv = await startServer(['--threads', '2']);
  t.after(() => srv.stop());
  const batch = Array.from({ length: 20 }, (_, i) => ({ user_id: `x${i % 4}`, type: 'note', pad: 'p'.repeat(2000 + i) }));
  // eight connections at once: the kernel spreads them over both loops
  const answers = await Promise.all(Array.from({ length: 8 }, () => api(srv, 'POST', '/api/v1/publish/batch', batch)));
  for (const res of answers) assert.equal(res.status, 200);
  srv.signal('SIGTERM');
  const exit = await withTimeout(srv.exited, 10000, 'agentwire to exit');
  assert.deepEqual(exit, { code: 0, signal: null }, srv.describe());
});

test('an idle server exits 0 promptly on SIGTERM', T, async (t) => {
  const srv = await startServer();
  t.after(() => srv.stop());
  const start = Date.now();
  srv.signal('SIGTERM');
  const exit = await withTimeout(srv.exited, 5000, 'agentwire to exit');
  assert.deepEqual(exit, { code: 0, signal: null }, srv.describe());
  assert.ok(Date.now() - start < 5000);
});
