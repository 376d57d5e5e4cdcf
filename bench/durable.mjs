// durable.mjs -- what --data-dir costs: publish throughput and publish
// latency of one node in memory mode against --data-dir with each --fsync
// mode, in the same run, and the start-up time with a large store.
//
//   node bench/durable.mjs [--bin build/agentwire] [--seconds 5] [--rounds 3] [--startup-events 1000000] [--md FILE]
//
// Each setup: a fresh node (--threads 1) and one WebSocket subscriber per
// user; publishers post batches of 200 events (20 users x 10) over 4
// keep-alive connections for --seconds; reported: events acknowledged per
// second, deliveries per second, batch round trip p50/p99. The four setups
// run in turn, --rounds times; each figure is the median of its rounds, and
// the ratio is taken against memory mode's median. Exits 1 if any
// acknowledged event was not delivered. Then the store is
// filled with --startup-events events over users of 10 events each, the node
// restarted, and the time from spawn to "listening" is measured, with the
// first history read of a stored user.
//
// --md FILE: also write the results as the markdown section "h) Durable
// history on one node" of docs/benchmarks.md (the run's own figures) to
// FILE. A full run (--seconds, --rounds and --startup-events at their
// defaults) without --md writes bench/results/durable.md; a shortened run
// writes no markdown unless --md is given.

import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : dflt; };
const BIN = opt('--bin', path.join(ROOT, 'build/agentwire'));
const SECONDS = Number(opt('--seconds', '5'));
const ROUNDS = Number(opt('--rounds', '3'));
const STARTUP_EVENTS = Number(opt('--startup-events', '1000000'));
const FULL_RUN = SECONDS === 5 && ROUNDS === 3 && STARTUP_EVENTS === 1000000;
if (args.includes('--md') && !opt('--md')) { console.error('--md needs a FILE'); process.exit(2); }
const MD = args.includes('--md') ? path.resolve(opt('--md')) : FULL_RUN ? path.join(ROOT, 'bench/results/durable.md') : null;
const USERS = 20;
const SECRET = crypto.randomBytes(16).toString('hex');
const KEY = `k${crypto.randomBytes(8).toString('hex')}`;
const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });

console.log(`$ node bench/durable.mjs ${args.join(' ')}`.trim());
console.log(`machine: ${os.cpus().length} cores (${os.cpus()[0].model}); binary ${BIN}\n`);

function b64(x) { return Buffer.from(x).toString('base64url'); }
function token(sub) {
  const h = b64(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const p = b64(JSON.stringify({ sub, exp: Math.floor(Date.now() / 1000) + 3600 }));
  return `${h}.${p}.${crypto.createHmac('sha256', SECRET).update(`${h}.${p}`).digest('base64url')}`;
}

function start(extra) {
  const t0 = process.hrtime.bigint();
  const proc = spawn(BIN, ['--listen', '127.0.0.1:0', '--log-format', 'json', '--threads', '1', '--jwt-secret', SECRET,
    '--api-key', KEY, '--max-messages-per-second', '0', '--queue-limit-bytes', '67108864', '--history-size', '1000', ...extra],
  { stdio: ['ignore', 'ignore', 'pipe'] });
  return new Promise((resolve, reject) => {
    let buf = '';
    proc.stderr.on('data', (c) => {
      buf += c;
      for (const line of buf.split('\n')) {
        if (!line.includes('"listening"')) continue;
        const port = Number(/:(\d+)"/.exec(JSON.parse(line).addr)?.[1] ?? JSON.parse(line).addr.split(':').pop());
        resolve({ proc, port, startMs: Number(process.hrtime.bigint() - t0) / 1e6, log: () => buf });
        return;
      }
    });
    proc.on('exit', (code) => reject(new Error(`agentwire exited ${code}: ${buf}`)));
  });
}

function post(port, p, body) {
  const data = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: p, method: 'POST', agent,
      headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) } }, (res) => {
      let t = '';
      res.on('data', (c) => { t += c; });
      res.on('end', () => resolve({ status: res.statusCode, text: t }));
    });
    req.on('error', reject);
    req.end(data);
  });
}

function get(port, p) {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: p, agent, headers: { Authorization: `Bearer ${KEY}` } }, (res) => {
      let t = '';
      res.on('data', (c) => { t += c; });
      res.on('end', () => resolve({ status: res.statusCode, text: t }));
    }).on('error', reject);
  });
}

const pct = (a, q) => a.length ? a.slice().sort((x, y) => x - y)[Math.min(a.length - 1, Math.floor(q * a.length))] : NaN;

