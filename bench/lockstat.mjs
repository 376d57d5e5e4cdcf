// lockstat.mjs -- the one lock (src/lock.h) under the fan-out benchmark:
// how long it is held per event and per delivery, how often it is waited
// for, and the ceiling it puts on deliveries/s (docs/architecture.md, "The
// lock, and many cores").
//
//   node bench/lockstat.mjs [--bin build-lockstat/agentwire] [--threads 2] [--runs 3]
//       [--conns 1000,10000] [--modes batch,single] [--quick] [--md FILE]
//
// --bin must be built with -DAW_LOCK_STATS=ON (make bench-lock does it):
//   cmake -S . -B build-lockstat -DCMAKE_BUILD_TYPE=Release -DAW_LOCK_STATS=ON
//   cmake --build build-lockstat --target agentwire
// The load generator is build/bench/aw-loadgen (AW_LOADGEN_BIN overrides it).
//
// Every run starts a fresh server (--threads N) and one aw-loadgen in fanout
// mode with 5 connections per user, users = conns / 5:
//   batch:  --events 400000 --batch 1000 --publishers 2 --pipeline 8
//   single: --events 100000 --batch 1    --publishers 8 --pipeline 32
// Runs are interleaved: repetition, then connections, then mode. The window
// of a run opens when aw-loadgen's stderr says "connect phase over" and
// closes when aw-loadgen exits; at both ends the server gets SIGUSR2 (one
// cumulative JSON line of lock counters on its stderr) and its threads' CPU
// is read from /proc/PID/task/*/stat (utime + stime). Lock figures are the
// difference of the two lines; rates divide by aw-loadgen's elapsed_s (first
// publish to last delivery). Each figure in the table is the median over
// runs. Exits 1 if a run failed or aw-loadgen reports any event not
// delivered (missing, duplicate, out of order, publish errors).
//
// --quick: 1 run, 1000 connections, 20000 (batch) / 5000 (single) events.
// --md FILE: also write the report (command line first) to FILE.

import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LOADGEN_BIN, commandLine, loadgenAvailable, runLoadgen } from './lib/loadgen.mjs';
import {
  freePortOutsideEphemeral, killAllNow, portAccepts, sleep, spawnGroup, stopAll, stopGroup, treeListensOn,
} from './lib/proc.mjs';
import { ROOT } from './lib/servers.mjs';

// ---------------------------------------------------------------- options

const argv = process.argv.slice(2);
const USAGE = 'usage: node bench/lockstat.mjs [--bin build-lockstat/agentwire] [--threads 2] [--runs 3] '
  + '[--conns 1000,10000] [--modes batch,single] [--quick] [--md FILE]';
const given = {};
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (a === '--help' || a === '-h') { console.log(USAGE); process.exit(0); }
  if (a === '--quick') { given.quick = true; continue; }
  const m = /^--(bin|threads|runs|conns|modes|md)(?:=(.*))?$/.exec(a);
  if (!m) { console.error(`unknown option ${a}\n${USAGE}`); process.exit(2); }
  const v = m[2] ?? argv[++i];
  if (v === undefined || v === '') { console.error(`${a} needs a value\n${USAGE}`); process.exit(2); }
  given[m[1]] = v;
}
const QUICK = !!given.quick;
const posInt = (name, s) => {
  if (!/^\d+$/.test(s) || Number(s) < 1) { console.error(`${name} must be a positive integer, not ${s}`); process.exit(2); }
  return Number(s);
};
const BIN = path.resolve(ROOT, given.bin ?? 'build-lockstat/agentwire');
const THREADS = posInt('--threads', given.threads ?? '2');
const RUNS = posInt('--runs', given.runs ?? (QUICK ? '1' : '3'));
const CONNS = (given.conns ?? (QUICK ? '1000' : '1000,10000')).split(',').map((c) => {
  const n = posInt('--conns', c.trim());
  if (n % 5) { console.error(`--conns ${n}: must be a multiple of 5 (5 connections per user)`); process.exit(2); }
  return n;
});
const MODE_ARGS = {
  batch: { events: QUICK ? 20000 : 400000, batch: 1000, publishers: 2, pipeline: 8 },
  single: { events: QUICK ? 5000 : 100000, batch: 1, publishers: 8, pipeline: 32 },
};
const MODES = (given.modes ?? 'batch,single').split(',').map((m) => m.trim());
for (const m of MODES) if (!MODE_ARGS[m]) { console.error(`--modes: ${m} is not batch or single`); process.exit(2); }
const MD = given.md ? path.resolve(given.md) : null;
const CONNS_PER_USER = 5;
const SECRET = crypto.randomBytes(16).toString('hex');
const KEY = `k${crypto.randomBytes(8).toString('hex')}`;
const CLK_TCK = 100; // USER_HZ: /proc/PID/task/TID/stat times are in these ticks
const LOADGEN_BOUND_MS = 120000; // aw-loadgen's own --timeout-ms is 90000
const SERVER_START_MS = 10000;
const DUMP_WAIT_MS = 5000;
const STOP_BOUND_MS = 5000; // --drain-timeout-ms is 1000

