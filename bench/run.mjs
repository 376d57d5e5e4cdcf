#!/usr/bin/env node
// The agentwire benchmark (`make bench`): starts each server under test, drives
// the C load generator (build/bench/aw-loadgen) against it, measures the
// server's CPU and memory from /proc, and writes docs/benchmarks.md with
// absolute figures, ratios against each peer and gnuplot plots.
//
//   node bench/run.mjs [--smoke] [--only agentwire,ws,...] [--scenarios l,a,b,...]
//                      [--repeat N] [--out FILE]
//
// Scenarios: l) throughput at a latency bound (the headline: the highest
//               delivered rate with p99 under 50 ms, searched)
//            a) fan-out at the maximum rate   b) fan-out at a fixed rate
//            c) idle memory   d) connection and reconnect storms
//            e) large (64 KiB) events   f) echo
// --smoke runs every scenario once at a tiny size, writes its report to a
// temporary directory and exits non-zero when any run lost, reordered or
// misrouted an event, or failed.
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { killAllNow, sample, sleep, stopAll } from './lib/proc.mjs';
import { AGENTWIRE_BIN, removeTempDirs, ROOT, TARGETS, startServer, unavailable, useAgentwireBinary } from './lib/servers.mjs';
import { commandLine, loadgenAvailable, LOADGEN_BIN, runLoadgen, useLoadgenBinary } from './lib/loadgen.mjs';
import { machineInfo, writeReport } from './lib/report.mjs';

// ---- the sizes of every scenario: full run, and --smoke ----------------------

const FULL = {
  connsPerUser: 5,
  // a) throughput against connections; the same deliveries per run for every
  //    target (a few seconds each: a server that falls behind at the maximum
  //    rate queues more the longer the run, so runs of different lengths would
  //    not compare)
  fanoutConns: [1000, 5000, 10000],
  fanoutDeliveries: 500_000,
  onePerRequestConns: 5000,
  fanoutTimeoutMs: 90_000,
  // b) a rate every peer sustains: FIXED_RATE events/s, each to 5 connections
  fixedRate: 2000,
  fixedConns: 5000,
  fixedSeconds: 10,
  // c) idle connections held; one process may hold at most ~20000 descriptors here
  idle: [{ conns: 10000, targets: TARGETS }, { conns: 19000, targets: ['agentwire', 'nchan'] }],
  idleHoldMs: 4000,
  idleSettleMs: 1000,
  // d) connection storm, reconnect storm (agentwire only)
  stormConns: 10000,
  stormConcurrency: 500,
  resumeConns: 10000,
  resumeEventsPerUser: 10,
  // e) 64 KiB events to 1000 connections; total delivered bytes ≈ 3.3 GB
  largeConns: 1000,
  largeBytes: 65536,
  largeEventsPerUser: 50,
  largeBatch: 32,
  // f) echo
  echoConns: 500,
  // 1 MiB messages on fewer connections (100 MiB in flight at window 1)
  echo: [{ bytes: 64, window: 8 }, { bytes: 65536, window: 2 }, { bytes: 1048576, window: 1, conns: 100 }],
  echoMs: 5000,
  repeat: 3,
  // l) throughput at a latency bound: for each size, boundRuns searches for
  //    the highest rate at which p99 < boundP99Us with nothing lost; a step is
  //    one loadgen run of boundStepMs of publishing at a fixed rate against a
  //    fresh server. Steps of ~2-4 s of wall time (10,000 Socket.IO clients
  //    take ~2 s to connect), ~6 in a first search and ~4 in the next ones:
  //    about 12-14 minutes for 4 targets × 3 sizes × 5 searches on 2 cores.
  //    1.5 s of publishing is enough to see an overload: 5 % above what a
  //    server sustains leaves a backlog of 75 ms by the end, over the bound.
  boundConns: [1000, 5000, 10000],
  boundRuns: 5,
  boundP99Us: 50_000,
  boundStepMs: 1500,
  boundStartRate: 4000, // events/s of the first step of a target's first search
  boundFirstFactor: 2, // its ramp (×/÷ per step until a step passes and one fails)
  boundSizeFactor: 1.5, // first search of a larger size: from the smaller size's median
  boundRunFactor: 1.2, // searches 2..N of a size: from the median of the earlier ones
  boundTolerance: 1.1, // done when lowest failing rate ≤ this × highest passing rate
  boundMaxSteps: 10,
  boundMinRate: 20, // events/s; below it the search gives up (result 0)
  boundBatchWindowMs: 2, // batch endpoints: one request per 2 ms of events
  boundRunBudgetMs: 120_000, // one search
  boundBudgetMs: 20 * 60_000, // the whole scenario; searches past it are skipped (and said so)
};

const SMOKE = {
  ...FULL,
  fanoutConns: [50],
  fanoutDeliveries: 1500,
  onePerRequestConns: 50,
  fanoutTimeoutMs: 15_000,
  fixedRate: 200,
  fixedConns: 50,
  fixedSeconds: 1,
  idle: [{ conns: 50, targets: TARGETS }],
  idleHoldMs: 1200,
  idleSettleMs: 300,
  stormConns: 50,
  stormConcurrency: 10,
  resumeConns: 50,
  resumeEventsPerUser: 5,
  largeConns: 50,
  largeEventsPerUser: 2,
  largeBatch: 10,
  echoConns: 20,
  echoMs: 1000,
  repeat: 1,
  boundConns: [50],
  boundRuns: 1,
  boundStepMs: 500,
  boundStartRate: 100,
  boundFirstFactor: 4,
  boundMaxSteps: 3,
  boundRunBudgetMs: 30_000,
  boundBudgetMs: 3 * 60_000,
};

// Each target's best publish mode at the maximum rate, chosen by measuring
// each (5,000 connections): the batch endpoint with 1000-event batches, 8
// requests in flight on each of 2 connections, where there is one (node ws and
// Socket.IO do no better with other batch sizes or depths: 75k-86k deliveries/s
// for ws at 100x8, 500x1 and 1000x8); nchan has no batch endpoint, so single
// POSTs pipelined on 8 connections (4x16, 8x32 and 16x64 all gave 68k-70k).
const BEST_MODE = {
  agentwire: { batch: 1000, publishers: 2, pipeline: 8 },
  ws: { batch: 1000, publishers: 2, pipeline: 8 },
  socketio: { batch: 1000, publishers: 2, pipeline: 8 },
  nchan: { batch: 1, publishers: 8, pipeline: 32 },
};
const ONE_PER_REQUEST = { batch: 1, publishers: 8, pipeline: 32 };
// At the fixed rate: every target publishes one event per request, the same way
// (the p99 comparison); the batch endpoints again with small batches, so that a
// batch does not turn the steady rate into bursts.
const FIXED_ONE = { batch: 1, publishers: 4, pipeline: 8 };
const FIXED_BATCH = { batch: 10, publishers: 2, pipeline: 4 };

