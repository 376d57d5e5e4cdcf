// Agent runs end to end (PROTOCOL sections 2, 4 and 7; docs/agents.md): the three
// backends (builtin:demo, exec:, http:), the messages that start and stop runs,
// the faults an agent can commit (crash, hang, silence, garbage, foreign ids,
// floods, ignored signals, missing command), per-user run limits and isolation,
// orphaned runs, runs published through the HTTP API, and runs cut by a drain.
//
// Every run must end with exactly one agent_completed and nothing after it; the
// file counts the runs it started and the runs it saw end that way, and prints
// `runs figures {...}` in its last test.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import {
  api,
  connectAs,
  connectReady,
  metricValue,
  pollUntil,
  randomId,
  REPO_ROOT,
  tempFile,
  uniqueMessageId,
  useServer,
  withTimeout,
  WAIT_MS,
} from './lib/harness.mjs';

const T = { timeout: 30000 };
const GRACE_MS = 300; // --agent-kill-grace-ms of every exec server here
const EXAMPLES = path.join(REPO_ROOT, 'examples');

/* ------------------------------------------------------------------ */
/* run bookkeeping                                                      */
/* ------------------------------------------------------------------ */

const figures = { started: 0, ended_with_one_completed: 0 };
const startedKeys = new Set();
const endedKeys = new Set();

function noteStarted(user, runId) {
  const key = `${user}/${runId}`;
  if (!startedKeys.has(key)) {
    startedKeys.add(key);
    figures.started++;
  }
}

const isRunEvent = (runId, type) => (m) =>
  m && typeof m.seq === 'number' && m.run_id === runId && (type === undefined || m.type === type);

/**
 * Sends a run-starting message (start_agent by default) and waits for its ack.
 * flat: the arguments at the top level instead of in payload.
 * Resolves the ack ({run_id, thread_id, ...}); counts the run as started.
 */
async function startRun(c, user, args, { type = 'start_agent', flat = false } = {}) {
  const id = uniqueMessageId('start');
  c.send(flat ? { type, message_id: id, ...args } : { type, message_id: id, payload: args });
  const reply = await c.nextMessage((m) => m.message_id === id && (m.type === 'ack' || m.type === 'error'));
  assert.equal(reply.type, 'ack', `${type} ${JSON.stringify(args).slice(0, 200)} answered ${JSON.stringify(reply)}`);
  assert.equal(typeof reply.run_id, 'string');
  assert.ok(reply.run_id.length > 0, 'ack has a run_id');
  assert.equal(typeof reply.thread_id, 'string');
  assert.ok(reply.thread_id.length > 0, 'ack has a thread_id');
  noteStarted(user, reply.run_id);
  return reply;
}

/** Sends stop_agent; resolves the reply (ack or error). */
async function stopRun(c, runId) {
  const id = uniqueMessageId('stop');
  c.send({ type: 'stop_agent', message_id: id, payload: { run_id: runId } });
  return c.nextMessage((m) => m.message_id === id && (m.type === 'ack' || m.type === 'error'));
}

const waitCompleted = (c, runId, ms = WAIT_MS) => c.nextMessage(isRunEvent(runId, 'agent_completed'), ms);

/**
 * Checks that, in events (the user's stream, in arrival order), run runId has
 * exactly one agent_completed, that nothing of the run follows it, that every
 * event of the run names user and thread, and (when given) its status. The run
 * counts as ended with one agent_completed only when all of that holds.
 * Returns the run's events.
 */
function checkRun(events, runId, { user, thread, status, agentName } = {}) {
  const mine = events.filter((e) => e && typeof e.seq === 'number' && e.run_id === runId);
  const completed = mine.filter((e) => e.type === 'agent_completed');
  const summary = () => JSON.stringify(mine.map((e) => `${e.seq}:${e.type}${e.status ? `/${e.status}` : ''}`));
  assert.ok(mine.length > 0, `no event of run ${runId}`);
  assert.equal(mine[0].type, 'agent_started', `run ${runId} begins with agent_started: ${summary()}`);
  assert.equal(mine.filter((e) => e.type === 'agent_started').length, 1, `one agent_started in ${summary()}`);
  assert.equal(completed.length, 1, `run ${runId}: exactly one agent_completed: ${summary()}`);
  assert.equal(mine.at(-1).type, 'agent_completed', `run ${runId}: nothing after agent_completed: ${summary()}`);
  for (let i = 1; i < mine.length; i++) assert.ok(mine[i].seq > mine[i - 1].seq, `run ${runId}: seq increases: ${summary()}`);
  for (const e of mine) {
    if (user !== undefined) assert.equal(e.user_id, user, `user_id of ${JSON.stringify(e).slice(0, 200)}`);
    if (thread !== undefined) assert.equal(e.thread_id, thread, `thread_id of ${JSON.stringify(e).slice(0, 200)}`);
  }
  if (agentName !== undefined) assert.equal(mine[0].agent_name, agentName);
  const done = completed[0];
  assert.equal(typeof done.final_response, 'string');
  if (status !== undefined) assert.equal(done.status, status, `status of ${JSON.stringify(done)}`);
  if (done.status !== 'success') {
    assert.equal(typeof done.error, 'string', `a server-made agent_completed says why: ${JSON.stringify(done)}`);
    assert.ok(done.error.length > 0, 'error text is not empty');
  }
  const key = `${user}/${runId}`;
  if (!endedKeys.has(key)) {
    endedKeys.add(key);
    figures.ended_with_one_completed++;
  }
  return mine;
}

/** Waits for the run's agent_completed, lets the connection settle, then checkRun on c's stream. */
async function finishRun(c, user, ack, opts = {}) {
  const done = await waitCompleted(c, ack.run_id, opts.timeoutMs || WAIT_MS);
  await c.sync();
  const events = checkRun(c.events(), ack.run_id, { user, thread: ack.thread_id, ...opts });
  return { done, events };
}

/* ------------------------------------------------------------------ */
/* processes, files, metrics                                            */
/* ------------------------------------------------------------------ */

function tempDir(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentwire-runs-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** True when pid is gone: kill(pid, 0) says ESRCH, or it is a zombie nobody reaped yet. */
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

const waitGone = (pid, what, timeoutMs = 5000) =>
  pollUntil(() => processGone(pid), { timeoutMs, intervalMs: 10, what: `${what} (pid ${pid}) to be gone` });

function readPid(file) {
  const text = fs.readFileSync(file, 'utf8').trim();
  assert.match(text, /^\d+$/, `pid file ${file}`);
  return Number(text);
}

/** Kills (SIGKILL) pids still alive when test t ends, so a failing test leaves no agent behind. */
function reapLater(t, pids) {
  t.after(() => {
    for (const pid of pids) {
      try { if (!processGone(pid)) process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    }
  });
}

async function metrics(srv) {
  const res = await api(srv, 'GET', '/metrics', undefined, { key: null });
  assert.equal(res.status, 200);
  return res.text;
}

/** Sum of the samples of name whose labels contain label (e.g. 'status="error"'). */
function metricWith(text, name, label) {
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m && m[1] === name && (m[2] || '').includes(label)) sum += Number(m[3]);
  }
  return sum;
}

async function history(srv, user) {
  const res = await api(srv, 'GET', `/api/v1/history?user_id=${encodeURIComponent(user)}`);
  assert.equal(res.status, 200, res.text);
  return res.json;
}

/** Server options of the exec tests: small grace, small timeouts. */
const execArgs = (cmd, extra = []) => ['--agent', `exec:${cmd}`, '--agent-kill-grace-ms', String(GRACE_MS), ...extra];

/** A shell agent: writes its pid to DIR/pid, announces itself, then runs body. */
function shellAgent(t, dir, body) {
  return tempFile(t, 'agent.sh', `#!/bin/sh\nDIR='${dir}'\n${body}\n`);
}

const concatPartials = (events) => events.filter((e) => e.type === 'partial_result').map((e) => e.content).join('');

/** Starts examples/agent_http.py on a free port; killed when t ends. Resolves its URL. */
async function startHttpAgent(t) {
  const proc = spawn('python3', [path.join(EXAMPLES, 'agent_http.py'), '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise((resolve) => proc.on('exit', resolve));
  t.after(async () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    await withTimeout(exited, 5000, 'agent_http.py to exit').catch(() => {});
  });
  let out = '';
  let err = '';
  proc.stderr.setEncoding('utf8').on('data', (c) => { err += c; });
  const url = await withTimeout(new Promise((resolve, reject) => {
    proc.stdout.setEncoding('utf8').on('data', (c) => {
      out += c;
      const m = /agent listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1]);
    });
    proc.on('exit', (code) => reject(new Error(`agent_http.py exited (${code}) before listening: ${err}`)));
    proc.on('error', reject);
  }), 10000, 'agent_http.py to print its address');
  return { proc, url };
}

