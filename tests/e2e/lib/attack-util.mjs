// attack-util.mjs -- small generic helpers for the attack tests: memory of the
// server process, raw sockets from chosen source addresses, response framing,
// a server run under a wrapper (e.g. prlimit), test certificates.
//
// Every wait here is bounded, like in harness.mjs.

import { spawn, execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import os from 'node:os';
import path from 'node:path';
import { BIN, withTimeout, pollUntil } from './harness.mjs';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/* ------------------------------------------------------------------ */
/* memory                                                               */
/* ------------------------------------------------------------------ */

function procStatusKiB(pid, field) {
  const m = new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}
/** Resident set of pid now (KiB). */
export const rssKiB = (pid) => procStatusKiB(pid, 'VmRSS');
/** Peak resident set of pid (KiB): a fresh server's high-water mark is its attack's peak. */
export const hwmKiB = (pid) => procStatusKiB(pid, 'VmHWM');

/**
 * True when the server runs under AddressSanitizer: the binary's path says so
 * (build-asan) or the process maps libasan. RSS means little there (quarantine,
 * shadow memory), so RSS bounds are skipped and another signal is asserted.
 */
export function underAsan(pid) {
  if (BIN.includes('build-asan')) return true;
  try {
    return pid !== undefined && readFileSync(`/proc/${pid}/maps`, 'utf8').includes('libasan');
  } catch {
    return false;
  }
}

/* ------------------------------------------------------------------ */
/* sockets and responses                                                */
/* ------------------------------------------------------------------ */

/** A raw TCP socket to srv from an optional local address, tracked (destroyed by srv.stop()). */
export function rawConnect(srv, { localAddress, host = '127.0.0.1', port = srv.port } = {}) {
  return withTimeout(new Promise((resolve, reject) => {
    const sock = net.connect({ host, port, localAddress });
    if (srv.sockets) srv.sockets.add(sock);
    sock.once('connect', () => resolve(sock));
    sock.once('error', reject);
  }), 10000, `TCP connect from ${localAddress || 'default'} to ${host}:${port}`);
}

/**
 * Splits buf into complete HTTP responses (Content-Length framed; a response
 * without Content-Length takes the rest). {responses, rest}.
 */
export function parseResponses(buf, { ended = false } = {}) {
  const out = [];
  let off = 0;
  for (;;) {
    const i = buf.indexOf('\r\n\r\n', off);
    if (i < 0) break;
    const head = buf.subarray(off, i).toString('latin1');
    const lines = head.split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
    const headers = {};
    for (const line of lines.slice(1)) {
      const c = line.indexOf(':');
      if (c > 0) headers[line.slice(0, c).trim().toLowerCase()] = line.slice(c + 1).trim();
    }
    let len;
    if (headers['content-length'] !== undefined) len = Number(headers['content-length']);
    else if (ended) len = buf.length - (i + 4);
    else len = 0;
    if (buf.length < i + 4 + len) break;
    const text = buf.subarray(i + 4, i + 4 + len).toString('utf8');
    let json = null;
    try { json = JSON.parse(text); } catch { /* not JSON */ }
    out.push({ status: m ? Number(m[1]) : NaN, statusLine: lines[0], headers, text, json });
    off = i + 4 + len;
  }
  return { responses: out, rest: buf.subarray(off) };
}

/**
 * Records what arrives on sock: .bytes (a count), .first (the first 64 KiB,
 * for messages), complete HTTP responses parsed as they come, .closed,
 * .closedAt, .error; waits: .until(pred, ms, what), .responses(n, ms) for the
 * first n complete responses, .closedWithin(ms). Parsing is incremental, so
 * megabytes of responses cost no quadratic copying.
 */
export function recorder(sock) {
  const FIRST = 64 * 1024;
  const r = {
    sock,
    bytes: 0,
    first: Buffer.alloc(0),
    closed: false,
    closedAt: null,
    error: null,
    waiters: new Set(),
  };
  const done = [];
  let tail = Buffer.alloc(0);
  const wake = () => { for (const w of [...r.waiters]) w(); };
  sock.on('data', (c) => {
    r.bytes += c.length;
    if (r.first.length < FIRST) r.first = Buffer.concat([r.first, c.subarray(0, FIRST - r.first.length)]);
    tail = tail.length ? Buffer.concat([tail, c]) : c;
    const { responses, rest } = parseResponses(tail);
    if (responses.length) { done.push(...responses); tail = Buffer.from(rest); }
    wake();
  });
  sock.on('error', (err) => { r.error = err; });
  sock.on('close', () => {
    // a response without Content-Length ends with the connection
    const { responses, rest } = parseResponses(tail, { ended: true });
    done.push(...responses);
    tail = rest;
    r.closed = true;
    r.closedAt = Date.now();
    wake();
  });
  /** Every complete response so far. */
  r.parsed = () => done;
  r.describe = () => `${r.bytes} bytes, ${done.length} response(s), first bytes ${JSON.stringify(r.first.subarray(0, 200).toString('latin1'))}${r.closed ? ' (closed)' : ''}`;
  r.until = (pred, ms, what) => {
    let w;
    return withTimeout(new Promise((resolve) => {
      w = () => { const v = pred(); if (v) resolve(v); };
      r.waiters.add(w);
      w();
    }), ms, `${what}; got ${r.describe()}`)
      .finally(() => r.waiters.delete(w));
  };
  /** Resolves the first n responses once they are complete. */
  r.responses = (n, ms, what = `${n} HTTP response(s)`) =>
    r.until(() => (done.length >= n ? done.slice(0, n) : (r.closed ? 'closed' : null)), ms, what)
      .then((v) => {
        if (v === 'closed') throw new Error(`connection closed before ${what}; got ${r.describe()}`);
        return v;
      });
  r.closedWithin = (ms, what = 'the server to close the connection') => r.until(() => r.closed, ms, what);
  return r;
}

/* ------------------------------------------------------------------ */
/* certificates                                                         */
/* ------------------------------------------------------------------ */

/** A self-signed P-256 certificate for 127.0.0.1/localhost in a temp dir removed when t ends. */
export function makeCert(t, name = 'attack') {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'aw-attack-tls-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const key = path.join(dir, `${name}.key`);
  const cert = path.join(dir, `${name}.crt`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=${name}`,
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' });
  return { key, cert, pem: readFileSync(cert, 'utf8') };
}

/** A TLS connection to srv (tracked), resolved once the handshake is done. */
export function tlsConnect(srv, ca, opts = {}) {
  return withTimeout(new Promise((resolve, reject) => {
    const sock = tls.connect({ host: '127.0.0.1', port: srv.port, ca, servername: 'localhost', ...opts });
    if (srv.sockets) srv.sockets.add(sock);
    sock.once('secureConnect', () => resolve(sock));
    sock.once('error', reject);
  }), 10000, 'TLS handshake');
}

/* ------------------------------------------------------------------ */
/* processes                                                            */
/* ------------------------------------------------------------------ */

/**
 * An executable shell script that runs the real binary under a prefix
 * command, e.g. ['prlimit', '--nofile=400:400']: `exec PREFIX... BIN "$@"`
 * (exec: the server keeps the script's pid). Removed when t ends.
 */
export function wrapperScript(t, prefix, bin = BIN) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'aw-wrap-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'agentwire-wrapped');
  const q = (s) => `'${String(s).replace(/'/g, `'\\''`)}'`;
  writeFileSync(file, `#!/bin/sh\nexec ${[...prefix, bin].map(q).join(' ')} "$@"\n`);
  chmodSync(file, 0o755);
  return file;
}

