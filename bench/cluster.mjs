#!/usr/bin/env node
// bench/cluster.mjs -- what cluster mode (--redis, docs/cluster.md) costs,
// measured in one run on this machine, everything on 127.0.0.1:
//
//   node bench/cluster.mjs [--bin build/agentwire] [--quick] [--only 1,2,3] [--md FILE]
//
// --md FILE: the same report, as the section g) of docs/benchmarks.md.
//
// 1. latency  cross-node delivery latency at a fixed rate: a single node (no
//             --redis) against two nodes on one Redis, subscribers on node B,
//             the publisher posting to node A (POST /api/v1/publish, keep-alive,
//             several requests in flight), each event carrying its send time
//             (process.hrtime ms, this process) -> p50/p99/p99.9 and the ratio.
// 2. rate     deliveries/s and publish acks/s at the maximum rate: a single
//             node without Redis (one loop, and two), a cluster of one node on
//             Redis, a cluster of two nodes; batches (POST
//             /api/v1/publish/batch) through every node, each user's two
//             connections spread over the nodes. The publishers keep at most a
//             window of deliveries outstanding, so that node clients that fall
//             behind are not closed as slow consumers.
// 3. redis    Redis CPU (utime+stime of redis-server, /proc/PID/stat) and
//             memory (INFO memory used_memory) per 1,000 events published
//             through a two-node cluster, history at its default (1000 per user).
//
// Every process is started here: redis-server (Debian's /usr/bin/redis-server,
// generated config, save "", appendonly no) and agentwire (a copy of --bin
// taken at the start, so that a rebuild meanwhile changes nothing), and stopped
// after each run, on error and on SIGINT/SIGTERM. The subscribers, the
// publishers and the checks run in this process (node `ws` clients): on a
// 2-core machine the load generator competes with the servers for CPU.
//
// Every subscriber must receive exactly the seqs its user's publishes were
// acknowledged with (1..n, in order, once each, none of another user); losses
// are reported, and the exit status is 1 when any event was lost, duplicated,
// reordered or misdelivered, or a scenario failed. --quick: tiny sizes, about
// 20 seconds, the same checks.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { HttpConn, httpOnce, Ledger, nowMs, openAll, percentiles, startNode, Subscriber } from './lib/cluster-clients.mjs';
import { cpuMs, redisConfig, redisVersion, startRedis } from './lib/cluster-redis.mjs';
import { killAllNow, sleep, stopAll } from './lib/proc.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

// ---- sizes -------------------------------------------------------------------

const FULL = {
  latency: { users: 200, rate: 2000, warmS: 2, measureS: 10, publishers: 8 },
  rate: { users: 200, connsPerUser: 2, batch: 200, pubConns: 4, depth: 2, seconds: 8, window: 20000, maxEvents: 3_000_000 },
  redis: { users: 100, single: 200, batched: 600, overflow: 500, batch: 100, publishers: 8 },
  drainMs: 30000,
};
const QUICK = {
  latency: { users: 20, rate: 200, warmS: 0.5, measureS: 2, publishers: 4 },
  rate: { users: 20, connsPerUser: 2, batch: 50, pubConns: 4, depth: 2, seconds: 1.5, window: 2000, maxEvents: 200_000 },
  redis: { users: 10, single: 20, batched: 50, overflow: 0, batch: 25, publishers: 4 },
  drainMs: 10000,
};
// every event's payload besides the fields the checks need: a short text, like a small agent event
const PAD = 'the quick brown fox jumps over the lazy dog, 0123456789 abcdefgh';

// ---- command line --------------------------------------------------------------

function usage(err) {
  const text = 'usage: node bench/cluster.mjs [--bin build/agentwire] [--quick] [--only 1,2,3] [--md FILE]\n' +
    '  1 cross-node latency at a fixed rate   2 deliveries/s at the maximum rate   3 Redis CPU and memory per 1,000 events';
  if (err) {
    process.stderr.write(`cluster.mjs: ${err}\n${text}\n`);
    process.exit(2);
  }
  process.stdout.write(`${text}\n`);
  process.exit(0);
}

function parseCli(argv) {
  const o = { bin: join(ROOT, 'build/agentwire'), quick: false, only: ['1', '2', '3'] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => (i + 1 < argv.length ? argv[++i] : usage(`${a} needs a value`));
    if (a === '--bin') o.bin = resolve(val());
    else if (a === '--quick') o.quick = true;
    else if (a === '--md') o.md = resolve(val());
    else if (a === '--only') o.only = val().split(',').map((s) => s.trim()).filter(Boolean);
    else if (a === '--help' || a === '-h') usage(null);
    else usage(`unknown option ${a}`);
  }
  for (const s of o.only) if (!['1', '2', '3'].includes(s)) usage(`--only: unknown scenario ${s}`);
  if (!existsSync(o.bin)) usage(`${o.bin} not found (build it: scripts/build.sh release)`);
  return o;
}

const CLI = parseCli(process.argv.slice(2));
const CFG = CLI.quick ? QUICK : FULL;
const SECRET = randomBytes(16).toString('hex');
const API_KEY = randomBytes(16).toString('hex');
const TAG = randomBytes(3).toString('hex');
let BIN = CLI.bin;