/** A node HTTP server on a free port whose handler is handle(req, res); closed when t ends. */
async function startNodeAgent(t, handle) {
  const sockets = new Set();
  const server = http.createServer(handle);
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => {
    for (const s of sockets) s.destroy();
    server.close(() => resolve());
  }));
  return `http://127.0.0.1:${server.address().port}/run`;
}

/** A TCP port on 127.0.0.1 that nothing listens on (bound, then released). */
async function closedPort() {
  const srv = net.createServer();
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = srv.address();
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

/** Checks that the server's run counters agree with what this test saw. */
async function assertRunCounters(srv, started, byStatus) {
  const text = await metrics(srv);
  assert.equal(metricValue(text, 'agentwire_runs_started_total'), started, 'agentwire_runs_started_total');
  let total = 0;
  for (const [status, n] of Object.entries(byStatus)) {
    assert.equal(metricWith(text, 'agentwire_runs_completed_total', `status="${status}"`), n, `runs_completed_total{status="${status}"}`);
    total += n;
  }
  assert.equal(metricValue(text, 'agentwire_runs_completed_total'), total, 'agentwire_runs_completed_total');
}

/* ------------------------------------------------------------------ */
/* golden paths                                                         */
/* ------------------------------------------------------------------ */

test('builtin demo: ack, then agent_started .. agent_completed in order; the calculator says 14', T, async (t) => {
  const srv = await useServer(t, ['--agent', 'builtin:demo']);
  const user = randomId('demo');
  const c = await connectAs(srv, user);
  const c2 = await connectAs(srv, user); // a second tab of the same user sees the same run

  const ack = await startRun(c, user, { user_request: '2+3*4' });
  assert.equal(ack.for, 'start_agent');
  const { done, events } = await finishRun(c, user, ack, { status: 'success', agentName: 'demo', timeoutMs: 10000 });
  // the ack came before any event of the run
  const data = c.messages.map((m) => m.data);
  assert.ok(data.indexOf(ack) < data.findIndex((m) => m.type === 'agent_started'), 'ack precedes agent_started');

  const types = events.map((e) => e.type);
  assert.deepEqual(types.slice(0, 4), ['agent_started', 'agent_thinking', 'tool_executing', 'tool_completed']);
  const partials = types.slice(4, -1);
  assert.ok(partials.length >= 1, `at least one partial_result: ${types}`);
  assert.ok(partials.every((x) => x === 'partial_result'), `only partial_result between tool_completed and agent_completed: ${types}`);
  assert.equal(events[2].tool_name, 'calculator');
  assert.equal(events[3].tool_name, 'calculator');
  assert.equal(events[3].results.value, 14);
  assert.equal(typeof events[3].duration, 'number');
  assert.equal(typeof events[1].reasoning, 'string');
  assert.equal(done.final_response, '2+3*4 = 14');
  assert.equal(concatPartials(events), done.final_response);
  // seq without gaps: the run is the only thing this user received
  events.forEach((e, i) => assert.equal(e.seq, i + 1));

  const ack2 = await startRun(c, user, { user_request: 'hello brave new world hello' });
  const r2 = await finishRun(c, user, ack2, { status: 'success', agentName: 'demo', timeoutMs: 10000 });
  assert.equal(r2.events[2].tool_name, 'word_stats');
  assert.equal(r2.events[3].results.words, 5);
  assert.equal(concatPartials(r2.events), r2.done.final_response);
  assert.notEqual(ack2.run_id, ack.run_id);
  assert.notEqual(ack2.thread_id, ack.thread_id, 'a new thread for each start without thread_id');

  await c2.sync();
  assert.deepEqual(c2.events(), c.events(), 'the other tab got the same events');
  await assertRunCounters(srv, 2, { success: 2 });
});

test('exec backend with examples/agent_exec.py: the request reaches the agent, events in order', T, async (t) => {
  const cmd = `python3 ${path.join(EXAMPLES, 'agent_exec.py')}`;
  const srv = await useServer(t, execArgs(cmd));
  const user = randomId('exec');
  const c = await connectAs(srv, user);
  const request = 'Count the letters in this sentence';
  const ack = await startRun(c, user, { user_request: request, thread_id: 'th_exec_golden' });
  assert.equal(ack.thread_id, 'th_exec_golden');
  const { done, events } = await finishRun(c, user, ack, { status: 'success', agentName: cmd, timeoutMs: 10000 });
  const types = events.map((e) => e.type);
  assert.deepEqual(types.slice(0, 4), ['agent_started', 'agent_thinking', 'tool_executing', 'tool_completed']);
  assert.ok(types.slice(4, -1).length >= 1 && types.slice(4, -1).every((x) => x === 'partial_result'), String(types));
  assert.equal(events[2].parameters.text, request, 'the user_request reached the agent');
  const letters = [...request].filter((ch) => /[a-z]/i.test(ch)).length;
  assert.equal(events[3].results.letters, letters);
  assert.equal(done.final_response, `Your request has ${letters} letters, ${events[3].results.vowels} of them vowels.`);
  assert.equal(concatPartials(events).trim(), done.final_response);
  // stderr lines are read asynchronously: wait for the line rather than race it
  await pollUntil(() => srv.logs.some((l) => l.msg === 'agent stderr' && String(l.line).includes(`run ${ack.run_id}`)),
    { timeoutMs: 5000, what: 'the agent\'s stderr in the server log' });
  await assertRunCounters(srv, 1, { success: 1 });
});

test('http backend with examples/agent_http.py: the request reaches the agent, events in order', T, async (t) => {
  const agent = await startHttpAgent(t);
  const srv = await useServer(t, ['--agent', `http:${agent.url}`]);
  const user = randomId('http');
  const c = await connectAs(srv, user);
  const request = 'one two three four';
  const ack = await startRun(c, user, { user_request: request });
  const { done, events } = await finishRun(c, user, ack, { status: 'success', agentName: agent.url, timeoutMs: 10000 });
  const types = events.map((e) => e.type);
  assert.deepEqual(types.slice(0, 4), ['agent_started', 'agent_thinking', 'tool_executing', 'tool_completed']);
  assert.deepEqual(types.slice(4, -1), ['partial_result', 'partial_result', 'partial_result', 'partial_result']);
  assert.equal(events[2].parameters.text, request, 'the user_request reached the agent');
  assert.equal(events[3].results.text, 'four three two one');
  assert.equal(done.final_response, 'four three two one');
  assert.equal(concatPartials(events).trim(), done.final_response);

  // two runs at once on the threaded agent
  const [a1, a2] = await Promise.all([startRun(c, user, { user_request: 'a b' }), startRun(c, user, { user_request: 'c d' })]);
  const [d1, d2] = await Promise.all([waitCompleted(c, a1.run_id, 10000), waitCompleted(c, a2.run_id, 10000)]);
  assert.equal(d1.final_response, 'b a');
  assert.equal(d2.final_response, 'd c');
  await c.sync();
  checkRun(c.events(), a1.run_id, { user, thread: a1.thread_id, status: 'success' });
  checkRun(c.events(), a2.run_id, { user, thread: a2.thread_id, status: 'success' });
  await assertRunCounters(srv, 3, { success: 3 });
});

/* ------------------------------------------------------------------ */
/* starting runs: aliases, fields, thread ids, the request               */
/* ------------------------------------------------------------------ */

test('user_message and its aliases start runs with content, message or text; thread_id kept or made', T, async (t) => {
  // The echo agent returns the whole run request it read on stdin.
  const agent = tempFile(t, 'echo.py', [
    'import json, sys',
    'req = json.loads(sys.stdin.readline())',
    'print(json.dumps({"type": "partial_result", "content": json.dumps(req)}), flush=True)',
    'print(json.dumps({"type": "agent_completed", "status": "success", "final_response": req["user_request"]}), flush=True)',
  ].join('\n'));
  const srv = await useServer(t, execArgs(`python3 ${agent}`, ['--agent-name', 'helper', '--max-runs-per-user', '20']));
  const user = randomId('alias');
  const c = await connectAs(srv, user);

  const cases = [
    { type: 'user_message', args: { content: 'via user_message content', thread_id: 'th_given_1', references: [{ doc: 'a.txt' }] } },
    { type: 'user_message', args: { message: 'via user_message message' } },
    { type: 'user_message', args: { text: 'via user_message text' } },
    { type: 'chat_message', args: { content: 'via chat_message', thread_id: 'th_given_2' } },
    { type: 'message', args: { text: 'via message' } },
    { type: 'user_input', args: { message: 'via user_input' } },
    { type: 'chat', args: { content: 'via chat', thread_id: 'th_given_3' } },
    { type: 'execute_agent', args: { user_request: 'via execute_agent' } },
    { type: 'start_agent', args: { user_request: 'via start_agent', thread_id: 'th_given_4', context: { k: 1 }, settings: { s: true } } },
    { type: 'user_message', flat: true, args: { content: 'via a flat user_message', thread_id: 'th_flat' } },
  ];
  const acks = await Promise.all(cases.map((k) => startRun(c, user, k.args, { type: k.type, flat: k.flat })));
  const threads = new Set();
  for (const [i, k] of cases.entries()) {
    const ack = acks[i];
    const text = k.args.content ?? k.args.message ?? k.args.text ?? k.args.user_request;
    if (k.args.thread_id) assert.equal(ack.thread_id, k.args.thread_id, `${k.type}: the given thread_id is kept`);
    else assert.ok(!threads.has(ack.thread_id), `${k.type}: a new server-made thread_id`);
    threads.add(ack.thread_id);
    const done = await waitCompleted(c, ack.run_id, 10000);
    assert.equal(done.final_response, text, `${k.type}: the text reached the agent as user_request`);
    const echoed = JSON.parse(c.events().find(isRunEvent(ack.run_id, 'partial_result')).content);
    assert.equal(echoed.user_request, text);
    assert.equal(echoed.run_id, ack.run_id, 'the request names the run');
    assert.equal(echoed.thread_id, ack.thread_id, 'the request names the thread');
    assert.equal(echoed.user_id, user, 'the request names the user');
    if (k.args.references) assert.deepEqual(echoed.context.references, k.args.references, 'references arrive as context.references');
    if (k.args.context) assert.deepEqual(echoed.context, k.args.context);
    if (k.args.settings) assert.deepEqual(echoed.settings, k.args.settings);
  }
  await c.sync();
  for (const ack of acks) checkRun(c.events(), ack.run_id, { user, thread: ack.thread_id, status: 'success', agentName: 'helper' });
  assert.equal(new Set(acks.map((a) => a.run_id)).size, acks.length, 'run ids are unique');

  // a start without text is refused and starts nothing
  for (const bad of [{ type: 'start_agent', payload: {} }, { type: 'user_message', payload: { thread_id: 'x' } }, { type: 'start_agent', payload: { user_request: 5 } }]) {
    const id = uniqueMessageId('bad');
    c.send({ ...bad, message_id: id });
    const reply = await c.nextMessage((m) => m.message_id === id);
    assert.equal(reply.type, 'error', `${JSON.stringify(bad)} answered ${JSON.stringify(reply)}`);
    assert.equal(reply.code, 'invalid_message');
  }
  await c.sync();
  assert.equal(c.events().filter((e) => e.type === 'agent_started').length, cases.length, 'no run for a refused start');
  await assertRunCounters(srv, cases.length, { success: cases.length });
});

test('the exec agent gets no AGENTWIRE_* variable and none of the server\'s secrets', T, async (t) => {
  const agent = tempFile(t, 'env.py', [
    'import json, os, sys',
    'sys.stdin.readline()',
    'print(json.dumps({"type": "partial_result", "content": json.dumps(dict(os.environ))}), flush=True)',
    'print(json.dumps({"type": "agent_completed", "status": "success", "final_response": "env"}), flush=True)',
  ].join('\n'));
  // settings given through the environment must not leak to the agent either
  const srv = await useServer(t, execArgs(`python3 ${agent}`), { AGENTWIRE_HISTORY_SIZE: '1000', AGENTWIRE_DRAIN_TIMEOUT_MS: '10000' });
  const user = randomId('env');
  const c = await connectAs(srv, user);
  const ack = await startRun(c, user, { user_request: 'env?' });
  await finishRun(c, user, ack, { status: 'success' });
  const env = JSON.parse(c.events().find(isRunEvent(ack.run_id, 'partial_result')).content);
  assert.ok(Object.keys(env).length > 0, 'the agent has an environment (PATH at least)');
  assert.deepEqual(Object.keys(env).filter((k) => k.startsWith('AGENTWIRE_')), []);
  for (const [k, v] of Object.entries(env)) {
    assert.ok(!v.includes(srv.secret), `${k} holds the JWT secret`);
    assert.ok(!v.includes(srv.apiKey), `${k} holds the API key`);
  }
});

/* ------------------------------------------------------------------ */
/* faults                                                               */
/* ------------------------------------------------------------------ */

test('an agent that crashes (exit 3 after one event): agent_completed error naming status 3', T, async (t) => {
  const agent = shellAgent(t, '/nonexistent', [
    'read line',
    'echo \'{"type":"agent_thinking","reasoning":"about to crash"}\'',
    'exit 3',
  ].join('\n'));
  const srv = await useServer(t, execArgs(`sh ${agent}`));
  const user = randomId('crash');
  const c = await connectAs(srv, user);
  const ack = await startRun(c, user, { user_request: 'crash please' });
  const { done, events } = await finishRun(c, user, ack, { status: 'error' });
  assert.deepEqual(events.map((e) => e.type), ['agent_started', 'agent_thinking', 'agent_completed']);
  assert.equal(done.final_response, '');
  assert.match(done.error, /\b3\b/, `the error names exit status 3: ${done.error}`);
  await assertRunCounters(srv, 1, { error: 1 });
});

test('an agent that hangs: --run-timeout-ms ends the run timeout and its whole process group is gone', T, async (t) => {
  const dir = tempDir(t);
  const agent = shellAgent(t, dir, [
    'echo $$ > "$DIR/pid"',
    'sleep 1000 &',
    'echo $! > "$DIR/child"',
    'echo \'{"type":"agent_thinking","reasoning":"hanging"}\'',
    'wait',
  ].join('\n'));
  const srv = await useServer(t, execArgs(`sh ${agent}`, ['--run-timeout-ms', '1000']));
  const user = randomId('hang');
  const c = await connectAs(srv, user);
  const ack = await startRun(c, user, { user_request: 'hang' });
  await c.nextMessage(isRunEvent(ack.run_id, 'agent_thinking'));
  const pid = readPid(path.join(dir, 'pid'));
  const child = readPid(path.join(dir, 'child'));
  reapLater(t, [pid, child]);
  assert.ok(!processGone(pid) && !processGone(child), 'the agent runs before the timeout');
  const { done, events } = await finishRun(c, user, ack, { status: 'timeout' });
  assert.equal(done.final_response, '');
  const elapsed = done.timestamp - events[0].timestamp;
  assert.ok(elapsed >= 900 && elapsed < 4000, `timed out after ${elapsed} ms (--run-timeout-ms 1000)`);
  await waitGone(pid, 'the hanging agent');
  await waitGone(child, 'the child the agent forked');
  await c.sync();
  checkRun(c.events(), ack.run_id, { user, thread: ack.thread_id, status: 'timeout' });
  await assertRunCounters(srv, 1, { timeout: 1 });
});

test('an agent that exits at once without output, and a command that does not exist: status error', T, async (t) => {
  const silent = shellAgent(t, '/nonexistent', 'exit 0');
  const srv = await useServer(t, execArgs(`sh ${silent}`));
  const user = randomId('silent');
  const c = await connectAs(srv, user);
  const ack = await startRun(c, user, { user_request: 'say nothing' });
  const { done, events } = await finishRun(c, user, ack, { status: 'error' });
  assert.deepEqual(events.map((e) => e.type), ['agent_started', 'agent_completed']);
  assert.equal(done.final_response, '');

  const srv2 = await useServer(t, execArgs('/nonexistent/agentwire-no-such-agent --flag'));
  const c2 = await connectAs(srv2, user);
  const ack2 = await startRun(c2, user, { user_request: 'nobody home' });
  const r2 = await finishRun(c2, user, ack2, { status: 'error' });
  assert.deepEqual(r2.events.map((e) => e.type), ['agent_started', 'agent_completed']);
  assert.equal(r2.done.final_response, '');
  await assertRunCounters(srv2, 1, { error: 1 });
});

test('http agents that cannot be reached, answer 500, end without agent_completed, or hang until stop_agent', T, async (t) => {
  const user = randomId('httpfault');
  // nothing listening
  const srvA = await useServer(t, ['--agent', `http:http://127.0.0.1:${await closedPort()}/run`]);
  const cA = await connectAs(srvA, user);
  const ackA = await startRun(cA, user, { user_request: 'anyone?' });
  const rA = await finishRun(cA, user, ackA, { status: 'error' });
  assert.deepEqual(rA.events.map((e) => e.type), ['agent_started', 'agent_completed']);

  // 500 with a body that looks like events: not an agent stream
  const url500 = await startNodeAgent(t, (req, res) => {
    req.resume();
    res.writeHead(500, { 'Content-Type': 'application/x-ndjson' });
    res.end('{"type":"agent_completed","status":"success","final_response":"should not count"}\n');
  });
  const srvB = await useServer(t, ['--agent', `http:${url500}`]);
  const cB = await connectAs(srvB, user);
  const ackB = await startRun(cB, user, { user_request: 'fail' });
  const rB = await finishRun(cB, user, ackB, { status: 'error' });
  assert.equal(rB.done.final_response, '');

  // a stream that ends after one event, and one that hangs until the request is aborted
  const aborts = new Map(); // run_id -> resolve, called when the server drops the request
  const abortedRun = (runId) => withTimeout(new Promise((resolve) => {
    if (aborts.get(runId) === true) resolve(runId);
    else aborts.set(runId, () => resolve(runId));
  }), 5000, `the server to abort the agent request of ${runId}`);
  const aborted = (runId) => {
    const f = aborts.get(runId);
    if (typeof f === 'function') f();
    else aborts.set(runId, true);
  };
  const urlMixed = await startNodeAgent(t, (req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      const run = JSON.parse(body);
      res.writeHead(200, { 'Content-Type': 'application/x-ndjson' });
      res.write('{"type":"agent_thinking","reasoning":"streaming"}\n');
      if (run.user_request === 'short') res.end();
      else res.on('close', () => aborted(run.run_id)); // hangs until the server aborts it
    });
  });
  const srvC = await useServer(t, ['--agent', `http:${urlMixed}`]);
  const cC = await connectAs(srvC, user);
  const ackShort = await startRun(cC, user, { user_request: 'short' });
  const rShort = await finishRun(cC, user, ackShort, { status: 'error' });
  assert.deepEqual(rShort.events.map((e) => e.type), ['agent_started', 'agent_thinking', 'agent_completed']);

  const ackHang = await startRun(cC, user, { user_request: 'hang' });
  await cC.nextMessage(isRunEvent(ackHang.run_id, 'agent_thinking'));
  const reply = await stopRun(cC, ackHang.run_id);
  assert.equal(reply.type, 'ack', JSON.stringify(reply));
  await finishRun(cC, user, ackHang, { status: 'cancelled' });
  assert.equal(await abortedRun(ackHang.run_id), ackHang.run_id);
  await assertRunCounters(srvC, 2, { error: 1, cancelled: 1 });

  // --run-timeout-ms aborts the request of an http agent too
  const srvD = await useServer(t, ['--agent', `http:${urlMixed}`, '--run-timeout-ms', '800']);
  const cD = await connectAs(srvD, user);
  const ackSlow = await startRun(cD, user, { user_request: 'hang' });
  const rSlow = await finishRun(cD, user, ackSlow, { status: 'timeout' });
  const elapsed = rSlow.done.timestamp - rSlow.events[0].timestamp;
  assert.ok(elapsed >= 700 && elapsed < 4000, `timed out after ${elapsed} ms (--run-timeout-ms 800)`);
  assert.equal(await abortedRun(ackSlow.run_id), ackSlow.run_id);
});

