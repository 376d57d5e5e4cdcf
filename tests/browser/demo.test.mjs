// The demo page (web/) in a real browser: headless Debian Chromium driven by
// playwright-core, against the real binary in development mode.
//
//   node --test --test-concurrency=1 tests/browser/
//
// AGENTWIRE_BIN picks the binary (default build/agentwire), CHROMIUM_PATH the
// browser (default /usr/bin/chromium). A screenshot of a finished run is kept at
// tests/artifacts/demo-run.png.

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  WAIT_MS, ask, closeBrowser, ensureArtifacts, launchBrowser, newContext, openPage, runSel,
  signIn, startServer, steps, tid, waitConn, waitRunStatus, waitSteps, withTimeout,
} from './lib.mjs';

const T = { timeout: 90000 };
const FIVE = ['started', 'thinking', 'tool_executing', 'tool_completed', 'completed'];

let server;
let browser;
const contexts = new Set();

before(async () => {
  server = await startServer({ dev: true });
  browser = await launchBrowser();
});

after(async () => {
  for (const ctx of contexts) await withTimeout(ctx.close(), 10000, 'context to close').catch(() => {});
  await closeBrowser(browser);
  if (server) {
    const exit = await server.stop();
    // A clean exit after SIGTERM (with the sanitizers: no leak or error report).
    assert.deepEqual(exit, { code: 0, signal: null }, `agentwire exit ${JSON.stringify(exit)}\n${server.describe()}`);
  }
});

async function context() {
  const ctx = await newContext(browser);
  contexts.add(ctx);
  return ctx;
}

/** The steps of a run without the streamed-answer step (which sits before "completed"). */
function withoutPartial(list) {
  return list.filter((s) => s !== 'partial');
}

function assertStepOrder(list, what) {
  assert.deepEqual(withoutPartial(list), FIVE, `${what}: ${JSON.stringify(list)}`);
  const p = list.indexOf('partial');
  if (p >= 0) {
    assert.equal(list.lastIndexOf('partial'), p, `${what}: one answer step: ${JSON.stringify(list)}`);
    assert.ok(p > list.indexOf('tool_completed') && p < list.indexOf('completed'), `${what}: ${JSON.stringify(list)}`);
  }
}

function assertNoPageErrors(...pages) {
  for (const p of pages) assert.deepEqual(p.errors, [], `uncaught errors in the page: ${p.errors.join('\n')}`);
}

// Shared by the tests below: alice's first tab (tests run in order in this file).
let alice;
let aliceCtx;

test('development mode: the page refuses a bad name, then signs in with a good one', T, async () => {
  aliceCtx = await context();
  alice = await openPage(aliceCtx, server);
  await alice.locator(tid('signin-name')).waitFor();
  assert.equal(await alice.locator(tid('signin-token')).isVisible(), false, 'dev mode shows the name form');
  await alice.locator(tid('signin-name')).fill('no spaces allowed');
  await alice.locator(tid('signin-submit')).click();
  await alice.locator('#signin-error:not([hidden])').waitFor();
  await signIn(alice, 'alice');
  assert.equal((await alice.locator('#user-name').textContent()).trim(), 'alice');
  assert.equal(await alice.locator(tid('run')).count(), 0);
  assertNoPageErrors(alice);
});

