#!/usr/bin/env node
// Agent-shaped load: many concurrent agent runs, each streaming agent_thinking,
// partial_result and tool_executing/tool_completed events of 20-200 bytes at
// 20-50 events/s to its user's WebSocket, opened by agent_started and closed by
// agent_completed; through agentwire's run gate (the batch publish API, and an
// exec agent started per run), and the same events through the peers (node ws,
// Socket.IO, nchan) with no gate. Measures delivery latency, server and client
// CPU per delivery, and checks that every subscriber got exactly its own events
// in order (exit 1 otherwise).
//
//   node bench/agents.mjs [--quick] [--only agentwire-batch,agentwire-exec,ws,socketio,nchan]
//                         [--users N] [--exec-users N[,N]] [--duration-ms MS] [--wait-idle-ms MS]
//                         [--server-args 'ARGS'] [--json FILE] [--md FILE]
//                         [--agentwire BIN] [--client BIN] [--agent BIN]
//
// Binaries: agentwire from --agentwire, $AGENTWIRE_BIN or build/agentwire; the
// load client build/bench/aw-agentload and the exec agent build/bench/aw-agentexec
// (--client/--agent, $AW_AGENTLOAD_BIN/$AW_AGENTEXEC_BIN), built by CMake
// (cmake --build build --target aw-agentload aw-agentexec).
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join, resolve } from 'node:path';
import { killAllNow, sleep, spawnGroup, stopAll, stopGroup } from './lib/proc.mjs';
import { AGENTWIRE_BIN, removeTempDirs, ROOT, serverCommand, startServer, unavailable, useAgentwireBinary } from './lib/servers.mjs';
import { sampleAll, waitNoChildren, window } from './lib/agents-proc.mjs';
import { markdown, textTable } from './lib/agents-report.mjs';

// ---- sizes ---------------------------------------------------------------------

const FULL = {
  users: 2000,
  // The exec setup at a concurrency its process-per-run start-up sustains on
  // two cores, and at the same 2,000 runs as the others (where the start of
  // the agents, not the events, is the limit: see the notes).
  execUsers: [500, 2000],
  durationMs: 30_000,
  runMinMs: 4000,
  runMaxMs: 12_000,
  rateMin: 20,
  rateMax: 50,
  bytesMin: 20,
  bytesMax: 200,
  toolPermille: 50,
  thinkPermille: 300,
  gapMaxMs: 1000,
  staggerMs: 4000,
  waitIdleMs: 10_000,
};
const QUICK = {
  ...FULL,
  users: 200,
  execUsers: [200],
  durationMs: 3500,
  runMinMs: 1000,
  runMaxMs: 2500,
  gapMaxMs: 300,
  staggerMs: 300,
  waitIdleMs: 0,
};

// How each setup publishes. The batch endpoints: a publisher connection sends
// what its users' runs made in the last 5 ms (at most 1000 events) as one
// request, 4 requests in flight on each of 2 connections: a backend relaying
// its agents' events. nchan has no batch endpoint: one POST per event,
// pipelined on 8 connections (its best mode in bench/run.mjs).
const BATCH_PUB = { publishers: 2, pipeline: 4, 'batch-max': 1000, 'flush-us': 5000 };
const NCHAN_PUB = { publishers: 8, pipeline: 32 };

const SETUPS = [
  {
    id: 'agentwire-batch', target: 'agentwire', mode: 'batch', label: 'agentwire, batch API',
    pub: BATCH_PUB,
    describe: 'the events as agent events of runs (`thread_id`, `run_id`), `POST /api/v1/publish/batch`; the run gate checks each run\'s order (opened, one `tool_completed` per `tool_executing`, closed once) before anything is delivered.',
  },
  {
    id: 'agentwire-exec', target: 'agentwire', mode: 'exec', label: 'agentwire, exec agent',
    describe: 'agentwire started with `--agent exec:build/bench/aw-agentexec`; each user\'s client sends `start_agent` (the run\'s plan in `user_request`), the server starts one agent process per run, publishes `agent_started`, and relays the JSON lines the agent prints at the planned times through the same run gate. The agent is C (libc only, one `write` per line): with a process per run, start-up counts. The command is a plain path, so the server starts it directly (posix_spawn, no shell; docs/agents.md); for comparison, on this machine `python3 -c 0` costs 9 ms of CPU to start and `node -e 0` 50 ms and 40 MB, all on the cores the server needs.',
  },
  {
    id: 'ws', target: 'ws', mode: 'batch', label: 'node ws peer', pub: BATCH_PUB,
    describe: '`bench/peers/ws-server.mjs`, the same event objects with `POST /publish/batch`; no gate (the peer delivers whatever it is given).',
  },
  {
    id: 'socketio', target: 'socketio', mode: 'batch', label: 'Socket.IO peer', pub: BATCH_PUB,
    describe: '`bench/peers/socketio-server.mjs`, as the ws peer; each event is `emit("event", …)` to the user\'s room.',
  },
  {
    id: 'nchan', target: 'nchan', mode: 'batch', label: 'nchan', pub: NCHAN_PUB,
    describe: 'nginx + nchan (`bench/peers/nchan.sh`), one `POST /pub/<user>` per event (no batch endpoint), 32 in flight on each of 8 connections; no gate, no authentication.',
  },
];