test('garbage lines between valid events are dropped and counted; the run goes on', T, async (t) => {
  const agent = tempFile(t, 'garbage.py', [
    'import json, sys',
    'sys.stdin.readline()',
    'def out(s):',
    '    sys.stdout.write(s + "\\n")',
    '    sys.stdout.flush()',
    'out(json.dumps({"type": "agent_thinking", "reasoning": "first"}))',
    'out("this is not json")',
    'out("[1, 2, 3]")',
    'out("42")',
    'out(json.dumps({"no_type": True}))',
    'out(json.dumps({"type": "agent_started", "agent_name": "impostor"}))',
    'out(\'{"type": "partial_result", "content": "trunc\')',
    'out(json.dumps({"type": "tool_completed", "tool_name": "never", "results": {}, "duration": 1}))',
    'out(json.dumps({"type": "agent_thinking"}))',
    'out(json.dumps({"type": "Bad-Type"}))',
    'out(json.dumps({"type": "partial_result", "content": "a"}))',
    'out(json.dumps({"type": "tool_executing", "tool_name": "t1", "parameters": "not an object"}))',
    'out(json.dumps({"type": "tool_executing", "tool_name": "t1", "parameters": {}}))',
    'out(json.dumps({"type": "tool_completed", "tool_name": "t2", "results": {}, "duration": 1}))',
    'out(json.dumps({"type": "tool_completed", "tool_name": "t1", "results": {"ok": True}, "duration": 1}))',
    'out(json.dumps({"type": "agent_completed", "status": "finished", "final_response": "bad status"}))',
    'out(json.dumps({"type": "partial_result", "content": "b"}))',
    'out(json.dumps({"type": "agent_completed", "status": "success", "final_response": "ab"}))',
  ].join('\n'));
  const GARBAGE = 12; // the lines above that are not valid events of this run
  const srv = await useServer(t, execArgs(`python3 ${agent}`));
  const user = randomId('garbage');
  const c = await connectAs(srv, user);
  const before = metricValue(await metrics(srv), 'agentwire_agent_lines_dropped_total') || 0;
  const ack = await startRun(c, user, { user_request: 'make a mess' });
  const { done, events } = await finishRun(c, user, ack, { status: 'success' });
  assert.deepEqual(events.map((e) => e.type), [
    'agent_started', 'agent_thinking', 'partial_result', 'tool_executing', 'tool_completed', 'partial_result', 'agent_completed',
  ]);
  assert.notEqual(events[0].agent_name, 'impostor', 'the agent cannot send its own agent_started');
  assert.deepEqual(events[4].results, { ok: true });
  assert.equal(done.final_response, 'ab');
  assert.equal(concatPartials(events), 'ab');
  const after = metricValue(await metrics(srv), 'agentwire_agent_lines_dropped_total');
  assert.equal(after - before, GARBAGE, `agentwire_agent_lines_dropped_total went ${before} -> ${after}`);
  const droppedLines = () => srv.logs.filter((l) => l.run === ack.run_id && /agent line dropped|agent event refused/.test(l.msg));
  await pollUntil(() => droppedLines().length >= GARBAGE, { timeoutMs: 5000, what: 'the dropped-line log lines' });
  const logged = droppedLines();
  assert.equal(logged.length, GARBAGE, `each dropped line is logged: ${JSON.stringify(logged).slice(0, 1500)}`);
});

