// durable.test.mjs -- --data-dir: a restart (kill -9 at any moment, or a
// drain) loses nothing that was acknowledged: every event that got a 200 is
// in history after the restart, exactly once and in order, under the same
// epoch; clients resume across it; runs open at the crash end with one
// agent_completed (status error, reason restart); a file that is not ours is
// refused at start with a clear error.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'node:test';

import { api, connectAs, connectReady, metricValue, runExpectExit, startServer } from './lib/harness.mjs';

function dataDir(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentwire-data-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function historyOf(srv, user) {
  const res = await api(srv, 'GET', `/api/v1/history?user_id=${encodeURIComponent(user)}`);
  assert.equal(res.status, 200, res.text);
  return res.json;
}

test('kill -9 at random moments while a publisher runs: every acknowledged event is back, once, in order, same epoch', { timeout: 120000 }, async (t) => {
  const dir = dataDir(t);
  const users = ['dur_a', 'dur_b', 'dur_c'];
  const acked = Object.fromEntries(users.map((u) => [u, []])); // payload ids that got a 200, in order
  let epoch = Object.fromEntries(users.map((u) => [u, null]));
  let next = 0;
  // thirty rounds may store more than the default 1000 events per user (the
  // batch publisher's user most of all); the check reads every one of them
  const keepAll = ['--data-dir', dir, '--history-size', '100000'];
  for (let round = 0; round < 30; round++) {
    const srv = await startServer(keepAll);
    let stop = false;
    // publishers: single events and batches, until the kill
    const publishers = users.map(async (user, k) => {
      while (!stop) {
        const batch = k === 2;
        const ids = batch ? [next++, next++, next++] : [next++];
        const body = batch ? ids.map((id) => ({ user_id: user, type: 'dur', id })) : { user_id: user, type: 'dur', id: ids[0] };
        let res;
        try {
          res = await api(srv, 'POST', batch ? '/api/v1/publish/batch' : '/api/v1/publish', body, { timeoutMs: 5000 });
        } catch {
          return; // the server is gone: this one is not acknowledged
        }
        if (res.status !== 200) return;
        const receipts = batch ? res.json : [res.json];
        receipts.forEach((r, i) => {
          if (typeof r.seq !== 'number') return;
          if (epoch[user] === null) epoch[user] = r.epoch;
          assert.equal(r.epoch, epoch[user], `${user}: one epoch across restarts`);
          acked[user].push({ id: ids[i], seq: r.seq });
        });
      }
    });
    // the kill comes after some acknowledgements, at a random moment
    const target = users.reduce((n, u) => n + acked[u].length, 0) + 20 + Math.floor(Math.random() * 60);
    while (users.reduce((n, u) => n + acked[u].length, 0) < target) await new Promise((r) => setImmediate(r));
    srv.signal('SIGKILL');
    stop = true;
    await srv.exited;
    await Promise.all(publishers);
    await srv.stop();
  }
  const srv = await startServer(keepAll);
  t.after(() => srv.stop());
  for (const user of users) {
    const h = await historyOf(srv, user);
    assert.equal(h.epoch, epoch[user], `${user}: the epoch survived thirty kills`);
    const stored = h.events.map((e) => e.id);
    const seqs = h.events.map((e) => e.seq);
    assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => i + 1), `${user}: seqs 1..n, no gap, no duplicate`);
    const ackedIds = acked[user].map((a) => a.id);
    // every acknowledged event is stored, at the seq its receipt said
    for (const a of acked[user]) assert.equal(h.events[a.seq - 1]?.id, a.id, `${user}: seq ${a.seq} is the acknowledged event ${a.id}`);
    assert.ok(ackedIds.length >= 20, `${user}: ${ackedIds.length} acknowledged`);
    assert.equal(new Set(stored).size, stored.length, `${user}: each event once`);
  }
});