test('ask "2+3*4": the run unfolds step by step and the answer says 14', T, async () => {
  const runId = await ask(alice, '2+3*4');
  const run = alice.locator(runSel(runId));
  await waitRunStatus(alice, runId, 'success');
  const got = await steps(alice, runId);
  assertStepOrder(got, 'steps of 2+3*4');

  // started: the agent's name; thinking: its reasoning; the tool call with parameters,
  // results and duration.
  const started = run.locator('[data-step="started"]');
  assert.match(await started.textContent(), /\S+ started/);
  assert.ok((await run.locator('[data-step="thinking"] .reasoning').textContent()).trim().length > 0, 'reasoning shown');
  assert.match(await run.locator('[data-step="tool_executing"]').textContent(), /calculator/);
  assert.match(await run.locator('[data-step="tool_executing"] .json-preview').textContent(), /2\s*\+\s*3\s*\*\s*4/);
  assert.match(await run.locator('[data-step="tool_completed"]').textContent(), /calculator[\s\S]*\d+(\.\d+)? m?s/);
  assert.match(await run.locator('[data-step="tool_completed"] .json-preview').textContent(), /14/);
  // JSON is collapsible: closed, then open.
  const details = run.locator('[data-step="tool_completed"] details');
  assert.equal(await details.evaluate((d) => d.open), false);
  await details.locator('summary').click();
  assert.equal(await details.evaluate((d) => d.open), true);
  await run.locator('[data-step="tool_completed"] pre.json').waitFor();

  assert.match(await run.locator(tid('answer')).textContent(), /14/);
  // The finished run, its result unfolded: tests/artifacts/demo-run.png.
  await alice.screenshot({ path: path.join(ensureArtifacts(), 'demo-run.png') });
  assert.equal(await run.locator(tid('stop')).count(), 0, 'no Stop button once the run is over');
  assert.match(await run.locator(tid('run-status')).textContent(), /Done/);
  assert.match(await run.locator('.msg-user').textContent(), /2\+3\*4/);

  // The thread is in the sidebar and selected, titled by the question.
  const item = alice.locator(`${tid('thread-list')} ${tid('thread-item')}`);
  assert.equal(await item.count(), 1);
  assert.equal(await item.getAttribute('aria-current'), 'true');
  assert.match(await item.textContent(), /2\+3\*4/);

  // A follow-up in the same thread sends its thread_id.
  const threadId = await run.getAttribute('data-thread-id');
  const second = await ask(alice, 'count the words in this short sentence please');
  await waitRunStatus(alice, second, 'success');
  assert.equal(await alice.locator(runSel(second)).getAttribute('data-thread-id'), threadId);
  assert.equal(await item.count(), 1, 'still one thread');
  assertStepOrder(await steps(alice, second), 'steps of the word count');
  assert.match(await alice.locator(runSel(second)).locator('[data-step="tool_executing"]').textContent(), /word_stats/);

  assertNoPageErrors(alice);
});

test('"New thread" starts a second thread; selecting a thread shows its runs', T, async () => {
  await alice.locator(tid('new-thread')).click();
  assert.equal(await alice.locator(`${tid('run')}:visible`).count(), 0, 'a new thread is empty');
  const runId = await ask(alice, '10/4');
  await waitRunStatus(alice, runId, 'success');
  const items = alice.locator(tid('thread-item'));
  assert.equal(await items.count(), 2);
  const newThread = await alice.locator(runSel(runId)).getAttribute('data-thread-id');
  assert.notEqual(newThread, null);
  // The other thread: its two runs come back on screen, this one goes.
  const other = alice.locator(`${tid('thread-item')}:not([data-thread-id="${newThread}"])`);
  await other.click();
  await alice.locator(runSel(runId)).waitFor({ state: 'hidden' });
  assert.equal(await alice.locator(`${tid('run')}:visible`).count(), 2);
  assertNoPageErrors(alice);
});

test('a second tab of the same user shows the run live', T, async () => {
  const tab2 = await openPage(aliceCtx, server);
  await signIn(tab2, 'alice');
  // Tab 2 was opened after alice's earlier runs: it starts at the present.
  assert.equal(await tab2.locator(tid('run')).count(), 0);

  const seen = tab2.evaluate(() => new Promise((resolve) => {
    // Records the statuses tab 2 shows, to prove it saw the run while it ran.
    const statuses = [];
    const obs = new MutationObserver(() => {
      for (const el of document.querySelectorAll('[data-testid="run"]')) {
        const s = el.dataset.status;
        if (statuses[statuses.length - 1] !== s) statuses.push(s);
        if (s !== 'running') { obs.disconnect(); resolve(statuses); }
      }
    });
    obs.observe(document.body, { subtree: true, childList: true, attributes: true, attributeFilter: ['data-status'] });
    setTimeout(() => { obs.disconnect(); resolve(statuses); }, 15000);
  }));
  const runId = await ask(alice, '7*6');
  await waitRunStatus(tab2, runId, 'success');
  await waitRunStatus(alice, runId, 'success');
  assert.deepEqual(await withTimeout(seen, 16000, 'tab 2 observer'), ['running', 'success'], 'tab 2 saw the run while it ran');
  assert.deepEqual(await steps(tab2, runId), await steps(alice, runId), 'both tabs drew the same steps');
  assertStepOrder(await steps(tab2, runId), 'steps in tab 2');
  const run2 = tab2.locator(runSel(runId));
  assert.ok(await run2.isVisible(), 'tab 2 follows the new thread');
  assert.match(await run2.locator(tid('answer')).textContent(), /42/);
  assert.match(await run2.locator('.msg-user').textContent(), /another tab/);
  assert.equal(await run2.getAttribute('data-thread-id'), await alice.locator(runSel(runId)).getAttribute('data-thread-id'));
  assertNoPageErrors(alice, tab2);
});