test('a line longer than --agent-max-line-bytes is dropped and the run goes on', T, async (t) => {
  const agent = tempFile(t, 'long.py', [
    'import json, sys',
    'sys.stdin.readline()',
    'print(json.dumps({"type": "partial_result", "content": "x" * 5000}), flush=True)',
    'print(json.dumps({"type": "partial_result", "content": "short"}), flush=True)',
    'print(json.dumps({"type": "partial_result", "content": "y" * 20000}), flush=True)',
    'print(json.dumps({"type": "agent_completed", "status": "success", "final_response": "short"}), flush=True)',
  ].join('\n'));
  const srv = await useServer(t, execArgs(`python3 ${agent}`, ['--agent-max-line-bytes', '1024']));
  const user = randomId('long');
  const c = await connectAs(srv, user);
  const ack = await startRun(c, user, { user_request: 'long lines' });
  const { events } = await finishRun(c, user, ack, { status: 'success' });
  assert.deepEqual(events.map((e) => e.type), ['agent_started', 'partial_result', 'agent_completed']);
  assert.equal(events[1].content, 'short');
  // docs/agents.md only says such a line is dropped; the server logs it (it does
  // not count it in agentwire_agent_lines_dropped_total, which counts invalid events)
  const longLines = () => srv.logs.filter((l) => l.run === ack.run_id && /too long/.test(l.msg));
  await pollUntil(() => longLines().length >= 2, { timeoutMs: 5000, what: 'the too-long log lines' });
  const logged = longLines();
  assert.equal(logged.length, 2, `both long lines are logged: ${JSON.stringify(srv.logs.filter((l) => l.run === ack.run_id))}`);
  assert.ok(logged.every((l) => l.bytes > 1024), JSON.stringify(logged));
});

