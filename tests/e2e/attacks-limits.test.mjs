// attacks-limits.test.mjs -- what an authenticated user or a publisher can
// make the server hold, and the credential rules around it: tickets,
// streams under the history cap, idempotency keys, user ids with control
// characters, forged log lines, ES256 signature spellings, and a
// permessage-deflate message that ends in a final block.
//
// Each test states the limit it checks and fails on a server without it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { spawn } from 'node:child_process';
import net from 'node:net';
import zlib from 'node:zlib';
import {
  BIN, api, connect, connectAs, connectReady, expectRefusal, generateKeys, metricValue, nowS, pollUntil, publish,
  randomId, signHS256, signWith, es256WithS, tempFile, upgradeRequest, useServer, withTimeout,
} from './lib/harness.mjs';

const T = { timeout: 120000 };

const metrics = async (srv) => (await api(srv, 'GET', '/metrics')).text;

async function ticket(srv, token) {
  return api(srv, 'POST', '/api/v1/tickets', undefined, { key: null, headers: { Authorization: `Bearer ${token}` } });
}

/* ---------------- tickets ---------------- */

test('tickets: one user holds at most --max-tickets-per-user (16) unused tickets; used or expired ones free their place', T, async (t) => {
  const srv = await useServer(t, ['--ticket-ttl-ms', '1000']);
  const user = randomId('tk');
  const token = srv.token(user);
  const got = [];
  for (let i = 0; i < 16; i++) {
    const r = await ticket(srv, token);
    assert.equal(r.status, 200, r.text);
    got.push(r.json.ticket);
  }
  const over = await ticket(srv, token);
  assert.equal(over.status, 429, `the 17th unused ticket: ${over.status} ${over.text}`);
  assert.equal(over.json?.error, 'too_many_tickets');
  // another user is not affected
  assert.equal((await ticket(srv, srv.token(randomId('other')))).status, 200);
  // a used ticket frees its place
  const w = await connect(srv.wsUrl({ ticket: got[0] }));
  w.terminate();
  const again = await ticket(srv, token);
  assert.equal(again.status, 200, `after one ticket was used: ${again.text}`);
  // expired ones free theirs (ttl 1 s, swept by the tick)
  await pollUntil(async () => (await ticket(srv, token)).status === 200 && metricValue(await metrics(srv), 'agentwire_tickets') <= 3,
    { timeoutMs: 8000, intervalMs: 200, what: 'expired tickets to be swept' });
});

test('tickets: --max-tickets bounds all users together; memory stays flat under a flood', T, async (t) => {
  const srv = await useServer(t, ['--max-tickets', '50', '--max-tickets-per-user', '16']);
  let ok = 0;
  let refused = 0;
  for (let i = 0; i < 10; i++) {
    const token = srv.token(randomId(`many${i}`));
    for (let k = 0; k < 8; k++) {
      const r = await ticket(srv, token);
      if (r.status === 200) ok++;
      else if (r.status === 429 && r.json?.error === 'too_many_tickets') refused++;
      else assert.fail(`unexpected ${r.status} ${r.text}`);
    }
  }
  assert.equal(ok, 50, 'exactly --max-tickets were issued');
  assert.equal(refused, 30);
  assert.equal(metricValue(await metrics(srv), 'agentwire_tickets'), 50);
});

test('tickets: a token expired but within --jwt-leeway-s gets no ticket (it could never be used)', T, async (t) => {
  const srv = await useServer(t, ['--jwt-leeway-s', '60']);
  const expired = srv.token(randomId('late'), { exp: nowS() - 5 });
  const r = await ticket(srv, expired);
  assert.equal(r.status, 401, `a ticket for an expired token: ${r.status} ${r.text}`);
  // the same token still opens a WebSocket directly (leeway applies there)
  const fresh = await ticket(srv, srv.token(randomId('ok')));
  assert.equal(fresh.status, 200);
});

test('tickets: an upgrade refused for a connection limit (429) does not spend its ticket', T, async (t) => {
  const srv = await useServer(t, ['--max-connections-per-user', '1']);
  const user = randomId('one');
  const first = await connectAs(srv, user);
  const r = await ticket(srv, srv.token(user));
  assert.equal(r.status, 200);
  const url = srv.wsUrl({ ticket: r.json.ticket });
  const refused = await expectRefusal(url);
  assert.equal(refused.status, 429, refused.text);
  await first.close();
  const c = await pollUntil(async () => {
    try { return await connectReady(url); } catch (err) { if (err.status === 429) return null; throw err; }
  }, { timeoutMs: 5000, what: 'the same ticket after the first connection closed' });
  assert.equal(c.hello.user_id, user);
  // and now it is spent
  const again = await expectRefusal(url);
  assert.equal(again.status, 401);
  await c.close();
});