// Every agentwire process: one event loop (cluster mode runs one anyway, so
// that the single node compares loop for loop; scenario 2 adds a row with two),
// no per-connection message rate limit, 8 MiB outgoing queue per connection as
// in bench/run.mjs, keep-alive limits out of the way of the publishers.
function nodeArgs({ redis, threads = 1, id } = {}) {
  return [
    '--listen', '127.0.0.1:0', '--log-format', 'json', '--jwt-secret', SECRET, '--api-key', API_KEY,
    '--threads', String(threads), '--max-messages-per-second', '0', '--queue-limit-bytes', '8388608',
    '--heartbeat-interval-ms', '60000', '--drain-timeout-ms', '1000', '--keepalive-requests', '100000000',
    '--keepalive-max-ms', '3600000', '--max-connections-per-user', '16',
    ...(redis ? ['--redis', redis, '--node-id', id] : []),
  ];
}
const shownArgs = (args) => args.map((a) => (a === SECRET ? '$SECRET' : a === API_KEY ? '$KEY' : /^redis:\/\//.test(a) ? 'redis://127.0.0.1:$REDIS_PORT' : a)).join(' ');

// ---- what runs now, stopped on any exit --------------------------------------

const running = new Set(); // objects with stop()
const track = (x) => { running.add(x); return x; };
async function stopTracked() {
  const all = [...running];
  running.clear();
  // clients first, then nodes, then redis
  for (const x of all.filter((x) => x.kind === 'clients')) x.stop();
  await Promise.all(all.filter((x) => x.kind === 'node').map((x) => x.stop().catch(() => {})));
  await Promise.all(all.filter((x) => x.kind === 'redis').map((x) => x.stop().catch(() => {})));
}

async function withRedis(extra) {
  const r = await startRedis({ extra });
  r.kind = 'redis';
  return track(r);
}
async function withNode(name, opts) {
  const n = await startNode(BIN, nodeArgs(opts), { name });
  n.kind = 'node';
  return track(n);
}
function clientsGroup(subs, conns) {
  return track({ kind: 'clients', stop() { for (const s of subs) s.close(); for (const c of conns) c.close(); } });
}

// ---- small helpers -----------------------------------------------------------

const log = (s) => process.stderr.write(`${s}\n`);
const users = (scen, n) => Array.from({ length: n }, (_, i) => `cb${TAG}-${scen}-${i}`);
const fmt = (x, d = 0) => (x === undefined || x === null || Number.isNaN(x) ? '–' : Number(x).toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d }));
const r3 = (x) => (Number.isFinite(x) ? Math.round(x * 1000) / 1000 : x);
const round = (o) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, typeof v === 'number' ? r3(v) : v]));

