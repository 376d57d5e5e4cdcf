// The peers of bench/cluster.mjs, each as a cluster on one Redis: Socket.IO
// with its Redis adapter (bench/peers/socketio-server.mjs --redis, one node process
// per member) and nchan in Redis mode (bench/peers/nchan.sh with a Redis URL, one nginx
// instance per member). Start and stop a member, its subscribers (node `ws`
// clients, as agentwire's), the paths and answers of its publish endpoint.
//
// The peers have no per-user sequence number: the benchmark puts a per-user
// index k (1, 2, ...) in every event it publishes, each user's events go
// through one publisher connection (so that they reach the server in k order),
// and a subscriber checks that it gets k = 1..n of its own user, in order,
// once each, as agentwire's subscribers check seqs (the Ledger of
// cluster-clients.mjs, with {seq: k} as the receipt of an answered publish).
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { httpOnce, nowMs, Subscriber, token } from './cluster-clients.mjs';
import { freePortOutsideEphemeral, portAccepts, processTree, sleep, spawnGroup, stopGroup, treeListensOn } from './proc.mjs';

const ROOT = new URL('../..', import.meta.url).pathname.replace(/\/$/, '');
export const SOCKETIO_SCRIPT = 'bench/peers/socketio-server.mjs';
export const NCHAN_SCRIPT = 'bench/peers/nchan.sh';
const NCHAN_MODULE = process.env.NCHAN_MODULE || '/usr/lib/nginx/modules/ngx_nchan_module.so';
// Both peers as the main benchmark runs them: Socket.IO's ping every 60 s (as
// agentwire's heartbeat here); nchan's defaults of nchan.sh, one worker per instance.
export const SOCKETIO_ARGS = ['--ping-interval-ms', '60000'];