test('an agent naming another user, run and thread is stamped over: only the starting user gets it', T, async (t) => {
  const user = randomId('owner');
  const victim = randomId('victim');
  const foreign = { user_id: victim, run_id: 'run_foreign', thread_id: 'thread_foreign' };
  const agent = tempFile(t, 'foreign.py', [
    'import json, sys',
    'sys.stdin.readline()',
    `f = json.loads(${JSON.stringify(JSON.stringify(foreign))})`,
    'def out(e):',
    '    e.update(f)',
    '    print(json.dumps(e), flush=True)',
    'out({"type": "agent_thinking", "reasoning": "I am someone else", "seq": 999999, "event_id": "ev_fake", "epoch": "fake"})',
    'out({"type": "tool_executing", "tool_name": "t", "parameters": {}})',
    'out({"type": "tool_completed", "tool_name": "t", "results": {}, "duration": 1})',
    'out({"type": "partial_result", "content": "stolen?"})',
    'out({"type": "custom_note", "note": "hello"})',
    'out({"type": "agent_completed", "status": "success", "final_response": "stolen?"})',
  ].join('\n'));
  const srv = await useServer(t, execArgs(`python3 ${agent}`));
  const c = await connectAs(srv, user);
  const v = await connectAs(srv, victim);
  const ack = await startRun(c, user, { user_request: 'impersonate' });
  const { events } = await finishRun(c, user, ack, { status: 'success' });
  assert.deepEqual(events.map((e) => e.type),
    ['agent_started', 'agent_thinking', 'tool_executing', 'tool_completed', 'partial_result', 'custom_note', 'agent_completed']);
  events.forEach((e, i) => {
    assert.equal(e.user_id, user);
    assert.equal(e.run_id, ack.run_id);
    assert.equal(e.thread_id, ack.thread_id);
    assert.equal(e.seq, i + 1, 'the server numbers the events');
    assert.equal(e.epoch, c.hello.epoch);
  });
  assert.notEqual(events[1].event_id, 'ev_fake');
  await v.sync();
  assert.deepEqual(v.events(), [], 'the victim received nothing');
  const vh = await history(srv, victim);
  assert.equal(vh.seq, 0, 'nothing was published to the victim');
  assert.deepEqual(vh.events, []);
  const uh = await history(srv, user);
  assert.ok(uh.events.every((e) => e.run_id === ack.run_id && e.thread_id === ack.thread_id), 'no foreign ids in the user\'s history');
  // and no run named run_foreign was opened for anyone
  for (const target of [user, victim]) {
    const res = await api(srv, 'POST', '/api/v1/publish',
      { user_id: target, type: 'agent_thinking', run_id: 'run_foreign', thread_id: 'thread_foreign', reasoning: 'x' });
    assert.equal(res.status, 409, `run_foreign is not open for ${target}: ${res.text}`);
  }
});

test('a flood of 5000 partial_result lines is relayed whole and in order', { timeout: 60000 }, async (t) => {
  const N = 5000;
  const agent = tempFile(t, 'flood.py', [
    'import json, sys',
    'sys.stdin.readline()',
    `lines = [json.dumps({"type": "partial_result", "n": i, "content": "%d " % i}) for i in range(${N})]`,
    'lines.append(json.dumps({"type": "agent_completed", "status": "success", "final_response": "flooded"}))',
    'sys.stdout.write("\\n".join(lines) + "\\n")',
  ].join('\n'));
  const srv = await useServer(t, execArgs(`python3 ${agent}`, ['--queue-limit-bytes', String(64 << 20), '--history-size', '10000']));
  const user = randomId('flood');
  const c = await connectAs(srv, user);
  const ack = await startRun(c, user, { user_request: 'flood' });
  const { done, events } = await finishRun(c, user, ack, { status: 'success', timeoutMs: 30000 });
  assert.equal(done.final_response, 'flooded');
  const partials = events.filter((e) => e.type === 'partial_result');
  assert.equal(partials.length, N, `all ${N} partial_result relayed`);
  partials.forEach((e, i) => { if (e.n !== i) assert.fail(`partial ${i} has n ${e.n}`); });
  assert.equal(events.length, N + 2);
});

test('--max-events-per-run 100: an endless flood is stopped with status error and the agent killed', T, async (t) => {
  const dir = tempDir(t);
  const agent = tempFile(t, 'flood.py', [
    'import json, os, sys',
    'sys.stdin.readline()',
    `open(${JSON.stringify(path.join(dir, 'pid'))}, "w").write(str(os.getpid()))`,
    'i = 0',
    'while True:',
    '    sys.stdout.write(json.dumps({"type": "partial_result", "n": i, "content": "x"}) + "\\n")',
    '    i += 1',
  ].join('\n'));
  const srv = await useServer(t, execArgs(`python3 ${agent}`, ['--max-events-per-run', '100', '--queue-limit-bytes', String(16 << 20)]));
  const user = randomId('limit');
  const c = await connectAs(srv, user);
  const ack = await startRun(c, user, { user_request: 'flood forever' });
  const { done, events } = await finishRun(c, user, ack, { status: 'error', timeoutMs: 10000 });
  assert.equal(done.final_response, '');
  const partials = events.filter((e) => e.type === 'partial_result');
  assert.ok(partials.length <= 100, `at most 100 events relayed, got ${partials.length}`);
  assert.ok(partials.length >= 90, `the limit is about 100 events, got ${partials.length}`);
  partials.forEach((e, i) => assert.equal(e.n, i));
  const pid = readPid(path.join(dir, 'pid'));
  reapLater(t, [pid]);
  await waitGone(pid, 'the flooding agent');
  await c.sync();
  checkRun(c.events(), ack.run_id, { user, thread: ack.thread_id, status: 'error' });
  await assertRunCounters(srv, 1, { error: 1 });
});

/* ------------------------------------------------------------------ */
/* stop_agent and signals                                               */
/* ------------------------------------------------------------------ */

test('stop_agent mid-run: ack, agent_completed cancelled, the agent is gone; a late line is not relayed', T, async (t) => {
  const dir = tempDir(t);
  const agent = shellAgent(t, dir, [
    'echo $$ > "$DIR/pid"',
    // on SIGTERM the agent tries one more event, then exits
    'trap \'echo "{\\"type\\":\\"partial_result\\",\\"content\\":\\"late\\"}"; exit 0\' TERM',
    'echo \'{"type":"agent_thinking","reasoning":"working"}\'',
    'while :; do sleep 0.05; done',
  ].join('\n'));
  const srv = await useServer(t, execArgs(`sh ${agent}`));
  const user = randomId('stop');
  const c = await connectAs(srv, user);
  const ack = await startRun(c, user, { user_request: 'long task' });
  await c.nextMessage(isRunEvent(ack.run_id, 'agent_thinking'));
  const pid = readPid(path.join(dir, 'pid'));
  reapLater(t, [pid]);
  const reply = await stopRun(c, ack.run_id);
  assert.equal(reply.type, 'ack', JSON.stringify(reply));
  assert.equal(reply.for, 'stop_agent');
  assert.equal(reply.run_id, ack.run_id);
  const done = await waitCompleted(c, ack.run_id);
  assert.equal(done.status, 'cancelled');
  assert.equal(done.final_response, '');
  await waitGone(pid, 'the stopped agent');
  await c.sync();
  const events = checkRun(c.events(), ack.run_id, { user, thread: ack.thread_id, status: 'cancelled' });
  assert.ok(!events.some((e) => e.content === 'late'), 'the line printed after the cancel was not relayed');

  // stopping it again, or a run that never existed: not_found
  for (const runId of [ack.run_id, 'run_does_not_exist']) {
    const r = await stopRun(c, runId);
    assert.equal(r.type, 'error', JSON.stringify(r));
    assert.equal(r.code, 'not_found');
  }
  // stop_agent without run_id is a bad message
  const id = uniqueMessageId('stop');
  c.send({ type: 'stop_agent', message_id: id, payload: {} });
  const bad = await c.nextMessage((m) => m.message_id === id);
  assert.equal(bad.type, 'error');
  assert.equal(bad.code, 'invalid_message');
  await assertRunCounters(srv, 1, { cancelled: 1 });
  // last, so that a failure here leaves the checks above in force
  const data = c.messages.map((m) => m.data);
  assert.ok(data.indexOf(reply) < data.indexOf(done),
    `the stop_agent ack precedes the run's agent_completed; received: ${JSON.stringify(data.slice(data.indexOf(done) - 1, data.indexOf(reply) + 1))}`);
});

test('stop_agent on another user\'s run is not_found and leaves the run alone', T, async (t) => {
  const agent = shellAgent(t, '/nonexistent', [
    'read line',
    'echo \'{"type":"agent_thinking","reasoning":"working"}\'',
    'while :; do sleep 0.05; done',
  ].join('\n'));
  const srv = await useServer(t, execArgs(`sh ${agent}`));
  const owner = randomId('owner');
  const other = randomId('other');
  const c = await connectAs(srv, owner);
  const o = await connectAs(srv, other);
  const ack = await startRun(c, owner, { user_request: 'mine' });
  await c.nextMessage(isRunEvent(ack.run_id, 'agent_thinking'));
  const r = await stopRun(o, ack.run_id);
  assert.equal(r.type, 'error', JSON.stringify(r));
  assert.equal(r.code, 'not_found');
  await c.sync();
  assert.equal(c.events().filter(isRunEvent(ack.run_id, 'agent_completed')).length, 0, 'the run is still open');
  const mine = await stopRun(c, ack.run_id);
  assert.equal(mine.type, 'ack');
  await finishRun(c, owner, ack, { status: 'cancelled' });
  await o.sync();
  assert.deepEqual(o.events(), []);
});