/* ---------------- streams under the history cap ---------------- */

test('streams: one event to each of 50,000 users under --history-memory-bytes 1 MiB keeps streams and bytes under the cap', T, async (t) => {
  const CAP = 1 << 20;
  const srv = await useServer(t, ['--history-memory-bytes', String(CAP)]);
  const prefix = randomId('s');
  const USERS = 50000;
  for (let b = 0; b < USERS; b += 1000) {
    const batch = Array.from({ length: 1000 }, (_, i) => ({ user_id: `${prefix}_${b + i}`, type: 'note' }));
    const r = await api(srv, 'POST', '/api/v1/publish/batch', batch);
    assert.equal(r.status, 200, r.text);
    assert.ok(r.json.every((x) => x.seq === 1), 'every publish accepted');
  }
  const m = await metrics(srv);
  const streams = metricValue(m, 'agentwire_streams');
  const bytes = metricValue(m, 'agentwire_history_bytes');
  t.diagnostic(`streams ${streams}, history bytes ${bytes}, dropped ${metricValue(m, 'agentwire_streams_dropped_total')}`);
  assert.ok(streams < 10000, `${streams} streams held under a 1 MiB cap (each costs about 200 bytes)`);
  assert.ok(bytes <= CAP, `agentwire_history_bytes ${bytes} <= ${CAP}`);
  assert.ok(metricValue(m, 'agentwire_streams_dropped_total') > 0);
  // a dropped user's next event starts a new epoch at seq 1
  const first = await publish(srv, { user_id: `${prefix}_0`, type: 'note' });
  assert.equal(first.seq, 1, 'the forgotten stream starts again');
  // the newest users still have theirs
  const last = await api(srv, 'GET', `/api/v1/history?user_id=${prefix}_${USERS - 1}`);
  assert.equal(last.json.seq, 1);
  assert.equal(last.json.events.length, 1);
});

test('streams: a connected user\'s stream is never dropped for the cap', T, async (t) => {
  const srv = await useServer(t, ['--history-memory-bytes', '65536']);
  const user = randomId('kept');
  const c = await connectAs(srv, user);
  const ev = await publish(srv, { user_id: user, type: 'before' });
  const prefix = randomId('fill');
  for (let b = 0; b < 3000; b += 1000) {
    const batch = Array.from({ length: 1000 }, (_, i) => ({ user_id: `${prefix}_${b + i}`, type: 'note' }));
    assert.equal((await api(srv, 'POST', '/api/v1/publish/batch', batch)).status, 200);
  }
  const next = await publish(srv, { user_id: user, type: 'after' });
  assert.equal(next.epoch, ev.epoch, 'same epoch');
  assert.equal(next.seq, ev.seq + 1, 'numbering goes on');
  await c.nextMessage((m) => m.type === 'after' && m.seq === next.seq);
  await c.close();
});

/* ---------------- idempotency keys ---------------- */

test('idempotency: at --idempotency-max-keys the oldest key is forgotten and a fresh key is always remembered', T, async (t) => {
  const srv = await useServer(t, ['--idempotency-max-keys', '100']);
  const user = randomId('idem');
  const receipts = [];
  for (let i = 0; i < 150; i++) {
    receipts.push(await publish(srv, { user_id: user, type: 'note', i }, { headers: { 'Idempotency-Key': `k${i}` } }));
  }
  assert.equal(receipts[149].seq, 150);
  // the newest key de-duplicates
  const again = await publish(srv, { user_id: user, type: 'note', i: 149 }, { headers: { 'Idempotency-Key': 'k149' } });
  assert.deepEqual(again, receipts[149]);
  // the 100 newest are remembered, the oldest were forgotten
  const k50 = await publish(srv, { user_id: user, type: 'note' }, { headers: { 'Idempotency-Key': 'k50' } });
  assert.deepEqual(k50, receipts[50]);
  const k0 = await publish(srv, { user_id: user, type: 'note' }, { headers: { 'Idempotency-Key': 'k0' } });
  assert.equal(k0.seq, 151, 'the oldest key was forgotten (published anew)');
  const m = await metrics(srv);
  assert.equal(metricValue(m, 'agentwire_idempotency_keys'), 100);
  const h = await api(srv, 'GET', `/api/v1/history?user_id=${user}`);
  assert.equal(h.json.seq, 151, 'no duplicate event');
});