/** p, or undefined after ms (the timer is cleared either way, so nothing is left to keep node alive). */
async function bounded(p, ms) {
  let timer;
  try {
    return await Promise.race([p, new Promise((r) => { timer = setTimeout(r, ms); })]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves when fn() is true (true), or at boundMs, or after stallMs without progress() changing (false). */
async function waitUntil(fn, { boundMs, stallMs = Infinity, progress = () => 0, intervalMs = 5 }) {
  const end = Date.now() + boundMs;
  let last = progress();
  let lastChange = Date.now();
  while (!fn()) {
    if (Date.now() > end) return false;
    const p = progress();
    if (p !== last) { last = p; lastChange = Date.now(); }
    if (Date.now() - lastChange > stallMs) return false;
    await sleep(intervalMs);
  }
  return true;
}

/** Busy ms of the whole machine (all cores, /proc/stat: everything but idle and iowait). */
function machineBusyMs() {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const busy = f.reduce((a, b) => a + b, 0) - f[3] - (f[4] ?? 0) - (f[8] ?? 0) - (f[9] ?? 0); // minus idle, iowait, guest (counted in user)
    return (busy * 1000) / 100;
  } catch {
    return NaN;
  }
}

/** CPU ms of each pid, of this process and of the machine, now. */
function cpuSample(pids) {
  const u = process.cpuUsage();
  return { t: nowMs(), pids: pids.map(cpuMs), self: (u.user + u.system) / 1000, machine: machineBusyMs() };
}
function cpuPct(a, b, pids) {
  const dt = b.t - a.t;
  const per = pids.map((_, i) => ((b.pids[i] - a.pids[i]) / dt) * 100);
  const self = ((b.self - a.self) / dt) * 100;
  const machine = ((b.machine - a.machine) / dt) * 100;
  // what the machine spent besides the servers and this process: other processes, interrupts
  const rest = machine - self - per.reduce((x, y) => x + y, 0);
  return { per, self, machine, rest, ms: pids.map((_, i) => b.pids[i] - a.pids[i]), self_ms: b.self - a.self };
}

function table(header, rows) {
  const line = (cells) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

function problemsText(v) {
  return v.problems.length ? v.problems.join('; ') : 'none';
}

// ---- 1. cross-node latency at a fixed rate -----------------------------------

async function latencyRun(mode) {
  const c = CFG.latency;
  const res = { mode };
  try {
    const redis = mode === 'cluster' ? await withRedis() : null;
    const A = await withNode('A', redis ? { redis: redis.url, id: 'A' } : {});
    const B = redis ? await withNode('B', { redis: redis.url, id: 'B' }) : A;
    const us = users(`l${mode[0]}`, c.users);
    const ledger = new Ledger(us);
    const lat = [];
    const sendT = [];
    const subs = us.map((user, ui) => new Subscriber({
      node: B, user, ui, secret: SECRET, ledger,
      onEvent: (d, recv) => { if (d.m === 1) { lat.push(recv - d.t); sendT.push(d.t); } },
    }));
    const conns = [];
    clientsGroup(subs, conns);
    await openAll(subs);
    await sleep(300);
    for (let k = 0; k < c.publishers; k++) conns.push(await new HttpConn(A.port, API_KEY).connect());

    const total = Math.round(c.rate * (c.warmS + c.measureS));
    const warmN = Math.round(c.rate * c.warmS);
    const pids = [A.pid, ...(B !== A ? [B.pid] : []), ...(redis ? [redis.pid] : [])];
    const free = [...conns];
    const ackLat = [];
    let sent = 0;
    let answered = 0;
    let maxBacklog = 0;
    let reconnects = 0;
    let cpuStart = null;
    let tMeasure = 0;
    let tLastSend = 0;
    const t0 = nowMs();
    const send = (conn) => {
      const i = sent++;
      const ui = i % us.length;
      const m = i >= warmN ? 1 : 0;
      if (i === warmN) { cpuStart = cpuSample(pids); tMeasure = nowMs(); loopDelay.enable(); }
      const t = nowMs();
      tLastSend = t;
      const body = `{"user_id":${JSON.stringify(us[ui])},"type":"bench","u":${JSON.stringify(us[ui])},"i":${i},"m":${m},"t":${t},"text":"${PAD}"}`;
      conn.request('POST', '/api/v1/publish', body).then((r) => {
        answered++;
        if (m) ackLat.push(nowMs() - t);
        if (r.status === 200) ledger.ack(ui, JSON.parse(r.body));
        else ledger.error(`${r.status} ${r.body}`);
        release(conn);
      }, (err) => {
        answered++;
        ledger.error(err.message);
        release(conn);
      });
    };
    const release = (conn) => {
      if (!conn.dead) { free.push(conn); pump(); return; }
      if (reconnects++ > 50) return;
      new HttpConn(A.port, API_KEY).connect().then((n) => { conns.push(n); free.push(n); pump(); }, (e) => ledger.error(`reconnect: ${e.message}`));
    };
    const pump = () => {
      const due = Math.min(total, Math.floor(((nowMs() - t0) * c.rate) / 1000) + 1);
      if (due - sent > maxBacklog) maxBacklog = due - sent;
      while (sent < due && free.length) send(free.pop());
    };
    const loopDelay = monitorEventLoopDelay({ resolution: 1 });
    const timer = setInterval(pump, 1);
    const sendBound = (c.warmS + c.measureS) * 1000 + 15000;
    await waitUntil(() => answered >= total, { boundMs: sendBound });
    clearInterval(timer);
    loopDelay.disable();
    const cpuEnd = cpuSample(pids);
    const drained = await waitUntil(() => ledger.outstanding() === 0, { boundMs: CFG.drainMs, stallMs: 5000, progress: () => ledger.delivered() });
    const v = ledger.check();
    if (answered < total) v.problems.push(`${total - answered} of ${total} publishes unanswered after ${sendBound} ms`);
    if (!drained) v.problems.push(`deliveries still outstanding after the drain: ${ledger.outstanding()}`);
    const measuredS = (tLastSend - tMeasure) / 1000;
    const cpu = cpuStart ? cpuPct(cpuStart, cpuEnd, pids) : null;
    Object.assign(res, {
      ok: true,
      subscribers: subs.length,
      subscribers_on: B.name,
      publisher_on: A.name,
      publisher_connections: c.publishers,
      offered_rate: c.rate,
      achieved_rate: (total - warmN) / measuredS,
      measured_events: total - warmN,
      latency_ms: round(percentiles(lat)),
      ack_ms: round(percentiles(ackLat)),
      max_backlog: maxBacklog,
      node_cpu_pct: cpu ? cpu.per.slice(0, B !== A ? 2 : 1).reduce((a, b) => a + b, 0) : null,
      redis_cpu_pct: cpu && redis ? cpu.per.at(-1) : null,
      driver_cpu_pct: cpu?.self ?? null,
      rest_cpu_pct: cpu?.rest ?? null,
      driver_loop_delay_ms: loopDelayMs(loopDelay),
      // the slowest deliveries: when they were sent (s after the measured phase began)
      outliers: lat.map((l, k) => [l, k]).sort((a, b) => b[0] - a[0]).slice(0, 8)
        .map(([l, k]) => ({ ms: r3(l), at_s: r3((sendT[k] - tMeasure) / 1000) })),
      metrics: await nodeMetrics([A, ...(B !== A ? [B] : [])]),
      check: v,
    });
  } catch (err) {
    Object.assign(res, { ok: false, error: String(err.stack ?? err).slice(0, 1500) });
  } finally {
    await stopTracked();
  }
  return res;
}

/**
 * Bytes waiting in the kernel's TCP queues (ss -tn), summed per hop: Redis →
 * nodes (Redis's Send-Q, the nodes' Recv-Q), nodes → clients (the nodes'
 * Send-Q, the clients' Recv-Q). Shows where outstanding deliveries wait.
 */
function tcpQueues(redisPort, nodePorts) {
  let text = '';
  try { text = execFileSync('ss', ['-tnH'], { stdio: ['ignore', 'pipe', 'ignore'], timeout: 3000 }).toString(); } catch { return null; }
  const q = { redis_sendq: 0, nodes_from_redis_recvq: 0, nodes_sendq_to_clients: 0, clients_recvq: 0 };
  const port = (a) => Number(a.slice(a.lastIndexOf(':') + 1));
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 5 || f[0] !== 'ESTAB') continue;
    const recvq = Number(f[1]);
    const sendq = Number(f[2]);
    const local = port(f[3]);
    const peer = port(f[4]);
    if (redisPort && local === redisPort) q.redis_sendq += sendq;
    if (redisPort && peer === redisPort) q.nodes_from_redis_recvq += recvq;
    if (nodePorts.includes(local)) q.nodes_sendq_to_clients += sendq;
    if (nodePorts.includes(peer)) q.clients_recvq += recvq;
  }
  return q;
}

/** This process's event-loop delay (perf_hooks histogram, ns) in ms: how late its timers and reads ran. */
function loopDelayMs(h) {
  return { p50: r3(h.percentile(50) / 1e6), p99: r3(h.percentile(99) / 1e6), max: r3(h.max / 1e6) };
}

/** The Redis and stream figures of each node's /metrics (public on loopback). */
async function nodeMetrics(nodes) {
  const out = {};
  for (const n of nodes) {
    const r = await httpOnce(n.port, 'GET', '/metrics', null, API_KEY, 3000).catch(() => null);
    if (r?.status !== 200) continue;
    const m = {};
    for (const line of r.body.split('\n')) {
      const x = line.match(/^(agentwire_(?:redis|stream)_[a-z_]+)(\{[^}]*\})?\s+(\S+)$/);
      if (x) m[x[1]] = (m[x[1]] ?? 0) + Number(x[3]);
    }
    if (m.agentwire_redis_commands_total) m.redis_rtt_mean_ms = r3((m.agentwire_redis_rtt_seconds_sum / m.agentwire_redis_commands_total) * 1000);
    out[n.name] = round(m);
  }
  return out;
}

