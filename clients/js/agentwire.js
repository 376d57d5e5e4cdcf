/**
 * agentwire.js -- JavaScript client for the agentwire WebSocket gateway
 * (wire protocol version 1). One ES module, no dependencies; runs in browsers
 * and in Node 20+ (pass the `ws` package's constructor as `WebSocket`).
 *
 * What it does for you: subprotocol authentication, reconnect with exponential
 * backoff and full jitter, resume from the last seq/epoch on every reconnect,
 * duplicate dropping, gap recovery, reset notification when the server cannot
 * resume, token refresh before expiry, and promise-based requests.
 *
 * @module agentwire
 */

/** Names accepted by `on()` that are client lifecycle notifications, not event types. */
const LIFECYCLE = new Set(['open', 'close', 'reset', 'error', 'status', 'event', 'message', 'refresh']);
/** Server messages that are never numbered events. */
const NON_EVENTS = new Set(['connection_established', 'pong', 'heartbeat_ack', 'ack', 'error', 'resume_failed']);
const CLIENT_CLOSE = 4000; // code the client uses when it abandons a socket itself
const MAX_TIMER_MS = 2 ** 31 - 1;

/** An error with a machine-readable `code` (server error codes, or the client's own). */
export class AgentwireError extends Error {
  /**
   * @param {string} code e.g. 'not_connected', 'timeout', 'token_expired', or a server code
   * @param {string} message
   * @param {object} [details] the server's reply, when there was one
   */
  constructor(code, message, details) {
    super(message);
    this.name = 'AgentwireError';
    this.code = code;
    this.details = details;
  }
}

/** base64url (no padding) of the UTF-8 bytes of text, without Buffer. */
export function base64url(text) {
  let bin = '';
  for (const b of new TextEncoder().encode(text)) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** The claims of a JWT, decoded WITHOUT verification (only to read exp/iat); null if unreadable. */
export function decodeJwt(token) {
  try {
    const b64 = String(token).split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
    const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0))));
    return claims && typeof claims === 'object' ? claims : null;
  } catch {
    return null;
  }
}

/**
 * @typedef {object} AgentwireOptions
 * @property {string} [url] ws(s):// URL of /ws; in a browser defaults to `/ws` on the page's host
 * @property {string} [token] a fixed JWT (cannot be refreshed; use getToken for long sessions)
 * @property {(ctx: {reason: 'connect'|'reconnect'|'refresh'|'expired'}) => string|Promise<string>} [getToken]
 *   called before every (re)connect and for every refresh, so a fresh token is always used
 * @property {Function} [WebSocket] WebSocket constructor (required in Node: `import WebSocket from 'ws'`)
 * @property {object} [webSocketOptions] third constructor argument (Node `ws` only, e.g. {headers})
 * @property {boolean} [reconnect=true] reconnect after a close not asked for by close()
 * @property {number} [backoffBaseMs=500] first backoff cap; doubles per failed attempt
 * @property {number} [backoffMaxMs=30000] largest backoff cap
 * @property {number} [maxRetries=Infinity] consecutive failed attempts before giving up
 * @property {number} [connectTimeoutMs=10000] time for a socket to deliver connection_established
 * @property {number} [requestTimeoutMs=10000] default time for a request's reply
 * @property {boolean} [refresh=true] send `refresh` before the token expires (needs getToken)
 * @property {number} [refreshBeforeMs] how long before exp; default min(60 s, 10% of the token's lifetime)
 * @property {boolean} [heartbeat=true] send `heartbeat` every server heartbeat interval; a socket
 *   silent for two intervals is treated as dead and replaced
 * @property {number} [lastSeq] start position (with epoch): resume from here on the first connect
 * @property {string} [epoch] epoch of lastSeq
 * @property {(info: ResetInfo) => (void|number|{seq:number}|Promise<void|number|{seq:number}>)} [onReset]
 *   the server could not replay what was missed: reload state. If it returns a promise, events are
 *   held until it settles; a resolved seq (number or {seq}) says what the reload covered
 * @property {() => number} [random=Math.random] for tests
 * @property {(fn: Function, ms: number) => any} [setTimeout] for tests
 * @property {(id: any) => void} [clearTimeout] for tests
 * @property {() => number} [now=Date.now] for tests
 */

