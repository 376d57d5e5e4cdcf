#!/usr/bin/env node
// bench/cluster.mjs -- what cluster mode (--redis, docs/cluster.md) costs, and
// what the peers' own clusters on Redis cost, measured in one run on this
// machine, everything on 127.0.0.1:
//
//   node bench/cluster.mjs [--bin build/agentwire] [--quick] [--only 1,2,3]
//                          [--peers socketio,nchan|none] [--md FILE]
//
// The setups: agentwire as a single node (no --redis) and as two nodes on one
// Redis; Socket.IO with its Redis adapter on two node processes
// (bench/peers/socketio-server.mjs --redis, npm @socket.io/redis-adapter); nchan in
// Redis mode on two nginx instances (bench/peers/nchan.sh PORT DIR REDIS_URL). Every
// cluster has its own fresh redis-server. --peers: which peers' clusters run
// (default: socketio,nchan; a peer that cannot run here is left out with a
// note, unless it was named with --peers, which makes it a failure).
//
// 1. latency  cross-node delivery latency at a fixed rate: subscribers on
//             member B, the publisher posting to member A (one event per
//             request, keep-alive, several connections with one request in
//             flight each), each event carrying its send time (process.hrtime
//             ms, this process) -> p50/p99/p99.9; agentwire's single node
//             with publisher and subscribers on it as the reference.
// 2. rate     deliveries/s and publish acks/s at the maximum rate: a single
//             agentwire node without Redis (one loop, and two), a cluster of
//             one agentwire node on Redis, two-member clusters of agentwire,
//             Socket.IO and nchan; batches (agentwire, Socket.IO) or pipelined
//             single POSTs (nchan: no batch endpoint) through every member,
//             each user's two connections spread over the members. The
//             publishers keep at most a window of deliveries outstanding, so
//             that clients that fall behind are not closed as slow consumers.
// 3. redis    Redis CPU (utime+stime of redis-server, /proc/PID/stat) and
//             memory (INFO memory used_memory) per 1,000 events published
//             through each two-member cluster (agentwire: history at its
//             default, 1000 per user; nchan: 10 messages per channel, as the
//             main benchmark's nchan; Socket.IO keeps nothing in Redis).
//
// Every process is started here: redis-server (Debian's /usr/bin/redis-server,
// generated config, save "", appendonly no), agentwire (a copy of --bin taken
// at the start, so that a rebuild meanwhile changes nothing), the Socket.IO
// processes and the nginx instances, and stopped after each run, on error and
// on SIGINT/SIGTERM. The subscribers, the publishers and the checks run in this
// process (node `ws` clients, the same for every setup): on a 2-core machine
// the load generator competes with the servers for CPU.
//
// Every subscriber must receive exactly its own user's events, in order, once
// each: agentwire's the seqs its user's publishes were acknowledged with
// (1..n); the peers' (no per-user seq) the per-user index k the benchmark puts
// in each event (1..n), after a probe per user has shown that every
// subscription is in place. In every setup each user's events go through one
// publisher connection (so that they reach the server in k order). Losses are
// reported, and the exit status is 1 when any event was lost, duplicated,
// reordered or misdelivered, or a setup failed. --quick: tiny sizes, under a
// minute, the same checks, each measurement once. A full run makes a latency
// or rate measurement again (at most twice more) when other processes took
// more than 25 % of a core during it, and shows the quietest, with the count.
// --md FILE: the summary table and every scenario's tables, as the section g)
// of docs/benchmarks.md.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { HttpConn, httpOnce, Ledger, nowMs, openAll, percentiles, startNode, Subscriber } from './lib/cluster-clients.mjs';
import {
  NCHAN_SCRIPT, PeerSubscriber, peerPublishOk, peerPublishPath, peerUnavailable, peerVersions, SOCKETIO_ARGS, SOCKETIO_SCRIPT,
  startNchanMember, startSocketioMember,
} from './lib/cluster-peers.mjs';
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
const PEERS = ['socketio', 'nchan'];
// the history each cluster keeps in Redis per user (agentwire: --history-size
// default; nchan: nchan_message_buffer_length of nchan.sh; Socket.IO: none)
const KEPT = { agentwire: 1000, nchan: 10, socketio: 0 };
const NAME = { agentwire: 'agentwire', socketio: 'Socket.IO + redis-adapter', nchan: 'nchan on Redis' };

// ---- command line --------------------------------------------------------------

function usage(err) {
  const text = 'usage: node bench/cluster.mjs [--bin build/agentwire] [--quick] [--only 1,2,3] [--peers socketio,nchan|none] [--md FILE]\n' +
    '  1 cross-node latency at a fixed rate   2 deliveries/s at the maximum rate   3 Redis CPU and memory per 1,000 events';
  if (err) {
    process.stderr.write(`cluster.mjs: ${err}\n${text}\n`);
    process.exit(2);
  }
  process.stdout.write(`${text}\n`);
  process.exit(0);
}

function parseCli(argv) {
  const o = { bin: join(ROOT, 'build/agentwire'), quick: false, only: ['1', '2', '3'], peers: [...PEERS], peersNamed: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => (i + 1 < argv.length ? argv[++i] : usage(`${a} needs a value`));
    if (a === '--bin') o.bin = resolve(val());
    else if (a === '--quick') o.quick = true;
    else if (a === '--md') o.md = resolve(val());
    else if (a === '--only') o.only = val().split(',').map((s) => s.trim()).filter(Boolean);
    else if (a === '--peers') {
      const v = val().trim();
      o.peers = v === 'none' ? [] : v.split(',').map((s) => s.trim()).filter(Boolean);
      o.peersNamed = true;
    } else if (a === '--help' || a === '-h') usage(null);
    else usage(`unknown option ${a}`);
  }
  for (const s of o.only) if (!['1', '2', '3'].includes(s)) usage(`--only: unknown scenario ${s}`);
  for (const p of o.peers) if (!PEERS.includes(p)) usage(`--peers: unknown peer ${p} (socketio, nchan or none)`);
  o.peers = PEERS.filter((p) => o.peers.includes(p));
  if (!existsSync(o.bin)) usage(`${o.bin} not found (build it: scripts/build.sh release)`);
  return o;
}

const CLI = parseCli(process.argv.slice(2));
const CFG = CLI.quick ? QUICK : FULL;
const SECRET = randomBytes(16).toString('hex');
const API_KEY = randomBytes(16).toString('hex');
const TAG = randomBytes(3).toString('hex');
let BIN = CLI.bin;
// the peers that run, and why the others do not
const PEER_SKIPPED = {};
const PEERS_RUN = CLI.peers.filter((p) => {
  const why = peerUnavailable(p);
  if (why) PEER_SKIPPED[p] = why;
  return !why;
});

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
  // clients first, then nodes (and peer members), then redis
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

/**
 * A setup: `members` servers of `kind` (agentwire, socketio, nchan), on a
 * fresh redis-server when `redis` (peers: always). Every process is tracked.
 * groups(): the pids of each member (nginx: master and worker) and of Redis.
 */
async function startSetup(kind, { members = 2, redis = true, threads = 1 } = {}) {
  const r = redis || kind !== 'agentwire' ? await withRedis() : null;
  const ms = [];
  for (let k = 0; k < members; k++) {
    const id = String.fromCharCode(65 + k);
    let m;
    if (kind === 'agentwire') m = await withNode(id, r ? { redis: r.url, id } : { threads });
    else if (kind === 'socketio') m = await startSocketioMember({ redisUrl: r.url, name: id, secret: SECRET, apiKey: API_KEY });
    else if (kind === 'nchan') m = await startNchanMember({ redisUrl: r.url, name: id });
    else throw new Error(`unknown setup kind ${kind}`);
    m.kind = 'node';
    ms.push(track(m));
  }
  return {
    kind, redis: r, members: ms,
    groups: () => [...ms.map((m) => (m.pids ? m.pids() : [m.pid])), ...(r ? [[r.pid]] : [])],
    alive: () => ms.every((m) => m.alive()) && (!r || r.alive()),
  };
}

