// Redis for bench/cluster.mjs: a private redis-server (Debian's binary as a
// plain child process in a process group of its own, generated config, free
// 127.0.0.1 port), a small pipelined RESP2 client, and the server's CPU
// (/proc/PID/stat) and INFO fields.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, sleep, spawnGroup, stopGroup } from './proc.mjs';
import { encodeCommand, parseReply, RedisError } from '../../tests/cluster/lib/redis.mjs';

export const REDIS_SERVER = process.env.REDIS_SERVER || '/usr/bin/redis-server';
const CLK_TCK = 100; // USER_HZ: /proc/PID/stat times are in these ticks

// Data directories of running servers: removed at exit whatever happened.
const dirs = new Set();
process.on('exit', () => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

export function redisVersion() {
  const r = spawnSync(REDIS_SERVER, ['--version'], { encoding: 'utf8', timeout: 5000 });
  return (r.stdout || '').trim() || null;
}

/** The config file text; `extra` lines are appended (a scenario's own settings). */
export function redisConfig({ port, dir, extra = [] }) {
  return [
    `port ${port}`,
    'bind 127.0.0.1',
    `dir ${dir}`,
    'daemonize no',
    'logfile ""',
    'save ""',
    'appendonly no',
    ...extra,
    '',
  ].join('\n');
}

/* RESP2: the codec of the cluster tests (tests/cluster/lib/redis.mjs) */

/** A persistent connection; command() resolves replies in order. */
export class RedisClient {
  constructor(port) {
    this.port = port;
    this.pending = [];
    this.buf = Buffer.alloc(0);
    this.closed = false;
  }

  connect(timeoutMs = 2000) {
    return new Promise((resolve, reject) => {
      const sock = net.connect({ host: '127.0.0.1', port: this.port });
      const timer = setTimeout(() => { sock.destroy(); reject(new Error(`redis ${this.port}: no connection within ${timeoutMs} ms`)); }, timeoutMs);
      sock.once('connect', () => { clearTimeout(timer); resolve(this); });
      sock.once('error', (e) => { clearTimeout(timer); reject(e); });
      sock.on('data', (c) => this.onData(c));
      sock.on('error', () => {});
      sock.on('close', () => {
        this.closed = true;
        for (const p of this.pending.splice(0)) p.reject(new Error('redis connection closed'));
      });
      this.sock = sock;
    });
  }

  onData(c) {
    this.buf = this.buf.length ? Buffer.concat([this.buf, c]) : c;
    let off = 0;
    for (;;) {
      const r = parseReply(this.buf, off);
      if (!r) break;
      off = r.next;
      const p = this.pending.shift();
      if (!p) continue;
      clearTimeout(p.timer);
      if (r.value instanceof RedisError) p.reject(r.value);
      else p.resolve(r.value);
    }
    if (off) this.buf = this.buf.subarray(off);
  }

  command(args, timeoutMs = 5000) {
    if (this.closed) return Promise.reject(new Error('redis connection closed'));
    return new Promise((resolve, reject) => {
      const p = { resolve, reject };
      p.timer = setTimeout(() => reject(new Error(`redis ${this.port}: ${args[0]} unanswered after ${timeoutMs} ms`)), timeoutMs);
      this.pending.push(p);
      this.sock.write(encodeCommand(args));
    });
  }

  /** INFO section parsed into {field: string}. */
  async info(section) {
    const text = await this.command(['INFO', section]);
    const out = {};
    for (const line of String(text).split('\r\n')) {
      const i = line.indexOf(':');
      if (i > 0 && !line.startsWith('#')) out[line.slice(0, i)] = line.slice(i + 1);
    }
    return out;
  }

  close() {
    this.closed = true;
    this.sock?.destroy();
  }
}

/* ------------------------------------------------------------------ */
/* the redis-server process                                             */
/* ------------------------------------------------------------------ */

/** utime + stime of pid (all its threads), in ms (10 ms resolution). */
export function cpuMs(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/**
 * Starts a redis-server; resolves {port, url, pid, client, conf, stop()} once it
 * answers PING with PONG. Bounded: 10 s to answer, three ports tried.
 */
export async function startRedis({ extra = [] } = {}) {
  if (!existsSync(REDIS_SERVER)) throw new Error(`${REDIS_SERVER} not found (apt-get install redis-server)`);
  let lastErr;
  for (let attempt = 1; attempt <= 3; attempt++) {
    const dir = mkdtempSync(join(tmpdir(), 'awbench-redis-'));
    dirs.add(dir);
    const port = await freePort();
    const conf = redisConfig({ port, dir, extra });
    writeFileSync(join(dir, 'redis.conf'), conf);
    const child = spawnGroup(REDIS_SERVER, [join(dir, 'redis.conf')], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    const keep = (d) => { log = (log + d).slice(-4000); };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const cleanup = async () => {
      await stopGroup(child, 5000);
      rmSync(dir, { recursive: true, force: true });
      dirs.delete(dir);
    };
    const end = Date.now() + 10000;
    let client = null;
    while (Date.now() < end && child.exitCode === null && child.signalCode === null) {
      try {
        const c = await new RedisClient(port).connect(1000);
        if ((await c.command(['PING'], 1000)) === 'PONG') { client = c; break; }
        c.close();
      } catch { /* not yet */ }
      await sleep(20);
    }
    if (client) {
      let stopped = false;
      return {
        port,
        url: `redis://127.0.0.1:${port}`,
        pid: child.pid,
        conf,
        client,
        log: () => log,
        alive: () => child.exitCode === null && child.signalCode === null,
        async stop() {
          if (stopped) return;
          stopped = true;
          client.close();
          await cleanup();
        },
      };
    }
    lastErr = new Error(`redis-server on port ${port} did not answer PING within 10 s; log: ${log.slice(-800)}`);
    await cleanup();
    if (!/Address already in use/i.test(log)) break;
  }
  throw lastErr;
}