/** @typedef {{epoch: string, seq: number, previousEpoch: string|null, previousSeq: number|null}} ResetInfo */

/** A client of one user's event stream. Create it, attach listeners, then `await connect()`. */
export class AgentwireClient {
  /** @param {AgentwireOptions} options */
  constructor(options = {}) {
    const o = { ...options };
    if (!o.token && typeof o.getToken !== 'function') throw new TypeError('agentwire: give token or getToken');
    if (!o.url && globalThis.location) o.url = '/ws';
    if (!o.url) throw new TypeError('agentwire: url is required');
    this._WS = o.WebSocket || globalThis.WebSocket;
    if (typeof this._WS !== 'function') {
      throw new TypeError('agentwire: no WebSocket; in Node pass {WebSocket} from the "ws" package');
    }
    this._o = {
      reconnect: true, backoffBaseMs: 500, backoffMaxMs: 30000, maxRetries: Infinity,
      connectTimeoutMs: 10000, requestTimeoutMs: 10000, refresh: true, heartbeat: true, ...o,
    };
    const st = o.setTimeout || ((fn, ms) => setTimeout(fn, ms));
    const ct = o.clearTimeout || ((id) => clearTimeout(id));
    this._setTimer = st;
    this._clearTimer = (id) => { if (id != null) ct(id); };
    this._now = o.now || (() => Date.now());
    this._random = o.random || Math.random;

    this._status = 'closed';
    this._socket = null;
    this._hello = null;
    this._epoch = o.epoch != null && o.lastSeq != null ? String(o.epoch) : null;
    this._lastSeq = this._epoch != null ? Number(o.lastSeq) : null;
    this._connectionId = null;
    this._userId = null;
    /** Counters: reconnect attempts, dropped duplicates, resets, gaps seen. */
    this.counters = { reconnects: 0, duplicatesDropped: 0, resets: 0, gaps: 0 };

    this._listeners = new Map(); // lifecycle name -> Set(fn)
    this._typeListeners = new Map(); // event type -> Set(fn)
    this._pending = new Map(); // message_id -> {resolve, reject, timer}
    this._msgCounter = 0;
    this._attempt = 0; // consecutive failed attempts (reset by connection_established)
    this._gapStreak = 0; // consecutive gap recoveries without progress
    this._gen = 0; // bumped by close(): invalidates in-flight async work
    this._stopped = true;
    this._everOpened = false;
    this._timers = { reconnect: null, connect: null, refresh: null, heartbeat: null };
    this._token = o.token || null;
    this._tokenExpMs = null;
    this._tokenLifetimeMs = null;
    this._skewMs = 0; // server clock minus ours, from connection_established.server_time
    this._lastRx = 0;
    this._pause = null; // set while an async onReset runs; events are queued
    this._queue = [];
    this._ready = null;
  }

  /* ---------------------------------------------------------------- state */

  /** @returns {'connecting'|'open'|'reconnecting'|'closed'} */
  get status() { return this._status; }
  /** Last event seq delivered (or the position the stream starts from); null before the first connect. */
  get lastSeq() { return this._lastSeq; }
  /** Epoch of lastSeq. */
  get epoch() { return this._epoch; }
  /** Server id of the current connection. */
  get connectionId() { return this._connectionId; }
  /** The user id the server read from the token. */
  get userId() { return this._userId; }
  /** The underlying WebSocket of the current attempt (null between attempts). */
  get socket() { return this._socket; }

  /* ------------------------------------------------------------ listeners */

