// attacks-proc.test.mjs -- an agent is the server's child and may be
// compromised or prompt-injected: it must not read the JWT secret or the API
// key (with either it could write to any user). The agent here reads all it
// can of its parent's /proc entries (cmdline, environ, status, maps, the
// readable regions of mem, the open files) and of its own environment, and
// sends the bytes to the user; none may contain a secret, whether the
// secrets came by flag, by environment or by file.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { connectAs, randomId, signHS256, tempFile, useServer } from './lib/harness.mjs';

const T = { timeout: 180000 };

// Reads /proc/$PPID and the agent's own environment; prints the bytes as
// base64 chunks in agent_thinking events, then completes. Bounded: at most
// 64 MiB of mem in all, [vvar]/[vsyscall] skipped.
const AGENT = String.raw`
import base64, json, os, sys
req = json.loads(sys.stdin.readline())
run, thread = req["run_id"], req["thread_id"]
def emit(ev):
    ev.update({"run_id": run, "thread_id": thread})
    sys.stdout.write(json.dumps(ev) + "\n")
# the server: the first ancestor named agentwire (the command runs under
# /bin/sh -c, which may stay in between)
def parent_of(pid):
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])
def comm(pid):
    with open("/proc/%d/comm" % pid) as f:
        return f.read().strip()
pid = os.getppid()
while pid > 1 and not comm(pid).startswith("agentwire"):
    pid = parent_of(pid)
base = "/proc/%d/" % pid
got = []
readable = []
def take(name, data):
    if data:
        got.append(data)
        readable.append(name)
for name in ["cmdline", "environ", "status", "maps", "stat", "comm", "auxv", "smaps", "limits"]:
    try:
        with open(base + name, "rb") as f:
            take(name, f.read(4 << 20))
    except Exception:
        pass
try:
    for fd in os.listdir(base + "fd"):
        try:
            if not os.readlink(base + "fd/" + fd).startswith("/"):
                continue  # pipes and sockets: reading would block
            with open(base + "fd/" + fd, "rb") as f:
                take("fd/" + fd, f.read(1 << 20))
        except Exception:
            pass
except Exception:
    pass
budget = 64 << 20
try:
    with open(base + "maps") as m, open(base + "mem", "rb", 0) as mem:
        for line in m:
            parts = line.split()
            if len(parts) < 2 or "r" not in parts[1] or line.rstrip().endswith(("[vvar]", "[vsyscall]", "[vvar_vclock]")):
                continue
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            n = min(hi - lo, budget)
            if n <= 0:
                break
            try:
                mem.seek(lo)
                take("mem", mem.read(n))
                budget -= n
            except Exception:
                pass
except Exception:
    pass
take("own environ", "\0".join("%s=%s" % kv for kv in os.environ.items()).encode())
blob = b"".join(got)
emit({"type": "probe", "server": comm(pid), "readable": readable, "bytes": len(blob)})
# the secret could be anywhere in blob: send all of it
CH = 700000
for i in range(0, len(blob), CH):
    emit({"type": "agent_thinking", "reasoning": base64.b64encode(blob[i:i + CH]).decode()})
emit({"type": "agent_completed", "status": "success", "final_response": "done"})
sys.stdout.flush()
`;

function assertNoSecret(blob, secret, what) {
  for (const form of [secret, Buffer.from(secret).toString('base64'), Buffer.from(secret).toString('hex')]) {
    assert.equal(blob.indexOf(form), -1, `${what} found in what the agent read (${form.length} chars)`);
  }
}

for (const way of ['flags', 'environment', 'files']) {
  test(`secrets given by ${way}: an exec agent reading its parent's /proc finds neither the JWT secret nor the API key`, T, async (t) => {
    const secret = `jwtsecret_${crypto.randomBytes(16).toString('hex')}`;
    const key = `apikey_${crypto.randomBytes(16).toString('hex')}`;
    let args = [];
    let env = {};
    let omit = [];
    if (way === 'flags') {
      args = ['--jwt-secret', secret, '--api-key', key];
    } else if (way === 'environment') {
      env = { AGENTWIRE_JWT_SECRET: secret, AGENTWIRE_API_KEY: key };
      omit = ['--jwt-secret', '--api-key'];
    } else {
      args = ['--jwt-secret-file', tempFile(t, 'jwt', `${secret}\n`), '--api-key-file', tempFile(t, 'key', `${key}\n`)];
      omit = ['--jwt-secret', '--api-key'];
    }
    const { info, blob } = await probeWith(t, args, env, omit, secret, key);
    t.diagnostic(`the agent read ${blob.length} bytes of: ${info.readable.join(', ')}`);
    // the probe worked: it read its own environment and its parent's status
    assert.match(info.server, /^agentwire/, 'the agent found the server process');
    assert.ok(info.readable.includes('status'), 'the agent could not even read the server\'s /proc/PID/status');
    assert.ok(blob.includes('PATH='), 'the agent saw no environment at all');
    assertNoSecret(blob, secret, 'the JWT secret');
    assertNoSecret(blob, key, 'the API key');
  });
}

/** Starts a server with the probe agent and the given secrets, runs the
 * probe for one user and returns what it read. */
async function probeWith(t, args, env, omit, secret, key) {
  const agent = tempFile(t, 'probe.py', AGENT);
  const srv = await useServer(t, [...args, '--agent', `exec:python3 ${agent}`, '--max-events-per-run', '100000',
    '--run-timeout-ms', '120000', '--queue-limit-bytes', String(64 << 20)], env, { omit });
  const user = randomId('probe');
  const c = await connectAs({ ...srv, token: (sub, claims) => signHS256(secret, { sub, ...claims }) }, user);
  c.send({ type: 'start_agent', message_id: 'p1', payload: { user_request: 'read /proc' } });
  const done = await c.nextMessage((m) => m.type === 'agent_completed', 120000);
  assert.equal(done.status, 'success', JSON.stringify(done));
  const all = c.messages.map((m) => m.data);
  const info = all.find((m) => m.type === 'probe');
  assert.ok(info, 'the probe reported what it read');
  const blob = Buffer.concat(all.filter((m) => m.type === 'agent_thinking').map((m) => Buffer.from(m.reasoning, 'base64')));
  assert.equal(blob.length, info.bytes, 'every byte the agent read arrived');
  await c.close();
  return { info, blob };
}
