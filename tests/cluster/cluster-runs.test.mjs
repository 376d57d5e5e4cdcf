// Cluster runs: a run started on one node is seen by the user's sessions on
// every node with the same seqs; stop_agent from another node cancels it with one
// agent_completed; when the owner node dies (SIGKILL) mid-run another node ends
// the run with exactly one agent_completed status error.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { pollUntil, publish, tempFile, uniqueMessageId, WAIT_MS } from '../e2e/lib/harness.mjs';
import { assertSeqs, connectUser, figures, history, startCluster } from './lib/cluster.mjs';

const rid = (p) => `${p}_${randomBytes(4).toString('hex')}`;
const isRunEvent = (runId, type) => (m) =>
  m && typeof m.seq === 'number' && m.run_id === runId && (type === undefined || m.type === type);

async function startRun(c, args) {
  const id = uniqueMessageId('start');
  c.send({ type: 'start_agent', message_id: id, payload: args });
  const reply = await c.nextMessage((m) => m.message_id === id && (m.type === 'ack' || m.type === 'error'), 10000);
  assert.equal(reply.type, 'ack', `start_agent answered ${JSON.stringify(reply)}`);
  assert.equal(typeof reply.run_id, 'string');
  assert.equal(typeof reply.thread_id, 'string');
  return reply;
}

async function stopRun(c, runId) {
  const id = uniqueMessageId('stop');
  c.send({ type: 'stop_agent', message_id: id, payload: { run_id: runId } });
  return c.nextMessage((m) => m.message_id === id && (m.type === 'ack' || m.type === 'error'), 10000);
}

/** One agent_started first, exactly one agent_completed last, seqs rising; returns the run's events. */
function checkRun(events, runId, { user, status } = {}) {
  const mine = events.filter((e) => e && typeof e.seq === 'number' && e.run_id === runId);
  const summary = () => JSON.stringify(mine.map((e) => `${e.seq}:${e.type}${e.status ? `/${e.status}` : ''}`));
  assert.ok(mine.length > 0, `no event of run ${runId}`);
  assert.equal(mine[0].type, 'agent_started', `run ${runId} begins with agent_started: ${summary()}`);
  assert.equal(mine.filter((e) => e.type === 'agent_started').length, 1, `one agent_started: ${summary()}`);
  const completed = mine.filter((e) => e.type === 'agent_completed');
  assert.equal(completed.length, 1, `run ${runId}: exactly one agent_completed: ${summary()}`);
  assert.equal(mine.at(-1).type, 'agent_completed', `nothing after agent_completed: ${summary()}`);
  for (let i = 1; i < mine.length; i++) assert.ok(mine[i].seq > mine[i - 1].seq, `seq rises: ${summary()}`);
  for (const e of mine) if (user !== undefined) assert.equal(e.user_id, user);
  if (status !== undefined) assert.equal(completed[0].status, status, `status of ${JSON.stringify(completed[0])}`);
  if (completed[0].status !== 'success') {
    assert.equal(typeof completed[0].error, 'string', `a server-made agent_completed says why: ${JSON.stringify(completed[0])}`);
    assert.ok(completed[0].error.length > 0);
  }
  return mine;
}

/** Publishes a marker through node and waits for it on every client: what was published before it has arrived. */
async function barrier(node, user, clients) {
  const r = await publish(node, { user_id: user, type: 'barrier', id: uniqueMessageId('b') });
  for (const c of clients) await c.nextMessage((m) => m.type === 'barrier' && m.seq === r.seq, 10000);
  return r;
}

function tempDir(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentwire-cluster-runs-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function processGone(pid) {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if (err.code === 'ESRCH') return true;
    throw err;
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] === 'Z';
  } catch {
    return true;
  }
}

/** A slow python agent: writes DIR/pid_<run_id>, then one agent_thinking every 200 ms (at most 2 minutes). */
function slowAgent(t, dir) {
  return tempFile(t, 'slow.py', [
    'import json, os, sys, time',
    'req = json.loads(sys.stdin.readline())',
    `open(os.path.join(${JSON.stringify(dir)}, "pid_" + req["run_id"]), "w").write(str(os.getpid()))`,
    'for i in range(600):',
    '    print(json.dumps({"type": "agent_thinking", "reasoning": "step %d" % i}), flush=True)',
    '    time.sleep(0.2)',
    'print(json.dumps({"type": "agent_completed", "status": "success", "final_response": "slow done"}), flush=True)',
  ].join('\n'));
}

