// Clients of bench/cluster.mjs: agentwire nodes (start, ready, stop), user
// tokens, WebSocket subscribers that check every event they get, keep-alive
// HTTP publishers, and the per-user bookkeeping of published and received
// sequence numbers.
import { createHmac } from 'node:crypto';
import net from 'node:net';
import { WebSocket } from 'ws';
import { sleep, spawnGroup, stopGroup } from './proc.mjs';

/** Milliseconds on the monotonic clock (process.hrtime), since this module loaded. */
const T0 = process.hrtime.bigint();
export const nowMs = () => Number(process.hrtime.bigint() - T0) / 1e6;

const b64 = (b) => Buffer.from(b).toString('base64url');
export function token(secret, sub) {
  const h = b64(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const p = b64(JSON.stringify({ sub, exp: Math.floor(Date.now() / 1000) + 6 * 3600 }));
  return `${h}.${p}.${createHmac('sha256', secret).update(`${h}.${p}`).digest('base64url')}`;
}

/* ------------------------------------------------------------------ */
/* agentwire nodes                                                      */
/* ------------------------------------------------------------------ */

/**
 * Starts bin with args (which must contain --listen 127.0.0.1:0 and
 * --log-format json); resolves once it logged its address and /readyz answers
 * 200 (cluster nodes: their shard is connected). Bounded: 15 s.
 */
export async function startNode(bin, args, { name = 'node' } = {}) {
  const child = spawnGroup(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  let port = 0;
  const onData = (d) => {
    log = (log + d).slice(-16000);
    if (!port) {
      const m = log.match(/"addr":"127\.0\.0\.1:(\d+)"/);
      if (m) port = Number(m[1]);
    }
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const alive = () => child.exitCode === null && child.signalCode === null;
  const end = Date.now() + 15000;
  let ready = false;
  while (Date.now() < end && alive()) {
    if (port) {
      const r = await httpOnce(port, 'GET', '/readyz', null, null, 1000).catch(() => null);
      if (r?.status === 200) { ready = true; break; }
    }
    await sleep(20);
  }
  if (!ready) {
    await stopGroup(child, 3000);
    throw new Error(`${name} not ready within 15 s (${alive() ? 'running' : `exit ${child.exitCode ?? child.signalCode}`}); log: ${log.slice(-1200)}`);
  }
  let stopped = false;
  return {
    name,
    port,
    pid: child.pid,
    alive,
    log: () => log,
    async stop() {
      if (stopped) return;
      stopped = true;
      await stopGroup(child, 5000);
    },
  };
}

/* ------------------------------------------------------------------ */
/* HTTP/1.1 keep-alive                                                  */
/* ------------------------------------------------------------------ */

/** Responses framed by Content-Length, from a byte stream. */
class ResponseParser {
  constructor() { this.buf = Buffer.alloc(0); }

  push(chunk) {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const out = [];
    let off = 0;
    for (;;) {
      const i = this.buf.indexOf('\r\n\r\n', off);
      if (i < 0) break;
      const head = this.buf.toString('latin1', off, i);
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(head);
      const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head);
      const len = cl ? Number(cl[1]) : 0;
      if (this.buf.length < i + 4 + len) break;
      out.push({ status: m ? Number(m[1]) : 0, close: /\r\nconnection:\s*close/i.test(head), body: this.buf.toString('utf8', i + 4, i + 4 + len) });
      off = i + 4 + len;
    }
    if (off) this.buf = this.buf.subarray(off);
    return out;
  }
}

/**
 * One keep-alive connection; request() may be called while others are in
 * flight (pipelined, answered in order). A request in flight when the
 * connection closes is rejected (never sent again: a publish may have happened).
 */
export class HttpConn {
  constructor(port, apiKey) {
    this.port = port;
    this.auth = apiKey ? `Authorization: Bearer ${apiKey}\r\n` : '';
    this.inflight = [];
    this.parser = new ResponseParser();
    this.dead = false;
  }

  connect(timeoutMs = 5000) {
    return new Promise((resolve, reject) => {
      const sock = net.connect({ host: '127.0.0.1', port: this.port });
      sock.setNoDelay(true);
      const timer = setTimeout(() => { sock.destroy(); reject(new Error(`no connection to ${this.port} within ${timeoutMs} ms`)); }, timeoutMs);
      sock.once('connect', () => { clearTimeout(timer); resolve(this); });
      sock.once('error', (e) => { clearTimeout(timer); reject(e); });
      sock.on('error', () => {});
      sock.on('data', (c) => {
        for (const r of this.parser.push(c)) {
          const p = this.inflight.shift();
          if (r.close) this.dead = true;
          if (p) p.resolve(r);
        }
      });
      sock.on('close', () => {
        this.dead = true;
        for (const p of this.inflight.splice(0)) p.reject(new Error('connection closed with the request unanswered'));
      });
      this.sock = sock;
    });
  }

  request(method, path, body) {
    if (this.dead) return Promise.reject(new Error('connection closed'));
    return new Promise((resolve, reject) => {
      this.inflight.push({ resolve, reject });
      const b = body == null ? '' : body;
      this.sock.write(`${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n${this.auth}Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(b)}\r\n\r\n${b}`);
    });
  }

  close() {
    this.dead = true;
    this.sock?.destroy();
  }
}

/** One request on a connection of its own; {status, body}. */
export async function httpOnce(port, method, path, body, apiKey, timeoutMs = 5000) {
  const c = await new HttpConn(port, apiKey).connect(timeoutMs);
  let timer;
  try {
    return await Promise.race([
      c.request(method, path, body),
      new Promise((_, rej) => { timer = setTimeout(() => rej(new Error(`${method} ${path}: no answer within ${timeoutMs} ms`)), timeoutMs); }),
    ]);
  } finally {
    clearTimeout(timer);
    c.close();
  }
}

/* ------------------------------------------------------------------ */
/* bookkeeping: what was published, what each connection got            */
/* ------------------------------------------------------------------ */

/**
 * Per user: the receipts of its publishes (count, lowest and highest seq,
 * epochs), and its subscribers. check() compares each subscriber with the
 * receipts: exactly the acknowledged seqs, in order, once each, nothing of
 * another user.
 */
export class Ledger {
  constructor(users) {
    this.users = users;
    this.index = new Map(users.map((u, i) => [u, i]));
    const n = users.length;
    this.ackCount = new Uint32Array(n);
    this.ackMin = new Float64Array(n).fill(Infinity);
    this.ackMax = new Float64Array(n);
    this.epoch = new Array(n).fill(null);
    this.epochMismatch = 0;
    this.publishErrors = 0;
    this.errorSamples = [];
    this.acked = 0;
    this.subs = [];
  }

  ack(ui, receipt) {
    if (!receipt || typeof receipt.seq !== 'number') {
      this.error(JSON.stringify(receipt));
      return false;
    }
    this.ackCount[ui]++;
    this.acked++;
    if (receipt.seq < this.ackMin[ui]) this.ackMin[ui] = receipt.seq;
    if (receipt.seq > this.ackMax[ui]) this.ackMax[ui] = receipt.seq;
    if (this.epoch[ui] === null) this.epoch[ui] = receipt.epoch;
    else if (this.epoch[ui] !== receipt.epoch) this.epochMismatch++;
    return true;
  }

  error(what) {
    this.publishErrors++;
    if (this.errorSamples.length < 5) this.errorSamples.push(String(what).slice(0, 200));
  }

  /** Deliveries still expected (from receipts) and not yet received. */
  outstanding() {
    let n = 0;
    for (const s of this.subs) n += Math.max(0, this.ackCount[s.ui] - s.got);
    return n;
  }

  delivered() {
    let n = 0;
    for (const s of this.subs) n += s.got;
    return n;
  }

  check() {
    const r = {
      users: this.users.length, connections: this.subs.length, acked: this.acked, publish_errors: this.publishErrors,
      deliveries_expected: 0, deliveries: 0, lost: 0, duplicates: 0, reordered: 0, misdelivered: 0,
      unexpected: 0, epoch_mismatch: this.epochMismatch, ack_gaps: 0, closed_by_server: 0, problems: [],
    };
    for (let ui = 0; ui < this.users.length; ui++) {
      const n = this.ackCount[ui];
      if (n && (this.ackMin[ui] !== 1 || this.ackMax[ui] !== n)) r.ack_gaps++;
    }
    for (const s of this.subs) {
      const n = this.ackCount[s.ui];
      r.deliveries_expected += n;
      r.deliveries += s.got;
      r.lost += Math.max(0, n - s.got);
      r.duplicates += s.dup;
      r.reordered += s.gaps;
      r.misdelivered += s.wrongUser;
      // received seqs that no receipt acknowledged (a publish that failed but happened)
      if (s.last > this.ackMax[s.ui]) r.unexpected += s.last - this.ackMax[s.ui];
      if (s.epoch && this.epoch[s.ui] && s.epoch !== this.epoch[s.ui]) r.epoch_mismatch++;
      if (s.closeInfo && !s.closedByUs) r.closed_by_server++;
    }
    for (const k of ['publish_errors', 'lost', 'duplicates', 'reordered', 'misdelivered', 'unexpected', 'epoch_mismatch', 'ack_gaps', 'closed_by_server']) {
      if (r[k]) r.problems.push(`${k.replace(/_/g, ' ')}: ${r[k]}`);
    }
    if (this.errorSamples.length) r.error_samples = this.errorSamples;
    for (const s of this.subs) {
      if (s.closeInfo && !s.closedByUs) {
        r.problems.push(`first close by the server: ${s.user} on ${s.nodeName}: ${JSON.stringify(s.closeInfo)}`);
        break;
      }
    }
    return r;
  }
}

/**
 * A WebSocket subscriber of one user on one node. Every event is checked as it
 * arrives: its user (the envelope's user_id and the payload's u), its seq (the
 * next one: a seq at or below the last is a duplicate, one further ahead a
 * gap), its epoch. onEvent(d, recvMs) sees each event of this user.
 */
export class Subscriber {
  constructor({ node, user, ui, secret, ledger, onEvent }) {
    Object.assign(this, { node, user, ui, secret, ledger, onEvent });
    this.nodeName = node.name;
    this.got = 0;
    this.last = 0;
    this.dup = 0;
    this.gaps = 0;
    this.wrongUser = 0;
    this.epoch = null;
    this.closeInfo = null;
    this.closedByUs = false;
    ledger.subs.push(this);
  }

  open(timeoutMs = 15000) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${this.node.port}/ws`, {
        headers: { Authorization: `Bearer ${token(this.secret, this.user)}` },
        perMessageDeflate: false,
      });
      this.ws = ws;
      let ready = false;
      const timer = setTimeout(() => { if (!ready) { ws.terminate(); reject(new Error(`${this.user} on ${this.nodeName}: no connection_established within ${timeoutMs} ms`)); } }, timeoutMs);
      ws.on('message', (data) => {
        const recv = nowMs();
        let d;
        try { d = JSON.parse(data); } catch { return; }
        if (!ready) {
          if (d.type === 'connection_established') {
            ready = true;
            clearTimeout(timer);
            this.last = d.seq ?? 0;
            this.base = this.last;
            resolve(this);
          }
          return;
        }
        if (typeof d.seq !== 'number') return; // replies, not events
        if (d.user_id !== this.user || d.u !== this.user) { this.wrongUser++; return; }
        if (this.epoch === null) this.epoch = d.epoch;
        if (d.seq <= this.last) { this.dup++; return; }
        if (d.seq !== this.last + 1) this.gaps++;
        this.last = d.seq;
        this.got++;
        if (this.onEvent) this.onEvent(d, recv);
      });
      ws.on('error', (e) => { if (!ready) { clearTimeout(timer); reject(new Error(`${this.user} on ${this.nodeName}: ${e.message}`)); } });
      ws.on('close', (code, reason) => {
        this.closeInfo = { code, reason: String(reason) };
        if (!ready) { clearTimeout(timer); reject(new Error(`${this.user} on ${this.nodeName}: closed ${code} before connection_established`)); }
      });
    });
  }

  close() {
    this.closedByUs = true;
    if (this.ws && this.ws.readyState <= 1) this.ws.terminate();
  }
}

/** Opens subscribers with at most `concurrency` handshakes in flight. */
export async function openAll(subs, concurrency = 50) {
  let next = 0;
  const worker = async () => {
    while (next < subs.length) await subs[next++].open();
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, subs.length) }, worker));
}

/* ------------------------------------------------------------------ */
/* figures                                                              */
/* ------------------------------------------------------------------ */

/** Percentiles (nearest rank) of an unsorted array of numbers. */
export function percentiles(values, ps = [50, 90, 99, 99.9]) {
  const v = Float64Array.from(values).sort();
  const out = { n: v.length };
  if (!v.length) return out;
  for (const p of ps) out[`p${String(p).replace('.', '')}`] = v[Math.min(v.length - 1, Math.max(0, Math.ceil((p / 100) * v.length) - 1))];
  out.max = v[v.length - 1];
  out.mean = v.reduce((a, b) => a + b, 0) / v.length;
  return out;
}
