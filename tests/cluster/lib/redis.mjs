// redis.mjs -- private redis-server processes for the cluster tests.
//
// Each call of startRedis runs Debian's /usr/bin/redis-server as a plain child
// process (never the system service) on a free 127.0.0.1 port, with a config
// file in a temp dir of its own. Readiness is a PING answered +PONG, never a
// sleep. Every process started here is killed when its test ends (t.after) and,
// as a last resort, when the node process exits.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { pollUntil, withTimeout } from '../../e2e/lib/harness.mjs';

export const REDIS_SERVER = process.env.REDIS_SERVER || '/usr/bin/redis-server';
const READY_TIMEOUT_MS = 20000;
const STOP_TIMEOUT_MS = 5000;

/* Every redis-server child still alive: killed at exit whatever happened. */
const live = new Set();
process.on('exit', () => {
  for (const proc of live) {
    try { proc.kill('SIGCONT'); } catch { /* gone */ }
    try { proc.kill('SIGKILL'); } catch { /* gone */ }
  }
});

/** A TCP port on 127.0.0.1 that was free a moment ago (bound to 0, then released). */
export async function freePort() {
  const srv = net.createServer();
  await new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', resolve);
  });
  const { port } = srv.address();
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

/* ------------------------------------------------------------------ */
/* a minimal RESP2 client                                               */
/* ------------------------------------------------------------------ */

/** Encodes one command as a RESP array of bulk strings. */
export function encodeCommand(args) {
  const parts = [`*${args.length}\r\n`];
  for (const a of args) {
    const b = Buffer.isBuffer(a) ? a : Buffer.from(String(a), 'utf8');
    parts.push(`$${b.length}\r\n`, b, '\r\n');
  }
  return Buffer.concat(parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(p, 'utf8'))));
}

/**
 * Parses one RESP2 value from buf at off. Returns {value, next} or null when
 * more bytes are needed. Errors come back as instances of RedisError.
 */
export function parseReply(buf, off = 0) {
  if (off >= buf.length) return null;
  const eol = buf.indexOf('\r\n', off);
  if (eol < 0) return null;
  const kind = String.fromCharCode(buf[off]);
  const line = buf.toString('utf8', off + 1, eol);
  const after = eol + 2;
  switch (kind) {
    case '+': return { value: line, next: after };
    case '-': return { value: new RedisError(line), next: after };
    case ':': return { value: Number(line), next: after };
    case '$': {
      const n = Number(line);
      if (n < 0) return { value: null, next: after };
      if (buf.length < after + n + 2) return null;
      return { value: buf.toString('utf8', after, after + n), next: after + n + 2 };
    }
    case '*': {
      const n = Number(line);
      if (n < 0) return { value: null, next: after };
      const out = [];
      let at = after;
      for (let i = 0; i < n; i++) {
        const r = parseReply(buf, at);
        if (!r) return null;
        out.push(r.value);
        at = r.next;
      }
      return { value: out, next: at };
    }
    default:
      throw new Error(`unexpected RESP type byte ${JSON.stringify(kind)} in ${JSON.stringify(buf.toString('utf8', off, off + 80))}`);
  }
}

export class RedisError extends Error {
  constructor(message) {
    super(message);
    this.name = 'RedisError';
  }
}

/**
 * Sends one command to 127.0.0.1:port on a fresh connection and resolves its
 * reply (string, number, null, array); a Redis error reply rejects with RedisError.
 */
export function redisCommand(port, args, { timeoutMs = 3000 } = {}) {
  const sock = net.connect({ host: '127.0.0.1', port });
  const reply = new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    sock.on('connect', () => sock.write(encodeCommand(args)));
    sock.on('data', (c) => {
      buf = Buffer.concat([buf, c]);
      let r;
      try { r = parseReply(buf, 0); } catch (err) { reject(err); return; }
      if (!r) return;
      if (r.value instanceof RedisError) reject(r.value);
      else resolve(r.value);
    });
    sock.on('error', reject);
    sock.on('close', () => reject(new Error(`redis connection closed before a reply to ${args[0]}`)));
  });
  return withTimeout(reply, timeoutMs, `redis ${port} to answer ${args.join(' ').slice(0, 80)}`)
    .finally(() => sock.destroy());
}

/* ------------------------------------------------------------------ */
/* the redis-server process                                             */
/* ------------------------------------------------------------------ */

