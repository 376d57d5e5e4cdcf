// A server's life around its connections: handshake timeout, heartbeat
// pings, and draining on SIGTERM.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  api,
  connectAs,
  expectRefusal,
  pollUntil,
  rawSocket,
  startServer,
  useServer,
  waitSocketClose,
  withTimeout,
} from './lib/harness.mjs';

const T = { timeout: 30000 };

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

test('--heartbeat-interval-ms 200: the client receives WebSocket pings and, answering them, stays open', T, async (t) => {
  const srv = await useServer(t, ['--heartbeat-interval-ms', '200']);
  const c = await connectAs(srv, 'beating');
  assert.equal(c.hello.heartbeat_interval_ms, 200);
  const start = Date.now();
  await c.waitPings(5, 8000);
  const elapsed = Date.now() - start;
  assert.ok(elapsed >= 500, `5 pings in ${elapsed} ms: faster than the interval`);
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

test('while draining: /readyz is 503 and new handshakes get 503 draining, before origin and auth', T, async (t) => {
  const srv = await startServer(['--drain-timeout-ms', '5000', '--allowed-origins', 'https://ok.example']);
  t.after(() => srv.stop());
  assert.equal((await api(srv, 'GET', '/readyz', undefined, { key: null })).status, 200);
  // A client that does not read keeps the node draining: it never answers the close.
  const stuck = await connectAs(srv, 'stuck');
  stuck.ws.pause();
  srv.signal('SIGTERM');
  await pollUntil(async () => (await api(srv, 'GET', '/readyz', undefined, { key: null, timeoutMs: 1000 })).status === 503,
    { timeoutMs: 3000, intervalMs: 10, what: '/readyz to answer 503 while draining' });
  const good = await expectRefusal(srv.url, { origin: 'https://ok.example', headers: { Authorization: `Bearer ${srv.token('late')}` } });
  assert.equal(good.status, 503, good.text);
  assert.equal(good.body?.error, 'draining');
  const badOrigin = await expectRefusal(srv.url, { origin: 'https://evil.example' });
  assert.equal(badOrigin.status, 503, `503 comes before 403: ${badOrigin.text}`);
  assert.equal(badOrigin.body?.error, 'draining');
  stuck.ws.resume();
  const exit = await withTimeout(srv.exited, 10000, 'agentwire to exit after draining');
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