// ---- command line ----------------------------------------------------------------

function usage(err) {
  const text = `usage: node bench/agents.mjs [--quick] [--only ${SETUPS.map((s) => s.id).join(',')}]
                          [--users N] [--exec-users N[,N]] [--duration-ms MS] [--wait-idle-ms MS]
                          [--server-args 'ARGS'] [--json FILE] [--md FILE]
                          [--agentwire BIN] [--client BIN] [--agent BIN]
  --quick        ${QUICK.users} users, ${QUICK.durationMs / 1000} s per setup (about 20 s in all): checks delivery, figures say little
  (default)      ${FULL.users} users (exec: ${FULL.execUsers.join(' and ')}), ${FULL.durationMs / 1000} s per setup (about 5 minutes in all)
  --users N      users (= concurrent runs) of the batch setups   --exec-users N[,N...]  of the exec setup(s)
  --duration-ms  streaming time per setup
  --wait-idle-ms before each setup, wait at most this long for the machine to be idle [full: ${FULL.waitIdleMs}, quick: 0]
  --server-args 'ARGS'  more options for agentwire (e.g. '--threads 1')
  --json FILE    write every setup's result, metrics and commands as JSON
  --md FILE      write a markdown section for docs/benchmarks.md
Exit status: 0 every setup delivered exactly, 1 a setup failed, lost, doubled or misrouted an event, 2 usage.`;
  if (err) {
    process.stderr.write(`${err}\n${text}\n`);
    process.exit(2);
  }
  process.stdout.write(`${text}\n`);
  process.exit(0);
}

function parseCli(argv) {
  const o = { quick: false, only: null, json: null, md: null, users: null, execUsers: null, durationMs: null, waitIdleMs: null, serverArgs: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    const int = (min, max) => {
      const v = Number(val());
      if (!Number.isInteger(v) || v < min || v > max) usage(`${a}: expected an integer from ${min} to ${max}`);
      return v;
    };
    if (a === '--quick') o.quick = true;
    else if (a === '--only') o.only = val().split(',').map((s) => s.trim()).filter(Boolean);
    else if (a === '--json') o.json = resolve(val());
    else if (a === '--md') o.md = resolve(val());
    else if (a === '--users') o.users = int(1, 100000);
    else if (a === '--exec-users') {
      o.execUsers = val().split(',').map(Number);
      if (!o.execUsers.every((v) => Number.isInteger(v) && v >= 1 && v <= 100000)) usage(`${a}: expected integers from 1 to 100000`);
    } else if (a === '--wait-idle-ms') o.waitIdleMs = int(0, 600000);
    else if (a === '--duration-ms') o.durationMs = int(500, 600000);
    else if (a === '--agentwire') useAgentwireBinary((o.agentwire = resolve(val())));
    else if (a === '--server-args') o.serverArgs = val().split(/\s+/).filter(Boolean);
    else if (a === '--client') o.client = resolve(val());
    else if (a === '--agent') o.agent = resolve(val());
    else if (a === '--help' || a === '-h') usage(null);
    else usage(`unknown option ${a}`);
  }
  for (const id of o.only ?? []) if (!SETUPS.some((s) => s.id === id)) usage(`--only: unknown setup ${id}`);
  return o;
}

// ---- one setup -------------------------------------------------------------------

