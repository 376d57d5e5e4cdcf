#!/usr/bin/env node
// bench/hardening.mjs -- resource attacks against one agentwire binary, with
// the figures of each: the server's memory, what the attacker got through, and
// whether other clients were still served: run it against two builds to
// compare what each lets one client do to everyone else.
//
//   node bench/hardening.mjs --bin PATH [--only name,name] [--seconds N]
//                            [--rss-cap-mb MB]
//
// Attacks (names for --only):
//   pipeline      one connection pipelines `GET /app.js` for --seconds, never reads
//   pipeline-tls  the same over TLS (self-signed certificate made with openssl)
//   lockout       server under `prlimit --nofile=1024:1024`; 127.0.0.2 opens as many
//                 keep-alive sockets as it can (GET /healthz every 2 s); can
//                 127.0.0.3 upgrade and receive an event, does /healthz answer?
//   bodies        200 unauthenticated POST /api/v1/publish, Content-Length 4000000,
//                 body sent as fast as possible
//   tickets       one user's JWT, POST /api/v1/tickets back to back for --seconds
//   streams       one event to each of 500,000 users (batches of 1000) under
//                 --history-memory-bytes 16777216
//   idempotency   200,000 publishes with distinct Idempotency-Key headers; does the
//                 first key still de-duplicate; a 300-byte key published twice
//   logflood      refused handshakes (bad token) as fast as possible for 5 s
//   ctrlsub       a token whose sub is "evil\nuser": upgrade (and ticket) status
//
// Each attack runs against a fresh server (started like tests/e2e/lib/harness.mjs
// does: 127.0.0.1, random port, secret and API key, JSON logs). Memory is the
// server's VmRSS sampled every 100 ms and its VmHWM (/proc/PID/status); the
// growth is peak minus the RSS just before the attack. Every loop is bounded in
// count and in time, the client's own buffering is capped, an attack stops early
// when the server's RSS passes --rss-cap-mb (default 4096; reported as
// "rss_capped"), and everything started is stopped. Only options that both the
// old and the new binary know are passed. Output: one JSON line per attack, then
// a table. Only node built-ins and `ws` (through the harness) are used.