test('SIGTERM and kill -9: a client holding since and epoch resumes exactly across the restart', { timeout: 60000 }, async (t) => {
  const dir = dataDir(t);
  for (const sig of ['SIGTERM', 'SIGKILL']) {
    const user = `dur_resume_${sig}`;
    let srv = await startServer(['--data-dir', dir]);
    const c = await connectAs(srv, user);
    for (let i = 0; i < 10; i++) await api(srv, 'POST', '/api/v1/publish', { user_id: user, type: 'dur', i });
    const seen = await c.nextMessages(10, (m) => m.type === 'dur');
    const last = seen.at(-1);
    for (let i = 10; i < 15; i++) await api(srv, 'POST', '/api/v1/publish', { user_id: user, type: 'dur', i });
    srv.signal(sig);
    await srv.exited;
    await srv.stop();
    srv = await startServer(['--data-dir', dir]);
    t.after(() => srv.stop());
    const c2 = await connectReady(srv.wsUrl({ since: String(last.seq), epoch: last.epoch }), { headers: { Authorization: `Bearer ${srv.token(user)}` } });
    assert.equal(c2.hello.resumed, true, `${sig}: ${JSON.stringify(c2.hello)}`);
    assert.equal(c2.hello.epoch, last.epoch);
    assert.equal(c2.hello.missed, 5);
    const missed = await c2.nextMessages(5, (m) => m.type === 'dur');
    assert.deepEqual(missed.map((e) => e.i), [10, 11, 12, 13, 14]);
    assert.deepEqual(missed.map((e) => e.seq), [11, 12, 13, 14, 15]);
    const r = await api(srv, 'POST', '/api/v1/publish', { user_id: user, type: 'dur', i: 15 });
    assert.equal(r.json.seq, 16, 'numbering continues');
    await srv.stop();
  }
});

test('a run open at the crash ends after the restart with one agent_completed (status error, reason restart)', { timeout: 60000 }, async (t) => {
  const dir = dataDir(t);
  const user = 'dur_run';
  let srv = await startServer(['--data-dir', dir]);
  for (const ev of [
    { type: 'agent_started', thread_id: 't1', run_id: 'r1', agent_name: 'x' },
    { type: 'agent_thinking', thread_id: 't1', run_id: 'r1', reasoning: 'hm' },
    { type: 'agent_started', thread_id: 't2', run_id: 'r2', agent_name: 'x' },
    { type: 'agent_completed', thread_id: 't2', run_id: 'r2', status: 'success', final_response: 'ok' },
  ]) {
    const r = await api(srv, 'POST', '/api/v1/publish', { user_id: user, ...ev });
    assert.equal(r.status, 200, r.text);
  }
  srv.signal('SIGKILL');
  await srv.exited;
  await srv.stop();
  srv = await startServer(['--data-dir', dir]);
  t.after(() => srv.stop());
  const h = await historyOf(srv, user);
  const done = h.events.filter((e) => e.type === 'agent_completed');
  assert.equal(done.length, 2, JSON.stringify(done));
  const r1 = done.filter((e) => e.run_id === 'r1');
  assert.equal(r1.length, 1, 'exactly one agent_completed for the open run');
  assert.equal(r1[0].status, 'error');
  assert.equal(r1[0].reason, 'restart');
  assert.equal(r1[0].seq, 5);
  // and only once: another restart adds nothing
  await srv.stop();
  srv = await startServer(['--data-dir', dir]);
  const h2 = await historyOf(srv, user);
  assert.equal(h2.events.length, 5);
  await srv.stop();
});