// l) The publish mode under the latency bound, the same in spirit for every
// target: what a backend publishing a steady stream would do. Where there is a
// batch endpoint (agentwire, node ws, Socket.IO), one request per
// boundBatchWindowMs of events (batches of rate × window, at least 1, at most
// 1000): the loadgen issues a batch whenever that many events are due, so
// an event waits at most one window before its request is written (that wait
// is not in the measured latency, which starts at the write: ≤ 2 ms of the
// 50 ms bound); 2 publisher connections × 8 requests in flight. nchan has no
// batch endpoint: one event per POST, 8 publisher connections × 32 pipelined.
// (Tried on the 2-core machine: at 10,000 connections agentwire's
// single-event endpoint could not take 20,000 events/s, which batches of 20
// and of 100 kept up with; at 1,000 connections requests of 1, 64, 160 and
// 320 events all kept p99 under 11 ms at 32,000 events/s. A 2 ms window
// makes batches of ~10-60 events at the rates found here.)
const BATCH_ENDPOINT = { agentwire: true, ws: true, socketio: true, nchan: false };
function boundPub(target, rate, cfg) {
  if (!BATCH_ENDPOINT[target]) return { batch: 1, publishers: 8, pipeline: 32 };
  const batch = Math.min(1000, Math.max(1, Math.round((rate * cfg.boundBatchWindowMs) / 1000)));
  return { batch, publishers: 2, pipeline: 8 };
}
function describeBoundMode(target, cfg) {
  return BATCH_ENDPOINT[target]
    ? `batches of ${cfg.boundBatchWindowMs} ms of events (rate × ${cfg.boundBatchWindowMs} ms, ≥ 1), 2 publishers × 8 pipelined`
    : 'one event per request, 8 publishers × 32 pipelined';
}
// The loadgen's --timeout-ms of one step: the connect phase, the publishing,
// and as long again for a backlog to drain (a step that needs more has failed).
const boundTimeoutMs = (cfg, conns) => 4000 + Math.round(conns * 0.8) + Math.round(cfg.boundStepMs * 2.5);

const NO_ECHO = {
  socketio: 'no echo endpoint (Socket.IO is not a raw WebSocket server)',
  nchan: 'nchan has no echo endpoint',
};
const NO_RESUME = {
  ws: 'no resume protocol',
  socketio: 'no replay of missed events in this peer',
  nchan: "the loadgen's resume mode speaks agentwire's since/epoch",
};

// ---- command line ------------------------------------------------------------

function parseCli(argv) {
  const o = { smoke: false, only: null, scenarios: null, out: null, repeat: null, fromResults: null, boundConns: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--smoke') o.smoke = true;
    else if (a === '--only') o.only = val().split(',').map((s) => s.trim()).filter(Boolean);
    else if (a === '--scenarios') o.scenarios = val().split(',').map((s) => s.trim().toLowerCase()).filter(Boolean);
    else if (a === '--out') o.out = val();
    else if (a === '--repeat') o.repeat = Number(val());
    else if (a === '--from-results') o.fromResults = val();
    else if (a === '--bound-conns') o.boundConns = val().split(',').map((x) => Number(x.trim()));
    else if (a === '--help' || a === '-h') usage(null);
    else usage(`unknown option ${a}`);
  }
  for (const t of o.only ?? []) if (!TARGETS.includes(t)) usage(`--only: unknown target ${t} (${TARGETS.join(', ')})`);
  for (const s of o.scenarios ?? []) if (!'labcdef'.includes(s) || s.length !== 1) usage(`--scenarios: unknown scenario ${s} (l, a..f)`);
  if (o.repeat !== null && !(Number.isInteger(o.repeat) && o.repeat >= 1)) usage('--repeat: expected an integer >= 1');
  if (o.boundConns && !o.boundConns.every((n) => Number.isInteger(n) && n >= 5)) usage('--bound-conns: expected connection counts >= 5, e.g. 1000,10000');
  return o;
}

function usage(err) {
  const text = `usage: node bench/run.mjs [--smoke] [--only ${TARGETS.join(',')}] [--scenarios l,a,b,c,d,e,f]
                         [--repeat N] [--out FILE] [--from-results JSON] [--bound-conns N,N...]
  --bound-conns: the sizes of scenario l (default 1000,5000,10000; smoke 50)
  --from-results: no runs, only the report again from a results file (e.g. after editing bench/notes.md)
  --repeat: runs per case (default 3; scenario l: searches per point, default 5)
  l throughput at a latency bound (p99 < 50 ms; the headline)
  a fan-out at the maximum rate   b fan-out at a fixed rate   c idle memory
  d connection and reconnect storm   e 64 KiB events   f echo`;
  if (err) {
    process.stderr.write(`${err}\n${text}\n`);
    process.exit(2);
  }
  process.stdout.write(`${text}\n`);
  process.exit(0);
}

// ---- the cases: one per table row --------------------------------------------