test("another user, in another browser context, sees none of alice's runs (nor alice theirs)", T, async () => {
  const mctx = await context();
  const mallory = await openPage(mctx, server);
  await signIn(mallory, 'mallory');
  const runId = await ask(alice, '100-58');
  await waitRunStatus(alice, runId, 'success');
  const own = await ask(mallory, '1+1');
  await waitRunStatus(mallory, own, 'success');
  // A fence: a run published to alice after mallory's completed is drawn by alice's tab.
  await server.publish({ user_id: 'alice', type: 'agent_started', thread_id: 'fence', run_id: 'fence-1', agent_name: 'fence' });
  await server.publish({ user_id: 'alice', type: 'agent_completed', thread_id: 'fence', run_id: 'fence-1', status: 'success', final_response: 'ok' });
  await waitRunStatus(alice, 'fence-1', 'success');

  assert.deepEqual(await mallory.locator(tid('run')).evaluateAll((els) => els.map((e) => e.dataset.runId)), [own],
    'mallory sees only her own run');
  assert.equal(await mallory.locator(tid('thread-item')).count(), 1);
  assert.equal(await alice.locator(runSel(own)).count(), 0, 'alice does not see mallory\'s run');
  assert.equal((await mallory.locator('#user-name').textContent()).trim(), 'mallory');
  assertNoPageErrors(alice, mallory);
  await mctx.close();
  contexts.delete(mctx);
});

