// permessage-deflate trade-off: server CPU against bytes on the wire, for
// realistic agent events, with compression off and at several thresholds.
//   node bench/deflate.mjs [--users 50] [--conns 4] [--events 400]
// Each configuration runs its own server on a free loopback port; clients are
// node `ws` with permessage-deflate enabled (as browsers offer it).
import { spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { WebSocket } from 'ws';

const arg = (name, def) => { const i = process.argv.indexOf(`--${name}`); return i > 0 ? Number(process.argv[i + 1]) : def; };
const USERS = arg('users', 50), CONNS = arg('conns', 4), EVENTS = arg('events', 400);
const BIN = process.env.AGENTWIRE_BIN ?? new URL('../build/agentwire', import.meta.url).pathname;
const b64 = (b) => Buffer.from(b).toString('base64url');
const token = (secret, sub) => {
  const h = b64(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const p = b64(JSON.stringify({ sub, exp: Math.floor(Date.now() / 1000) + 3600 }));
  return `${h}.${p}.${createHmac('sha256', secret).update(`${h}.${p}`).digest('base64url')}`;
};
const words = 'the agent reads the question then calls a tool and streams an answer with partial results to every tab of the user'.split(' ');
const sentence = (n) => Array.from({ length: n }, (_, i) => words[(i * 7 + n) % words.length]).join(' ');
// A mix like a real run: short thinking and partials, a few big tool results.
function event(user, i) {
  const kind = i % 10;
  if (kind < 6) return { user_id: user, type: 'partial_result', run_id: undefined, content: sentence(8 + (i % 5)) };
  if (kind < 9) return { user_id: user, type: 'progress_update', note: sentence(40 + (i % 20)) };
  return { user_id: user, type: 'tool_output', rows: Array.from({ length: 40 }, (_, r) => ({ id: r, name: sentence(3), score: (r * 37) % 100 })) };
}

const cpuTicks = (pid) => { const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' '); return Number(f[11]) + Number(f[12]); };

async function run(label, extra) {
  const secret = randomBytes(16).toString('hex'), key = randomBytes(16).toString('hex');
  const proc = spawn(BIN, ['--listen', '127.0.0.1:0', '--log-format', 'json', '--log-level', 'info', '--jwt-secret', secret, '--api-key', key,
    '--max-connections-per-user', String(CONNS), '--max-messages-per-second', '0', ...extra], { stdio: ['ignore', 'ignore', 'pipe'] });
  const port = await new Promise((resolve, reject) => {
    let buf = ''; const t = setTimeout(() => reject(new Error('no start')), 10000);
    proc.stderr.on('data', (d) => { buf += d; const m = buf.match(/"addr":"127\.0\.0\.1:(\d+)"/); if (m) { clearTimeout(t); resolve(Number(m[1])); } });
  });
  const expected = USERS * CONNS * EVENTS;
  let got = 0, done; const all = new Promise((r) => (done = r));
  const socks = [];
  for (let u = 0; u < USERS; u++) for (let c = 0; c < CONNS; c++) {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, { headers: { Authorization: `Bearer ${token(secret, `u${u}`)}` }, perMessageDeflate: true });
    socks.push(new Promise((res, rej) => { ws.once('message', () => res(ws)); ws.once('error', rej); }));
    ws.on('message', () => { if (++got === expected + USERS * CONNS) done(); });
  }
  const open = await Promise.all(socks);
  const metric = async (name) => Number((await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()).match(new RegExp(`^${name} (\\d+)`, 'm'))[1]);
  const bytes0 = await metric('agentwire_bytes_sent_total');
  const cpu0 = cpuTicks(proc.pid), t0 = process.hrtime.bigint();
  for (let i = 0; i < EVENTS; i++) {
    const batch = users().map((u) => event(u, i));
    const r = await fetch(`http://127.0.0.1:${port}/api/v1/publish/batch`, { method: 'POST', headers: { Authorization: `Bearer ${key}` }, body: JSON.stringify(batch) });
    if (r.status !== 200) throw new Error(`publish ${r.status}`);
  }
  await all;
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = (cpuTicks(proc.pid) - cpu0) / 100; // clock ticks of 10 ms
  const bytes = (await metric('agentwire_bytes_sent_total')) - bytes0;
  for (const ws of open) ws.terminate();
  proc.kill('SIGTERM');
  return { config: label, deliveries: expected, server_cpu_s: +cpu.toFixed(2), wire_bytes: bytes, bytes_per_delivery: Math.round(bytes / expected), wall_s: +secs.toFixed(2) };
}
function users() { return Array.from({ length: USERS }, (_, u) => `u${u}`); }

const rows = [];
rows.push(await run('deflate off', ['--deflate', 'off']));
for (const min of (process.env.DEFLATE_MINS ?? "0,128,256,1024").split(",").map(Number)) rows.push(await run(`deflate on, min ${min} B`, ['--deflate', 'on', '--deflate-min-bytes', String(min)]));
const base = rows[0];
for (const r of rows) { r.bytes_vs_off = +(r.wire_bytes / base.wire_bytes).toFixed(3); r.cpu_vs_off = +(r.server_cpu_s / Math.max(base.server_cpu_s, 0.01)).toFixed(2); }
console.table(rows);
console.log(JSON.stringify(rows));
