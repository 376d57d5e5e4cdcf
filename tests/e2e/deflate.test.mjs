// permessage-deflate (RFC 7692) end to end: negotiation in the handshake,
// events compressed once and inflated by real clients, compressed client
// messages, and the bounds: a compression bomb gets 1009, invalid UTF-8 in a
// compressed text 1007, garbage 1002, and --deflate off offers nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import crypto from 'node:crypto';
import WebSocket from 'ws';
import net from 'node:net';
import {
  useServer, upgradeRequest, publish, api, metricValue, withTimeout, rawUpgrade, frameReader,
} from './lib/harness.mjs';

const T = { timeout: 30000 };

function clientFrame(opcode, payload, { rsv1 = false, fin = true } = {}) {
  const mask = crypto.randomBytes(4);
  const len = payload.length;
  const head = len < 126 ? Buffer.from([0, 0x80 | len]) : len < 65536 ? Buffer.from([0, 0x80 | 126, len >> 8, len & 255]) : null;
  assert.ok(head, 'small frames only');
  head[0] = (fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | opcode;
  const body = Buffer.from(payload);
  for (let i = 0; i < body.length; i++) body[i] ^= mask[i % 4];
  return Buffer.concat([head, mask, body]);
}

const deflateRaw = (data) => {
  const out = zlib.deflateRawSync(data, { finishFlush: zlib.constants.Z_SYNC_FLUSH });
  return out.subarray(0, out.length - 4); // the 00 00 ff ff tail is not sent
};
const inflateRaw = (data) => zlib.inflateRawSync(Buffer.concat([data, Buffer.from([0, 0, 0xff, 0xff])]), { finishFlush: zlib.constants.Z_SYNC_FLUSH });

async function rawDeflateClient(srv, sub, offer = 'permessage-deflate; client_max_window_bits') {
  const up = await rawUpgrade(srv, { Authorization: `Bearer ${srv.token(sub)}`, 'Sec-WebSocket-Extensions': offer });
  assert.equal(up.status, 101, up.text);
  const reader = frameReader(up.socket, up.rest);
  const hello = await reader.next();
  assert.equal(hello.opcode, 1);
  assert.equal(hello.rsv1, false, 'replies are not compressed');
  return { up, reader, sock: up.socket, hello: JSON.parse(hello.payload) };
}

test('the handshake answers a deflate offer with server_no_context_takeover', T, async (t) => {
  const srv = await useServer(t);
  const { up, sock } = await rawDeflateClient(srv, 'd1', 'permessage-deflate; client_max_window_bits; server_max_window_bits=12');
  assert.equal(up.headers['sec-websocket-extensions'],
    'permessage-deflate; server_no_context_takeover; server_max_window_bits=12; client_max_window_bits=15');
  sock.destroy();
});

test('a large event arrives compressed (RSV1) and inflates to the event; small ones are plain', T, async (t) => {
  const srv = await useServer(t, ['--deflate-min-bytes', '512']);
  const { reader, sock } = await rawDeflateClient(srv, 'd2');
  const text = 'agentwire '.repeat(400);
  await publish(srv, { user_id: 'd2', type: 'note', text });
  const big = await reader.next();
  assert.equal(big.rsv1, true);
  assert.ok(big.payload.length < text.length / 5, `compressed to ${big.payload.length} bytes`);
  const ev = JSON.parse(inflateRaw(big.payload));
  assert.equal(ev.text, text);
  assert.equal(ev.seq, 1);
  await publish(srv, { user_id: 'd2', type: 'note', text: 'hi' });
  const small = await reader.next();
  assert.equal(small.rsv1, false, 'below --deflate-min-bytes (512): sent plain');
  assert.equal(JSON.parse(small.payload).seq, 2);
  sock.destroy();
});

test('every connection of a user gets the same compressed bytes, and ws clients read them', T, async (t) => {
  const srv = await useServer(t);
  const raw1 = await rawDeflateClient(srv, 'd3');
  const raw2 = await rawDeflateClient(srv, 'd3');
  const ws = new WebSocket(`ws://127.0.0.1:${srv.port}/ws`, { headers: { Authorization: `Bearer ${srv.token('d3')}` }, perMessageDeflate: true });
  const got = [];
  ws.on('message', (d) => got.push(JSON.parse(d)));
  await new Promise((r) => ws.once('open', r));
  assert.match(ws.extensions, /permessage-deflate/);
  const text = 'x'.repeat(3000) + crypto.randomBytes(16).toString('hex');
  await publish(srv, { user_id: 'd3', type: 'note', text });
  const a = await raw1.reader.next();
  const b = await raw2.reader.next();
  assert.equal(a.rsv1, true);
  assert.deepEqual(a.payload, b.payload, 'one compressed copy shared by all');
  while (!got.some((m) => m.type === 'note')) await new Promise((r) => setTimeout(r, 10));
  assert.equal(got.find((m) => m.type === 'note').text, text);
  ws.close(); raw1.sock.destroy(); raw2.sock.destroy();
});

test('compressed client messages are inflated; context is kept across messages', T, async (t) => {
  const srv = await useServer(t);
  const ws = new WebSocket(`ws://127.0.0.1:${srv.port}/ws`, { headers: { Authorization: `Bearer ${srv.token('d4')}` }, perMessageDeflate: { threshold: 0 } });
  const msgs = [];
  ws.on('message', (d) => msgs.push(JSON.parse(d)));
  await new Promise((r) => ws.once('open', r));
  for (let i = 0; i < 5; i++) ws.send(JSON.stringify({ type: 'ping', timestamp: i, message_id: `p${i}` }));
  await withTimeout((async () => { while (msgs.filter((m) => m.type === 'pong').length < 5) await new Promise((r) => setTimeout(r, 10)); })(), 5000, 'five pongs');
  assert.deepEqual(msgs.filter((m) => m.type === 'pong').map((m) => m.timestamp), [0, 1, 2, 3, 4]);
  ws.close();
});

test('a compression bomb is closed with 1009 and never inflated past the limit', T, async (t) => {
  const srv = await useServer(t, ['--max-message-bytes', '65536']);
  const before = metricValue((await api(srv, 'GET', '/metrics', undefined, { key: null })).text, 'agentwire_connections');
  const { reader, sock } = await rawDeflateClient(srv, 'd5');
  const bomb = deflateRaw(Buffer.alloc(50 * 1024 * 1024, 0x20)); // 50 MB of spaces
  assert.ok(bomb.length < 65536, `bomb is ${bomb.length} bytes on the wire`);
  sock.write(clientFrame(1, bomb, { rsv1: true }));
  const close = await reader.next();
  assert.equal(close.opcode, 8);
  assert.equal(close.payload.readUInt16BE(0), 1009);
  sock.destroy();
  const after = metricValue((await api(srv, 'GET', '/metrics', undefined, { key: null })).text, 'agentwire_connections');
  assert.ok(after <= before + 1);
});

test('compressed text that inflates to invalid UTF-8 gets 1007; garbage gets 1002', T, async (t) => {
  const srv = await useServer(t);
  const c1 = await rawDeflateClient(srv, 'd6');
  c1.sock.write(clientFrame(1, deflateRaw(Buffer.from([0x7b, 0xff, 0xfe, 0x7d])), { rsv1: true }));
  const f1 = await c1.reader.next();
  assert.equal(f1.payload.readUInt16BE(0), 1007);
  c1.sock.destroy();
  const c2 = await rawDeflateClient(srv, 'd6');
  c2.sock.write(clientFrame(1, Buffer.from([0xff, 0xff, 0xff, 0x12, 0x34]), { rsv1: true }));
  const f2 = await c2.reader.next();
  assert.equal(f2.payload.readUInt16BE(0), 1002);
  c2.sock.destroy();
});

test('RSV1 on a continuation or control frame is a protocol error even with deflate', T, async (t) => {
  const srv = await useServer(t);
  const c = await rawDeflateClient(srv, 'd7');
  c.sock.write(clientFrame(9, Buffer.from('hi'), { rsv1: true }));
  const f = await c.reader.next();
  assert.equal(f.payload.readUInt16BE(0), 1002);
  c.sock.destroy();
});

test('--deflate off: the offer is ignored and RSV1 is refused', T, async (t) => {
  const srv = await useServer(t, ['--deflate', 'off']);
  const up = await rawUpgrade(srv, { Authorization: `Bearer ${srv.token('d8')}`, 'Sec-WebSocket-Extensions': 'permessage-deflate' });
  assert.equal(up.status, 101);
  assert.equal(up.headers['sec-websocket-extensions'], undefined);
  const reader = frameReader(up.socket, up.rest);
  await reader.next(); // connection_established
  up.socket.write(clientFrame(1, deflateRaw(Buffer.from('{"type":"ping"}')), { rsv1: true }));
  const f = await reader.next();
  assert.equal(f.opcode, 8);
  assert.equal(f.payload.readUInt16BE(0), 1002);
  up.socket.destroy();
});
