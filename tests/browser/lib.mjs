// lib.mjs -- helpers of the browser tests: the real agentwire binary (in
// development mode unless told otherwise), a headless Debian Chromium driven by
// playwright-core, and the HTTP API. Every wait is bounded; stop() and
// closeBrowser() always end what they started.

import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { signHS256, withTimeout } from '../e2e/lib/harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(here, '..', '..');
export const BIN = process.env.AGENTWIRE_BIN || path.join(REPO_ROOT, 'build', 'agentwire');
export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
export const ARTIFACTS = path.join(REPO_ROOT, 'tests', 'artifacts');
/** Wait for one expected thing on the page (a step, a status). */
export const WAIT_MS = 10000;

export { withTimeout };

/** The test's environment without AGENTWIRE_* settings (they could leave development mode). */
function serverEnv() {
  const out = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('AGENTWIRE_')) out[k] = v;
  return out;
}

/**
 * Starts agentwire on 127.0.0.1 with a random port.
 * dev: true  -> no --jwt-secret/--api-key: development mode; the API key is read
 *               from the "API key:" line the server prints on stdout.
 * dev: false -> a random secret and API key are configured; token(sub) signs JWTs.
 */
export async function startServer({ dev = true, args = [] } = {}) {
  try {
    fs.accessSync(BIN, fs.constants.X_OK);
  } catch {
    throw new Error(`agentwire binary not found at ${BIN} (build it, or set AGENTWIRE_BIN)`);
  }
  const secret = dev ? null : crypto.randomBytes(24).toString('hex');
  let apiKey = dev ? null : `ak_${crypto.randomBytes(16).toString('hex')}`;
  const argv = ['--listen', '127.0.0.1:0', '--log-format', 'json', ...args];
  if (!dev) argv.push('--jwt-secret', secret, '--api-key', apiKey);
  const proc = spawn(BIN, argv, { env: serverEnv(), stdio: ['ignore', 'pipe', 'pipe'] });

  let stderr = '';
  let stdout = '';
  let exitInfo = null;
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => { exitInfo = { code, signal }; resolve(exitInfo); }));
  const closed = new Promise((resolve) => proc.on('close', resolve));
  let onListening;
  let onKey;
  const listening = new Promise((r) => { onListening = r; });
  const keyRead = new Promise((r) => { onKey = r; });
  if (!dev) onKey(apiKey);

  let partial = '';
  proc.stderr.setEncoding('utf8').on('data', (chunk) => {
    stderr += chunk;
    partial += chunk;
    let nl;
    while ((nl = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, nl);
      partial = partial.slice(nl + 1);
      try {
        const e = JSON.parse(line);
        if (e && e.msg === 'listening' && typeof e.addr === 'string') onListening(e.addr);
      } catch { /* not a JSON log line */ }
    }
  });
  proc.stdout.setEncoding('utf8').on('data', (chunk) => {
    stdout += chunk;
    const m = /API key:\s+(\S+)/.exec(stdout);
    if (m) onKey(m[1]);
  });
  const describe = () => `args: ${JSON.stringify(argv)}\n--- stderr ---\n${stderr.slice(-3000)}\n--- stdout ---\n${stdout.slice(-1500)}`;

  let addr;
  try {
    [addr, apiKey] = await withTimeout(Promise.race([
      Promise.all([listening, keyRead]),
      exited.then((e) => { throw new Error(`agentwire exited before listening (${JSON.stringify(e)})`); }),
      new Promise((_, reject) => proc.once('error', reject)),
    ]), 15000, 'agentwire to listen (and print its API key in development mode)');
  } catch (err) {
    if (!exitInfo) proc.kill('SIGKILL');
    await withTimeout(closed, 5000, 'agentwire to close').catch(() => {});
    err.message += `\n${describe()}`;
    throw err;
  }
  const port = Number(addr.slice(addr.lastIndexOf(':') + 1));
  const base = `http://127.0.0.1:${port}`;

  const server = {
    base,
    port,
    apiKey,
    describe,
    get stderr() { return stderr; },
    token(sub, claims = {}) {
      if (!secret) throw new Error('token() needs a server started with dev: false');
      return signHS256(secret, { sub, ...claims });
    },
    /** An HTTP API call with the API key; resolves {status, json, text}. */
    async api(method, pathName, body) {
      const res = await withTimeout(fetch(base + pathName, {
        method,
        headers: { Authorization: `Bearer ${apiKey}`, ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}) },
        body: body === undefined ? undefined : JSON.stringify(body),
      }), 10000, `${method} ${pathName}`);
      const text = await res.text();
      let json = null;
      try { json = JSON.parse(text); } catch { /* not JSON */ }
      return { status: res.status, json, text };
    },
    /** POST /api/v1/publish; throws unless 200. */
    async publish(event) {
      const res = await server.api('POST', '/api/v1/publish', event);
      if (res.status !== 200) throw new Error(`publish ${JSON.stringify(event)}: ${res.status} ${res.text}`);
      return res.json;
    },
    /** SIGTERM, then SIGKILL after 10 s; resolves when the process is gone. */
    async stop() {
      if (!exitInfo) {
        proc.kill('SIGTERM');
        try {
          await withTimeout(exited, 10000, 'agentwire to exit after SIGTERM');
        } catch {
          proc.kill('SIGKILL');
          await withTimeout(exited, 5000, 'agentwire to exit after SIGKILL').catch(() => {});
        }
      }
      await withTimeout(closed, 5000, 'agentwire pipes to close').catch(() => {});
      return exitInfo;
    },
  };
  return server;
}

