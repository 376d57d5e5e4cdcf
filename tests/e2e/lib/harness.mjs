// harness.mjs -- runs the real agentwire binary and talks to it as clients do.
//
// Every wait here has a timeout, so a broken server fails a test instead of
// hanging it; nothing sleeps for a fixed time. Servers started with
// startServer/useServer remember the clients and raw sockets opened against
// them, and stop() ends them all, so a test that stops its server leaves
// nothing behind.

import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(here, '..', '..', '..');
export const BIN = process.env.AGENTWIRE_BIN || path.join(REPO_ROOT, 'build', 'agentwire');

/** Default wait for one expected thing (a message, a close, a response). */
export const WAIT_MS = 5000;
const START_TIMEOUT_MS = 15000;
const STOP_KILL_MS = 10000;

export const nowS = () => Math.floor(Date.now() / 1000);
export const randomId = (prefix = 'u') => `${prefix}_${crypto.randomBytes(6).toString('hex')}`;

/* ------------------------------------------------------------------ */
/* timeouts                                                             */
/* ------------------------------------------------------------------ */

/** Resolves or rejects like promise, or rejects with `what` after ms. */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Calls fn until it returns a truthy value (returned), every intervalMs, at most timeoutMs.
 * Only for states that no event announces (an HTTP endpoint's answer, a registry). */
export async function pollUntil(fn, { timeoutMs = WAIT_MS, intervalMs = 20, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() >= deadline) {
      const detail = last instanceof Error ? last.message : JSON.stringify(last);
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${detail})`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/* ------------------------------------------------------------------ */
/* the server process                                                   */
/* ------------------------------------------------------------------ */

const liveServers = new Set();

/** Turns an argv list into [[flag, value], ...]; "--flag=value" and "--flag value" both work. */
function flagPairs(args) {
  const pairs = [];
  for (let i = 0; i < args.length; i++) {
    const a = String(args[i]);
    if (a.startsWith('--') && a.includes('=')) {
      const eq = a.indexOf('=');
      pairs.push([a.slice(0, eq), a.slice(eq + 1)]);
    } else if (a.startsWith('--') && i + 1 < args.length && !String(args[i + 1]).startsWith('--')) {
      pairs.push([a, String(args[i + 1])]);
      i++;
    } else {
      pairs.push([a, undefined]);
    }
  }
  return pairs;
}

/** Default flags, overridden by extraArgs flag by flag; `omit` drops defaults.
 * A public key (--jwt-public-key) replaces the default --jwt-secret. */
export function buildArgs(defaults, extraArgs = [], omit = []) {
  const extra = flagPairs(extraArgs);
  const given = new Set(extra.map(([f]) => f));
  const drop = new Set(omit);
  if (given.has('--jwt-public-key')) drop.add('--jwt-secret');
  const out = [];
  for (const [f, v] of flagPairs(defaults)) {
    if (given.has(f) || drop.has(f)) continue;
    out.push(f);
    if (v !== undefined) out.push(v);
  }
  for (const [f, v] of extra) {
    out.push(f);
    if (v !== undefined) out.push(v);
  }
  return out;
}

/** The test's environment without the server's own AGENTWIRE_* settings (a
 * developer's shell must not change what a test configures), plus env. */
function serverEnv(env) {
  const out = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('AGENTWIRE_')) out[k] = v;
  return { ...out, ...env };
}

function binaryMissing() {
  try {
    fs.accessSync(BIN, fs.constants.X_OK);
    return null;
  } catch {
    return `agentwire binary not found or not executable at ${BIN} (build it, or set AGENTWIRE_BIN)`;
  }
}

/**
 * Starts the server on 127.0.0.1 with a random port, JWT secret and API key.
 * Resolves once it logged {"msg":"listening","addr":"127.0.0.1:PORT"} on stderr.
 * opts.omit: default flags to leave out (e.g. ['--jwt-leeway-s'] to get the server's default).
 */
export async function startServer(extraArgs = [], env = {}, opts = {}) {
  const missing = binaryMissing();
  if (missing) throw new Error(missing);
  const secret = crypto.randomBytes(24).toString('hex');
  const apiKey = `ak_${crypto.randomBytes(16).toString('hex')}`;
  const defaults = [
    '--listen', '127.0.0.1:0',
    '--log-format', 'json',
    '--jwt-secret', secret,
    '--api-key', apiKey,
    '--jwt-leeway-s', '0',
  ];
  const args = buildArgs(defaults, extraArgs, opts.omit || []);
  const effective = Object.fromEntries(flagPairs(args));
  const proc = spawn(BIN, args, {
    env: serverEnv(env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });

  const logs = [];
  let stderrText = '';
  let stdoutText = '';
  let exitInfo = null;
  const exited = new Promise((resolve) => {
    proc.on('exit', (code, signal) => {
      exitInfo = { code, signal };
      resolve(exitInfo);
    });
  });
  // 'close' comes after both pipes ended: every log line has been read.
  const closed = new Promise((resolve) => proc.on('close', resolve));
  let spawnError = null;
  proc.on('error', (err) => { spawnError = err; });

  let onListening;
  const listening = new Promise((resolve) => { onListening = resolve; });
  let partial = '';
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (chunk) => {
    stderrText += chunk;
    partial += chunk;
    let nl;
    while ((nl = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, nl).replace(/\r$/, '');
      partial = partial.slice(nl + 1);
      if (!line.trim()) continue;
      let entry;
      try {
        entry = JSON.parse(line);
      } catch {
        entry = { unparsed: line };
      }
      logs.push(entry);
      if (entry && entry.msg === 'listening' && typeof entry.addr === 'string') onListening(entry);
    }
  });
  proc.stdout.setEncoding('utf8');
  proc.stdout.on('data', (chunk) => { stdoutText += chunk; });

  const describe = () =>
    `args: ${JSON.stringify(args)}\n--- stderr ---\n${stderrText.slice(-4000)}` +
    (stdoutText ? `\n--- stdout ---\n${stdoutText.slice(-2000)}` : '');

  let listenEntry;
  try {
    listenEntry = await withTimeout(
      Promise.race([
        listening,
        exited.then((e) => {
          throw new Error(`agentwire exited before listening (code ${e.code}, signal ${e.signal})`);
        }),
        new Promise((_, reject) => proc.once('error', (err) => reject(new Error(`spawn failed: ${err.message}`)))),
      ]),
      START_TIMEOUT_MS,
      'agentwire to log {"msg":"listening"}',
    );
  } catch (err) {
    if (!exitInfo) proc.kill('SIGKILL');
    await withTimeout(closed, 5000, 'process to close').catch(() => {});
    err.message += `\n${describe()}`;
    throw err;
  }
  const addr = listenEntry.addr;
  const port = Number(addr.slice(addr.lastIndexOf(':') + 1));
  if (!addr.startsWith('127.0.0.1:') || !Number.isInteger(port) || port <= 0) {
    proc.kill('SIGKILL');
    throw new Error(`listening log has a bad addr ${JSON.stringify(addr)}\n${describe()}`);
  }

  const server = {
    port,
    addr,
    url: `ws://127.0.0.1:${port}/ws`,
    httpUrl: `http://127.0.0.1:${port}`,
    secret,
    apiKey,
    args,
    flags: effective,
    proc,
    logs,
    clients: new Set(),
    sockets: new Set(),
    get stderr() { return stderrText; },
    get exitInfo() { return exitInfo; },
    exited,
    describe,
    /** ws URL with an optional query object or string. */
    wsUrl(query, pathName = '/ws') {
      const q = typeof query === 'string' ? query : query ? new URLSearchParams(query).toString() : '';
      return `ws://127.0.0.1:${port}${pathName}${q ? `?${q}` : ''}`;
    },
    /** HS256 token for sub signed with this server's secret. */
    token(sub, claims = {}) {
      return signHS256(secret, { sub, ...claims });
    },
    /** Sends SIGTERM (once) and resolves the exit without waiting for it. */
    signal(sig = 'SIGTERM') {
      if (!exitInfo) proc.kill(sig);
    },
    /**
     * SIGTERM, await exit (SIGKILL after 10 s), then end every client and socket
     * opened against this server. Resolves {code, signal, killed}.
     * With {check: true} rejects unless the process exited 0 by itself.
     */
    async stop({ check = false } = {}) {
      let killed = false;
      if (!exitInfo && !spawnError) {
        proc.kill('SIGTERM');
        try {
          await withTimeout(exited, STOP_KILL_MS, 'agentwire to exit after SIGTERM');
        } catch {
          killed = true;
          proc.kill('SIGKILL');
          await withTimeout(exited, 5000, 'agentwire to exit after SIGKILL').catch(() => {});
        }
      }
      await withTimeout(closed, 5000, 'agentwire pipes to close').catch(() => {});
      for (const c of server.clients) c.terminate();
      for (const s of server.sockets) s.destroy();
      liveServers.delete(server);
      const result = { ...(exitInfo || { code: null, signal: null }), killed };
      if (check && (killed || result.code !== 0)) {
        throw new Error(
          `agentwire did not exit cleanly after SIGTERM: ${JSON.stringify(result)}\n${describe()}`,
        );
      }
      return result;
    },
  };
  liveServers.add(server);
  return server;
}

