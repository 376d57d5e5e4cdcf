// client.test.mjs -- the JavaScript client library (clients/js/agentwire.js)
// against the real agentwire binary: auth, ordered delivery, request errors,
// reconnect + resume after a kick, dedupe of a resume replay, reset after a
// server restart, token refresh, and 4001 handling.
//
// Tests whose title says "(needs server resume)" depend on the server replaying
// missed events for ?since=&epoch= (and for the `resume` message); they fail,
// with a message saying so, against a server that does not resume yet.
//
// Every wait is on a client notification or a server answer, bounded by a timeout.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import WebSocket from 'ws';
import { AgentwireClient } from '../../clients/js/agentwire.js';
import {
  api, connectAs, nowS, pollUntil, publish, randomId, signHS256, startServer, useServer, WAIT_MS, withTimeout,
} from './lib/harness.mjs';

const T = { timeout: 30000 };
const NEEDS_RESUME = 'the server did not resume (connection_established.resumed was false): ' +
  'this test needs server-side resume (?since=&epoch= replay)';

/** A client for srv with fast backoff, closed when the test ends. */
function makeClient(t, srv, opts = {}) {
  const client = new AgentwireClient({ url: srv.url, WebSocket, backoffBaseMs: 50, backoffMaxMs: 400, ...opts });
  t.after(() => client.close());
  return client;
}

/** The next `name` notification of client matching pred (register it before causing it). */
function next(client, name, pred = () => true, ms = WAIT_MS) {
  let off;
  const p = new Promise((resolve) => {
    off = client.on(name, (arg) => { if (pred(arg)) resolve(arg); });
  });
  return withTimeout(p, ms, `client '${name}' notification`).finally(() => off());
}

/** Resolves once the client has delivered seq (or beyond). */
function untilSeq(client, seq, ms = WAIT_MS) {
  if (client.lastSeq >= seq) return Promise.resolve();
  return next(client, 'event', () => client.lastSeq >= seq, ms).then(() => {}, (err) => {
    err.message += ` (lastSeq ${client.lastSeq}, wanted ${seq})`;
    throw err;
  });
}

const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => a + i);

test('connects with a fixed token over the jwt-auth subprotocol; ping round trip', T, async (t) => {
  const srv = await useServer(t);
  const user = randomId();
  const client = makeClient(t, srv, { token: srv.token(user) });
  const statuses = [];
  client.on('status', (s) => statuses.push(s));
  const hello = await client.connect();
  assert.equal(hello.user_id, user);
  assert.equal(client.status, 'open');
  assert.equal(client.userId, user);
  assert.equal(client.socket.protocol, 'jwt-auth', 'the server answers the jwt-auth subprotocol');
  assert.equal(client.epoch, hello.epoch);
  assert.equal(client.lastSeq, 0);
  const conns = await api(srv, 'GET', `/api/v1/users/${user}/connections`);
  assert.deepEqual(conns.json.connections.map((c) => c.connection_id), [client.connectionId]);
  const pong = await client.ping();
  assert.equal(pong.type, 'pong');
  assert.equal(typeof pong.rttMs, 'number');
  assert.deepEqual(statuses, ['connecting', 'open']);
});

test('connects with an async getToken, called with reason "connect"', T, async (t) => {
  const srv = await useServer(t);
  const reasons = [];
  const client = makeClient(t, srv, {
    getToken: async ({ reason }) => { reasons.push(reason); await Promise.resolve(); return srv.token('gt-user'); },
  });
  await client.connect();
  assert.equal(client.userId, 'gt-user');
  assert.deepEqual(reasons, ['connect']);
});

test('receives published events in order, through typed and catch-all listeners', T, async (t) => {
  const srv = await useServer(t);
  const user = randomId();
  const client = makeClient(t, srv, { token: srv.token(user) });
  const all = [];
  const typed = {};
  client.on('event', (ev) => all.push(ev));
  for (const type of ['agent_started', 'agent_thinking', 'tool_executing', 'tool_completed', 'agent_completed']) {
    client.on(type, (ev) => { typed[type] = (typed[type] || 0) + 1; assert.equal(ev.type, type); });
  }
  await client.connect();
  const run = { user_id: user, thread_id: 'th1', run_id: 'run1' };
  const batch = [
    { ...run, type: 'agent_started', agent_name: 'a' },
    { ...run, type: 'agent_thinking', reasoning: 'hmm' },
    { ...run, type: 'tool_executing', tool_name: 'calc', parameters: { x: 1 } },
    { ...run, type: 'tool_completed', tool_name: 'calc', results: 2, duration: 3 },
    { ...run, type: 'agent_completed', status: 'success', final_response: 'done' },
    ...range(1, 25).map((i) => ({ user_id: user, type: 'note', i })),
  ];
  const res = await api(srv, 'POST', '/api/v1/publish/batch', batch);
  assert.equal(res.status, 200, res.text);
  await untilSeq(client, batch.length);
  assert.deepEqual(all.map((e) => e.seq), range(1, batch.length));
  assert.deepEqual(all.map((e) => e.type), batch.map((e) => e.type));
  assert.deepEqual(all.slice(5).map((e) => e.i), range(1, 25));
  assert.deepEqual(typed, { agent_started: 1, agent_thinking: 1, tool_executing: 1, tool_completed: 1, agent_completed: 1 });
  assert.equal(client.counters.duplicatesDropped, 0);
  assert.equal(client.counters.gaps, 0);
});

