// rawws.mjs -- a raw RFC 6455 client for the conformance suite.
//
// It opens a plain TCP socket (node:net), sends the upgrade for the echo path
// with ?token=, checks the 101, and then gives the test full control over the
// bytes: the frame writer can produce any frame (any opcode, RSV bits, FIN,
// masked or not, any length encoding, an announced length different from the
// payload), and the frame reader parses what the server sends (frames must be
// unmasked), checks that every server frame is well formed, and notices the
// end of the TCP connection. Every wait has a timeout.

import crypto from 'node:crypto';
import net from 'node:net';
import { randomId, upgradeRequest, wsKeyPair } from '../e2e/lib/harness.mjs';

export const OP = { CONT: 0x0, TEXT: 0x1, BINARY: 0x2, CLOSE: 0x8, PING: 0x9, PONG: 0xa };
export const OP_NAME = { 0: 'cont', 1: 'text', 2: 'binary', 8: 'close', 9: 'ping', 10: 'pong' };

/** Default wait for one expected frame or event. */
export const FRAME_WAIT_MS = 5000;
/** PROTOCOL section 3: after its close frame the server closes TCP within 2 s. */
export const CLOSE_TCP_MS = 2000;
/** Measurement slack on top of CLOSE_TCP_MS (timers, scheduling). */
export const CLOSE_TCP_SLACK_MS = 250;

const toBuf = (p) => (p === undefined || p === null ? Buffer.alloc(0) : Buffer.isBuffer(p) ? p : typeof p === 'string' ? Buffer.from(p, 'utf8') : Buffer.from(p));

/** Shows at most n bytes of buf as hex, for failure messages. */
export function hex(buf, n = 48) {
  const b = toBuf(buf);
  const s = b.subarray(0, n).toString('hex').replace(/(..)/g, '$1 ').trim();
  return b.length > n ? `${s} … (${b.length} bytes)` : `${s} (${b.length} bytes)`;
}

/** A close frame payload: 2-byte code (big endian) and a reason (string or bytes). */
export function closePayload(code, reason = '') {
  const r = toBuf(reason);
  const out = Buffer.alloc(2 + r.length);
  out.writeUInt16BE(code, 0);
  r.copy(out, 2);
  return out;
}

/**
 * Encodes one client frame. Options:
 *  opcode (0..15), payload (Buffer|string|array), fin (true), rsv (0..7),
 *  mask (true: random key; false: unmasked), maskKey (4-byte Buffer),
 *  lenForm ('min' | 7 | 16 | 64: how the length is written, non-minimal on purpose),
 *  length (announced payload length; default payload.length; may differ from the
 *  bytes actually appended, e.g. a header announcing a huge payload that never comes),
 *  len64 (BigInt written as is in a 64-bit length field, MSB included).
 */
export function encodeFrame({
  opcode,
  payload,
  fin = true,
  rsv = 0,
  mask = true,
  maskKey,
  lenForm = 'min',
  length,
  len64,
} = {}) {
  const data = toBuf(payload);
  const announced = length === undefined ? data.length : length;
  let form = lenForm;
  if (len64 !== undefined) form = 64;
  if (form === 'min') form = announced < 126 ? 7 : announced <= 0xffff ? 16 : 64;
  if (form === 7 && announced > 125) throw new Error(`length ${announced} does not fit 7 bits`);
  if (form === 16 && announced > 0xffff) throw new Error(`length ${announced} does not fit 16 bits`);
  const extLen = form === 7 ? 0 : form === 16 ? 2 : 8;
  const key = mask ? (maskKey ? toBuf(maskKey) : crypto.randomBytes(4)) : null;
  const head = Buffer.alloc(2 + extLen + (key ? 4 : 0));
  head[0] = (fin ? 0x80 : 0) | ((rsv & 7) << 4) | (opcode & 0x0f);
  head[1] = (key ? 0x80 : 0) | (form === 7 ? announced : form === 16 ? 126 : 127);
  if (form === 16) head.writeUInt16BE(announced, 2);
  if (form === 64) head.writeBigUInt64BE(len64 !== undefined ? BigInt(len64) : BigInt(announced), 2);
  if (key) key.copy(head, 2 + extLen);
  const body = Buffer.from(data);
  if (key) for (let i = 0; i < body.length; i++) body[i] ^= key[i & 3];
  return Buffer.concat([head, body]);
}

/** Chunk sizes: 1-byte, fixed n, or random in [1, max] (seeded by Math.random). */
export function chunker(kind, n = 1) {
  if (kind === 'random') return () => 1 + Math.floor(Math.random() * n);
  return () => n;
}