function buildCases(cfg, targets, scenarios, loopsOption) {
  const cases = [];
  const add = (c) => cases.push(c);
  const cpu = cfg.connsPerUser;
  const base = (target, mode, conns) => ({
    target, port: '$PORT', mode, users: Math.max(1, Math.round(conns / cpu)), 'conns-per-user': cpu,
    'jwt-secret': '$SECRET', 'api-key': '$KEY',
  });
  const fanout = (target, conns, pub, events, extra = {}) => ({
    ...base(target, 'fanout', conns), events, rate: 0, ...pub, ...extra,
  });
  if (scenarios.includes('l')) {
    for (const conns of cfg.boundConns) {
      for (const target of targets) {
        // the command of one step; $RATE events/s, $EVENTS = $RATE × step seconds, $BATCH per boundPub
        const pub = BATCH_ENDPOINT[target] ? { batch: '$BATCH', publishers: 2, pipeline: 8 } : boundPub(target, 1, cfg);
        add({
          id: `l-bound-${target}-${conns}`, scenario: 'l', group: 'bound', target, kind: 'bound', conns,
          modeLabel: describeBoundMode(target, cfg),
          args: { ...base(target, 'fanout', conns), events: '$EVENTS', rate: '$RATE', ...pub, 'timeout-ms': boundTimeoutMs(cfg, conns) },
        });
      }
    }
  }
  if (scenarios.includes('a')) {
    for (const conns of cfg.fanoutConns) {
      for (const target of targets) {
        const users = Math.round(conns / cpu);
        const events = Math.max(users, Math.round(cfg.fanoutDeliveries / cpu / users) * users);
        add({
          id: `a-max-${target}-${conns}`, scenario: 'a', group: 'fanout-max', target, kind: 'fanout', conns,
          modeLabel: describeMode(BEST_MODE[target]),
          args: fanout(target, conns, BEST_MODE[target], events, { 'timeout-ms': cfg.fanoutTimeoutMs }),
          boundMs: cfg.fanoutTimeoutMs + 30_000,
        });
      }
    }
    for (const target of targets) {
      const conns = cfg.onePerRequestConns;
      const users = Math.round(conns / cpu);
      if (target === 'agentwire' || target === 'nchan') {
        const events = Math.max(users, Math.round(cfg.fanoutDeliveries / cpu / users) * users);
        add({
          id: `a-one-${target}-${conns}`, scenario: 'a', group: 'fanout-one', target, kind: 'fanout', conns,
          modeLabel: describeMode(ONE_PER_REQUEST),
          args: fanout(target, conns, ONE_PER_REQUEST, events, { 'timeout-ms': cfg.fanoutTimeoutMs }),
          boundMs: cfg.fanoutTimeoutMs + 30_000,
        });
      }
    }
    if (loopsOption && targets.includes('agentwire')) {
      for (const loops of loopsOption.values) {
        const conns = cfg.onePerRequestConns;
        const users = Math.round(conns / cpu);
        const events = Math.max(users, Math.round(cfg.fanoutDeliveries / cpu / users) * users);
        add({
          id: `a-loops-${loops}`, scenario: 'a', group: 'loops', target: 'agentwire', kind: 'fanout', conns,
          loops, serverExtra: [loopsOption.flag, String(loops)], modeLabel: describeMode(BEST_MODE.agentwire),
          args: fanout('agentwire', conns, BEST_MODE.agentwire, events, { 'timeout-ms': cfg.fanoutTimeoutMs }),
          boundMs: cfg.fanoutTimeoutMs + 30_000,
        });
      }
    }
  }
  if (scenarios.includes('b')) {
    for (const [group, pub] of [['fixed', FIXED_ONE], ['fixed-batch', FIXED_BATCH]]) {
      for (const target of targets) {
        const conns = cfg.fixedConns;
        const events = cfg.fixedRate * cfg.fixedSeconds;
        const timeout = cfg.fixedSeconds * 1000 + 60_000;
        const id = `b-${group}-${target}`;
        if (group === 'fixed-batch' && target === 'nchan') {
          add({ id, scenario: 'b', group, target, kind: 'fanout', conns, na: 'no batch endpoint' });
          continue;
        }
        add({
          id, scenario: 'b', group, target, kind: 'fanout', conns, modeLabel: describeMode(pub),
          args: fanout(target, conns, pub, events, { rate: cfg.fixedRate, 'timeout-ms': timeout }),
          boundMs: timeout + 30_000,
        });
      }
    }
  }
  if (scenarios.includes('c')) {
    for (const { conns, targets: which } of cfg.idle) {
      for (const target of targets) {
        if (!which.includes(target)) continue;
        const timeout = cfg.idleHoldMs + 120_000;
        add({
          id: `c-idle-${target}-${conns}`, scenario: 'c', group: 'idle', target, kind: 'idle', conns,
          args: { ...base(target, 'idle', conns), 'hold-ms': cfg.idleHoldMs, 'timeout-ms': timeout },
          boundMs: timeout + 30_000,
        });
      }
    }
  }
  if (scenarios.includes('d')) {
    for (const target of targets) {
      const conns = cfg.stormConns;
      add({
        id: `d-storm-${target}`, scenario: 'd', group: 'storm', target, kind: 'storm', conns,
        args: { ...base(target, 'storm', conns), concurrency: cfg.stormConcurrency, 'timeout-ms': 120_000 },
        boundMs: 150_000,
      });
      // agentwire again with ES256 tokens (a P-256 signature to verify per
      // handshake instead of an HMAC): a fresh key pair and tokens per run
      // (esSetup), the loadgen sends them from a file instead of minting HS256
      if (target === 'agentwire') {
        const args = Object.fromEntries(Object.entries(base(target, 'storm', conns))
          .map(([k, v]) => (k === 'jwt-secret' ? ['token-file', '$TOKENS'] : [k, v])));
        add({
          id: `d-storm-${target}-es256`, scenario: 'd', group: 'storm', target, kind: 'storm', conns, jwtAlg: 'ES256',
          args: { ...args, concurrency: cfg.stormConcurrency, 'timeout-ms': 120_000 },
          boundMs: 150_000,
        });
      }
    }
    for (const target of targets) {
      const conns = cfg.resumeConns;
      const users = Math.round(conns / cpu);
      if (target !== 'agentwire') {
        add({ id: `d-resume-${target}`, scenario: 'd', group: 'resume', target, kind: 'resume', conns, na: NO_RESUME[target] });
        continue;
      }
      add({
        id: `d-resume-${target}`, scenario: 'd', group: 'resume', target, kind: 'resume', conns,
        eventsPerUser: cfg.resumeEventsPerUser,
        args: {
          ...base(target, 'resume', conns), events: users * cfg.resumeEventsPerUser, batch: 500, publishers: 2,
          concurrency: cfg.stormConcurrency, 'timeout-ms': 120_000,
        },
        boundMs: 150_000,
      });
    }
  }
  if (scenarios.includes('e')) {
    for (const target of targets) {
      const conns = cfg.largeConns;
      const users = Math.round(conns / cpu);
      const pub = target === 'nchan' ? { batch: 1, publishers: 8, pipeline: 4 } : { batch: cfg.largeBatch, publishers: 2, pipeline: 1 };
      add({
        id: `e-large-${target}`, scenario: 'e', group: 'large', target, kind: 'fanout', conns,
        modeLabel: describeMode(pub), payloadBytes: cfg.largeBytes,
        args: fanout(target, conns, pub, users * cfg.largeEventsPerUser, { 'payload-bytes': cfg.largeBytes, 'timeout-ms': 120_000 }),
        boundMs: 150_000,
      });
    }
  }
  if (scenarios.includes('f')) {
    for (const { bytes, window, conns: sizeConns } of cfg.echo) {
      for (const target of targets) {
        const conns = Math.min(cfg.echoConns, sizeConns ?? cfg.echoConns);
        const id = `f-echo-${target}-${bytes}`;
        if (NO_ECHO[target]) {
          add({ id, scenario: 'f', group: 'echo', target, kind: 'echo', conns, echoBytes: bytes, na: NO_ECHO[target] });
          continue;
        }
        add({
          id, scenario: 'f', group: 'echo', target, kind: 'echo', conns, echoBytes: bytes, echoWindow: window,
          args: {
            ...base(target, 'echo', conns), 'echo-bytes': bytes, 'echo-window': window, 'duration-ms': cfg.echoMs,
            'timeout-ms': cfg.echoMs + 60_000,
          },
          boundMs: cfg.echoMs + 90_000,
        });
      }
    }
  }
  return cases;
}

function describeMode({ batch, publishers, pipeline }) {
  const what = batch > 1 ? `batches of ${batch}` : 'one event per request';
  return `${what}, ${publishers} publisher${publishers > 1 ? 's' : ''}${pipeline > 1 ? ` × ${pipeline} pipelined` : ''}`;
}