async function scenarioLatency() {
  const c = CFG.latency;
  log(`[1] latency: ${c.users} subscribers, ${c.rate} events/s, ${c.warmS} s warm-up + ${c.measureS} s measured`);
  const single = await latencyRun('single');
  log(`    single: ${single.ok ? `p50 ${single.latency_ms.p50} ms p99 ${single.latency_ms.p99} ms` : single.error}`);
  const cluster = await latencyRun('cluster');
  log(`    cluster: ${cluster.ok ? `p50 ${cluster.latency_ms.p50} ms p99 ${cluster.latency_ms.p99} ms` : cluster.error}`);
  const ratio = {};
  if (single.ok && cluster.ok) for (const k of ['p50', 'p90', 'p99', 'p999', 'max']) ratio[k] = r3(cluster.latency_ms[k] / single.latency_ms[k]);
  const row = (name, r) => (r.ok
    ? [name, fmt(r.subscribers), `${fmt(r.offered_rate)} / ${fmt(r.achieved_rate)}`, fmt(r.measured_events), fmt(r.latency_ms.p50, 3), fmt(r.latency_ms.p90, 3), fmt(r.latency_ms.p99, 3), fmt(r.latency_ms.p999, 3), fmt(r.latency_ms.max, 2),
      `${fmt(r.ack_ms.p50, 3)} / ${fmt(r.ack_ms.p99, 3)}`, fmt(r.max_backlog), fmt(r.node_cpu_pct), r.redis_cpu_pct === null ? '–' : fmt(r.redis_cpu_pct), fmt(r.driver_cpu_pct), fmt(Math.max(0, r.rest_cpu_pct)), problemsText(r.check)]
    : [name, '', '', '', '', '', '', '', '', '', '', '', '', '', '', `FAILED: ${r.error.split('\n')[0]}`]);
  const text = [
    `### 1. Cross-node delivery latency at ${fmt(c.rate)} events/s (${c.measureS} s measured after ${c.warmS} s warm-up)`,
    '',
    `${c.users} users, one WebSocket each; one event per \`POST /api/v1/publish\` over ${c.publishers} keep-alive connections (one request in flight each), users round-robin. Latency: receive time minus the send time carried in the event, both \`process.hrtime\` in this process (so it includes this process's event-loop delays).`,
    '',
    table(['setup', 'subscribers', 'offered / achieved events/s', 'events measured', 'p50 ms', 'p90 ms', 'p99 ms', 'p99.9 ms', 'max ms', 'publish ack p50 / p99 ms', 'max send backlog', 'nodes CPU %', 'redis CPU %', 'driver CPU %', 'rest of the machine CPU %', 'lost, duplicated, reordered, misdelivered'], [
      row('single node (no --redis): publisher and subscribers on it', single),
      row('two nodes on one Redis: publisher → node A, subscribers on node B', cluster),
    ]),
    '',
    single.ok && cluster.ok ? `**Ratio cluster ÷ single: p50 ${ratio.p50}×, p90 ${ratio.p90}×, p99 ${ratio.p99}×, p99.9 ${ratio.p999}×, max ${ratio.max}×.**` : 'Ratio: n/a (a run failed).',
    '',
    ...[['single', single], ['cluster', cluster]].filter(([, r]) => r.ok).map(([name, r]) => {
      const slow = r.outliers.slice(0, 4).map((o) => `${o.ms} ms (sent ${o.at_s} s in)`).join(', ');
      const rtt = Object.entries(r.metrics ?? {}).filter(([, m]) => m.redis_rtt_mean_ms !== undefined)
        .map(([n, m]) => `node ${n} Redis round trip mean ${m.redis_rtt_mean_ms} ms, max ${fmt(m.agentwire_redis_rtt_max_seconds * 1000, 1)} ms`).join('; ');
      return `- ${name}: slowest deliveries ${slow}; this process's event-loop delay p99 ${r.driver_loop_delay_ms.p99} ms, max ${r.driver_loop_delay_ms.max} ms${rtt ? `; ${rtt}` : ''}.`;
    }),
  ].join('\n');
  return { name: 'latency', text, result: { scenario: 'latency', config: c, single, cluster, ratio }, failed: !single.ok || !cluster.ok || !!single.check?.problems.length || !!cluster.check?.problems.length };
}

// ---- 2. deliveries/s at the maximum rate --------------------------------------

const RATE_SETUPS = [
  { id: 'single-1loop', label: 'single node, no Redis, 1 loop (--threads 1)', nodes: 1, redis: false, threads: 1 },
  { id: 'single-2loops', label: 'single node, no Redis, 2 loops (--threads 2, the default here)', nodes: 1, redis: false, threads: 2 },
  { id: 'cluster-1node', label: 'cluster of one node on Redis', nodes: 1, redis: true },
  { id: 'cluster-2nodes', label: 'cluster of two nodes on one Redis', nodes: 2, redis: true },
];