/** Kills (SIGKILL) every agent whose pid file is in dir when t ends. */
function reapAgents(t, dir) {
  t.after(() => {
    for (const f of fs.existsSync(dir) ? fs.readdirSync(dir) : []) {
      if (!f.startsWith('pid_')) continue;
      const pid = Number(fs.readFileSync(path.join(dir, f), 'utf8'));
      try { if (pid > 0 && !processGone(pid)) process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    }
  });
}

const agentPid = (dir, runId) => pollUntil(() => {
  const f = path.join(dir, `pid_${runId}`);
  return fs.existsSync(f) && Number(fs.readFileSync(f, 'utf8')) > 0 ? Number(fs.readFileSync(f, 'utf8')) : false;
}, { timeoutMs: WAIT_MS, what: `the pid file of run ${runId}` });

/* ------------------------------------------------------------------ */

test('demo runs started on node 0 and node 2 at once: every session on every node gets the same events, seqs 1..n', { timeout: 60000 }, async (t) => {
  const cl = await startCluster(t, { nodes: 3, shards: 2, args: ['--agent', 'builtin:demo'] });
  const [n0, n1, n2] = cl.nodes;
  const user = rid('runner');
  const other = rid('runner_other');
  const sessions = [await connectUser(n0, user), await connectUser(n1, user), await connectUser(n2, user)];
  const bystander = await connectUser(n1, other);
  const [a, b] = await Promise.all([startRun(sessions[0], { user_request: '2+3*4' }), startRun(sessions[2], { user_request: 'hello brave new world' })]);
  assert.notEqual(a.run_id, b.run_id);
  for (const [i, c] of sessions.entries()) {
    await c.nextMessage(isRunEvent(a.run_id, 'agent_completed'), 20000);
    await c.nextMessage(isRunEvent(b.run_id, 'agent_completed'), 20000);
    await c.sync();
    const ra = checkRun(c.events(), a.run_id, { user, status: 'success' });
    const rb = checkRun(c.events(), b.run_id, { user, status: 'success' });
    assert.equal(ra.find((e) => e.type === 'tool_completed').results.value, 14, `node ${i}: the calculator ran`);
    assert.equal(ra.at(-1).final_response, '2+3*4 = 14');
    assert.equal(rb.find((e) => e.type === 'tool_executing').tool_name, 'word_stats');
    assertSeqs(c.events(), 1, ra.length + rb.length, `node ${i}: the user's stream`);
    if (i > 0) assert.deepEqual(c.events(), sessions[0].events(), `node ${i} got the same events as node 0`);
  }
  await bystander.sync();
  assert.deepEqual(bystander.events(), [], 'another user received nothing of these runs');
  const h = await history(n1, user, 0);
  assert.deepEqual(h.events, sessions[0].events(), 'history on another node holds the runs');
});

test('stop_agent from a session on node 1 cancels a run owned by node 0: one agent_completed cancelled, the agent is gone', { timeout: 60000 }, async (t) => {
  const dir = tempDir(t);
  reapAgents(t, dir);
  const agent = slowAgent(t, dir);
  const cl = await startCluster(t, { nodes: 3, shards: 2, args: ['--agent', `exec:python3 ${agent}`, '--agent-kill-grace-ms', '300'] });
  const [n0, n1, n2] = cl.nodes;
  const user = rid('stopper');
  const owner = await connectUser(n0, user);
  const remote = await connectUser(n1, user);
  const third = await connectUser(n2, user);
  const ack = await startRun(owner, { user_request: 'long task' });
  await remote.nextMessage(isRunEvent(ack.run_id, 'agent_thinking'), 10000);
  const pid = await agentPid(dir, ack.run_id);
  assert.ok(!processGone(pid), 'the agent runs');
  const reply = await stopRun(remote, ack.run_id);
  assert.equal(reply.type, 'ack', JSON.stringify(reply));
  assert.equal(reply.for, 'stop_agent');
  assert.equal(reply.run_id, ack.run_id);
  const sessions = [owner, remote, third];
  for (const c of sessions) {
    const done = await c.nextMessage(isRunEvent(ack.run_id, 'agent_completed'), 10000);
    assert.equal(done.status, 'cancelled', JSON.stringify(done));
  }
  await pollUntil(() => processGone(pid), { timeoutMs: 5000, what: `the stopped agent (pid ${pid}) to be gone` });
  await barrier(n2, user, sessions);
  for (const [i, c] of sessions.entries()) {
    checkRun(c.events(), ack.run_id, { user, status: 'cancelled' });
    assertSeqs(c.events(), 1, c.events().length, `node ${i}: the user's stream`);
    if (i > 0) assert.deepEqual(c.events(), owner.events(), `node ${i}: same events as the owner's node`);
  }
});

test('the owner node killed with SIGKILL mid-run: another node ends the run with exactly one agent_completed error', { timeout: 90000 }, async (t) => {
  const TTL = 2000;
  const dir = tempDir(t);
  reapAgents(t, dir);
  const agent = slowAgent(t, dir);
  const cl = await startCluster(t, {
    nodes: 3,
    shards: 2,
    args: ['--agent', `exec:python3 ${agent}`, '--agent-kill-grace-ms', '300', '--node-ttl-ms', String(TTL), '--max-runs-per-user', '1'],
  });
  const [n0, n1, n2] = cl.nodes;
  const user = rid('orphaned');
  const owner = await connectUser(n0, user);
  const b = await connectUser(n1, user);
  const c = await connectUser(n2, user);
  const ack = await startRun(owner, { user_request: 'outlive your node' });
  await b.nextMessage(isRunEvent(ack.run_id, 'agent_thinking'), 10000);
  await c.nextMessage(isRunEvent(ack.run_id, 'agent_thinking'), 10000);
  const pid = await agentPid(dir, ack.run_id);
  const killedAt = Date.now();
  await n0.kill9();
  const done = await b.nextMessage(isRunEvent(ack.run_id, 'agent_completed'), TTL + 10000);
  const endedAfter = Date.now() - killedAt;
  assert.equal(done.status, 'error', JSON.stringify(done));
  assert.equal((await c.nextMessage(isRunEvent(ack.run_id, 'agent_completed'), 10000)).event_id, done.event_id);
  await barrier(n2, user, [b, c]);
  for (const [name, s] of [['node 1', b], ['node 2', c]]) {
    checkRun(s.events(), ack.run_id, { user, status: 'error' });
    assertSeqs(s.events(), 1, s.events().length, `${name}: the user's stream has no gap`);
  }
  assert.deepEqual(c.events(), b.events(), 'nodes 1 and 2 received the same events');
  // the dead owner's agent does not outlive it for long (its stdout is gone)
  await pollUntil(() => processGone(pid), { timeoutMs: 10000, what: `the dead node's agent (pid ${pid}) to end` });

  // the run's place is free again (--max-runs-per-user 1): a new run starts on node 1, node 2 stops it
  const ack2 = await startRun(b, { user_request: 'again' });
  await c.nextMessage(isRunEvent(ack2.run_id, 'agent_thinking'), 10000);
  const stop = await stopRun(c, ack2.run_id);
  assert.equal(stop.type, 'ack', JSON.stringify(stop));
  await b.nextMessage(isRunEvent(ack2.run_id, 'agent_completed'), 10000);
  await barrier(n1, user, [b, c]);
  checkRun(b.events(), ack2.run_id, { user, status: 'cancelled' });
  // still exactly one agent_completed of the first run, in the shared history too
  const h = await history(n2, user, 0);
  assert.equal(h.events.filter(isRunEvent(ack.run_id, 'agent_completed')).length, 1, 'history: one agent_completed of the orphaned run');
  checkRun(h.events, ack.run_id, { user, status: 'error' });
  figures(t, { suite: 'cluster-runs', test: 'owner-killed', node_ttl_ms: TTL, completed_after_ms: endedAfter });
  assert.ok(endedAfter <= TTL + 10000, `the run ended ${endedAfter} ms after the kill`);
});
