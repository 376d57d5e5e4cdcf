// Client to server messages on an open connection: ping, heartbeat, errors,
// refresh, size limits, rate limiting, and the token's expiry.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { api, connectAs, connectReady, nowS, signHS256, useServer } from './lib/harness.mjs';

const T = { timeout: 30000 };

test('ping gets a pong echoing timestamp and message_id', T, async (t) => {
  const srv = await useServer(t);
  const c = await connectAs(srv, 'pinger');
  c.send({ type: 'ping', timestamp: 123, message_id: 'm1' });
  const pong = await c.nextMessage('pong');
  assert.equal(pong.type, 'pong');
  assert.equal(pong.timestamp, 123);
  assert.equal(pong.message_id, 'm1');
  // a large timestamp survives as a number
  c.send({ type: 'ping', timestamp: 1764201600123, message_id: 'm2' });
  const pong2 = await c.nextMessage((m) => m.type === 'pong' && m.message_id === 'm2');
  assert.equal(pong2.timestamp, 1764201600123);
});

test('heartbeat gets heartbeat_ack', T, async (t) => {
  const srv = await useServer(t);
  const c = await connectAs(srv, 'hb');
  c.send({ type: 'heartbeat', message_id: 'h1' });
  const ack = await c.nextMessage('heartbeat_ack');
  assert.equal(ack.message_id, 'h1');
});

test('invalid JSON gets error invalid_json and the connection stays open', T, async (t) => {
  const srv = await useServer(t);
  const c = await connectAs(srv, 'badjson');
  c.send('{"type":"ping",');
  const err = await c.nextMessage('error');
  assert.equal(err.code, 'invalid_json');
  assert.equal(typeof err.message, 'string');
  c.send('not json at all');
  assert.equal((await c.nextMessage('error')).code, 'invalid_json');
  await c.sync();
  assert.ok(c.isOpen);
});

test('an unknown type gets error unknown_type echoing message_id; the connection stays open', T, async (t) => {
  const srv = await useServer(t);
  const c = await connectAs(srv, 'unknown');
  c.send({ type: 'frobnicate', message_id: 'u7' });
  const err = await c.nextMessage('error');
  assert.equal(err.code, 'unknown_type');
  assert.equal(err.message_id, 'u7');
  await c.sync();
  assert.ok(c.isOpen);
});

test('JSON that is not a message (no type, not an object) gets an error, not a close', T, async (t) => {
  const srv = await useServer(t);
  const c = await connectAs(srv, 'notmsg');
  for (const text of ['{"message_id":"x1"}', '[1,2,3]', '42', '{"type":7}']) {
    c.send(text);
    const err = await c.nextMessage('error');
    assert.ok(['invalid_message', 'unknown_type', 'invalid_json'].includes(err.code), `${text}: code ${err.code}`);
  }
  await c.sync();
  assert.ok(c.isOpen);
});

test('a text frame of exactly --max-message-bytes is read; one byte more closes 1009', T, async (t) => {
  const srv = await useServer(t, ['--max-message-bytes', '1024']);
  const c = await connectAs(srv, 'sizer');
  assert.equal(c.hello.max_message_bytes, 1024);
  const base = JSON.stringify({ type: 'ping', message_id: 'fit', pad: '' });
  const fit = JSON.stringify({ type: 'ping', message_id: 'fit', pad: 'x'.repeat(1024 - base.length) });
  assert.equal(Buffer.byteLength(fit), 1024);
  c.send(fit);
  await c.nextMessage((m) => m.type === 'pong' && m.message_id === 'fit');
  const over = JSON.stringify({ type: 'ping', message_id: 'big', pad: 'x'.repeat(1025 - base.length) });
  assert.equal(Buffer.byteLength(over), 1025);
  c.send(over);
  const { code } = await c.waitClose();
  assert.equal(code, 1009);
  assert.equal(c.pending((m) => m.type === 'pong' && m.message_id === 'big').length, 0);
});

test('a much larger text frame closes 1009 (default limit 65536)', T, async (t) => {
  const srv = await useServer(t);
  const c = await connectAs(srv, 'huge');
  c.send(JSON.stringify({ type: 'ping', pad: 'y'.repeat(200000) }));
  assert.equal((await c.waitClose()).code, 1009);
});

test('invalid UTF-8 in a text frame closes 1007', T, async (t) => {
  const srv = await useServer(t);
  const c = await connectAs(srv, 'utf8');
  c.send(Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d])); // {"\xff\xfe"}
  assert.equal((await c.waitClose()).code, 1007);
});