test('a run published through the HTTP API survives a kick: the page resumes without losing a step', T, async () => {
  const ev = (type, fields) => ({ user_id: 'alice', type, thread_id: 't', run_id: 'r', ...fields });
  await server.publish(ev('agent_started', { agent_name: 'slow-agent' }));
  // Alice's tab is on another thread: the new one shows up in the sidebar; open it.
  const item = alice.locator(`${tid('thread-item')}[data-thread-id="t"]`);
  await item.waitFor();
  await item.click();
  await server.publish(ev('agent_thinking', { reasoning: 'Looking at the numbers slowly.' }));
  await waitSteps(alice, 'r', ['started', 'thinking']);
  const run = alice.locator(runSel('r'));
  assert.equal(await run.getAttribute('data-status'), 'running');
  assert.ok(await run.locator(tid('stop')).isVisible(), 'Stop shows while the run is open');
  assert.match(await run.locator('.msg-user').textContent(), /another tab/);

  // Hold alice's token requests (the client asks for a token before every
  // reconnect), so the events below are published while she is disconnected.
  let release;
  const gate = new Promise((r) => { release = r; });
  let held = 0;
  await aliceCtx.route('**/api/v1/dev/token', async (route) => {
    held++;
    await gate;
    await route.continue().catch(() => {});
  });
  try {
    const kick = await server.api('POST', '/api/v1/users/alice/disconnect');
    assert.equal(kick.status, 200, kick.text);
    assert.ok(kick.json.disconnected >= 1, kick.text);
    await waitConn(alice, 'reconnecting');
    const conns = await server.api('GET', '/api/v1/users/alice/connections');
    assert.equal(conns.status, 200, conns.text);
    assert.deepEqual(conns.json.connections, [], 'alice has no connection while her token is held');

    const missed = [
      ev('tool_executing', { tool_name: 'slow_sum', parameters: { numbers: [1, 2, 3, 4] } }),
      ev('tool_completed', { tool_name: 'slow_sum', results: { sum: 10 }, duration: 1500 }),
      ev('partial_result', { content: 'The sum ' }),
      ev('partial_result', { content: 'is ' }),
      ev('partial_result', { content: '10.' }),
    ];
    for (const e of missed) await server.publish(e);
    // Every tab of alice asks for a fresh token to reconnect (after its backoff, < 0.5 s).
    const tabs = aliceCtx.pages().length;
    for (const deadline = Date.now() + WAIT_MS; held < tabs && Date.now() < deadline;) await alice.waitForTimeout(25);
    assert.equal(held, tabs, 'each tab asked for a token to reconnect');
    await waitConn(alice, 'reconnecting');
    assert.deepEqual(await steps(alice, 'r'), ['started', 'thinking'], 'nothing arrives while disconnected');

    release();
    await waitConn(alice, 'open');
    const banner = alice.locator(tid('banner'));
    await banner.waitFor();
    assert.match(await banner.textContent(), new RegExp(`resumed \\(${missed.length} missed\\)`));
    await waitSteps(alice, 'r', ['started', 'thinking', 'tool_executing', 'tool_completed', 'partial']);
    assert.equal(await run.locator(tid('answer')).textContent(), 'The sum is 10.');
  } finally {
    release();
    await aliceCtx.unroute('**/api/v1/dev/token');
  }

  await server.publish(ev('agent_completed', { status: 'success', final_response: 'The sum is 10.' }));
  await waitRunStatus(alice, 'r', 'success');
  assertStepOrder(await steps(alice, 'r'), 'steps of the published run');
  assert.match(await run.locator('[data-step="tool_completed"]').textContent(), /slow_sum[\s\S]*1\.5 s/);
  assert.equal(await run.locator(tid('answer')).textContent(), 'The sum is 10.');
  // Alice's second tab was kicked too and resumed as well.
  for (const p of aliceCtx.pages()) {
    if (p === alice) continue;
    await waitRunStatus(p, 'r', 'success');
    assertStepOrder(await steps(p, 'r'), 'steps of the published run in tab 2');
  }
  await alice.screenshot({ path: path.join(ensureArtifacts(), 'demo-resume.png') });
  assertNoPageErrors(...aliceCtx.pages());
});

test('when the server can no longer replay what was missed, the page says reloaded', T, async (t) => {
  const srv = await startServer({ dev: true, args: ['--history-size', '2'] });
  t.after(() => srv.stop());
  const ctx = await context();
  const page = await openPage(ctx, srv);
  await signIn(page, 'zoe');
  const ev = (type, fields) => ({ user_id: 'zoe', type, thread_id: 'tz', run_id: 'z1', ...fields });
  await srv.publish(ev('agent_started', { agent_name: 'slow-agent' }));
  await srv.publish(ev('agent_thinking', { reasoning: 'Hmm.' }));
  await waitSteps(page, 'z1', ['started', 'thinking']);

  let release;
  const gate = new Promise((r) => { release = r; });
  let held = 0;
  await ctx.route('**/api/v1/dev/token', async (route) => {
    held++;
    await gate;
    await route.continue().catch(() => {});
  });
  try {
    assert.equal((await srv.api('POST', '/api/v1/users/zoe/disconnect')).status, 200);
    await waitConn(page, 'reconnecting');
    // Four events while zoe is away: more than the two the server keeps.
    await srv.publish(ev('tool_executing', { tool_name: 'a', parameters: {} }));
    await srv.publish(ev('tool_completed', { tool_name: 'a', results: 1, duration: 1 }));
    await srv.publish(ev('partial_result', { content: 'x' }));
    await srv.publish(ev('partial_result', { content: 'y' }));
    for (const deadline = Date.now() + WAIT_MS; held < 1 && Date.now() < deadline;) await page.waitForTimeout(25);
    assert.equal(held, 1, 'the page asked for a token to reconnect');
    release();
    await waitConn(page, 'open');
    await page.locator(`${tid('banner')}[data-kind="reloaded"]`).waitFor();
    assert.match(await page.locator(tid('banner')).textContent(), /reloaded/);
    await page.locator(`${runSel('z1')} .run-gap`).waitFor();
  } finally {
    release();
    await ctx.unroute('**/api/v1/dev/token');
  }
  // Live events go on after the reset.
  await srv.publish(ev('agent_completed', { status: 'success', final_response: 'xy' }));
  await waitRunStatus(page, 'z1', 'success');
  assert.deepEqual(await steps(page, 'z1'), ['started', 'thinking', 'completed']);
  assert.equal(await page.locator(`${runSel('z1')} ${tid('answer')}`).textContent(), 'xy');
  assertNoPageErrors(page);
  await ctx.close();
  contexts.delete(ctx);
});

