// CPU accounting of bench/agents.mjs, from /proc: the server's own CPU (all its
// threads; nginx: master and workers), the exec agents it started (live ones
// and those it reaped: its cutime + cstime), the load client, and the whole
// machine (to tell how much of the two shared cores something else took).
import { readFileSync } from 'node:fs';
import { processTree } from './proc.mjs';

const CLK_TCK = 100; // USER_HZ; /proc times are in these ticks

// utime, stime, cutime, cstime (seconds) and RSS (KiB) of one process, or null.
export function procTimes(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    let rssKb = 0;
    try {
      const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmRSS:\s+(\d+) kB/m);
      rssKb = m ? Number(m[1]) : 0;
    } catch { /* gone */ }
    return {
      self_s: (Number(f[11]) + Number(f[12])) / CLK_TCK,
      children_s: (Number(f[13]) + Number(f[14])) / CLK_TCK,
      rss_kb: rssKb,
    };
  } catch {
    return null;
  }
}

// busy and total ticks of all CPUs since boot
function machineTicks() {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const [user, nice, system, idle, iowait, irq, softirq, steal] = f;
    const busy = user + nice + system + irq + softirq + (steal || 0);
    return { busy_s: busy / CLK_TCK, total_s: (busy + idle + (iowait || 0)) / CLK_TCK };
  } catch {
    return { busy_s: 0, total_s: 0 };
  }
}

// One sample of everything. agentsAreChildren: the server's descendants are
// exec agents (counted apart), not part of the server.
export function sampleAll({ serverPid, clientPid, agentsAreChildren }) {
  const tree = processTree(serverPid);
  let server = 0;
  let serverRss = 0;
  let agents = 0;
  for (const pid of tree) {
    const t = procTimes(pid);
    if (!t) continue;
    if (pid === serverPid) {
      server += t.self_s;
      serverRss += t.rss_kb;
      if (agentsAreChildren) agents += t.children_s;
    } else if (agentsAreChildren) {
      agents += t.self_s + t.children_s;
    } else {
      server += t.self_s;
      serverRss += t.rss_kb;
    }
  }
  const c = clientPid ? procTimes(clientPid) : null;
  const me = process.cpuUsage();
  return {
    t: performance.now(),
    server_s: server,
    server_rss_kb: serverRss,
    agents_s: agents,
    live_agents: agentsAreChildren ? tree.length - 1 : 0,
    client_s: c ? c.self_s : 0,
    driver_s: (me.user + me.system) / 1e6,
    machine: machineTicks(),
  };
}

// What happened between two samples.
export function window(a, b) {
  const wall = (b.t - a.t) / 1000;
  const busy = b.machine.busy_s - a.machine.busy_s;
  const total = b.machine.total_s - a.machine.total_s;
  const server = b.server_s - a.server_s;
  const agents = b.agents_s - a.agents_s;
  const client = b.client_s - a.client_s;
  const driver = b.driver_s - a.driver_s;
  const cores = total > 0 && wall > 0 ? total / wall : 0;
  return {
    wall_s: wall,
    server_cpu_s: server,
    agents_cpu_s: agents,
    client_cpu_s: client,
    driver_cpu_s: driver,
    machine_busy_s: busy,
    // CPU that none of the benchmark's processes used: other work on the machine
    other_cpu_s: Math.max(0, busy - server - agents - client - driver),
    cores,
    server_rss_kb: b.server_rss_kb,
  };
}

// Waits (bounded) until the server has no child process left: the exec agents
// of finished runs are reaped, so their CPU is in the server's cutime.
export async function waitNoChildren(serverPid, boundMs) {
  const end = Date.now() + boundMs;
  while (Date.now() < end) {
    if (processTree(serverPid).length <= 1) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}
