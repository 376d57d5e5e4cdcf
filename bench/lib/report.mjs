// The generated report: machine, commands, tables of absolute figures, ratios
// against each peer, the issue's goals, gnuplot plots, then bench/notes.md.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { basename, dirname, join, relative } from 'node:path';
import { ROOT, serverCommand, TARGETS } from './servers.mjs';

const PEERS = TARGETS.filter((t) => t !== 'agentwire');
const LABEL = { agentwire: 'agentwire', nchan: 'nchan (nginx)', ws: 'node ws', socketio: 'Socket.IO' };

// ---- machine -----------------------------------------------------------------

function sh(cmd, args, { stderr = false } = {}) {
  try {
    const r = execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: ROOT, encoding: 'utf8' });
    return r.trim();
  } catch (err) {
    if (stderr && err.stderr) return String(err.stderr).trim();
    return null;
  }
}

function shBoth(cmd, args) {
  // nginx -v prints to stderr and exits 0
  try {
    const out = execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', cwd: ROOT });
    return out.trim();
  } catch (err) {
    return (String(err.stderr ?? '') + String(err.stdout ?? '')).trim() || null;
  }
}

function readOr(file, fallback = '') {
  try { return readFileSync(file, 'utf8'); } catch { return fallback; }
}

function pkgVersion(name) {
  try { return JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8')).version; } catch { return null; }
}

export function machineInfo() {
  const cpuinfo = readOr('/proc/cpuinfo');
  const mem = readOr('/proc/meminfo').match(/^MemTotal:\s+(\d+) kB/m);
  const limits = readOr('/proc/self/limits').match(/^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m);
  const osRelease = readOr('/etc/os-release').match(/^PRETTY_NAME="?([^"\n]*)"?/m);
  let nginxV = null;
  try {
    const r = execFileSync('nginx', ['-v'], { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
    nginxV = r.trim() || null;
  } catch (err) { nginxV = String(err.stderr ?? '').trim() || null; }
  if (!nginxV) nginxV = shBoth('sh', ['-c', 'nginx -v 2>&1']);
  const commit = sh('git', ['rev-parse', '--short=12', 'HEAD']);
  const dirty = sh('git', ['status', '--porcelain', '--untracked-files=no', '--', 'src']);
  return {
    cpu: cpuinfo.match(/^model name\s*:\s*(.*)$/m)?.[1]?.trim() ?? 'unknown',
    cores: os.availableParallelism?.() ?? os.cpus().length,
    nproc: sh('nproc', []),
    mem_total_kb: mem ? Number(mem[1]) : null,
    kernel: sh('uname', ['-r']),
    os: osRelease?.[1] ?? null,
    fd_soft: limits?.[1] ?? null,
    fd_hard: limits?.[2] ?? null,
    somaxconn: readOr('/proc/sys/net/core/somaxconn').trim() || null,
    port_range: readOr('/proc/sys/net/ipv4/ip_local_port_range').trim().replace(/\s+/, '–') || null,
    versions: {
      agentwire: commit ? `${commit}${dirty ? ' (with uncommitted changes in src/)' : ''}` : null,
      agentwire_version: sh(join(ROOT, 'build/agentwire'), ['--version']),
      agentwire_built: (() => { try { return statSync(join(ROOT, 'build/agentwire')).mtime.toISOString(); } catch { return null; } })(),
      nginx: nginxV?.replace(/^nginx version:\s*/, '') ?? null,
      nchan: sh('dpkg-query', ['-W', '-f=${Version}', 'libnginx-mod-nchan']),
      node: process.version,
      ws: pkgVersion('ws'),
      socketio: pkgVersion('socket.io'),
      gnuplot: sh('gnuplot', ['--version']),
      cc: sh('cc', ['--version'])?.split('\n')[0] ?? null,
    },
  };
}

// ---- formatting --------------------------------------------------------------

const isNum = (x) => typeof x === 'number' && Number.isFinite(x);
function int(x) {
  if (!isNum(x)) return '–';
  return Math.round(x).toLocaleString('en-US');
}
function fix(x, d = 2) {
  if (!isNum(x)) return '–';
  return x.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d });
}
function sig(x) {
  // three significant figures, for CPU seconds per million and the like
  if (!isNum(x)) return '–';
  if (x === 0) return '0';
  const d = Math.max(0, 2 - Math.floor(Math.log10(Math.abs(x))));
  return fix(x, Math.min(d, 4));
}
function ratio(x) {
  if (!isNum(x) || x <= 0) return '–';
  return `${x >= 10 ? fix(x, 1) : fix(x, 2)}×`;
}
const kib = (bytes) => (isNum(bytes) ? `${fix(bytes / 1024, 2)} KiB` : '–');
const mib = (kb) => (isNum(kb) ? fix(kb / 1024, 1) : '–');