function clientArgs(setup, cfg, users) {
  const a = {
    target: setup.target, mode: setup.mode, port: '$PORT', users,
    'duration-ms': cfg.durationMs, 'run-min-ms': cfg.runMinMs, 'run-max-ms': cfg.runMaxMs,
    'rate-min': cfg.rateMin, 'rate-max': cfg.rateMax, 'bytes-min': cfg.bytesMin, 'bytes-max': cfg.bytesMax,
    'tool-permille': cfg.toolPermille, 'think-permille': cfg.thinkPermille,
    'gap-max-ms': cfg.gapMaxMs, 'stagger-ms': cfg.staggerMs,
    ...(setup.pub ?? {}),
  };
  if (setup.target !== 'nchan') a['jwt-secret'] = '$SECRET';
  if (setup.mode === 'batch' && setup.target !== 'nchan') a['api-key'] = '$KEY';
  return a;
}

const toArgv = (args, subst = {}) => Object.entries(args).flatMap(([k, v]) => [`--${k}`, String(subst[v] ?? v)]);

function execSpec(agentBin) {
  if (!/^[A-Za-z0-9_./+-]+$/.test(agentBin)) throw new Error(`the agent path ${agentBin} needs shell quoting; use a plainer path`);
  return `exec:${agentBin}`;
}