// ---- one run -----------------------------------------------------------------

const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
const first = (r, ...keys) => {
  for (const k of keys) if (num(r[k]) !== undefined) return r[k];
  return undefined;
};

// What went wrong in a run that completed: lost, reordered or misrouted events,
// failed connections or publishes.
function problems(c, r) {
  const p = [];
  const n = (k) => num(r[k]) ?? 0;
  if (n('connect_failed') > 0) p.push(`${r.connect_failed} connections failed`);
  if (num(r.connected) !== undefined && num(r.connections) !== undefined && r.connected < r.connections && c.kind !== 'storm') {
    p.push(`${r.connected} of ${r.connections} connected`);
  }
  if (c.kind === 'storm' && num(r.connected) !== undefined && r.connected < c.conns) p.push(`${r.connected} of ${c.conns} handshakes completed`);
  if (n('publish_errors') > 0) p.push(`${r.publish_errors} publish errors`);
  if (n('missing') > 0) p.push(`${r.missing} deliveries missing`);
  if (n('order_errors') > 0) p.push(`${r.order_errors} order errors`);
  if (n('cross_user') > 0) p.push(`${r.cross_user} cross-user deliveries`);
  if (n('duplicates') > 0) p.push(`${r.duplicates} duplicates`);
  if (n('bad_frames') > 0) p.push(`${r.bad_frames} bad frames`);
  if (n('closed_by_server') > 0) p.push(`${r.closed_by_server} connections closed by the server`);
  if (n('echo_errors') > 0) p.push(`${r.echo_errors} echo errors`);
  if (n('reconnect_failed') > 0) p.push(`${r.reconnect_failed} reconnects failed`);
  if (n('resumed_false') > 0) p.push(`${r.resumed_false} reconnects not resumed`);
  if (r.timed_out === true) p.push('the loadgen reached its --timeout-ms');
  if (c.kind === 'fanout' || c.kind === 'resume') {
    if (num(r.deliveries_expected) !== undefined && num(r.deliveries) !== undefined && r.deliveries < r.deliveries_expected && n('missing') === 0) {
      p.push(`${r.deliveries} of ${r.deliveries_expected} deliveries`);
    }
  }
  if (c.kind === 'fanout' && c.args?.rate > 0 && num(r.deliveries_per_s) !== undefined) {
    const offered = c.args.rate * (c.args['conns-per-user'] ?? 1);
    if (r.deliveries_per_s < 0.9 * offered) p.push(`did not keep up with the fixed rate (${Math.round(r.deliveries_per_s)} of ${offered} deliveries/s)`);
  }
  if (c.kind === 'echo' && !(first(r, 'echo_msgs_per_s') > 0)) p.push('no echoes');
  if (c.kind === 'storm' && !(first(r, 'handshakes_per_s') > 0)) p.push('no handshakes');
  return p;
}

function derive(c, r, s) {
  const m = {};
  const deliveries = num(r.deliveries);
  const lat = r.latency_us ?? {};
  if (c.kind === 'fanout') {
    const cpu = s.end.cpu_s - (s.mid ?? s.start).cpu_s;
    m.deliveries_per_s = num(r.deliveries_per_s);
    m.p50_us = num(lat.p50);
    m.p99_us = num(lat.p99);
    m.p999_us = num(lat.p999);
    m.max_us = num(lat.max);
    m.server_cpu_s = cpu;
    m.cpu_window = s.mid ? 'publish' : 'run';
    m.p90_us = num(lat.p90);
    if (deliveries > 0) {
      m.server_cpu_per_m = (cpu / deliveries) * 1e6;
      // the loadgen's CPU over the same window as the server's
      const lg = num(r.loadgen_cpu_s);
      const lgConnect = s.mid ? num(r.connect_cpu_s) ?? 0 : 0;
      if (lg !== undefined) m.loadgen_cpu_per_m = ((lg - lgConnect) / deliveries) * 1e6;
    }
    if (c.payloadBytes && num(r.elapsed_s) > 0 && deliveries > 0) m.mb_per_s = (deliveries * c.payloadBytes) / r.elapsed_s / 1e6;
    m.server_rss_end_mb = s.end.rss_kb / 1024;
  } else if (c.kind === 'idle') {
    const connected = num(r.connected) ?? 0;
    m.connected = connected;
    m.rss_before_kb = s.start.rss_kb;
    m.rss_idle_kb = s.idle?.rss_kb;
    if (s.idle && connected > 0) m.bytes_per_conn = ((s.idle.rss_kb - s.start.rss_kb) * 1024) / connected;
  } else if (c.kind === 'storm') {
    const cpu = s.end.cpu_s - s.start.cpu_s;
    m.handshakes_per_s = num(r.handshakes_per_s);
    m.connected = num(r.connected);
    m.server_cpu_s = cpu;
    if (num(r.connected) > 0) m.server_cpu_us_per_handshake = (cpu / r.connected) * 1e6;
    m.p50_us = num(lat.p50);
    m.p99_us = num(lat.p99);
  } else if (c.kind === 'resume') {
    m.reconnects_per_s = first(r, 'reconnects_per_s', 'handshakes_per_s');
    m.replayed_per_s = first(r, 'replayed_per_s', 'replayed_events_per_s', 'replay_per_s', 'deliveries_per_s');
    m.resume_s = first(r, 'resume_s', 'resume_elapsed_s', 'reconnect_elapsed_s');
    m.replayed = num(r.replayed);
    m.resume_p99_us = num(r.resume_latency_us?.p99);
    m.p50_us = num(lat.p50);
    m.p99_us = num(lat.p99);
    m.server_cpu_s = s.end.cpu_s - s.start.cpu_s;
  } else if (c.kind === 'echo') {
    const cpu = s.end.cpu_s - (s.mid ?? s.start).cpu_s;
    m.msgs_per_s = num(r.echo_msgs_per_s);
    m.mb_per_s = num(r.echo_mb_per_s);
    m.p50_us = num(lat.p50);
    m.p99_us = num(lat.p99);
    m.server_cpu_s = cpu;
    m.cpu_window = s.mid ? 'echo' : 'run';
    const secs = num(r.elapsed_s) ?? num(r.duration_s) ?? (c.args['duration-ms'] / 1000);
    if (s.mid) m.server_cpu_pct = (cpu / ((s.end.t - s.mid.t) / 1000)) * 100;
    else if (secs > 0) m.server_cpu_pct = (cpu / secs) * 100;
    const msgs = num(r.echo_msgs) ?? (m.msgs_per_s && secs ? m.msgs_per_s * secs : undefined);
    if (msgs > 0) m.server_cpu_per_m = (cpu / msgs) * 1e6;
    const lg = num(r.loadgen_cpu_s);
    if (lg !== undefined && secs > 0) m.loadgen_cpu_pct = ((lg - (num(r.connect_cpu_s) ?? 0)) / secs) * 100;
  }
  return m;
}

