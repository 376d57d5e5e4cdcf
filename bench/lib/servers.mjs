// The servers under test ("targets"): start one on a free loopback port, wait
// until it serves, stop it (always, with a bound).
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePortOutsideEphemeral, portAccepts, sleep, spawnGroup, stopGroup, treeListensOn } from './proc.mjs';

export const ROOT = new URL('../..', import.meta.url).pathname.replace(/\/$/, '');
export const AGENTWIRE_BIN = process.env.AGENTWIRE_BIN ?? join(ROOT, 'build/agentwire');
// The binary the runs start: a copy taken at the start of the benchmark (see
// snapshotBinaries in run.mjs), so that a rebuild meanwhile changes nothing.
let agentwireExe = AGENTWIRE_BIN;
export function useAgentwireBinary(path) { agentwireExe = path; }
export const TARGETS = ['agentwire', 'nchan', 'ws', 'socketio'];

const PEER_SCRIPT = {
  ws: 'bench/peers/ws-server.mjs',
  socketio: 'bench/peers/socketio-server.mjs',
  nchan: 'bench/peers/nchan.sh',
};

// jwt: how user tokens are verified; absent: HS256 with secret; { alg, publicKeyFile }:
// a public-key algorithm (ES256, RS256, EdDSA) pinned with --jwt-alg, and no secret.
export function agentwireArgs(secret, apiKey, jwt = null) {
  const auth = jwt ? ['--jwt-alg', jwt.alg, '--jwt-public-key', jwt.publicKeyFile] : ['--jwt-secret', secret];
  return ['--listen', '127.0.0.1:0', ...auth, '--api-key', apiKey,
    '--max-connections-per-user', '1000', '--max-messages-per-second', '0', '--echo-path', '/echo',
    '--max-message-bytes', '2097152', '--queue-limit-bytes', '8388608',
    '--heartbeat-interval-ms', '60000', '--drain-timeout-ms', '1000', '--log-format', 'json',
    // the load generator's clients share a few source addresses: no per-address share
    '--max-connections-per-ip', '10000000'];
}

// Same outgoing-queue bound and heartbeat as agentwire's flags above.
const PEER_ARGS = {
  ws: ['--max-buffered-bytes', '8388608', '--heartbeat-ms', '60000', '--max-payload', '2097152'],
  socketio: ['--ping-interval-ms', '60000'],
};

// The command line of each target, for the report (secrets as placeholders).
// jwt: as for agentwireArgs (agentwire only).
export function serverCommand(target, jwt = null) {
  switch (target) {
    case 'agentwire': return ['build/agentwire', ...agentwireArgs('$SECRET', '$KEY', jwt)].join(' ').replace('127.0.0.1:0', '127.0.0.1:$PORT');
    case 'ws': case 'socketio':
      return `node ${PEER_SCRIPT[target]} --port $PORT --jwt-secret $SECRET --api-key $KEY ${PEER_ARGS[target].join(' ')}`;
    case 'nchan': return `${PEER_SCRIPT.nchan} $PORT $WORKDIR`;
    default: return '?';
  }
}

function dpkgInstalled(pkg) {
  try {
    return execFileSync('dpkg-query', ['-W', '-f=${Status}', pkg], { stdio: ['ignore', 'pipe', 'ignore'] })
      .toString().includes('install ok installed');
  } catch {
    return false;
  }
}

// null when the target can run here, else the reason it cannot.
export function unavailable(target) {
  if (target === 'agentwire') return existsSync(AGENTWIRE_BIN) ? null : `${AGENTWIRE_BIN} not built`;
  const script = join(ROOT, PEER_SCRIPT[target]);
  if (!existsSync(script)) return `${PEER_SCRIPT[target]} missing`;
  if (target === 'ws' && !existsSync(join(ROOT, 'node_modules/ws'))) return 'npm package ws not installed';
  if (target === 'socketio' && !existsSync(join(ROOT, 'node_modules/socket.io'))) return 'npm package socket.io not installed';
  if (target === 'nchan') {
    if (!dpkgInstalled('nginx') && !dpkgInstalled('nginx-core')) return 'nginx not installed';
    if (!dpkgInstalled('libnginx-mod-nchan')) return 'libnginx-mod-nchan not installed';
  }
  return null;
}

function tail(file, n = 2000) {
  try {
    const s = readFileSync(file, 'utf8');
    return s.slice(-n).trim();
  } catch {
    return '';
  }
}