// Runs the client; samples CPU at its two phase lines. Returns what it printed.
async function runClient(bin, argv, { boundMs, onPhase }) {
  const child = spawnGroup(bin, [...argv, '--sync'], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
  child.stdin.on('error', () => {});
  let out = '';
  let errTail = '';
  let errLine = '';
  let result = null;
  const pending = [];
  child.stdout.on('data', (d) => {
    out += d;
    let nl;
    while ((nl = out.indexOf('\n')) >= 0) {
      const line = out.slice(0, nl).trim();
      out = out.slice(nl + 1);
      if (!line.startsWith('{')) continue;
      let j;
      try { j = JSON.parse(line); } catch { continue; }
      if (j.phase) {
        pending.push(Promise.resolve().then(() => onPhase(j.phase, child.pid)).catch((e) => {
          process.stderr.write(`agents: sampling failed: ${e.message}\n`);
        }).finally(() => { try { child.stdin.write('\n'); } catch { /* gone */ } }));
      } else {
        result = j;
      }
    }
  });
  child.stderr.on('data', (d) => {
    errTail = (errTail + d).slice(-4000);
    errLine += d;
    let nl;
    while ((nl = errLine.indexOf('\n')) >= 0) {
      process.stderr.write(`    ${errLine.slice(0, nl)}\n`);
      errLine = errLine.slice(nl + 1);
    }
  });
  let timedOut = false;
  const timer = setTimeout(() => { timedOut = true; stopGroup(child, 2000); }, boundMs);
  const ex = await child.exited;
  clearTimeout(timer);
  await Promise.all(pending);
  const tail = errTail.trim().split('\n').slice(-4).join(' | ');
  if (ex?.error) throw new Error(`the client could not start: ${ex.error.message}`);
  if (timedOut) throw new Error(`the client was stopped after ${Math.round(boundMs / 1000)} s${tail ? `: ${tail}` : ''}`);
  if (ex?.code !== 0) throw new Error(`the client exited with ${ex?.code ?? ex?.signal}${tail ? `: ${tail}` : ''}`);
  if (!result) throw new Error(`the client printed no result${tail ? `: ${tail}` : ''}`);
  return { result, stderrTail: errTail.trim().split('\n').slice(-12).join('\n') };
}

function problemsOf(setup, r, w) {
  const p = [];
  const n = (k) => (typeof r[k] === 'number' ? r[k] : 0);
  for (const [k, what] of [
    ['connect_failed', 'connections failed'], ['closed_by_server', 'connections closed by the server'],
    ['lost', 'events lost'], ['duplicates', 'events received twice'], ['misrouted', 'events of another user'],
    ['wrong_run', 'events of another run'], ['gaps', 'gaps in a user\'s event order'], ['seq_errors', 'seq gaps'],
    ['bad_frames', 'unreadable events'], ['publish_errors', 'events refused by the server'],
    ['runs_failed', 'runs ended by the server (agent failed)'], ['server_errors', 'error messages from the server'],
    ['unsent', 'events never sent'],
  ]) if (n(k) > 0) p.push(`${r[k]} ${what}`);
  if (r.timed_out) p.push('the client reached its --timeout-ms');
  const why = Object.entries(r.close_reasons ?? {}).map(([k, v]) => `${v}× ${k}`).join(', ');
  if (why) p.push(`(${why})`);
  if (setup.target === 'nchan' && n('nchan_no_subscriber') > 0) p.push(`${r.nchan_no_subscriber} publishes found no subscriber`);
  if (!w) p.push('no CPU sample');
  return p;
}

// A peer that could not carry the load within the client's bound: the
// client reached --timeout-ms with events still unsent, and what is missing
// is those and the ones in flight, nothing else (no duplicate, no event out
// of order or to another user, no error answer, no connection lost). That
// is a capacity figure, shown as such; it fails nothing. agentwire's setups
// get no such allowance.
function overloadOnly(setup, r) {
  if (setup.target === 'agentwire' || !r.timed_out || !(r.unsent > 0)) return false;
  const zero = (k) => !(typeof r[k] === 'number' && r[k] > 0);
  return ['connect_failed', 'closed_by_server', 'duplicates', 'misrouted', 'wrong_run', 'gaps', 'seq_errors',
    'bad_frames', 'publish_errors', 'runs_failed', 'server_errors'].every(zero);
}

async function runSetup(setup, cfg, ctx) {
  const users = setup.users ?? cfg.users;
  const args = clientArgs(setup, cfg, users);
  const extra = [
    ...(setup.mode === 'exec' ? ['--agent', execSpec(ctx.agentBin), '--agent-name', 'bench'] : []),
    ...(setup.target === 'agentwire' ? ctx.serverArgs : []),
  ];
  const rec = {
    id: setup.id, label: setup.label, target: setup.target, mode: setup.mode, describe: setup.describe, users,
    serverCommand: `${serverCommand(setup.target)}${setup.mode === 'exec' ? ' --agent exec:build/bench/aw-agentexec --agent-name bench' : ''}${setup.target === 'agentwire' && ctx.serverArgs.length ? ` ${ctx.serverArgs.join(' ')}` : ''}`,
    clientCommand: ['build/bench/aw-agentload', ...toArgv(args)].join(' '),
  };
  let server;
  try {
    server = await startServer(setup.target, { secret: ctx.secret, apiKey: ctx.apiKey, extraArgs: extra });
    await sleep(200);
    const argv = toArgv(args, { $PORT: server.port, $SECRET: ctx.secret, $KEY: ctx.apiKey });
    const samples = {};
    const agentsAreChildren = setup.mode === 'exec';
    const onPhase = async (phase, clientPid) => {
      if (phase === 'connected') {
        samples.start = sampleAll({ serverPid: server.pid, clientPid, agentsAreChildren });
      } else if (phase === 'streamed') {
        if (agentsAreChildren) await waitNoChildren(server.pid, 3000);
        samples.end = sampleAll({ serverPid: server.pid, clientPid, agentsAreChildren });
        if (samples.end.live_agents > 0) rec.note = `${samples.end.live_agents} agent processes still alive at the end`;
      }
    };
    const boundMs = cfg.durationMs + 120_000;
    const { result: r, stderrTail } = await runClient(ctx.clientBin, argv, { boundMs, onPhase });
    if (!server.alive()) throw new Error(`the server exited during the run${server.exitNote()}`);
    rec.result = r;
    const w = samples.start && samples.end ? window(samples.start, samples.end) : null;
    const received = r.received || 0;
    const m = {
      lost: r.lost, duplicates: r.duplicates, misrouted: (r.misrouted || 0) + (r.wrong_run || 0),
    };
    if (w) {
      m.window_s = w.wall_s;
      m.server_cpu_s = w.server_cpu_s;
      m.server_cpu_pct = (w.server_cpu_s / w.wall_s) * 100;
      m.client_cpu_s = w.client_cpu_s;
      m.client_cpu_pct = (w.client_cpu_s / w.wall_s) * 100;
      m.other_cpu_pct = (w.other_cpu_s / w.wall_s) * 100;
      m.machine_cores = w.cores;
      m.server_rss_mb = w.server_rss_kb / 1024;
      if (received > 0) {
        m.server_us_per_delivery = (w.server_cpu_s / received) * 1e6;
        m.client_us_per_delivery = (w.client_cpu_s / received) * 1e6;
      }
      if (setup.mode === 'exec') {
        m.agents_cpu_s = w.agents_cpu_s;
        m.agents_cpu_pct = (w.agents_cpu_s / w.wall_s) * 100;
        const printed = (r.events_published || 0) - (r.runs_started || 0);
        if (printed > 0) m.agents_us_per_event = (w.agents_cpu_s / printed) * 1e6;
      }
    }
    rec.metrics = m;
    rec.problems = problemsOf(setup, r, w);
    rec.overloaded = overloadOnly(setup, r);
    if (rec.problems.length) rec.client_stderr = stderrTail;
  } catch (err) {
    rec.error = String(err.message ?? err).replace(/\s+/g, ' ').slice(0, 600);
    rec.problems = [rec.error];
  } finally {
    if (server) await server.stop();
  }
  return rec;
}

// ---- main ------------------------------------------------------------------------

// Other work on the machine (another benchmark, a build) skews every figure:
// wait, bounded, until less than a quarter of a core is busy for a second.
async function waitIdle(boundMs) {
  const end = Date.now() + boundMs;
  let said = false;
  for (;;) {
    const a = sampleAll({ serverPid: process.pid, clientPid: 0, agentsAreChildren: false });
    await sleep(1000);
    const b = sampleAll({ serverPid: process.pid, clientPid: 0, agentsAreChildren: false });
    const busy = (b.machine.busy_s - a.machine.busy_s) / ((b.t - a.t) / 1000);
    if (busy < 0.25) return;
    if (Date.now() > end) {
      process.stderr.write(`agents: the machine is still busy (${busy.toFixed(2)} cores used by other processes); going on\n`);
      return;
    }
    if (!said) process.stderr.write(`agents: the machine is busy (${busy.toFixed(2)} cores used by other processes); waiting up to ${Math.round(boundMs / 1000)} s\n`);
    said = true;
  }
}

function machine() {
  const cpuModel = (() => {
    try { return readFileSync('/proc/cpuinfo', 'utf8').match(/^model name\s*:\s*(.*)$/m)?.[1] ?? '?'; } catch { return '?'; }
  })();
  let version = '?';
  try {
    version = execFileSync(process.env.AGENTWIRE_BIN_USED ?? AGENTWIRE_BIN, ['--version'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  } catch { /* not built */ }
  return { cpus: cpus().length, cpu: cpuModel, node: process.version, agentwire: version };
}

async function main() {
  const t0 = Date.now();
  const cli = parseCli(process.argv.slice(2));
  const cfg = { ...(cli.quick ? QUICK : FULL) };
  if (cli.users) cfg.users = cli.users;
  if (cli.execUsers) cfg.execUsers = cli.execUsers;
  else if (cli.users) cfg.execUsers = [...new Set(cfg.execUsers.map((n) => Math.min(n, cli.users)))];
  if (cli.durationMs) cfg.durationMs = cli.durationMs;
  if (cli.waitIdleMs !== null) cfg.waitIdleMs = cli.waitIdleMs;
  const clientBin = cli.client ?? process.env.AW_AGENTLOAD_BIN ?? join(ROOT, 'build/bench/aw-agentload');
  const agentBin = cli.agent ?? process.env.AW_AGENTEXEC_BIN ?? join(ROOT, 'build/bench/aw-agentexec');
  const agentwireBin = cli.agentwire ?? AGENTWIRE_BIN;
  process.env.AGENTWIRE_BIN_USED = agentwireBin;
  const missing = [];
  if (!existsSync(clientBin)) missing.push(clientBin);
  let setups = SETUPS.filter((s) => !cli.only || cli.only.includes(s.id)).flatMap((s) => {
    if (s.mode !== 'exec') return [s];
    return cfg.execUsers.map((n) => ({
      ...s, users: n, id: cfg.execUsers.length > 1 ? `${s.id}-${n}` : s.id,
      label: cfg.execUsers.length > 1 ? `${s.label}, ${n.toLocaleString('en-US')} runs` : s.label,
    }));
  });
  if (setups.some((s) => s.mode === 'exec') && !existsSync(agentBin)) missing.push(agentBin);
  if (missing.length) {
    process.stderr.write(`agents: missing ${missing.join(', ')}\n  build: cmake --build build --target aw-agentload aw-agentexec\n  or:    cc -O2 -D_GNU_SOURCE -o build/bench/aw-agentload bench/agentload.c bench/loadgen_util.c -lcrypto -lm && cc -O2 -o build/bench/aw-agentexec bench/agentexec.c\n`);
    process.exit(1);
  }
  const skipped = [];
  setups = setups.filter((s) => {
    const why = s.target === 'agentwire' ? (existsSync(agentwireBin) ? null : `${agentwireBin} not built`) : unavailable(s.target);
    if (why) skipped.push(`${s.label}: ${why}`);
    return !why;
  });
  for (const s of skipped) process.stderr.write(`agents: skipped ${s}\n`);
  if (!setups.length) {
    process.stderr.write('agents: no setup can run\n');
    process.exit(1);
  }
  const ctx = {
    secret: randomBytes(16).toString('hex'), apiKey: randomBytes(16).toString('hex'), clientBin, agentBin,
    serverArgs: cli.serverArgs ?? [],
  };
  process.stderr.write(`agents: ${setups.length} setups, ${cfg.users} users (exec ${cfg.execUsers.join(', ')}), ${cfg.durationMs / 1000} s each${cli.quick ? ' (quick)' : ''}; agentwire ${agentwireBin}\n`);
  const results = [];
  for (const s of setups) {
    const t = Date.now();
    if (cfg.waitIdleMs > 0) await waitIdle(cfg.waitIdleMs);
    process.stderr.write(`agents: ${s.id} ...\n`);
    const rec = await runSetup(s, cfg, ctx);
    results.push(rec);
    const r = rec.result;
    process.stderr.write(`agents: ${s.id}: ${rec.error ? `FAILED: ${rec.error}` : `${Math.round(r.deliveries_per_s)} deliveries/s, p99 ${(r.latency_us.p99 / 1000).toFixed(2)} ms, server ${rec.metrics.server_us_per_delivery?.toFixed(1) ?? '?'} µs/delivery`} (${((Date.now() - t) / 1000).toFixed(1)} s)\n`);
    if (rec.problems?.length && !rec.error) process.stderr.write(`agents:   problems: ${rec.problems.join('; ')}\n`);
  }
  const elapsed = (Date.now() - t0) / 1000;
  const meta = {
    generated: new Date().toISOString(), quick: cli.quick, argv: process.argv.slice(2), elapsed_s: elapsed,
    machine: machine(), skipped, config: cfg,
    notes: [
      'All processes share the machine\'s cores: the client\'s CPU (shown) is CPU the server did not get, and the exec setup\'s agents compete with both.',
      `One run per setup, ${cfg.durationMs / 1000} s: the figures move from run to run by more than the differences between close setups (see *other CPU*).`,
      'agentwire checks each run\'s order (the run gate) and keeps every user\'s history for resume; the peers do neither, and nchan checks no token and no key.',
      `The exec setup runs one agent process per run (${cfg.execUsers.map(fmtUsers).join(' and ')} at once, a new one for every run, started directly by posix_spawn): starting them, not the event rate, is its limit (see *Exec agent start*).`,
      'Latency is measured from the moment the publisher wrote the event (batch setups: the request that carried it; exec: the agent\'s line on its pipe); the time an event waits in the client for the next flush (at most 5 ms) is shown as lag, not as latency.',
    ],
  };
  process.stdout.write(`\n${textTable(results)}\n\n`);
  if (cli.json) {
    writeFileSync(cli.json, `${JSON.stringify({ meta, setups: results }, null, 1)}\n`);
    process.stderr.write(`agents: results ${cli.json}\n`);
  }
  if (cli.md) {
    writeFileSync(cli.md, markdown({ meta, setups: results, cfg }));
    process.stderr.write(`agents: markdown ${cli.md}\n`);
  }
  const bad = results.filter((r) => r.error || (r.problems?.length && !r.overloaded));
  for (const r of results.filter((x) => x.overloaded)) {
    process.stderr.write(`agents: ${r.id} could not carry the load within the client's bound (not a failure): ${r.problems.join('; ')}\n`);
  }
  if (bad.length) {
    process.stderr.write(`agents: FAILED\n${bad.map((r) => `  ${r.id}: ${r.problems.join('; ')}`).join('\n')}\n`);
    process.exitCode = 1;
  } else {
    process.stderr.write(`agents: ok, every subscriber got exactly its own events in order (${elapsed.toFixed(0)} s)\n`);
  }
}

const fmtUsers = (n) => n.toLocaleString('en-US');

let stopping = false;
async function onSignal(sig) {
  if (stopping) return;
  stopping = true;
  process.stderr.write(`agents: ${sig}, stopping the servers and the client\n`);
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
});

main().catch(async (err) => {
  process.stderr.write(`agents: ${err.stack ?? err}\n`);
  await stopAll();
  process.exit(1);
});