  /**
   * Listens to a lifecycle notification ('open', 'close', 'reset', 'error', 'status',
   * 'event' (every delivered event), 'message' (every server message, raw), 'refresh'),
   * or to delivered events of one type (any other name, e.g. 'agent_started').
   * @returns {() => void} unsubscribe
   */
  on(name, fn) {
    if (!LIFECYCLE.has(name)) return this.onEvent(name, fn);
    return this._add(this._listeners, name, fn);
  }

  /** Listens to delivered events of one type (also for a type named like a lifecycle name). */
  onEvent(type, fn) { return this._add(this._typeListeners, type, fn); }

  /** Removes a listener added with on() or onEvent(). */
  off(name, fn) {
    this._listeners.get(name)?.delete(fn);
    this._typeListeners.get(name)?.delete(fn);
  }

  _add(map, name, fn) {
    if (typeof fn !== 'function') throw new TypeError('agentwire: listener must be a function');
    if (!map.has(name)) map.set(name, new Set());
    map.get(name).add(fn);
    return () => map.get(name)?.delete(fn);
  }

  _call(set, arg, isError) {
    for (const fn of [...(set || [])]) {
      try {
        fn(arg);
      } catch (err) {
        if (!isError) this._emit('error', err);
      }
    }
  }

  _emit(name, arg) { this._call(this._listeners.get(name), arg, name === 'error'); }

  _error(code, message, details) { this._emit('error', new AgentwireError(code, message, details)); }

  _setStatus(s) {
    if (s === this._status) return;
    this._status = s;
    this._emit('status', s);
  }

  /* ------------------------------------------------------------ lifecycle */

  /**
   * Starts connecting (retrying as configured). Resolves with the first
   * connection_established; rejects if close() is called first or the client gives up.
   * @returns {Promise<object>}
   */
  connect() {
    if (!this._stopped) return this._ready.promise;
    this._stopped = false;
    this._attempt = 0;
    let resolve, reject;
    const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    promise.catch(() => {}); // the caller may ignore it; a rejection must not crash Node
    this._ready = { promise, resolve, reject, settled: false };
    this._open();
    return promise;
  }

  /**
   * Closes for good: no reconnect afterwards (connect() may be called again).
   * Resolves when the socket is closed (at most ~2 s).
   */
  close() {
    const ws = this._socket;
    const wasStopped = this._stopped;
    this._stopped = true;
    this._gen++;
    for (const k of Object.keys(this._timers)) this._clearTimer(this._timers[k]);
    this._socket = null;
    this._hello = null;
    this._failPending('closed', 'client closed');
    this._settleReady(new AgentwireError('closed', 'client closed before connecting'));
    this._setStatus('closed');
    if (!wasStopped) this._emit('close', { code: 1000, reason: 'client closed', willReconnect: false });
    if (!ws) return Promise.resolve();
    return new Promise((resolve) => {
      let timer = null;
      const done = () => { this._clearTimer(timer); resolve(); };
      ws.onopen = ws.onmessage = ws.onerror = () => {};
      ws.onclose = done;
      timer = this._setTimer(() => { if (typeof ws.terminate === 'function') ws.terminate(); resolve(); }, 2000);
      try { ws.close(1000, 'client closed'); } catch { done(); }
      if (ws.readyState === 3) done();
    });
  }

  _settleReady(err, value) {
    const r = this._ready;
    if (!r || r.settled) return;
    r.settled = true;
    if (err) r.reject(err); else r.resolve(value);
  }

  async _fetchToken(reason) {
    const t = this._o.getToken ? await this._o.getToken({ reason }) : this._o.token;
    if (typeof t !== 'string' || !t) throw new AgentwireError('token_error', 'getToken gave no token');
    return t;
  }

  _adoptToken(token) {
    const claims = decodeJwt(token);
    this._token = token;
    const exp = claims && typeof claims.exp === 'number' ? claims.exp * 1000 : null;
    this._tokenExpMs = exp;
    if (exp == null) this._tokenLifetimeMs = null;
    else if (typeof claims.iat === 'number' && claims.iat * 1000 < exp) this._tokenLifetimeMs = exp - claims.iat * 1000;
    else this._tokenLifetimeMs = Math.max(0, exp - (this._now() + this._skewMs));
  }