async function rateRun(setup) {
  const c = CFG.rate;
  const res = { setup: setup.id };
  try {
    const redis = setup.redis ? await withRedis() : null;
    const nodes = [];
    for (let k = 0; k < setup.nodes; k++) {
      const id = String.fromCharCode(65 + k);
      nodes.push(await withNode(id, redis ? { redis: redis.url, id } : { threads: setup.threads }));
    }
    const us = users(`r${setup.id}`, c.users);
    const ledger = new Ledger(us);
    const lat = new Float64Array(Math.min(c.maxEvents * c.connsPerUser, 8_000_000));
    let nLat = 0;
    let delivered = 0;
    let tLastDelivery = 0;
    const subs = [];
    for (let ui = 0; ui < us.length; ui++) {
      for (let k = 0; k < c.connsPerUser; k++) {
        subs.push(new Subscriber({
          node: nodes[k % nodes.length], user: us[ui], ui, secret: SECRET, ledger,
          onEvent: (d, recv) => {
            delivered++;
            tLastDelivery = recv;
            if (nLat < lat.length) lat[nLat++] = recv - d.t;
          },
        }));
      }
    }
    const conns = [];
    clientsGroup(subs, conns);
    await openAll(subs);
    await sleep(300);
    for (let k = 0; k < c.pubConns; k++) {
      const conn = await new HttpConn(nodes[k % nodes.length].port, API_KEY).connect();
      conn.node = nodes[k % nodes.length];
      conns.push(conn);
    }
    const pids = [...nodes.map((n) => n.pid), ...(redis ? [redis.pid] : [])];
    let nextEvent = 0;
    let acked = 0;
    let tLastAck = 0;
    let stalls = 0;
    const t0 = nowMs();
    const tEnd = t0 + c.seconds * 1000;
    const cpuStart = cpuSample(pids);
    const loop = async (k) => {
      let conn = conns[k];
      while (nowMs() < tEnd && nextEvent < c.maxEvents) {
        // closed loop: at most `window` deliveries outstanding (sent, not yet received)
        if (nextEvent * c.connsPerUser - delivered > c.window) {
          stalls++;
          await sleep(1);
          continue;
        }
        if (conn.dead) {
          const node = conn.node;
          conn = await new HttpConn(node.port, API_KEY).connect();
          conn.node = node;
          conns.push(conn);
        }
        const first = nextEvent;
        const n = Math.min(c.batch, c.maxEvents - first);
        nextEvent += n;
        const t = nowMs();
        const parts = [];
        for (let i = first; i < first + n; i++) {
          const u = JSON.stringify(us[i % us.length]);
          parts.push(`{"user_id":${u},"type":"bench","u":${u},"i":${i},"t":${t},"text":"${PAD}"}`);
        }
        try {
          const r = await conn.request('POST', '/api/v1/publish/batch', `[${parts.join(',')}]`);
          if (r.status !== 200) {
            for (let i = 0; i < n; i++) ledger.error(`batch ${r.status} ${r.body}`);
            continue;
          }
          const receipts = JSON.parse(r.body);
          for (let j = 0; j < n; j++) if (ledger.ack((first + j) % us.length, receipts[j])) acked++;
          tLastAck = nowMs();
        } catch (err) {
          for (let i = 0; i < n; i++) ledger.error(err.message);
        }
      }
    };
    // halfway: where the outstanding deliveries wait (Redis output buffers of the nodes' subscriber connections)
    const mid = {};
    const midTimer = setTimeout(async () => {
      mid.outstanding = nextEvent * c.connsPerUser - delivered;
      mid.tcp_queued_bytes = tcpQueues(redis?.port, nodes.map((n) => n.port));
      if (!redis) return;
      const list = await redis.client.command(['CLIENT', 'LIST']).catch(() => '');
      const omem = String(list).split('\n').filter((l) => / sub=[1-9]/.test(l)).map((l) => Number((l.match(/ omem=(\d+)/) ?? [])[1] ?? 0));
      mid.redis_pubsub_omem_bytes = omem;
    }, (c.seconds * 1000) / 2);
    const loops = [];
    for (let k = 0; k < c.pubConns; k++) for (let d = 0; d < c.depth; d++) loops.push(loop(k));
    await bounded(Promise.all(loops), c.seconds * 1000 + 30000);
    clearTimeout(midTimer);
    const drained = await waitUntil(() => ledger.outstanding() === 0, { boundMs: CFG.drainMs, stallMs: 5000, progress: () => delivered });
    const cpuEnd = cpuSample(pids);
    const v = ledger.check();
    if (!drained) v.problems.push(`deliveries still outstanding after the drain: ${ledger.outstanding()}`);
    const cpu = cpuPct(cpuStart, cpuEnd, pids);
    const deliveriesS = (tLastDelivery - t0) / 1000;
    Object.assign(res, {
      ok: true,
      label: setup.label,
      nodes: nodes.length,
      connections: subs.length,
      publish: `batches of ${c.batch}, ${c.pubConns} connections × ${c.depth} in flight${nodes.length > 1 ? ', spread over the nodes' : ''}`,
      events_published: acked,
      deliveries: delivered,
      deliveries_per_s: delivered / deliveriesS,
      acks_per_s: acked / ((tLastAck - t0) / 1000),
      elapsed_s: deliveriesS,
      latency_ms: round(percentiles(lat.subarray(0, nLat), [50, 99])),
      window_stalls: stalls,
      nodes_cpu_pct: cpu.per.slice(0, nodes.length).reduce((a, b) => a + b, 0),
      redis_cpu_pct: redis ? cpu.per.at(-1) : null,
      driver_cpu_pct: cpu.self,
      rest_cpu_pct: cpu.rest,
      nodes_cpu_ms_per_1k_deliveries: (cpu.ms.slice(0, nodes.length).reduce((a, b) => a + b, 0) / delivered) * 1000,
      midway: mid,
      metrics: redis ? await nodeMetrics(nodes) : undefined,
      check: v,
    });
  } catch (err) {
    Object.assign(res, { ok: false, label: setup.label, error: String(err.stack ?? err).slice(0, 1500) });
  } finally {
    await stopTracked();
  }
  return res;
}