test('bad messages: errors up to 10, rate_limited past 10, close 1008 past 20', T, async (t) => {
  const srv = await useServer(t);
  const c = await connectAs(srv, 'spammer');
  // 10 bad messages: 10 invalid_json errors, not limited yet
  for (let i = 1; i <= 10; i++) c.send(`{bad ${i}`);
  const first = await c.nextMessages(10, 'error');
  assert.deepEqual(first.map((e) => e.code), Array(10).fill('invalid_json'));
  await c.sync();
  // the 11th is past the limit
  c.send('{bad 11');
  await c.nextMessage((m) => m.type === 'error' && m.code === 'rate_limited');
  // 12..20: each still answered with an error, connection open
  for (let i = 12; i <= 20; i++) {
    c.send(`{bad ${i}`);
    await c.nextMessage('error');
  }
  assert.equal(c.closeInfo, null, 'closed before the 21st bad message');
  // past 20: closed with 1008 (allow the close to follow a last error reply)
  for (let i = 21; i <= 23 && !c.closeInfo; i++) c.send(`{bad ${i}`);
  const { code } = await c.waitClose();
  assert.equal(code, 1008);
});

test('good messages do not count against the bad-message limit', T, async (t) => {
  const srv = await useServer(t);
  const c = await connectAs(srv, 'chatty');
  for (let i = 0; i < 40; i++) c.send({ type: 'ping', timestamp: i, message_id: `p${i}` });
  const pongs = await c.nextMessages(40, 'pong');
  assert.deepEqual(pongs.map((p) => p.timestamp), [...Array(40).keys()]);
  assert.equal(c.pending((m) => m.type === 'error').length, 0);
  assert.ok(c.isOpen);
});

/* ---------------- refresh ---------------- */

test('refresh with a valid token for the same sub is acked (payload and flat forms)', T, async (t) => {
  const srv = await useServer(t);
  const c = await connectAs(srv, 'refresher');
  c.send({ type: 'refresh', message_id: 'r1', payload: { token: srv.token('refresher') } });
  const ack = await c.nextMessage('ack');
  assert.equal(ack.message_id, 'r1');
  c.send({ type: 'refresh', message_id: 'r2', token: srv.token('refresher') });
  const ack2 = await c.nextMessage('ack');
  assert.equal(ack2.message_id, 'r2');
  assert.ok(c.isOpen);
});

test('refresh with an invalid token gets invalid_token and changes nothing', T, async (t) => {
  const srv = await useServer(t);
  const c = await connectAs(srv, 'refresh-bad');
  const bad = {
    'wrong signature': signHS256('nope', { sub: 'refresh-bad' }),
    expired: srv.token('refresh-bad', { exp: nowS() - 10 }),
    garbage: 'xyz',
  };
  for (const [what, token] of Object.entries(bad)) {
    c.send({ type: 'refresh', message_id: what, payload: { token } });
    const err = await c.nextMessage('error');
    assert.equal(err.code, 'invalid_token', what);
    assert.equal(err.message_id, what);
  }
  await c.sync();
  assert.ok(c.isOpen);
  assert.equal(c.pending('ack').length, 0);
});

test('refresh with a token for another sub closes 1008', T, async (t) => {
  const srv = await useServer(t);
  const c = await connectAs(srv, 'victim');
  c.send({ type: 'refresh', payload: { token: srv.token('intruder') } });
  assert.equal((await c.waitClose()).code, 1008);
  assert.equal(c.pending('ack').length, 0);
});

/* ---------------- token expiry ---------------- */

test('a connection is closed 4001 token_expired when its token expires', T, async (t) => {
  const srv = await useServer(t);
  const exp = nowS() + 2;
  const c = await connectAs(srv, 'short-lived', { claims: { exp } });
  const long = await connectAs(srv, 'short-lived');
  const info = await c.waitClose(8000);
  assert.equal(info.code, 4001);
  assert.equal(info.reason, 'token_expired');
  assert.ok(Date.now() >= exp * 1000 - 1000, `closed at ${Date.now()}, before exp ${exp * 1000}`);
  await long.sync();
  assert.ok(long.isOpen, 'a connection with a later exp stays open');
});

test('a connection made with a ticket expires with the JWT the ticket was issued for', T, async (t) => {
  const srv = await useServer(t);
  const exp = nowS() + 2;
  const res = await api(srv, 'POST', '/api/v1/tickets', undefined, { key: srv.token('ticket-exp', { exp }) });
  assert.equal(res.status, 200, res.text);
  const c = await connectReady(srv.wsUrl({ ticket: res.json.ticket }));
  assert.equal(c.hello.user_id, 'ticket-exp');
  const info = await c.waitClose(8000);
  assert.equal(info.code, 4001);
  assert.equal(info.reason, 'token_expired');
});

test('refresh moves the expiry: a refreshed connection outlives its first token', T, async (t) => {
  const srv = await useServer(t);
  const exp = nowS() + 2;
  const stale = await connectAs(srv, 'refresh-exp', { claims: { exp } });
  const fresh = await connectAs(srv, 'refresh-exp', { claims: { exp } });
  fresh.send({ type: 'refresh', message_id: 'rx', payload: { token: srv.token('refresh-exp', { exp: nowS() + 3600 }) } });
  await fresh.nextMessage('ack');
  assert.equal((await stale.waitClose(8000)).code, 4001);
  await fresh.sync();
  assert.ok(fresh.isOpen);
});