  /** Stops for good; `quiet` for an expected end (reconnect: false). */
  _fatal(code, message, quiet = false) {
    this._stopped = true;
    this._setStatus('closed');
    const err = new AgentwireError(code, message);
    if (!quiet) this._emit('error', err);
    this._settleReady(err);
  }

  _buildUrl() {
    const u = new URL(this._o.url, globalThis.location ? globalThis.location.href : undefined);
    if (u.protocol === 'http:') u.protocol = 'ws:';
    if (u.protocol === 'https:') u.protocol = 'wss:';
    u.searchParams.delete('since');
    u.searchParams.delete('epoch');
    if (this._epoch != null && this._lastSeq != null) {
      u.searchParams.set('since', String(this._lastSeq));
      u.searchParams.set('epoch', this._epoch);
    }
    return u.toString();
  }

  /** One connection attempt. */
  async _open(tokenReason) {
    const gen = this._gen;
    const first = !this._everOpened;
    this._setStatus(first ? 'connecting' : 'reconnecting');
    if (!first) this.counters.reconnects++;
    this._everOpened = true;
    let token;
    try {
      token = await this._fetchToken(tokenReason || (first ? 'connect' : 'reconnect'));
    } catch (err) {
      if (gen !== this._gen) return;
      this._emit('error', err instanceof AgentwireError ? err : new AgentwireError('token_error', String(err && err.message || err)));
      this._afterClose({ code: 0, reason: 'token_error' });
      return;
    }
    if (gen !== this._gen) return;
    this._adoptToken(token);
    if (!this._o.getToken && this._tokenExpMs != null && this._tokenExpMs <= this._now() + this._skewMs) {
      this._fatal('token_expired', 'the token has expired and there is no getToken to renew it');
      return;
    }
    let ws;
    try {
      ws = new this._WS(this._buildUrl(), ['jwt-auth', `jwt.${base64url(token)}`], ...(this._o.webSocketOptions ? [this._o.webSocketOptions] : []));
    } catch (err) {
      this._error('connect_failed', `could not create a WebSocket: ${err && err.message}`);
      this._afterClose({ code: 0, reason: 'connect_failed' });
      return;
    }
    this._socket = ws;
    this._hello = null;
    if ('binaryType' in ws) ws.binaryType = 'arraybuffer';
    ws.onopen = () => {};
    ws.onerror = () => {}; // the close that follows says what happened
    ws.onmessage = (e) => { if (this._socket === ws) this._onData(e.data); };
    ws.onclose = (e) => {
      if (this._socket !== ws) return;
      this._afterClose({ code: e.code, reason: e.reason || '' });
    };
    this._timers.connect = this._setTimer(() => {
      if (this._socket === ws && !this._hello) this._abandon('connect_timeout');
    }, this._o.connectTimeoutMs);
  }

  /** Drops the current socket on the client's initiative and reconnects. */
  _abandon(reason, delayMs) {
    const ws = this._socket;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = () => {};
    try {
      if (typeof ws.terminate === 'function') ws.terminate(); // Node ws: no lingering close handshake
      else ws.close(CLIENT_CLOSE, reason);
    } catch { /* already closing */ }
    this._afterClose({ code: CLIENT_CLOSE, reason }, delayMs);
  }

  _backoff() {
    const cap = Math.min(this._o.backoffMaxMs, this._o.backoffBaseMs * 2 ** this._attempt);
    return Math.floor(this._random() * cap);
  }