test('an error reply rejects the request with the server code; the connection stays usable', T, async (t) => {
  const srv = await useServer(t);
  const client = makeClient(t, srv, { token: srv.token(randomId()) });
  await client.connect();
  await assert.rejects(client.request('no_such_message_type', { x: 1 }), (e) => e.code === 'unknown_type');
  await assert.rejects(client.request('refresh', { token: 'not.a.jwt' }), (e) => e.code === 'invalid_token');
  assert.equal((await client.ping()).type, 'pong');
  assert.equal(client.status, 'open');
});

test('a refused handshake (401) is retried with a new token from getToken', T, async (t) => {
  const srv = await useServer(t);
  const reasons = [];
  const client = makeClient(t, srv, {
    getToken: ({ reason }) => {
      reasons.push(reason);
      return reasons.length === 1 ? signHS256('not-the-secret', { sub: 'r401' }) : srv.token('r401');
    },
  });
  const closed = next(client, 'close');
  await client.connect();
  const c = await closed;
  assert.equal(c.wasOpen, false);
  assert.equal(c.willReconnect, true);
  assert.deepEqual(reasons, ['connect', 'reconnect']);
  assert.equal(client.status, 'open');
  assert.equal(client.counters.reconnects, 1);
});

test('(needs server resume) reconnects after a kick (4002) and resumes every missed event exactly once', T, async (t) => {
  const srv = await useServer(t);
  const user = randomId();
  let calls = 0;
  let release;
  const gate = new Promise((r) => { release = r; });
  let tokenAsked;
  const asked = new Promise((r) => { tokenAsked = r; });
  const client = makeClient(t, srv, {
    getToken: async () => {
      if (++calls === 2) { tokenAsked(); await gate; } // hold the reconnect while we publish
      return srv.token(user);
    },
  });
  const seen = [];
  client.on('event', (ev) => seen.push(ev.seq));
  await client.connect();
  for (const i of range(1, 3)) await publish(srv, { user_id: user, type: 'note', i });
  await untilSeq(client, 3);

  const closed = next(client, 'close');
  const kick = await api(srv, 'POST', `/api/v1/users/${user}/disconnect`);
  assert.equal(kick.status, 200);
  const c = await closed;
  assert.equal(c.code, 4002);
  assert.equal(c.willReconnect, true);
  await withTimeout(asked, WAIT_MS, 'the reconnect to ask for a token');
  assert.equal(client.status, 'reconnecting');
  const before = client.lastSeq;
  for (const i of range(before + 1, before + 5)) await publish(srv, { user_id: user, type: 'note', i });

  const opened = next(client, 'open');
  release();
  const o = await opened;
  assert.ok(o.hello.resumed, NEEDS_RESUME);
  assert.equal(o.hello.missed, 5 + 3 - before);
  await untilSeq(client, 8);
  for (const i of [9, 10]) await publish(srv, { user_id: user, type: 'note', i });
  await untilSeq(client, 10);
  assert.deepEqual(seen, range(1, 10), 'every seq exactly once, in order');
  assert.equal(client.counters.resets, 0);
  assert.equal(client.counters.reconnects, 1);
});

test('(needs server resume) events replayed by a `resume` message are dropped as duplicates', T, async (t) => {
  const srv = await useServer(t);
  const user = randomId();
  const client = makeClient(t, srv, { token: srv.token(user) });
  const seen = [];
  client.on('event', (ev) => seen.push(ev.seq));
  await client.connect();
  for (const i of range(1, 6)) await publish(srv, { user_id: user, type: 'note', i });
  await untilSeq(client, 6);
  const ack = await client.request('resume', { since: 0, epoch: client.epoch });
  assert.equal(ack.resumed, true, NEEDS_RESUME);
  assert.equal(client.counters.duplicatesDropped, 6, 'the 6 replayed events were dropped');
  await publish(srv, { user_id: user, type: 'note', i: 7 });
  await untilSeq(client, 7);
  assert.deepEqual(seen, range(1, 7));
});