/* ------------------------------------------------------------------ browser */

export async function launchBrowser() {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium (scripts/deps.sh test does it)`);
  }
  return withTimeout(chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30000,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  }), 40000, 'chromium to start');
}

/** Closes the browser; kills it if it does not close in time. */
export async function closeBrowser(browser) {
  if (!browser) return;
  try {
    await withTimeout(browser.close(), 10000, 'chromium to close');
  } catch {
    try { browser.process?.()?.kill('SIGKILL'); } catch { /* gone */ }
  }
}

/** A new browser context with bounded default timeouts. */
export async function newContext(browser) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 860 }, deviceScaleFactor: 1 });
  ctx.setDefaultTimeout(WAIT_MS);
  ctx.setDefaultNavigationTimeout(15000);
  return ctx;
}

/**
 * Opens the demo page in ctx. Uncaught page errors are collected in page.errors
 * (the tests assert there are none).
 */
export async function openPage(ctx, server) {
  const page = await ctx.newPage();
  page.errors = [];
  page.on('pageerror', (err) => page.errors.push(String(err && err.stack || err)));
  await page.goto(`${server.base}/`, { waitUntil: 'domcontentloaded' });
  return page;
}

export const tid = (id) => `[data-testid="${id}"]`;
export const runSel = (runId) => `[data-testid="run"][data-run-id="${runId}"]`;

/** Signs in with a name (development mode) and waits for the connection to be open. */
export async function signIn(page, name) {
  await page.locator(tid('signin-name')).fill(name);
  await page.locator(tid('signin-submit')).click();
  await waitConn(page, 'open');
}

export async function waitConn(page, status, timeout = WAIT_MS) {
  await page.locator(`${tid('conn-status')}[data-status="${status}"]`).waitFor({ timeout });
}

/** The data-step values of a run's steps, in document order. */
export function steps(page, runId) {
  return page.locator(`${runSel(runId)} ${tid('run-step')}`).evaluateAll((els) => els.map((e) => e.dataset.step));
}

/** Waits until the run's steps equal `expected` (bounded). */
export async function waitSteps(page, runId, expected, timeout = WAIT_MS) {
  const deadline = Date.now() + timeout;
  let got = [];
  while (Date.now() < deadline) {
    got = await steps(page, runId);
    if (JSON.stringify(got) === JSON.stringify(expected)) return got;
    await page.waitForTimeout(50);
  }
  throw new Error(`run ${runId}: steps ${JSON.stringify(got)}, expected ${JSON.stringify(expected)} within ${timeout} ms`);
}

/** Waits for the run's element (on screen or not) to have data-status `status`. */
export async function waitRunStatus(page, runId, status, timeout = WAIT_MS) {
  await page.locator(`${runSel(runId)}[data-status="${status}"]`).waitFor({ state: 'attached', timeout });
}

/** Types text into the message box, presses Enter, and resolves the run id of the new run. */
export async function ask(page, text) {
  const before = new Set(await page.locator(tid('run')).evaluateAll((els) => els.map((e) => e.dataset.runId)));
  await page.locator(tid('message-input')).fill(text);
  await page.locator(tid('message-input')).press('Enter');
  const deadline = Date.now() + WAIT_MS;
  while (Date.now() < deadline) {
    const ids = await page.locator(tid('run')).evaluateAll((els) =>
      els.filter((e) => e.querySelector('.msg-user:not(.msg-remote)')).map((e) => e.dataset.runId));
    const fresh = ids.filter((id) => !before.has(id));
    if (fresh.length === 1) return fresh[0];
    await page.waitForTimeout(25);
  }
  const failed = await page.locator('.run.pending.failed').allTextContents();
  throw new Error(`no run appeared for ${JSON.stringify(text)} within ${WAIT_MS} ms${failed.length ? `: ${failed.join(' | ')}` : ''}`);
}

export function ensureArtifacts() {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  return ARTIFACTS;
}