const COMMAND = `$ node bench/lockstat.mjs ${argv.join(' ')}`.trim();
console.log(COMMAND);

// Whatever happens, no server or aw-loadgen outlives this script.
process.on('exit', killAllNow);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => { console.error(`\n${sig}: stopping what was started`); killAllNow(); process.exit(130); });
}
process.on('uncaughtException', (err) => { console.error(err); killAllNow(); process.exit(1); });

if (!fs.existsSync(BIN)) {
  console.error(`${BIN} not built; build it with:\n  cmake -S . -B build-lockstat -DCMAKE_BUILD_TYPE=Release -DAW_LOCK_STATS=ON\n  cmake --build build-lockstat --target agentwire`);
  process.exit(2);
}
// Without AW_LOCK_STATS the server has no SIGUSR2 handler and SIGUSR2 would kill it.
if (!fs.readFileSync(BIN).includes('{"lockstat":"')) {
  console.error(`${BIN} was not built with -DAW_LOCK_STATS=ON (no lockstat output in it)`);
  process.exit(2);
}
if (!loadgenAvailable()) {
  console.error(`${LOADGEN_BIN} not built (scripts/build.sh release)`);
  process.exit(2);
}

// ---------------------------------------------------------------- the server

function serverArgs(port) {
  return ['--listen', `127.0.0.1:${port}`, '--jwt-secret', SECRET, '--api-key', KEY,
    '--max-connections-per-user', '1000', '--max-messages-per-second', '0', '--max-message-bytes', '131072',
    '--queue-limit-bytes', '8388608', '--heartbeat-interval-ms', '60000', '--drain-timeout-ms', '1000',
    '--log-format', 'json', '--log-level', 'warn', '--max-connections-per-ip', '10000000',
    '--threads', String(THREADS)];
}