function newSubscriber(setup, member, user, ui, ledger, onEvent) {
  return setup.kind === 'agentwire'
    ? new Subscriber({ node: member, user, ui, secret: SECRET, ledger, onEvent })
    : new PeerSubscriber({ kind: setup.kind, node: member, user, ui, secret: SECRET, ledger, onEvent });
}

/**
 * Publishing to a setup. Every event carries user_id, type, u (the user, for
 * the misdelivery check), k (its user's index: 1, 2, ...; the peers' check),
 * i (its global index), t (send time) and the padding; the latency scenario
 * adds m (1: measured). one(): one event per request; many(): agentwire's and
 * Socket.IO's batch endpoints, nchan's pipelined single POSTs (no batch
 * endpoint). Each answered event goes into the ledger: agentwire's receipt
 * (seq), a peer's {seq: k}. Resolve to the number of events acknowledged.
 */
function makePublisher(setup, us, ledger) {
  const K = new Uint32Array(us.length);
  const kind = setup.kind;
  const q = us.map((u) => JSON.stringify(u));
  const body = (ui, k, i, t, m) => `{"user_id":${q[ui]},"type":"bench","u":${q[ui]},"k":${k},"i":${i}${m === undefined ? '' : `,"m":${m}`},"t":${t},"text":"${PAD}"}`;
  let bodyBytes = 0;
  const one = async (conn, ui, i, t, m) => {
    const k = ++K[ui];
    const b = body(ui, k, i, t, m);
    bodyBytes = Buffer.byteLength(b);
    try {
      const r = await conn.request('POST', kind === 'agentwire' ? '/api/v1/publish' : peerPublishPath(kind, us[ui], false), b);
      if (kind === 'agentwire') {
        if (r.status === 200) return ledger.ack(ui, JSON.parse(r.body)) ? 1 : 0;
      } else if (peerPublishOk(kind, r, 1)) {
        return ledger.ack(ui, { seq: k }) ? 1 : 0;
      }
      ledger.error(`${r.status} ${r.body.slice(0, 200)}`);
    } catch (err) {
      ledger.error(err.message);
    }
    return 0;
  };
  const many = async (conn, uis, i0, t) => {
    if (kind === 'nchan') {
      // pipelined: every request written now (corked into as few segments as the socket allows), answered in order
      conn.sock?.cork();
      const ps = uis.map((ui, j) => one(conn, ui, i0 + j, t));
      conn.sock?.uncork();
      return (await Promise.all(ps)).reduce((a, b) => a + b, 0);
    }
    const ks = uis.map((ui) => ++K[ui]);
    const b = `[${uis.map((ui, j) => body(ui, ks[j], i0 + j, t)).join(',')}]`;
    const n = uis.length;
    try {
      const r = await conn.request('POST', kind === 'agentwire' ? '/api/v1/publish/batch' : peerPublishPath(kind, null, true), b);
      if (kind === 'agentwire') {
        if (r.status === 200) {
          const receipts = JSON.parse(r.body);
          let acked = 0;
          for (let j = 0; j < n; j++) if (ledger.ack(uis[j], receipts[j])) acked++;
          return acked;
        }
      } else if (peerPublishOk(kind, r, n)) {
        for (let j = 0; j < n; j++) ledger.ack(uis[j], { seq: ks[j] });
        return n;
      }
      for (let j = 0; j < n; j++) ledger.error(`batch ${r.status} ${r.body.slice(0, 200)}`);
    } catch (err) {
      for (let j = 0; j < n; j++) ledger.error(err.message);
    }
    return 0;
  };
  return { one, many, bodyBytes: () => bodyBytes, sent: (ui) => K[ui] };
}

/**
 * The peers' subscriptions are in place once a probe event (probe: 1, no k)
 * published through `member` reached every subscriber: probes to the users
 * whose subscribers have none yet, every 500 ms, at most 20 rounds; then an
 * error. agentwire: nothing to do (a subscriber is subscribed once it got
 * connection_established, and its seqs would show a gap otherwise).
 */
async function probeSubscriptions(setup, member, us, subs) {
  if (setup.kind === 'agentwire') return 0;
  const conn = await new HttpConn(member.port, API_KEY).connect();
  try {
    for (let round = 1; round <= 20; round++) {
      const missing = [...new Set(subs.filter((s) => s.probes === 0).map((s) => s.ui))];
      if (!missing.length) return round - 1;
      const rs = await Promise.all(missing.map((ui) => conn.request('POST', peerPublishPath(setup.kind, us[ui], false),
        `{"user_id":${JSON.stringify(us[ui])},"u":${JSON.stringify(us[ui])},"probe":1}`)));
      const bad = rs.find((r) => !peerPublishOk(setup.kind, r, 1));
      if (bad) throw new Error(`probe publish answered ${bad.status} ${bad.body.slice(0, 200)}`);
      await waitUntil(() => subs.every((s) => s.probes > 0), { boundMs: 500 });
    }
    const n = subs.filter((s) => s.probes === 0).length;
    if (n) throw new Error(`${n} of ${subs.length} subscribers got no probe event within 20 rounds (10 s): subscriptions not in place`);
    return 20;
  } finally {
    conn.close();
  }
}

// ---- small helpers -----------------------------------------------------------

const log = (s) => process.stderr.write(`${s}\n`);
// user ids are channel ids of nchan too (\w+): letters, digits, underscores
const users = (scen, n) => Array.from({ length: n }, (_, i) => `cb${TAG}_${scen.replace(/\W/g, '_')}_${i}`);
const fmt = (x, d = 0) => (x === undefined || x === null || Number.isNaN(x) ? '–' : Number(x).toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d }));
const r3 = (x) => (Number.isFinite(x) ? Math.round(x * 1000) / 1000 : x);
const round = (o) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, typeof v === 'number' ? r3(v) : v]));
/** The users of connection k of P: each user's events go through one connection. */
const partition = (n, P) => Array.from({ length: P }, (_, k) => Array.from({ length: n }, (_, ui) => ui).filter((ui) => ui % P === k));

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

/** CPU ms of each group of pids (a member, Redis), of this process and of the machine, now. */
function cpuSample(groups) {
  const u = process.cpuUsage();
  return { t: nowMs(), pids: groups.map((g) => g.reduce((a, p) => a + cpuMs(p), 0)), self: (u.user + u.system) / 1000, machine: machineBusyMs() };
}
function cpuPct(a, b, groups) {
  const dt = b.t - a.t;
  const per = groups.map((_, i) => ((b.pids[i] - a.pids[i]) / dt) * 100);
  const self = ((b.self - a.self) / dt) * 100;
  const machine = ((b.machine - a.machine) / dt) * 100;
  // what the machine spent besides the servers and this process: other processes, interrupts
  const rest = machine - self - per.reduce((x, y) => x + y, 0);
  return { per, self, machine, rest, ms: groups.map((_, i) => b.pids[i] - a.pids[i]), self_ms: b.self - a.self };
}