test('a failed run shows its error and status', T, async () => {
  const ev = (type, fields) => ({ user_id: 'alice', type, thread_id: 't', run_id: 'r-err', ...fields });
  await server.publish(ev('agent_started', { agent_name: 'slow-agent' }));
  await server.publish(ev('tool_executing', { tool_name: 'fetch', parameters: { url: 'http://example.invalid/' } }));
  await server.publish(ev('agent_completed', { status: 'error', final_response: '', error: 'fetch: host not found' }));
  await waitRunStatus(alice, 'r-err', 'error');
  const run = alice.locator(runSel('r-err'));
  assert.match(await run.locator('.run-error').textContent(), /host not found/);
  assert.match(await run.locator(tid('run-status')).textContent(), /Error/);
  assert.deepEqual(await steps(alice, 'r-err'), ['started', 'tool_executing', 'completed']);
  assert.equal(await run.locator(tid('answer')).isVisible(), false, 'no answer for a failed run without one');
  assertNoPageErrors(alice);
});

test('Stop cancels a running run', T, async (t) => {
  // A slow agent: it thinks, then sleeps; only Stop ends the run early.
  const agent = 'exec:printf \'{"type":"agent_thinking","reasoning":"Taking my time."}\\n\'; exec sleep 30';
  const srv = await startServer({ dev: true, args: ['--agent', agent] });
  t.after(() => srv.stop());
  const ctx = await context();
  const page = await openPage(ctx, srv);
  await signIn(page, 'stopper');
  const runId = await ask(page, 'take your time');
  await waitSteps(page, runId, ['started', 'thinking']);
  const run = page.locator(runSel(runId));
  assert.equal(await run.getAttribute('data-status'), 'running');
  await run.locator(tid('stop')).click();
  await waitRunStatus(page, runId, 'cancelled', 15000);
  assert.equal(await run.locator(tid('stop')).count(), 0);
  assert.deepEqual(await steps(page, runId), ['started', 'thinking', 'completed']);
  assert.match(await run.locator(tid('run-status')).textContent(), /Stopped/);
  assertNoPageErrors(page);
  await ctx.close();
  contexts.delete(ctx);
});

test('without development mode the page asks for a token, and works with one', T, async (t) => {
  const srv = await startServer({ dev: false });
  t.after(() => srv.stop());
  const ctx = await context();
  const page = await openPage(ctx, srv);
  const res = await fetch(`${srv.base}/api/v1/dev/token`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"name":"alice"}',
  });
  assert.equal(res.status, 404, 'the dev token endpoint is not found outside development mode');
  await page.locator(tid('signin-token')).waitFor();
  assert.equal(await page.locator(tid('signin-name')).isVisible(), false);
  await page.locator(tid('signin-token')).fill(srv.token('trent'));
  await page.locator(tid('signin-token-submit')).click();
  await waitConn(page, 'open');
  assert.equal((await page.locator('#user-name').textContent()).trim(), 'trent');
  await srv.publish({ user_id: 'trent', type: 'agent_started', thread_id: 'th', run_id: 'x1', agent_name: 'remote' });
  await srv.publish({ user_id: 'trent', type: 'agent_completed', thread_id: 'th', run_id: 'x1', status: 'success', final_response: 'Hello, trent.' });
  await waitRunStatus(page, 'x1', 'success');
  assert.equal(await page.locator(`${runSel('x1')} ${tid('answer')}`).textContent(), 'Hello, trent.');
  assertNoPageErrors(page);
  await ctx.close();
  contexts.delete(ctx);
});