  /** The current socket is gone: clean up, then decide whether and when to reconnect. */
  _afterClose({ code, reason }, delayOverride) {
    for (const k of ['connect', 'refresh', 'heartbeat']) this._clearTimer(this._timers[k]);
    const wasOpen = !!this._hello;
    this._socket = null;
    this._hello = null;
    this._queue = [];
    this._failPending('connection_closed', `connection closed (${code})`);
    if (this._stopped) return;

    let delay = delayOverride;
    let fatal = null;
    if (!this._o.reconnect) fatal = ['closed', `connection closed (${code} ${reason})`];
    else if (this._attempt >= this._o.maxRetries) fatal = ['gave_up', `no connection after ${this._attempt} attempts`];
    else if (delay !== undefined) { /* chosen by the caller (gap recovery) */ }
    else if (code === 4001) {
      if (!this._o.getToken) fatal = ['token_expired', 'token expired and there is no getToken to renew it'];
      else delay = this._attempt === 0 ? 0 : this._backoff(); // fresh token, at once
    } else if (code === 1008) {
      delay = Math.floor(this._o.backoffMaxMs / 2 + (this._random() * this._o.backoffMaxMs) / 2);
    } else delay = this._backoff();

    this._emit('close', { code, reason, wasOpen, willReconnect: !fatal, delayMs: fatal ? null : delay });
    if (fatal) { this._fatal(fatal[0], fatal[1], !this._o.reconnect); return; }
    this._attempt++;
    this._setStatus('reconnecting');
    const tokenReason = code === 4001 ? 'expired' : 'reconnect';
    this._timers.reconnect = this._setTimer(() => {
      this._timers.reconnect = null;
      if (!this._stopped) this._open(tokenReason);
    }, delay);
  }

  /* ------------------------------------------------------------- messages */

  _onData(data) {
    let text = data;
    if (typeof data !== 'string') {
      try { text = new TextDecoder().decode(data); } catch { return; }
    }
    let msg;
    try { msg = JSON.parse(text); } catch { msg = null; }
    if (!msg || typeof msg !== 'object' || Array.isArray(msg)) {
      this._error('bad_message', 'server sent something that is not a JSON object');
      return;
    }
    this._lastRx = this._now();
    this._emit('message', msg);
    if (msg.type === 'connection_established') this._onHello(msg);
    else if (typeof msg.seq === 'number' && !NON_EVENTS.has(msg.type)) this._onEvent(msg);
    else this._onReply(msg);
  }

  _onHello(h) {
    if (this._hello) return; // only the first frame is a hello
    this._clearTimer(this._timers.connect);
    this._hello = h;
    this._connectionId = h.connection_id;
    this._userId = h.user_id;
    if (typeof h.server_time === 'number') this._skewMs = h.server_time - this._now();
    this._attempt = 0;
    this._lastRx = this._now();
    const prevEpoch = this._epoch;
    const prevSeq = this._lastSeq;
    let reset = false;
    if (prevEpoch == null) {
      this._epoch = h.epoch; // first connect without a start position: begin at the present
      this._lastSeq = h.seq;
    } else if (!(h.epoch === prevEpoch && (h.resumed || h.seq === prevSeq))) {
      // Not resumed (a new epoch, or history no longer reaching back to lastSeq). Same epoch
      // with seq === lastSeq means nothing was missed, whatever `resumed` says.
      reset = true;
    }
    this._setStatus('open');
    if (reset) this._reset(h, prevEpoch, prevSeq);
    this._emit('open', {
      connectionId: h.connection_id, userId: h.user_id, epoch: this._epoch, seq: h.seq,
      resumed: !reset && prevEpoch != null, missed: h.missed || 0, hello: h,
    });
    this._settleReady(null, h);
    this._scheduleRefresh();
    this._startHeartbeat(h.heartbeat_interval_ms);
  }