/** startServer, stopped (and checked for a clean exit) when test t ends. */
export async function useServer(t, extraArgs = [], env = {}, opts = {}) {
  const server = await startServer(extraArgs, env, opts);
  t.after(() => server.stop({ check: opts.checkExit !== false }));
  return server;
}

/**
 * Runs the binary with the given args (the default flags apply unless
 * overridden) and expects it to exit by itself. Resolves {code, signal, stderr, stdout}.
 */
export async function runExpectExit(extraArgs = [], { timeoutMs = 10000, omit = [], noDefaults = false, env = {} } = {}) {
  const missing = binaryMissing();
  if (missing) throw new Error(missing);
  const defaults = [
    '--listen', '127.0.0.1:0',
    '--log-format', 'json',
    '--jwt-secret', crypto.randomBytes(24).toString('hex'),
    '--api-key', `ak_${crypto.randomBytes(16).toString('hex')}`,
    '--jwt-leeway-s', '0',
  ];
  const args = noDefaults ? extraArgs.map(String) : buildArgs(defaults, extraArgs, omit);
  const proc = spawn(BIN, args, { env: serverEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  let stdout = '';
  proc.stderr.setEncoding('utf8').on('data', (c) => { stderr += c; });
  proc.stdout.setEncoding('utf8').on('data', (c) => { stdout += c; });
  const closed = new Promise((resolve, reject) => {
    proc.on('close', (code, signal) => resolve({ code, signal, stderr, stdout, args }));
    proc.on('error', reject);
  });
  try {
    return await withTimeout(closed, timeoutMs, `agentwire ${args.join(' ')} to exit`);
  } catch (err) {
    proc.kill('SIGKILL');
    err.message += `\n--- stderr ---\n${stderr}`;
    throw err;
  }
}

/* ------------------------------------------------------------------ */
/* tokens                                                               */
/* ------------------------------------------------------------------ */

export function b64url(input) {
  const buf = Buffer.isBuffer(input) ? input : Buffer.from(typeof input === 'string' ? input : JSON.stringify(input));
  return buf.toString('base64url');
}

function withDefaults(claims) {
  return { sub: 'user1', exp: nowS() + 3600, ...claims };
}

/** header.payload with the given header and claims (no defaults applied). */
export function unsignedParts(header, claims) {
  return `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
}

/** HS256 JWT; claims default {sub:'user1', exp: now+3600}; a claim set to undefined is left out. */
export function signHS256(secret, claims = {}, header = {}) {
  const input = unsignedParts({ alg: 'HS256', typ: 'JWT', ...header }, withDefaults(claims));
  const sig = crypto.createHmac('sha256', secret).update(input).digest();
  return `${input}.${b64url(sig)}`;
}

/** HMAC JWT with another hash (for "wrong algorithm" tests): 'HS384' or 'HS512'. */
export function signHMAC(alg, secret, claims = {}) {
  const hash = { HS256: 'sha256', HS384: 'sha384', HS512: 'sha512' }[alg];
  const input = unsignedParts({ alg, typ: 'JWT' }, withDefaults(claims));
  return `${input}.${b64url(crypto.createHmac(hash, secret).update(input).digest())}`;
}

/** Unsigned token with alg "none". */
export function signNone(claims = {}) {
  return `${unsignedParts({ alg: 'none', typ: 'JWT' }, withDefaults(claims))}.`;
}

/**
 * RS256 / ES256 / EdDSA JWT with a node:crypto private key (KeyObject or PEM).
 * ES256 signatures are raw R||S (ieee-p1363) as JWS requires; opts.dsaEncoding
 * 'der' makes a wrongly encoded one for negative tests.
 */
export function signWith(alg, privateKey, claims = {}, opts = {}) {
  const input = unsignedParts({ alg, typ: 'JWT', ...(opts.header || {}) }, withDefaults(claims));
  const data = Buffer.from(input);
  let sig;
  if (alg === 'RS256') sig = crypto.sign('sha256', data, privateKey);
  else if (alg === 'ES256') {
    sig = crypto.sign('sha256', data, { key: privateKey, dsaEncoding: opts.dsaEncoding || 'ieee-p1363' });
    // agentwire takes the low-S spelling only (s <= n/2); opts.highS makes the other one
    if (!opts.dsaEncoding) sig = es256WithS(sig, opts.highS ? 'high' : 'low');
  }
  else if (alg === 'EdDSA') sig = crypto.sign(null, data, privateKey);
  else throw new Error(`signWith: unsupported alg ${alg}`);
  return `${input}.${b64url(sig)}`;
}

const P256_N = BigInt('0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551');

/** A raw R||S ES256 signature rewritten to its low-S (s <= n/2) or high-S spelling. */
export function es256WithS(sig, which) {
  const s = BigInt(`0x${sig.subarray(32).toString('hex')}`);
  const isHigh = s > P256_N / 2n;
  if ((which === 'high') === isHigh) return sig;
  const flipped = Buffer.from((P256_N - s).toString(16).padStart(64, '0'), 'hex');
  return Buffer.concat([sig.subarray(0, 32), flipped]);
}

/** A key pair for alg with the public key as SPKI PEM text. */
export function generateKeys(alg) {
  let pair;
  if (alg === 'RS256') pair = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  else if (alg === 'ES256') pair = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  else if (alg === 'EdDSA') pair = crypto.generateKeyPairSync('ed25519');
  else throw new Error(`generateKeys: unsupported alg ${alg}`);
  return {
    privateKey: pair.privateKey,
    publicKey: pair.publicKey,
    publicPem: pair.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}

/** Writes text to a new temp file, removed when test t ends. Returns its path. */
export function tempFile(t, name, text) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentwire-e2e-'));
  const file = path.join(dir, name);
  fs.writeFileSync(file, text);
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return file;
}

/* ------------------------------------------------------------------ */
/* WebSocket clients                                                    */
/* ------------------------------------------------------------------ */

function serverForUrl(url) {
  let port;
  try {
    port = Number(new URL(url).port);
  } catch {
    return null;
  }
  for (const s of liveServers) if (s.port === port) return s;
  return null;
}

let messageCounter = 0;
export const uniqueMessageId = (prefix = 'm') => `${prefix}${++messageCounter}_${crypto.randomBytes(3).toString('hex')}`;

function toPredicate(p) {
  if (p === undefined || p === null) return () => true;
  if (typeof p === 'string') return (m) => m && m.type === p;
  if (typeof p === 'function') return p;
  throw new Error('predicate must be a type string or a function');
}

/** A connected client: every text message is parsed and buffered in `messages`. */
export class Client {
  constructor(ws, url) {
    this.ws = ws;
    this.url = url;
    this.messages = []; // {data, consumed}
    this.raw = [];
    this.pings = 0;
    this.closeInfo = null;
    this.hello = null;
    this._waiters = new Set();
    this._closeWaiters = new Set();
    this._pingWaiters = new Set();
    ws.on('message', (data, isBinary) => {
      const text = data.toString('utf8');
      this.raw.push({ text, isBinary });
      let parsed;
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = { __unparsable: text, __binary: isBinary };
      }
      this.messages.push({ data: parsed, consumed: false });
      for (const w of [...this._waiters]) w.check();
    });
    ws.on('ping', () => {
      this.pings++;
      for (const w of [...this._pingWaiters]) w();
    });
    ws.on('close', (code, reason) => {
      this.closeInfo = { code, reason: reason.toString('utf8') };
      for (const w of [...this._waiters]) w.check();
      for (const w of [...this._closeWaiters]) w();
    });
    ws.on('error', (err) => { this.lastError = err; });
  }

  get isOpen() {
    return this.ws.readyState === WebSocket.OPEN;
  }

  /** Sends an object as JSON, or a string / Buffer as it is (text frame). */
  send(msg, { binary = false } = {}) {
    const data = typeof msg === 'string' || Buffer.isBuffer(msg) ? msg : JSON.stringify(msg);
    this.ws.send(data, { binary });
  }

  _summary() {
    const recent = this.messages.slice(-5).map((m) => JSON.stringify(m.data).slice(0, 300));
    return `received ${this.messages.length} message(s), last: [${recent.join(', ')}]` +
      (this.closeInfo ? `; closed ${JSON.stringify(this.closeInfo)}` : '');
  }

  /** Returns (and marks consumed) the first unconsumed message matching predicate,
   * waiting up to timeoutMs; rejects at once if the connection closes first. */
  nextMessage(predicate, timeoutMs = WAIT_MS) {
    const match = toPredicate(predicate);
    return new Promise((resolve, reject) => {
      const waiter = {
        check: () => {
          for (const m of this.messages) {
            if (!m.consumed && match(m.data)) {
              m.consumed = true;
              done();
              resolve(m.data);
              return;
            }
          }
          if (this.closeInfo) {
            done();
            reject(new Error(`connection closed ${JSON.stringify(this.closeInfo)} while waiting for a message; ${this._summary()}`));
          }
        },
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no matching message within ${timeoutMs} ms; ${this._summary()}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this._waiters.delete(waiter);
      };
      this._waiters.add(waiter);
      waiter.check();
    });
  }

  /** Waits for count matching messages (in arrival order). */
  async nextMessages(count, predicate, timeoutMs = WAIT_MS) {
    const deadline = Date.now() + timeoutMs;
    const out = [];
    while (out.length < count) {
      const left = Math.max(1, deadline - Date.now());
      try {
        out.push(await this.nextMessage(predicate, left));
      } catch (err) {
        err.message = `got ${out.length} of ${count} messages: ${err.message}`;
        throw err;
      }
    }
    return out;
  }

  /** Unconsumed messages (optionally matching predicate), without consuming them. */
  pending(predicate) {
    const match = toPredicate(predicate);
    return this.messages.filter((m) => !m.consumed && match(m.data)).map((m) => m.data);
  }

  /** Every received message that looks like an event (has a numeric seq). */
  events() {
    return this.messages.map((m) => m.data).filter((d) => d && typeof d.seq === 'number' && d.type !== 'connection_established');
  }

  /**
   * Barrier: a ping round trip. Everything the server queued for this connection
   * before it read the ping has arrived once the pong is here.
   */
  async sync(timeoutMs = WAIT_MS) {
    const id = uniqueMessageId('sync');
    this.send({ type: 'ping', timestamp: Date.now(), message_id: id });
    return this.nextMessage((m) => m.type === 'pong' && m.message_id === id, timeoutMs);
  }

  /** Resolves {code, reason} when the connection is closed. */
  waitClose(timeoutMs = WAIT_MS) {
    if (this.closeInfo) return Promise.resolve(this.closeInfo);
    let w;
    const p = new Promise((resolve) => {
      w = () => resolve(this.closeInfo);
      this._closeWaiters.add(w);
    });
    return withTimeout(p, timeoutMs, `connection to close; ${this._summary()}`).finally(() => this._closeWaiters.delete(w));
  }

  /** Resolves when at least n WebSocket pings have been received in total. */
  waitPings(n, timeoutMs = WAIT_MS) {
    if (this.pings >= n) return Promise.resolve(this.pings);
    let w;
    const p = new Promise((resolve) => {
      w = () => { if (this.pings >= n) resolve(this.pings); };
      this._pingWaiters.add(w);
    });
    return withTimeout(p, timeoutMs, `${n} WebSocket ping(s) (got ${this.pings})`).finally(() => this._pingWaiters.delete(w));
  }

  /** Closes politely and waits for the close to complete. */
  async close(code = 1000, reason = '') {
    if (this.closeInfo) return this.closeInfo;
    if (this.ws.readyState === WebSocket.OPEN) this.ws.close(code, reason);
    try {
      return await this.waitClose(WAIT_MS);
    } finally {
      this.terminate();
    }
  }

  terminate() {
    if (this.ws.readyState !== WebSocket.CLOSED) this.ws.terminate();
  }
}

/**
 * Opens a WebSocket (npm ws). opts: protocols, headers, origin, timeoutMs, and any
 * other ws client option. Resolves a Client once open; rejects (with .status and
 * .body when the server answered HTTP) if the handshake fails.
 */
export function connect(url, opts = {}) {
  const { protocols, timeoutMs = WAIT_MS, ...wsOpts } = opts;
  const ws = new WebSocket(url, protocols, { handshakeTimeout: timeoutMs, ...wsOpts });
  const client = new Client(ws, url);
  const server = serverForUrl(url);
  if (server) server.clients.add(client);
  const opened = new Promise((resolve, reject) => {
    ws.once('open', () => resolve(client));
    ws.on('unexpected-response', (req, res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        const err = new Error(`handshake refused: HTTP ${res.statusCode} ${text.slice(0, 300)}`);
        err.status = res.statusCode;
        err.text = text;
        try { err.body = JSON.parse(text); } catch { err.body = null; }
        req.destroy();
        reject(err);
      });
    });
    ws.once('error', (err) => reject(new Error(`WebSocket error before open: ${err.message}`)));
    ws.once('close', (code) => reject(new Error(`closed (${code}) before open`)));
  });
  return withTimeout(opened, timeoutMs + 1000, `WebSocket handshake to ${url}`).catch((err) => {
    client.terminate();
    throw err;
  });
}

/** connect, then wait for connection_established (kept in client.hello). */
export async function connectReady(url, opts = {}) {
  const client = await connect(url, opts);
  try {
    client.hello = await client.nextMessage('connection_established', opts.timeoutMs || WAIT_MS);
  } catch (err) {
    client.terminate();
    throw err;
  }
  return client;
}

/** Connects as sub to server with an Authorization header; waits for connection_established. */
export function connectAs(server, sub, opts = {}) {
  const { claims = {}, headers = {}, ...rest } = opts;
  return connectReady(server.url, {
    ...rest,
    headers: { Authorization: `Bearer ${server.token(sub, claims)}`, ...headers },
  });
}

/**
 * Attempts a handshake that the server must refuse; resolves
 * {status, body (parsed JSON or null), text, headers}. Rejects if it opens.
 */
export function expectRefusal(url, opts = {}) {
  const { protocols, timeoutMs = WAIT_MS, ...wsOpts } = opts;
  return new Promise((resolve, reject) => {
    let settled = false;
    const ws = new WebSocket(url, protocols, { handshakeTimeout: timeoutMs, ...wsOpts });
    const finish = (err, value) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) reject(err);
      else resolve(value);
    };
    const timer = setTimeout(() => {
      ws.terminate();
      finish(new Error(`no answer to the handshake within ${timeoutMs} ms (${url})`));
    }, timeoutMs + 1000);
    ws.on('unexpected-response', (req, res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('error', (e) => finish(e));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body = null;
        try { body = JSON.parse(text); } catch { /* left null: tests assert on it */ }
        finish(null, { status: res.statusCode, headers: res.headers, text, body });
        req.destroy();
      });
    });
    ws.on('open', () => {
      ws.terminate();
      finish(new Error(`handshake unexpectedly succeeded (${url}, protocol ${JSON.stringify(ws.protocol)})`));
    });
    ws.on('error', (err) => finish(new Error(`handshake failed without an HTTP refusal: ${err.message}`, { cause: err })));
  });
}

/* ------------------------------------------------------------------ */
/* raw TCP / HTTP                                                       */
/* ------------------------------------------------------------------ */

/** Opens a raw TCP socket to the server (tracked: destroyed by stop()). */
export function rawSocket(server) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port: server.port });
    server.sockets.add(sock);
    sock.once('connect', () => resolve(sock));
    sock.once('error', reject);
  });
}

/** Resolves when sock is closed by either side (the 'close' event). */
export function waitSocketClose(sock, timeoutMs = WAIT_MS) {
  if (sock.destroyed && sock.closed) return Promise.resolve();
  return withTimeout(new Promise((resolve) => sock.once('close', resolve)), timeoutMs, 'socket to close');
}

function parseHead(headText) {
  const lines = headText.split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
  const headers = {};
  for (const line of lines.slice(1)) {
    const i = line.indexOf(':');
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  return { status: m ? Number(m[1]) : NaN, statusLine: lines[0], headers };
}

/**
 * Sends a raw HTTP request (a string, CRLFs included) and reads one response:
 * {status, headers, text, body(parsed JSON or null), socket}. A 101 resolves
 * after its head. The socket is destroyed unless keepOpen.
 */
export async function rawHttp(server, request, { timeoutMs = WAIT_MS, keepOpen = false } = {}) {
  const sock = await rawSocket(server);
  const result = new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    let head = null;
    let bodyStart = 0;
    const tryFinish = (ended) => {
      if (!head) {
        const i = buf.indexOf('\r\n\r\n');
        if (i < 0) {
          if (ended) reject(new Error(`connection closed before a response head: ${JSON.stringify(buf.toString())}`));
          return;
        }
        head = parseHead(buf.subarray(0, i).toString('latin1'));
        bodyStart = i + 4;
      }
      const body = buf.subarray(bodyStart);
      const cl = head.headers['content-length'];
      const complete = head.status === 101 || (cl !== undefined ? body.length >= Number(cl) : ended);
      if (!complete) {
        if (ended) reject(new Error(`connection closed mid-body: ${buf.toString()}`));
        return;
      }
      const text = (cl !== undefined ? body.subarray(0, Number(cl)) : body).toString('utf8');
      let json = null;
      try { json = JSON.parse(text); } catch { /* not JSON */ }
      resolve({ ...head, text, body: json, json, socket: sock });
    };
    sock.on('data', (c) => { buf = Buffer.concat([buf, c]); tryFinish(false); });
    sock.on('end', () => tryFinish(true));
    sock.on('close', () => tryFinish(true));
    sock.on('error', (err) => { if (!head) reject(err); });
  });
  sock.write(request);
  try {
    return await withTimeout(result, timeoutMs, `raw HTTP response to ${JSON.stringify(request.split('\r\n')[0])}`);
  } finally {
    if (!keepOpen) sock.destroy();
  }
}

/** A fresh Sec-WebSocket-Key and the Sec-WebSocket-Accept it must produce. */
/* Sends an upgrade on a raw socket; resolves the response head and the bytes
 * that followed it (frames), without losing any. */
export function rawUpgrade(srv, headers, { timeoutMs = 5000 } = {}) {
  const sock = net.connect(srv.port, '127.0.0.1');
  srv.sockets.add(sock);
  sock.on('error', () => {});
  return withTimeout(new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const onData = (c) => {
      buf = Buffer.concat([buf, c]);
      const i = buf.indexOf('\r\n\r\n');
      if (i < 0) return;
      sock.off('data', onData);
      const lines = buf.subarray(0, i).toString('latin1').split('\r\n');
      const hdrs = {};
      for (const l of lines.slice(1)) { const k = l.indexOf(':'); hdrs[l.slice(0, k).toLowerCase()] = l.slice(k + 1).trim(); }
      resolve({ status: Number(lines[0].split(' ')[1]), headers: hdrs, socket: sock, rest: buf.subarray(i + 4), text: buf.toString() });
    };
    sock.on('data', onData);
    sock.on('close', () => reject(new Error('closed before the response head')));
    sock.write(upgradeRequest({ headers }));
  }), timeoutMs, 'the upgrade response');
}

/** Reads server frames (unmasked) from a raw socket, starting with the bytes
 * already read (initial): reader.next() resolves {fin, rsv1, opcode, payload},
 * and rejects once the socket closed with no frame left. */
export function frameReader(sock, initial) {
  let buf = initial ?? Buffer.alloc(0);
  const waiters = [];
  let closed = false;
  const frames = [];
  const pump = () => {
    for (;;) {
      if (buf.length < 2) break;
      let len = buf[1] & 0x7f;
      let off = 2;
      if (len === 126) { if (buf.length < 4) break; len = buf.readUInt16BE(2); off = 4; }
      else if (len === 127) { if (buf.length < 10) break; len = Number(buf.readBigUInt64BE(2)); off = 10; }
      if (buf.length < off + len) break;
      frames.push({ fin: !!(buf[0] & 0x80), rsv1: !!(buf[0] & 0x40), opcode: buf[0] & 0x0f, payload: buf.subarray(off, off + len) });
      buf = buf.subarray(off + len);
    }
    while (waiters.length && (frames.length || closed)) waiters.shift()();
  };
  sock.on('data', (c) => { buf = Buffer.concat([buf, c]); pump(); });
  sock.on('close', () => { closed = true; pump(); });
  pump();
  return {
    async next(ms = WAIT_MS) {
      if (!frames.length && !closed) await withTimeout(new Promise((r) => waiters.push(r)), ms, 'a frame');
      if (!frames.length) throw new Error('connection closed');
      return frames.shift();
    },
  };
}

export function wsKeyPair() {
  const key = crypto.randomBytes(16).toString('base64');
  const accept = crypto.createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
  return { key, accept };
}

/** Text of an upgrade request; fields set to null are left out. */
export function upgradeRequest({ path: p = '/ws', host = '127.0.0.1', key = wsKeyPair().key, version = '13', headers = {} } = {}) {
  const h = {
    Host: host,
    Upgrade: 'websocket',
    Connection: 'Upgrade',
    'Sec-WebSocket-Key': key,
    'Sec-WebSocket-Version': version,
    ...headers,
  };
  let out = `GET ${p} HTTP/1.1\r\n`;
  for (const [k, v] of Object.entries(h)) if (v !== null && v !== undefined) out += `${k}: ${v}\r\n`;
  return `${out}\r\n`;
}

/* ------------------------------------------------------------------ */
/* HTTP API                                                             */
/* ------------------------------------------------------------------ */

/**
 * Calls the HTTP API with fetch. body: object/array (sent as JSON), string or
 * Buffer (sent as is), or undefined. opts.key: API key to send as Bearer
 * (default the server's; null sends none). Resolves {status, json, text, headers}.
 */
export async function api(server, method, pathName, body, { key, headers = {}, timeoutMs = 10000, keepAlive = false } = {}) {
  // One connection per call by default: a pooled keep-alive connection that the
  // server closes for idleness at the moment it is reused would fail a request
  // for no fault of the server (keep-alive has its own test).
  const h = keepAlive ? { ...headers } : { Connection: 'close', ...headers };
  const k = key === undefined ? server.apiKey : key;
  if (k !== null && !Object.keys(h).some((n) => n.toLowerCase() === 'authorization')) h.Authorization = `Bearer ${k}`;
  let payload;
  if (body !== undefined) {
    payload = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
    if (!Object.keys(h).some((n) => n.toLowerCase() === 'content-type')) h['Content-Type'] = 'application/json';
  }
  const res = await fetch(`${server.httpUrl}${pathName}`, {
    method,
    headers: h,
    body: payload,
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, json, text, headers: res.headers };
}

/** POST /api/v1/publish, asserting a 200; returns {seq, epoch, event_id}. */
export async function publish(server, event, opts = {}) {
  const res = await api(server, 'POST', '/api/v1/publish', event, opts);
  if (res.status !== 200) throw new Error(`publish answered ${res.status}: ${res.text}`);
  return res.json;
}

/** Sum of the samples of a Prometheus metric (any labels); NaN when absent. */
export function metricValue(text, name) {
  let sum = NaN;
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m && m[1] === name) sum = (Number.isNaN(sum) ? 0 : sum) + Number(m[3]);
  }
  return sum;
}