function configText({ port, dir, durable }) {
  return [
    `port ${port}`,
    'bind 127.0.0.1',
    `dir ${dir}`,
    'daemonize no',
    'logfile ""',
    'save ""',
    durable ? 'appendonly yes' : 'appendonly no',
    ...(durable ? ['appendfsync always'] : []),
    '',
  ].join('\n');
}

/**
 * Starts a redis-server. opts.durable: appendonly yes + appendfsync always.
 * When t is given, the process is stopped and its dir removed when t ends.
 * Returns {url, port, dir, pid, kill9, sigstop, sigcont, restart, stop, cli, log}.
 */
export async function startRedis(t, { durable = false } = {}) {
  if (!fs.existsSync(REDIS_SERVER)) throw new Error(`${REDIS_SERVER} not found (apt-get install redis-server)`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentwire-redis-'));
  const port = await freePort();
  const confFile = path.join(dir, 'redis.conf');
  fs.writeFileSync(confFile, configText({ port, dir, durable }));

  let proc = null;
  let exited = null;
  let logText = '';
  let stopped = false;

  const spawnOnce = async () => {
    const p = spawn(REDIS_SERVER, [confFile], { stdio: ['ignore', 'pipe', 'pipe'], cwd: dir });
    live.add(p);
    const ex = new Promise((resolve) => p.on('exit', (code, signal) => { live.delete(p); resolve({ code, signal }); }));
    p.on('error', (err) => { logText += `spawn error: ${err.message}\n`; });
    p.stdout.setEncoding('utf8').on('data', (c) => { logText = (logText + c).slice(-20000); });
    p.stderr.setEncoding('utf8').on('data', (c) => { logText = (logText + c).slice(-20000); });
    proc = p;
    exited = ex;
    let gone = null;
    try {
      await Promise.race([
        pollUntil(async () => (await redisCommand(port, ['PING'], { timeoutMs: 1000 })) === 'PONG',
          { timeoutMs: READY_TIMEOUT_MS, intervalMs: 20, what: `redis-server on port ${port} to answer PONG` }),
        ex.then((e) => {
          gone = e;
          throw new Error(`redis-server exited (${JSON.stringify(e)}) before answering PING`);
        }),
      ]);
    } catch (err) {
      err.message += `\n--- redis log ---\n${logText.slice(-3000)}`;
      if (!gone) try { p.kill('SIGKILL'); } catch { /* gone */ }
      throw err;
    }
  };

  const alive = () => proc && proc.exitCode === null && proc.signalCode === null;

  const r = {
    port,
    url: `redis://127.0.0.1:${port}`,
    dir,
    durable,
    get pid() { return proc ? proc.pid : null; },
    get alive() { return alive(); },
    get log() { return logText; },
    /** SIGKILL; resolves once the process is gone. */
    async kill9() {
      if (!alive()) return;
      proc.kill('SIGKILL');
      await withTimeout(exited, STOP_TIMEOUT_MS, 'redis-server to die after SIGKILL');
    },
    sigstop() {
      if (alive()) proc.kill('SIGSTOP');
    },
    sigcont() {
      if (alive()) proc.kill('SIGCONT');
    },
    /** Starts redis-server again on the same port and dir (an AOF is reloaded). */
    async restart() {
      if (alive()) throw new Error('restart: redis-server is still running (kill9 or stop it first)');
      await spawnOnce();
    },
    /** SIGTERM (after a SIGCONT, in case it is stopped), SIGKILL after 5 s. */
    async stop() {
      if (!alive()) return;
      try { proc.kill('SIGCONT'); } catch { /* gone */ }
      proc.kill('SIGTERM');
      try {
        await withTimeout(exited, STOP_TIMEOUT_MS, 'redis-server to exit after SIGTERM');
      } catch {
        proc.kill('SIGKILL');
        await withTimeout(exited, STOP_TIMEOUT_MS, 'redis-server to exit after SIGKILL').catch(() => {});
      }
    },
    /** Stops the process (if running) and removes its dir. */
    async destroy() {
      if (stopped) return;
      stopped = true;
      await r.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
    /** Runs one command (as given to redis-cli) and resolves its reply. */
    cli(...args) {
      return redisCommand(port, args.map(String));
    },
  };
  if (t) t.after(() => r.destroy());
  await spawnOnce();
  return r;
}