  _reset(h, previousEpoch, previousSeq) {
    this._epoch = h.epoch;
    this._lastSeq = h.seq;
    this._gapStreak = 0;
    this.counters.resets++;
    const info = { epoch: h.epoch, seq: h.seq, previousEpoch, previousSeq };
    let r;
    try {
      r = this._o.onReset ? this._o.onReset(info) : undefined;
    } catch (err) {
      this._emit('error', err);
    }
    this._emit('reset', info);
    if (!r || typeof r.then !== 'function') return;
    const token = {};
    this._pause = token;
    this._queue = [];
    const release = (v) => {
      if (this._pause !== token) return;
      const s = typeof v === 'number' ? v : v && typeof v.seq === 'number' ? v.seq : null;
      if (s != null && s > this._lastSeq) this._lastSeq = s;
      this._pause = null;
      const q = this._queue; // events of the current socket (a close empties it)
      this._queue = [];
      const sock = this._socket;
      for (const ev of q) {
        if (this._socket !== sock || this._pause) break;
        this._onEvent(ev);
      }
    };
    r.then(release, (err) => { this._emit('error', err); release(); });
  }

  _onEvent(ev) {
    if (!this._hello) return;
    if (this._pause) { this._queue.push(ev); return; }
    if (ev.epoch !== undefined && ev.epoch !== this._epoch) { this._recoverGap('epoch_changed'); return; }
    if (ev.seq <= this._lastSeq) { this.counters.duplicatesDropped++; return; }
    if (ev.seq > this._lastSeq + 1) { this._recoverGap('gap'); return; }
    this._lastSeq = ev.seq;
    this._gapStreak = 0;
    this._call(this._typeListeners.get(ev.type), ev, false);
    this._emit('event', ev);
  }

  /**
   * A seq jump (or an epoch change) on a live connection: reconnect with since=lastSeq.
   * The server guarantees a gap-free seam for a connection that starts with since,
   * and any new epoch comes back as resumed:false (reset). See README "Gaps".
   */
  _recoverGap(reason) {
    this.counters.gaps++;
    const delay = this._gapStreak === 0 ? 0 : this._backoff();
    this._gapStreak++;
    this._abandon(reason, delay);
  }

  _onReply(msg) {
    const p = msg.message_id != null ? this._pending.get(msg.message_id) : undefined;
    if (p) {
      this._pending.delete(msg.message_id);
      this._clearTimer(p.timer);
      if (msg.type === 'error' || msg.type === 'resume_failed') {
        p.reject(new AgentwireError(msg.code || msg.type, msg.message || msg.type, msg));
      } else p.resolve(msg);
    } else if (msg.type === 'error' || msg.type === 'resume_failed') {
      this._error(msg.code || msg.type, msg.message || msg.type, msg);
    }
  }

  /* ------------------------------------------------------------- timers */

  _scheduleRefresh() {
    this._clearTimer(this._timers.refresh);
    this._timers.refresh = null;
    if (!this._o.refresh || !this._o.getToken || this._tokenExpMs == null) return;
    const before = this._o.refreshBeforeMs ?? Math.min(60000, 0.1 * (this._tokenLifetimeMs || 0));
    const delay = this._tokenExpMs - this._skewMs - before - this._now();
    this._timers.refresh = this._setTimer(() => {
      this._timers.refresh = null;
      this.refresh().catch((err) => { if (err.code !== 'connection_closed') this._emit('error', err); });
    }, Math.min(MAX_TIMER_MS, Math.max(0, delay)));
  }

  _startHeartbeat(intervalMs) {
    if (!this._o.heartbeat || !(intervalMs > 0)) return;
    const ws = this._socket;
    const tick = () => {
      this._timers.heartbeat = null;
      if (this._socket !== ws) return;
      if (this._now() - this._lastRx > 2 * intervalMs) { this._abandon('heartbeat_timeout'); return; }
      try { this._send({ type: 'heartbeat' }); } catch { return; }
      this._timers.heartbeat = this._setTimer(tick, intervalMs);
    };
    this._timers.heartbeat = this._setTimer(tick, intervalMs);
  }

  /* ------------------------------------------------------------- requests */