import { spawn, execFileSync, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';

/* ------------------------------------------------------------------ */
/* options                                                              */
/* ------------------------------------------------------------------ */

const ATTACKS = ['pipeline', 'pipeline-tls', 'lockout', 'bodies', 'tickets', 'streams', 'idempotency', 'logflood', 'ctrlsub'];

function usage(msg) {
  if (msg) process.stderr.write(`hardening.mjs: ${msg}\n`);
  process.stderr.write(
    'usage: node bench/hardening.mjs --bin PATH [--only name,name] [--seconds N] [--rss-cap-mb MB]\n' +
    `attacks: ${ATTACKS.join(', ')}\n`,
  );
  process.exit(msg ? 2 : 0);
}

function parseOptions(argv) {
  const o = { bin: null, only: ATTACKS, seconds: 10, rssCapMb: 4096 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const [flag, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const value = () => {
      if (inline !== undefined) return inline;
      if (i + 1 >= argv.length) usage(`${flag} needs a value`);
      return argv[++i];
    };
    if (flag === '--bin') o.bin = value();
    else if (flag === '--only') o.only = value().split(',').map((s) => s.trim()).filter(Boolean);
    else if (flag === '--seconds') o.seconds = Number(value());
    else if (flag === '--rss-cap-mb') o.rssCapMb = Number(value());
    else if (flag === '--help' || flag === '-h') usage();
    else usage(`unknown argument ${a}`);
  }
  if (!o.bin) usage('--bin is required');
  for (const n of o.only) if (!ATTACKS.includes(n)) usage(`unknown attack ${n}`);
  if (!(o.seconds > 0 && o.seconds <= 600)) usage('--seconds must be in (0, 600]');
  if (!(o.rssCapMb > 0)) usage('--rss-cap-mb must be positive');
  o.bin = path.resolve(o.bin);
  try {
    fs.accessSync(o.bin, fs.constants.X_OK);
  } catch {
    usage(`${o.bin} is not an executable file`);
  }
  return o;
}

const OPT = parseOptions(process.argv.slice(2));
// The harness reads AGENTWIRE_BIN when it is loaded.
process.env.AGENTWIRE_BIN = OPT.bin;
const here = path.dirname(fileURLToPath(import.meta.url));
const H = await import(path.join(here, '..', 'tests', 'e2e', 'lib', 'harness.mjs'));

const HELP = (() => {
  const r = spawnSync(OPT.bin, ['--help'], { encoding: 'utf8', timeout: 10000 });
  return `${r.stdout || ''}${r.stderr || ''}`;
})();
/** True when the binary's --help lists the option (for attacks that need a new one). */
const knows = (flag) => new RegExp(`^\\s+${flag.replace(/[-]/g, '\\-')}\\b`, 'm').test(HELP);

// Both binaries know it; a short drain keeps stop() quick while attack sockets linger.
const BASE = ['--drain-timeout-ms', '1000'];

/* ------------------------------------------------------------------ */
/* small helpers                                                        */
/* ------------------------------------------------------------------ */

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const mb = (kib) => (Number.isFinite(kib) ? Math.round((kib / 1024) * 10) / 10 : null);
const round = (x, d = 1) => (Number.isFinite(x) ? Math.round(x * 10 ** d) / 10 ** d : null);

function procKiB(pid, field) {
  try {
    const m = new RegExp(`${field}:\\s+(\\d+)`).exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : NaN;
  } catch {
    return NaN;
  }
}

/** Samples VmRSS of pid every intervalMs; .capped once it passes --rss-cap-mb. */
function memSampler(pid, intervalMs = 100) {
  const capKiB = OPT.rssCapMb * 1024;
  const before = procKiB(pid, 'VmRSS');
  const s = { before, peak: before, capped: false, last: before };
  const tick = () => {
    const r = procKiB(pid, 'VmRSS');
    if (!Number.isFinite(r)) return;
    s.last = r;
    if (r > s.peak) s.peak = r;
    if (r > capKiB) s.capped = true;
  };
  const timer = setInterval(tick, intervalMs);
  s.stop = () => {
    clearInterval(timer);
    tick();
    const hwm = procKiB(pid, 'VmHWM');
    const peak = Math.max(s.peak, Number.isFinite(hwm) ? hwm : 0);
    return {
      rss_before_mb: mb(before),
      rss_peak_mb: mb(peak),
      rss_growth_mb: mb(peak - before),
      rss_end_mb: mb(s.last),
      ...(s.capped ? { rss_capped: true } : {}),
    };
  };
  return s;
}

/** Resolves the first of events on emitter (name, args) or 'timeout' after ms. */
function waitEvent(emitter, names, ms) {
  return new Promise((resolve) => {
    const handlers = {};
    const finish = (v) => {
      clearTimeout(timer);
      for (const [n, h] of Object.entries(handlers)) emitter.removeListener(n, h);
      resolve(v);
    };
    for (const n of names) {
      handlers[n] = (...args) => finish({ name: n, args });
      emitter.once(n, handlers[n]);
    }
    const timer = setTimeout(() => finish({ name: 'timeout' }), Math.max(0, ms));
  });
}

/** Incremental parser of HTTP responses framed by Content-Length. */
class ResponseParser {
  constructor() {
    this.buf = Buffer.alloc(0);
  }

  push(chunk) {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const out = [];
    let off = 0;
    for (;;) {
      const i = this.buf.indexOf('\r\n\r\n', off);
      if (i < 0) break;
      const lines = this.buf.subarray(off, i).toString('latin1').split('\r\n');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
      const headers = {};
      for (const line of lines.slice(1)) {
        const c = line.indexOf(':');
        if (c > 0) headers[line.slice(0, c).trim().toLowerCase()] = line.slice(c + 1).trim();
      }
      const len = Number(headers['content-length'] || 0);
      if (this.buf.length < i + 4 + len) break;
      out.push({ status: m ? Number(m[1]) : 0, headers, body: this.buf.subarray(i + 4, i + 4 + len) });
      off = i + 4 + len;
    }
    if (off) this.buf = Buffer.from(this.buf.subarray(off));
    return out;
  }
}

const jsonOf = (buf) => {
  try {
    return JSON.parse(buf.toString('utf8'));
  } catch {
    return null;
  }
};

const countInto = (obj, key) => { obj[key] = (obj[key] || 0) + 1; };

/** One HTTP request on its own connection (node:http, no agent); {status, text, json} or {error}. */
function httpRequest(port, { method = 'GET', path: p = '/', headers = {}, body, localAddress, timeoutMs = 5000, useTls = false } = {}) {
  return new Promise((resolve) => {
    const lib = useTls ? https : http;
    const h = { Connection: 'close', ...headers };
    if (body !== undefined) h['Content-Length'] = Buffer.byteLength(body);
    let done = false;
    const finish = (v) => { if (!done) { done = true; clearTimeout(timer); resolve(v); } };
    const req = lib.request({ host: '127.0.0.1', port, method, path: p, headers: h, localAddress, agent: false, rejectUnauthorized: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json = null;
        try { json = JSON.parse(text); } catch { /* not JSON */ }
        finish({ status: res.statusCode, text, json, bytes: Buffer.concat(chunks).length });
      });
      res.on('error', (e) => finish({ error: e.message }));
    });
    const timer = setTimeout(() => { req.destroy(); finish({ error: `no answer within ${timeoutMs} ms` }); }, timeoutMs);
    req.on('error', (e) => finish({ error: e.message }));
    if (body !== undefined) req.write(body);
    req.end();
  });
}

async function metrics(port, apiKey) {
  const r = await httpRequest(port, { path: '/metrics', headers: { Authorization: `Bearer ${apiKey}` }, timeoutMs: 10000 });
  const get = (name) => {
    if (r.status !== 200) return null;
    const v = H.metricValue(r.text, name);
    return Number.isNaN(v) ? null : v;
  };
  return { status: r.status ?? r.error, get };
}

/**
 * Keep-alive pipelined requests over `conns` connections, `window` in flight on
 * each. Request i is makeRequest(i) for i in [first, total); onResponse(i, res)
 * sees each answer. A connection the server closes (after `Connection: close`,
 * a limit, an error) is replaced; its unanswered requests are sent again on the
 * next one. Ends when every request was answered, at `deadline`, when stop()
 * says so, or after 20 connections in a row that got no answer.
 */