async function scenarioRate() {
  const c = CFG.rate;
  log(`[2] rate: ${c.users} users × ${c.connsPerUser} connections, batches of ${c.batch}, ${c.seconds} s per setup`);
  const runs = [];
  for (const s of RATE_SETUPS) {
    const r = await rateRun(s);
    log(`    ${s.id}: ${r.ok ? `${fmt(r.deliveries_per_s)} deliveries/s, ${fmt(r.acks_per_s)} acks/s; ${problemsText(r.check)}` : r.error}`);
    runs.push(r);
  }
  const base = runs.find((r) => r.setup === 'single-1loop');
  const text = [
    '### 2. Deliveries/s at the maximum rate',
    '',
    `**This machine has ${cpus().length} cores**: the load generator (this node process: ${c.users * c.connsPerUser} \`ws\` clients parsing and checking every event, and the publishers), every agentwire node and redis-server share them, so these are the rates of the whole system on ${cpus().length} cores, not of a node alone; the CPU columns show who had them (100 % = one core).`,
    '',
    `${c.users} users × ${c.connsPerUser} connections (in a two-node cluster each user has one connection on each node, so every event crosses nodes); \`POST /api/v1/publish/batch\` with ${c.batch} events per request, ${c.pubConns} keep-alive connections × ${c.depth} requests in flight (spread over the nodes), for ${c.seconds} s, with at most ${fmt(c.window)} deliveries outstanding (published, not yet received; the publishers wait beyond that). deliveries/s: events received by the clients ÷ (last delivery − first publish); acks/s: events acknowledged ÷ (last acknowledgement − first publish). Latency at this rate is mostly the window ÷ the rate (queueing), not a property of the path. Halfway through, the outstanding deliveries and the bytes redis-server had written to the nodes that they had not read yet (\`ss -tn\` Send-Q of Redis's sockets): where the backlog waits.`,
    '',
    table(['setup', 'nodes', 'connections', 'events published', 'deliveries', 'deliveries/s', 'publish acks/s', 'vs single node (1 loop)', 'latency p50 / p99 ms', 'nodes CPU %', 'redis CPU %', 'driver CPU %', 'rest of the machine CPU %', 'nodes CPU ms / 1k deliveries', 'halfway: deliveries outstanding / KB queued Redis → nodes', 'lost, duplicated, reordered, misdelivered'],
      runs.map((r) => (r.ok
        ? [r.label, r.nodes, fmt(r.connections), fmt(r.events_published), fmt(r.deliveries), fmt(r.deliveries_per_s), fmt(r.acks_per_s), base?.ok ? `${(r.deliveries_per_s / base.deliveries_per_s).toFixed(2)}×` : '–',
          `${fmt(r.latency_ms.p50, 1)} / ${fmt(r.latency_ms.p99, 1)}`, fmt(r.nodes_cpu_pct), r.redis_cpu_pct === null ? '–' : fmt(r.redis_cpu_pct), fmt(r.driver_cpu_pct), fmt(Math.max(0, r.rest_cpu_pct)), fmt(r.nodes_cpu_ms_per_1k_deliveries, 2),
          `${fmt(r.midway.outstanding)} / ${r.midway.tcp_queued_bytes && r.redis_cpu_pct !== null ? fmt(r.midway.tcp_queued_bytes.redis_sendq / 1024) : '–'}`, problemsText(r.check)]
        : [r.label, '', '', '', '', '', '', '', '', '', '', '', '', '', '', `FAILED: ${r.error.split('\n')[0]}`]))),
  ].join('\n');
  return { name: 'rate', text, result: { scenario: 'rate', config: c, cores: cpus().length, runs }, failed: runs.some((r) => !r.ok || r.check.problems.length) };
}

// ---- 3. Redis CPU and memory per 1,000 events ---------------------------------

async function redisSnapshot(redis) {
  const mem = await redis.client.info('memory');
  const cpu = await redis.client.info('cpu');
  const stats = await redis.client.info('commandstats');
  const ks = await redis.client.info('keyspace');
  const ev = (stats.cmdstat_evalsha ?? '').match(/calls=(\d+),usec=(\d+)/);
  const keys = (ks.db0 ?? '').match(/keys=(\d+)/);
  return {
    cpu_ms: cpuMs(redis.pid),
    info_cpu_ms: (Number(cpu.used_cpu_sys) + Number(cpu.used_cpu_user)) * 1000,
    used_memory: Number(mem.used_memory),
    used_memory_rss: Number(mem.used_memory_rss),
    evalsha_calls: ev ? Number(ev[1]) : 0,
    evalsha_usec: ev ? Number(ev[2]) : 0,
    keys: keys ? Number(keys[1]) : 0,
  };
}

