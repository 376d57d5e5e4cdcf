// durable-disk.test.mjs -- --data-dir against its disk: a full disk answers
// 503 to publishes, marks /readyz not ready, keeps its connections and
// acknowledges nothing it did not store (the events it refused are never
// delivered, and their seqs are given again once the disk has room); a
// read-only directory is refused at start; the history TTL and
// --data-max-bytes apply on disk (oldest first), as /metrics and a restart
// show.
//
// The disk tests mount small tmpfs file systems, which needs root (the test
// command runs as root); without the right to mount they are skipped and
// say so.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'node:test';

import { api, connectAs, metricValue, pollUntil, runExpectExit, startServer } from './lib/harness.mjs';

function tempDir(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentwire-disk-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

// A tmpfs of sizeK KiB at a new directory, unmounted after the test; null
// when this process may not mount.
function tmpfs(t, sizeK) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentwire-tmpfs-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeK}k,mode=0755`, 'tmpfs', dir], { stdio: 'pipe' });
  } catch (e) {
    fs.rmSync(dir, { recursive: true, force: true });
    return null;
  }
  t.after(() => {
    try { execFileSync('umount', ['-l', dir], { stdio: 'pipe' }); } catch { /* already */ }
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

function remount(dir, opts) {
  execFileSync('mount', ['-o', `remount,${opts}`, dir], { stdio: 'pipe' });
}

async function metrics(srv) {
  const res = await api(srv, 'GET', '/metrics');
  assert.equal(res.status, 200);
  return res.text;
}

async function historyOf(srv, user) {
  const res = await api(srv, 'GET', `/api/v1/history?user_id=${encodeURIComponent(user)}`);
  assert.equal(res.status, 200, res.text);
  return res.json;
}

test('a full disk: 503 to publishes, /readyz not ready, connections kept, nothing refused is delivered, and it recovers', { timeout: 120000 }, async (t) => {
  const dir = tmpfs(t, 1024);
  if (!dir) return t.skip('needs the right to mount a tmpfs (root)');
  const user = 'disk_full';
  let srv = await startServer(['--data-dir', dir]);
  t.after(() => srv.stop());
  const client = await connectAs(srv, user);
  const pad = 'x'.repeat(4000);
  const acked = [];
  let refused = null;
  for (let i = 0; i < 2000 && !refused; i++) {
    const res = await api(srv, 'POST', '/api/v1/publish', { user_id: user, type: 'fill', i, pad });
    if (res.status === 200) acked.push({ i, seq: res.json.seq });
    else refused = res;
  }
  assert.ok(refused, 'a 1 MiB disk fills up');
  assert.ok(acked.length > 10, `some events were stored first (${acked.length})`);
  assert.equal(refused.status, 503, refused.text);
  assert.match(refused.text, /cannot store the event/);
  assert.ok(refused.headers.get('retry-after'));
  const ready = await api(srv, 'GET', '/readyz');
  assert.equal(ready.status, 503, ready.text);
  assert.match(ready.text, /data dir cannot be written/);
  assert.equal(metricValue(await metrics(srv), 'agentwire_store_up'), 0);
  assert.ok(metricValue(await metrics(srv), 'agentwire_store_failures_total') >= 1);
  // a run's start that was not stored does not count as started
  const start = { user_id: user, type: 'agent_started', thread_id: 'th', run_id: 'run_full', agent_name: 'a', pad: 's'.repeat(8000) };
  assert.equal((await api(srv, 'POST', '/api/v1/publish', start)).status, 503);
  // the connection stays, and got exactly the acknowledged events
  const last = acked[acked.length - 1].seq;
  await client.nextMessage((m) => m.type === 'fill' && m.seq === last, 20000);
  // room again: the next event takes the refused one's seq, and is the next delivered
  remount(dir, 'size=65536k');
  const again = await api(srv, 'POST', '/api/v1/publish', start);
  assert.equal(again.status, 200, `the run starts on the retry: ${again.text}`);
  assert.equal(again.json.seq, last + 1, 'a refused event leaves no gap');
  const res = await api(srv, 'POST', '/api/v1/publish', { user_id: user, type: 'after', pad: 'y' });
  assert.equal(res.status, 200, res.text);
  assert.equal(res.json.seq, last + 2);
  await client.nextMessage((m) => m.type === 'after');
  const got = client.events().filter((m) => ['fill', 'agent_started', 'after'].includes(m.type));
  assert.deepEqual(got.map((m) => m.seq), [...acked.map((a) => a.seq), last + 1, last + 2]);
  assert.deepEqual(got.filter((m) => m.type === 'fill').map((m) => m.i), acked.map((a) => a.i));
  assert.equal((await api(srv, 'GET', '/readyz')).status, 200);
  client.close();
  // and on disk: every acknowledged event, once, in order
  srv.signal('SIGKILL');
  await srv.exited;
  await srv.stop();
  srv = await startServer(['--data-dir', dir]);
  const h = await historyOf(srv, user);
  // (and the run left open at the kill ended by the restart)
  assert.deepEqual(h.events.map((e) => e.seq), [...got.map((m) => m.seq), last + 3]);
  assert.equal(h.events.at(-1).type, 'agent_completed');
  assert.equal(h.events.at(-1).reason, 'restart');
  assert.deepEqual(h.events.filter((e) => e.type === 'fill').map((e) => e.i), acked.map((a) => a.i));
});

test('a read-only data directory is refused at start with a clear error, new or holding a store', { timeout: 60000 }, async (t) => {
  const dir = tmpfs(t, 4096);
  if (!dir) return t.skip('needs the right to mount a tmpfs (root)');
  remount(dir, 'ro');
  let r = await runExpectExit(['--data-dir', dir]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, new RegExp(`${dir}: the data directory cannot be written: Read-only file system`));
  // a store written before, then the directory made read-only
  remount(dir, 'rw');
  const srv = await startServer(['--data-dir', dir]);
  const res = await api(srv, 'POST', '/api/v1/publish', { user_id: 'ro_user', type: 'x' });
  assert.equal(res.status, 200);
  await srv.stop();
  remount(dir, 'ro');
  r = await runExpectExit(['--data-dir', dir]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /the data directory cannot be written: Read-only file system/);
  assert.doesNotMatch(r.stderr, /Assertion|AddressSanitizer|Segmentation/);
});

test('the history TTL applies on disk: expired events leave the store, the stream goes on', { timeout: 60000 }, async (t) => {
  const dir = tempDir(t);
  const user = 'disk_ttl';
  let srv = await startServer(['--data-dir', dir, '--history-ttl-ms', '1000']);
  t.after(() => srv.stop());
  let seq = 0;
  for (let i = 0; i < 20; i++) seq = (await api(srv, 'POST', '/api/v1/publish', { user_id: user, type: 'old', i })).json.seq;
  assert.equal(seq, 20);
  assert.equal(metricValue(await metrics(srv), 'agentwire_store_events'), 20);
  await pollUntil(async () => metricValue(await metrics(srv), 'agentwire_store_events') === 0,
    { timeoutMs: 10000, what: 'expired events trimmed from the store' });
  assert.ok(metricValue(await metrics(srv), 'agentwire_store_trimmed_total') >= 20);
  srv.signal('SIGKILL');
  await srv.exited;
  await srv.stop();
  srv = await startServer(['--data-dir', dir, '--history-ttl-ms', '1000']);
  assert.equal((await historyOf(srv, user)).events.length, 0);
  const r = await api(srv, 'POST', '/api/v1/publish', { user_id: user, type: 'new' });
  assert.equal(r.json.seq, 21, 'the stream head outlives its events');
});

test('--data-max-bytes: the oldest events on disk go first, the newest stay', { timeout: 60000 }, async (t) => {
  const dir = tempDir(t);
  const cap = 1048576;
  const pad = 'z'.repeat(8000);
  let srv = await startServer(['--data-dir', dir, '--data-max-bytes', String(cap)]);
  t.after(() => srv.stop());
  for (let i = 1; i <= 100; i++) {
    const r = await api(srv, 'POST', '/api/v1/publish', { user_id: 'bytes_old', type: 'b', i, pad });
    assert.equal(r.status, 200);
  }
  for (let i = 1; i <= 60; i++) {
    const r = await api(srv, 'POST', '/api/v1/publish', { user_id: 'bytes_new', type: 'b', i, pad });
    assert.equal(r.status, 200);
  }
  await pollUntil(async () => metricValue(await metrics(srv), 'agentwire_store_bytes') <= cap,
    { timeoutMs: 10000, what: 'the store trimmed to --data-max-bytes' });
  srv.signal('SIGKILL');
  await srv.exited;
  await srv.stop();
  srv = await startServer(['--data-dir', dir, '--data-max-bytes', String(cap)]);
  const newer = await historyOf(srv, 'bytes_new');
  assert.deepEqual(newer.events.map((e) => e.i), Array.from({ length: 60 }, (_, k) => k + 1));
  const older = await historyOf(srv, 'bytes_old');
  const kept = older.events.map((e) => e.i);
  assert.ok(kept.length < 100 && kept.length > 0, `some of the oldest went (${kept.length} kept)`);
  assert.deepEqual(kept, Array.from({ length: kept.length }, (_, k) => 101 - kept.length + k), 'the newest of them stay');
  assert.equal(older.seq, 100);
});