// Starts the server on a free port; returns { child, pid, port, dumps, log(), snapshot(), stop() }.
async function startServer() {
  for (let attempt = 1; ; attempt++) {
    const port = await freePortOutsideEphemeral();
    const child = spawnGroup(BIN, serverArgs(port), { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    const dumps = []; // parsed {"lockstat":...} lines, in order
    let log = '';
    let partial = '';
    child.stdout.on('data', (d) => { log = (log + d).slice(-4000); });
    child.stderr.on('data', (d) => {
      partial += d;
      let nl;
      while ((nl = partial.indexOf('\n')) >= 0) {
        const line = partial.slice(0, nl);
        partial = partial.slice(nl + 1);
        if (line.startsWith('{"lockstat"')) {
          try { dumps.push(JSON.parse(line)); } catch { log = (log + line.slice(0, 200) + '\n').slice(-4000); }
        } else {
          log = (log + line + '\n').slice(-4000);
        }
      }
    });
    const alive = () => child.exitCode === null && child.signalCode === null;
    const end = Date.now() + SERVER_START_MS;
    let ready = false;
    while (Date.now() < end && alive()) {
      if ((await portAccepts(port)) && treeListensOn(child.pid, port)) { ready = true; break; }
      await sleep(25);
    }
    if (ready) {
      const srv = { child, pid: child.pid, port, dumps, alive, log: () => log.trim() };
      srv.snapshot = (why) => snapshot(srv, why);
      srv.stop = () => stopGroup(child, STOP_BOUND_MS);
      return srv;
    }
    await stopGroup(child, 2000);
    if (attempt < 3 && /address already in use|EADDRINUSE/i.test(log)) continue;
    const how = child.exitCode !== null ? `exit ${child.exitCode}` : child.signalCode ?? `not ready after ${SERVER_START_MS} ms`;
    throw new Error(`server on port ${port}: ${how}${log.trim() ? `; log: ${log.trim().slice(-500)}` : ''}`);
  }
}

// CPU seconds (utime + stime) of every thread of pid, now.
function threadCpuS(pid) {
  let ticks = 0;
  let threads = 0;
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    let s;
    try { s = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8'); } catch { continue; } // exited meanwhile
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    ticks += Number(f[11]) + Number(f[12]);
    threads++;
  }
  return { cpu_s: ticks / CLK_TCK, os_threads: threads };
}

// SIGUSR2 and the threads' CPU at the same moment; resolves with the new line.
async function snapshot(srv, why) {
  if (!srv.alive()) throw new Error(`${why}: the server exited (${srv.child.exitCode ?? srv.child.signalCode}); log: ${srv.log().slice(-500)}`);
  const seen = srv.dumps.length;
  const cpu = threadCpuS(srv.pid);
  process.kill(srv.pid, 'SIGUSR2');
  const end = Date.now() + DUMP_WAIT_MS;
  while (srv.dumps.length === seen) {
    if (!srv.alive()) throw new Error(`${why}: the server exited on SIGUSR2 (${srv.child.exitCode ?? srv.child.signalCode})`);
    if (Date.now() > end) throw new Error(`${why}: no lockstat line within ${DUMP_WAIT_MS} ms of SIGUSR2`);
    await sleep(5);
  }
  const line = srv.dumps[seen];
  if (line.lockstat !== 'SIGUSR2') throw new Error(`${why}: expected a SIGUSR2 line, got "${line.lockstat}"`);
  return { ...cpu, line };
}

// ---------------------------------------------------------------- histograms

// lockstat.c's buckets: 4 exact below 4 ns, then 4 per octave; a line names
// each non-empty bucket by its lower bound.
function bucketOf(ns) {
  if (ns < 4) return ns;
  const k = ns.toString(2).length - 1;
  return 4 * k - 4 + (Math.floor(ns / 2 ** (k - 2)) & 3);
}
function bucketHi(lo) {
  const b = bucketOf(lo);
  return b < 4 ? b + 1 : lo + 2 ** (Math.floor(b / 4) - 1);
}
// The window's histogram: later minus earlier, as Map lo -> count.
function histDiff(later = [], earlier = []) {
  const m = new Map(later.map(([lo, n]) => [lo, n]));
  for (const [lo, n] of earlier) m.set(lo, (m.get(lo) ?? 0) - n);
  return m;
}
// The upper bound of the bucket that holds the q-quantile (as lockstat.c does).
function quantile(hist, q) {
  const los = [...hist.keys()].filter((lo) => hist.get(lo) > 0).sort((a, b) => a - b);
  const n = los.reduce((s, lo) => s + hist.get(lo), 0);
  if (!n) return null;
  const want = Math.min(Math.floor(q * n), n - 1);
  let seen = 0;
  for (const lo of los) {
    seen += hist.get(lo);
    if (seen > want) return bucketHi(lo);
  }
  return null;
}

// ---------------------------------------------------------------- one run

const LOSS_FIELDS = ['missing', 'duplicates', 'order_errors', 'cross_user', 'bad_frames', 'publish_errors', 'connect_failed', 'closed_by_server'];

function loadgenArgs(port, conns, mode) {
  const m = MODE_ARGS[mode];
  return {
    target: 'agentwire', port, mode: 'fanout', users: conns / CONNS_PER_USER, 'conns-per-user': CONNS_PER_USER,
    'jwt-secret': SECRET, 'api-key': KEY, events: m.events, rate: 0, batch: m.batch, publishers: m.publishers,
    pipeline: m.pipeline, 'timeout-ms': 90000,
  };
}

async function oneRun(conns, mode) {
  const srv = await startServer();
  try {
    let first = null;
    let firstErr = null;
    const { result } = await runLoadgen(loadgenArgs(srv.port, conns, mode), {
      boundMs: LOADGEN_BOUND_MS,
      onPhase: async (j) => {
        if (j.phase !== 'connected' || j.source !== 'stderr') return;
        try { first = await srv.snapshot('connect phase over'); } catch (err) { firstErr = err; }
      },
    });
    if (firstErr) throw firstErr;
    if (!first) throw new Error('aw-loadgen never said "connect phase over"');
    const last = await srv.snapshot('aw-loadgen exit');
    return { result, metrics: windowMetrics(first, last, result) };
  } finally {
    await srv.stop();
  }
}

function windowMetrics(a, b, r) {
  const A = a.line;
  const B = b.line;
  const d = (k) => B[k] - A[k];
  const sd = (k) => (B.shards?.[k] ?? 0) - (A.shards?.[k] ?? 0); // the shard locks, summed
  const el = r.elapsed_s;
  const events = r.events_published;
  const deliveries = r.deliveries;
  const acq = d('acquisitions');
  const cont = d('contended');
  const waitNs = d('wait_ns');
  const holdNs = d('hold_ns');
  const holdCpuNs = d('hold_cpu_ns');
  const windowS = (B.t_ns - A.t_ns) / 1e9;
  const cpuS = b.cpu_s - a.cpu_s;
  const holdHist = histDiff(B.hold_hist, A.hold_hist);
  const waitHist = histDiff(B.wait_hist, A.wait_hist);
  const before = new Map((A.sites ?? []).map((s) => [s.site, s]));
  const sites = (B.sites ?? []).map((s) => ({ site: s.site, hold_ns: s.hold_ns - (before.get(s.site)?.hold_ns ?? 0) }))
    .filter((s) => s.hold_ns > 0);
  const div = (x, y) => (y > 0 ? x / y : null);
  const loadgenCpuS = r.loadgen_cpu_s - (r.connect_cpu_s ?? 0);
  return {
    deliveries_per_s: r.deliveries_per_s,
    events_per_s: div(events, el),
    hold_per_event_ns: div(holdNs, events),
    hold_cpu_per_event_ns: div(holdCpuNs, events),
    hold_per_delivery_ns: div(holdNs, deliveries),
    hold_cpu_per_delivery_ns: div(holdCpuNs, deliveries),
    acquisitions_per_s: div(acq, el),
    contended_per_s: div(cont, el),
    contended_share: div(cont, acq),
    wait_s_per_s: div(waitNs / 1e9, el),
    wait_mean_ns: div(waitNs, cont),
    wait_p99_ns: quantile(waitHist, 0.99),
    hold_p50_ns: quantile(holdHist, 0.5),
    hold_p99_ns: quantile(holdHist, 0.99),
    util_wall: div(holdNs / 1e9, el),
    util_cpu: div(holdCpuNs / 1e9, el),
    server_cores: div(cpuS, windowS),
    server_cpu_per_delivery_us: div(cpuS * 1e6, deliveries),
    serial_fraction: div(holdCpuNs / 1e9, cpuS),
    ceiling_cpu: div(1e9, div(holdCpuNs, deliveries)),
    ceiling_wall: div(1e9, div(holdNs, deliveries)),
    loadgen_cores: div(loadgenCpuS, el),
    window_s: windowS,
    elapsed_s: el,
    shards: B.shards?.n ?? 1,
    shard_acq_per_event: div(sd('acquisitions'), events),
    shard_hold_per_event_ns: div(sd('hold_ns'), events),
    shard_contended_share: div(sd('contended'), sd('acquisitions')),
    shard_wait_s_per_s: div(sd('wait_ns') / 1e9, el),
    shard_util_wall: div(sd('hold_ns') / 1e9, el),
    site_shares: Object.fromEntries(sites.map((s) => [s.site, s.hold_ns / holdNs])),
    threads: B.threads,
  };
}

// ---------------------------------------------------------------- the runs

const configs = [];
for (const conns of CONNS) for (const mode of MODES) configs.push({ conns, mode, runs: [], errors: [], losses: [] });

const t0 = Date.now();
console.log(`machine: ${os.cpus().length} cores (${os.cpus()[0]?.model?.trim() ?? '?'}), load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}; `
  + `server ${path.relative(ROOT, BIN) || BIN} --threads ${THREADS}; ${RUNS} run(s) of ${configs.length} configuration(s)`);
for (let rep = 1; rep <= RUNS; rep++) {
  for (const cfg of configs) {
    const tag = `run ${rep}/${RUNS}, ${cfg.conns} conns, ${cfg.mode}`;
    try {
      const { result, metrics } = await oneRun(cfg.conns, cfg.mode);
      const losses = LOSS_FIELDS.filter((k) => (result[k] ?? 0) > 0).map((k) => `${k} ${result[k]}`);
      if (result.deliveries !== result.deliveries_expected) losses.push(`delivered ${result.deliveries} of ${result.deliveries_expected}`);
      if (losses.length) {
        cfg.losses.push(`${tag}: ${losses.join(', ')}`);
        console.error(`${tag}: NOT EVERYTHING DELIVERED: ${losses.join(', ')}`);
      }
      cfg.runs.push(metrics);
      console.error(`${tag}: ${fmtInt(metrics.deliveries_per_s)} deliveries/s, lock held ${fmtInt(metrics.hold_cpu_per_event_ns)} ns CPU per event, `
        + `utilisation ${fmtFix(metrics.util_cpu, 2)} CPU, s ${fmtFix(metrics.serial_fraction, 2)}, elapsed ${metrics.elapsed_s.toFixed(2)} s`);
    } catch (err) {
      cfg.errors.push(`${tag}: ${err.message}`);
      console.error(`${tag}: FAILED: ${err.message}`);
      await stopAll();
    }
  }
}

// ---------------------------------------------------------------- the report

function median(xs) {
  const v = xs.filter((x) => x !== null && x !== undefined && Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return null;
  const m = Math.floor(v.length / 2);
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}
function fmtInt(x) { return x === null || x === undefined ? '–' : Math.round(x).toLocaleString('en-US'); }
function fmtFix(x, n) { return x === null || x === undefined ? '–' : x.toFixed(n); }
function fmtPct(x) { return x === null ? '–' : `${(100 * x).toFixed(1)} %`; }
function fmtDur(ns, bound = false) {
  if (ns === null || ns === undefined) return '–';
  const p = bound ? '≤ ' : '';
  if (ns < 1e3) return `${p}${Math.round(ns)} ns`;
  if (ns < 1e6) return `${p}${(ns / 1e3).toPrecision(ns < 1e4 ? 2 : 3).replace(/\.0+$/, '')} µs`;
  if (ns < 1e9) return `${p}${(ns / 1e6).toFixed(ns < 1e7 ? 2 : 1)} ms`;
  return `${p}${(ns / 1e9).toFixed(2)} s`;
}
function fmtRate(x) {
  if (x === null) return '–';
  return x >= 1e6 ? `${(x / 1e6).toFixed(2)} M/s` : `${fmtInt(x)}/s`;
}

const M = (cfg, k) => median(cfg.runs.map((r) => r[k]));
// Sites by median share of the hold time; a site's function name alone unless
// two sites share it.
function topSites(cfg) {
  const names = new Set();
  for (const r of cfg.runs) for (const s of Object.keys(r.site_shares)) names.add(s);
  const funcs = new Map();
  for (const s of names) { const f = s.split(' ').pop(); funcs.set(f, (funcs.get(f) ?? 0) + 1); }
  const rows = [...names].map((s) => ({ s, share: median(cfg.runs.map((r) => r.site_shares[s] ?? 0)) }))
    .sort((a, b) => b.share - a.share).slice(0, 3);
  if (!rows.length) return '–';
  return rows.map(({ s, share }) => {
    const f = s.split(' ').pop();
    return `\`${funcs.get(f) > 1 ? s : f}\` ${(100 * share).toFixed(1)} %`;
  }).join(', ');
}

const modeName = (mode) => (mode === 'batch' ? `batches of ${MODE_ARGS.batch.batch} × ${MODE_ARGS.batch.pipeline}` : 'one event per request');
const header = configs.map((c) => `${c.conns.toLocaleString('en-US')} conns, ${modeName(c.mode)}`);
const rows = [
  ['runs that completed', (c) => `${c.runs.length} of ${RUNS}${c.losses.length ? ' (LOSSES)' : ''}`],
  ['deliveries/s', (c) => fmtInt(M(c, 'deliveries_per_s'))],
  ['events/s', (c) => fmtInt(M(c, 'events_per_s'))],
  ['lock held per event, wall / CPU', (c) => `${fmtInt(M(c, 'hold_per_event_ns'))} / ${fmtInt(M(c, 'hold_cpu_per_event_ns'))} ns`],
  ['lock held per delivery, wall / CPU', (c) => `${fmtInt(M(c, 'hold_per_delivery_ns'))} / ${fmtInt(M(c, 'hold_cpu_per_delivery_ns'))} ns`],
  ['acquisitions/s', (c) => fmtInt(M(c, 'acquisitions_per_s'))],
  ['contended acquisitions/s (share)', (c) => `${fmtInt(M(c, 'contended_per_s'))} (${fmtPct(M(c, 'contended_share'))})`],
  ['wait of a contended acquisition, mean / p99', (c) => `${fmtDur(M(c, 'wait_mean_ns'))} / ${fmtDur(M(c, 'wait_p99_ns'), true)}`],
  ['seconds of waiting per second', (c) => fmtFix(M(c, 'wait_s_per_s'), 2)],
  ['one hold, p50 / p99', (c) => `${fmtDur(M(c, 'hold_p50_ns'), true)} / ${fmtDur(M(c, 'hold_p99_ns'), true)}`],
  ['**utilisation** (held per second), wall / CPU', (c) => `**${fmtFix(M(c, 'util_wall'), 2)} / ${fmtFix(M(c, 'util_cpu'), 2)}**`],
  ['server CPU, cores / per delivery', (c) => `${fmtFix(M(c, 'server_cores'), 2)} / ${fmtFix(M(c, 'server_cpu_per_delivery_us'), 2)} µs`],
  ['serial fraction *s* (CPU under the lock ÷ server CPU)', (c) => fmtFix(M(c, 'serial_fraction'), 3)],
  ['where it is held (share of hold time)', topSites],
  ['**lock ceiling** 1/(hold per delivery), CPU (wall)', (c) => `**${fmtRate(M(c, 'ceiling_cpu'))}** (${fmtRate(M(c, 'ceiling_wall'))})`],
  ['shard locks: shards / acquisitions per event', (c) => `${M(c, 'shards')} / ${fmtFix(M(c, 'shard_acq_per_event'), 3)}`],
  ['shard locks held per event, wall (all shards)', (c) => `${fmtInt(M(c, 'shard_hold_per_event_ns'))} ns`],
  ['shard locks: utilisation, all shards together (wall)', (c) => fmtFix(M(c, 'shard_util_wall'), 2)],
  ['shard locks: contended share / seconds of waiting per second', (c) => `${fmtPct(M(c, 'shard_contended_share'))} / ${fmtFix(M(c, 'shard_wait_s_per_s'), 3)}`],
  ['aw-loadgen CPU, cores', (c) => fmtFix(M(c, 'loadgen_cores'), 2)],
];

const out = [];
out.push(COMMAND);
out.push('');
out.push(`${os.cpus().length} cores (${os.cpus()[0]?.model?.trim() ?? '?'}); ${path.relative(ROOT, BIN) || BIN} --threads ${THREADS}; `
  + `aw-loadgen fanout, 5 connections per user; batch: ${MODE_ARGS.batch.events} events, --batch ${MODE_ARGS.batch.batch} `
  + `--publishers ${MODE_ARGS.batch.publishers} --pipeline ${MODE_ARGS.batch.pipeline}; single: ${MODE_ARGS.single.events} events, `
  + `--batch 1 --publishers ${MODE_ARGS.single.publishers} --pipeline ${MODE_ARGS.single.pipeline}. `
  + `Medians of ${RUNS} run(s); "≤" is a histogram bucket's upper bound; rates divide by aw-loadgen's elapsed_s; `
  + `server CPU is its threads' utime + stime over the window (connect phase over to aw-loadgen's exit).`);
out.push('');
out.push(`| | ${header.join(' | ')} |`);
out.push(`|---|${configs.map(() => '---').join('|')}|`);
for (const [name, f] of rows) out.push(`| ${name} | ${configs.map((c) => (c.runs.length ? f(c) : 'failed')).join(' | ')} |`);
const problems = configs.flatMap((c) => [...c.errors, ...c.losses]);
if (problems.length) {
  out.push('');
  out.push('Problems:');
  for (const p of problems) out.push(`- ${p}`);
}
out.push('');
if (configs.some((c) => c.runs.some((r) => Object.keys(r.site_shares).some((s) => s.endsWith(' aw_lock_resume'))))) {
  out.push('`aw_lock_resume`: the lock taken again after work done without it (aw_lock_suspend, e.g. parsing a large body in api.c); '
    + 'its holds are the rest of that callback (on_read).');
  out.push('');
}
for (const mode of MODES) {
  const cmd = commandLine(loadgenArgs('$PORT', 5, mode)).replace(SECRET, '$SECRET').replace(KEY, '$KEY').replace('--users 1 ', '--users $U ');
  out.push(`${mode}: ${cmd} (U = connections / 5)  `);
}
out.push(`server: ${path.relative(ROOT, BIN) || BIN} ${serverArgs('$PORT').join(' ').replace(SECRET, '$SECRET').replace(KEY, '$KEY')}  `);
out.push(`took ${((Date.now() - t0) / 1000).toFixed(1)} s`);
const report = out.join('\n');
console.log(`\n${report.split('\n').slice(1).join('\n')}`);
if (MD) {
  fs.mkdirSync(path.dirname(MD), { recursive: true });
  fs.writeFileSync(MD, `${report}\n`);
  console.error(`wrote ${MD}`);
}
process.exit(problems.length ? 1 : 0);