export class RawWs {
  constructor(sock, label) {
    this.sock = sock;
    this.label = label;
    this.frames = []; // frames not yet taken by nextFrame
    this.all = []; // every frame received, for reports
    this.violations = []; // server frames that break RFC 6455
    this.tcpClosed = false;
    this.tcpClosedAt = 0;
    this.tcpEnded = false; // the server sent FIN
    this.sockError = null;
    this.bytesIn = 0;
    this._chunks = [];
    this._buffered = 0;
    this._waiters = [];
    this._closeWaiters = [];
    sock.on('data', (c) => this._onData(c));
    sock.on('end', () => { this.tcpEnded = true; });
    sock.on('error', (err) => { this.sockError = err; });
    sock.on('close', () => {
      this.tcpClosed = true;
      this.tcpClosedAt = Date.now();
      this._wake();
      for (const w of this._closeWaiters.splice(0)) w();
    });
  }

  /**
   * Connects to srv (a harness server) and upgrades on path with ?token=.
   * opts: path ('/echo'), sub (random), token, first (bytes sent in the same
   * write as the upgrade request), timeoutMs.
   */
  static async open(srv, { path = '/echo', sub = randomId('conf'), token, first, timeoutMs = FRAME_WAIT_MS } = {}) {
    const tok = token || srv.token(sub);
    const { key, accept } = wsKeyPair();
    const req = Buffer.from(upgradeRequest({ path: `${path}?token=${tok}`, key }), 'latin1');
    const sock = net.connect({ host: '127.0.0.1', port: srv.port });
    srv.sockets.add(sock);
    sock.setNoDelay(true);
    const head = await new Promise((resolve, reject) => {
      let buf = Buffer.alloc(0);
      const timer = setTimeout(() => fail(new Error(`no 101 within ${timeoutMs} ms`)), timeoutMs);
      const fail = (err) => { cleanup(); sock.destroy(); reject(err); };
      const onData = (c) => {
        buf = Buffer.concat([buf, c]);
        const i = buf.indexOf('\r\n\r\n');
        if (i < 0) return;
        cleanup();
        sock.pause();
        resolve({ text: buf.subarray(0, i).toString('latin1'), rest: buf.subarray(i + 4) });
      };
      const onClose = () => fail(new Error(`connection closed before the 101: ${JSON.stringify(buf.toString('latin1'))}`));
      const onError = (err) => fail(err);
      const cleanup = () => {
        clearTimeout(timer);
        sock.off('data', onData);
        sock.off('close', onClose);
        sock.off('error', onError);
      };
      sock.on('data', onData);
      sock.on('close', onClose);
      sock.on('error', onError);
      sock.once('connect', () => sock.write(first ? Buffer.concat([req, toBuf(first)]) : req));
    });
    const lines = head.text.split('\r\n');
    if (!/^HTTP\/1\.1 101 /.test(lines[0])) {
      sock.destroy();
      throw new Error(`expected 101, got ${JSON.stringify(head.text)}`);
    }
    const h = {};
    for (const l of lines.slice(1)) {
      const c = l.indexOf(':');
      if (c > 0) h[l.slice(0, c).trim().toLowerCase()] = l.slice(c + 1).trim();
    }
    if (h['sec-websocket-accept'] !== accept) {
      sock.destroy();
      throw new Error(`bad Sec-WebSocket-Accept ${h['sec-websocket-accept']} (want ${accept})`);
    }
    const ws = new RawWs(sock, sub);
    ws.headers = h;
    if (head.rest.length) ws._onData(head.rest);
    sock.resume();
    return ws;
  }

  /* ---------------- reading ---------------- */

  _onData(chunk) {
    this.bytesIn += chunk.length;
    this._chunks.push(chunk);
    this._buffered += chunk.length;
    this._parse();
  }

  _peek(n) {
    const out = Buffer.alloc(n);
    let off = 0;
    for (const c of this._chunks) {
      const k = Math.min(c.length, n - off);
      c.copy(out, off, 0, k);
      off += k;
      if (off === n) break;
    }
    return out;
  }

  _take(n) {
    if (this._chunks[0].length >= n) {
      const c = this._chunks[0];
      const out = c.subarray(0, n);
      if (c.length === n) this._chunks.shift();
      else this._chunks[0] = c.subarray(n);
      this._buffered -= n;
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const c = this._chunks[0];
      const k = Math.min(c.length, n - off);
      c.copy(out, off, 0, k);
      off += k;
      if (k === c.length) this._chunks.shift();
      else this._chunks[0] = c.subarray(k);
    }
    this._buffered -= n;
    return out;
  }

