// Quick fan-out figure: U users with C connections each; P publishers post
// batches of events through the HTTP API; reports deliveries per second from
// the first publish to the last event received.
//   node bench/fanout.mjs [--users 100] [--conns 5] [--events 200] [--batch 100]
// The server is started by this script on a free loopback port.
import { spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { WebSocket } from 'ws';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const USERS = Number(args.users ?? 100);
const CONNS = Number(args.conns ?? 5);
const EVENTS = Number(args.events ?? 200); // per user
const BATCH = Number(args.batch ?? 100);
const BIN = process.env.AGENTWIRE_BIN ?? new URL('../build/agentwire', import.meta.url).pathname;

const b64 = (b) => Buffer.from(b).toString('base64url');
function token(secret, sub) {
  const h = b64(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const p = b64(JSON.stringify({ sub, exp: Math.floor(Date.now() / 1000) + 3600 }));
  return `${h}.${p}.${createHmac('sha256', secret).update(`${h}.${p}`).digest('base64url')}`;
}

const secret = randomBytes(16).toString('hex');
const key = randomBytes(16).toString('hex');
const proc = spawn(BIN, ['--listen', '127.0.0.1:0', '--log-format', 'json', '--log-level', 'info',
  '--jwt-secret', secret, '--api-key', key, '--max-connections-per-user', String(CONNS)],
  { stdio: ['ignore', 'ignore', 'pipe'] });
const port = await new Promise((resolve, reject) => {
  let buf = '';
  const timer = setTimeout(() => reject(new Error('server did not start')), 10000);
  proc.stderr.on('data', (d) => {
    buf += d;
    const m = buf.match(/"addr":"127\.0\.0\.1:(\d+)"/) ?? buf.match(/addr=127\.0\.0\.1:(\d+)/);
    if (m) { clearTimeout(timer); resolve(Number(m[1])); }
  });
});
const expected = USERS * CONNS * EVENTS;
let received = 0;
let done;
const allDone = new Promise((r) => (done = r));
const sockets = [];
for (let u = 0; u < USERS; u++) {
  for (let c = 0; c < CONNS; c++) {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, { headers: { Authorization: `Bearer ${token(secret, `u${u}`)}` } });
    sockets.push(new Promise((resolve, reject) => {
      ws.once('message', () => resolve(ws));
      ws.once('error', reject);
    }));
    ws.on('message', () => { if (++received === expected + USERS * CONNS) done(); });
  }
}
const open = await Promise.all(sockets);
const t0 = process.hrtime.bigint();
const posts = [];
for (let sent = 0; sent < USERS * EVENTS; sent += BATCH) {
  const batch = [];
  for (let i = sent; i < Math.min(sent + BATCH, USERS * EVENTS); i++) {
    batch.push({ user_id: `u${i % USERS}`, type: 'progress_update', n: i, text: 'x'.repeat(100) });
  }
  posts.push(fetch(`http://127.0.0.1:${port}/api/v1/publish/batch`, {
    method: 'POST', headers: { Authorization: `Bearer ${key}` }, body: JSON.stringify(batch),
  }).then((r) => { if (r.status !== 200) throw new Error(`publish ${r.status}`); return r.text(); }));
  if (posts.length >= 8) await posts.shift();
}
await Promise.all(posts);
const timeout = setTimeout(() => { console.error(`timeout: ${received} of ${expected}`); process.exit(1); }, 60000);
await allDone;
clearTimeout(timeout);
const secs = Number(process.hrtime.bigint() - t0) / 1e9;
console.log(JSON.stringify({ users: USERS, connections: USERS * CONNS, events_published: USERS * EVENTS,
  deliveries: expected, seconds: +secs.toFixed(3), deliveries_per_s: Math.round(expected / secs) }));
for (const ws of open) ws.terminate();
proc.kill('SIGTERM');