/**
 * Spawns bin with exactly args (no defaults) and waits for a JSON log line
 * matching pred on stderr. Resolves {proc, logs, stderr, entry, stop()};
 * stop() sends SIGTERM, then SIGKILL after 10 s. Stopped when t ends.
 * For servers the harness cannot start (e.g. listening on 0.0.0.0).
 */
export async function spawnUntilLog(t, args, pred, { bin = BIN, timeoutMs = 15000, env = {} } = {}) {
  const clean = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('AGENTWIRE_')) clean[k] = v;
  const proc = spawn(bin, args.map(String), { env: { ...clean, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const h = { proc, logs: [], stderr: '', exitInfo: null };
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => { h.exitInfo = { code, signal }; resolve(h.exitInfo); }));
  const closed = new Promise((resolve) => proc.on('close', resolve));
  proc.on('error', (err) => { h.spawnError = err; });
  let partial = '';
  proc.stderr.setEncoding('utf8').on('data', (c) => {
    h.stderr += c;
    partial += c;
    let nl;
    while ((nl = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, nl);
      partial = partial.slice(nl + 1);
      try { h.logs.push(JSON.parse(line)); } catch { h.logs.push({ unparsed: line }); }
    }
  });
  proc.stdout.resume();
  h.stop = async () => {
    if (!h.exitInfo && !h.spawnError) {
      proc.kill('SIGTERM');
      try {
        await withTimeout(exited, 10000, 'process to exit after SIGTERM');
      } catch {
        proc.kill('SIGKILL');
        await withTimeout(exited, 5000, 'process to exit after SIGKILL').catch(() => {});
      }
    }
    await withTimeout(closed, 5000, 'process pipes to close').catch(() => {});
    return h.exitInfo;
  };
  t.after(() => h.stop());
  try {
    h.entry = await Promise.race([
      pollUntil(() => h.logs.find(pred) || (h.exitInfo ? 'exited' : null),
        { timeoutMs, intervalMs: 20, what: `a log line from ${bin} ${args.join(' ')}` }),
      exited.then((e) => { throw new Error(`exited before the expected log line: ${JSON.stringify(e)}`); }),
    ]);
    if (h.entry === 'exited') throw new Error(`exited before the expected log line: ${JSON.stringify(h.exitInfo)}`);
  } catch (err) {
    err.message += `\n--- stderr ---\n${h.stderr.slice(-3000)}`;
    await h.stop();
    throw err;
  }
  return h;
}
