// Processes of the benchmark: CPU and memory of a server's process tree from
// /proc, spawning in a process group of its own, and stopping with a bound.
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import net from 'node:net';

const CLK_TCK = 100; // USER_HZ on Linux; /proc/PID/stat times are in these ticks

function readStat(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) };
  } catch {
    return null;
  }
}

// The pid and all its descendants (nginx: the master and its workers).
export function processTree(root) {
  const children = new Map();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const st = readStat(name);
    if (!st) continue;
    const pid = Number(name);
    if (!children.has(st.ppid)) children.set(st.ppid, []);
    children.get(st.ppid).push(pid);
  }
  const out = [];
  const todo = [root];
  while (todo.length) {
    const pid = todo.pop();
    if (!readStat(pid)) continue;
    out.push(pid);
    for (const c of children.get(pid) ?? []) todo.push(c);
  }
  return out;
}

function rssKb(pid) {
  try {
    const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmRSS:\s+(\d+) kB/m);
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

// CPU seconds (user + system) and resident memory of a process tree, now.
export function sample(root) {
  const pids = processTree(root);
  let ticks = 0;
  let rss = 0;
  for (const pid of pids) {
    ticks += readStat(pid)?.ticks ?? 0;
    rss += rssKb(pid);
  }
  return { t: performance.now(), cpu_s: ticks / CLK_TCK, rss_kb: rss, pids: pids.length };
}

// Every process group started here, so that an error or a signal stops them all.
const live = new Map(); // pid -> ChildProcess

export function spawnGroup(cmd, args, opts = {}) {
  const child = spawn(cmd, args, { ...opts, detached: true });
  if (child.pid) {
    live.set(child.pid, child);
    child.once('exit', () => live.delete(child.pid));
  }
  child.exited = new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', (err) => resolve({ code: null, signal: null, error: err }));
  });
  return child;
}

function killGroup(pid, signal) {
  try {
    process.kill(-pid, signal);
  } catch {
    try { process.kill(pid, signal); } catch { /* gone */ }
  }
}

// SIGTERM to the group, SIGKILL past the bound; resolves when the leader exited.
export async function stopGroup(child, boundMs = 5000) {
  if (!child?.pid) return;
  if (child.exitCode !== null || child.signalCode !== null) {
    killGroup(child.pid, 'SIGKILL'); // stragglers of the group, if any
    return;
  }
  killGroup(child.pid, 'SIGTERM');
  let timer;
  const gone = await Promise.race([
    child.exited.then(() => true),
    new Promise((r) => { timer = setTimeout(() => r(false), boundMs); }),
  ]);
  clearTimeout(timer);
  if (!gone) {
    killGroup(child.pid, 'SIGKILL');
    await child.exited;
  }
  killGroup(child.pid, 'SIGKILL');
}

export function killAllNow() {
  for (const pid of live.keys()) killGroup(pid, 'SIGKILL');
}

export async function stopAll() {
  await Promise.all([...live.values()].map((c) => stopGroup(c, 3000)));
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function bindable(port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

// A free port below the kernel's ephemeral range, so that no outgoing
// connection (the loadgen's thousands of them) can take it between the check
// and the server's bind.
export async function freePortOutsideEphemeral() {
  let low = 32768;
  try {
    low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || low;
  } catch { /* default */ }
  const lo = Math.max(1024, low - 12000);
  for (let i = 0; i < 50 && low > lo; i++) {
    const port = lo + Math.floor(Math.random() * (low - lo));
    if (await bindable(port)) return port;
  }
  return freePort();
}

// True when the socket listening on 127.0.0.1:port belongs to the process tree
// of root (and not to some other process that took the port).
export function treeListensOn(root, port) {
  let tcp;
  try { tcp = readFileSync('/proc/net/tcp', 'utf8'); } catch { return false; }
  const want = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  const inodes = new Set();
  for (const line of tcp.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[1] === want && f[3] === '0A') inodes.add(f[9]);
  }
  if (!inodes.size) return false;
  for (const pid of processTree(root)) {
    let fds;
    try { fds = readdirSync(`/proc/${pid}/fd`); } catch { continue; }
    for (const fd of fds) {
      let link;
      try { link = readlinkSync(`/proc/${pid}/fd/${fd}`); } catch { continue; }
      const m = link.match(/^socket:\[(\d+)\]$/);
      if (m && inodes.has(m[1])) return true;
    }
  }
  return false;
}

export function portAccepts(port) {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