test('an agent that ignores SIGTERM is SIGKILLed after the grace on stop_agent', T, async (t) => {
  const dir = tempDir(t);
  const agent = shellAgent(t, dir, [
    'echo $$ > "$DIR/pid"',
    'trap \'echo TERM >> "$DIR/signals"\' TERM',
    'echo \'{"type":"agent_thinking","reasoning":"stubborn"}\'',
    'while :; do sleep 0.05; done',
  ].join('\n'));
  const srv = await useServer(t, execArgs(`sh ${agent}`));
  const user = randomId('stubborn');
  const c = await connectAs(srv, user);
  const ack = await startRun(c, user, { user_request: 'ignore TERM' });
  await c.nextMessage(isRunEvent(ack.run_id, 'agent_thinking'));
  const pid = readPid(path.join(dir, 'pid'));
  reapLater(t, [pid]);
  const stoppedAt = Date.now();
  const reply = await stopRun(c, ack.run_id);
  assert.equal(reply.type, 'ack', JSON.stringify(reply));
  await finishRun(c, user, ack, { status: 'cancelled' });
  await waitGone(pid, 'the agent that ignores SIGTERM');
  const took = Date.now() - stoppedAt;
  assert.match(fs.readFileSync(path.join(dir, 'signals'), 'utf8'), /TERM/, 'SIGTERM came first');
  assert.ok(took >= GRACE_MS - 50, `SIGKILL only after the grace (${GRACE_MS} ms): gone after ${took} ms`);
  await c.sync();
  checkRun(c.events(), ack.run_id, { user, thread: ack.thread_id, status: 'cancelled' });
});

test('an agent still running after its own agent_completed is killed after the grace; one agent_completed', T, async (t) => {
  const dir = tempDir(t);
  const agent = shellAgent(t, dir, [
    'echo $$ > "$DIR/pid"',
    'trap \'echo TERM >> "$DIR/signals"\' TERM',
    'echo \'{"type":"agent_completed","status":"success","final_response":"done early"}\'',
    'while :; do sleep 0.05; done',
  ].join('\n'));
  const srv = await useServer(t, execArgs(`sh ${agent}`));
  const user = randomId('linger');
  const c = await connectAs(srv, user);
  const ack = await startRun(c, user, { user_request: 'linger' });
  const done = await waitCompleted(c, ack.run_id);
  assert.equal(done.status, 'success');
  assert.equal(done.final_response, 'done early');
  assert.equal(done.error, undefined);
  const pid = readPid(path.join(dir, 'pid'));
  reapLater(t, [pid]);
  await waitGone(pid, 'the lingering agent');
  const took = Date.now() - done.timestamp;
  assert.match(fs.readFileSync(path.join(dir, 'signals'), 'utf8'), /TERM/, 'SIGTERM after the grace, then SIGKILL');
  assert.ok(took >= 2 * GRACE_MS - 100, `grace to exit, then grace after SIGTERM: gone after ${took} ms`);
  await c.sync();
  checkRun(c.events(), ack.run_id, { user, thread: ack.thread_id, status: 'success' });
  await assertRunCounters(srv, 1, { success: 1 });
});

/* ------------------------------------------------------------------ */
/* limits and isolation                                                 */
/* ------------------------------------------------------------------ */

test('--max-runs-per-user 2: a third open run is refused with too_many_runs until one completes', T, async (t) => {
  const dir = tempDir(t);
  // completes when the test creates DIR/release_<run_id>
  const agent = tempFile(t, 'wait.py', [
    'import json, os, sys, time',
    'req = json.loads(sys.stdin.readline())',
    'print(json.dumps({"type": "agent_thinking", "reasoning": "waiting"}), flush=True)',
    `release = os.path.join(${JSON.stringify(dir)}, "release_" + req["run_id"])`,
    'deadline = time.time() + 20',
    'while not os.path.exists(release) and time.time() < deadline:',
    '    time.sleep(0.02)',
    'print(json.dumps({"type": "agent_completed", "status": "success", "final_response": "released"}), flush=True)',
  ].join('\n'));
  const srv = await useServer(t, execArgs(`python3 ${agent}`, ['--max-runs-per-user', '2']));
  const user = randomId('limit');
  const c = await connectAs(srv, user);
  const c2 = await connectAs(srv, user); // the limit is per user, not per connection
  const other = await connectAs(srv, randomId('free'));
  const a1 = await startRun(c, user, { user_request: 'one' });
  const a2 = await startRun(c2, user, { user_request: 'two' });
  const release = (ack) => fs.writeFileSync(path.join(dir, `release_${ack.run_id}`), '');

  for (const [conn, type] of [[c, 'start_agent'], [c2, 'user_message']]) {
    const id = uniqueMessageId('third');
    conn.send({ type, message_id: id, payload: type === 'start_agent' ? { user_request: 'three' } : { content: 'three' } });
    const reply = await conn.nextMessage((m) => m.message_id === id);
    assert.equal(reply.type, 'error', `a third run answered ${JSON.stringify(reply)}`);
    assert.equal(reply.code, 'too_many_runs');
  }
  // another user is not limited by this one
  const otherUser = other.hello.user_id;
  const ao = await startRun(other, otherUser, { user_request: 'mine' });
  release(ao);
  await finishRun(other, otherUser, ao, { status: 'success' });

  release(a1);
  await finishRun(c, user, a1, { status: 'success' });
  const a3 = await startRun(c, user, { user_request: 'three again' });
  release(a2);
  release(a3);
  await finishRun(c, user, a2, { status: 'success' });
  await finishRun(c, user, a3, { status: 'success' });
  assert.equal(c.events().filter((e) => e.type === 'agent_started').length, 3, 'the refused starts started nothing');
  await assertRunCounters(srv, 4, { success: 4 });
});

test('two users running agents at once each see only their own runs', T, async (t) => {
  const cmd = `python3 ${path.join(EXAMPLES, 'agent_exec.py')}`;
  const srv = await useServer(t, execArgs(cmd));
  const users = [randomId('alice'), randomId('bob')];
  const conns = await Promise.all(users.map((u) => connectAs(srv, u)));
  const acks = await Promise.all(users.map((u, i) =>
    Promise.all([1, 2, 3].map((k) => startRun(conns[i], u, { user_request: `${u} request ${k}` })))));
  for (const [i, u] of users.entries()) {
    const c = conns[i];
    const mine = new Set(acks[i].map((a) => a.run_id));
    for (const a of acks[i]) await waitCompleted(c, a.run_id, 10000);
    await c.sync();
    for (const a of acks[i]) {
      const events = checkRun(c.events(), a.run_id, { user: u, thread: a.thread_id, status: 'success' });
      assert.equal(events.find((e) => e.type === 'tool_executing').parameters.text, `${u} request ${acks[i].indexOf(a) + 1}`);
    }
    for (const e of c.events()) {
      assert.ok(mine.has(e.run_id), `${u} received an event of a run it did not start: ${JSON.stringify(e).slice(0, 200)}`);
      assert.equal(e.user_id, u);
    }
    c.events().forEach((e, k) => assert.equal(e.seq, k + 1, `${u}: seq without gaps`));
  }
  // the runs overlapped in time
  const span = (i) => {
    const ev = conns[i].events();
    return [ev[0].timestamp, ev.at(-1).timestamp];
  };
  const [s0, s1] = [span(0), span(1)];
  assert.ok(s0[0] < s1[1] && s1[0] < s0[1], 'the two users\' runs overlapped');
  await assertRunCounters(srv, 6, { success: 6 });
});

/* ------------------------------------------------------------------ */
/* orphans and drain                                                    */
/* ------------------------------------------------------------------ */