async function pipelined({ port, first = 0, total, makeRequest, onResponse = () => {}, window = 32, conns = 1, deadline, stop = () => false, localAddress }) {
  const st = { sent: 0, answered: 0, statuses: {}, connections: 0, errors: {}, closes_by_server: 0, gave_up: false };
  let next = first;
  const retry = [];
  const live = new Set();
  let stopped = false;
  const stopAll = () => {
    stopped = true;
    for (const s of live) s.destroy();
  };
  const deadlineTimer = setTimeout(stopAll, Math.max(0, deadline - Date.now()));
  const stopTimer = setInterval(() => { if (stop()) stopAll(); }, 100);
  const workLeft = () => retry.length > 0 || next < total;
  const take = () => (retry.length ? retry.shift() : next < total ? next++ : undefined);

  const runConnection = () => new Promise((resolve) => {
    st.connections++;
    const sock = net.connect({ host: '127.0.0.1', port, localAddress });
    live.add(sock);
    const parser = new ResponseParser();
    const inflight = [];
    let closing = false;
    let answered = 0;
    const pump = () => {
      if (stopped || closing || sock.destroyed) return;
      while (inflight.length < window && sock.writableLength < 1 << 20) {
        const i = take();
        if (i === undefined) break;
        inflight.push(i);
        st.sent++;
        sock.write(makeRequest(i));
      }
      if (inflight.length === 0 && !workLeft()) sock.end();
    };
    sock.on('connect', pump);
    sock.on('drain', pump);
    sock.on('data', (chunk) => {
      for (const r of parser.push(chunk)) {
        const i = inflight.shift();
        if (i === undefined) continue;
        answered++;
        st.answered++;
        countInto(st.statuses, r.status);
        onResponse(i, r);
        if ((r.headers.connection || '').toLowerCase() === 'close') closing = true;
      }
      pump();
    });
    sock.on('error', (e) => countInto(st.errors, e.code || e.message));
    sock.on('close', () => {
      live.delete(sock);
      if (!stopped && (closing || inflight.length || workLeft())) st.closes_by_server++;
      retry.unshift(...inflight);
      resolve(answered);
    });
  });

  const worker = async () => {
    let emptyStreak = 0;
    while (!stopped && workLeft() && Date.now() < deadline) {
      const got = await runConnection();
      emptyStreak = got ? 0 : emptyStreak + 1;
      if (emptyStreak >= 20) {
        st.gave_up = true;
        break;
      }
    }
  };
  await Promise.all(Array.from({ length: conns }, worker));
  clearTimeout(deadlineTimer);
  clearInterval(stopTimer);
  stopAll();
  st.unanswered = retry.length + Math.max(0, total - next);
  return st;
}

function makeCert() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'aw-hardening-'));
  const key = path.join(dir, 'key.pem');
  const cert = path.join(dir, 'cert.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-days', '1',
    '-keyout', key, '-out', cert], { stdio: 'ignore', timeout: 30000 });
  return { dir, key, cert };
}

/* ------------------------------------------------------------------ */
/* a server under prlimit (mirrors harness startServer)                 */
/* ------------------------------------------------------------------ */

async function startWrapped(wrapper, extraArgs = []) {
  const secret = crypto.randomBytes(24).toString('hex');
  const apiKey = `ak_${crypto.randomBytes(16).toString('hex')}`;
  const args = H.buildArgs(['--listen', '127.0.0.1:0', '--log-format', 'json', '--jwt-secret', secret,
    '--api-key', apiKey, '--jwt-leeway-s', '0'], extraArgs);
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('AGENTWIRE_')) env[k] = v;
  const proc = spawn(wrapper[0], [...wrapper.slice(1), OPT.bin, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  let exitInfo = null;
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => { exitInfo = { code, signal }; resolve(exitInfo); }));
  proc.on('error', () => {});
  proc.stdout.resume();
  proc.stderr.setEncoding('utf8');
  const listening = new Promise((resolve) => {
    let partial = '';
    proc.stderr.on('data', (c) => {
      stderr += c;
      partial += c;
      let nl;
      while ((nl = partial.indexOf('\n')) >= 0) {
        const line = partial.slice(0, nl);
        partial = partial.slice(nl + 1);
        try {
          const e = JSON.parse(line);
          if (e.msg === 'listening' && typeof e.addr === 'string') resolve(e);
        } catch { /* not JSON */ }
      }
    });
  });
  const stop = async () => {
    if (!exitInfo) {
      proc.kill('SIGTERM');
      if ((await Promise.race([exited, sleep(10000).then(() => 'timeout')])) === 'timeout') {
        proc.kill('SIGKILL');
        await Promise.race([exited, sleep(5000)]);
      }
    }
  };
  const entry = await Promise.race([listening, exited.then(() => null), sleep(15000).then(() => null)]);
  if (!entry) {
    await stop();
    throw new Error(`server under ${wrapper.join(' ')} did not start: ${stderr.slice(-2000)}`);
  }
  const port = Number(entry.addr.slice(entry.addr.lastIndexOf(':') + 1));
  return {
    port,
    pid: proc.pid,
    apiKey,
    url: `ws://127.0.0.1:${port}/ws`,
    token: (sub, claims = {}) => H.signHS256(secret, { sub, ...claims }),
    get stderr() { return stderr; },
    stop,
  };
}

