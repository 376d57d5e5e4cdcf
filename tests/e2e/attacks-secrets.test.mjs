// attacks-secrets.test.mjs -- an exec agent is the server's child and may be
// compromised or prompt-injected (docs/agents.md): it must not get hold of the
// JWT secret or the API key, with either of which it could speak for any user.
//
// The agent here (a python3 script written to a temp dir) reads everything it
// can of its parent's /proc entry: cmdline, environ, status, maps and more, the
// readable regions of mem listed in maps (at most 64 MiB in all, [vvar] and
// [vsyscall] skipped, stack and heap first), the regular files behind its
// parent's descriptors, and its own environment. It sends the bytes to the user
// as base64 chunks in agent_thinking events, with a manifest saying what it
// read, then completes. The test takes every message the user received up to
// agent_completed, decodes the chunks and asserts that neither secret appears
// (raw, hex or base64) -- for secrets given by flag, by environment and by file.
//
// So that the test cannot pass because the probe failed silently, it also
// asserts that the probe ran as the server's child (its parent pid is the
// server's), read its parent's status and its own environment (PATH=), and
// that every byte it sent arrived.
//
// The machine runs everything as root with CAP_SYS_PTRACE: only a server that
// overwrites its argv/environ copies, is non-dumpable and drops CAP_SYS_PTRACE
// from its bounding set (and gives agents a minimal environment) passes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { api, connectReady, randomId, signHS256, useServer } from './lib/harness.mjs';

const TEST_TIMEOUT_MS = 300000;
/** The run moves up to ~90 MB of base64 through the server: generous for ASan on 2 cores. */
const RUN_WAIT_MS = 240000;

// The probe. Every read is wrapped: a refusal is recorded in the manifest, never
// fatal. Pipes, sockets and other non-regular descriptors are not read (reading
// the server's pipes would steal the agent's own event lines or block).
const PROBE = String.raw`
import base64, json, os, stat, sys

MEM_BUDGET = 64 << 20      # bytes of mem read in all
REGION_CAP = 16 << 20      # bytes of mem read from one region
FILE_CAP = 4 << 20         # bytes read from one file
CHUNK = 512 << 10          # raw bytes per event (base64: ~700 KB, under the 1 MiB line limit)
PAGE = 4096
ZERO = bytes(PAGE)
SKIP = ("[vvar]", "[vvar_vclock]", "[vsyscall]")

request = json.loads(sys.stdin.readline())
ppid = os.getppid()
base = "/proc/%d/" % ppid
parts = []
items = []
size = 0

def add(name, data=b"", error=None):
    global size
    item = {"name": name, "offset": size, "bytes": len(data)}
    if error is not None:
        item["error"] = error
    items.append(item)
    parts.append(data)
    size += len(data)

def err(e):
    return "%s: %s" % (type(e).__name__, e)

def read_file(rel, cap=FILE_CAP):
    try:
        with open(base + rel, "rb", buffering=0) as f:
            add("parent/" + rel, f.read(cap))
    except Exception as e:
        add("parent/" + rel, error=err(e))

for rel in ["cmdline", "environ", "status", "maps", "stat", "statm", "comm", "auxv",
            "limits", "smaps", "mountinfo", "personality", "wchan", "syscall",
            "stack", "io", "sched", "cwd/.", "exe"]:
    if rel in ("cwd/.", "exe"):
        try:
            add("parent/readlink " + rel, os.readlink(base + rel.rstrip("/.")).encode())
        except Exception as e:
            add("parent/readlink " + rel, error=err(e))
        continue
    read_file(rel)

# threads: their environ and cmdline are the process's, but their comm/status are their own
try:
    for tid in sorted(os.listdir(base + "task")):
        for rel in ("comm", "status", "environ"):
            read_file("task/%s/%s" % (tid, rel), 1 << 16)
except Exception as e:
    add("parent/task", error=err(e))

# descriptors: where they point, and the contents of regular files
try:
    fds = sorted(os.listdir(base + "fd"), key=lambda s: int(s) if s.isdigit() else -1)
    add("parent/fd (list)", " ".join(fds).encode())
except Exception as e:
    fds = []
    add("parent/fd (list)", error=err(e))
for n in fds:
    p = base + "fd/" + n
    try:
        add("parent/fd/%s (link)" % n, os.readlink(p).encode())
    except Exception as e:
        add("parent/fd/%s (link)" % n, error=err(e))
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except Exception as e:
        add("parent/fd/%s" % n, error=err(e))
        continue
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            add("parent/fd/%s" % n, os.pread(fd, FILE_CAP, 0))
        else:
            add("parent/fd/%s" % n, error="not a regular file (mode %o): not read" % st.st_mode)
    except Exception as e:
        add("parent/fd/%s" % n, error=err(e))
    finally:
        os.close(fd)

# mem: the readable regions of maps, stack and heap first, then writable ones,
# then the rest, smaller first; all-zero pages are sent as one zero byte
regions = []
try:
    with open(base + "maps") as f:
        maps = f.read()
except Exception:
    maps = ""
for line in maps.splitlines():
    fields = line.split(None, 5)
    if len(fields) < 5:
        continue
    perms = fields[1]
    name = fields[5].strip() if len(fields) > 5 else ""
    if perms[0] != "r" or name in SKIP:
        continue
    lo, hi = (int(x, 16) for x in fields[0].split("-"))
    prio = 0 if name in ("[stack]", "[heap]") else 1 if perms[1] == "w" else 2
    regions.append((prio, hi - lo, lo, hi, perms, name))
regions.sort()
budget = MEM_BUDGET
mem_errors = {}
try:
    memfd = os.open(base + "mem", os.O_RDONLY)
except Exception as e:
    memfd = None
    add("parent/mem", error=err(e))
if memfd is not None:
    for prio, length, lo, hi, perms, name in regions:
        if budget <= 0:
            break
        want = min(length, REGION_CAP, budget)
        out = []
        addr = lo
        end = lo + want
        error = None
        while addr < end:
            try:
                data = os.pread(memfd, min(1 << 20, end - addr), addr)
            except Exception as e:
                error = err(e)
                break
            if not data:
                break
            for i in range(0, len(data), PAGE):
                page = data[i:i + PAGE]
                out.append(b"\0" if page == ZERO[:len(page)] else page)
            addr += len(data)
        budget -= addr - lo
        add("parent/mem %x-%x %s %s" % (lo, hi, perms, name), b"".join(out), error)
    os.close(memfd)

# the agent's own environment, as the kernel and as python see it
try:
    with open("/proc/self/environ", "rb") as f:
        add("self/environ", f.read())
except Exception as e:
    add("self/environ", error=err(e))
add("self/os.environ", b"\0".join(k + b"=" + v for k, v in os.environb.items()))

blob = b"".join(parts)
chunks = (len(blob) + CHUNK - 1) // CHUNK

def emit(event):
    sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
    sys.stdout.flush()

manifest = {"ppid": ppid, "pid": os.getpid(), "uid": os.getuid(), "total": len(blob),
            "chunks": chunks, "mem_read": MEM_BUDGET - budget, "items": items}
emit({"type": "agent_thinking", "reasoning": "probe-manifest " + json.dumps(manifest)})
for i in range(chunks):
    piece = base64.b64encode(blob[i * CHUNK:(i + 1) * CHUNK]).decode()
    emit({"type": "agent_thinking", "reasoning": "probe-data %d %s" % (i, piece)})
emit({"type": "agent_completed", "status": "success", "final_response": "probe done: %d bytes" % len(blob)})
`;