test('a run whose user has no connection for --run-orphan-grace-ms is cancelled; a resume gets it', T, async (t) => {
  const dir = tempDir(t);
  const agent = shellAgent(t, dir, [
    'echo $$ > "$DIR/pid"',
    'echo \'{"type":"agent_thinking","reasoning":"slow"}\'',
    'while :; do sleep 0.05; done',
  ].join('\n'));
  const srv = await useServer(t, execArgs(`sh ${agent}`, ['--run-orphan-grace-ms', '500']));
  const user = randomId('orphan');
  const c = await connectAs(srv, user);
  const epoch = c.hello.epoch;
  const ack = await startRun(c, user, { user_request: 'slow' });
  const thinking = await c.nextMessage(isRunEvent(ack.run_id, 'agent_thinking'));
  const pid = readPid(path.join(dir, 'pid'));
  reapLater(t, [pid]);
  const lastSeq = thinking.seq;
  await c.close();
  const closedAt = Date.now();

  const found = await pollUntil(async () => {
    const h = await history(srv, user);
    return h.events.find(isRunEvent(ack.run_id, 'agent_completed'));
  }, { timeoutMs: 5000, intervalMs: 50, what: 'the orphaned run to be completed' });
  assert.equal(found.status, 'cancelled');
  const after = found.timestamp - closedAt;
  assert.ok(after >= 400, `cancelled ${after} ms after the last connection closed (grace 500 ms)`);
  await waitGone(pid, 'the orphaned agent');

  const back = await connectReady(srv.wsUrl({ since: lastSeq, epoch }), { headers: { Authorization: `Bearer ${srv.token(user)}` } });
  assert.equal(back.hello.resumed, true, JSON.stringify(back.hello));
  const done = await waitCompleted(back, ack.run_id);
  assert.equal(done.status, 'cancelled');
  assert.equal(done.event_id, found.event_id);
  await back.sync();
  checkRun([...c.events(), ...back.events()], ack.run_id, { user, thread: ack.thread_id, status: 'cancelled' });
  await assertRunCounters(srv, 1, { cancelled: 1 });
});

test('a user who keeps one connection keeps the run alive past the orphan grace', T, async (t) => {
  const agent = tempFile(t, 'slow.py', [
    'import json, sys, time',
    'sys.stdin.readline()',
    'print(json.dumps({"type": "agent_thinking", "reasoning": "slow"}), flush=True)',
    'time.sleep(1.2)',
    'print(json.dumps({"type": "agent_completed", "status": "success", "final_response": "survived"}), flush=True)',
  ].join('\n'));
  const srv = await useServer(t, execArgs(`python3 ${agent}`, ['--run-orphan-grace-ms', '300']));
  const user = randomId('stay');
  const c = await connectAs(srv, user);
  const keeper = await connectAs(srv, user);
  const ack = await startRun(c, user, { user_request: 'slow' });
  await c.nextMessage(isRunEvent(ack.run_id, 'agent_thinking'));
  await c.close(); // the starting connection goes, another stays
  const done = await waitCompleted(keeper, ack.run_id, 5000);
  assert.equal(done.status, 'success', JSON.stringify(done));
  await keeper.sync();
  checkRun(keeper.events(), ack.run_id, { user, thread: ack.thread_id, status: 'success' });
});

test('drain: SIGTERM during an exec run ends it cancelled before the 1001 close; the agent is gone; exit 0', T, async (t) => {
  const dir = tempDir(t);
  const agent = shellAgent(t, dir, [
    'echo $$ > "$DIR/pid"',
    'echo \'{"type":"agent_thinking","reasoning":"busy"}\'',
    'while :; do sleep 0.05; done',
  ].join('\n'));
  const srv = await useServer(t, execArgs(`sh ${agent}`, ['--drain-timeout-ms', '5000', '--log-level', 'debug']));
  const user = randomId('drain');
  const c = await connectAs(srv, user);
  const ack = await startRun(c, user, { user_request: 'busy' });
  await c.nextMessage(isRunEvent(ack.run_id, 'agent_thinking'));
  const pid = readPid(path.join(dir, 'pid'));
  reapLater(t, [pid]);
  srv.signal('SIGTERM');
  const close = await c.waitClose(15000);
  assert.equal(close.code, 1001, JSON.stringify(close));
  const exit = await withTimeout(srv.exited, 15000, 'agentwire to exit after SIGTERM');
  assert.deepEqual(exit, { code: 0, signal: null });
  await waitGone(pid, 'the agent of the drained server');
  await pollUntil(() => srv.logs.some((l) => l.msg === 'run ended by server' && l.run === ack.run_id),
    { timeoutMs: 5000, what: 'the run-ended log line' });
  const ended = srv.logs.find((l) => l.msg === 'run ended by server' && l.run === ack.run_id);
  assert.equal(ended && ended.status, 'cancelled', 'the server ended the run cancelled');
  // The history went with the process: the client must have received it.
  const done = c.events().find(isRunEvent(ack.run_id, 'agent_completed'));
  assert.ok(done, `agent_completed cancelled reached the client before the 1001 close; it got ` +
    `${JSON.stringify(c.events().map((e) => e.type))}; server log: ${JSON.stringify(srv.logs.filter((l) => ['draining', 'close sent', 'run ended by server'].includes(l.msg)))}`);
  assert.equal(done.status, 'cancelled');
  checkRun(c.events(), ack.run_id, { user, thread: ack.thread_id, status: 'cancelled' });
});

/* ------------------------------------------------------------------ */
/* runs published through the HTTP API                                  */
/* ------------------------------------------------------------------ */

async function publishExpect(srv, event, status) {
  const res = await api(srv, 'POST', '/api/v1/publish', event);
  assert.equal(res.status, status, `${JSON.stringify(event)} answered ${res.status} ${res.text}`);
  if (status === 409) assert.equal(res.json && res.json.error, 'run_order', res.text);
  return res;
}

test('API runs: the run order is enforced with 409 run_order; a valid run passes and reaches the client', T, async (t) => {
  const srv = await useServer(t);
  const user = randomId('api');
  const c = await connectAs(srv, user);
  const ids = (run, thread = 'th_api') => ({ user_id: user, run_id: run, thread_id: thread });
  const started = (run, thread) => ({ ...ids(run, thread), type: 'agent_started', agent_name: 'remote' });
  const completed = (run, thread) => ({ ...ids(run, thread), type: 'agent_completed', status: 'success', final_response: 'ok' });

  // the valid run: 200 for each event, in order
  const valid = [
    started('run_ok'),
    { ...ids('run_ok'), type: 'agent_thinking', reasoning: 'hm' },
    { ...ids('run_ok'), type: 'tool_executing', tool_name: 'a', parameters: {} },
    { ...ids('run_ok'), type: 'tool_executing', tool_name: 'b', parameters: { x: 1 } },
    { ...ids('run_ok'), type: 'progress_update', pct: 50 },
    { ...ids('run_ok'), type: 'tool_completed', tool_name: 'a', results: 1, duration: 2 },
    { ...ids('run_ok'), type: 'tool_completed', tool_name: 'b', results: 2, duration: 3 },
    { ...ids('run_ok'), type: 'partial_result', content: 'o' },
    { ...ids('run_ok'), type: 'my_own_event', v: true },
    completed('run_ok'),
  ];
  const seqs = [];
  for (const [i, e] of valid.entries()) {
    seqs.push((await publishExpect(srv, e, 200)).json.seq);
    if (i === 0) noteStarted(user, 'run_ok');
  }
  const got = await c.nextMessages(valid.length, (m) => m.run_id === 'run_ok');
  assert.deepEqual(got.map((e) => e.type), valid.map((e) => e.type));
  assert.deepEqual(got.map((e) => e.seq), seqs);

  // an open run to break the rules against
  await publishExpect(srv, started('run_open'), 200);
  noteStarted(user, 'run_open');
  await publishExpect(srv, { ...ids('run_open'), type: 'tool_executing', tool_name: 'x', parameters: {} }, 200);
  await publishExpect(srv, started('run_notool'), 200);
  noteStarted(user, 'run_notool');

  const refused = {
    'an event for a run never started': { ...ids('run_unknown'), type: 'agent_thinking', reasoning: 'x' },
    'partial_result for a run never started': { ...ids('run_unknown'), type: 'partial_result', content: 'x' },
    'agent_completed for a run never started': completed('run_unknown'),
    'agent_started reusing an open run_id': started('run_open'),
    'agent_started reusing a finished run_id': started('run_ok'),
    'tool_completed without tool_executing': { ...ids('run_notool'), type: 'tool_completed', tool_name: 'x', results: 1, duration: 1 },
    'tool_completed naming another tool': { ...ids('run_open'), type: 'tool_completed', tool_name: 'y', results: 1, duration: 1 },
    'an event after agent_completed': { ...ids('run_ok'), type: 'agent_thinking', reasoning: 'late' },
    'a second agent_completed': completed('run_ok'),
    'a tool_completed after agent_completed': { ...ids('run_ok'), type: 'tool_completed', tool_name: 'a', results: 1, duration: 1 },
    'a wrong thread_id': { ...ids('run_open', 'th_other'), type: 'agent_thinking', reasoning: 'x' },
    'agent_completed with a wrong thread_id': completed('run_open', 'th_other'),
  };
  for (const [what, e] of Object.entries(refused)) {
    await t.test(what, () => publishExpect(srv, e, 409));
  }
  // the same run id for another user is another run
  const otherUser = randomId('api_other');
  await publishExpect(srv, { ...started('run_ok'), user_id: otherUser }, 200);
  noteStarted(otherUser, 'run_ok');
  await publishExpect(srv, { ...completed('run_ok'), user_id: otherUser }, 200);
  checkRun((await history(srv, otherUser)).events, 'run_ok', { user: otherUser, status: 'success' });

  // a tool_completed answers the open tool_executing; then the run can complete
  await publishExpect(srv, { ...ids('run_open'), type: 'tool_completed', tool_name: 'x', results: {}, duration: 1 }, 200);
  await publishExpect(srv, { ...ids('run_open'), type: 'tool_completed', tool_name: 'x', results: {}, duration: 1 }, 409);
  await publishExpect(srv, completed('run_open'), 200);
  await publishExpect(srv, completed('run_notool'), 200);
  await waitCompleted(c, 'run_notool');
  await c.sync();
  // nothing refused reached the client
  const evs = c.events();
  assert.deepEqual(evs.map((e) => `${e.run_id}:${e.type}`), [
    ...valid.map((e) => `run_ok:${e.type}`),
    'run_open:agent_started', 'run_open:tool_executing', 'run_notool:agent_started',
    'run_open:tool_completed', 'run_open:agent_completed', 'run_notool:agent_completed',
  ]);
  checkRun(evs, 'run_ok', { user, thread: 'th_api', status: 'success' });
  checkRun(evs, 'run_open', { user, thread: 'th_api', status: 'success' });
  checkRun(evs, 'run_notool', { user, thread: 'th_api', status: 'success' });
});