test('idempotency: an Idempotency-Key header over 255 bytes is refused with 400 and nothing is published', T, async (t) => {
  const srv = await useServer(t);
  const user = randomId('longkey');
  const key = 'x'.repeat(300);
  for (let i = 0; i < 2; i++) {
    const r = await api(srv, 'POST', '/api/v1/publish', { user_id: user, type: 'note' }, { headers: { 'Idempotency-Key': key } });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.json?.error, 'bad_request');
  }
  const h = await api(srv, 'GET', `/api/v1/history?user_id=${user}`);
  assert.equal(h.json.seq, 0, 'nothing was published');
  const ok = await publish(srv, { user_id: user, type: 'note' }, { headers: { 'Idempotency-Key': 'y'.repeat(255) } });
  assert.equal(ok.seq, 1);
});

/* ---------------- user ids and logs ---------------- */

test('a token whose sub has a control character is refused where it is verified: 401 at the upgrade and for a ticket', T, async (t) => {
  const srv = await useServer(t);
  for (const sub of ['evil\nuser', 'tab\there', 'nul\u0000x', 'del\u007f']) {
    const token = srv.token(sub);
    const r = await expectRefusal(srv.url, { headers: { Authorization: `Bearer ${token}` } });
    assert.equal(r.status, 401, `${JSON.stringify(sub)}: ${r.status}`);
    const tk = await ticket(srv, token);
    assert.equal(tk.status, 401, `${JSON.stringify(sub)} ticket: ${tk.status}`);
  }
  // the server still serves runs for valid users (no run stuck open)
  const c = await connectAs(srv, randomId('fine'));
  await c.close();
});