/** Version strings for the report. */
export function peerVersions() {
  const pkg = (name) => {
    try { return JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8')).version; } catch { return null; }
  };
  let nchan = null;
  let nginx = null;
  try { nchan = execFileSync('dpkg-query', ['-W', '-f=${Version}', 'libnginx-mod-nchan'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim() || null; } catch { /* none */ }
  // nginx -v prints to stderr
  const v = spawnSync('nginx', ['-v'], { encoding: 'utf8', timeout: 5000 });
  nginx = `${v.stderr ?? ''}${v.stdout ?? ''}`.trim().replace(/^nginx version: /, '') || null;
  return { 'socket.io': pkg('socket.io'), '@socket.io/redis-adapter': pkg('@socket.io/redis-adapter'), redis: pkg('redis'), nginx, nchan };
}

/** null when the peer can run here, else why not. */
export function peerUnavailable(kind) {
  if (kind === 'socketio') {
    for (const p of ['socket.io', '@socket.io/redis-adapter', 'redis']) {
      if (!existsSync(join(ROOT, 'node_modules', p, 'package.json'))) return `npm package ${p} not installed (npm ci)`;
    }
    return null;
  }
  if (kind === 'nchan') {
    if (!existsSync(NCHAN_MODULE)) return `${NCHAN_MODULE} not found (apt-get install libnginx-mod-nchan)`;
    try { execFileSync('nginx', ['-v'], { stdio: 'ignore' }); } catch { return 'nginx not found'; }
    return null;
  }
  return `unknown peer ${kind}`;
}

/* ------------------------------------------------------------------ */
/* members                                                              */
/* ------------------------------------------------------------------ */

/**
 * A Socket.IO process on Redis; resolves once it printed its port (which it
 * does once the adapter is subscribed in Redis). Bounded: 15 s.
 */
export async function startSocketioMember({ redisUrl, name, secret, apiKey }) {
  const args = [SOCKETIO_SCRIPT, '--redis', redisUrl, '--port', '0', '--jwt-secret', secret, '--api-key', apiKey, ...SOCKETIO_ARGS];
  const child = spawnGroup(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  let out = '';
  let port = 0;
  child.stdout.on('data', (d) => {
    if (port) return;
    out += d;
    const m = out.match(/\{"listening":true,"port":(\d+)\}/);
    if (m) port = Number(m[1]);
  });
  child.stderr.on('data', (d) => { log = (log + d).slice(-8000); });
  const alive = () => child.exitCode === null && child.signalCode === null;
  const end = Date.now() + 15000;
  while (!port && alive() && Date.now() < end) await sleep(20);
  if (!port) {
    await stopGroup(child, 3000);
    throw new Error(`socketio ${name} not ready within 15 s (${alive() ? 'running' : `exit ${child.exitCode ?? child.signalCode}`}); log: ${log.slice(-1200)}`);
  }
  let stopped = false;
  return {
    name, port, pid: child.pid, target: 'socketio', alive,
    pids: () => [child.pid],
    log: () => log,
    async stop() {
      if (stopped) return;
      stopped = true;
      await stopGroup(child, 5000);
    },
  };
}

// Work directories of running nginx instances: removed at exit whatever happened.
const dirs = new Set();
process.on('exit', () => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tailFile(file, n = 1500) {
  try { return readFileSync(file, 'utf8').slice(-n).trim(); } catch { return ''; }
}

/** True when the instance's /nchan_status shows its Redis server connected and no upstream unhealthy. */
async function redisConnected(port) {
  const r = await httpOnce(port, 'GET', '/nchan_status', null, null, 2000).catch(() => null);
  if (r?.status !== 200) return false;
  const connected = Number((r.body.match(/^redis connected servers: (\d+)/m) ?? [])[1] ?? 0);
  const unhealthy = Number((r.body.match(/^redis unhealthy upstreams: (\d+)/m) ?? [])[1] ?? 1);
  return connected >= 1 && unhealthy === 0;
}

/**
 * An nginx + nchan instance on Redis, on a free port below the ephemeral
 * range; resolves once its own listening socket accepts, its worker runs and
 * /nchan_status shows Redis connected. Bounded: 15 s, three ports tried.
 */
export async function startNchanMember({ redisUrl, name }) {
  let lastErr;
  for (let attempt = 1; attempt <= 3; attempt++) {
    const dir = mkdtempSync(join(tmpdir(), 'awbench-nchan-cluster-'));
    dirs.add(dir);
    const port = await freePortOutsideEphemeral();
    const child = spawnGroup('sh', [NCHAN_SCRIPT, String(port), join(dir, 'nginx'), redisUrl], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    const keep = (d) => { log = (log + d).slice(-4000); };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const alive = () => child.exitCode === null && child.signalCode === null;
    const errorLog = () => tailFile(join(dir, 'nginx', 'error.log'));
    const cleanup = async () => {
      await stopGroup(child, 5000);
      rmSync(dir, { recursive: true, force: true });
      dirs.delete(dir);
    };
    const end = Date.now() + 15000;
    let ready = false;
    while (Date.now() < end && alive()) {
      // the master (this pid, nchan.sh execs nginx) and at least one worker
      // and its worker is connected to Redis: before that, nchan answers 503 to subscribers and publishers
      if (await portAccepts(port) && treeListensOn(child.pid, port) && processTree(child.pid).length >= 2 && await redisConnected(port)) { ready = true; break; }
      await sleep(25);
    }
    if (ready) {
      let stopped = false;
      return {
        name, port, pid: child.pid, target: 'nchan', alive,
        pids: () => processTree(child.pid),
        log: () => `${log}\n${errorLog()}`.trim(),
        async stop() {
          if (stopped) return;
          stopped = true;
          await cleanup();
        },
      };
    }
    const why = `${log}\n${errorLog()}`.trim();
    lastErr = new Error(`nchan ${name} on port ${port} not ready within 15 s (${alive() ? 'running' : `exit ${child.exitCode ?? child.signalCode}`}); log: ${why.slice(-1200)}`);
    await cleanup();
    if (!/address already in use/i.test(why)) break;
  }
  throw lastErr;
}

/* ------------------------------------------------------------------ */
/* publishing                                                           */
/* ------------------------------------------------------------------ */

/** The publish path of a member: one event, or a batch where there is a batch endpoint. */
export function peerPublishPath(kind, user, batch) {
  if (kind === 'socketio') return batch ? '/publish/batch' : '/publish';
  if (kind === 'nchan') {
    if (batch) throw new Error('nchan has no batch endpoint');
    return `/pub/${user}`;
  }
  throw new Error(`unknown peer ${kind}`);
}

/** True when the answer to a publish of n events means that all n were accepted. */
export function peerPublishOk(kind, r, n) {
  if (kind === 'socketio') {
    if (r.status !== 200) return false;
    try { return JSON.parse(r.body).published === n; } catch { return false; }
  }
  // nchan: 201 Created (the channel had subscribers), 202 Accepted (none, here:
  // the subscriber will miss it, which its check reports)
  return r.status === 201 || r.status === 202;
}

/* ------------------------------------------------------------------ */
/* subscribers                                                          */
/* ------------------------------------------------------------------ */

/**
 * A WebSocket subscriber of one user on one peer member, with the interface of
 * cluster-clients.mjs's Subscriber (got, last, dup, gaps, wrongUser, closeInfo
 * for the Ledger's check). Each event is checked as it arrives: its user (the
 * payload's user_id and u), its per-user index k (the next one: at or below
 * the last is a duplicate, further ahead a gap). Probe events (probe: 1, no k)
 * are counted apart: they only show that the subscription is in place.
 *
 *   socketio: GET /socket.io/?EIO=4&transport=websocket, CONNECT with
 *             {"token": JWT}, events as 42["event",{...}], pings (2) answered (3)
 *   nchan:    GET /sub/<user>, each text frame is one published body
 */
export class PeerSubscriber extends Subscriber {
  constructor({ kind, ...rest }) {
    super(rest); // the same counters and checks as agentwire's subscriber
    this.kind = kind;
    this.probes = 0;
  }

  open(timeoutMs = 15000) {
    return new Promise((resolve, reject) => {
      const url = this.kind === 'socketio'
        ? `ws://127.0.0.1:${this.node.port}/socket.io/?EIO=4&transport=websocket`
        : `ws://127.0.0.1:${this.node.port}/sub/${this.user}`;
      const ws = new WebSocket(url, { perMessageDeflate: false });
      this.ws = ws;
      let ready = false;
      const done = () => { ready = true; clearTimeout(timer); resolve(this); };
      const timer = setTimeout(() => { if (!ready) { ws.terminate(); reject(new Error(`${this.user} on ${this.nodeName}: not subscribed within ${timeoutMs} ms`)); } }, timeoutMs);
      if (this.kind === 'nchan') ws.on('open', done);
      ws.on('message', (data) => {
        const recv = nowMs();
        const text = String(data);
        let d;
        if (this.kind === 'socketio') {
          if (text.startsWith('42')) {
            let a;
            try { a = JSON.parse(text.slice(2)); } catch { return; }
            if (!Array.isArray(a) || a[0] !== 'event') return;
            d = a[1];
          } else {
            if (text === '2') ws.send('3'); // Engine.IO ping
            else if (text[0] === '0' && !ready) ws.send(`40${JSON.stringify({ token: token(this.secret, this.user) })}`);
            else if (text.startsWith('40') && !ready) done();
            else if (text.startsWith('44') && !ready) { clearTimeout(timer); ws.terminate(); reject(new Error(`${this.user} on ${this.nodeName}: CONNECT refused: ${text.slice(2, 200)}`)); }
            return;
          }
        } else {
          try { d = JSON.parse(text); } catch { return; }
        }
        if (!d || typeof d !== 'object') return;
        if (d.user_id !== this.user || d.u !== this.user) { this.wrongUser++; return; }
        if (d.probe) { this.probes++; return; }
        if (typeof d.k !== 'number') return;
        if (d.k <= this.last) { this.dup++; return; }
        if (d.k !== this.last + 1) this.gaps++;
        this.last = d.k;
        this.got++;
        if (this.onEvent) this.onEvent(d, recv);
      });
      ws.on('error', (e) => {
        if (ready) return;
        clearTimeout(timer);
        const log = this.node.log?.() ?? '';
        reject(new Error(`${this.user} on ${this.nodeName}: ${e.message}${log ? `; its log: ${log.slice(-600)}` : ''}`));
      });
      ws.on('close', (code, reason) => {
        this.closeInfo = { code, reason: String(reason) };
        if (!ready) { clearTimeout(timer); reject(new Error(`${this.user} on ${this.nodeName}: closed ${code} before subscribing`)); }
      });
    });
  }

}
