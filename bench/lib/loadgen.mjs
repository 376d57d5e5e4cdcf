// One run of the load generator (build/bench/aw-loadgen): bounded in time,
// its final JSON line parsed, its {"phase":...} lines passed to a callback.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './servers.mjs';
import { spawnGroup, stopGroup } from './proc.mjs';

export const LOADGEN_BIN = process.env.AW_LOADGEN_BIN ?? join(ROOT, 'build/bench/aw-loadgen');

export const loadgenAvailable = () => existsSync(LOADGEN_BIN);
let loadgenExe = LOADGEN_BIN;
export function useLoadgenBinary(path) { loadgenExe = path; }

// args: the loadgen's options as [name, value] pairs or an object; returns
// { result, phases, stderrTail, wallS } or throws with the reason.
export async function runLoadgen(args, { boundMs, onPhase } = {}) {
  const argv = [];
  for (const [k, v] of Object.entries(args)) argv.push(`--${k}`, String(v));
  const child = spawnGroup(loadgenExe, argv, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const stdoutClosed = new Promise((r) => child.stdout.once('close', r));
  const t0 = performance.now();
  let out = '';
  let err = '';
  const phases = [];
  const pending = [];
  let lastJson = null;
  const takeLines = (final) => {
    let nl;
    while ((nl = out.indexOf('\n')) >= 0 || (final && out.length)) {
      const line = nl >= 0 ? out.slice(0, nl) : out;
      out = nl >= 0 ? out.slice(nl + 1) : '';
      const s = line.trim();
      if (!s.startsWith('{')) continue;
      let j;
      try { j = JSON.parse(s); } catch { continue; }
      if (j.phase !== undefined && j.mode === undefined) {
        phases.push({ ...j, at_s: (performance.now() - t0) / 1000 });
        if (onPhase) pending.push(Promise.resolve().then(() => onPhase(j)).catch(() => {}));
      } else {
        lastJson = j;
      }
    }
  };
  child.stdout.on('data', (d) => { out += d; takeLines(false); });
  // Its progress on stderr also tells when the connect phase is over (used to
  // start counting the server's CPU at the first publish).
  let errLine = '';
  let connectedSeen = false;
  child.stderr.on('data', (d) => {
    err = (err + d).slice(-4000);
    if (connectedSeen || !onPhase) return;
    errLine = (errLine + d).slice(-2000);
    if (/connect phase over/.test(errLine)) {
      connectedSeen = true;
      const j = { phase: 'connected', source: 'stderr' };
      phases.push({ ...j, at_s: (performance.now() - t0) / 1000 });
      pending.push(Promise.resolve().then(() => onPhase(j)).catch(() => {}));
    }
  });
  let timedOut = false;
  const timer = setTimeout(() => { timedOut = true; stopGroup(child, 3000); }, boundMs ?? 120000);
  const ex = await child.exited;
  clearTimeout(timer);
  let closeTimer;
  await Promise.race([stdoutClosed, new Promise((r) => { closeTimer = setTimeout(r, 2000); })]);
  clearTimeout(closeTimer);
  takeLines(true);
  await Promise.all(pending);
  const wallS = (performance.now() - t0) / 1000;
  const stderrTail = err.trim().split('\n').slice(-6).join('\n');
  if (ex?.error) throw new Error(`loadgen could not start: ${ex.error.message}`);
  if (timedOut) throw new Error(`loadgen killed after the ${((boundMs ?? 120000) / 1000).toFixed((boundMs ?? 120000) < 10000 ? 1 : 0)} s bound${stderrTail ? `; stderr: ${stderrTail}` : ''}`);
  if (ex?.code !== 0) throw new Error(`loadgen exit ${ex?.code ?? ex?.signal}${stderrTail ? `: ${stderrTail}` : ''}`);
  if (!lastJson) throw new Error(`loadgen printed no result${stderrTail ? `; stderr: ${stderrTail}` : ''}`);
  return { result: lastJson, phases, stderrTail, wallS };
}

export function commandLine(args) {
  const parts = ['build/bench/aw-loadgen'];
  for (const [k, v] of Object.entries(args)) parts.push(`--${k}`, String(v));
  return parts.join(' ');
}