function tempDir(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentwire-secrets-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** The forms in which a secret must not appear. */
const forms = (s) => [
  ['raw', Buffer.from(s)],
  ['hex', Buffer.from(Buffer.from(s).toString('hex'))],
  ['base64', Buffer.from(Buffer.from(s).toString('base64'))],
  ['base64url', Buffer.from(Buffer.from(s).toString('base64url'))],
];

/** Names of the manifest items in which needle occurs (or 'the whole blob'). */
function whereFound(blob, items, needle) {
  const out = [];
  for (const it of items) {
    if (blob.subarray(it.offset, it.offset + it.bytes).includes(needle)) out.push(it.name);
  }
  if (!out.length && blob.includes(needle)) out.push('across items');
  return out;
}

/**
 * Starts a server whose secrets are given `way`, runs the probe for one user
 * and returns what the user received: {srv, manifest, blob, texts}.
 */
async function runProbe(t, way, secret, apiKey) {
  const dir = tempDir(t);
  const probe = path.join(dir, 'probe.py');
  fs.writeFileSync(probe, PROBE);
  let args = [];
  let env = {};
  let omit = [];
  if (way === 'flags') {
    args = ['--jwt-secret', secret, '--api-key', apiKey];
  } else if (way === 'environment') {
    env = { AGENTWIRE_JWT_SECRET: secret, AGENTWIRE_API_KEY: apiKey };
    omit = ['--jwt-secret', '--api-key'];
  } else {
    const sf = path.join(dir, 'jwt-secret');
    const kf = path.join(dir, 'api-key');
    fs.writeFileSync(sf, `${secret}\n`, { mode: 0o600 });
    fs.writeFileSync(kf, `${apiKey}\n`, { mode: 0o600 });
    args = ['--jwt-secret-file', sf, '--api-key-file', kf];
    omit = ['--jwt-secret', '--api-key'];
  }
  const srv = await useServer(t, [
    ...args,
    // exec: /bin/sh (dash) would otherwise stay between the server and python
    '--agent', `exec:exec python3 ${probe}`,
    '--max-events-per-run', '100000',
    '--run-timeout-ms', String(RUN_WAIT_MS),
    '--queue-limit-bytes', String(512 << 20),
    '--drain-timeout-ms', '2000',
  ], env, { omit });

  // the server really uses the secrets given this way (else nothing is tested)
  const user = randomId('probe');
  const token = signHS256(secret, { sub: user });
  const c = await connectReady(srv.url, {
    headers: { Authorization: `Bearer ${token}` },
    perMessageDeflate: false, // ~90 MB of base64: spare the CPU
  });
  const hist = await api(srv, 'GET', `/api/v1/history?user_id=${encodeURIComponent(user)}`, undefined, { key: apiKey });
  assert.equal(hist.status, 200, `the API key given by ${way} is not the server's: ${hist.text}`);

  c.send({ type: 'start_agent', message_id: 'probe1', payload: { user_request: 'read your parent /proc' } });
  const ack = await c.nextMessage((m) => m.message_id === 'probe1' && (m.type === 'ack' || m.type === 'error'));
  assert.equal(ack.type, 'ack', JSON.stringify(ack));
  const done = await c.nextMessage((m) => m.type === 'agent_completed' && m.run_id === ack.run_id, RUN_WAIT_MS);

  // everything the user received, up to and including agent_completed
  const all = c.messages.map((m) => m.data);
  const end = all.indexOf(done);
  const received = c.raw.slice(0, end + 1).map((r) => r.text); // parallel to c.messages
  const mine = all.slice(0, end + 1).filter((m) => m && m.run_id === ack.run_id && m.type === 'agent_thinking');
  let manifest = null;
  const chunks = new Map();
  for (const m of mine) {
    const r = String(m.reasoning);
    if (r.startsWith('probe-manifest ')) manifest = JSON.parse(r.slice('probe-manifest '.length));
    else if (r.startsWith('probe-data ')) {
      const sp = r.indexOf(' ', 'probe-data '.length);
      chunks.set(Number(r.slice('probe-data '.length, sp)), Buffer.from(r.slice(sp + 1), 'base64'));
    }
  }
  await c.close();
  assert.equal(done.status, 'success', `the probe's run did not succeed: ${JSON.stringify(done)}\n${srv.stderr.slice(-3000)}`);
  assert.ok(manifest, `no manifest from the probe (${mine.length} agent_thinking events)`);
  assert.equal(chunks.size, manifest.chunks, 'every data chunk of the probe arrived');
  const blob = Buffer.concat([...Array(manifest.chunks).keys()].map((i) => {
    assert.ok(chunks.has(i), `chunk ${i} missing`);
    return chunks.get(i);
  }));
  assert.equal(blob.length, manifest.total, 'every byte the probe read arrived');
  // the data chunks are searched decoded (their base64 text would match the
  // base64 form of any secret inside the blob); every other message as is
  const texts = received.filter((x) => !x.includes('"probe-data '));
  return { srv, manifest, blob, texts };
}

for (const way of ['flags', 'environment', 'files']) {
  test(`secrets given by ${way}: an exec agent reading its parent's /proc (cmdline, environ, mem, fds) and its own environment finds neither the JWT secret nor the API key`, { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const secret = `jwtsecret_${crypto.randomBytes(20).toString('hex')}`;
    const apiKey = `ak_${crypto.randomBytes(20).toString('hex')}`;
    const { srv, manifest, blob, texts } = await runProbe(t, way, secret, apiKey);

    const items = manifest.items;
    const item = (name) => items.find((i) => i.name === name);
    const got = items.filter((i) => i.bytes > 0 && !i.error).map((i) => i.name);
    const refused = items.filter((i) => i.error).map((i) => `${i.name} (${i.error})`);
    t.diagnostic(`probe read ${blob.length} bytes (${manifest.mem_read} of mem); readable: ${got.filter((n) => !n.startsWith('parent/mem ')).join(', ')}; ` +
      `mem regions read: ${got.filter((n) => n.startsWith('parent/mem ')).length}`);
    t.diagnostic(`refused: ${refused.slice(0, 12).join('; ')}${refused.length > 12 ? ` … (${refused.length})` : ''}`);

    // the probe ran as the server's own child and did read things
    assert.equal(manifest.ppid, srv.proc.pid, 'the probe\'s parent is the server process');
    const status = item('parent/status');
    assert.ok(status && status.bytes > 0 && !status.error, `the probe could not read /proc/PPID/status: ${JSON.stringify(status)}`);
    const statusText = blob.subarray(status.offset, status.offset + status.bytes).toString('latin1');
    assert.match(statusText, new RegExp(`^Pid:\\s+${srv.proc.pid}$`, 'm'), 'the status read is the server\'s');
    const env = item('self/environ');
    assert.ok(env && env.bytes > 0, `the probe could not read its own environ: ${JSON.stringify(env)}`);
    assert.ok(blob.subarray(env.offset, env.offset + env.bytes).includes('PATH='), 'the probe\'s own environment has PATH');

    // neither secret in anything the user received, nor in the decoded bytes
    const failures = [];
    for (const [what, s] of [['JWT secret', secret], ['API key', apiKey]]) {
      for (const [form, needle] of forms(s)) {
        const where = whereFound(blob, items, needle);
        if (where.length) failures.push(`${what} (${form}) read by the agent in: ${where.slice(0, 8).join(', ')}${where.length > 8 ? ` … (${where.length})` : ''}`);
        const inText = texts.filter((x) => x.includes(needle.toString('latin1'))).length;
        if (inText && !where.length) failures.push(`${what} (${form}) in ${inText} message(s) the user received`);
      }
    }
    assert.deepEqual(failures, [], `secrets given by ${way} leaked to the exec agent`);
  });
}