test('API runs in batches published by shards (--threads 2): each user\'s run order holds, refusals are 409 run_order, and an agent\'s run is gated under the lock alone', T, async (t) => {
  const srv = await useServer(t, ['--threads', '2', ...execArgs('sleep 30')]);
  const users = Array.from({ length: 8 }, (_, i) => randomId(`shardrun${i}`));
  const conns = await Promise.all(users.map((u) => connectAs(srv, u)));
  const ids = (u) => ({ user_id: u, run_id: 'r1', thread_id: 'th_s' });
  const steps = [
    [(u) => ({ ...ids(u), type: 'agent_started', agent_name: 'remote' }), 200],
    [(u) => ({ ...ids(u), type: 'tool_completed', tool_name: 'x', results: 1, duration: 1 }), 409],
    [(u) => ({ ...ids(u), type: 'tool_executing', tool_name: 'x', parameters: {} }), 200],
    [(u) => ({ ...ids(u), type: 'tool_completed', tool_name: 'x', results: 1, duration: 1 }), 200],
    [(u) => ({ ...ids(u), type: 'agent_thinking', reasoning: 'hm' }), 200],
    [(u) => ({ ...ids(u), type: 'agent_completed', status: 'success', final_response: 'ok' }), 200],
    [(u) => ({ ...ids(u), type: 'agent_thinking', reasoning: 'late' }), 409],
    [(u) => ({ ...ids(u), type: 'agent_started', agent_name: 'remote' }), 409],
  ];
  // one batch, the users' events interleaved: 64 events, published by shards
  const batch = [];
  const want = [];
  for (const [make, status] of steps) {
    for (const u of users) {
      batch.push(make(u));
      want.push(status);
    }
  }
  const res = await api(srv, 'POST', '/api/v1/publish/batch', batch);
  assert.equal(res.status, 200, res.text.slice(0, 300));
  assert.equal(res.json.length, batch.length);
  res.json.forEach((r, i) => {
    const what = `${batch[i].user_id} ${batch[i].type}: ${JSON.stringify(r)}`;
    if (want[i] === 200) {
      assert.equal(typeof r.seq, 'number', what);
    } else {
      assert.equal(r.status, 409, what);
      assert.equal(r.error, 'run_order', what);
    }
  });
  const accepted = steps.filter(([, status]) => status === 200).map(([make]) => make('x').type);
  for (const [i, u] of users.entries()) {
    noteStarted(u, 'r1');
    const got = await conns[i].nextMessages(accepted.length, isRunEvent('r1'));
    assert.deepEqual(got.map((e) => e.type), accepted, `${u}'s events`);
    assert.deepEqual(got.map((e) => e.seq), [1, 2, 3, 4, 5]);
    checkRun(got, 'r1', { user: u, thread: 'th_s', status: 'success' });
  }

  // Agents' runs, each ended from the API in a batch that goes by shards
  // (each request on its own connection, so on either loop): the
  // agent_completed stops the agent, which only the lock alone may do.
  for (let k = 0; k < 4; k++) {
    const au = randomId(`shardagent${k}`);
    const ac = await connectAs(srv, au);
    const ack = await startRun(ac, au, { user_request: 'wait' });
    await ac.nextMessage(isRunEvent(ack.run_id, 'agent_started'));
    const mixed = users.flatMap((u) => [1, 2].map((n) => ({ user_id: u, type: 'note', n: 2 * k + n })));
    mixed.splice(5, 0, { user_id: au, run_id: ack.run_id, thread_id: ack.thread_id, type: 'agent_completed', status: 'success', final_response: 'from the API' });
    const res2 = await api(srv, 'POST', '/api/v1/publish/batch', mixed);
    assert.equal(res2.status, 200, res2.text.slice(0, 300));
    for (const r of res2.json) assert.equal(typeof r.seq, 'number', JSON.stringify(r));
    const done = await waitCompleted(ac, ack.run_id);
    assert.equal(done.final_response, 'from the API');
    await ac.sync();
    checkRun(ac.events(), ack.run_id, { user: au, thread: ack.thread_id, status: 'success' });
  }
  for (const [i, c] of conns.entries()) {
    const notes = await c.nextMessages(8, (m) => m.type === 'note');
    assert.deepEqual(notes.map((e) => e.n), [1, 2, 3, 4, 5, 6, 7, 8], `${users[i]}'s notes`);
  }
});

test('API runs: an idle run times out; stop_agent cancels one; both are closed afterwards', T, async (t) => {
  const srv = await useServer(t, ['--run-idle-timeout-ms', '500']);
  const user = randomId('apiidle');
  const c = await connectAs(srv, user);
  const ids = (run) => ({ user_id: user, run_id: run, thread_id: 'th_idle' });

  // idle: agent_started, one event, then silence
  await publishExpect(srv, { ...ids('run_idle'), type: 'agent_started', agent_name: 'remote' }, 200);
  noteStarted(user, 'run_idle');
  const last = await publishExpect(srv, { ...ids('run_idle'), type: 'agent_thinking', reasoning: 'then silence' }, 200);
  const done = await waitCompleted(c, 'run_idle', 5000);
  assert.equal(done.status, 'timeout');
  assert.equal(done.final_response, '');
  const thinking = c.events().find((e) => e.seq === last.json.seq);
  const idle = done.timestamp - thinking.timestamp;
  assert.ok(idle >= 450 && idle < 4000, `timed out ${idle} ms after its last event (--run-idle-timeout-ms 500)`);
  await publishExpect(srv, { ...ids('run_idle'), type: 'agent_thinking', reasoning: 'too late' }, 409);
  await publishExpect(srv, { ...ids('run_idle'), type: 'agent_completed', status: 'success', final_response: 'late' }, 409);

  // stop_agent on an API run
  await publishExpect(srv, { ...ids('run_api_stop'), type: 'agent_started', agent_name: 'remote' }, 200);
  noteStarted(user, 'run_api_stop');
  await c.nextMessage(isRunEvent('run_api_stop', 'agent_started'));
  const reply = await stopRun(c, 'run_api_stop');
  assert.equal(reply.type, 'ack', JSON.stringify(reply));
  assert.equal(reply.run_id, 'run_api_stop');
  const cancelled = await waitCompleted(c, 'run_api_stop');
  assert.equal(cancelled.status, 'cancelled');
  await publishExpect(srv, { ...ids('run_api_stop'), type: 'partial_result', content: 'late' }, 409);
  await c.sync();
  checkRun(c.events(), 'run_idle', { user, thread: 'th_idle', status: 'timeout' });
  checkRun(c.events(), 'run_api_stop', { user, thread: 'th_idle', status: 'cancelled' });
});

/* ------------------------------------------------------------------ */
/* summary                                                              */
/* ------------------------------------------------------------------ */

test('summary: every run started in this file ended with exactly one agent_completed', (t) => {
  const line = `runs figures ${JSON.stringify(figures)}`;
  t.diagnostic(line);
  console.log(line);
  const unchecked = [...startedKeys].filter((k) => !endedKeys.has(k));
  assert.deepEqual(unchecked, [], 'runs started but not seen to end with exactly one agent_completed');
  assert.ok(figures.started > 0);
  assert.equal(figures.ended_with_one_completed, figures.started);
});