/* ------------------------------------------------------------------ */
/* the attacks                                                          */
/* ------------------------------------------------------------------ */

/** 1. Pipelined GET /app.js from a peer that never reads (plain or TLS). */
async function attackPipeline(useTls, cleanup) {
  let cert = null;
  const extra = [...BASE];
  if (useTls) {
    cert = makeCert();
    cleanup.push(() => fs.rmSync(cert.dir, { recursive: true, force: true }));
    extra.push('--tls-cert', cert.cert, '--tls-key', cert.key);
  }
  const srv = await H.startServer(extra);
  cleanup.push(() => srv.stop());
  const probe = await httpRequest(srv.port, { path: '/app.js', useTls, timeoutMs: 10000 });
  const out = { app_js_status: probe.status ?? probe.error, app_js_bytes: probe.bytes ?? null };

  const mem = memSampler(srv.proc.pid);
  const sock = useTls
    ? tls.connect({ host: '127.0.0.1', port: srv.port, rejectUnauthorized: false })
    : net.connect({ host: '127.0.0.1', port: srv.port });
  cleanup.push(() => sock.destroy());
  let closedAt = null;
  let error = null;
  let pending = 0; // bytes still in this process's buffer, as last seen before a close
  sock.on('error', (e) => { error = e.code || e.message; pending = sock.writableLength; });
  sock.on('close', () => { closedAt = Date.now(); });
  const up = await waitEvent(sock, [useTls ? 'secureConnect' : 'connect', 'close'], 10000);
  if (up.name !== 'connect' && up.name !== 'secureConnect') throw new Error(`could not connect (${up.name}, ${error})`);
  sock.pause(); // never read: responses pile up wherever the server keeps them

  const REQ = Buffer.from('GET /app.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
  const CHUNK = Buffer.concat(Array.from({ length: 256 }, () => REQ));
  const CLIENT_CAP = 8 << 20; // at most 8 MiB waiting in this process
  const start = Date.now();
  const end = start + OPT.seconds * 1000;
  let queued = 0;
  let writes = 0;
  let stalls = 0;
  while (Date.now() < end && !sock.destroyed && closedAt === null && !mem.capped && writes < 10_000_000) {
    if (sock.writableLength > CLIENT_CAP) {
      stalls++;
      await waitEvent(sock, ['drain', 'close'], Math.min(200, end - Date.now()));
      continue;
    }
    sock.write(CHUNK);
    queued += CHUNK.length;
    pending = sock.writableLength;
    if (++writes % 32 === 0) await new Promise((r) => setImmediate(r));
  }
  if (!sock.destroyed) pending = sock.writableLength;
  const elapsed = (Math.min(Date.now(), closedAt ?? Infinity) - start) / 1000;
  const written = Math.floor((queued - pending) / REQ.length);
  await sleep(300); // one more sample of the server after the last write
  Object.assign(out, mem.stop(), {
    requests_written: written,
    seconds: round(elapsed),
    client_stalled_waits: stalls,
    closed_by_server: closedAt !== null,
    ...(closedAt !== null ? { closed_after_s: round((closedAt - start) / 1000), close_error: error } : {}),
  });
  sock.destroy();
  return out;
}

/** 2. One address holds as many sockets as it can under a 1024 descriptor limit. */
async function attackLockout(cleanup) {
  const srv = await startWrapped(['prlimit', '--nofile=1024:1024', '--'], BASE);
  cleanup.push(() => srv.stop());
  const exe = (() => { try { return fs.readlinkSync(`/proc/${srv.pid}/exe`); } catch { return '?'; } })();
  const nofile = (() => {
    try {
      return /Max open files\s+(\d+)/.exec(fs.readFileSync(`/proc/${srv.pid}/limits`, 'utf8'))?.[1] ?? '?';
    } catch { return '?'; }
  })();
  const mem = memSampler(srv.pid);
  const HEALTH = Buffer.from('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
  const attackers = [];
  const timers = new Set();
  const statuses = {};
  cleanup.push(() => {
    for (const t of timers) clearTimeout(t);
    for (const a of attackers) a.sock.destroy();
  });

  const openOne = () => new Promise((resolve) => {
    const a = { ok: 0, lastOkAt: 0, closed: false, sock: null };
    attackers.push(a);
    const sock = net.connect({ host: '127.0.0.1', port: srv.port, localAddress: '127.0.0.2' });
    a.sock = sock;
    const parser = new ResponseParser();
    let settled = false;
    const settle = (v) => { if (!settled) { settled = true; clearTimeout(t0); timers.delete(t0); resolve(v); } };
    const t0 = setTimeout(() => settle('timeout'), 3000);
    timers.add(t0);
    const send = () => { if (!sock.destroyed) sock.write(HEALTH); };
    sock.on('connect', send);
    sock.on('data', (c) => {
      for (const r of parser.push(c)) {
        countInto(statuses, r.status);
        if (r.status === 200) {
          a.ok++;
          a.lastOkAt = Date.now();
          settle('ok');
          const t = setTimeout(() => { timers.delete(t); send(); }, 2000);
          timers.add(t);
        } else settle(`status ${r.status}`);
      }
    });
    sock.on('error', () => {});
    sock.on('close', () => { a.closed = true; settle('closed'); });
  });

  const MAX = 1200;
  const BATCH = 50;
  const openDeadline = Date.now() + 30000;
  while (attackers.length < MAX && Date.now() < openDeadline && !mem.capped) {
    const results = await Promise.all(Array.from({ length: BATCH }, openOne));
    if (!results.includes('ok')) break; // nothing more gets through
  }
  await sleep(4500); // two rounds of /healthz on every held socket
  const heldNow = () => attackers.filter((a) => !a.closed && a.lastOkAt > Date.now() - 3500).length;
  const held = heldNow();

  // The victims: 127.0.0.3 upgrades and waits for a published event; 127.0.0.1 asks /healthz.
  const out = { server_exe: exe, server_nofile: Number(nofile) || nofile, attacker_sockets_opened: attackers.length, attacker_sockets_held: held };
  let client = null;
  try {
    client = await H.connectReady(srv.url, {
      localAddress: '127.0.0.3',
      headers: { Authorization: `Bearer ${srv.token('victim')}` },
      timeoutMs: 5000,
    });
    cleanup.push(() => client.terminate());
    out.ws_upgrade_from_127_0_0_3 = 'ok';
  } catch (e) {
    out.ws_upgrade_from_127_0_0_3 = `fail (${e.message.split('\n')[0].slice(0, 120)})`;
  }
  if (client) {
    const pub = await httpRequest(srv.port, {
      method: 'POST',
      path: '/api/v1/publish',
      localAddress: '127.0.0.3',
      headers: { Authorization: `Bearer ${srv.apiKey}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ user_id: 'victim', type: 'note', text: 'still here' }),
      timeoutMs: 5000,
    });
    try {
      if (pub.status !== 200) throw new Error(`publish ${pub.status ?? pub.error}`);
      await client.nextMessage((m) => m.type === 'note', 5000);
      out.event_received_on_127_0_0_3 = 'ok';
    } catch (e) {
      out.event_received_on_127_0_0_3 = `fail (${e.message.split('\n')[0].slice(0, 120)})`;
    }
    client.terminate();
  } else out.event_received_on_127_0_0_3 = 'fail (no connection)';
  const hz = await httpRequest(srv.port, { path: '/healthz', localAddress: '127.0.0.1', timeoutMs: 5000 });
  out.healthz_from_127_0_0_1 = hz.status === 200 ? 'ok' : `fail (${hz.status ?? hz.error})`;
  out.attacker_sockets_held_after = heldNow();
  out.attacker_statuses = statuses;
  Object.assign(out, mem.stop());
  return out;
}

/** 3. Unauthenticated 4 MB bodies on 200 connections at once. */
async function attackBodies(cleanup) {
  const srv = await H.startServer(BASE);
  cleanup.push(() => srv.stop());
  const mem = memSampler(srv.proc.pid);
  const N = 200;
  const LEN = 4_000_000;
  const BODY = Buffer.alloc(LEN, 'a');
  BODY.write('{"user_id":"x","type":"note","pad":"');
  BODY.write('"}', LEN - 2);
  const HEAD = Buffer.from(`POST /api/v1/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${LEN}\r\n\r\n`);
  const SLICE = 256 * 1024;
  const deadline = Date.now() + 60000;
  const socks = [];
  cleanup.push(() => { for (const s of socks) s.destroy(); });
  const statuses = {};
  const early = {};

  const one = () => new Promise((resolve) => {
    const r = { respAt: null, status: null, finishedAt: null, sentBytes: 0, sentAtResp: null, closed: false, error: null };
    const sock = net.connect({ host: '127.0.0.1', port: srv.port });
    socks.push(sock);
    const parser = new ResponseParser();
    const timer = setTimeout(() => sock.destroy(), Math.max(0, deadline - Date.now()));
    sock.on('data', (c) => {
      for (const resp of parser.push(c)) {
        if (r.respAt === null) {
          r.respAt = Date.now();
          r.status = resp.status;
          // body bytes that had left this process (into the kernel) when the answer came
          r.sentAtResp = Math.max(0, r.sentBytes - sock.writableLength);
        }
      }
      if (r.respAt !== null && r.finishedAt !== null) sock.destroy();
    });
    sock.on('error', (e) => { r.error = e.code || e.message; });
    sock.on('close', () => { r.closed = true; clearTimeout(timer); resolve(r); });
    sock.on('connect', async () => {
      sock.write(HEAD);
      for (let off = 0; off < LEN && !sock.destroyed && Date.now() < deadline && !mem.capped; off += SLICE) {
        const part = BODY.subarray(off, Math.min(LEN, off + SLICE));
        const more = sock.write(part);
        r.sentBytes += part.length;
        if (!more) await waitEvent(sock, ['drain', 'close'], Math.max(0, deadline - Date.now()));
      }
      if (sock.destroyed) return;
      if (r.sentBytes >= LEN) {
        // finished sending once the last byte left this process
        sock.write(Buffer.alloc(0), () => { if (r.finishedAt === null) r.finishedAt = Date.now(); if (r.respAt !== null) sock.destroy(); });
        // the answer to a complete body: wait for it a little, then give up
        setTimeout(() => sock.destroy(), 10000).unref();
      } else sock.destroy();
    });
  });
  const t0 = Date.now();
  const results = await Promise.all(Array.from({ length: N }, one));
  let before = 0;
  let finished = 0;
  let answered = 0;
  const errors = {};
  const atResp = results.filter((r) => r.sentAtResp !== null).map((r) => r.sentAtResp).sort((a, b) => a - b);
  for (const r of results) {
    if (r.status !== null) { answered++; countInto(statuses, r.status); }
    if (r.finishedAt !== null) finished++;
    if (r.respAt !== null && (r.finishedAt === null || r.respAt < r.finishedAt)) { before++; countInto(early, r.status); }
    if (r.error) countInto(errors, r.error);
  }
  return {
    connections: N,
    content_length: LEN,
    responses: answered,
    statuses,
    responses_before_body_sent: before,
    statuses_before_body_sent: early,
    finished_sending: finished,
    // "finished sending" means the last byte reached the kernel: on loopback the
    // socket buffers take megabytes, so a body can be "sent" before the server
    // even accepted the connection; the median below says more
    median_body_mb_sent_at_response: atResp.length ? round(atResp[atResp.length >> 1] / 1e6, 2) : null,
    client_errors: errors,
    seconds: round((Date.now() - t0) / 1000),
    ...mem.stop(),
  };
}

/** 4. One user's JWT asks for tickets back to back on a keep-alive connection. */
async function attackTickets(cleanup) {
  const srv = await H.startServer(BASE);
  cleanup.push(() => srv.stop());
  const mem = memSampler(srv.proc.pid);
  const REQ = Buffer.from(`POST /api/v1/tickets HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${srv.token('ticket_user')}\r\nContent-Length: 0\r\n\r\n`);
  const t0 = Date.now();
  let issued = 0;
  const st = await pipelined({
    port: srv.port,
    total: 50_000_000,
    makeRequest: () => REQ,
    onResponse: (_, r) => { if (r.status === 200) issued++; },
    window: 32,
    deadline: t0 + OPT.seconds * 1000,
    stop: () => mem.capped,
  });
  const secs = (Date.now() - t0) / 1000;
  const m = await metrics(srv.port, srv.apiKey);
  return {
    requests_answered: st.answered,
    tickets_issued: issued,
    tickets_per_second: Math.round(issued / secs),
    statuses: st.statuses,
    connections_used: st.connections,
    agentwire_tickets: m.get('agentwire_tickets') ?? 'n/a',
    seconds: round(secs),
    ...mem.stop(),
  };
}

/** 5. One event to each of 500,000 users under a 16 MiB history cap. */
async function attackStreams(cleanup) {
  const srv = await H.startServer([...BASE, '--history-memory-bytes', '16777216']);
  cleanup.push(() => srv.stop());
  const mem = memSampler(srv.proc.pid);
  const USERS = 500_000;
  const PER = 1000;
  const tag = crypto.randomBytes(3).toString('hex');
  const auth = `Authorization: Bearer ${srv.apiKey}`;
  const makeRequest = (i) => {
    const evs = [];
    for (let j = 0; j < PER; j++) evs.push(`{"user_id":"s${tag}_${i * PER + j}","type":"note"}`);
    const body = `[${evs.join(',')}]`;
    return `POST /api/v1/publish/batch HTTP/1.1\r\nHost: 127.0.0.1\r\n${auth}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
  };
  const t0 = Date.now();
  let accepted = 0;
  const st = await pipelined({
    port: srv.port,
    total: USERS / PER,
    makeRequest,
    onResponse: (_, r) => {
      if (r.status !== 200) return;
      const j = jsonOf(r.body);
      if (Array.isArray(j)) accepted += j.filter((e) => e && typeof e.seq === 'number').length;
    },
    window: 4,
    conns: 2,
    deadline: t0 + 120000,
    stop: () => mem.capped,
  });
  const secs = (Date.now() - t0) / 1000;
  const m = await metrics(srv.port, srv.apiKey);
  return {
    users: USERS,
    batches_answered: st.answered,
    batch_statuses: st.statuses,
    events_accepted: accepted,
    seconds: round(secs),
    metrics_status: m.status,
    agentwire_history_bytes: m.get('agentwire_history_bytes'),
    agentwire_streams: m.get('agentwire_streams'),
    agentwire_history_events: m.get('agentwire_history_events'),
    ...mem.stop(),
  };
}

/** 6. 200,000 distinct idempotency keys; the first one re-published at the end; a 300-byte key. */
async function attackIdempotency(cleanup) {
  const srv = await H.startServer(BASE);
  cleanup.push(() => srv.stop());
  const mem = memSampler(srv.proc.pid);
  const N = 200_000;
  const tag = crypto.randomBytes(4).toString('hex');
  const key = (i) => `key-${tag}-${i}`;
  const user = `idem_${tag}`;
  const body = JSON.stringify({ user_id: user, type: 'note' });
  const auth = { Authorization: `Bearer ${srv.apiKey}`, 'Content-Type': 'application/json' };
  const pub = (k) => httpRequest(srv.port, { method: 'POST', path: '/api/v1/publish', headers: { ...auth, 'Idempotency-Key': k }, body, timeoutMs: 10000 });

  // the first (oldest) key, alone, before the others
  const firstRes = await pub(key(0));
  const head = `POST /api/v1/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${srv.apiKey}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n`;
  const t0 = Date.now();
  const st = await pipelined({
    port: srv.port,
    first: 1,
    total: N,
    makeRequest: (i) => `${head}Idempotency-Key: ${key(i)}\r\n\r\n${body}`,
    window: 64,
    conns: 4,
    deadline: t0 + 120000,
    stop: () => mem.capped,
  });
  const secs = (Date.now() - t0) / 1000;
  const again = await pub(key(0));
  const m = await metrics(srv.port, srv.apiKey);
  const long = `L${crypto.randomBytes(150).toString('hex')}`.slice(0, 300);
  const l1 = await pub(long);
  const l2 = await pub(long);
  let longEvents;
  const ok1 = l1.status === 200;
  const ok2 = l2.status === 200;
  if (ok1 && ok2) longEvents = l1.json?.event_id === l2.json?.event_id ? 1 : 2;
  else longEvents = (ok1 ? 1 : 0) + (ok2 ? 1 : 0);
  return {
    publishes: N,
    answered: st.answered + 1,
    statuses: st.statuses,
    connections_used: st.connections,
    publishes_per_second: Math.round(st.answered / secs),
    agentwire_idempotency_keys: m.get('agentwire_idempotency_keys') ?? 'n/a',
    first_key_seq: firstRes.json?.seq ?? firstRes.status ?? firstRes.error,
    first_key_republished_seq: again.json?.seq ?? again.status ?? again.error,
    first_key_deduplicated: Boolean(firstRes.json && again.json && firstRes.json.event_id === again.json.event_id),
    key300_statuses: [l1.status ?? l1.error, l2.status ?? l2.error],
    key300_events: longEvents,
    seconds: round(secs),
    ...mem.stop(),
  };
}

/** 7. Refused handshakes as fast as one client can for 5 s; the server's log. */
async function attackLogFlood(cleanup) {
  const srv = await H.startServer(BASE);
  cleanup.push(() => srv.stop());
  const startBytes = Buffer.byteLength(srv.stderr);
  const startLines = srv.logs.length;
  const mem = memSampler(srv.proc.pid);
  const SECONDS = 5;
  const MAX = 100_000; // loopback reuses TIME_WAIT ports (tcp_tw_reuse), 50k+ in 5 s work
  const CONC = 4;
  const end = Date.now() + SECONDS * 1000;
  const statuses = {};
  let made = 0;
  let failures = 0;
  const live = new Set();
  cleanup.push(() => { for (const s of live) s.destroy(); });
  const once = () => new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port: srv.port });
    live.add(sock);
    let got = null;
    const timer = setTimeout(() => sock.destroy(), 3000);
    let buf = '';
    sock.setEncoding('latin1');
    sock.on('connect', () => sock.write(H.upgradeRequest({ headers: { Authorization: 'Bearer not.a.token' } })));
    sock.on('data', (c) => {
      buf += c;
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(buf);
      if (m) { got = Number(m[1]); sock.destroy(); }
    });
    sock.on('error', () => {});
    sock.on('close', () => { clearTimeout(timer); live.delete(sock); resolve(got); });
  });
  const loop = async () => {
    while (Date.now() < end && made < MAX) {
      made++;
      const s = await once();
      if (s === null) failures++;
      else countInto(statuses, s);
      if (failures > 200) break;
    }
  };
  const t0 = Date.now();
  await Promise.all(Array.from({ length: CONC }, loop));
  const secs = (Date.now() - t0) / 1000;
  // let the last lines reach us: until stderr stops growing for 300 ms (at most 3 s)
  for (let last = -1, i = 0; i < 30 && srv.stderr.length !== last; i++) {
    last = srv.stderr.length;
    await sleep(300);
  }
  const lines = srv.logs.slice(startLines);
  const refused = lines.filter((e) => e && e.msg === 'refused');
  const suppressed = lines.reduce((s, e) => s + (e && Number.isFinite(Number(e.suppressed)) ? Number(e.suppressed) : 0), 0);
  return {
    handshakes: made,
    handshakes_per_second: Math.round(made / secs),
    statuses,
    refused_log_lines: refused.length,
    log_lines: lines.length,
    log_bytes: Buffer.byteLength(srv.stderr) - startBytes,
    suppressed_total: suppressed,
    seconds: round(secs),
    ...mem.stop(),
  };
}

/** 8. A token whose sub holds a newline. */
async function attackCtrlSub(cleanup) {
  const srv = await H.startServer(BASE);
  cleanup.push(() => srv.stop());
  const tok = srv.token('evil\nuser');
  let upgrade;
  try {
    const r = await H.rawHttp(srv, H.upgradeRequest({ headers: { Authorization: `Bearer ${tok}` } }));
    upgrade = r.status;
  } catch (e) {
    upgrade = `error (${e.message.slice(0, 100)})`;
  }
  const t = await httpRequest(srv.port, { method: 'POST', path: '/api/v1/tickets', headers: { Authorization: `Bearer ${tok}` }, body: '' });
  return { upgrade_status: upgrade, ticket_status: t.status ?? t.error };
}

/* ------------------------------------------------------------------ */
/* main                                                                 */
/* ------------------------------------------------------------------ */

const RUNNERS = {
  pipeline: (c) => attackPipeline(false, c),
  'pipeline-tls': (c) => attackPipeline(true, c),
  lockout: attackLockout,
  bodies: attackBodies,
  tickets: attackTickets,
  streams: attackStreams,
  idempotency: attackIdempotency,
  logflood: attackLogFlood,
  ctrlsub: attackCtrlSub,
};
// Options an attack needs that an old binary may lack: none of these attacks
// does (each uses only options both binaries know), kept for the rule.
const NEEDS = {};

let currentCleanup = [];
async function runCleanup(list) {
  for (const f of list.reverse()) {
    try {
      await f();
    } catch { /* best effort */ }
  }
}
let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, async () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    process.stderr.write(`\n${sig}: stopping\n`);
    await runCleanup(currentCleanup);
    process.exit(130);
  });
}