function table(head, rows) {
  const out = [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`];
  for (const r of rows) {
    // a case that cannot run says why once, not in every column
    const cells = r.map((x, i) => (i > 0 && String(x).startsWith('n/a: ') && x === r.find((y) => String(y).startsWith('n/a: ')) && r.indexOf(x) < i ? '' : x));
    out.push(`| ${cells.join(' | ')} |`);
  }
  return out.join('\n');
}

// ---- report ------------------------------------------------------------------

export async function writeReport({ meta, cases, outFile, plotDir, resultsFile, cfg }) {
  const warnings = [];
  const notes = [];
  const noteFor = (c, text) => {
    notes.push(`${c.id}: ${text}`);
    return notes.length;
  };
  const find = (pred) => cases.find(pred);
  const byGroup = (g) => cases.filter((c) => c.group === g);
  const present = (g) => byGroup(g).length > 0;

  // A cell: the median, or why there is none; a footnote mark when a run had problems.
  const cell = (c, fmt, key) => {
    if (!c) return '–';
    if (c.na) return `n/a: ${c.na}`;
    if (c.error) return `failed [${noteFor(c, c.error)}]`;
    const v = fmt(c.median?.[key]);
    return v;
  };
  const flagged = (c) => {
    if (!c || c.na || c.error) return '';
    const lost = c.lost ?? {};
    const parts = [];
    for (const [k, label] of [['missing', 'missing'], ['order_errors', 'out of order'], ['cross_user', 'to another user'],
      ['duplicates', 'duplicated'], ['publish_errors', 'publish errors'], ['connect_failed', 'connections failed']]) {
      if (lost[k] > 0) parts.push(`${int(lost[k])} ${label}`);
    }
    const failedRuns = c.runs.filter((r) => !r.ok);
    if (failedRuns.length) parts.push(`${failedRuns.length} of ${c.runs.length} runs failed [${noteFor(c, failedRuns[0].error)}]`);
    const other = (c.problems ?? []).filter((p) => !/missing|order errors|cross-user|duplicates|publish errors|connections failed/.test(p)
      && !failedRuns.some((r) => r.error === p));
    if (other.length) parts.push(`[${noteFor(c, other.join('; '))}]`);
    if (!parts.length) return 'none';
    const okRuns = c.runs.filter((r) => r.ok);
    const bad = okRuns.filter((r) => (r.problems ?? []).length).length;
    let text = parts.join(', ');
    if (bad && c.runs.length > 1) text = `${bad} of ${c.runs.length} runs: ${text}`;
    if (isNum(c.median_runs) && c.median_runs < okRuns.length) {
      text += `; the figures are the median of the ${c.median_runs} run${c.median_runs > 1 ? 's' : ''} without problems`;
    }
    return text;
  };
  const med = (c, k) => (c && !c.na && !c.error ? c.median?.[k] : undefined);

  const m = meta.machine;
  const v = m.versions;
  const L = [];
  L.push('# agentwire benchmarks');
  L.push('');
  L.push(`Generated by \`${meta.smoke ? 'node bench/run.mjs --smoke' : 'make bench'}\`${meta.argv.length && !meta.smoke ? ` (\`node bench/run.mjs ${meta.argv.join(' ')}\`)` : ''} on ${meta.generated.slice(0, 10)}; `
    + `${meta.elapsed_s >= 120 ? `${fix(meta.elapsed_s / 60, 0)} minutes` : `${fix(meta.elapsed_s, 0)} s`}. `
    + `agentwire against the servers people would otherwise pick, side by side in one run, on one machine, over loopback. `
    + `Every figure is the **median of ${meta.repeat} run${meta.repeat > 1 ? 's' : ''}** (each figure separately${meta.bound_runs ? `; the latency-bound table: of ${meta.bound_runs} search${meta.bound_runs > 1 ? 'es' : ''}` : ''}), each run against a freshly started server. `
    + `Raw results: [\`${relative(dirname(outFile), resultsFile)}\`](${relative(dirname(outFile), resultsFile)}).`);
  L.push('');
  if (meta.smoke) {
    L.push('**Smoke run**: tiny sizes, one run each; it checks that everything works, the numbers mean nothing.');
    L.push('');
  }
  const skippedEntries = Object.entries(meta.skipped ?? {});
  if (skippedEntries.length) {
    L.push(`Not run here: ${skippedEntries.map(([t, why]) => `${LABEL[t]} (${why})`).join('; ')}.`);
    L.push('');
  }
  L.push('Contents: '
    + `${present('bound') ? '[throughput at a latency bound](#throughput-at-a-latency-bound) · ' : ''}`
    + '[goals](#the-goals-of-the-issue) · [ratios](#ratios-agentwire-against-each-peer) · '
    + '[machine](#machine) · [commands](#commands) · [a) fan-out, maximum rate](#a-fan-out-at-the-maximum-rate) · '
    + '[b) fixed rate](#b-fan-out-at-a-fixed-rate-latency) · [c) idle memory](#c-idle-memory) · '
    + '[d) storms](#d-connection-storm-and-reconnect-storm) · [e) 64 KiB events](#e-large-events-64-kib) · [f) echo](#f-echo) · [notes](#notes)');
  L.push('');

  // ---- goals ----
  const goalRows = [];
  const aMax = (t, n) => find((c) => c.group === 'fanout-max' && c.target === t && c.conns === n);
  const fanConns = [...new Set(byGroup('fanout-max').map((c) => c.conns))].sort((a, b) => a - b);
  const mark = (ok) => (ok === undefined ? '–' : ok ? '**met**' : '**not met**');
  const rat = (a, b) => (isNum(a) && isNum(b) && b > 0 ? a / b : undefined);
  // ---- l) the headline: throughput at a latency bound ----
  // (before the goals: the figure a user would run at)
  const boundCs = byGroup('bound');
  const bConns = [...new Set(boundCs.map((c) => c.conns))].sort((a, b) => a - b);
  const bFind = (t, n) => find((c) => c.group === 'bound' && c.target === t && c.conns === n);
  const bMed = (t, n) => med(bFind(t, n), 'deliveries_per_s');
  const bRuns = (c) => (c && !c.na ? (c.runs ?? []).filter((r) => r.ok) : []);
  const boundMs = isNum(cfg.boundP99Us) ? cfg.boundP99Us / 1000 : 50;
  const anyCapped = (c) => bRuns(c).some((r) => r.capped === 'lower bound');
  const bCell = (c) => {
    if (!c) return '–';
    if (c.na) return `n/a: ${c.na}`;
    if (c.error) return `failed [${noteFor(c, c.error)}]`;
    const v = c.median?.deliveries_per_s;
    return `${anyCapped(c) ? '≥ ' : ''}${int(v)}${c.budget_cut ? ` [${noteFor(c, c.budget_cut)}]` : ''}`;
  };
  const boundGoals = [];
  for (const [peer, goal] of [['ws', 3], ['nchan', 2]]) {
    const rs = bConns.map((n) => rat(bMed('agentwire', n), bMed(peer, n)));
    if (rs.every((r) => r === undefined)) continue;
    const defined = rs.filter(isNum);
    // a cell that is only a lower bound (a search that never failed) decides nothing
    const capped = bConns.some((n) => anyCapped(bFind('agentwire', n)) || anyCapped(bFind(peer, n)));
    const met = defined.length === bConns.length && defined.every((r) => r >= goal);
    boundGoals.push({ peer, goal, rs, met: capped ? undefined : met ? true : defined.some((r) => r < goal) ? false : undefined });
  }
  const BL = [];
  if (present('bound')) {
    const nRuns = meta.bound_runs ?? meta.repeat;
    // what the maximum-rate row costs in latency, when this run has it
    const aw = fanConns.map((n) => aMax('agentwire', n)).find((c) => isNum(med(c, 'p50_us')));
    const maxNote = aw ? ` (agentwire there: ${aw.modeLabel}, p50 ${fix(med(aw, 'p50_us') / 1000, 0)} ms and p99 ${fix(med(aw, 'p99_us') / 1000, 0)} ms at ${int(aw.conns)} connections)` : '';
    BL.push('## Throughput at a latency bound');
    BL.push('');
    BL.push(`**The highest delivered rate at which the p99 delivery latency stays under ${boundMs} ms**, with nothing lost, duplicated, reordered `
      + `or misrouted, and the publishing keeping up with the rate: U users × ${cfg.connsPerUser} connections each, every connection checking `
      + `every event of its user. Deliveries/s, **median of ${nRuns} search${nRuns > 1 ? 'es' : ''}** per cell (each search finds its own rate; `
      + 'every one of them is in the table further down). This is the headline: the maximum-rate rows of [a)](#a-fan-out-at-the-maximum-rate) '
      + `trade latency for throughput${maxNote}, which no user runs.`);
    BL.push('');
    const head = ['connections', ...TARGETS.map((t) => LABEL[t]), ...PEERS.map((p) => `agentwire ÷ ${LABEL[p]}`)];
    const rows = bConns.map((n) => [int(n), ...TARGETS.map((t) => (t === 'agentwire' ? `**${bCell(bFind(t, n))}**` : bCell(bFind(t, n)))),
      ...PEERS.map((p) => ratio(rat(bMed('agentwire', n), bMed(p, n))))]);
    BL.push(table(head, rows));
    BL.push('');
    if (boundGoals.length) {
      BL.push(table(['goal (this measure)', ...bConns.map((n) => `${int(n)} connections`), ''],
        boundGoals.map((g) => [`agentwire ≥ ${g.goal}× ${LABEL[g.peer]}`, ...g.rs.map((r) => (isNum(r) ? `${ratio(r)} ${r >= g.goal ? '(met)' : '(not met)'}` : '–')), mark(g.met)])));
      BL.push('');
    }
    const modes = TARGETS.map((t) => boundCs.find((c) => c.target === t && c.modeLabel)).filter(Boolean);
    BL.push(`How: each search is a series of steps; a step starts a **fresh server**, connects the clients, publishes at a fixed rate R `
      + `(events/s; deliveries/s = ${cfg.connsPerUser} R) for ${fix((cfg.boundStepMs ?? 2000) / 1000, 1)} s, waits for every delivery, and passes when `
      + `p99 < ${boundMs} ms, nothing is missing, duplicated, out of order or to another user, no connection was dropped, and the events were `
      + 'published at ≥ 95 % of R (a server that answers its publish requests late holds the events back in the load generator, where the '
      + `latency does not count them). R goes up ×${cfg.boundFirstFactor ?? 2} from ${int(cfg.boundStartRate)} events/s on the first search of a target `
      + `(×${cfg.boundSizeFactor ?? 1.5} from the smaller size's median on a larger size, ×${cfg.boundRunFactor ?? 1.2} from the median of the earlier `
      + `searches on the next searches; ÷ likewise while steps fail), then bisects between the highest passing and the lowest failing R until they `
      + `are within ${Math.round(((cfg.boundTolerance ?? 1.1) - 1) * 100)} %; the search's figure is the delivered rate (measured) of its highest `
      + `passing step, so it is at most ${Math.round(((cfg.boundTolerance ?? 1.1) - 1) * 100)} % below the true bound. The searches run in rounds `
      + '(search 1 of every cell, then search 2, ...), so that a slow spell of the shared machine does not fall on one target only.');
    BL.push('');
    BL.push(`Publish mode, the same in spirit for all: ${modes.map((c) => `${LABEL[c.target]}: ${c.modeLabel}`).join('; ')}. `
      + `A batch holds the events that came due in ${cfg.boundBatchWindowMs ?? 2} ms, so an event waits at most that long before its request is `
      + 'written; the latency is measured from the write (receive time − the publish time stamped in the event, CLOCK_MONOTONIC).');
    BL.push('');
    BL.push('Every search, sorted (deliveries/s); a cell whose searches fall into two groups (bimodal runs) shows it here:');
    BL.push('');
    const why = (c) => {
      const k = new Map();
      for (const r of bRuns(c)) {
        for (const st of r.steps ?? []) {
          if (st.pass) continue;
          const w = st.why[0] ?? '?';
          const kind = w.startsWith('p99') ? `p99 ≥ ${boundMs} ms` : w.startsWith('published') ? 'publishing fell behind'
            : w.startsWith('delivered') ? 'delivery fell behind' : /missing|closed/.test(w) ? 'events lost (overload)'
              : w.startsWith('timed out') ? 'timed out' : w.startsWith('error') ? 'error' : w;
          k.set(kind, (k.get(kind) ?? 0) + 1);
        }
      }
      return [...k.entries()].sort((a, b) => b[1] - a[1]).map(([w, n]) => `${w} (${n})`).join(', ') || '–';
    };
    const detailRow = (c) => {
      const runs = bRuns(c);
      const vals = runs.map((r) => r.metrics?.deliveries_per_s).filter(isNum).sort((a, b) => a - b);
      const lo = vals[0];
      const hi = vals[vals.length - 1];
      const problems = c.na ? '' : c.error ? '' : (c.problems ?? []).length ? `[${noteFor(c, c.problems.join('; '))}]` : 'none';
      return [LABEL[c.target], int(c.conns), bCell(c),
        vals.length ? vals.map((x) => int(x)).join(' · ') : '–',
        isNum(lo) && lo > 0 ? `${fix(hi / lo, 2)}×` : '–',
        cell(c, (x) => fix(x / 1000, 1), 'p99_us'), cell(c, int, 'rate'), cell(c, int, 'batch'), cell(c, sig, 'server_cpu_per_m'),
        cell(c, (x) => fix(x, 0), 'steps'), c.na || c.error ? '' : why(c), problems];
    };
    BL.push(table(['target', 'connections', 'median deliveries/s', 'every search (deliveries/s, sorted)', 'spread (max ÷ min)',
      'p99 at the found rate, ms (median)', 'found rate, events/s (median)', 'events per request (median)', 'server CPU s / M deliveries',
      'steps per search (median)', 'what the failing steps hit (steps)', 'lost, reordered, misrouted'],
    [...boundCs].sort((a, b) => a.conns - b.conns || TARGETS.indexOf(a.target) - TARGETS.indexOf(b.target)).map(detailRow)));
    BL.push('');
    BL.push('"Lost, reordered, misrouted" counts only what no overload excuses: events out of order, duplicated or to another user, and '
      + 'failed connections, in any step; a step past a server\'s capacity that dropped slow subscribers or lost events has failed the bound and is '
      + 'counted under what the failing steps hit.');
    BL.push('');
    const one = boundCs.find((c) => c.command && c.target === 'agentwire') ?? boundCs.find((c) => c.command);
    const only = meta.targets.length < TARGETS.length ? ` --only ${meta.targets.join(',')}` : '';
    const mins = isNum(meta.bound_s) ? ` (this run: ${fix(meta.bound_s / 60, 1)} minutes)` : '';
    BL.push('To reproduce:');
    BL.push('');
    BL.push('```sh');
    const sizes = bConns.join(',') !== '1000,5000,10000' && !meta.smoke ? ` --bound-conns ${bConns.join(',')}` : '';
    if (!meta.smoke) BL.push(`node bench/run.mjs --scenarios l${only}${nRuns !== 5 ? ` --repeat ${nRuns}` : ''}${sizes}   # this table alone${mins}`);
    BL.push(`node bench/run.mjs --smoke --scenarios l      # tiny and quick; fails on any lost, reordered or misrouted event${meta.smoke ? mins : ''}`);
    if (one) {
      BL.push(`# one step ($RATE events/s; $EVENTS = $RATE × ${fix((cfg.boundStepMs ?? 2000) / 1000, 1)}; $BATCH = max(1, round($RATE × ${(cfg.boundBatchWindowMs ?? 2) / 1000})), nchan: 1):`);
      BL.push(one.command);
    }
    BL.push('```');
    BL.push('');
  }
  for (const [peer, goal] of [['nchan', 2], ['ws', 3]]) {
    if (!present('fanout-max')) break;
    const rs = fanConns.map((n) => rat(med(aMax('agentwire', n), 'deliveries_per_s'), med(aMax(peer, n), 'deliveries_per_s')));
    if (rs.every((r) => r === undefined)) continue;
    const defined = rs.filter(isNum);
    goalRows.push([`delivered events/s ≥ ${goal}× ${peer === 'ws' ? 'the node ws server' : peer} (each in its best publish mode)`,
      fanConns.map((n, i) => `${ratio(rs[i])} at ${int(n)}`).join(', '),
      mark(defined.length ? defined.every((r) => r >= goal) : undefined)]);
  }
  for (const g of [...boundGoals].reverse()) {
    goalRows.unshift([`deliveries/s with p99 < ${isNum(cfg.boundP99Us) ? cfg.boundP99Us / 1000 : 50} ms ≥ ${g.goal}× ${g.peer === 'ws' ? 'the node ws server' : g.peer} (the headline measure)`,
      bConns.map((n, i) => `${ratio(g.rs[i])} at ${int(n)}`).join(', '), mark(g.met)]);
  }
  {
    const a = find((c) => c.group === 'fanout-one' && c.target === 'agentwire');
    const n = find((c) => c.group === 'fanout-one' && c.target === 'nchan');
    const r = rat(med(a, 'deliveries_per_s'), med(n, 'deliveries_per_s'));
    if (isNum(r)) goalRows.push(['delivered events/s ≥ 1.2× nchan, both publishing one event per request', ratio(r), mark(r >= 1.2)]);
  }
  {
    const a = find((c) => c.group === 'fixed' && c.target === 'agentwire');
    const n = find((c) => c.group === 'fixed' && c.target === 'nchan');
    const pa = med(a, 'p99_us');
    const pn = med(n, 'p99_us');
    if (isNum(pa) && isNum(pn)) goalRows.push([`p99 ≤ nchan's at a fixed rate every peer sustains (${int(cfg.fixedRate)} events/s, one event per request)`,
      `${int(pa)} µs against ${int(pn)} µs`, mark(pa <= pn)]);
  }
  for (const c of byGroup('idle').filter((x) => x.target === 'agentwire')) {
    const b = med(c, 'bytes_per_conn');
    if (isNum(b)) goalRows.push([`≤ 4 KiB user-space memory per idle connection (${int(c.conns)} idle)`, kib(b), mark(b <= 4096)]);
  }
  for (const bytes of [...new Set(byGroup('echo').map((c) => c.echoBytes))]) {
    const a = find((c) => c.group === 'echo' && c.target === 'agentwire' && c.echoBytes === bytes);
    const w = find((c) => c.group === 'echo' && c.target === 'ws' && c.echoBytes === bytes);
    const r = rat(med(a, 'msgs_per_s'), med(w, 'msgs_per_s'));
    if (isNum(r)) goalRows.push([`echo ≥ 10× node ws (${int(bytes)}-byte messages)`, ratio(r), mark(r >= 10)]);
  }
  {
    const idleA = byGroup('idle').filter((c) => c.target === 'agentwire' && !c.na && !c.error);
    const best = idleA.sort((a, b) => b.conns - a.conns)[0];
    if (best) {
      const conn = med(best, 'connected');
      goalRows.push([`as many live connections as one process's descriptor limit allows (hard limit ${m.fd_hard ?? '?'})`,
        `${int(conn)} idle connections held by one agentwire process`, mark(isNum(conn) ? conn >= best.conns : undefined)]);
    }
  }
  L.push(...BL);
  L.push('## The goals of the issue');
  L.push('');
  if (goalRows.length) {
    L.push(table(['goal', 'measured', ''], goalRows));
  } else {
    L.push('No goal could be checked in this run (the scenarios or targets it needs were not run).');
  }
  L.push('');

  // ---- ratios ----
  const rr = [];
  const higher = (title, get) => {
    const a = get('agentwire');
    const row = [title, 'higher'];
    let any = false;
    for (const p of PEERS) {
      const b = get(p);
      const r = rat(a, b);
      if (isNum(r)) any = true;
      row.push(ratio(r));
    }
    if (any) rr.push(row);
  };
  const lower = (title, get) => {
    const a = get('agentwire');
    const row = [title, 'lower'];
    let any = false;
    for (const p of PEERS) {
      const b = get(p);
      const r = rat(b, a);
      if (isNum(r)) any = true;
      row.push(ratio(r));
    }
    if (any) rr.push(row);
  };
  for (const n of bConns) higher(`l) deliveries/s with p99 < ${boundMs} ms, ${int(n)} connections (the headline)`, (t) => bMed(t, n));
  for (const n of fanConns) higher(`a) delivered events/s, ${int(n)} connections`, (t) => med(aMax(t, n), 'deliveries_per_s'));
  higher(`a) delivered events/s, one event per request`, (t) => med(find((c) => c.group === 'fanout-one' && c.target === t), 'deliveries_per_s'));
  for (const n of fanConns) lower(`a) server CPU s per million deliveries, ${int(n)} connections`, (t) => med(aMax(t, n), 'server_cpu_per_m'));
  for (const n of fanConns) lower(`a) p99 latency at the maximum rate, ${int(n)} connections`, (t) => med(aMax(t, n), 'p99_us'));
  const fx = (t) => find((c) => c.group === 'fixed' && c.target === t);
  lower(`b) p50 latency at ${int(cfg.fixedRate)} events/s, one event per request`, (t) => med(fx(t), 'p50_us'));
  lower(`b) p99 latency at ${int(cfg.fixedRate)} events/s, one event per request`, (t) => med(fx(t), 'p99_us'));
  lower(`b) p99.9 latency at ${int(cfg.fixedRate)} events/s, one event per request`, (t) => med(fx(t), 'p999_us'));
  lower(`b) server CPU s per million deliveries at ${int(cfg.fixedRate)} events/s`, (t) => med(fx(t), 'server_cpu_per_m'));
  const fxb = (t) => find((c) => c.group === 'fixed-batch' && c.target === t);
  lower(`b) p99 latency at ${int(cfg.fixedRate)} events/s, batches of 10`, (t) => med(fxb(t), 'p99_us'));
  for (const n of [...new Set(byGroup('idle').map((c) => c.conns))]) {
    lower(`c) memory per idle connection, ${int(n)} idle`, (t) => med(find((c) => c.group === 'idle' && c.target === t && c.conns === n), 'bytes_per_conn'));
  }
  higher('d) handshakes/s in a connection storm', (t) => med(find((c) => c.group === 'storm' && c.target === t), 'handshakes_per_s'));
  lower('d) server CPU per handshake', (t) => med(find((c) => c.group === 'storm' && c.target === t), 'server_cpu_us_per_handshake'));
  higher('e) delivered 64 KiB events/s', (t) => med(find((c) => c.group === 'large' && c.target === t), 'deliveries_per_s'));
  lower('e) server CPU s per million 64 KiB deliveries', (t) => med(find((c) => c.group === 'large' && c.target === t), 'server_cpu_per_m'));
  for (const bytes of [...new Set(byGroup('echo').map((c) => c.echoBytes))]) {
    higher(`f) echo messages/s, ${int(bytes)} bytes`, (t) => med(find((c) => c.group === 'echo' && c.target === t && c.echoBytes === bytes), 'msgs_per_s'));
    lower(`f) server CPU per echoed message, ${int(bytes)} bytes`, (t) => med(find((c) => c.group === 'echo' && c.target === t && c.echoBytes === bytes), 'server_cpu_per_m'));
  }
  L.push('## Ratios: agentwire against each peer');
  L.push('');
  L.push('Every ratio is written so that **above 1× means agentwire is better**: for figures where higher is better '
    + '(events/s, handshakes/s, messages/s) it is agentwire ÷ peer; for figures where **lower is better** '
    + '(latency, CPU, memory) it is peer ÷ agentwire. "–": not measured for that peer (see the tables for why).');
  L.push('');
  if (rr.length) L.push(table(['figure', 'better when', ...PEERS.map((p) => `vs ${LABEL[p]}`)], rr));
  else L.push('No ratio: agentwire and at least one peer must both run a scenario.');
  L.push('');

  // ---- machine ----
  L.push('## Machine');
  L.push('');
  L.push(table(['', ''], [
    ['CPU', `${m.cpu}, ${m.nproc ?? m.cores} cores (nproc)`],
    ['memory', m.mem_total_kb ? `${fix(m.mem_total_kb / 1024 / 1024, 1)} GiB (MemTotal)` : '?'],
    ['system', `${m.os ?? '?'}, Linux ${m.kernel ?? '?'}`],
    ['descriptors per process', `soft ${m.fd_soft ?? '?'}, hard ${m.fd_hard ?? '?'}`],
    ['net', `somaxconn ${m.somaxconn ?? '?'}, local ports ${m.port_range ?? '?'}, everything over 127.0.0.1`],
    ['agentwire', `commit ${v.agentwire ?? '?'}${v.agentwire_version ? ` (${v.agentwire_version})` : ''}, release build (scripts/build.sh release)`
      + `${v.agentwire_built ? ` of ${v.agentwire_built.slice(0, 16).replace('T', ' ')} UTC` : ''}${v.cc ? `, ${v.cc}` : ''}`],
    ['nginx', v.nginx ?? 'not installed'],
    ['nchan', v.nchan ? `libnginx-mod-nchan ${v.nchan}` : 'not installed'],
    ['node', v.node],
    ['ws', v.ws ?? '?'],
    ['socket.io', v.socketio ?? '?'],
    ['gnuplot', v.gnuplot ?? 'not installed'],
  ]));
  L.push('');
  L.push('The load generator (`build/bench/aw-loadgen`, C, epoll) runs on the same machine as the server and competes with '
    + 'it for the same cores, so every fan-out row shows the loadgen\'s CPU next to the server\'s.');
  L.push('');

  // ---- commands ----
  L.push('## Commands');
  L.push('');
  L.push('```sh');
  L.push('make bench            # = scripts/bench.sh: installs what is missing, builds release, runs node bench/run.mjs');
  L.push('make bench-smoke      # = scripts/bench.sh --smoke: every scenario once, tiny; fails on any lost event');
  L.push('node bench/run.mjs --only agentwire,nchan --scenarios a,b --repeat 1   # a subset');
  L.push('```');
  L.push('');
  L.push('Servers (one fresh process per run; `$SECRET`, `$KEY` random per benchmark, `$PORT` picked free):');
  L.push('');
  L.push('```sh');
  for (const t of TARGETS) if (meta.targets.includes(t)) L.push(serverCommand(t));
  L.push('```');
  L.push('');
  L.push('The load generator, per scenario (`$PORT` is the server\'s port of that run):');
  L.push('');
  const groupsOrder = [['l', 'bound'], ['a', 'fanout-max'], ['a', 'fanout-one'], ['a', 'loops'], ['b', 'fixed'], ['b', 'fixed-batch'], ['c', 'idle'], ['d', 'storm'], ['d', 'resume'], ['e', 'large'], ['f', 'echo']];
  L.push('```sh');
  for (const [s, g] of groupsOrder) {
    const cs = byGroup(g).filter((c) => c.command);
    if (!cs.length) continue;
    L.push(`# ${s}) ${g}`);
    for (const c of cs) L.push(c.command);
  }
  L.push('```');
  L.push('');

  // ---- plots ----
  const plots = await makePlots({ cases, plotDir, cfg, warnings });
  const img = (name, alt) => (plots.includes(name) ? `![${alt}](${relative(dirname(outFile), join(plotDir, name))})` : null);

  // ---- a ----
  L.push('## a) Fan-out at the maximum rate');
  L.push('');
  if (!present('fanout-max') && !present('fanout-one')) {
    L.push('Not run.');
  } else {
    L.push(`U users × ${cfg.connsPerUser} connections each; the loadgen publishes as fast as the server accepts, each target in its best publish mode `
      + '(agentwire and the node peers: their batch endpoint; nchan has none, so single POSTs pipelined on several keep-alive connections), '
      + 'and waits until every connection received every event of its user. Delivered events/s = deliveries ÷ (last delivery − first publish). '
      + 'Latency = receive time − publish time stamped in the event (both CLOCK_MONOTONIC of this machine). '
      + 'CPU seconds per million deliveries: the server\'s (utime + stime from /proc, nginx: master and workers) and the loadgen\'s.');
    L.push('');
    const headA = ['target', 'connections', 'publish mode', 'delivered events/s', 'p50 µs', 'p99 µs', 'p99.9 µs', 'server CPU s / M deliveries', 'loadgen CPU s / M deliveries', 'lost, reordered, misrouted'];
    const rowA = (c) => [LABEL[c.target], int(c.conns), c.modeLabel ?? '', cell(c, int, 'deliveries_per_s'), cell(c, int, 'p50_us'),
      cell(c, int, 'p99_us'), cell(c, int, 'p999_us'), cell(c, sig, 'server_cpu_per_m'), cell(c, sig, 'loadgen_cpu_per_m'), flagged(c)];
    if (present('fanout-max')) {
      L.push(table(headA, byGroup('fanout-max').map(rowA)));
      L.push('');
      const p = img('throughput.png', 'delivered events/s against connections');
      if (p) { L.push(p); L.push(''); }
    }
    if (present('fanout-one')) {
      L.push('**One event per request**: agentwire\'s single-event endpoint against nchan, the same publishers and pipelining:');
      L.push('');
      L.push(table(headA, byGroup('fanout-one').map(rowA)));
      L.push('');
    }
    if (present('loops')) {
      const flag = meta.loops_option ?? '--threads';
      const ls = byGroup('loops').map((c) => c.loops).join(' vs ');
      L.push(`**agentwire loops: ${ls}** (\`${flag} N\`; every other table runs agentwire's default, one event loop per core):`);
      L.push('');
      L.push(table(['event loops', 'connections', 'publish mode', 'delivered events/s', 'p50 µs', 'p99 µs', 'server CPU s / M deliveries', 'loadgen CPU s / M deliveries', 'lost, reordered, misrouted'],
        byGroup('loops').map((c) => [String(c.loops), int(c.conns), c.modeLabel ?? '', cell(c, int, 'deliveries_per_s'), cell(c, int, 'p50_us'), cell(c, int, 'p99_us'),
          cell(c, sig, 'server_cpu_per_m'), cell(c, sig, 'loadgen_cpu_per_m'), flagged(c)])));
      L.push('');
    }
    const windows = new Set(cases.filter((c) => c.kind === 'fanout' && c.median?.cpu_window).map((c) => c.median.cpu_window));
    if (windows.has('run')) {
      L.push('Server CPU counts the whole run, connection set-up included (the loadgen printed no phase line to start the count at the first publish).');
      L.push('');
    } else if (windows.size) {
      L.push('CPU (server and loadgen) counts from the end of the connect phase (the loadgen\'s progress line) to the end of the run: '
        + 'connection set-up is not in the per-delivery figures.');
      L.push('');
    }
  }

  // ---- b ----
  L.push('## b) Fan-out at a fixed rate: latency');
  L.push('');
  if (!present('fixed') && !present('fixed-batch')) {
    L.push('Not run.');
  } else {
    L.push(`${int(cfg.fixedRate)} events/s for ${cfg.fixedSeconds} s to ${int(cfg.fixedConns)} connections `
      + `(${int(cfg.fixedConns / cfg.connsPerUser)} users × ${cfg.connsPerUser}), so ${int(cfg.fixedRate * cfg.connsPerUser)} deliveries/s: `
      + 'a rate every peer sustains, so that the latencies compare servers that keep up.');
    L.push('');
    const headB = ['target', 'publish mode', 'delivered events/s', 'p50 µs', 'p99 µs', 'p99.9 µs', 'max µs', 'server CPU s / M deliveries', 'loadgen CPU s / M deliveries', 'lost, reordered, misrouted'];
    const rowB = (c) => [LABEL[c.target], c.modeLabel ?? '', cell(c, int, 'deliveries_per_s'), cell(c, int, 'p50_us'), cell(c, int, 'p99_us'),
      cell(c, int, 'p999_us'), cell(c, int, 'max_us'), cell(c, sig, 'server_cpu_per_m'), cell(c, sig, 'loadgen_cpu_per_m'), flagged(c)];
    if (present('fixed')) {
      L.push('Every target publishing one event per request, the same way (the comparison of the goal "p99 ≤ nchan\'s"):');
      L.push('');
      L.push(table(headB, byGroup('fixed').map(rowB)));
      L.push('');
    }
    if (present('fixed-batch')) {
      L.push('The same rate through the batch endpoints, in small batches:');
      L.push('');
      L.push(table(headB, byGroup('fixed-batch').map(rowB)));
      L.push('');
    }
    const p = img('latency.png', 'latency distribution at the fixed rate');
    if (p) {
      const fromHist = byGroup('fixed').some((c) => c.latency_hist);
      L.push(`Latency distribution, one event per request (${fromHist ? 'the loadgen\'s histograms, all runs merged' : 'the loadgen\'s percentiles p50, p90, p99, p99.9 and max, medians of the runs'}):`);
      L.push('');
      L.push(p);
      L.push('');
    }
  }

  // ---- c ----
  L.push('## c) Idle memory');
  L.push('');
  if (!present('idle')) {
    L.push('Not run.');
  } else {
    L.push('RSS per connection = (server RSS with N idle WebSocket connections − RSS before they connected) ÷ N: the user-space '
      + 'memory a connection costs (kernel socket buffers are not in RSS). nginx: master plus workers. Sampled about a second '
      + 'after the loadgen reported every connection up.');
    L.push('');
    L.push(table(['target', 'idle connections', 'RSS before, MiB', 'RSS with them, MiB', 'per connection', 'problems'],
      byGroup('idle').map((c) => [LABEL[c.target], int(c.conns), cell(c, mib, 'rss_before_kb'), cell(c, mib, 'rss_idle_kb'), cell(c, kib, 'bytes_per_conn'), flagged(c)])));
    L.push('');
    const hard = Number(m.fd_hard);
    if (isNum(hard)) {
      L.push(`**50,000 idle connections in one server process are impossible on this machine**: one process may hold at most ${int(hard)} descriptors `
        + '(the hard limit), and every connection is one. So the largest figure is taken just below that limit. '
        + 'nginx runs 2 worker processes, each with its own limit, so nchan alone could reach about twice as many; '
        + 'agentwire, one process, is measured at the limit of one process.');
      L.push('');
    }
    const p = img('memory.png', 'memory per idle connection');
    if (p) { L.push(p); L.push(''); }
  }

  // ---- d ----
  L.push('## d) Connection storm and reconnect storm');
  L.push('');
  if (!present('storm') && !present('resume')) {
    L.push('Not run.');
  } else {
    if (present('storm')) {
      L.push(`${int(cfg.stormConns)} connections opened with ${int(cfg.stormConcurrency)} handshakes in flight; handshakes/s = connections ready ÷ elapsed. `
        + 'A handshake is ready at the 101 (ws, nchan), the welcome message (agentwire) or the Socket.IO connect acknowledgement. '
        + 'agentwire, node ws and Socket.IO verify an HS256 JWT on every handshake; **nchan verifies nothing** (it has no JWT '
        + 'check without an auth subrequest to another server), so its figure is for an unauthenticated upgrade.'
        + (byGroup('storm').some((c) => c.jwtAlg === 'ES256')
          ? ' The ES256 row is agentwire verifying an ES256 JWT (ECDSA P-256, a public key) instead: a fresh key pair per run, '
            + 'the server started as `' + serverCommand('agentwire', { alg: 'ES256', publicKeyFile: '$PUBKEY' }) + '`, '
            + 'the tokens (same claims, signatures low-S) signed beforehand by node:crypto and sent by the loadgen from `--token-file`.'
          : ''));
      L.push('');
      L.push(table(['target', 'connections', 'JWT verified', 'handshakes/s', 'server CPU µs per handshake', 'problems'],
        byGroup('storm').map((c) => [LABEL[c.target], int(c.conns), c.target === 'nchan' ? 'no' : (c.jwtAlg ?? 'HS256'), cell(c, int, 'handshakes_per_s'),
          cell(c, int, 'server_cpu_us_per_handshake'), flagged(c)])));
      L.push('');
    }
    if (present('resume')) {
      L.push(`Reconnect storm: ${int(cfg.resumeConns)} connections receive ${cfg.resumeEventsPerUser} events per user, all close, `
        + `${cfg.resumeEventsPerUser} more events per user are published while they are away, and all reconnect with \`since\`/\`epoch\` `
        + `(${int(cfg.stormConcurrency)} in flight) and must receive every missed event, in order.`);
      L.push('');
      L.push(table(['target', 'connections', 'reconnects/s', 'replayed events/s', 'time until all caught up, s', 'problems'],
        byGroup('resume').map((c) => [LABEL[c.target], int(c.conns), cell(c, int, 'reconnects_per_s'), cell(c, int, 'replayed_per_s'),
          cell(c, (x) => fix(x, 2), 'resume_s'), c.na ? '' : flagged(c)])));
      L.push('');
    }
  }

  // ---- e ----
  L.push('## e) Large events (64 KiB)');
  L.push('');
  if (!present('large')) {
    L.push('Not run.');
  } else {
    const total = cfg.largeConns * cfg.largeEventsPerUser * cfg.largeBytes;
    L.push(`Events padded to ${int(cfg.largeBytes)} bytes, ${cfg.largeEventsPerUser} per user, to ${int(cfg.largeConns)} connections `
      + `(${int(cfg.largeConns / cfg.connsPerUser)} users × ${cfg.connsPerUser}): ${fix(total / 1e9, 1)} GB delivered per run. `
      + `Batches of ${cfg.largeBatch} (${fix(cfg.largeBatch * cfg.largeBytes / 1048576, 0)} MiB per request) where there is a batch endpoint.`);
    L.push('');
    L.push(table(['target', 'publish mode', 'delivered events/s', 'delivered MB/s', 'p50 µs', 'p99 µs', 'server CPU s / M deliveries', 'loadgen CPU s / M deliveries', 'lost, reordered, misrouted'],
      byGroup('large').map((c) => [LABEL[c.target], c.modeLabel ?? '', cell(c, int, 'deliveries_per_s'), cell(c, int, 'mb_per_s'), cell(c, int, 'p50_us'),
        cell(c, int, 'p99_us'), cell(c, sig, 'server_cpu_per_m'), cell(c, sig, 'loadgen_cpu_per_m'), flagged(c)])));
    L.push('');
  }

  // ---- f ----
  L.push('## f) Echo');
  L.push('');
  if (!present('echo')) {
    L.push('Not run.');
  } else {
    L.push(`${int(cfg.echoConns)} connections (fewer for the largest messages: see the table), each keeping a window of messages in flight, for ${fix(cfg.echoMs / 1000, 0)} s per size; `
      + 'agentwire with `--echo-path /echo` against the node ws peer\'s `/echo`. CPU in % of one core over the measuring time; '
      + 'with two cores, a server below 100 % while the loadgen is near it is waiting for the load generator.');
    L.push('');
    // spread between runs: max ÷ min of the runs without problems
    const spread = (c, k) => {
      if (!c || c.na || c.error) return '';
      const vals = (c.runs ?? []).filter((r) => r.ok).map((r) => r.metrics?.[k]).filter((x) => isNum(x) && x > 0);
      return vals.length > 1 ? `${fix(Math.max(...vals) / Math.min(...vals), 2)}×` : '–';
    };
    L.push(table(['target', 'message bytes', 'connections', 'in flight per connection', 'messages/s', 'spread of messages/s (max ÷ min)', 'MB/s (one way)', 'round trip p50 µs', 'p99 µs', 'server CPU %', 'loadgen CPU %',
      'server CPU s / M messages', 'spread of CPU / message (max ÷ min)', 'server CPU s / GB echoed', 'problems'],
    byGroup('echo').map((c) => [LABEL[c.target], int(c.echoBytes), int(c.conns), c.echoWindow ? String(c.echoWindow) : '', cell(c, int, 'msgs_per_s'), spread(c, 'msgs_per_s'),
      cell(c, (x) => fix(x, 1), 'mb_per_s'), cell(c, int, 'p50_us'), cell(c, int, 'p99_us'), cell(c, (x) => fix(x, 0), 'server_cpu_pct'), cell(c, (x) => fix(x, 0), 'loadgen_cpu_pct'),
      cell(c, sig, 'server_cpu_per_m'), spread(c, 'server_cpu_per_m'), cell(c, (x) => sig((x * 1e3) / c.echoBytes), 'server_cpu_per_m'), c.na ? '' : flagged(c)])));
    L.push('');
    L.push('The spreads are the fastest run against the slowest (messages/s) and the costliest against the cheapest (CPU per message). '
      + 'CPU per GB echoed is the server\'s CPU per million messages over their size: the cost per byte, comparable across sizes. '
      + 'For scale, uWebSockets\' examples/EchoServer (not packaged in Debian or npm, so not run here) measured 23 to 33 s per million 64 KiB '
      + 'messages on this machine with the same load generator, that is 0.35 to 0.50 s per GB.');
    L.push('');
  }

  // ---- g), h), i): the other benchmarks of make bench ----
  // Each writes its own section (bench/results/<name>.md) when make bench runs
  // it; a report made without them keeps the section the page already has.
  const previous = existsSync(outFile) ? readFileSync(outFile, 'utf8') : '';
  for (const [letter, name] of [['g', 'cluster'], ['h', 'durable'], ['i', 'agents']]) {
    const file = join(ROOT, 'bench/results', `${name}.md`);
    let text = existsSync(file) ? readFileSync(file, 'utf8').trim() : '';
    if (!text) {
      const start = previous.indexOf(`\n## ${letter}) `);
      if (start >= 0) {
        const next = previous.slice(start + 1).search(/\n## /);
        text = (next >= 0 ? previous.slice(start + 1, start + 1 + next) : previous.slice(start + 1)).trim();
      }
    }
    if (text) {
      L.push(text);
      L.push('');
    }
  }

  if (notes.length) {
    L.push('### Errors and problems referred to above');
    L.push('');
    notes.forEach((n, i) => L.push(`${i + 1}. ${n.replace(/\|/g, '\\|')}`));
    L.push('');
  }

  // ---- notes ----
  L.push('## Notes');
  L.push('');
  const notesFile = join(ROOT, 'bench/notes.md');
  if (existsSync(notesFile)) L.push(readFileSync(notesFile, 'utf8').trim());
  L.push('');

  mkdirSync(dirname(outFile), { recursive: true });
  writeFileSync(outFile, L.join('\n'));
  return { warnings, plots: plots.map((p) => join(plotDir, p)) };
}

// ---- plots (gnuplot) -----------------------------------------------------------

function hasGnuplot() {
  try { execFileSync('gnuplot', ['--version'], { stdio: 'ignore' }); return true; } catch { return false; }
}

const q = (s) => `'${String(s).replace(/'/g, "''")}'`;
const COLORS = { agentwire: '#d6272c', nchan: '#2a7ab0', ws: '#3a9a3a', socketio: '#8a55b0' };

async function makePlots({ cases, plotDir, cfg, warnings }) {
  const done = [];
  const wantThroughput = cases.some((c) => c.group === 'fanout-max' && isNum(c.median?.deliveries_per_s));
  const wantLatency = cases.some((c) => c.group === 'fixed' && (c.latency_hist || isNum(c.median?.p50_us)));
  const wantMemory = cases.some((c) => c.group === 'idle' && isNum(c.median?.bytes_per_conn));
  if (!wantThroughput && !wantLatency && !wantMemory) return done;
  if (!hasGnuplot()) {
    warnings.push('gnuplot not found: no plots (apt-get install gnuplot-nox)');
    return done;
  }
  mkdirSync(plotDir, { recursive: true });
  const tmp = mkdtempSync(join(os.tmpdir(), 'awbench-plot-'));
  const head = (out, title) => [
    'set terminal pngcairo size 900,540 enhanced font "sans,11" linewidth 1.5',
    `set output ${q(out)}`,
    `set title ${q(title)}`,
    'set grid',
    'set key top left box opaque',
  ];
  const run = (name, lines) => {
    const gp = join(tmp, `${basename(name, '.png')}.gp`);
    writeFileSync(gp, `${lines.join('\n')}\n`);
    try {
      execFileSync('gnuplot', [gp], { stdio: ['ignore', 'pipe', 'pipe'], cwd: tmp });
      done.push(name);
    } catch (err) {
      warnings.push(`gnuplot ${name}: ${String(err.stderr ?? err.message).trim().slice(0, 300)}`);
    }
  };
  try {
    if (wantThroughput) {
      const plotsFor = [];
      let lo = Infinity;
      let hi = 0;
      for (const t of TARGETS) {
        const pts = cases.filter((c) => c.group === 'fanout-max' && c.target === t && isNum(c.median?.deliveries_per_s))
          .sort((a, b) => a.conns - b.conns).map((c) => [c.conns, c.median.deliveries_per_s]);
        if (!pts.length) continue;
        for (const [x] of pts) { lo = Math.min(lo, x); hi = Math.max(hi, x); }
        const f = join(tmp, `thr-${t}.dat`);
        writeFileSync(f, `# connections delivered_events_per_s\n${pts.map((p) => p.join(' ')).join('\n')}\n`);
        plotsFor.push(`${q(f)} using 1:2 with linespoints lw 2 pt 7 ps 1.3 lc rgb ${q(COLORS[t])} title ${q(LABEL[t])}`);
      }
      const xs = [...new Set(cases.filter((c) => c.group === 'fanout-max').map((c) => c.conns))].sort((a, b) => a - b);
      const ys = cases.filter((c) => c.group === 'fanout-max' && isNum(c.median?.deliveries_per_s)).map((c) => c.median.deliveries_per_s);
      const ymin = Math.min(...ys) / 1.5;
      const ymax = Math.max(...ys) * 1.5;
      const yt = [];
      for (let e = Math.floor(Math.log10(ymin)); e <= Math.ceil(Math.log10(ymax)); e++) {
        for (const k of [1, 2, 3, 5]) {
          const y = k * 10 ** e;
          if (y >= ymin && y <= ymax) yt.push(y);
        }
      }
      const human = (y) => (y >= 1e6 ? `${y / 1e6}M` : y >= 1e3 ? `${y / 1e3}k` : String(y));
      run('throughput.png', [
        ...head(join(plotDir, 'throughput.png'), `Fan-out at the maximum rate (${cfg.connsPerUser} connections per user, best publish mode each)`),
        'set logscale x', 'set logscale y', 'set key outside right top box opaque',
        `set xrange [${lo / 1.3}:${hi * 1.3}]`,
        `set xtics (${xs.map((x) => `"${x.toLocaleString('en-US')}" ${x}`).join(', ')})`,
        `set yrange [${ymin}:${ymax}]`,
        `set ytics (${yt.map((y) => `"${human(y)}" ${y}`).join(', ')})`,
        'set xlabel "connections (log scale)"',
        'set ylabel "delivered events/s (log scale)"',
        `plot ${plotsFor.join(', \\\n  ')}`,
      ]);
    }
    if (wantLatency) {
      const series = [];
      let lo = Infinity;
      let hi = 0;
      for (const t of TARGETS) {
        const c = cases.find((x) => x.group === 'fixed' && x.target === t && !x.na && !x.error);
        if (!c) continue;
        let pts;
        if (c.latency_hist?.length) {
          const total = c.latency_hist.reduce((s, [, n]) => s + n, 0);
          let acc = 0;
          pts = [];
          for (const [us, n] of c.latency_hist) {
            if (!n) continue;
            acc += n;
            pts.push([Math.max(1, us), acc / total]);
          }
        } else {
          pts = [['p50_us', 0.5], ['p90_us', 0.9], ['p99_us', 0.99], ['p999_us', 0.999], ['max_us', 1]]
            .filter(([k]) => isNum(c.median[k])).map(([k, p]) => [Math.max(1, c.median[k]), p]);
        }
        if (!pts.length) continue;
        for (const [x] of pts) { lo = Math.min(lo, x); hi = Math.max(hi, x); }
        const f = join(tmp, `lat-${t}.dat`);
        writeFileSync(f, `# latency_us cumulative_fraction tail_fraction\n${pts.map(([x, p]) => `${x} ${p} ${Math.max(1e-6, 1 - p)}`).join('\n')}\n`);
        series.push({ t, f, hist: Boolean(c.latency_hist?.length) });
      }
      const style = (s) => (s.hist ? `with steps lw 2 lc rgb ${q(COLORS[s.t])}` : `with linespoints lw 2 pt 7 lc rgb ${q(COLORS[s.t])}`);
      run('latency.png', [
        ...head(join(plotDir, 'latency.png'), `Latency at ${cfg.fixedRate.toLocaleString('en-US')} events/s to ${cfg.fixedConns.toLocaleString('en-US')} connections`),
        'set multiplot layout 1,2',
        'set logscale x', `set xrange [${Math.max(1, lo / 1.5)}:${hi * 1.5}]`,
        'set xlabel "latency, µs (log scale)"',
        'set ylabel "fraction of deliveries ≤ latency"', 'set yrange [0:1]', 'set key bottom right box opaque',
        'set title "CDF"',
        `plot ${series.map((s) => `${q(s.f)} using 1:2 ${style(s)} title ${q(LABEL[s.t])}`).join(', \\\n  ')}`,
        'set logscale y', 'set yrange [0.0005:1]', 'set format y "%g"',
        'set ylabel "fraction of deliveries > latency (log scale)"', 'set key top right box opaque',
        'set title "tail (1 − CDF)"',
        `plot ${series.map((s) => `${q(s.f)} using 1:3 ${style(s)} title ${q(LABEL[s.t])}`).join(', \\\n  ')}`,
        'unset multiplot',
      ]);
    }
    if (wantMemory) {
      const counts = [...new Set(cases.filter((c) => c.group === 'idle').map((c) => c.conns))].sort((a, b) => a - b);
      const rows = [];
      for (const t of TARGETS) {
        const vals = counts.map((n) => cases.find((c) => c.group === 'idle' && c.target === t && c.conns === n)?.median?.bytes_per_conn);
        if (vals.every((x) => !isNum(x))) continue;
        rows.push(`"${LABEL[t]}" ${vals.map((x) => (isNum(x) ? (x / 1024).toFixed(3) : '-')).join(' ')}`);
      }
      const f = join(tmp, 'memory.dat');
      writeFileSync(f, `# target ${counts.map((n) => `kib_per_conn_at_${n}`).join(' ')}\n${rows.join('\n')}\n`);
      run('memory.png', [
        ...head(join(plotDir, 'memory.png'), 'Memory per idle connection (RSS delta ÷ connections)'),
        'set datafile missing "-"',
        'set style data histograms', 'set style histogram clustered gap 1', 'set style fill solid 0.85 border -1',
        'set boxwidth 0.9', 'set yrange [0:*]', 'set ylabel "KiB per idle connection"', 'set key top right box opaque',
        'set grid noxtics ytics',
        `plot ${counts.map((n, i) => `${q(f)} using ${i + 2}:xtic(1) title ${q(`${n.toLocaleString('en-US')} idle`)}`).join(', ')}`,
      ]);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return done;
}