test('text logs escape control characters and quotes: a value cannot forge a field or a line', T, async (t) => {
  // An agent's stderr lines are logged as values (one record per line): the
  // agent chooses their bytes. A CR, an ESC or a quote must not reach the
  // log as such.
  const agent = tempFile(t, 'agent.py', [
    'import sys',
    'sys.stdin.readline()',
    'sys.stderr.write(\'evil" user="admin\\r2030-01-01T00:00:00.000Z warn forged\\x1b[2K\\n\')',
    'sys.stderr.flush()',
    'print(\'{"type":"agent_completed","status":"success","final_response":"ok"}\', flush=True)',
  ].join('\n'));
  // the harness reads JSON logs: this server is started by hand
  const secret = crypto.randomBytes(16).toString('hex');
  const proc = spawn(BIN, ['--listen', '127.0.0.1:0', '--jwt-secret', secret, '--api-key', 'k_text_logs',
    '--log-format', 'text', '--agent', `exec:python3 ${agent}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  t.after(() => proc.kill('SIGKILL'));
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr += d; });
  const port = Number((await pollUntil(() => /listening addr=127\.0\.0\.1:(\d+)/.exec(stderr), { timeoutMs: 15000, what: 'listening' }))[1]);
  const c = await connectReady(`ws://127.0.0.1:${port}/ws`, { headers: { Authorization: `Bearer ${signHS256(secret, { sub: randomId('logs') })}` } });
  c.send({ type: 'start_agent', message_id: 'run1', payload: { user_request: 'hi' } });
  await c.nextMessage((m) => m.type === 'agent_completed', 10000);
  const line = (await pollUntil(() => stderr.split('\n').find((l) => / agent stderr /.test(l)), { timeoutMs: 5000, what: 'the agent stderr line in the log' }));
  assert.ok(!/[\r\x1b]/.test(stderr), 'a raw CR or ESC reached the log');
  assert.ok(line.includes('line="evil\\" user=\\"admin\\x0d2030-01-01T00:00:00.000Z warn forged\\x1b[2K"'), line);
  assert.ok(!/ user=admin/.test(line), `a field was forged: ${line}`);
  await c.close();
});

/* ---------------- ES256 ---------------- */

test('ES256: the high-S spelling of a valid signature is refused (401); the low-S one is accepted; --jwt-allow-high-s takes both', T, async (t) => {
  const keys = generateKeys('ES256');
  const pem = tempFile(t, 'ec.pem', keys.publicPem);
  const srv = await useServer(t, ['--jwt-public-key', pem, '--jwt-alg', 'ES256']);
  const user = randomId('es');
  const low = signWith('ES256', keys.privateKey, { sub: user });
  const sig = Buffer.from(low.split('.')[2], 'base64url');
  const high = `${low.split('.').slice(0, 2).join('.')}.${es256WithS(sig, 'high').toString('base64url')}`;
  assert.notEqual(high, low);
  const r = await expectRefusal(srv.url, { headers: { Authorization: `Bearer ${high}` } });
  assert.equal(r.status, 401, 'high S refused');
  const c = await connectAs({ ...srv, token: () => low }, user);
  assert.equal(c.hello.user_id, user);
  await c.close();

  const lax = await useServer(t, ['--jwt-public-key', pem, '--jwt-alg', 'ES256', '--jwt-allow-high-s']);
  const c2 = await connectAs({ ...lax, token: () => high }, user);
  assert.equal(c2.hello.user_id, user);
  await c2.close();
});

/* ---------------- permessage-deflate final blocks ---------------- */

/** A masked client frame. */
function frame(opcode, payload, { rsv1 = false } = {}) {
  const mask = crypto.randomBytes(4);
  const len = payload.length;
  const head = len < 126 ? Buffer.alloc(2) : Buffer.alloc(4);
  head[0] = 0x80 | (rsv1 ? 0x40 : 0) | opcode;
  if (len < 126) head[1] = 0x80 | len;
  else { head[1] = 0x80 | 126; head.writeUInt16BE(len, 2); }
  const body = Buffer.from(payload);
  for (let i = 0; i < body.length; i++) body[i] ^= mask[i & 3];
  return Buffer.concat([head, mask, body]);
}

test('permessage-deflate: messages that end in a final block (BFINAL=1, zlib Z_FINISH) are read, several in a row with context takeover', T, async (t) => {
  const srv = await useServer(t, ['--deflate', 'on']);
  const token = srv.token(randomId('bfinal'));
  const sock = net.connect(srv.port, '127.0.0.1');
  srv.sockets.add(sock);
  await new Promise((r) => sock.once('connect', r));
  let buf = Buffer.alloc(0);
  sock.on('data', (d) => { buf = Buffer.concat([buf, d]); });
  sock.write(upgradeRequest({ headers: { Authorization: `Bearer ${token}`, 'Sec-WebSocket-Extensions': 'permessage-deflate' } }));
  await pollUntil(() => buf.indexOf('\r\n\r\n') >= 0, { what: 'the 101' });
  const head = buf.subarray(0, buf.indexOf('\r\n\r\n')).toString();
  assert.match(head, /^HTTP\/1\.1 101/);
  assert.match(head, /permessage-deflate/i);
  buf = buf.subarray(buf.indexOf('\r\n\r\n') + 4);
  // server frames: read text messages (inflating compressed ones)
  const inflater = { window: null };
  const messages = [];
  const parse = () => {
    for (;;) {
      if (buf.length < 2) return;
      const rsv1 = (buf[0] & 0x40) !== 0;
      const op = buf[0] & 0x0f;
      let len = buf[1] & 0x7f;
      let off = 2;
      if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4; }
      else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); off = 10; }
      if (buf.length < off + len) return;
      let payload = buf.subarray(off, off + len);
      buf = buf.subarray(off + len);
      if (op === 1) {
        if (rsv1) payload = zlib.inflateRawSync(Buffer.concat([payload, Buffer.from([0, 0, 0xff, 0xff])]), { finishFlush: zlib.constants.Z_SYNC_FLUSH, ...(inflater.window ? { dictionary: inflater.window } : {}) });
        messages.push(JSON.parse(payload.toString()));
      } else if (op === 8) {
        messages.push({ type: '__close', code: payload.length >= 2 ? payload.readUInt16BE(0) : 1005 });
      }
    }
  };
  sock.on('data', parse);
  parse();
  await pollUntil(() => { parse(); return messages.some((m) => m.type === 'connection_established'); }, { what: 'connection_established' });
  // three messages, each a whole raw deflate stream ending in a final block;
  // each later one may refer to the earlier ones (context takeover)
  let dict = Buffer.alloc(0);
  for (let i = 0; i < 3; i++) {
    const text = JSON.stringify({ type: 'heartbeat_check', message_id: `bf${i}`, pad: 'final block '.repeat(5) });
    const opts = dict.length ? { dictionary: dict } : {};
    const z = zlib.deflateRawSync(Buffer.from(text), opts); // Z_FINISH: BFINAL=1
    sock.write(frame(1, z, { rsv1: true }));
    dict = Buffer.concat([dict, Buffer.from(text)]).subarray(-32768);
    const reply = await withTimeout((async () => {
      for (;;) {
        parse();
        const r = messages.find((m) => m.message_id === `bf${i}` || m.for === `bf${i}` || m.type === '__close');
        if (r) return r;
        await new Promise((res) => setTimeout(res, 10));
      }
    })(), 5000, `an answer to message ${i}`);
    assert.notEqual(reply.type, '__close', `message ${i} closed the connection (${reply.code})`);
  }
  sock.destroy();
});