async function throughput(label, extra) {
  const node = await start(extra);
  let delivered = 0;
  const sockets = await Promise.all(Array.from({ length: USERS }, (_, u) => new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${node.port}/ws`, { headers: { Authorization: `Bearer ${token(`u${u}`)}` }, perMessageDeflate: false });
    ws.on('message', (d) => { if (d.length > 60 && d.includes('"bench"')) delivered++; });
    ws.on('open', () => resolve(ws));
    ws.on('error', reject);
  })));
  let acked = 0;
  const rtts = [];
  const until = Date.now() + SECONDS * 1000;
  const worker = async () => {
    while (Date.now() < until) {
      const batch = [];
      for (let u = 0; u < USERS; u++) for (let i = 0; i < 10; i++) batch.push({ user_id: `u${u}`, type: 'bench', i, pad: 'x'.repeat(100) });
      const t0 = process.hrtime.bigint();
      const r = await post(node.port, '/api/v1/publish/batch', batch);
      rtts.push(Number(process.hrtime.bigint() - t0) / 1e6);
      if (r.status !== 200) throw new Error(`${label}: ${r.status} ${r.text.slice(0, 200)}`);
      acked += batch.length;
    }
  };
  const t0 = Date.now();
  await Promise.all([worker(), worker(), worker(), worker()]);
  const secs = (Date.now() - t0) / 1000;
  const deadline = Date.now() + 10000;
  while (delivered < acked && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  for (const ws of sockets) ws.terminate();
  node.proc.kill('SIGTERM');
  await new Promise((r) => node.proc.on('exit', r));
  return { label, acked_per_s: Math.round(acked / secs), delivered_per_s: Math.round(delivered / secs), delivered, acked, lost: acked - delivered,
    batch_p50_ms: +pct(rtts, 0.5).toFixed(2), batch_p99_ms: +pct(rtts, 0.99).toFixed(2) };
}

const dirs = [];
const tmp = () => { const d = fs.mkdtempSync(path.join(os.tmpdir(), 'aw-durable-')); dirs.push(d); return d; };
process.on('exit', () => { for (const d of dirs) fs.rmSync(d, { recursive: true, force: true }); });

const setups = [['memory (no --data-dir)', () => []],
  ...['off', 'batch', 'always'].map((mode) => [`--data-dir, --fsync ${mode}`, () => ['--data-dir', tmp(), '--fsync', mode]])];
const runs = setups.map(() => []);
for (let round = 0; round < ROUNDS; round++)
  for (let k = 0; k < setups.length; k++) runs[k].push(await throughput(setups[k][0], setups[k][1]()));
const median = (a) => { const s = a.slice().sort((x, y) => x - y); return s[Math.floor((s.length - 1) / 2)]; };
const rows = runs.map((rs) => ({ label: rs[0].label, acked_per_s: median(rs.map((r) => r.acked_per_s)),
  delivered_per_s: median(rs.map((r) => r.delivered_per_s)), batch_p50_ms: median(rs.map((r) => r.batch_p50_ms)),
  batch_p99_ms: median(rs.map((r) => r.batch_p99_ms)), lost: rs.reduce((n, r) => n + r.lost, 0),
  rounds: rs.map((r) => r.acked_per_s) }));
const base = rows[0].acked_per_s;
console.log(`## Publish throughput, ${SECONDS} s per setup, median of ${ROUNDS} rounds (batches of 200 events of ~200 bytes, 20 users with one subscriber each, 4 keep-alive publishers)\n`);
console.log('| setup | events acknowledged/s | deliveries/s | vs memory | batch round trip p50 / p99 ms | rounds (acknowledged/s) | lost |');
console.log('| --- | --- | --- | --- | --- | --- | --- |');
for (const r of rows) console.log(`| ${r.label} | ${r.acked_per_s.toLocaleString('en')} | ${r.delivered_per_s.toLocaleString('en')} | ${(r.acked_per_s / base).toFixed(2)}× | ${r.batch_p50_ms} / ${r.batch_p99_ms} | ${r.rounds.map((x) => x.toLocaleString('en')).join(' / ')} | ${r.lost} |`);
for (const r of rows) console.log(`RESULT ${JSON.stringify(r)}`);
const lost = rows.reduce((n, r) => n + r.lost, 0);

// start-up with a large store
const dir = tmp();
let node = await start(['--data-dir', dir, '--history-size', '10']);
const per = 10;
const users = Math.ceil(STARTUP_EVENTS / per);
const fillT0 = Date.now();
for (let u0 = 0; u0 < users; u0 += 100) {
  const batch = [];
  for (let u = u0; u < Math.min(users, u0 + 100); u++) for (let i = 0; i < per; i++) batch.push({ user_id: `s${u}`, type: 'bench', i });
  const r = await post(node.port, '/api/v1/publish/batch', batch);
  if (r.status !== 200) throw new Error(`fill: ${r.status}`);
}
const fillS = (Date.now() - fillT0) / 1000;
node.proc.kill('SIGKILL');
await new Promise((r) => node.proc.on('exit', r));
const size = fs.statSync(path.join(dir, 'agentwire.db')).size + (fs.existsSync(path.join(dir, 'agentwire.db-wal')) ? fs.statSync(path.join(dir, 'agentwire.db-wal')).size : 0);
node = await start(['--data-dir', dir, '--history-size', '10']);
const t1 = process.hrtime.bigint();
const h = await get(node.port, `/api/v1/history?user_id=s${users - 1}`);
const firstRead = Number(process.hrtime.bigint() - t1) / 1e6;
const stored = JSON.parse(h.text).events.length;
const openMs = /"open_ms":(\d+)/.exec(node.log())?.[1];
node.proc.kill('SIGTERM');
await new Promise((r) => node.proc.on('exit', r));
console.log(`\n## Start-up with ${STARTUP_EVENTS.toLocaleString('en')} stored events (${users.toLocaleString('en')} users x ${per}; filled in ${fillS.toFixed(1)} s; files ${(size / 1e6).toFixed(0)} MB; then kill -9)\n`);
console.log(`spawn to listening: ${node.startMs.toFixed(0)} ms (store open ${openMs} ms); first history read of a stored user: ${firstRead.toFixed(1)} ms, ${stored} events`);
console.log(`RESULT ${JSON.stringify({ startup_events: STARTUP_EVENTS, users, start_ms: Math.round(node.startMs), open_ms: Number(openMs), first_read_ms: +firstRead.toFixed(1), file_bytes: size })}`);
agent.destroy();

if (MD) {
  const n = (x) => x.toLocaleString('en');
  const ratio = (r) => (r.acked_per_s / base).toFixed(2);
  const byMode = Object.fromEntries(rows.slice(1).map((r) => [r.label.split(' ').pop(), r]));
  const cpus = os.cpus();
  const md = [];
  md.push('## h) Durable history on one node (`node bench/durable.mjs`)', '');
  md.push(`\`node bench/durable.mjs\` runs one node (\`--threads 1\`) in memory mode and with \`--data-dir\` for each \`--fsync\` mode ` +
    `(off, batch, always), in turn, ${ROUNDS} round${ROUNDS === 1 ? '' : 's'}; each setup is a fresh node with one WebSocket subscriber per user, ` +
    `and four keep-alive publishers post batches of 200 events (${USERS} users x 10, ~200 bytes each) for ${SECONDS} s. ` +
    `Figures are medians of the rounds; the ratio is against memory mode's median in the same run. ` +
    `Then it fills a store with ${n(STARTUP_EVENTS)} events over ${n(users)} users, kills the node with SIGKILL and measures its start. ` +
    `One run on a ${cpus.length}-core machine (${cpus[0].model.trim()}), \`${`node bench/durable.mjs ${args.join(' ')}`.trim()}\`:`, '');
  md.push('| setup | events acknowledged/s | deliveries/s | vs memory | batch round trip p50 / p99 ms | rounds (acknowledged/s) | lost |');
  md.push('| --- | --- | --- | --- | --- | --- | --- |');
  for (const r of rows) md.push(`| ${r.label} | ${n(r.acked_per_s)} | ${n(r.delivered_per_s)} | ${ratio(r)}× | ${r.batch_p50_ms.toFixed(2)} / ${r.batch_p99_ms.toFixed(2)} | ${r.rounds.map(n).join(' / ')} | ${r.lost} |`);
  md.push('', `Start-up after SIGKILL (store filled in ${fillS.toFixed(1)} s):`, '');
  md.push('| events stored | users | files MB (WAL included) | store open ms | spawn to listening ms | first history read ms |');
  md.push('| --- | --- | --- | --- | --- | --- |');
  md.push(`| ${n(STARTUP_EVENTS)} | ${n(users)} | ${(size / 1e6).toFixed(0)} | ${openMs ?? 'n/a'} | ${node.startMs.toFixed(0)} | ${firstRead.toFixed(1)} (${stored} events) |`);
  const b = byMode.batch;
  md.push('', `With the default \`--fsync batch\` the node acknowledges ${ratio(b)}x of memory mode's events per second ` +
    `(${n(b.acked_per_s)} against ${n(base)}), so the goal of at least 0.7x is ${b.acked_per_s / base >= 0.7 ? 'met' : 'not met'}; ` +
    `\`off\` keeps ${ratio(byMode.off)}x and \`always\`, which syncs every group before its 200, ${ratio(byMode.always)}x. ` +
    `Batch round trip p50 goes from ${rows[0].batch_p50_ms.toFixed(2)} ms in memory mode to ${b.batch_p50_ms.toFixed(2)} ms with \`batch\`; ` +
    `${lost ? `${n(lost)} acknowledged events were not delivered.` : 'no acknowledged event was lost.'}`);
  md.push('');
  fs.mkdirSync(path.dirname(MD), { recursive: true });
  fs.writeFileSync(MD, md.join('\n'));
  console.log(`\nmarkdown: ${MD}`);
}

if (lost) {
  console.error(`FAIL: ${lost} acknowledged events were not delivered`);
  process.exitCode = 1;
}