  _send(msg) {
    const ws = this._socket;
    if (!ws || this._status !== 'open' || (ws.readyState !== undefined && ws.readyState !== 1)) {
      throw new AgentwireError('not_connected', 'not connected');
    }
    ws.send(JSON.stringify(msg));
  }

  _failPending(code, message) {
    for (const [, p] of this._pending) {
      this._clearTimer(p.timer);
      p.reject(new AgentwireError(code, message));
    }
    this._pending.clear();
  }

  _request(msg, timeoutMs = this._o.requestTimeoutMs) {
    const id = `m${++this._msgCounter}_${Math.floor(this._random() * 1e9).toString(36)}`;
    const out = { ...msg, message_id: id };
    return new Promise((resolve, reject) => {
      try {
        this._send(out);
      } catch (err) {
        reject(err);
        return;
      }
      const timer = this._setTimer(() => {
        this._pending.delete(id);
        reject(new AgentwireError('timeout', `no reply to ${msg.type} within ${timeoutMs} ms`));
      }, timeoutMs);
      this._pending.set(id, { resolve, reject, timer });
    });
  }

  /**
   * Sends any client message and resolves with the reply carrying its message_id
   * (rejects with AgentwireError on an `error` reply, a timeout, or a closed connection).
   * Requests are not queued: while not 'open' they reject with code 'not_connected'.
   * @param {string} type
   * @param {object} [payload]
   * @param {{timeoutMs?: number}} [opts]
   */
  request(type, payload, opts = {}) {
    return this._request(payload === undefined ? { type } : { type, payload }, opts.timeoutMs);
  }

  /**
   * Starts an agent run. Resolves with the ack ({run_id, thread_id, ...}).
   * @param {{userRequest: string, threadId?: string, context?: object, settings?: object}} args
   */
  startAgent({ userRequest, threadId, context, settings } = {}) {
    return this.request('start_agent', clean({ user_request: userRequest, thread_id: threadId, context, settings }));
  }

  /**
   * Sends a user message (starts a run like startAgent). Resolves with the ack.
   * @param {{content: string, threadId?: string, references?: any}} args
   */
  sendMessage({ content, threadId, references } = {}) {
    return this.request('user_message', clean({ content, thread_id: threadId, references }));
  }

  /** Stops a run; it ends with agent_completed status "cancelled". Resolves with the ack. */
  stopAgent(runId) { return this.request('stop_agent', { run_id: runId }); }

  /** Round trip to the server. Resolves with the pong plus `rttMs`. */
  async ping(opts = {}) {
    const t0 = this._now();
    const pong = await this._request({ type: 'ping', timestamp: t0 }, opts.timeoutMs);
    return { ...pong, rttMs: this._now() - t0 };
  }

  /**
   * Gets a token from getToken and sends `refresh` (done automatically before exp).
   * Resolves with the ack ({expires_at}); the token is used from then on.
   */
  async refresh() {
    if (!this._o.getToken) throw new AgentwireError('no_get_token', 'refresh needs getToken');
    const gen = this._gen;
    const ws = this._socket;
    const oldExp = this._tokenExpMs;
    const token = await this._fetchToken('refresh');
    if (gen !== this._gen || ws !== this._socket) throw new AgentwireError('connection_closed', 'connection changed during refresh');
    const ack = await this._request({ type: 'refresh', payload: { token } });
    if (ws !== this._socket) return ack;
    this._adoptToken(token);
    this._emit('refresh', { expiresAt: ack.expires_at, ack });
    if (this._tokenExpMs != null && (oldExp == null || this._tokenExpMs > oldExp)) this._scheduleRefresh();
    else this._error('refresh_not_extended', 'getToken returned a token that does not expire later; ' +
      'the connection will be closed with 4001 at expiry and reconnect with a new token');
    return ack;
  }
}

function clean(obj) {
  const out = {};
  for (const [k, v] of Object.entries(obj)) if (v !== undefined) out[k] = v;
  return out;
}

export default AgentwireClient;