const ATTACK_TIMEOUT_MS = 180000;
const results = [];
const version = spawnSync(OPT.bin, ['--version'], { encoding: 'utf8', timeout: 10000 }).stdout?.trim() || '?';
process.stderr.write(`# ${OPT.bin} (${version}); attacks: ${OPT.only.join(', ')}; --seconds ${OPT.seconds}\n`);
const tStart = Date.now();
for (const name of OPT.only) {
  const missing = (NEEDS[name] || []).filter((f) => !knows(f));
  let rec;
  if (missing.length) {
    rec = { attack: name, result: 'n/a', reason: `binary lacks ${missing.join(', ')}` };
  } else {
    currentCleanup = [];
    const t0 = Date.now();
    try {
      let timer;
      const figures = await Promise.race([
        RUNNERS[name](currentCleanup),
        new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`attack took over ${ATTACK_TIMEOUT_MS / 1000} s`)), ATTACK_TIMEOUT_MS); }),
      ]).finally(() => clearTimeout(timer));
      rec = { attack: name, ...figures };
    } catch (e) {
      rec = { attack: name, error: e.message.split('\n').slice(0, 3).join(' | ') };
    }
    await runCleanup(currentCleanup);
    currentCleanup = [];
    rec.wall_s = round((Date.now() - t0) / 1000);
  }
  results.push(rec);
  process.stdout.write(`${JSON.stringify(rec)}\n`);
}