test('after a server restart (new epoch) onReset fires once, then events continue from the new seq', T, async (t) => {
  const srv1 = await startServer();
  t.after(() => srv1.stop());
  const user = randomId();
  const resets = [];
  const client = makeClient(t, srv1, {
    getToken: () => srv1.token(user),
    onReset: (info) => { resets.push(info); },
  });
  const seen = [];
  client.on('event', (ev) => seen.push([ev.epoch, ev.seq]));
  await client.connect();
  const e1 = client.epoch;
  for (const i of [1, 2]) await publish(srv1, { user_id: user, type: 'note', i });
  await untilSeq(client, 2);

  const closed = next(client, 'close');
  const reset = next(client, 'reset', () => true, 20000);
  await srv1.stop();
  assert.equal((await closed).code, 1001, 'a draining server closes with going_away');
  // the same port and secret: the client keeps its URL and token source
  const srv2 = await startServer(['--listen', `127.0.0.1:${srv1.port}`, '--jwt-secret', srv1.secret]);
  t.after(() => srv2.stop());
  const info = await reset;
  assert.notEqual(info.epoch, e1);
  assert.deepEqual(info, { epoch: info.epoch, seq: 0, previousEpoch: e1, previousSeq: 2 });
  assert.deepEqual(resets, [info]);
  await publish(srv2, { user_id: user, type: 'note', i: 3 });
  await untilSeq(client, 1);
  assert.deepEqual(seen, [[e1, 1], [e1, 2], [info.epoch, 1]]);
  assert.equal(client.counters.resets, 1);
  assert.equal(client.epoch, info.epoch);
});

test('refresh is sent before exp and keeps the connection past the first token\'s expiry', T, async (t) => {
  const srv = await useServer(t, ['--jwt-leeway-s', '0']);
  const user = randomId();
  const exp1 = nowS() + 4;
  const reasons = [];
  const client = makeClient(t, srv, {
    refreshBeforeMs: 2000,
    getToken: ({ reason }) => {
      reasons.push(reason);
      return srv.token(user, { exp: reasons.length === 1 ? exp1 : nowS() + 3600 });
    },
  });
  const closes = [];
  client.on('close', (c) => closes.push(c));
  const refreshed = next(client, 'refresh', () => true, 8000);
  await client.connect();
  const first = client.connectionId;
  // a control connection with the same short token and no refresh: its 4001
  // shows the server has enforced the first exp
  const control = await connectAs(srv, user, { claims: { exp: exp1 } });
  const r = await refreshed;
  assert.ok(r.expiresAt > exp1 * 1000, `expires_at ${r.expiresAt} moved past ${exp1 * 1000}`);
  assert.deepEqual(reasons, ['connect', 'refresh']);
  const cc = await control.waitClose(8000);
  assert.equal(cc.code, 4001, 'the control connection expired');
  assert.equal((await client.ping()).type, 'pong');
  assert.equal(client.connectionId, first, 'same connection');
  assert.deepEqual(closes, []);
  assert.equal(client.counters.reconnects, 0);
});

test('4001 token_expired leads to an immediate reconnect with a fresh token', T, async (t) => {
  const srv = await useServer(t, ['--jwt-leeway-s', '0']);
  const user = randomId();
  const reasons = [];
  const client = makeClient(t, srv, {
    refresh: false,
    getToken: ({ reason }) => {
      reasons.push(reason);
      return srv.token(user, { exp: reasons.length === 1 ? nowS() + 2 : nowS() + 3600 });
    },
  });
  await client.connect();
  const first = client.connectionId;
  const closed = next(client, 'close', () => true, 8000);
  const reopened = next(client, 'open', (o) => o.connectionId !== first, 10000);
  const c = await closed;
  assert.equal(c.code, 4001);
  assert.equal(c.delayMs, 0, 'reconnects at once');
  const o = await reopened;
  assert.equal(o.userId, user);
  assert.deepEqual(reasons, ['connect', 'expired']);
  assert.equal(client.counters.resets, 0, 'nothing was published: no reset');
  assert.equal((await client.ping()).type, 'pong');
});

test('close() ends the connection for good: no reconnect', T, async (t) => {
  const srv = await useServer(t);
  const user = randomId();
  const client = makeClient(t, srv, { token: srv.token(user) });
  await client.connect();
  await client.close();
  assert.equal(client.status, 'closed');
  // the server sees the connection go, and no new one arrives
  await pollUntil(async () => (await api(srv, 'GET', `/api/v1/users/${user}/connections`)).json.connections.length === 0,
    { what: 'the server to drop the connection' });
  await assert.rejects(client.ping(), (e) => e.code === 'not_connected');
  assert.equal(client.counters.reconnects, 0);
});