  _parse() {
    for (;;) {
      if (this._buffered < 2) break;
      const h2 = this._peek(2);
      const len7 = h2[1] & 0x7f;
      const masked = (h2[1] & 0x80) !== 0;
      const ext = len7 === 126 ? 2 : len7 === 127 ? 8 : 0;
      const hlen = 2 + ext + (masked ? 4 : 0);
      if (this._buffered < hlen) break;
      const h = this._peek(hlen);
      let plen = len7;
      if (ext === 2) plen = h.readUInt16BE(2);
      if (ext === 8) {
        const big = h.readBigUInt64BE(2);
        if (big > BigInt(Number.MAX_SAFE_INTEGER)) {
          this.violations.push(`absurd 64-bit length ${big}`);
          this.sock.destroy();
          return;
        }
        plen = Number(big);
      }
      if (this._buffered < hlen + plen) break;
      const raw = this._take(hlen + plen);
      let payload = raw.subarray(hlen);
      if (masked) {
        const key = h.subarray(2 + ext, 2 + ext + 4);
        payload = Buffer.from(payload);
        for (let i = 0; i < payload.length; i++) payload[i] ^= key[i & 3];
      }
      const f = {
        fin: (h[0] & 0x80) !== 0,
        rsv: (h[0] >> 4) & 7,
        opcode: h[0] & 0x0f,
        masked,
        payload,
        at: Date.now(),
      };
      const why = [];
      if (masked) why.push('server frame is masked');
      if (f.rsv) why.push(`RSV bits ${f.rsv} set`);
      if (!(f.opcode <= 2 || (f.opcode >= 8 && f.opcode <= 10))) why.push(`reserved opcode ${f.opcode}`);
      if (f.opcode >= 8 && (!f.fin || plen > 125)) why.push('bad control frame');
      if ((ext === 2 && plen < 126) || (ext === 8 && plen <= 0xffff)) why.push('non-minimal length');
      if (why.length) this.violations.push(`${why.join(', ')}: ${hex(h)}`);
      if (f.opcode === OP.CLOSE) {
        f.code = payload.length >= 2 ? payload.readUInt16BE(0) : null;
        f.reason = payload.length > 2 ? payload.subarray(2).toString('utf8') : '';
      }
      this.frames.push(f);
      this.all.push(f);
    }
    this._wake();
  }

  _wake() {
    for (const w of this._waiters.splice(0)) w();
  }

  _checkViolations() {
    if (this.violations.length) throw new Error(`server broke RFC 6455: ${this.violations.join('; ')}`);
  }

  /** Resolves the next server frame; rejects on timeout or when TCP ends with no frame left. */
  async nextFrame(timeoutMs = FRAME_WAIT_MS, what = 'a frame') {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      this._checkViolations();
      if (this.frames.length) return this.frames.shift();
      if (this.tcpClosed) {
        throw new Error(`connection closed while waiting for ${what} (${this.bytesIn} bytes received, ${this.all.length} frames${this.sockError ? `, ${this.sockError.code}` : ''})`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (${this.all.length} frames so far)`);
      await new Promise((resolve) => {
        const timer = setTimeout(() => { this._waiters = this._waiters.filter((x) => x !== w); resolve(); }, left);
        const w = () => { clearTimeout(timer); resolve(); };
        this._waiters.push(w);
      });
    }
  }

  /** Resolves when the TCP connection is closed; rejects after timeoutMs. */
  waitTcpClose(timeoutMs = FRAME_WAIT_MS) {
    if (this.tcpClosed) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._closeWaiters = this._closeWaiters.filter((x) => x !== w);
        reject(new Error(`TCP connection still open after ${timeoutMs} ms`));
      }, timeoutMs);
      const w = () => { clearTimeout(timer); resolve(); };
      this._closeWaiters.push(w);
    });
  }

  /** A short description of a frame for assertion messages. */
  static describe(f) {
    if (!f) return 'nothing';
    const name = OP_NAME[f.opcode] || `op${f.opcode}`;
    if (f.opcode === OP.CLOSE) return `close ${f.code} ${JSON.stringify(f.reason)}`;
    return `${name}${f.fin ? '' : ' (FIN=0)'} ${hex(f.payload, 24)}`;
  }

  /* ---------------- writing ---------------- */

  /** Writes bytes; resolves when node handed them to the kernel (or the socket failed). */
  write(bytes) {
    const b = toBuf(bytes);
    if (this.sock.destroyed) return Promise.resolve(false);
    return new Promise((resolve) => {
      this.sock.write(b, (err) => resolve(!err));
    });
  }

  /** Writes bytes in pieces whose sizes come from next() (see chunker), one write each. */
  async writeChunks(bytes, next = chunker('fixed', 1)) {
    const b = toBuf(bytes);
    for (let off = 0; off < b.length;) {
      const n = Math.max(1, Math.min(b.length - off, next()));
      if (!(await this.write(b.subarray(off, off + n)))) return false;
      off += n;
    }
    return true;
  }

  /** Encodes and writes one frame (see encodeFrame); opts.chunks: a chunker for the write. */
  send(opcode, payload, opts = {}) {
    const { chunks, ...frameOpts } = opts;
    const bytes = encodeFrame({ opcode, payload, ...frameOpts });
    return chunks ? this.writeChunks(bytes, chunks) : this.write(bytes);
  }

  text(s, opts) { return this.send(OP.TEXT, s, opts); }
  binary(b, opts) { return this.send(OP.BINARY, b, opts); }
  ping(b, opts) { return this.send(OP.PING, b, opts); }
  pong(b, opts) { return this.send(OP.PONG, b, opts); }
  close(code, reason, opts) { return this.send(OP.CLOSE, code === undefined ? Buffer.alloc(0) : closePayload(code, reason), opts); }

  /** Ends the connection from our side without a close frame. */
  destroy() {
    this.sock.destroy();
  }
}