async function scenarioRedis() {
  const c = CFG.redis;
  log(`[3] redis: ${c.users} users; ${c.single} + ${c.batched}${c.overflow ? ` + ${c.overflow}` : ''} events each`);
  const out = { scenario: 'redis', config: c, phases: [] };
  let failed = false;
  try {
    const redis = await withRedis();
    const A = await withNode('A', { redis: redis.url, id: 'A' });
    const B = await withNode('B', { redis: redis.url, id: 'B' });
    const us = users('m', c.users);
    const ledger = new Ledger(us);
    const perUser = new Uint32Array(us.length); // events published to each user so far
    const subs = us.map((user, ui) => new Subscriber({ node: B, user, ui, secret: SECRET, ledger }));
    const conns = [];
    clientsGroup(subs, conns);
    await openAll(subs);
    await sleep(500);
    for (let k = 0; k < c.publishers; k++) conns.push(await new HttpConn(A.port, API_KEY).connect());
    let eventBytes = 0;
    const body = (ui, i) => {
      const u = JSON.stringify(us[ui]);
      const b = `{"user_id":${u},"type":"bench","u":${u},"i":${i},"t":${nowMs()},"text":"${PAD}"}`;
      eventBytes = Buffer.byteLength(b);
      return b;
    };
    const empty = await redisSnapshot(redis);
    out.baseline = empty;

    // one phase: `per` events to each user, through node A, then wait for every delivery on node B
    const phase = async (name, per, batch) => {
      const before = await redisSnapshot(redis);
      const retainedBefore = [...perUser].reduce((a, n) => a + Math.min(n, 1000), 0);
      const total = per * us.length;
      let next = 0;
      const t0 = nowMs();
      const worker = async (conn) => {
        while (next < total) {
          const first = next;
          const n = Math.min(batch, total - first);
          next += n;
          const idx = [];
          for (let i = first; i < first + n; i++) idx.push(i % us.length);
          try {
            if (batch === 1) {
              const r = await conn.request('POST', '/api/v1/publish', body(idx[0], first));
              if (r.status === 200) ledger.ack(idx[0], JSON.parse(r.body));
              else ledger.error(`${r.status} ${r.body}`);
            } else {
              const r = await conn.request('POST', '/api/v1/publish/batch', `[${idx.map((ui, j) => body(ui, first + j)).join(',')}]`);
              if (r.status !== 200) { for (const _ of idx) ledger.error(`batch ${r.status} ${r.body}`); continue; }
              const receipts = JSON.parse(r.body);
              idx.forEach((ui, j) => ledger.ack(ui, receipts[j]));
            }
          } catch (err) {
            for (const _ of idx) ledger.error(err.message);
          }
          for (const ui of idx) perUser[ui]++;
        }
      };
      const bound = Math.max(60000, total * 2);
      await bounded(Promise.all(conns.map(worker)), bound);
      const publishS = (nowMs() - t0) / 1000;
      const drained = await waitUntil(() => ledger.outstanding() === 0, { boundMs: CFG.drainMs, stallMs: 5000, progress: () => ledger.delivered() });
      await sleep(100);
      const after = await redisSnapshot(redis);
      const retainedAfter = [...perUser].reduce((a, n) => a + Math.min(n, 1000), 0);
      const p = {
        phase: name,
        publish: batch === 1 ? `one event per request, ${conns.length} connections` : `batches of ${batch}, ${conns.length} connections`,
        events: total,
        events_per_s: total / publishS,
        redis_cpu_ms: after.cpu_ms - before.cpu_ms,
        redis_cpu_ms_per_1k: ((after.cpu_ms - before.cpu_ms) / total) * 1000,
        redis_info_cpu_ms_per_1k: ((after.info_cpu_ms - before.info_cpu_ms) / total) * 1000,
        evalsha_calls: after.evalsha_calls - before.evalsha_calls,
        evalsha_us_per_call: (after.evalsha_usec - before.evalsha_usec) / Math.max(1, after.evalsha_calls - before.evalsha_calls),
        used_memory_delta: after.used_memory - before.used_memory,
        retained_delta: retainedAfter - retainedBefore,
        retained_after: retainedAfter,
        bytes_per_1k_retained: retainedAfter > retainedBefore ? ((after.used_memory - before.used_memory) / (retainedAfter - retainedBefore)) * 1000 : null,
        bytes_per_1k_retained_total: ((after.used_memory - empty.used_memory) / retainedAfter) * 1000,
        used_memory_after: after.used_memory,
        keys_after: after.keys,
        drained,
      };
      log(`    ${name}: ${fmt(p.events_per_s)} events/s, redis ${fmt(p.redis_cpu_ms_per_1k, 1)} ms CPU / 1k events, ${fmt(p.bytes_per_1k_retained)} bytes / 1k retained`);
      out.phases.push(round(p));
    };
    await phase('one event per request', c.single, 1);
    await phase('batches', c.batched, c.batch);
    if (c.overflow) await phase(`batches past the history cap (${c.single + c.batched + c.overflow} per user, 1000 kept)`, c.overflow, c.batch);
    out.event_body_bytes = eventBytes;
    // one retained entry and one user's history list, as Redis stores them
    const u0 = us[0];
    const hkey = `aw:${Buffer.byteLength(u0)}:${u0}:h`;
    const entry = await redis.client.command(['LINDEX', hkey, '-1']).catch(() => null);
    out.history_entry_bytes = typeof entry === 'string' ? Buffer.byteLength(entry) : null;
    out.history_list_memory_usage = await redis.client.command(['MEMORY', 'USAGE', hkey, 'SAMPLES', '0']).catch(() => null);
    out.history_list_len = await redis.client.command(['LLEN', hkey]).catch(() => null);
    out.check = ledger.check();
    for (const p of out.phases) if (!p.drained) out.check.problems.push(`${p.phase}: deliveries outstanding after the drain`);
    failed = out.check.problems.length > 0;
    out.ok = true;
  } catch (err) {
    out.ok = false;
    out.error = String(err.stack ?? err).slice(0, 1500);
    failed = true;
  } finally {
    await stopTracked();
  }
  const text = [
    '### 3. Redis CPU and memory per 1,000 events',
    '',
    out.ok
      ? `Two nodes on one Redis (config as above: \`save ""\`, \`appendonly no\`), ${c.users} users with one subscriber each on node B, events published through node A (--history-size 1000, the default), phases one after the other on the same streams. Event body ${out.event_body_bytes} bytes; a retained history entry (\`"SEQ TS JSON"\`) is ${out.history_entry_bytes} bytes; one user's history list of ${out.history_list_len} entries: \`MEMORY USAGE\` ${fmt(out.history_list_memory_usage)} bytes. CPU: redis-server's utime+stime from /proc/PID/stat (10 ms ticks) over the phase (publishing and delivery), with \`INFO cpu\` (µs) beside it; memory: \`INFO memory\` used_memory before and after.`
      : `FAILED: ${out.error.split('\n')[0]}`,
    '',
    out.ok ? table(['phase', 'events', 'events/s', 'redis CPU ms', 'CPU ms / 1k events (/proc)', 'CPU ms / 1k events (INFO cpu)', 'EVALSHA calls', 'µs per EVALSHA', 'used_memory Δ', 'retained events Δ', 'bytes / 1k retained (Δ)', 'used_memory above empty / 1k retained'],
      out.phases.map((p) => [p.phase, fmt(p.events), fmt(p.events_per_s), fmt(p.redis_cpu_ms), fmt(p.redis_cpu_ms_per_1k, 1), fmt(p.redis_info_cpu_ms_per_1k, 1), fmt(p.evalsha_calls), fmt(p.evalsha_us_per_call, 1),
        fmt(p.used_memory_delta), fmt(p.retained_delta), p.bytes_per_1k_retained === null ? '–' : fmt(p.bytes_per_1k_retained), fmt(p.bytes_per_1k_retained_total)])) : '',
    '',
    out.ok ? `Checks: ${problemsText(out.check)} (${fmt(out.check.deliveries)} of ${fmt(out.check.deliveries_expected)} deliveries).` : '',
  ].join('\n');
  return { name: 'redis', text, result: out, failed };
}