// ---- ES256 tokens ----------------------------------------------------------------

const base64url = (b) => Buffer.from(b).toString('base64url');
// the order n of P-256: of the two spellings (r, s) and (r, n - s) of a
// signature agentwire accepts only the low one (s <= n/2) unless
// --jwt-allow-high-s; node's sign() does not normalize
const P256_N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;
const esDirs = new Set();

// A P-256 key pair in a fresh temporary directory, its public key as PEM for
// agentwire's --jwt-public-key, and a token file for aw-loadgen's --token-file:
// line i + 1 is the ES256 JWT of user u<i>, with the claims the loadgen
// mints for HS256 (sub u<i>, exp in an hour). Returns { dir, jwt, tokenFile };
// the caller removes dir (esDirs: removed on exit whatever happens).
function esSetup(users) {
  const dir = mkdtempSync(join(tmpdir(), 'awbench-es256-'));
  esDirs.add(dir);
  try {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const publicKeyFile = join(dir, 'jwt-public.pem');
    writeFileSync(publicKeyFile, publicKey.export({ type: 'spki', format: 'pem' }));
    const head = base64url(JSON.stringify({ alg: 'ES256', typ: 'JWT' }));
    const exp = Math.floor(Date.now() / 1000) + 3600;
    const lines = [];
    for (let u = 0; u < users; u++) {
      const text = `${head}.${base64url(JSON.stringify({ sub: `u${u}`, exp }))}`;
      const sig = sign('sha256', Buffer.from(text), { key: privateKey, dsaEncoding: 'ieee-p1363' });
      const s = BigInt(`0x${sig.subarray(32).toString('hex')}`);
      if (s > P256_N / 2n) Buffer.from((P256_N - s).toString(16).padStart(64, '0'), 'hex').copy(sig, 32);
      lines.push(`${text}.${base64url(sig)}`);
    }
    const tokenFile = join(dir, 'tokens.txt');
    writeFileSync(tokenFile, `${lines.join('\n')}\n`);
    return { dir, jwt: { alg: 'ES256', publicKeyFile }, tokenFile };
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    esDirs.delete(dir);
    throw err;
  }
}

async function runOnce(c, ctx) {
  const { secret, apiKey } = ctx;
  let server;
  let es;
  const rec = { started: new Date().toISOString() };
  try {
    if (c.jwtAlg === 'ES256') es = esSetup(c.args.users);
    server = await startServer(c.target, { secret, apiKey, extraArgs: c.serverExtra, jwt: es?.jwt });
    await sleep(c.kind === 'idle' ? 500 : 150);
    const s = { start: sample(server.pid) };
    const auth = es ? { 'token-file': es.tokenFile } : { 'jwt-secret': secret };
    const args = { ...c.args, port: server.port, ...auth, 'api-key': apiKey };
    const onPhase = async (ph) => {
      if (c.kind === 'idle' && ph.phase === 'ready' && !s.idle) {
        s.idle = 'pending';
        await sleep(ctx.cfg.idleSettleMs);
        s.idle = sample(server.pid);
      } else if ((c.kind === 'fanout' || c.kind === 'echo') && ph.phase === 'connected' && !s.mid) {
        s.mid = sample(server.pid);
        s.midPhase = ph.phase;
      }
    };
    const { result, phases, wallS, stderrTail } = await runLoadgen(args, { boundMs: c.boundMs, onPhase });
    s.end = sample(server.pid);
    if (s.idle === 'pending') delete s.idle;
    if (!server.alive()) throw new Error(`the server exited during the run${server.exitNote()}`);
    rec.ok = true;
    rec.result = result;
    rec.phases = phases;
    rec.wall_s = wallS;
    rec.server = { start: s.start, mid: s.mid, idle: s.idle, end: s.end, mid_phase: s.midPhase };
    rec.metrics = derive(c, result, s);
    rec.problems = problems(c, result);
    if (rec.problems.length) rec.loadgen_stderr = stderrTail;
    if (c.kind === 'idle' && !s.idle) rec.problems.push('the loadgen printed no {"phase":"ready"} line');
  } catch (err) {
    rec.ok = false;
    rec.error = String(err.message ?? err).replace(/\s+/g, ' ').slice(0, 600);
    rec.problems = [rec.error];
  } finally {
    if (server) await server.stop();
    if (es) {
      rmSync(es.dir, { recursive: true, force: true });
      esDirs.delete(es.dir);
    }
  }
  return rec;
}

// ---- l) throughput at a latency bound ------------------------------------------

// One step of a search: a fresh server, the loadgen's fan-out at `rate`
// events/s for cfg.boundStepMs, and whether it met the bound: p99 under
// cfg.boundP99Us, every event delivered exactly once, in order, to its own
// user, no connection dropped, and the publishing kept up with the rate.
async function boundStep(c, ctx, rate) {
  const { cfg, secret, apiKey } = ctx;
  const pub = boundPub(c.target, rate, cfg);
  const users = Math.max(1, Math.round(c.conns / cfg.connsPerUser));
  const events = Math.max(users, Math.round((rate * cfg.boundStepMs) / 1000));
  const timeout = boundTimeoutMs(cfg, c.conns);
  const st = { rate, batch: pub.batch, events, pass: false, why: [] };
  const t0 = Date.now();
  let server;
  try {
    server = await startServer(c.target, { secret, apiKey });
    await sleep(150);
    const s = {};
    const onPhase = (ph) => { if (ph.phase === 'connected' && !s.mid) s.mid = sample(server.pid); };
    s.start = sample(server.pid);
    const args = { ...c.args, port: server.port, 'jwt-secret': secret, 'api-key': apiKey, events, rate, ...pub, 'timeout-ms': timeout };
    const { result: r } = await runLoadgen(args, { boundMs: timeout + 20_000, onPhase });
    const end = sample(server.pid);
    if (!server.alive()) throw new Error(`the server exited during the step${server.exitNote()}`);
    const n = (k) => num(r[k]) ?? 0;
    const lat = r.latency_us ?? {};
    Object.assign(st, {
      dps: num(r.deliveries_per_s), offered_dps: rate * cfg.connsPerUser, pub_eps: num(r.publish_events_per_s),
      p50_us: num(lat.p50), p99_us: num(lat.p99), p999_us: num(lat.p999), max_us: num(lat.max),
      deliveries: n('deliveries'), server_cpu_s: end.cpu_s - (s.mid ?? s.start).cpu_s,
    });
    for (const k of ['missing', 'closed_by_server', 'connect_failed', 'publish_errors', 'order_errors', 'cross_user', 'duplicates', 'bad_frames']) {
      if (n(k) > 0) st[k] = n(k);
    }
    if (r.timed_out === true) st.timed_out = true;
    // what the step failed on: losses from an overload first, then the bound
    if (st.timed_out) st.why.push('timed out');
    if (st.connect_failed) st.why.push(`${st.connect_failed} connections failed`);
    if (st.missing) st.why.push(`${st.missing} missing`);
    if (st.closed_by_server) st.why.push(`${st.closed_by_server} closed by the server`);
    if (st.publish_errors) st.why.push(`${st.publish_errors} publish errors`);
    for (const [k, label] of [['order_errors', 'order errors'], ['cross_user', 'cross-user'], ['duplicates', 'duplicates'], ['bad_frames', 'bad frames']]) {
      if (st[k]) st.why.push(`${st[k]} ${label}`);
    }
    if (!(st.p99_us < cfg.boundP99Us)) st.why.push(`p99 ${st.p99_us === undefined ? '?' : fmtMs(st.p99_us)} ms`);
    // kept up: the events were published at the rate (a server that answers
    // its publish requests late holds the events back in the loadgen, where
    // the measured latency does not see them) and delivered at it
    if (!(st.pub_eps >= 0.95 * rate)) st.why.push(`published ${st.pub_eps === undefined ? '?' : Math.round(st.pub_eps)} of ${rate} events/s`);
    else if (!(st.dps >= 0.9 * st.offered_dps)) st.why.push(`delivered ${st.dps === undefined ? '?' : Math.round(st.dps)} of ${st.offered_dps}/s`);
    st.pass = st.why.length === 0;
  } catch (err) {
    st.error = String(err.message ?? err).replace(/\s+/g, ' ').slice(0, 400);
    st.why.push(`error: ${st.error}`);
  } finally {
    if (server) await server.stop();
  }
  st.wall_s = (Date.now() - t0) / 1000;
  return st;
}

