// client-unit.test.mjs -- the JavaScript client library (clients/js/agentwire.js)
// against a fake WebSocket and a fake clock: dedupe, gaps, backoff, reset,
// close-code handling, requests, refresh and heartbeat timing. No server, no
// real timers; every test finishes in milliseconds.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AgentwireClient, AgentwireError, base64url, decodeJwt } from '../../clients/js/agentwire.js';

const T = { timeout: 10000 };
const T0 = 1_700_000_000_000;

/** Unsigned JWT-shaped token (the client never verifies). */
function jwt(claims) {
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${enc({ alg: 'HS256', typ: 'JWT' })}.${enc(claims)}.c2ln`;
}

/** Timers that only fire when the test advances the clock. */
class FakeClock {
  constructor() {
    this.t = T0;
    this.timers = new Map();
    this.nextId = 1;
    this.now = () => this.t;
    this.setTimeout = (fn, ms) => {
      const id = this.nextId++;
      this.timers.set(id, { fn, at: this.t + Math.max(0, ms), ms });
      return id;
    };
    this.clearTimeout = (id) => { this.timers.delete(id); };
  }

  /** Runs every timer due within ms, in time order, then sets the clock to now+ms. */
  async advance(ms) {
    const end = this.t + ms;
    for (;;) {
      let next = null;
      for (const [id, tm] of this.timers) if (tm.at <= end && (!next || tm.at < next[1].at)) next = [id, tm];
      if (!next) break;
      this.timers.delete(next[0]);
      this.t = next[1].at;
      next[1].fn();
      await flush();
    }
    this.t = end;
    await flush();
  }
}

/** Lets pending promise callbacks (e.g. an awaited getToken) run. */
const flush = () => new Promise((r) => setImmediate(r));

/** A WebSocket look-alike (browser API surface) driven by the test. */
function fakeSocketClass() {
  const instances = [];
  class FakeWebSocket {
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.sent = [];
      this.readyState = 0;
      this.closedWith = null;
      instances.push(this);
    }
    get query() { return Object.fromEntries(new URL(this.url).searchParams); }
    send(data) { this.sent.push(JSON.parse(data)); }
    close(code, reason) {
      if (this.readyState === 3) return;
      this.readyState = 3;
      this.closedWith = { code, reason };
      queueMicrotask(() => this.onclose?.({ code: code ?? 1005, reason: reason || '' }));
    }
    // --- the "server" side ---
    hello(fields = {}) {
      this.readyState = 1;
      this.onopen?.({});
      this.push({
        type: 'connection_established', connection_id: `c${instances.indexOf(this)}`, user_id: 'u1',
        epoch: 'e1', seq: 0, resumed: false, missed: 0, heartbeat_interval_ms: 25000,
        max_message_bytes: 65536, server_time: T0, ...fields,
      });
    }
    push(obj) { this.onmessage?.({ data: JSON.stringify(obj) }); }
    event(seq, fields = {}) { this.push({ type: 'note', seq, epoch: 'e1', event_id: `ev${seq}`, user_id: 'u1', timestamp: T0, ...fields }); }
    serverClose(code, reason = '') { this.readyState = 3; this.onclose?.({ code, reason }); }
    fail() { this.readyState = 3; this.onerror?.({}); this.onclose?.({ code: 1006, reason: '' }); }
  }
  FakeWebSocket.instances = instances;
  return FakeWebSocket;
}

/** A client on a fake socket and clock; heartbeats off unless asked for. */
async function setup(opts = {}) {
  const clock = new FakeClock();
  const WS = fakeSocketClass();
  const client = new AgentwireClient({
    url: 'ws://gateway.test/ws',
    token: jwt({ sub: 'u1', exp: T0 / 1000 + 3600 }),
    WebSocket: WS,
    random: () => 0.5,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    heartbeat: false,
    ...opts,
  });
  const log = [];
  for (const name of ['open', 'close', 'reset', 'error', 'status', 'refresh']) client.on(name, (a) => log.push([name, a]));
  const events = [];
  client.on('event', (ev) => events.push(ev.seq));
  const ready = client.connect();
  await flush();
  return { clock, WS, client, log, events, ready, sock: () => WS.instances.at(-1) };
}

test('auth: subprotocols jwt-auth + jwt.<base64url(token)>, no since on the first connect', T, async () => {
  const token = jwt({ sub: 'ünï €', exp: T0 / 1000 + 3600 });
  const { client, sock, ready } = await setup({ token });
  assert.deepEqual(sock().protocols, ['jwt-auth', `jwt.${Buffer.from(token).toString('base64url')}`]);
  assert.deepEqual(sock().query, {});
  assert.equal(client.status, 'connecting');
  sock().hello({ epoch: 'e1', seq: 7 });
  const hello = await ready;
  assert.equal(hello.seq, 7);
  assert.equal(client.status, 'open');
  assert.equal(client.lastSeq, 7);
  assert.equal(client.epoch, 'e1');
  assert.equal(client.connectionId, 'c0');
  assert.equal(client.userId, 'u1');
  assert.equal(base64url('a?b>c~'), Buffer.from('a?b>c~').toString('base64url'));
  assert.equal(decodeJwt(token).sub, 'ünï €');
  assert.equal(decodeJwt('not a jwt'), null);
  await client.close();
});

test('a start position (lastSeq + epoch) is resumed from on the first connect', T, async () => {
  const { client, sock } = await setup({ lastSeq: 12, epoch: 'e1' });
  assert.deepEqual(sock().query, { since: '12', epoch: 'e1' });
  sock().hello({ seq: 14, resumed: true, missed: 2 });
  sock().event(13);
  sock().event(14);
  assert.equal(client.lastSeq, 14);
  assert.equal(client.counters.resets, 0);
  await client.close();
});

test('events are delivered in order to typed and catch-all listeners; duplicates are dropped', T, async () => {
  const { client, sock, events } = await setup();
  const started = [];
  const notes = [];
  client.on('agent_started', (ev) => started.push(ev.seq));
  const off = client.onEvent('note', (ev) => notes.push(ev.seq));
  sock().hello({ seq: 0 });
  sock().event(1);
  sock().event(2, { type: 'agent_started' });
  sock().event(2);
  sock().event(1);
  sock().event(3);
  off();
  sock().event(4);
  sock().event(3);
  assert.deepEqual(events, [1, 2, 3, 4]);
  assert.deepEqual(started, [2]);
  assert.deepEqual(notes, [1, 3]);
  assert.equal(client.counters.duplicatesDropped, 3);
  assert.equal(client.lastSeq, 4);
  await client.close();
});

test('a seq gap drops the socket and reconnects at once with since=last; the replay fills it', T, async () => {
  const { client, sock, events, clock, WS, log } = await setup();
  sock().hello({ seq: 0 });
  sock().event(1);
  const first = sock();
  first.event(3); // 2 is missing
  assert.equal(first.readyState, 3, 'the socket with the gap is closed');
  assert.equal(client.counters.gaps, 1);
  first.event(4); // whatever the old socket still delivers is ignored
  assert.deepEqual(events, [1]);
  const close = log.find(([n]) => n === 'close')[1];
  assert.equal(close.reason, 'gap');
  assert.equal(close.delayMs, 0);
  await clock.advance(0);
  assert.equal(WS.instances.length, 2);
  assert.deepEqual(sock().query, { since: '1', epoch: 'e1' });
  sock().hello({ seq: 4, resumed: true, missed: 3 });
  for (const s of [2, 3, 4]) sock().event(s);
  assert.deepEqual(events, [1, 2, 3, 4]);
  assert.equal(client.counters.resets, 0);
  await client.close();
});

test('an event of another epoch on a live socket is recovered like a gap (and ends in a reset)', T, async () => {
  const { client, sock, clock, events } = await setup();
  sock().hello({ seq: 0 });
  sock().event(1);
  sock().event(1, { epoch: 'e2' });
  await clock.advance(0);
  assert.deepEqual(sock().query, { since: '1', epoch: 'e1' });
  sock().hello({ epoch: 'e2', seq: 1, resumed: false });
  assert.equal(client.counters.resets, 1);
  sock().event(2, { epoch: 'e2' });
  assert.deepEqual(events, [1, 2]);
  assert.equal(client.epoch, 'e2');
  await client.close();
});

test('backoff: full jitter on a doubling cap, capped at the max, reset by connection_established', T, async () => {
  const draws = [];
  let r = 0.5;
  const { client, sock, clock, log, WS } = await setup({
    backoffBaseMs: 100, backoffMaxMs: 1000, random: () => { draws.push(r); return r; },
  });
  const delays = () => log.filter(([n]) => n === 'close').map(([, c]) => c.delayMs);
  for (let i = 0; i < 6; i++) {
    sock().fail(); // handshake refused / network down
    await clock.advance(delays().at(-1));
  }
  assert.deepEqual(delays(), [50, 100, 200, 400, 500, 500]);
  assert.equal(WS.instances.length, 7);
  assert.equal(client.counters.reconnects, 6);
  r = 0; // the jitter really comes from random(): 0 means at once
  sock().fail();
  assert.equal(delays().at(-1), 0);
  await clock.advance(0);
  r = 0.999;
  sock().hello();
  sock().serverClose(1001, 'going_away');
  assert.equal(delays().at(-1), 99, 'after connection_established the cap is the base again');
  assert.ok(draws.length >= 8);
  assert.equal(client.status, 'reconnecting');
  await client.close();
});

test('maxRetries: the client gives up, rejects connect() and reports gave_up', T, async () => {
  const { client, sock, clock, ready, log } = await setup({ maxRetries: 2 });
  sock().fail();
  await clock.advance(1000);
  sock().fail();
  await clock.advance(1000);
  sock().fail();
  await assert.rejects(ready, (e) => e instanceof AgentwireError && e.code === 'gave_up');
  assert.equal(client.status, 'closed');
  assert.ok(log.some(([n, e]) => n === 'error' && e.code === 'gave_up'));
});

test('resumed:false after having state calls onReset, holds events until it settles, then continues', T, async () => {
  let release;
  const resets = [];
  const { client, sock, clock, events } = await setup({
    onReset: (info) => { resets.push(info); return new Promise((r) => { release = r; }); },
  });
  sock().hello({ seq: 5 });
  sock().event(6);
  sock().serverClose(1001, 'going_away');
  await clock.advance(1000);
  assert.deepEqual(sock().query, { since: '6', epoch: 'e1' });
  sock().hello({ epoch: 'e2', seq: 3, resumed: false });
  assert.deepEqual(resets, [{ epoch: 'e2', seq: 3, previousEpoch: 'e1', previousSeq: 6 }]);
  assert.equal(client.counters.resets, 1);
  assert.equal(client.epoch, 'e2');
  sock().event(4, { epoch: 'e2' });
  sock().event(5, { epoch: 'e2' });
  assert.deepEqual(events, [6], 'events wait for the reload');
  release({ seq: 4 }); // the reload covered up to seq 4
  await flush();
  assert.deepEqual(events, [6, 5]);
  assert.equal(client.lastSeq, 5);
  assert.equal(client.counters.duplicatesDropped, 1);
  await client.close();
});

test('no reset on the first connect, nor when resumed:false but nothing was missed', T, async () => {
  const { client, sock, clock, log } = await setup();
  sock().hello({ seq: 9 });
  sock().serverClose(4002, 'disconnected');
  await clock.advance(1000);
  sock().hello({ seq: 9, resumed: false }); // same epoch, latest seq == ours: nothing lost
  assert.equal(client.counters.resets, 0);
  assert.ok(!log.some(([n]) => n === 'reset'));
  const opens = log.filter(([n]) => n === 'open').map(([, o]) => o.resumed);
  assert.deepEqual(opens, [false, true]);
  await client.close();
});

test('4001 fetches a fresh token and reconnects at once; 1008 waits long; close() stops for good', T, async () => {
  const reasons = [];
  let n = 0;
  const { client, sock, clock, log, WS } = await setup({
    token: undefined,
    backoffMaxMs: 8000,
    getToken: async ({ reason }) => { reasons.push(reason); return jwt({ sub: 'u1', n: ++n, exp: T0 / 1000 + 3600 }); },
  });
  sock().hello();
  sock().serverClose(4001, 'token_expired');
  const c1 = log.filter(([k]) => k === 'close').at(-1)[1];
  assert.equal(c1.delayMs, 0);
  await clock.advance(0);
  assert.deepEqual(reasons, ['connect', 'expired']);
  assert.equal(decodeJwt(Buffer.from(sock().protocols[1].slice(4), 'base64url').toString()).n, 2, 'the fresh token is used');
  sock().hello();
  sock().serverClose(1008, 'policy');
  const c2 = log.filter(([k]) => k === 'close').at(-1)[1];
  assert.ok(c2.delayMs >= 4000 && c2.delayMs <= 8000, `1008 delay ${c2.delayMs}`);
  await clock.advance(c2.delayMs);
  sock().hello();
  await client.close();
  assert.equal(client.status, 'closed');
  const before = WS.instances.length;
  await clock.advance(60000);
  assert.equal(WS.instances.length, before, 'no reconnect after close()');
  assert.equal(log.filter(([k, c]) => k === 'close' && c.willReconnect === false).length, 1);
});

test('4001 with a fixed token (no getToken) gives up with token_expired', T, async () => {
  const { client, sock, log } = await setup();
  sock().hello();
  sock().serverClose(4001, 'token_expired');
  assert.equal(client.status, 'closed');
  assert.ok(log.some(([n, e]) => n === 'error' && e.code === 'token_expired'));
});

test('requests resolve with the ack of their message_id, reject on error, timeout and close', T, async () => {
  const { client, sock, clock } = await setup({ requestTimeoutMs: 500 });
  await assert.rejects(client.stopAgent('r1'), (e) => e.code === 'not_connected');
  sock().hello();
  const p1 = client.startAgent({ userRequest: 'hi', threadId: 't1', settings: { a: 1 } });
  const p2 = client.sendMessage({ content: 'yo' });
  const [m1, m2] = sock().sent;
  assert.deepEqual({ ...m1, message_id: undefined }, { type: 'start_agent', message_id: undefined, payload: { user_request: 'hi', thread_id: 't1', settings: { a: 1 } } });
  assert.deepEqual(m2.payload, { content: 'yo' });
  assert.notEqual(m1.message_id, m2.message_id);
  sock().push({ type: 'error', code: 'too_many_runs', message: 'no', message_id: m2.message_id });
  sock().push({ type: 'ack', run_id: 'r9', thread_id: 't1', message_id: m1.message_id });
  assert.equal((await p1).run_id, 'r9');
  await assert.rejects(p2, (e) => e instanceof AgentwireError && e.code === 'too_many_runs');

  const p3 = client.stopAgent('r9');
  assert.deepEqual(sock().sent.at(-1).payload, { run_id: 'r9' });
  const r3 = assert.rejects(p3, (e) => e.code === 'timeout');
  await clock.advance(500);
  await r3;

  const p4 = client.ping();
  const ping = sock().sent.at(-1);
  assert.equal(ping.type, 'ping');
  assert.equal(ping.timestamp, clock.t);
  sock().push({ type: 'pong', timestamp: ping.timestamp, message_id: ping.message_id });
  assert.equal((await p4).rttMs, 0);

  const p5 = assert.rejects(client.request('resume', { since: 0, epoch: 'e1' }), (e) => e.code === 'connection_closed');
  sock().serverClose(1001, 'going_away');
  await p5;
  await client.close();
});

test('refresh is sent refreshBeforeMs (default 10% of lifetime, at most 60 s) before exp, by server time', T, async () => {
  const tokens = [];
  let exp = T0 / 1000 + 100;
  let iat = T0 / 1000;
  const { client, sock, clock, log } = await setup({
    token: undefined,
    getToken: async () => { const t = jwt({ sub: 'u1', iat, exp }); tokens.push(t); return t; },
  });
  sock().hello({ server_time: T0 + 5000 }); // the server's clock is 5 s ahead
  await clock.advance(84999);
  assert.equal(sock().sent.length, 0);
  exp = T0 / 1000 + 1000;
  iat = (T0 + 85000) / 1000;
  await clock.advance(1); // 100 s - 10 s - 5 s skew
  const msg = sock().sent.at(-1);
  assert.equal(msg.type, 'refresh');
  assert.equal(msg.payload.token, tokens.at(-1));
  sock().push({ type: 'ack', for: 'refresh', expires_at: exp * 1000, message_id: msg.message_id });
  await flush();
  assert.deepEqual(log.filter(([n]) => n === 'refresh').map(([, r]) => r.expiresAt), [exp * 1000]);
  // next: lifetime 915 s -> 60 s before exp
  const due = exp * 1000 - 5000 - 60000 - clock.t;
  await clock.advance(due - 1);
  assert.equal(sock().sent.length, 1);
  await clock.advance(1);
  assert.equal(sock().sent.at(-1).type, 'refresh');
  await client.close();
});

test('refreshBeforeMs is honoured, and a refresh that does not extend exp is reported, not looped', T, async () => {
  const tok = jwt({ sub: 'u1', exp: T0 / 1000 + 30 });
  const { client, sock, clock, log } = await setup({ token: undefined, getToken: () => tok, refreshBeforeMs: 20000 });
  sock().hello();
  await clock.advance(10000);
  const msg = sock().sent.at(-1);
  assert.equal(msg.type, 'refresh');
  sock().push({ type: 'ack', for: 'refresh', expires_at: 0, message_id: msg.message_id });
  await flush();
  assert.ok(log.some(([n, e]) => n === 'error' && e.code === 'refresh_not_extended'));
  await clock.advance(15000);
  assert.equal(sock().sent.length, 1, 'no second refresh of the same token');
  await client.close();
});

test('heartbeat: sent every server interval; a silent socket is replaced', T, async () => {
  const { client, sock, clock, WS } = await setup({ heartbeat: true });
  sock().hello({ heartbeat_interval_ms: 1000 });
  await clock.advance(1000);
  assert.deepEqual(sock().sent, [{ type: 'heartbeat' }]);
  sock().push({ type: 'heartbeat_ack', server_time: clock.t });
  await clock.advance(1000);
  await clock.advance(1000);
  assert.equal(WS.instances.length, 1, 'alive while answers come');
  await clock.advance(1000); // nothing for > 2 intervals
  assert.equal(WS.instances[0].readyState, 3);
  assert.equal(client.status, 'reconnecting');
  await client.close();
});

test('a socket that never says connection_established times out and is retried', T, async () => {
  const { client, clock, WS, log } = await setup({ connectTimeoutMs: 3000 });
  await clock.advance(3000);
  assert.equal(WS.instances[0].readyState, 3);
  assert.equal(log.find(([n]) => n === 'close')[1].reason, 'connect_timeout');
  await clock.advance(1000);
  assert.equal(WS.instances.length, 2);
  await client.close();
});

test('status goes connecting -> open -> reconnecting -> open -> closed', T, async () => {
  const { client, sock, clock, log } = await setup();
  sock().hello();
  sock().serverClose(4003, 'slow_consumer');
  await clock.advance(1000);
  sock().hello({ resumed: true });
  await client.close();
  assert.deepEqual(log.filter(([n]) => n === 'status').map(([, s]) => s), ['connecting', 'open', 'reconnecting', 'open', 'closed']);
});

test('constructor checks: a credential and a WebSocket are required', T, () => {
  assert.throws(() => new AgentwireClient({ url: 'ws://x/ws', WebSocket: fakeSocketClass() }), TypeError);
  if (!globalThis.WebSocket) {
    assert.throws(() => new AgentwireClient({ url: 'ws://x/ws', token: 't' }), /ws/);
  }
});

test('reconnect: false ends quietly at the first close', T, async () => {
  const { client, sock, clock, log, WS } = await setup({ reconnect: false });
  sock().hello();
  sock().serverClose(4002, 'disconnected');
  await clock.advance(60000);
  assert.equal(client.status, 'closed');
  assert.equal(WS.instances.length, 1);
  assert.ok(!log.some(([n]) => n === 'error'));
  assert.equal(log.find(([n]) => n === 'close')[1].willReconnect, false);
});

test('in a browser the URL defaults to /ws on the page host, http(s) turned into ws(s)', T, async () => {
  const had = Object.getOwnPropertyDescriptor(globalThis, 'location');
  globalThis.location = { href: 'https://app.example/chat/42' };
  try {
    const { client, sock } = await setup({ url: undefined });
    assert.equal(sock().url, 'wss://app.example/ws');
    await client.close();
    const h = await setup({ url: 'http://gw.example:8080/ws?x=1', lastSeq: 3, epoch: 'e1' });
    assert.equal(h.sock().url, 'ws://gw.example:8080/ws?x=1&since=3&epoch=e1');
    await h.client.close();
  } finally {
    if (had) Object.defineProperty(globalThis, 'location', had);
    else delete globalThis.location;
  }
});