/* ------------------------------------------------------------------ */
/* the table                                                            */
/* ------------------------------------------------------------------ */

const fmt = (v) => (v === null || v === undefined ? '-' : typeof v === 'object' ? JSON.stringify(v).replace(/"/g, '') : String(v));
const SUMMARY = {
  pipeline: ['rss_growth_mb', 'rss_peak_mb', 'requests_written', 'closed_by_server', 'closed_after_s', 'rss_capped'],
  'pipeline-tls': ['rss_growth_mb', 'rss_peak_mb', 'requests_written', 'closed_by_server', 'closed_after_s', 'rss_capped'],
  lockout: ['server_nofile', 'attacker_sockets_held', 'ws_upgrade_from_127_0_0_3', 'event_received_on_127_0_0_3', 'healthz_from_127_0_0_1'],
  bodies: ['rss_growth_mb', 'responses', 'statuses', 'responses_before_body_sent', 'statuses_before_body_sent', 'median_body_mb_sent_at_response'],
  tickets: ['tickets_per_second', 'tickets_issued', 'statuses', 'rss_growth_mb', 'agentwire_tickets'],
  streams: ['rss_growth_mb', 'agentwire_history_bytes', 'agentwire_streams', 'events_accepted'],
  idempotency: ['rss_growth_mb', 'agentwire_idempotency_keys', 'first_key_deduplicated', 'key300_statuses', 'key300_events'],
  logflood: ['handshakes', 'refused_log_lines', 'log_bytes', 'suppressed_total'],
  ctrlsub: ['upgrade_status', 'ticket_status'],
};
const rows = [];
for (const r of results) {
  let figures;
  if (r.error) figures = `ERROR ${r.error}`;
  else if (r.result === 'n/a') figures = `n/a (${r.reason})`;
  else figures = (SUMMARY[r.attack] || Object.keys(r)).filter((k) => r[k] !== undefined).map((k) => `${k}=${fmt(r[k])}`).join('  ');
  rows.push([r.attack, figures]);
}
const w = Math.max(6, ...rows.map((r) => r[0].length));
const lines = [`${'attack'.padEnd(w)} | figures`, `${'-'.repeat(w)}-+-${'-'.repeat(60)}`];
for (const [a, f] of rows) lines.push(`${a.padEnd(w)} | ${f}`);
process.stdout.write(`\n# ${OPT.bin} (${version}), total ${round((Date.now() - tStart) / 1000)} s\n${lines.join('\n')}\n`, () => process.exit(0));