const fmtMs = (us) => (us / 1000).toFixed(us < 10_000 ? 1 : 0);

// Where a search starts: the median of the point's earlier searches (a small
// ramp), else the median of the same target at the next smaller size, else
// cfg.boundStartRate (ramps of ×2).
function boundHint(c, ctx) {
  const { cfg } = ctx;
  const rates = (k) => (ctx.boundFound.get(k) ?? []).filter((x) => x > 0);
  const same = rates(`${c.target}|${c.conns}`);
  if (same.length) return { rate: median(same), factor: cfg.boundRunFactor, from: 'earlier runs of this point' };
  const smaller = cfg.boundConns.filter((n) => n < c.conns).sort((a, b) => b - a);
  for (const n of smaller) {
    const r = rates(`${c.target}|${n}`);
    if (r.length) return { rate: median(r), factor: cfg.boundSizeFactor, from: `${n} connections` };
  }
  return { rate: cfg.boundStartRate, factor: cfg.boundFirstFactor, from: 'the start rate' };
}

// One run of scenario l: a search for the highest rate that meets the bound.
// From the hint, steps ×factor up while they pass (÷ down while they fail;
// consecutive moves the same way grow the factor, up to ×2), then bisection
// (geometric) between the highest passing and the lowest failing rate until
// they are within cfg.boundTolerance. The run's figure: the delivered rate
// (deliveries/s, measured) of its highest passing step.
async function runBound(c, ctx) {
  const { cfg } = ctx;
  const hint = boundHint(c, ctx);
  const t0 = Date.now();
  const rec = { started: new Date().toISOString(), hint: { rate: Math.round(hint.rate), from: hint.from }, steps: [] };
  const steps = rec.steps;
  let lo = null;
  let hi = null;
  let rate = Math.max(cfg.boundMinRate, Math.round(hint.rate));
  let lastDir = 0;
  let streak = 0;
  const notes = [];
  for (;;) {
    const st = await boundStep(c, ctx, rate);
    steps.push(st);
    if (st.pass) { if (!lo || st.rate > lo.rate) lo = st; } else if (!hi || st.rate < hi.rate) hi = st;
    if (steps.length >= cfg.boundMaxSteps) { if (!(lo && hi)) notes.push(`stopped after ${steps.length} steps`); break; }
    if (Date.now() - t0 > cfg.boundRunBudgetMs) { notes.push(`stopped by the time bound of a search (${cfg.boundRunBudgetMs / 1000} s)`); break; }
    let next;
    if (lo && hi) {
      if (hi.rate <= lo.rate * cfg.boundTolerance) break;
      next = Math.sqrt(lo.rate * hi.rate);
    } else {
      const dir = lo ? 1 : -1;
      streak = dir === lastDir ? streak + 1 : 1;
      lastDir = dir;
      const f = Math.min(Math.max(2, hint.factor), hint.factor ** streak);
      next = dir > 0 ? lo.rate * f : hi.rate / f;
    }
    next = Math.round(next);
    if (next < cfg.boundMinRate) { notes.push(`no step met the bound down to ${rate} events/s`); break; }
    if (steps.some((x) => x.rate === next)) break;
    rate = next;
  }
  rec.search_s = (Date.now() - t0) / 1000;
  rec.ok = steps.some((x) => !x.error);
  if (!rec.ok) rec.error = steps[0]?.error ?? 'no step';
  const sum = (k) => steps.reduce((a, x) => a + (x[k] ?? 0), 0);
  // the loadgen's counters that report.mjs sums over runs: only what no
  // overload excuses (a step past the server's capacity may lose events:
  // that step failed, and is in the steps)
  rec.result = { order_errors: sum('order_errors'), cross_user: sum('cross_user'), duplicates: sum('duplicates'), connect_failed: sum('connect_failed') };
  rec.problems = [];
  for (const x of steps) {
    const bad = x.why.filter((w) => /order errors|cross-user|duplicates|bad frames|connections failed|^error: /.test(w));
    if (bad.length) rec.problems.push(`step at ${x.rate} events/s: ${bad.join(', ')}`);
  }
  if (!lo) notes.push('no step met the bound');
  rec.notes = notes;
  rec.capped = !lo ? 'none' : !hi ? 'lower bound' : null;
  rec.metrics = lo ? {
    deliveries_per_s: lo.dps, rate: lo.rate, batch: lo.batch, p50_us: lo.p50_us, p99_us: lo.p99_us, p999_us: lo.p999_us, max_us: lo.max_us,
    server_cpu_per_m: lo.deliveries > 0 ? (lo.server_cpu_s / lo.deliveries) * 1e6 : undefined,
    fail_rate: hi?.rate, fail_dps: hi?.dps, fail_p99_us: hi?.p99_us, steps: steps.length, search_s: rec.search_s,
  } : { deliveries_per_s: 0, fail_rate: hi?.rate, steps: steps.length, search_s: rec.search_s };
  const key = `${c.target}|${c.conns}`;
  if (!ctx.boundFound.has(key)) ctx.boundFound.set(key, []);
  ctx.boundFound.get(key).push(lo ? lo.rate : 0);
  return rec;
}