// ---- main ----------------------------------------------------------------------

function gitCommit() {
  try {
    return execFileSync('git', ['-C', ROOT, 'rev-parse', '--short=12', 'HEAD'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  } catch {
    return '?';
  }
}

async function main() {
  const md = [];
  const say = (line = '') => { console.log(line); md.push(line); };
  const t0 = Date.now();
  const shownBin = relative(process.cwd(), CLI.bin) || CLI.bin;
  const cmd = `node ${relative(process.cwd(), fileURLToPath(import.meta.url))} ${process.argv.slice(2).join(' ')}`.trim();
  say(`$ ${cmd}`);
  say('');
  // a copy of the binary, so that a rebuild while this runs changes nothing
  const binDir = mkdtempSync(join(tmpdir(), 'awbench-cluster-bin-'));
  process.on('exit', () => rmSync(binDir, { recursive: true, force: true }));
  BIN = join(binDir, 'agentwire');
  copyFileSync(CLI.bin, BIN);
  const st = statSync(CLI.bin);
  let cpuModel = '?';
  try { cpuModel = (readFileSync('/proc/cpuinfo', 'utf8').match(/^model name\s*:\s*(.*)$/m) ?? [])[1] ?? '?'; } catch { /* none */ }
  const machine = {
    cores: cpus().length, cpu: cpuModel, node: process.version, redis: redisVersion(),
    agentwire: `${shownBin} (commit ${gitCommit()} of the tree; binary of ${st.mtime.toISOString()}, ${st.size} bytes)`,
  };
  console.log(`## agentwire cluster benchmark${CLI.quick ? ' (--quick: tiny sizes, a smoke run)' : ''}`);
  say('');
  say(`Machine: **${machine.cores} cores** (${machine.cpu}); node ${machine.node}; ${machine.redis}. Binary: ${machine.agentwire}. Everything on 127.0.0.1; the load generator (this process) shares the ${machine.cores} cores with the servers.`);
  say('');
  say('Servers, each run fresh:');
  say('');
  say('```');
  say(`${shownBin} ${shownArgs(nodeArgs())}                    # single node`);
  say(`${shownBin} ${shownArgs(nodeArgs({ redis: 'redis://x', id: 'A' }))}   # cluster node (B: --node-id B)`);
  say(`/usr/bin/redis-server redis.conf   # redis.conf: ${redisConfig({ port: '$REDIS_PORT', dir: '$DIR' }).trim().split('\n').join('; ')}`);
  say('```');
  say('');
  const scen = { 1: scenarioLatency, 2: scenarioRate, 3: scenarioRedis };
  let failed = false;
  const summary = [];
  for (const s of CLI.only) {
    const r = await scen[s]();
    say(r.text);
    say('');
    process.stdout.write(`RESULT ${JSON.stringify({ ...r.result, quick: CLI.quick })}\n`);
    say('');
    if (r.failed) failed = true;
    summary.push(`${r.name}: ${r.failed ? 'PROBLEMS' : 'ok'}`);
  }
  say(`${summary.join(', ')}; ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  if (CLI.md) {
    mkdirSync(dirname(CLI.md), { recursive: true });
    // the page's section: the heading first, then the command, then the rest
    const head = ['## g) Cluster mode on Redis (`node bench/cluster.mjs`)', '', `Command: \`${cmd}\` (its own redis-server and nodes).`];
    writeFileSync(CLI.md, `${[...head, ...md.slice(1)].join('\n').trim()}\n`);
    console.log(`markdown: ${CLI.md}`);
  }
  if (failed) {
    say('FAILED: an event was lost, duplicated, reordered or misdelivered, or a run failed (see the tables)');
    process.exitCode = 1;
  }
}

let stopping = false;
async function onSignal(sig) {
  if (stopping) return;
  stopping = true;
  log(`cluster.mjs: ${sig}, stopping everything started here`);
  const t = setTimeout(() => { killAllNow(); process.exit(130); }, 5000);
  await stopTracked().catch(() => {});
  await stopAll().catch(() => {});
  clearTimeout(t);
  process.exit(130);
}
process.on('SIGINT', () => onSignal('SIGINT'));
process.on('SIGTERM', () => onSignal('SIGTERM'));
process.on('exit', () => killAllNow());

main().catch(async (err) => {
  log(`cluster.mjs: ${err.stack ?? err}`);
  await stopTracked().catch(() => {});
  await stopAll().catch(() => {});
  process.exit(1);
});