async function waitFor(fn, boundMs, what, child) {
  const end = Date.now() + boundMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${what}: the server exited (${child.exitCode ?? child.signalCode})`);
    if (Date.now() > end) throw new Error(`${what}: not ready after ${boundMs} ms`);
    await sleep(25);
  }
}

// Work directories of running servers, removed on exit whatever happens.
const tempDirs = new Set();
export function removeTempDirs() {
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
  tempDirs.clear();
}

// Starts a target; returns { target, pid, port, stop() }. jwt: as for
// agentwireArgs (agentwire only).
export async function startServer(target, { secret, apiKey, extraArgs = [], jwt = null }) {
  const dir = mkdtempSync(join(tmpdir(), `awbench-${target}-`));
  tempDirs.add(dir);
  let logFile;
  let logFd;
  let child;
  let port;
  const cleanup = async () => {
    await stopGroup(child, 5000);
    rmSync(dir, { recursive: true, force: true });
    tempDirs.delete(dir);
  };
  // Every server listens on a port chosen here below the ephemeral range: after
  // tens of thousands of loadgen connections in TIME_WAIT, binding port 0 can
  // fail. Should another process take the port first, another one.
  for (let attempt = 1; ; attempt++) {
    logFile = join(dir, `server-${attempt}.log`);
    logFd = openSync(logFile, 'w');
    try {
      port = await freePortOutsideEphemeral();
      await launch();
      break;
    } catch (err) {
      const log = tail(logFile);
      closeSync(logFd);
      if (attempt < 3 && /address already in use|EADDRINUSE/i.test(log)) {
        await stopGroup(child, 2000);
        continue;
      }
      await cleanup();
      throw new Error(`${err.message}${log ? `; log: ${log.slice(-500)}` : ''}`);
    }
  }

  async function launch() {
    if (target === 'agentwire') {
      const args = agentwireArgs(secret, apiKey, jwt).map((a) => (a === '127.0.0.1:0' ? `127.0.0.1:${port}` : a));
      child = spawnGroup(agentwireExe, [...args, ...(extraArgs ?? [])], { cwd: ROOT, stdio: ['ignore', logFd, logFd] });
      const announced = await waitFor(() => {
        for (const line of tail(logFile, 1 << 20).split('\n')) {
          if (!line.includes('"listening"')) continue;
          try {
            const j = JSON.parse(line);
            if (j.port) return Number(j.port);
            const m = String(j.addr ?? '').match(/:(\d+)$/);
            if (m) return Number(m[1]);
          } catch { /* partial line */ }
        }
        return 0;
      }, 10000, 'agentwire', child);
      if (announced !== port) throw new Error(`agentwire listens on ${announced}, not ${port}`);
    } else if (target === 'ws' || target === 'socketio') {
      child = spawnGroup(process.execPath, [PEER_SCRIPT[target], '--port', String(port), '--jwt-secret', secret, '--api-key', apiKey, ...PEER_ARGS[target]],
        { cwd: ROOT, stdio: ['ignore', 'pipe', logFd] });
      let buf = '';
      let found = 0;
      child.stdout.on('data', (d) => {
        if (found) return;
        buf += d;
        for (const line of buf.split('\n')) {
          try {
            const j = JSON.parse(line);
            if (j.listening && j.port) found = Number(j.port);
          } catch { /* not yet a whole line */ }
        }
      });
      const announced = await waitFor(() => found, 15000, target, child);
      if (announced !== port) throw new Error(`${target} listens on ${announced}, not ${port}`);
    } else if (target === 'nchan') {
      child = spawnGroup('bash', [PEER_SCRIPT.nchan, String(port), join(dir, 'nginx')], { cwd: ROOT, stdio: ['ignore', logFd, logFd] });
      // ready when the port accepts and the listening socket is nginx's own
      await waitFor(async () => (await portAccepts(port)) && treeListensOn(child.pid, port), 15000, 'nchan', child);
    } else {
      throw new Error(`unknown target ${target}`);
    }
  }
  closeSync(logFd);
  let stopped = false;
  return {
    target,
    pid: child.pid,
    port,
    alive: () => child.exitCode === null && child.signalCode === null,
    logTail: () => tail(logFile, 800),
    // why it exited, from its log: a signal that did not come from here, or its last words
    exitNote: () => {
      const how = child.signalCode ? ` (killed by ${child.signalCode})` : child.exitCode !== null ? ` (exit ${child.exitCode})` : '';
      const drain = tail(logFile, 1 << 20).split('\n').find((l) => l.includes('"draining"'));
      if (drain) return `${how}: it logged ${drain.trim()}, a signal that did not come from the benchmark`;
      const last = tail(logFile, 300);
      return `${how}${last ? `; log: ${last}` : ''}`;
    },
    stop: async () => {
      if (stopped) return;
      stopped = true;
      await cleanup();
    },
  };
}