// In a smoke run every step is far below any server's capacity: a loss of any
// kind, a failed step or a search without a passing step fails the smoke.
function boundSmokeProblems(rec) {
  const p = [];
  for (const x of rec.steps ?? []) if (!x.pass) p.push(`step at ${x.rate} events/s: ${x.why.join(', ')}`);
  if (rec.capped === 'none') p.push('no step met the bound');
  return p;
}

function summarizeBound(c, rec, cfg) {
  const m = rec.metrics ?? {};
  const steps = (rec.steps ?? []).map((x) => `${x.rate}${x.pass ? '✓' : `✗(${x.why[0] ?? '?'})`}`).join(' ');
  const head = m.deliveries_per_s > 0
    ? `${rec.capped ? '≥ ' : ''}${Math.round(m.deliveries_per_s)} deliveries/s with p99 < ${cfg.boundP99Us / 1000} ms (${m.rate} events/s, p99 ${fmtMs(m.p99_us)} ms)`
    : 'no rate met the bound';
  return `${head}; from ${rec.hint.rate} (${rec.hint.from}), steps (events/s): ${steps}${rec.notes?.length ? `; ${rec.notes.join('; ')}` : ''}`;
}

// ---- aggregation -------------------------------------------------------------

export function median(xs) {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return undefined;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

function aggregate(c) {
  const ok = c.runs.filter((r) => r.ok);
  c.ok_runs = ok.length;
  // the medians come from the runs without problems (a run that lost events
  // measured something else), unless every run had some
  // (scenario l: every search; its figure comes from a step that met the bound)
  const clean = ok.filter((r) => !(r.problems ?? []).length);
  const basis = clean.length && c.kind !== 'bound' ? clean : ok;
  c.median_runs = basis.length;
  c.median = {};
  const keys = new Set(basis.flatMap((r) => Object.keys(r.metrics)));
  for (const k of keys) {
    const vals = basis.map((r) => r.metrics[k]);
    if (vals.every((v) => typeof v === 'string')) c.median[k] = vals[0];
    else c.median[k] = median(vals);
  }
  const lost = { missing: 0, order_errors: 0, cross_user: 0, duplicates: 0, publish_errors: 0, connect_failed: 0 };
  for (const r of ok) for (const k of Object.keys(lost)) lost[k] += num(r.result[k]) ?? 0;
  c.lost = lost;
  c.problems = [...new Set(c.runs.flatMap((r) => r.problems ?? []))];
  const errs = c.runs.filter((r) => !r.ok).map((r) => r.error);
  c.error = ok.length ? null : (errs[0] ?? 'no run');
  // latency histograms of all runs, merged (for the CDF plot)
  const hist = new Map();
  for (const r of ok) {
    const h = r.result.latency_hist;
    if (!Array.isArray(h)) continue;
    for (const [us, n] of h) hist.set(us, (hist.get(us) ?? 0) + n);
  }
  if (hist.size) c.latency_hist = [...hist.entries()].sort((a, b) => a[0] - b[0]);
}

// ---- main --------------------------------------------------------------------

function loopsOption() {
  try {
    const help = execFileSync(AGENTWIRE_BIN, ['--help'], { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
    const m = help.match(/^\s*(--threads|--loops)\b/m);
    if (!m) return null;
    return { flag: m[1], values: [1, Math.max(2, (execFileSync('nproc').toString().trim() | 0) || 2)] };
  } catch {
    return null;
  }
}

async function main() {
  const cli = parseCli(process.argv.slice(2));
  if (cli.fromResults) {
    const { meta, cases } = JSON.parse(readFileSync(cli.fromResults, 'utf8'));
    for (const c of cases) if (!c.na) aggregate(c);
    const outFile = resolve(cli.out ?? join(ROOT, 'docs/benchmarks.md'));
    const written = await writeReport({ meta, cases, outFile, plotDir: join(dirname(outFile), 'bench'), resultsFile: resolve(cli.fromResults), cfg: meta.config });
    process.stderr.write(`bench: report ${outFile}${written.plots.length ? `, plots ${written.plots.join(', ')}` : ''}\n`);
    for (const w of written.warnings) process.stderr.write(`bench: warning: ${w}\n`);
    return;
  }
  const cfg = { ...(cli.smoke ? SMOKE : FULL) };
  if (cli.repeat) cfg.repeat = cli.repeat;
  const scenarios = cli.scenarios ?? ['l', 'a', 'b', 'c', 'd', 'e', 'f'];
  cfg.boundRuns = cli.repeat ?? cfg.boundRuns;
  if (cli.boundConns) cfg.boundConns = [...cli.boundConns].sort((a, b) => a - b);
  const wanted = cli.only ?? TARGETS;
  const t0 = Date.now();

  if (!loadgenAvailable()) {
    process.stderr.write(`bench: ${LOADGEN_BIN} is missing (build it: scripts/build.sh release)\n`);
    process.exit(1);
  }
  const skipped = {};
  const targets = [];
  for (const t of wanted) {
    const why = unavailable(t);
    if (why) skipped[t] = why;
    else targets.push(t);
  }
  for (const [t, why] of Object.entries(skipped)) process.stderr.write(`bench: ${t} skipped: ${why}\n`);
  if (!targets.length) {
    process.stderr.write('bench: no target can run\n');
    process.exit(1);
  }

  let outFile;
  let resultsFile;
  let plotDir;
  if (cli.smoke && !cli.out) {
    // one fixed directory, replaced by every smoke run, so that runs do not pile up
    const dir = join(tmpdir(), 'agentwire-bench-smoke');
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    outFile = join(dir, 'benchmarks.md');
  } else {
    outFile = resolve(cli.out ?? join(ROOT, 'docs/benchmarks.md'));
  }
  if (!cli.smoke && outFile === join(ROOT, 'docs/benchmarks.md')) resultsFile = join(ROOT, 'bench/results/latest.json');
  else resultsFile = outFile.replace(/\.md$/, '') + '.json';
  plotDir = join(dirname(outFile), 'bench');

  const ctx = {
    cfg,
    secret: randomBytes(16).toString('hex'),
    apiKey: randomBytes(16).toString('hex'),
    boundFound: new Map(), // scenario l: `${target}|${conns}` -> rates found by the searches so far
  };
  const loops = scenarios.includes('a') ? loopsOption() : null;
  const cases = buildCases(cfg, targets, scenarios, loops);
  const runnable = cases.filter((c) => !c.na);
  const nBound = runnable.filter((c) => c.kind === 'bound').length;
  process.stderr.write(`bench: ${runnable.length - nBound} cases × ${cfg.repeat} run(s)${nBound ? `, ${nBound} latency-bound points × ${cfg.boundRuns} search(es)` : ''}; `
    + `targets ${targets.join(', ')}; scenarios ${scenarios.join(',')}${cli.smoke ? ' (smoke)' : ''}\n`);

  // The runs use copies of the binaries taken now, so that a rebuild while the
  // benchmark runs (hours of work on src/ go on next to it) cannot mix builds.
  const machine = machineInfo(); // now: the commit and build that are measured
  const binDir = mkdtempSync(join(tmpdir(), 'awbench-bin-'));
  process.on('exit', () => rmSync(binDir, { recursive: true, force: true }));
  if (targets.includes('agentwire')) {
    copyFileSync(AGENTWIRE_BIN, join(binDir, 'agentwire'));
    useAgentwireBinary(join(binDir, 'agentwire'));
  }
  copyFileSync(LOADGEN_BIN, join(binDir, 'aw-loadgen'));
  useLoadgenBinary(join(binDir, 'aw-loadgen'));
  const failures = [];
  for (const c of cases) {
    c.command = c.args ? commandLine(c.args) : null;
    c.runs = [];
  }
  // l) in rounds: search 1 of every point (sizes ascending, each starting from
  // the smaller size's result), then search 2 of every point, and so on, so
  // that a slow spell of the shared machine touches every target alike
  const boundCases = cases.filter((c) => c.kind === 'bound' && !c.na);
  let boundS = null;
  if (boundCases.length) {
    const tb = Date.now();
    let cut = false;
    for (let i = 0; i < cfg.boundRuns && !cut; i++) {
      for (const c of boundCases) {
        if (Date.now() - tb > cfg.boundBudgetMs) {
          cut = true;
          process.stderr.write(`bench: scenario l stopped by its time bound (${cfg.boundBudgetMs / 60000} min) before search ${i + 1} of ${c.id}\n`);
          break;
        }
        const t = Date.now();
        const rec = await runBound(c, ctx);
        c.runs.push(rec);
        const brief = rec.ok ? summarizeBound(c, rec, cfg) : `FAILED: ${rec.error}`;
        process.stderr.write(`  ${c.id} #${i + 1}: ${brief} (${((Date.now() - t) / 1000).toFixed(1)} s)\n`);
        const probs = cli.smoke ? [...new Set([...rec.problems, ...boundSmokeProblems(rec)])] : rec.problems;
        if (probs.length) failures.push(`${c.id} #${i + 1}: ${probs.join('; ')}`);
      }
    }
    for (const c of boundCases) {
      if (c.runs.length < cfg.boundRuns) c.budget_cut = `${c.runs.length} of ${cfg.boundRuns} searches: the scenario's time bound (${cfg.boundBudgetMs / 60000} min) ran out`;
      if (c.runs.length) aggregate(c);
      else c.error = c.budget_cut;
    }
    boundS = (Date.now() - tb) / 1000;
    process.stderr.write(`bench: scenario l took ${boundS.toFixed(0)} s\n`);
  }
  for (const c of cases) {
    if (c.na || c.kind === 'bound') continue;
    for (let i = 0; i < cfg.repeat; i++) {
      const t = Date.now();
      const rec = await runOnce(c, ctx);
      c.runs.push(rec);
      const brief = rec.ok ? summarize(c, rec) : `FAILED: ${rec.error}`;
      process.stderr.write(`  ${c.id} #${i + 1}: ${brief} (${((Date.now() - t) / 1000).toFixed(1)} s)\n`);
      if (rec.problems.length) {
        failures.push(`${c.id} #${i + 1}: ${rec.problems.join('; ')}`);
        if (rec.ok) process.stderr.write(`    problems: ${rec.problems.join('; ')}\n`);
      }
      if (cli.smoke && !rec.ok) break;
    }
    aggregate(c);
  }

  const elapsed = (Date.now() - t0) / 1000;
  const meta = {
    generated: new Date().toISOString(),
    smoke: cli.smoke,
    repeat: cfg.repeat,
    scenarios,
    targets,
    skipped,
    elapsed_s: elapsed,
    config: cfg,
    argv: process.argv.slice(2),
    machine,
    loops_option: loops?.flag ?? null,
    bound_runs: boundCases.length ? cfg.boundRuns : null,
    bound_s: boundS,
  };
  mkdirSync(dirname(resultsFile), { recursive: true });
  // one line per case, so that the file stays small and diffs stay readable
  const slim = cases.map(({ runs, ...c }) => ({ ...c, runs: runs.map(({ phases, ...r }) => r) }));
  writeFileSync(resultsFile, `{"meta":${JSON.stringify(meta, null, 1)},\n"cases":[\n${slim.map((c) => JSON.stringify(c)).join(',\n')}\n]}\n`);
  const written = await writeReport({ meta, cases, outFile, plotDir, resultsFile, cfg });
  process.stderr.write(`bench: report ${outFile}${written.plots.length ? `, plots ${written.plots.join(', ')}` : ''}; results ${resultsFile} (${elapsed.toFixed(0)} s)\n`);
  for (const w of written.warnings) process.stderr.write(`bench: warning: ${w}\n`);

  if (cli.smoke) {
    if (failures.length) {
      process.stderr.write(`bench smoke: FAILED\n${failures.map((f) => `  ${f}`).join('\n')}\n`);
      process.exitCode = 1;
    } else {
      process.stderr.write(`bench smoke: ok (${runnable.length} cases, ${elapsed.toFixed(1)} s)\n`);
    }
  } else if (failures.length) {
    process.stderr.write(`bench: ${failures.length} run(s) with problems (listed in the report)\n`);
  }
}

function summarize(c, rec) {
  const m = rec.metrics;
  const f = (x, d = 0) => (x === undefined ? '?' : Number(x).toFixed(d));
  switch (c.kind) {
    case 'fanout': return `${f(m.deliveries_per_s)} deliveries/s, p50 ${f(m.p50_us)} µs, p99 ${f(m.p99_us)} µs, server CPU ${f(m.server_cpu_s, 2)} s`;
    case 'idle': return `${f(m.connected)} idle, ${f(m.bytes_per_conn)} bytes/conn`;
    case 'storm': return `${f(m.handshakes_per_s)} handshakes/s`;
    case 'resume': return `${f(m.reconnects_per_s)} reconnects/s, ${f(m.replayed_per_s)} replayed/s`;
    case 'echo': return `${f(m.msgs_per_s)} msgs/s, ${f(m.mb_per_s, 1)} MB/s, server CPU ${f(m.server_cpu_pct)} %`;
    default: return 'ok';
  }
}

let stopping = false;
async function onSignal(sig) {
  if (stopping) return;
  stopping = true;
  process.stderr.write(`bench: ${sig}, stopping the servers and the loadgen\n`);
  const t = setTimeout(() => { killAllNow(); process.exit(130); }, 4000);
  await stopAll();
  clearTimeout(t);
  process.exit(130);
}
process.on('SIGINT', () => onSignal('SIGINT'));
process.on('SIGTERM', () => onSignal('SIGTERM'));
process.on('exit', () => {
  killAllNow();
  removeTempDirs();
  for (const d of esDirs) rmSync(d, { recursive: true, force: true });
});

main().catch(async (err) => {
  process.stderr.write(`bench: ${err.stack ?? err}\n`);
  await stopAll();
  process.exit(1);
});
