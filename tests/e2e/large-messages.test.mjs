// Large messages: payloads that arrive in many reads stream into the frame
// they will be sent from, and freed frames are kept for reuse by each loop
// (--frame-cache-bytes) until they stay unused for a second.
//
// Asserted: 1 MiB and 4 MiB messages (binary and multibyte text) echo back
// byte for byte on several connections at once, with one and two loops and
// with the cache off; a large JSON message on /ws is read like a small one;
// and after a burst of 1 MiB echoes the memory goes back (RSS returns near
// where it started), so the cache holds nothing once the load is gone.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { test } from 'node:test';
import WebSocket from 'ws';
import { pollUntil, useServer, withTimeout } from './lib/harness.mjs';
import { rssKiB, underAsan } from './lib/attack-util.mjs';

const MiB = 1024 * 1024;
const ECHO = ['--echo-path', '/echo', '--max-message-bytes', String(8 * MiB),
  '--queue-limit-bytes', String(64 * MiB), '--max-messages-per-second', '0'];

function open(srv, user, path = '/echo') {
  const ws = new WebSocket(srv.wsUrl({ token: srv.token(user) }, path), { maxPayload: 16 * MiB });
  srv.clients.add(ws);
  return withTimeout(new Promise((resolve, reject) => {
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  }), 10000, `connect ${user}`);
}

/** Text of n bytes with 1-, 2-, 3- and 4-byte characters. */
function mixedText(n) {
  const unit = 'aé€😀'; // 1 + 2 + 3 + 4 bytes
  let s = unit.repeat(Math.ceil(n / 10));
  while (Buffer.byteLength(s) > n) s = s.slice(0, -1);
  return s;
}

/** Sends each message in turn and expects it back, byte for byte. */
async function echoAll(ws, msgs) {
  const got = [];
  const done = new Promise((resolve, reject) => {
    ws.on('message', (data, isBinary) => {
      got.push({ data: Buffer.from(data), isBinary });
      if (got.length === msgs.length) resolve();
    });
    ws.once('close', (code) => reject(new Error(`closed ${code} after ${got.length} echoes`)));
  });
  for (const m of msgs) ws.send(m);
  await withTimeout(done, 60000, `${msgs.length} echoes`);
  for (let i = 0; i < msgs.length; i++) {
    const want = Buffer.isBuffer(msgs[i]) ? msgs[i] : Buffer.from(msgs[i], 'utf8');
    assert.equal(got[i].isBinary, Buffer.isBuffer(msgs[i]), `echo ${i}: opcode`);
    assert.ok(got[i].data.equals(want), `echo ${i}: ${got[i].data.length} bytes differ from the ${want.length} sent`);
  }
}

for (const [name, extra] of [
  ['one loop', ['--threads', '1']],
  ['two loops', ['--threads', '2']],
  ['frame cache off', ['--frame-cache-bytes', '0']],
]) {
  test(`1 MiB and 4 MiB messages echo byte for byte on 6 connections at once (${name})`, { timeout: 120000 }, async (t) => {
    const srv = await useServer(t, [...ECHO, ...extra]);
    const conns = await Promise.all(Array.from({ length: 6 }, (_, i) => open(srv, `big${i}`)));
    await Promise.all(conns.map((ws, i) => echoAll(ws, [
      crypto.randomBytes(MiB + i),
      mixedText(MiB - i),
      crypto.randomBytes(4 * MiB + 3),
      mixedText(4 * MiB),
      crypto.randomBytes(100),
    ])));
    for (const ws of conns) ws.close();
  });
}

test('a 2 MiB JSON message on /ws is read whole (a 64 KiB-padded user_message gets its answer)', { timeout: 60000 }, async (t) => {
  const srv = await useServer(t, ['--max-message-bytes', String(4 * MiB), '--max-messages-per-second', '0']);
  const ws = await open(srv, 'json_big', '/ws');
  const frames = [];
  ws.on('message', (d) => frames.push(JSON.parse(d.toString())));
  // A message the server must parse whole: a resume with a 2 MiB padding field
  // is still one JSON object; the answer carries its message_id.
  const msg = JSON.stringify({ type: 'ping', message_id: 'm_big', pad: 'x'.repeat(2 * MiB) });
  assert.ok(Buffer.byteLength(msg) > 2 * MiB);
  ws.send(msg);
  await pollUntil(() => frames.some((f) => f.message_id === 'm_big'), { timeoutMs: 20000, what: 'the answer to the 2 MiB message' });
  const answer = frames.find((f) => f.message_id === 'm_big');
  assert.notEqual(answer.type, 'error', `the 2 MiB message was refused: ${JSON.stringify(answer)}`);
  ws.close();
});

test('after a burst of 1 MiB echoes the memory goes back within seconds', { timeout: 120000 }, async (t) => {
  // a small kernel send buffer: the echoes wait in the server's own queues
  const srv = await useServer(t, [...ECHO, '--threads', '1', '--send-buffer-bytes', '65536']);
  const asan = underAsan(srv.proc.pid);
  const conns = await Promise.all(Array.from({ length: 16 }, (_, i) => open(srv, `burst${i}`)));
  const before = rssKiB(srv.proc.pid);
  // The clients stop reading, so the echoes pile up in the server's queues:
  // 16 connections x 12 messages of 1 MiB.
  for (const ws of conns) ws._socket.pause();
  const echoed = conns.map((ws) => echoAll(ws, Array.from({ length: 12 }, () => crypto.randomBytes(MiB))));
  let peak = before;
  if (!asan) {
    await pollUntil(() => (peak = Math.max(peak, rssKiB(srv.proc.pid))) > before + 64 * 1024, {
      timeoutMs: 30000,
      what: `the server holding the echoes (RSS ${peak} KiB, before ${before})`,
    });
  }
  for (const ws of conns) ws._socket.resume();
  await Promise.all(echoed);
  if (asan) {
    t.diagnostic('AddressSanitizer build: no frame cache and no meaningful RSS; the echoes were checked');
    return;
  }
  // Unused frames are freed at the second trim after the burst at the latest.
  await pollUntil(() => rssKiB(srv.proc.pid) < before + 48 * 1024, {
    timeoutMs: 15000,
    intervalMs: 250,
    what: `RSS back under ${before + 48 * 1024} KiB (before ${before}, at the peak ${peak})`,
  });
  t.diagnostic(`RSS before ${before} KiB, at the peak ${peak} KiB, now ${rssKiB(srv.proc.pid)} KiB`);
  for (const ws of conns) ws.close();
});