function table(header, rows) {
  const line = (cells) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

function problemsText(v) {
  return v.problems.length ? v.problems.join('; ') : 'none';
}

// A measurement in which other processes (not the servers, not this process)
// took more than REST_LIMIT % of a core is repeated, at most REPEATS more times
// (full runs only), and the quietest is kept: on a shared 2-core machine a
// burst of someone else's work would otherwise decide a row.
const REST_LIMIT = 25;
const REPEATS = CLI.quick ? 0 : 2;
async function quietest(run, what) {
  const tries = [];
  for (let a = 0; a <= REPEATS; a++) {
    const r = await run();
    tries.push(r);
    // a failed or faulty attempt is the one reported (and fails the benchmark)
    if (!r.ok || r.check.problems.length) { r.attempts_rest_cpu_pct = tries.map((t) => (t.ok ? r3(t.rest_cpu_pct) : null)); return r; }
    if (!(r.rest_cpu_pct > REST_LIMIT)) break;
    if (a < REPEATS) log(`    ${what}: other processes took ${fmt(r.rest_cpu_pct)} % of a core, again`);
  }
  const best = tries.reduce((a, b) => (b.rest_cpu_pct < a.rest_cpu_pct ? b : a));
  best.attempts_rest_cpu_pct = tries.map((t) => r3(t.rest_cpu_pct));
  return best;
}
const attemptsText = (r) => (r.attempts_rest_cpu_pct?.length > 1 ? `${r.attempts_rest_cpu_pct.length}: ${r.attempts_rest_cpu_pct.map((x) => fmt(Math.max(0, x))).join(' / ')}` : '1');
const repeatNote = () => (REPEATS ? `A measurement in which other processes took more than ${REST_LIMIT} % of a core ("rest of the machine") was made again, at most ${REPEATS} more times, and the one with the least is shown; "runs" gives how many were made and the rest-of-the-machine CPU % of each.` : '');

/** The setups a scenario runs besides agentwire's: the peers' two-member clusters. */
function peerNote() {
  const skipped = Object.entries(PEER_SKIPPED);
  return skipped.length ? `Not run here: ${skipped.map(([p, why]) => `${NAME[p]} (${why})`).join('; ')}.` : '';
}

// ---- 1. cross-node latency at a fixed rate -----------------------------------

/**
 * One latency run: kind 'agentwire' with mode 'single' (one node, no Redis:
 * publisher and subscribers on it) or 'cluster' (two members: publisher →
 * A, subscribers on B), or a peer's two-member cluster.
 */
async function latencyRun(kind, mode) {
  const c = CFG.latency;
  const res = { kind, mode };
  try {
    const setup = await startSetup(kind, mode === 'single' ? { members: 1, redis: false } : { members: 2, redis: true });
    const A = setup.members[0];
    const B = setup.members.at(-1);
    const redis = setup.redis;
    const us = users(`l${kind[0]}${mode[0]}`, c.users);
    const ledger = new Ledger(us);
    const lat = [];
    const sendT = [];
    const subs = us.map((user, ui) => newSubscriber(setup, B, user, ui, ledger, (d, recv) => { if (d.m === 1) { lat.push(recv - d.t); sendT.push(d.t); } }));
    const conns = [];
    clientsGroup(subs, conns);
    await openAll(subs);
    await sleep(300);
    const probeRounds = await probeSubscriptions(setup, A, us, subs);
    // one slot per publisher connection, one request in flight each; user ui's events through slot ui % P
    const P = c.publishers;
    const slots = [];
    for (let k = 0; k < P; k++) {
      const conn = await new HttpConn(A.port, API_KEY).connect();
      conns.push(conn);
      slots.push({ conn, busy: false });
    }
    const pub = makePublisher(setup, us, ledger);
    const total = Math.round(c.rate * (c.warmS + c.measureS));
    const warmN = Math.round(c.rate * c.warmS);
    const groups = setup.groups();
    const nMembers = setup.members.length;
    const ackLat = [];
    let sent = 0;
    let answered = 0;
    let maxBacklog = 0;
    let reconnects = 0;
    let cpuStart = null;
    let tMeasure = 0;
    let tLastSend = 0;
    const loopDelay = monitorEventLoopDelay({ resolution: 1 });
    const t0 = nowMs();
    const send = (i, slot) => {
      const ui = i % us.length;
      const m = i >= warmN ? 1 : 0;
      if (i === warmN) { cpuStart = cpuSample(groups); tMeasure = nowMs(); loopDelay.enable(); }
      const t = nowMs();
      tLastSend = t;
      slot.busy = true;
      pub.one(slot.conn, ui, i, t, m).then(() => {
        answered++;
        if (m) ackLat.push(nowMs() - t);
        if (!slot.conn.dead) { slot.busy = false; pump(); return; }
        // a closed connection: another one in its slot (bounded), then on
        if (reconnects++ > 50) return;
        new HttpConn(A.port, API_KEY).connect().then((n) => { conns.push(n); slot.conn = n; slot.busy = false; pump(); }, (e) => ledger.error(`reconnect: ${e.message}`));
      });
    };
    const pump = () => {
      const due = Math.min(total, Math.floor(((nowMs() - t0) * c.rate) / 1000) + 1);
      if (due - sent > maxBacklog) maxBacklog = due - sent;
      while (sent < due) {
        const slot = slots[(sent % us.length) % P];
        if (slot.busy) break; // in order: the next event waits for its user's connection
        send(sent++, slot);
      }
    };
    const timer = setInterval(pump, 1);
    const sendBound = (c.warmS + c.measureS) * 1000 + 15000;
    await waitUntil(() => answered >= total, { boundMs: sendBound });
    clearInterval(timer);
    loopDelay.disable();
    const cpuEnd = cpuSample(groups);
    const drained = await waitUntil(() => ledger.outstanding() === 0, { boundMs: CFG.drainMs, stallMs: 5000, progress: () => ledger.delivered() });
    const v = ledger.check();
    if (answered < total) v.problems.push(`${total - answered} of ${total} publishes unanswered after ${sendBound} ms`);
    if (!drained) v.problems.push(`deliveries still outstanding after the drain: ${ledger.outstanding()}`);
    if (!setup.alive()) v.problems.push('a server of the setup exited during the run');
    const measuredS = (tLastSend - tMeasure) / 1000;
    const cpu = cpuStart ? cpuPct(cpuStart, cpuEnd, groups) : null;
    Object.assign(res, {
      ok: true,
      subscribers: subs.length,
      subscribers_on: B.name,
      publisher_on: A.name,
      publisher_connections: P,
      probe_rounds: probeRounds,
      offered_rate: c.rate,
      achieved_rate: (total - warmN) / measuredS,
      measured_events: total - warmN,
      event_body_bytes: pub.bodyBytes(),
      latency_ms: round(percentiles(lat)),
      ack_ms: round(percentiles(ackLat)),
      max_backlog: maxBacklog,
      node_cpu_pct: cpu ? cpu.per.slice(0, nMembers).reduce((a, b) => a + b, 0) : null,
      redis_cpu_pct: cpu && redis ? cpu.per.at(-1) : null,
      driver_cpu_pct: cpu?.self ?? null,
      rest_cpu_pct: cpu?.rest ?? null,
      driver_loop_delay_ms: loopDelayMs(loopDelay),
      // the slowest deliveries: when they were sent (s after the measured phase began)
      outliers: lat.map((l, k) => [l, k]).sort((a, b) => b[0] - a[0]).slice(0, 8)
        .map(([l, k]) => ({ ms: r3(l), at_s: r3((sendT[k] - tMeasure) / 1000) })),
      metrics: kind === 'agentwire' ? await nodeMetrics(setup.members) : undefined,
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
 * members (Redis's Send-Q, the members' Recv-Q), members → clients (the
 * members' Send-Q, the clients' Recv-Q). Shows where outstanding deliveries wait.
 */
function tcpQueues(redisPort, nodePorts) {
  let text = '';
  // only the sockets of these ports (the machine may hold many other connections)
  const ports = [redisPort, ...nodePorts].filter(Boolean);
  const filter = ports.map((p) => `sport = :${p} or dport = :${p}`).join(' or ');
  try { text = execFileSync('ss', ['-tnH', 'state', 'established', `( ${filter} )`], { stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000, maxBuffer: 64 << 20 }).toString(); } catch { return null; }
  const q = { redis_sendq: 0, nodes_from_redis_recvq: 0, nodes_sendq_to_clients: 0, clients_recvq: 0 };
  const port = (a) => Number(a.slice(a.lastIndexOf(':') + 1));
  for (const line of text.split('\n')) {
    // with a state filter ss leaves the State column out
    const f = line.trim().split(/\s+/);
    if (f[0] === 'ESTAB') f.shift();
    if (f.length < 4) continue;
    const recvq = Number(f[0]);
    const sendq = Number(f[1]);
    const local = port(f[2]);
    const peer = port(f[3]);
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

const LATENCY_SETUPS = () => [
  { id: 'single', kind: 'agentwire', mode: 'single', label: 'agentwire, single node (no --redis): publisher and subscribers on it', pub: '`POST /api/v1/publish`' },
  { id: 'cluster', kind: 'agentwire', mode: 'cluster', label: 'agentwire, two nodes on one Redis: publisher → node A, subscribers on node B', pub: '`POST /api/v1/publish`' },
  ...PEERS_RUN.map((p) => ({
    id: p, kind: p, mode: 'cluster',
    label: p === 'socketio' ? 'Socket.IO + redis-adapter, two processes on one Redis: publisher → A, subscribers on B' : 'nchan, two nginx instances on one Redis: publisher → A, subscribers on B',
    pub: p === 'socketio' ? '`POST /publish`' : '`POST /pub/<user>`',
  })),
];

async function scenarioLatency() {
  const c = CFG.latency;
  log(`[1] latency: ${c.users} subscribers, ${c.rate} events/s, ${c.warmS} s warm-up + ${c.measureS} s measured`);
  const runs = [];
  for (const s of LATENCY_SETUPS()) {
    const r = await quietest(() => latencyRun(s.kind, s.mode), s.id);
    Object.assign(r, { id: s.id, label: s.label });
    log(`    ${s.id}: ${r.ok ? `p50 ${r.latency_ms.p50} ms p99 ${r.latency_ms.p99} ms p99.9 ${r.latency_ms.p999} ms; ${problemsText(r.check)}` : r.error}`);
    runs.push(r);
  }
  const single = runs.find((r) => r.id === 'single');
  const cluster = runs.find((r) => r.id === 'cluster');
  const ratio = {};
  if (single.ok && cluster.ok) for (const k of ['p50', 'p90', 'p99', 'p999', 'max']) ratio[k] = r3(cluster.latency_ms[k] / single.latency_ms[k]);
  const vsSingle = (r) => (single.ok && r.ok && r.id !== 'single' ? `${(r.latency_ms.p99 / single.latency_ms.p99).toFixed(2)}×` : '–');
  const row = (r) => (r.ok
    ? [r.label, attemptsText(r), fmt(r.subscribers), `${fmt(r.offered_rate)} / ${fmt(r.achieved_rate)}`, fmt(r.measured_events), fmt(r.latency_ms.p50, 3), fmt(r.latency_ms.p90, 3), fmt(r.latency_ms.p99, 3), fmt(r.latency_ms.p999, 3), fmt(r.latency_ms.max, 2), vsSingle(r),
      `${fmt(r.ack_ms.p50, 3)} / ${fmt(r.ack_ms.p99, 3)}`, fmt(r.max_backlog), fmt(r.node_cpu_pct), r.redis_cpu_pct === null ? '–' : fmt(r.redis_cpu_pct), fmt(r.driver_cpu_pct), fmt(Math.max(0, r.rest_cpu_pct)), problemsText(r.check)]
    : [r.label, attemptsText(r), '', '', '', '', '', '', '', '', '', '', '', '', '', '', '', `FAILED: ${r.error.split('\n')[0]}`]);
  const pubs = LATENCY_SETUPS().map((s) => `${NAME[s.kind]} ${s.pub}`).filter((x, i, a) => a.indexOf(x) === i).join(', ');
  const text = [
    `### 1. Cross-node delivery latency at ${fmt(c.rate)} events/s (${c.measureS} s measured after ${c.warmS} s warm-up)`,
    '',
    `${c.users} users, one WebSocket each; one event per request (${pubs}) over ${c.publishers} keep-alive connections (one request in flight each), users round-robin, each user's events through one connection. Latency: receive time minus the send time carried in the event, both \`process.hrtime\` in this process (so it includes this process's event-loop delays). The peers' subscribers had each received a probe event published through member A before the run (their subscriptions were in place). ${repeatNote()} ${peerNote()}`.trim(),
    '',
    table(['setup', 'runs', 'subscribers', 'offered / achieved events/s', 'events measured', 'p50 ms', 'p90 ms', 'p99 ms', 'p99.9 ms', 'max ms', 'p99 vs single node', 'publish ack p50 / p99 ms', 'max send backlog', 'servers CPU %', 'redis CPU %', 'driver CPU %', 'rest of the machine CPU %', 'lost, duplicated, reordered, misdelivered'], runs.map(row)),
    '',
    single.ok && cluster.ok ? `**Ratio agentwire cluster ÷ single node: p50 ${ratio.p50}×, p90 ${ratio.p90}×, p99 ${ratio.p99}×, p99.9 ${ratio.p999}×, max ${ratio.max}×.**` : 'Ratio: n/a (a run failed).',
    '',
    ...runs.filter((r) => r.ok).map((r) => {
      const slow = r.outliers.slice(0, 4).map((o) => `${o.ms} ms (sent ${o.at_s} s in)`).join(', ');
      const rtt = Object.entries(r.metrics ?? {}).filter(([, m]) => m.redis_rtt_mean_ms !== undefined)
        .map(([n, m]) => `node ${n} Redis round trip mean ${m.redis_rtt_mean_ms} ms, max ${fmt(m.agentwire_redis_rtt_max_seconds * 1000, 1)} ms`).join('; ');
      return `- ${r.id}: slowest deliveries ${slow}; this process's event-loop delay p99 ${r.driver_loop_delay_ms.p99} ms, max ${r.driver_loop_delay_ms.max} ms${rtt ? `; ${rtt}` : ''}.`;
    }),
  ].join('\n');
  const failed = runs.some((r) => !r.ok || r.check.problems.length);
  return { name: 'latency', text, result: { scenario: 'latency', config: c, runs, ratio }, failed, runs };
}

// ---- 2. deliveries/s at the maximum rate --------------------------------------

const RATE_SETUPS = () => [
  { id: 'single-1loop', kind: 'agentwire', label: 'agentwire, single node, no Redis, 1 loop (--threads 1)', nodes: 1, redis: false, threads: 1 },
  { id: 'single-2loops', kind: 'agentwire', label: 'agentwire, single node, no Redis, 2 loops (--threads 2, the default here)', nodes: 1, redis: false, threads: 2 },
  { id: 'cluster-1node', kind: 'agentwire', label: 'agentwire, cluster of one node on Redis', nodes: 1, redis: true },
  { id: 'cluster-2nodes', kind: 'agentwire', label: 'agentwire, cluster of two nodes on one Redis', nodes: 2, redis: true },
  ...PEERS_RUN.map((p) => ({
    id: `${p}-2`, kind: p, nodes: 2, redis: true,
    label: p === 'socketio' ? 'Socket.IO + redis-adapter, two processes on one Redis' : 'nchan, two nginx instances on one Redis',
  })),
];

async function rateRun(s) {
  const c = CFG.rate;
  const res = { setup: s.id, kind: s.kind, label: s.label };
  try {
    const setup = await startSetup(s.kind, { members: s.nodes, redis: s.redis, threads: s.threads });
    const nodes = setup.members;
    const redis = setup.redis;
    const us = users(`r${s.id}`, c.users);
    const ledger = new Ledger(us);
    const lat = new Float64Array(Math.min(c.maxEvents * c.connsPerUser, 8_000_000));
    let nLat = 0;
    let delivered = 0;
    let tLastDelivery = 0;
    const subs = [];
    for (let ui = 0; ui < us.length; ui++) {
      for (let k = 0; k < c.connsPerUser; k++) {
        subs.push(newSubscriber(setup, nodes[k % nodes.length], us[ui], ui, ledger, (d, recv) => {
          delivered++;
          tLastDelivery = recv;
          if (nLat < lat.length) lat[nLat++] = recv - d.t;
        }));
      }
    }
    const conns = [];
    clientsGroup(subs, conns);
    await openAll(subs);
    await sleep(300);
    const probeRounds = await probeSubscriptions(setup, nodes[0], us, subs);
    // connection k (on member k % members) publishes the events of the users ui % P === k
    const P = c.pubConns;
    const part = partition(us.length, P);
    const cursor = new Uint32Array(P);
    const slots = [];
    for (let k = 0; k < P; k++) {
      const node = nodes[k % nodes.length];
      const conn = await new HttpConn(node.port, API_KEY).connect();
      conns.push(conn);
      slots.push({ conn, node, reconnecting: null });
    }
    const pub = makePublisher(setup, us, ledger);
    const groups = setup.groups();
    let nextEvent = 0;
    let acked = 0;
    let tLastAck = 0;
    let stalls = 0;
    let reconnects = 0;
    const t0 = nowMs();
    const tEnd = t0 + c.seconds * 1000;
    const cpuStart = cpuSample(groups);
    const loop = async (k) => {
      const slot = slots[k];
      while (nowMs() < tEnd && nextEvent < c.maxEvents) {
        // closed loop: at most `window` deliveries outstanding (sent, not yet received)
        if (nextEvent * c.connsPerUser - delivered > c.window) {
          stalls++;
          await sleep(1);
          continue;
        }
        if (slot.conn.dead) {
          if (reconnects > 20) throw new Error('more than 20 publisher connections closed by the server');
          if (!slot.reconnecting) {
            reconnects++;
            slot.reconnecting = new HttpConn(slot.node.port, API_KEY).connect().then((n) => { conns.push(n); slot.conn = n; }).finally(() => { slot.reconnecting = null; });
          }
          await slot.reconnecting;
          continue;
        }
        const first = nextEvent;
        const n = Math.min(c.batch, c.maxEvents - first);
        nextEvent += n;
        const uis = new Array(n);
        for (let j = 0; j < n; j++) uis[j] = part[k][cursor[k]++ % part[k].length];
        // (not `acked += await ...`: that would add to the value read before the await, losing the other loops' counts)
        const got = await pub.many(slot.conn, uis, first, nowMs());
        acked += got;
        tLastAck = nowMs();
      }
    };
    // halfway: where the outstanding deliveries wait (Redis output buffers of the members' subscriber connections)
    const mid = {};
    const midTimer = setTimeout(async () => {
      mid.outstanding = nextEvent * c.connsPerUser - delivered;
      mid.tcp_queued_bytes = tcpQueues(redis?.port, nodes.map((n) => n.port));
      if (!redis) return;
      const list = await redis.client.command(['CLIENT', 'LIST']).catch(() => '');
      const omem = String(list).split('\n').filter((l) => / (p?sub)=[1-9]/.test(l)).map((l) => Number((l.match(/ omem=(\d+)/) ?? [])[1] ?? 0));
      mid.redis_pubsub_omem_bytes = omem;
    }, (c.seconds * 1000) / 2);
    const loops = [];
    for (let k = 0; k < P; k++) for (let d = 0; d < c.depth; d++) loops.push(loop(k));
    const loopErr = await bounded(Promise.all(loops).then(() => null, (e) => e), c.seconds * 1000 + 30000);
    clearTimeout(midTimer);
    const drained = await waitUntil(() => ledger.outstanding() === 0, { boundMs: CFG.drainMs, stallMs: 5000, progress: () => delivered });
    const cpuEnd = cpuSample(groups);
    const v = ledger.check();
    if (loopErr) v.problems.push(`publisher: ${loopErr.message}`);
    if (!drained) v.problems.push(`deliveries still outstanding after the drain: ${ledger.outstanding()}`);
    if (!setup.alive()) v.problems.push('a server of the setup exited during the run');
    const cpu = cpuPct(cpuStart, cpuEnd, groups);
    const deliveriesS = (tLastDelivery - t0) / 1000;
    Object.assign(res, {
      ok: true,
      nodes: nodes.length,
      connections: subs.length,
      probe_rounds: probeRounds,
      publish: `${s.kind === 'nchan' ? `${c.batch} pipelined single POSTs` : `batches of ${c.batch}`}, ${P} connections × ${c.depth} in flight${nodes.length > 1 ? ', spread over the members' : ''}`,
      event_body_bytes: pub.bodyBytes(),
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
      redis_cpu_ms_per_1k_events: redis ? (cpu.ms.at(-1) / acked) * 1000 : null,
      midway: mid,
      metrics: redis && s.kind === 'agentwire' ? await nodeMetrics(nodes) : undefined,
      check: v,
    });
  } catch (err) {
    Object.assign(res, { ok: false, error: String(err.stack ?? err).slice(0, 1500) });
  } finally {
    await stopTracked();
  }
  return res;
}

async function scenarioRate() {
  const c = CFG.rate;
  log(`[2] rate: ${c.users} users × ${c.connsPerUser} connections, batches of ${c.batch}, ${c.seconds} s per setup`);
  const runs = [];
  for (const s of RATE_SETUPS()) {
    const r = await quietest(() => rateRun(s), s.id);
    log(`    ${s.id}: ${r.ok ? `${fmt(r.deliveries_per_s)} deliveries/s, ${fmt(r.acks_per_s)} acks/s; ${problemsText(r.check)}` : r.error}`);
    runs.push(r);
  }
  const base = runs.find((r) => r.setup === 'single-1loop');
  const text = [
    '### 2. Deliveries/s at the maximum rate',
    '',
    `**This machine has ${cpus().length} cores**: the load generator (this node process: ${c.users * c.connsPerUser} \`ws\` clients parsing and checking every event, and the publishers), every server and redis-server share them, so these are the rates of the whole system on ${cpus().length} cores, not of a server alone; the CPU columns show who had them (100 % = one core).`,
    '',
    `${c.users} users × ${c.connsPerUser} connections (in a two-member cluster each user has one connection on each member, so every event crosses members); ${c.pubConns} keep-alive publisher connections × ${c.depth} requests in flight (spread over the members; each user's events through one connection), each request carrying ${c.batch} events: agentwire \`POST /api/v1/publish/batch\` and Socket.IO \`POST /publish/batch\` as one batch, nchan (no batch endpoint) as ${c.batch} pipelined \`POST /pub/<user>\`; for ${c.seconds} s, with at most ${fmt(c.window)} deliveries outstanding (published, not yet received; the publishers wait beyond that). deliveries/s: events received by the clients ÷ (last delivery − first publish); acks/s: events acknowledged ÷ (last acknowledgement − first publish). Latency at this rate is mostly the window ÷ the rate (queueing), not a property of the path. Halfway through, the outstanding deliveries and the bytes redis-server had written to the members that they had not read yet (\`ss -tn\` Send-Q of Redis's sockets): where the backlog waits. ${repeatNote()} ${peerNote()}`.trim(),
    '',
    table(['setup', 'runs', 'members', 'connections', 'events published', 'deliveries', 'deliveries/s', 'publish acks/s', 'vs agentwire single node (1 loop)', 'latency p50 / p99 ms', 'servers CPU %', 'redis CPU %', 'driver CPU %', 'rest of the machine CPU %', 'servers CPU ms / 1k deliveries', 'redis CPU ms / 1k events', 'halfway: deliveries outstanding / KB queued Redis → members', 'lost, duplicated, reordered, misdelivered'],
      runs.map((r) => (r.ok
        ? [r.label, attemptsText(r), r.nodes, fmt(r.connections), fmt(r.events_published), fmt(r.deliveries), fmt(r.deliveries_per_s), fmt(r.acks_per_s), base?.ok ? `${(r.deliveries_per_s / base.deliveries_per_s).toFixed(2)}×` : '–',
          `${fmt(r.latency_ms.p50, 1)} / ${fmt(r.latency_ms.p99, 1)}`, fmt(r.nodes_cpu_pct), r.redis_cpu_pct === null ? '–' : fmt(r.redis_cpu_pct), fmt(r.driver_cpu_pct), fmt(Math.max(0, r.rest_cpu_pct)), fmt(r.nodes_cpu_ms_per_1k_deliveries, 2),
          r.redis_cpu_ms_per_1k_events === null ? '–' : fmt(r.redis_cpu_ms_per_1k_events, 1),
          `${fmt(r.midway.outstanding)} / ${r.midway.tcp_queued_bytes && r.redis_cpu_pct !== null ? fmt(r.midway.tcp_queued_bytes.redis_sendq / 1024) : '–'}`, problemsText(r.check)]
        : [r.label, attemptsText(r), '', '', '', '', '', '', '', '', '', '', '', '', '', '', '', `FAILED: ${r.error.split('\n')[0]}`]))),
  ].join('\n');
  return { name: 'rate', text, result: { scenario: 'rate', config: c, cores: cpus().length, runs }, failed: runs.some((r) => !r.ok || r.check.problems.length), runs };
}

// ---- 3. Redis CPU and memory per 1,000 events ---------------------------------

async function redisSnapshot(redis) {
  const cpu0 = cpuMs(redis.pid);
  const mem = await redis.client.info('memory');
  const cpu = await redis.client.info('cpu');
  const stats = await redis.client.info('commandstats');
  const ks = await redis.client.info('keyspace');
  const keys = (ks.db0 ?? '').match(/keys=(\d+)/);
  // calls per command, but the INFO of these snapshots
  const calls = {};
  for (const [k, v] of Object.entries(stats)) {
    const m = v.match(/calls=(\d+),usec=(\d+)/);
    if (m && k.startsWith('cmdstat_') && k !== 'cmdstat_info') calls[k.slice(8).toUpperCase()] = { calls: Number(m[1]), usec: Number(m[2]) };
  }
  return {
    cpu_ms: cpu0,
    info_cpu_ms: (Number(cpu.used_cpu_sys) + Number(cpu.used_cpu_user)) * 1000,
    used_memory: Number(mem.used_memory),
    used_memory_rss: Number(mem.used_memory_rss),
    calls,
    keys: keys ? Number(keys[1]) : 0,
  };
}

/** Where each kind keeps a user's retained events in Redis (a list), or null. */
function historyKey(kind, u) {
  if (kind === 'agentwire') return `aw:${Buffer.byteLength(u)}:${u}:h`;
  if (kind === 'nchan') return `{channel:/${u}}:messages`;
  return null;
}

/** Events retained in Redis for these users now: the sum of their history lists' lengths. */
async function retainedNow(redis, kind, us) {
  if (!historyKey(kind, us[0])) return 0;
  const lens = await Promise.all(us.map((u) => redis.client.command(['LLEN', historyKey(kind, u)])));
  return lens.reduce((a, n) => a + Number(n), 0);
}

/** The commands Redis ran during a phase, per event: "EVALSHA 1.00, ..." (the four most frequent). */
function commandsPerEvent(before, after, events) {
  const d = Object.entries(after.calls).map(([k, v]) => [k, v.calls - (before.calls[k]?.calls ?? 0), v.usec - (before.calls[k]?.usec ?? 0)])
    .filter(([k, n]) => n > 0 && k !== 'LLEN');
  d.sort((a, b) => b[1] - a[1]);
  return {
    total_per_event: d.reduce((a, x) => a + x[1], 0) / events,
    top: d.slice(0, 4).map(([k, n, us]) => ({ command: k, per_event: r3(n / events), us_per_call: r3(us / n) })),
  };
}

async function redisRun(kind) {
  const c = CFG.redis;
  const out = { kind, phases: [] };
  try {
    const setup = await startSetup(kind, { members: 2, redis: true });
    const [A, B] = setup.members;
    const redis = setup.redis;
    const us = users(`m${kind[0]}`, c.users);
    const ledger = new Ledger(us);
    const subs = us.map((user, ui) => newSubscriber(setup, B, user, ui, ledger));
    const conns = [];
    clientsGroup(subs, conns);
    await openAll(subs);
    await sleep(500);
    out.probe_rounds = await probeSubscriptions(setup, A, us, subs);
    const P = c.publishers;
    const part = partition(us.length, P);
    for (let k = 0; k < P; k++) conns.push(await new HttpConn(A.port, API_KEY).connect());
    const pub = makePublisher(setup, us, ledger);
    await sleep(200);
    const empty = await redisSnapshot(redis);
    out.baseline = empty;
    let iNext = 0;

    // one phase: `per` events to each user, through member A (connection k: the users ui % P === k, in turn), then wait for every delivery on member B
    const phase = async (name, per, batch) => {
      const retainedBefore = await retainedNow(redis, kind, us);
      const before = await redisSnapshot(redis);
      const total = per * us.length;
      const t0 = nowMs();
      const worker = async (k) => {
        const mine = part[k];
        const n = per * mine.length;
        let j = 0;
        while (j < n && !conns[k].dead) {
          const m = batch === 1 ? 1 : Math.min(batch, n - j);
          const uis = [];
          for (let x = 0; x < m; x++) uis.push(mine[(j + x) % mine.length]);
          const i0 = iNext;
          iNext += m;
          j += m;
          if (batch === 1) await pub.one(conns[k], uis[0], i0, nowMs());
          else await pub.many(conns[k], uis, i0, nowMs());
        }
        if (j < n) ledger.error(`publisher connection ${k} closed with ${n - j} events of the phase unsent`);
      };
      const bound = Math.max(60000, total * 2);
      await bounded(Promise.all(part.map((_, k) => worker(k))), bound);
      const publishS = (nowMs() - t0) / 1000;
      const drained = await waitUntil(() => ledger.outstanding() === 0, { boundMs: CFG.drainMs, stallMs: 5000, progress: () => ledger.delivered() });
      await sleep(100);
      const after = await redisSnapshot(redis);
      const retainedAfter = await retainedNow(redis, kind, us);
      const cmds = commandsPerEvent(before, after, total);
      const p = {
        phase: name,
        publish: batch === 1 ? `one event per request, ${P} connections` : `${kind === 'nchan' ? `${batch} pipelined single POSTs` : `batches of ${batch}`}, ${P} connections`,
        events: total,
        events_per_s: total / publishS,
        redis_cpu_ms: after.cpu_ms - before.cpu_ms,
        redis_cpu_ms_per_1k: ((after.cpu_ms - before.cpu_ms) / total) * 1000,
        redis_info_cpu_ms_per_1k: ((after.info_cpu_ms - before.info_cpu_ms) / total) * 1000,
        redis_commands_per_event: cmds.total_per_event,
        redis_top_commands: cmds.top,
        used_memory_delta: after.used_memory - before.used_memory,
        retained_delta: retainedAfter - retainedBefore,
        retained_after: retainedAfter,
        bytes_per_1k_retained: retainedAfter > retainedBefore ? ((after.used_memory - before.used_memory) / (retainedAfter - retainedBefore)) * 1000 : null,
        bytes_per_1k_retained_total: retainedAfter ? ((after.used_memory - empty.used_memory) / retainedAfter) * 1000 : null,
        used_memory_after: after.used_memory,
        keys_after: after.keys,
        drained,
      };
      log(`    ${kind} ${name}: ${fmt(p.events_per_s)} events/s, redis ${fmt(p.redis_cpu_ms_per_1k, 1)} ms CPU / 1k events, ${fmt(p.used_memory_delta)} bytes used_memory Δ, ${p.retained_delta} retained Δ`);
      out.phases.push(round(p));
    };
    await phase('one event per request', c.single, 1);
    await phase(kind === 'nchan' ? 'pipelined (no batch endpoint)' : 'batches', c.batched, c.batch);
    if (c.overflow && kind === 'agentwire') await phase(`batches past the history cap (${c.single + c.batched + c.overflow} per user, 1000 kept)`, c.overflow, c.batch);
    out.event_body_bytes = pub.bodyBytes();
    // one retained entry and one user's history list, as Redis stores them
    const hkey = historyKey(kind, us[0]);
    if (hkey) {
      const entry = kind === 'agentwire' ? await redis.client.command(['LINDEX', hkey, '-1']).catch(() => null) : null;
      out.history_entry_bytes = typeof entry === 'string' ? Buffer.byteLength(entry) : null;
      out.history_list_len = await redis.client.command(['LLEN', hkey]).catch(() => null);
      out.history_list_memory_usage = await redis.client.command(['MEMORY', 'USAGE', hkey, 'SAMPLES', '0']).catch(() => null);
    }
    out.check = ledger.check();
    for (const p of out.phases) if (!p.drained) out.check.problems.push(`${p.phase}: deliveries outstanding after the drain`);
    if (!setup.alive()) out.check.problems.push('a server of the setup exited during the run');
    out.ok = true;
  } catch (err) {
    out.ok = false;
    out.error = String(err.stack ?? err).slice(0, 1500);
  } finally {
    await stopTracked();
  }
  return out;
}

async function scenarioRedis() {
  const c = CFG.redis;
  const kinds = ['agentwire', ...PEERS_RUN];
  log(`[3] redis: ${c.users} users; ${c.single} + ${c.batched}${c.overflow ? ` (+ ${c.overflow} agentwire)` : ''} events each; ${kinds.join(', ')}`);
  const runs = [];
  for (const k of kinds) {
    const r = await redisRun(k);
    if (!r.ok) log(`    ${k}: ${r.error}`);
    runs.push(r);
  }
  const aw = runs[0];
  const top = (p) => p.redis_top_commands.map((x) => `${x.command} ${x.per_event}`).join(', ');
  const rows = [];
  for (const r of runs) {
    if (!r.ok) { rows.push([NAME[r.kind], '', '', '', '', '', '', '', '', '', '', '', '', `FAILED: ${r.error.split('\n')[0]}`]); continue; }
    for (const p of r.phases) {
      rows.push([NAME[r.kind], p.phase, fmt(p.events), fmt(p.events_per_s), fmt(p.redis_cpu_ms), fmt(p.redis_cpu_ms_per_1k, 1), fmt(p.redis_info_cpu_ms_per_1k, 1), `${fmt(p.redis_commands_per_event, 2)} (${top(p) || '–'})`,
        fmt(p.used_memory_delta), fmt(p.retained_delta), fmt(p.retained_after), p.bytes_per_1k_retained === null ? '–' : fmt(p.bytes_per_1k_retained), p.bytes_per_1k_retained_total === null ? '–' : fmt(p.bytes_per_1k_retained_total), problemsText(r.check)]);
    }
  }
  const nchan = runs.find((r) => r.kind === 'nchan' && r.ok);
  const text = [
    '### 3. Redis CPU and memory per 1,000 events',
    '',
    `Each two-member cluster on its own Redis (config as above: \`save ""\`, \`appendonly no\`), ${c.users} users with one subscriber each on member B, events published through member A, phases one after the other on the same users (${c.publishers} publisher connections, each user's events through one). What each keeps in Redis: agentwire every user's history (--history-size 1000, the default)${PEERS_RUN.includes('nchan') ? '; nchan each channel\'s last 10 messages (`nchan_message_buffer_length 10`, `nchan_message_timeout 60s`, as the main benchmark\'s nchan, in its default "distributed" storage mode)' : ''}${PEERS_RUN.includes('socketio') ? '; Socket.IO nothing (Redis is only its pub/sub bus: one PUBLISH per event, every process PSUBSCRIBEd)' : ''}. Retained events: the sum of the users' history lists' lengths (\`LLEN\`) after the phase. CPU: redis-server's utime+stime from /proc/PID/stat (10 ms ticks) over the phase (publishing and delivery), with \`INFO cpu\` (µs) beside it; commands: \`INFO commandstats\` calls during the phase per event published (commands run by scripts are counted too); memory: \`INFO memory\` used_memory before and after. ${peerNote()}`.trim(),
    '',
    aw?.ok ? `agentwire: event body ${aw.event_body_bytes} bytes; a retained history entry (\`"SEQ TS JSON"\`) is ${aw.history_entry_bytes} bytes; one user's history list of ${aw.history_list_len} entries: \`MEMORY USAGE\` ${fmt(aw.history_list_memory_usage)} bytes.${nchan ? ` nchan: one channel's message list of ${nchan.history_list_len} ids: \`MEMORY USAGE\` ${fmt(nchan.history_list_memory_usage)} bytes (the messages are keys of their own, which expire after the message timeout).` : ''}` : '',
    '',
    table(['setup', 'phase', 'events', 'events/s', 'redis CPU ms', 'CPU ms / 1k events (/proc)', 'CPU ms / 1k events (INFO cpu)', 'Redis commands / event (most frequent)', 'used_memory Δ', 'retained events Δ', 'retained after', 'bytes / 1k retained (Δ)', 'used_memory above empty / 1k retained', 'lost, duplicated, reordered, misdelivered'], rows),
    '',
    `Checks: ${runs.map((r) => `${NAME[r.kind]}: ${r.ok ? `${problemsText(r.check)} (${fmt(r.check.deliveries)} of ${fmt(r.check.deliveries_expected)} deliveries)` : 'FAILED'}`).join('; ')}.`,
  ].join('\n');
  const failed = runs.some((r) => !r.ok || r.check.problems.length);
  return { name: 'redis', text, result: { scenario: 'redis', config: c, runs }, failed, runs };
}

// ---- summary -------------------------------------------------------------------

/** One row per setup: the headline figure of each scenario that ran. */
function summaryTable(res) {
  const lat = res.latency?.runs ?? [];
  const rate = res.rate?.runs ?? [];
  const red = res.redis?.runs ?? [];
  const cL = CFG.latency;
  const rows = [
    { name: 'agentwire, one node (no Redis)', lat: 'single', rate: 'single-1loop', redis: null },
    { name: 'agentwire, two nodes on Redis', lat: 'cluster', rate: 'cluster-2nodes', redis: 'agentwire' },
    ...PEERS_RUN.map((p) => ({ name: p === 'socketio' ? 'Socket.IO + @socket.io/redis-adapter, two processes' : 'nchan on Redis, two nginx instances', lat: p, rate: `${p}-2`, redis: p })),
  ];
  const checks = (...rs) => {
    const bad = rs.filter(Boolean).filter((r) => !r.ok || r.check?.problems.length);
    return rs.filter(Boolean).length ? (bad.length ? 'PROBLEMS (see below)' : 'none') : '–';
  };
  const body = rows.map((s) => {
    const l = lat.find((r) => r.id === s.lat);
    const t = rate.find((r) => r.setup === s.rate);
    const m = s.redis ? red.find((r) => r.kind === s.redis) : null;
    const ph = (i) => (m?.ok && m.phases[i] ? fmt(m.phases[i].redis_info_cpu_ms_per_1k, 1) : '–');
    const last = m?.ok ? m.phases.at(-1) : null;
    const mem = !s.redis ? 'no Redis'
      : !m?.ok ? '–'
        : KEPT[s.redis] === 0 ? `nothing kept (used_memory Δ ${fmt(m.phases.reduce((a, p) => a + p.used_memory_delta, 0))} bytes over ${fmt(m.phases.reduce((a, p) => a + p.events, 0))} events)`
          : `${fmt(last.used_memory_after - m.baseline.used_memory)} for ${fmt(last.retained_after)} events kept (at most ${KEPT[s.redis]} per user): ${fmt(last.bytes_per_1k_retained_total / 1000)} bytes per event kept`;
    return [s.name,
      t?.ok ? fmt(t.deliveries_per_s) : t ? 'FAILED' : '–',
      l?.ok ? `${fmt(l.latency_ms.p50, 3)} / ${fmt(l.latency_ms.p99, 3)} / ${fmt(l.latency_ms.p999, 3)}` : l ? 'FAILED' : '–',
      s.redis ? `${ph(0)} / ${ph(1)}` : 'no Redis',
      mem,
      checks(l, t, m)];
  });
  return table(['setup', 'deliveries/s at the maximum rate (scenario 2)', `${s1(cL)} p50 / p99 / p99.9 ms (scenario 1)`, 'Redis CPU ms / 1k events, INFO cpu: one per request / batched (scenario 3)', 'Redis used_memory above empty at the end, bytes (scenario 3)', 'lost, duplicated, reordered, misdelivered'], body);
}
const s1 = (c) => `latency at ${fmt(c.rate)} events/s, cross-node:`;

// ---- main ----------------------------------------------------------------------

/** The 1-minute load average of the machine. */
function loadAvg() {
  try { return readFileSync('/proc/loadavg', 'utf8').split(' ')[0]; } catch { return '?'; }
}

/** The commit of the git tree the binary lies in (a worktree of its own, or this one), and whether its sources had uncommitted changes. */
function gitCommit(bin) {
  const git = (...args) => execFileSync('git', ['-C', dirname(bin), ...args], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  try {
    const commit = git('rev-parse', '--short=12', 'HEAD');
    const dirty = git('status', '--porcelain', '--', ':/src', ':/CMakeLists.txt');
    return `commit ${commit} of its tree${dirty ? ', with uncommitted changes under src/ now' : ''}`;
  } catch {
    return 'commit ?';
  }
}

async function main() {
  const md = [];
  const say = (line = '') => { console.log(line); md.push(line); };
  const t0 = Date.now();
  const load0 = loadAvg();
  const rel = relative(process.cwd(), CLI.bin);
  const shownBin = rel && !rel.startsWith('..') ? rel : CLI.bin;
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
  const pv = peerVersions();
  const machine = {
    cores: cpus().length, cpu: cpuModel, node: process.version, redis: redisVersion(),
    agentwire: `${shownBin} (${gitCommit(CLI.bin)}; binary of ${st.mtime.toISOString()}, ${st.size} bytes)`,
    peers: pv,
  };
  console.log(`## agentwire cluster benchmark${CLI.quick ? ' (--quick: tiny sizes, a smoke run)' : ''}`);
  say('');
  const peerV = [
    PEERS_RUN.includes('socketio') ? `socket.io ${pv['socket.io']}, @socket.io/redis-adapter ${pv['@socket.io/redis-adapter']}, redis (node-redis) ${pv.redis}` : null,
    PEERS_RUN.includes('nchan') ? `nginx ${pv.nginx}, libnginx-mod-nchan ${pv.nchan}` : null,
  ].filter(Boolean).join('; ');
  say(`Machine: **${machine.cores} cores** (${machine.cpu}); node ${machine.node}; ${machine.redis}${peerV ? `; ${peerV}` : ''}. Binary: ${machine.agentwire}. Everything on 127.0.0.1; the load generator (this process) shares the ${machine.cores} cores with the servers.`);
  say('');
  const summaryAt = md.length; // the summary table goes here once every scenario ran
  say('Servers, each run fresh (every cluster on its own redis-server):');
  say('');
  say('```');
  say(`${shownBin} ${shownArgs(nodeArgs())}                    # agentwire single node`);
  say(`${shownBin} ${shownArgs(nodeArgs({ redis: 'redis://x', id: 'A' }))}   # agentwire cluster node (B: --node-id B)`);
  if (PEERS_RUN.includes('socketio')) say(`node ${SOCKETIO_SCRIPT} --redis redis://127.0.0.1:$REDIS_PORT --port 0 --jwt-secret $SECRET --api-key $KEY ${SOCKETIO_ARGS.join(' ')}   # Socket.IO member, two processes`);
  if (PEERS_RUN.includes('nchan')) say(`${NCHAN_SCRIPT} $PORT $WORKDIR redis://127.0.0.1:$REDIS_PORT   # nchan member, two nginx instances (one worker each)`);
  say(`/usr/bin/redis-server redis.conf   # redis.conf: ${redisConfig({ port: '$REDIS_PORT', dir: '$DIR' }).trim().split('\n').join('; ')}`);
  say('```');
  say('');
  const skipped = Object.entries(PEER_SKIPPED);
  if (skipped.length) {
    say(`Peers not run here: ${skipped.map(([p, why]) => `${NAME[p]}: ${why}`).join('; ')}.`);
    say('');
  }
  const scen = { 1: scenarioLatency, 2: scenarioRate, 3: scenarioRedis };
  let failed = CLI.peersNamed && skipped.length > 0;
  const summary = [];
  const results = {};
  for (const s of CLI.only) {
    const r = await scen[s]();
    results[r.name] = r;
    say(r.text);
    say('');
    process.stdout.write(`RESULT ${JSON.stringify({ ...r.result, quick: CLI.quick })}\n`);
    say('');
    if (r.failed) failed = true;
    summary.push(`${r.name}: ${r.failed ? 'PROBLEMS' : 'ok'}`);
  }
  const setups = [
    'agentwire one node: one process, no --redis, one event loop (the reference)',
    'agentwire two nodes: two processes with `--redis` on one redis-server (each node runs its users\' streams in Redis: a Lua script per publish appends to the user\'s history and publishes it; every node delivers to its own connections)',
    ...PEERS_RUN.map((p) => (p === 'socketio'
      ? 'Socket.IO: two node processes of `bench/peers/socketio-server.mjs --redis` (the main benchmark\'s Socket.IO server, with `@socket.io/redis-adapter` on node-redis clients: a room broadcast is one PUBLISH, every process PSUBSCRIBEd; nothing stored, no replay)'
      : 'nchan: two nginx instances of `bench/peers/nchan.sh PORT DIR REDIS_URL` (the main benchmark\'s nchan config, one worker each, with every location on one Redis via `nchan_redis_pass` to an upstream holding `nchan_redis_server` — the form nchan 1.3 prefers to the older `nchan_redis_url`, which it still accepts with a warning — in its default "distributed" storage mode: messages and channels live in Redis, each instance subscribes to the channels it has subscribers for)')),
  ];
  const sumText = [
    '### Summary',
    '',
    summaryTable(Object.fromEntries(Object.entries(results).map(([k, r]) => [k, { runs: r.runs }]))),
    '',
    `The setups: ${setups.join('; ')}. The figures are this run's; the sections below hold every figure and the conditions. The machine's load average (1 min, /proc/loadavg) was ${load0} at the start of the run and ${loadAvg()} at its end; the "rest of the machine" CPU columns below show what other processes took during each measurement.`,
    '',
  ];
  md.splice(summaryAt, 0, ...sumText);
  console.log(sumText.join('\n'));
  say(`${summary.join(', ')}; ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  if (CLI.md) {
    mkdirSync(dirname(CLI.md), { recursive: true });
    // the page's section: the heading first, then the command, then the rest
    const head = ['## g) Cluster mode on Redis (`node bench/cluster.mjs`)', '', `Command: \`${cmd}\` (its own redis-server, nodes and peers).`];
    writeFileSync(CLI.md, `${[...head, ...md.slice(1)].join('\n').replace(/\n{3,}/g, '\n\n').trim()}\n`);
    console.log(`markdown: ${CLI.md}`);
  }
  if (failed) {
    say('FAILED: an event was lost, duplicated, reordered or misdelivered, or a setup failed (see the tables)');
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