test('idempotency keys outlive a kill -9: a retry after the restart answers the first receipt and stores nothing twice', { timeout: 60000 }, async (t) => {
  const dir = dataDir(t);
  const user = 'dur_idem';
  let srv = await startServer(['--data-dir', dir]);
  const first = await api(srv, 'POST', '/api/v1/publish', { user_id: user, type: 'once', n: 1 }, { headers: { 'Idempotency-Key': 'key-1' } });
  assert.equal(first.status, 200, first.text);
  const batch = await api(srv, 'POST', '/api/v1/publish/batch', [
    { user_id: user, type: 'once', n: 2, idempotency_key: 'key-2' },
    { user_id: user, type: 'once', n: 3, idempotency_key: 'key-3' },
  ]);
  assert.equal(batch.status, 200, batch.text);
  srv.signal('SIGKILL');
  await srv.exited;
  await srv.stop();
  srv = await startServer(['--data-dir', dir]);
  t.after(() => srv.stop());
  const again = await api(srv, 'POST', '/api/v1/publish', { user_id: user, type: 'once', n: 1 }, { headers: { 'Idempotency-Key': 'key-1' } });
  assert.equal(again.status, 200, again.text);
  assert.equal(again.json.seq, first.json.seq);
  assert.equal(again.json.event_id, first.json.event_id);
  assert.equal(again.json.epoch, first.json.epoch);
  const batch2 = await api(srv, 'POST', '/api/v1/publish/batch', [
    { user_id: user, type: 'once', n: 3, idempotency_key: 'key-3' },
    { user_id: user, type: 'once', n: 4, idempotency_key: 'key-4' },
  ]);
  assert.equal(batch2.status, 200, batch2.text);
  assert.equal(batch2.json[0].seq, batch.json[1].seq, 'key-3: the stored receipt');
  assert.equal(batch2.json[1].seq, 4, 'key-4: a new event');
  const h = await historyOf(srv, user);
  assert.deepEqual(h.events.map((e) => e.n), [1, 2, 3, 4]);
});

test('a resume older than memory holds is served from disk: resumed, every event once, in order', { timeout: 60000 }, async (t) => {
  const dir = dataDir(t);
  const user = 'dur_older';
  // memory keeps ~60 of these events, the disk all 300
  const srv = await startServer(['--data-dir', dir, '--history-memory-bytes', '65536']);
  t.after(() => srv.stop());
  const pad = 'o'.repeat(800);
  let epoch;
  for (let i = 1; i <= 300; i++) {
    const r = await api(srv, 'POST', '/api/v1/publish', { user_id: user, type: 'old', i, pad }, { keepAlive: true });
    assert.equal(r.status, 200, r.text);
    epoch = r.json.epoch;
  }
  const m = await api(srv, 'GET', '/metrics');
  assert.ok(metricValue(m.text, 'agentwire_history_events') < 300, 'memory holds fewer than the disk');
  // over the upgrade
  const c = await connectReady(srv.wsUrl({ since: '10', epoch }), { headers: { Authorization: `Bearer ${srv.token(user)}` } });
  assert.equal(c.hello.resumed, true);
  assert.equal(c.hello.missed, 290);
  const got = await c.nextMessages(290, (e) => e.type === 'old', 20000);
  assert.deepEqual(got.map((e) => e.i), Array.from({ length: 290 }, (_, k) => k + 11));
  assert.deepEqual(got.map((e) => e.seq), Array.from({ length: 290 }, (_, k) => k + 11));
  // and live after it
  await api(srv, 'POST', '/api/v1/publish', { user_id: user, type: 'old', i: 301 });
  assert.equal((await c.nextMessage((e) => e.type === 'old')).seq, 301);
  c.close();
  // over the resume message
  const c2 = await connectAs(srv, user);
  c2.send({ type: 'resume', since: 0, epoch, message_id: 'r1' });
  const replayed = await c2.nextMessages(301, (e) => e.type === 'old', 20000);
  assert.deepEqual(replayed.map((e) => e.seq), Array.from({ length: 301 }, (_, k) => k + 1));
  const ack = await c2.nextMessage((e) => e.type === 'ack' && e.for === 'resume');
  assert.equal(ack.resumed, true);
  c2.close();
  // and the HTTP history
  const h = await historyOf(srv, user);
  assert.deepEqual(h.events.map((e) => e.seq), Array.from({ length: 301 }, (_, k) => k + 1));
  assert.equal(h.first_seq, 1);
});

test('a file in --data-dir that is not an agentwire store, or --data-dir with --redis: a clear error at start', async (t) => {
  const dir = dataDir(t);
  fs.writeFileSync(path.join(dir, 'agentwire.db'), 'this is not a database, '.repeat(200));
  const r = await runExpectExit(['--data-dir', dir]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /agentwire\.db/);
  assert.equal(fs.readFileSync(path.join(dir, 'agentwire.db'), 'utf8').slice(0, 12), 'this is not ', 'left as it was');
  const both = await runExpectExit(['--data-dir', dir, '--redis', 'redis://127.0.0.1:1']);
  assert.equal(both.code, 2);
  assert.match(both.stderr, /--data-dir and --redis cannot be used together/);
});
