// attacks-state.test.mjs -- the state a client or a publisher can make the
// server keep, and what it can make the server believe or write:
//
//   tickets    --max-tickets-per-user / --max-tickets (429 too_many_tickets; a
//              used or expired ticket frees its place), no ticket for a token
//              that is expired but within the leeway, and a ticket refused at
//              the upgrade for a connection limit (429) is not spent;
//   streams    --history-memory-bytes bounds the streams too (50,000 users
//              touched once), and a dropped user's next event starts a new epoch;
//   idempotency --idempotency-max-keys forgets the oldest key, never a fresh
//              one; an Idempotency-Key header over 255 bytes is 400 and
//              publishes nothing;
//   user ids   a `sub` with a control character is refused (upgrade, tickets);
//              text-format log lines cannot be forged by client text;
//   deflate    messages compressed with a final block (zlib Z_FINISH) are read,
//              several in a row on one connection, with context takeover;
//   ES256      the high-S spelling of a valid signature is refused (unless
//              --jwt-allow-high-s).
//
// Every test fails against a server without the limit. Where options that
// predate a limit can express the attack, only they are used, so such a
// server shows the weakness rather than an unknown option; the idempotency
// cap and --max-tickets have no earlier equivalent.
//
// No RSS bound is asserted here: the signals are statuses, metrics and log
// lines, which mean the same under ASan.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import net from 'node:net';
import zlib from 'node:zlib';
import {
  api, connectReady, expectRefusal, generateKeys, metricValue, nowS, pollUntil, publish, randomId, signHS256, tempFile, uniqueMessageId, unsignedParts, b64url, upgradeRequest, useServer, withTimeout, WAIT_MS, rawUpgrade, frameReader,
} from './lib/harness.mjs';
import { spawnUntilLog } from './lib/attack-util.mjs';

const T = { timeout: 120000 };
// Attack sockets must not hold the SIGTERM drain (the harness checks a clean exit).
const BASE = ['--drain-timeout-ms', '2000'];

/** POST /api/v1/tickets with token as Bearer (the API key is not sent). */
function requestTicket(srv, token) {
  return api(srv, 'POST', '/api/v1/tickets', undefined, { key: token });
}

/** A ticket that must be issued; returns its string. */
async function issueTicket(srv, token, what = 'ticket') {
  const r = await requestTicket(srv, token);
  assert.equal(r.status, 200, `${what}: ${r.status} ${r.text}`);
  assert.equal(typeof r.json.ticket, 'string');
  return r.json.ticket;
}

function assertTooManyTickets(r, what) {
  assert.equal(r.status, 429, `${what}: expected 429 too_many_tickets, got ${r.status} ${r.text}`);
  assert.equal(r.json && r.json.error, 'too_many_tickets', `${what}: ${r.text}`);
}

const history = async (srv, user) => {
  const r = await api(srv, 'GET', `/api/v1/history?user_id=${encodeURIComponent(user)}`);
  assert.equal(r.status, 200, r.text);
  return r.json;
};

const metricsText = async (srv) => {
  const r = await api(srv, 'GET', '/metrics');
  assert.equal(r.status, 200, `/metrics: ${r.status} ${r.text}`);
  return r.text;
};

/* ================================================================== */
/* 5. tickets                                                           */
/* ================================================================== */

test('tickets: at most 16 unused per user (default --max-tickets-per-user): the 17th is 429 too_many_tickets; a used one frees its place', T, async (t) => {
  const srv = await useServer(t, BASE);
  const user = randomId('tk');
  const token = srv.token(user);
  const tickets = [];
  for (let i = 0; i < 16; i++) tickets.push(await issueTicket(srv, token, `ticket ${i + 1} of 16`));

  assertTooManyTickets(await requestTicket(srv, token), '17th unused ticket of one user');
  assertTooManyTickets(await requestTicket(srv, token), '18th unused ticket of one user');

  // The cap is per user: another user is not affected.
  await issueTicket(srv, srv.token(randomId('tk_other')), 'a ticket of another user');

  // Using a ticket frees its place (one place: the next-but-one is refused again).
  const c = await connectReady(srv.wsUrl({ ticket: tickets[0] }));
  assert.equal(c.hello.user_id, user);
  const fresh = await issueTicket(srv, token, 'a ticket after one was used');
  assertTooManyTickets(await requestTicket(srv, token), 'one more after the freed place was taken');
  // The used ticket stays spent; the others and the fresh one still work.
  const reuse = await expectRefusal(srv.wsUrl({ ticket: tickets[0] }));
  assert.equal(reuse.status, 401, reuse.text);
  const c2 = await connectReady(srv.wsUrl({ ticket: fresh }));
  assert.equal(c2.hello.user_id, user);
  const c3 = await connectReady(srv.wsUrl({ ticket: tickets[15] }));
  assert.equal(c3.hello.user_id, user);
  for (const x of [c, c2, c3]) await x.close();
});

test('tickets: an expired ticket frees its place (--ticket-ttl-ms 4000)', T, async (t) => {
  const TTL = 4000;
  const srv = await useServer(t, [...BASE, '--ticket-ttl-ms', String(TTL)]);
  const user = randomId('tkx');
  const token = srv.token(user);
  const started = Date.now();
  const tickets = await Promise.all(Array.from({ length: 16 }, (_, i) => issueTicket(srv, token, `ticket ${i + 1} of 16`)));
  const full = await requestTicket(srv, token);
  const elapsed = Date.now() - started;
  // The 17th must be asked for while the first 16 are alive, or the check says nothing.
  assert.ok(elapsed < TTL - 500, `issuing 17 tickets took ${elapsed} ms, too close to the ${TTL} ms ttl to judge`);
  assertTooManyTickets(full, '17th unused ticket while 16 are alive');

  // Once they expire, the user may have tickets again (bounded wait: ttl plus housekeeping).
  const again = await pollUntil(async () => {
    const r = await requestTicket(srv, token);
    if (r.status === 200) return r.json.ticket;
    assert.equal(r.status, 429, `while waiting for expiry: ${r.status} ${r.text}`);
    return null;
  }, { timeoutMs: TTL + 20000, intervalMs: 250, what: 'a ticket once the first 16 expired' });
  assert.ok(Date.now() - started >= TTL - 250, 'a place was freed before any ticket expired');
  // The expired ones do not authenticate; the new one does.
  const old = await expectRefusal(srv.wsUrl({ ticket: tickets[0] }));
  assert.equal(old.status, 401, old.text);
  const c = await connectReady(srv.wsUrl({ ticket: again }));
  assert.equal(c.hello.user_id, user);
  await c.close();
});

test('tickets: --max-tickets 50 bounds all users together; a used ticket frees a place', T, async (t) => {
  const srv = await useServer(t, [...BASE, '--max-tickets', '50', '--max-tickets-per-user', '16']);
  const users = Array.from({ length: 5 }, () => randomId('tkall'));
  const held = new Map(users.map((u) => [u, []]));
  // 16 + 16 + 16 + 2 = 50
  for (let i = 0; i < 50; i++) {
    const u = users[Math.floor(i / 16)];
    held.get(u).push(await issueTicket(srv, srv.token(u), `ticket ${i + 1} of 50`));
  }
  // users[3] holds 2 (under its own cap), users[4] none: both refused, the total is reached.
  assertTooManyTickets(await requestTicket(srv, srv.token(users[3])), 'user with 2 tickets past the total');
  assertTooManyTickets(await requestTicket(srv, srv.token(users[4])), 'user with no ticket past the total');
  assertTooManyTickets(await requestTicket(srv, srv.token(randomId('tknew'))), 'a new user past the total');

  const c = await connectReady(srv.wsUrl({ ticket: held.get(users[0])[0] }));
  assert.equal(c.hello.user_id, users[0]);
  const t4 = await issueTicket(srv, srv.token(users[4]), 'a ticket after one of the 50 was used');
  assertTooManyTickets(await requestTicket(srv, srv.token(users[4])), 'total reached again');
  const c4 = await connectReady(srv.wsUrl({ ticket: t4 }));
  assert.equal(c4.hello.user_id, users[4]);
  await c.close();
  await c4.close();
});

test('tickets: a token that is expired is refused at /api/v1/tickets even within --jwt-leeway-s (401)', T, async (t) => {
  const srv = await useServer(t, [...BASE, '--jwt-leeway-s', '30']);
  const user = randomId('lee');
  // Control: a live token gets a ticket.
  await issueTicket(srv, srv.token(user, { exp: nowS() + 300 }), 'a ticket for a live token');
  // exp 5 s ago: inside the 30 s leeway, but a ticket would outlive the token.
  const within = await requestTicket(srv, srv.token(user, { exp: nowS() - 5 }));
  assert.equal(within.status, 401, `token expired 5 s ago (leeway 30 s): ${within.status} ${within.text}`);
  assert.equal(within.json && within.json.error, 'unauthorized', within.text);
  const beyond = await requestTicket(srv, srv.token(user, { exp: nowS() - 120 }));
  assert.equal(beyond.status, 401, `token expired 120 s ago: ${beyond.status} ${beyond.text}`);
});

test('tickets: a ticket refused at the upgrade for a connection limit (429) is not spent', T, async (t) => {
  const srv = await useServer(t, [...BASE, '--max-connections-per-user', '1']);
  const user = randomId('tk429');
  const first = await connectReady(srv.url, { headers: { Authorization: `Bearer ${srv.token(user)}` } });
  const tk = await issueTicket(srv, srv.token(user));

  const refused = await expectRefusal(srv.wsUrl({ ticket: tk }));
  assert.equal(refused.status, 429, `second connection of a user limited to 1: ${refused.status} ${refused.text}`);
  assert.equal(refused.body && refused.body.error, 'too_many_connections', refused.text);

  await first.close();
  await pollUntil(async () => {
    const r = await api(srv, 'GET', `/api/v1/users/${encodeURIComponent(user)}/connections`);
    return r.status === 200 && r.json.connections.length === 0;
  }, { timeoutMs: 10000, what: 'the first connection to be gone' });

  // The same ticket works now: the 429 did not spend it.
  let c;
  try {
    c = await connectReady(srv.wsUrl({ ticket: tk }));
  } catch (err) {
    err.message = `the ticket refused with 429 no longer works: ${err.message}`;
    throw err;
  }
  assert.equal(c.hello.user_id, user);
  // and now it is spent
  await c.close();
  const spent = await expectRefusal(srv.wsUrl({ ticket: tk }));
  assert.equal(spent.status, 401, spent.text);
});

/* ================================================================== */
/* 6. streams under --history-memory-bytes                              */
/* ================================================================== */

test('streams: one event to each of 50,000 users under --history-memory-bytes 1 MiB keeps streams and bytes under the cap; a dropped user starts a new epoch', T, async (t) => {
  const CAP = 1048576;
  const USERS = 50000;
  const BATCH = 1000;
  const srv = await useServer(t, [...BASE, '--history-memory-bytes', String(CAP)]);
  const tag = crypto.randomBytes(3).toString('hex');

  // The first user touched: idle (no connection) once the others arrive.
  const early = `early_${tag}`;
  const r0 = await publish(srv, { user_id: early, type: 'note', text: 'first' });
  assert.equal(r0.seq, 1);
  // A connected user: its stream is not idle and must survive.
  const liveUser = `live_${tag}`;
  const live = await connectReady(srv.url, { headers: { Authorization: `Bearer ${srv.token(liveUser)}` } });
  const l1 = await publish(srv, { user_id: liveUser, type: 'note', text: 'live 1' });
  assert.equal((await live.nextMessage((m) => m.type === 'note' && m.seq === l1.seq)).text, 'live 1');

  const started = Date.now();
  for (let b = 0; b < USERS / BATCH; b++) {
    const events = [];
    for (let i = 0; i < BATCH; i++) events.push({ user_id: `s_${tag}_${b * BATCH + i}`, type: 'note', text: 'x' });
    const r = await api(srv, 'POST', '/api/v1/publish/batch', events, { timeoutMs: 30000 });
    assert.equal(r.status, 200, `batch ${b}: ${r.status} ${r.text.slice(0, 300)}`);
    assert.equal(r.json.length, BATCH);
    const bad = r.json.find((x) => typeof x.seq !== 'number');
    assert.equal(bad, undefined, `batch ${b}: an event was refused: ${JSON.stringify(bad)}`);
  }
  t.diagnostic(`published ${USERS} events to ${USERS} users in ${Date.now() - started} ms`);

  const m = await metricsText(srv);
  const streams = metricValue(m, 'agentwire_streams');
  const bytes = metricValue(m, 'agentwire_history_bytes');
  t.diagnostic(`agentwire_streams ${streams}, agentwire_history_bytes ${bytes}`);
  assert.ok(streams < 10000, `agentwire_streams is ${streams} after ${USERS} users touched once under a ${CAP}-byte cap (want < 10000)`);
  assert.ok(bytes <= CAP, `agentwire_history_bytes ${bytes} > --history-memory-bytes ${CAP}`);
  assert.ok(bytes > 0, 'the last events are still retained');

  // The early user's stream was dropped: its next event starts a new epoch at seq 1.
  const r1 = await publish(srv, { user_id: early, type: 'note', text: 'again' });
  assert.equal(r1.seq, 1, `the dropped user's next event: ${JSON.stringify(r1)} (first was ${JSON.stringify(r0)})`);
  assert.notEqual(r1.epoch, r0.epoch, 'a dropped stream comes back with a new epoch');

  // The connected user's stream was kept: same epoch, seq goes on, delivery goes on.
  const l2 = await publish(srv, { user_id: liveUser, type: 'note', text: 'live 2' });
  assert.equal(l2.epoch, l1.epoch, 'a stream with a connection is never dropped');
  assert.equal(l2.seq, l1.seq + 1);
  assert.equal((await live.nextMessage((x) => x.type === 'note' && x.seq === l2.seq)).text, 'live 2');
  await live.close();

  const after = await metricsText(srv);
  assert.ok(metricValue(after, 'agentwire_history_bytes') <= CAP, 'still under the cap');
});

/* ================================================================== */
/* 7. idempotency cache                                                 */
/* ================================================================== */

test('idempotency: --idempotency-max-keys 100 forgets the oldest key, and a fresh key is always remembered', T, async (t) => {
  const srv = await useServer(t, [...BASE, '--idempotency-max-keys', '100']);
  const user = randomId('idem');
  const pub = (key, text) => api(srv, 'POST', '/api/v1/publish', { user_id: user, type: 'note', text }, { headers: { 'Idempotency-Key': key } });
  const seqOf = new Map();
  for (let i = 0; i < 150; i++) {
    const r = await pub(`k${i}`, `event ${i}`);
    assert.equal(r.status, 200, `k${i}: ${r.status} ${r.text}`);
    assert.equal(r.json.seq, i + 1);
    seqOf.set(`k${i}`, r.json);
  }
  // The newest key is remembered: same receipt, no new event.
  const again149 = await pub('k149', 'event 149 retried');
  assert.equal(again149.status, 200, again149.text);
  assert.deepEqual(again149.json, seqOf.get('k149'), 'a retry of the newest key returns the first receipt');
  const again120 = await pub('k120', 'event 120 retried');
  assert.deepEqual(again120.json, seqOf.get('k120'), 'a retry of a recent key (within the last 100) returns the first receipt');
  let h = await history(srv, user);
  assert.equal(h.seq, 150, 'the retries published nothing');
  assert.equal(h.events.filter((e) => e.text && e.text.includes('retried')).length, 0);

  // The oldest key was forgotten (150 keys, cap 100): its retry is a new event.
  const again0 = await pub('k0', 'event 0 retried');
  assert.equal(again0.status, 200, again0.text);
  assert.equal(again0.json.seq, 151, `k0 is past the cap and forgotten: ${JSON.stringify(again0.json)}`);
  // ... and that fresh key is remembered at once, although the cache is full.
  const again0b = await pub('k0', 'event 0 retried twice');
  assert.deepEqual(again0b.json, again0.json, 'a fresh key at the cap is remembered');
  h = await history(srv, user);
  assert.equal(h.seq, 151);
});

test('idempotency: an Idempotency-Key header longer than 255 bytes is 400 bad_request and publishes nothing, retries included', T, async (t) => {
  const srv = await useServer(t, BASE);
  const user = randomId('idemlong');
  const c = await connectReady(srv.url, { headers: { Authorization: `Bearer ${srv.token(user)}` } });
  const longKey = 'K'.repeat(300);
  for (let attempt = 0; attempt < 2; attempt++) {
    const r = await api(srv, 'POST', '/api/v1/publish', { user_id: user, type: 'note', text: `attempt ${attempt}` }, { headers: { 'Idempotency-Key': longKey } });
    assert.equal(r.status, 400, `attempt ${attempt} with a 300-byte key: ${r.status} ${r.text}`);
    assert.equal(r.json && r.json.error, 'bad_request', r.text);
  }
  // 255 bytes is still fine (and remembered).
  const okKey = 'k'.repeat(255);
  const a = await api(srv, 'POST', '/api/v1/publish', { user_id: user, type: 'note', text: 'max key' }, { headers: { 'Idempotency-Key': okKey } });
  assert.equal(a.status, 200, a.text);
  const b = await api(srv, 'POST', '/api/v1/publish', { user_id: user, type: 'note', text: 'max key again' }, { headers: { 'Idempotency-Key': okKey } });
  assert.deepEqual(b.json, a.json);
  assert.equal(a.json.seq, 1, `the refused publishes took no seq: ${JSON.stringify(a.json)}`);

  const h = await history(srv, user);
  assert.deepEqual(h.events.map((e) => e.text), ['max key'], 'history holds only the accepted event');
  await c.sync();
  assert.deepEqual(c.events().map((e) => e.text), ['max key'], 'the user received only the accepted event');
  await c.close();
});

/* ================================================================== */
/* 8. user ids with control characters, log lines                       */
/* ================================================================== */

test('user ids: a token whose sub has a control character is refused at the upgrade and at /api/v1/tickets (401)', T, async (t) => {
  const srv = await useServer(t, BASE);
  const subs = ['line\nbreak', 'carriage\rreturn', 'tab\there', 'nul\u0001byte', 'del\u007fchar', '\u001b[31mred'];
  for (const sub of subs) {
    const token = srv.token(sub);
    const up = await expectRefusal(srv.url, { headers: { Authorization: `Bearer ${token}` } })
      .catch((err) => { throw new Error(`sub ${JSON.stringify(sub)} at the upgrade: ${err.message}`); });
    assert.equal(up.status, 401, `sub ${JSON.stringify(sub)} at the upgrade: ${up.status} ${up.text}`);
    const tk = await requestTicket(srv, token);
    assert.equal(tk.status, 401, `sub ${JSON.stringify(sub)} at /api/v1/tickets: ${tk.status} ${tk.text}`);
  }
  // Control: printable ids with quotes, spaces and non-ASCII are fine.
  for (const sub of ['quote" and space', 'back\\slash', 'üñíçødé']) {
    const c = await connectReady(srv.url, { headers: { Authorization: `Bearer ${srv.token(sub)}` } });
    assert.equal(c.hello.user_id, sub);
    await c.close();
  }
});

/** Parses the fields of a text log line after "TS LEVEL MSG": key=value, value bare or "quoted" with \" \\ \n \xHH escapes. */
function parseTextFields(rest) {
  const fields = [];
  let i = 0;
  while (i < rest.length) {
    while (rest[i] === ' ') i++;
    if (i >= rest.length) break;
    const eq = rest.indexOf('=', i);
    if (eq < 0) { fields.push([rest.slice(i), null]); break; }
    const key = rest.slice(i, eq);
    i = eq + 1;
    let val = '';
    if (rest[i] === '"') {
      i++;
      while (i < rest.length && rest[i] !== '"') {
        if (rest[i] === '\\' && i + 1 < rest.length) {
          const e = rest[i + 1];
          if (e === 'n') { val += '\n'; i += 2; }
          else if (e === 'x') { val += String.fromCharCode(parseInt(rest.slice(i + 2, i + 4), 16)); i += 4; }
          else { val += e; i += 2; }
        } else {
          val += rest[i++];
        }
      }
      i++; // closing quote
    } else {
      const sp = rest.indexOf(' ', i);
      val = sp < 0 ? rest.slice(i) : rest.slice(i, sp);
      i = sp < 0 ? rest.length : sp;
    }
    fields.push([key, val]);
  }
  return fields;
}

test('text logs: client text with newlines, quotes and "=" cannot forge a log line or a field (--log-format text)', T, async (t) => {
  // An exec agent that echoes the user's request as an event type: the type
  // is refused (422), and the server logs the refusal with the type in it.
  const agent = tempFile(t, 'echo-type-agent.mjs', [
    "let input = '';",
    "process.stdin.setEncoding('utf8');",
    "process.stdin.on('data', (c) => { input += c; });",
    "process.stdin.on('end', () => {",
    '  const req = JSON.parse(input);',
    '  process.stdout.write(JSON.stringify({ type: req.user_request }) + "\\n");',
    '  process.stdout.write(JSON.stringify({ type: "agent_completed", status: "success", final_response: "echoed" }) + "\\n");',
    '});',
    '',
  ].join('\n'));
  const secret = crypto.randomBytes(24).toString('hex');
  const apiKey = `ak_${crypto.randomBytes(16).toString('hex')}`;
  const args = [
    '--listen', '127.0.0.1:0', '--log-format', 'text', '--jwt-secret', secret, '--api-key', apiKey,
    '--jwt-leeway-s', '0', ...BASE, '--agent', `exec:exec '${process.execPath}' '${agent}'`,
  ];
  const listenRe = /^\S+ info listening addr=127\.0\.0\.1:(\d+)\b/;
  const h = await spawnUntilLog(t, args, (e) => typeof e.unparsed === 'string' && listenRe.test(e.unparsed));
  const port = Number(listenRe.exec(h.entry.unparsed)[1]);
  const srv = {
    port,
    apiKey,
    httpUrl: `http://127.0.0.1:${port}`,
    url: `ws://127.0.0.1:${port}/ws`,
    token: (sub, claims = {}) => signHS256(secret, { sub, ...claims }),
  };
  const clients = [];
  t.after(() => { for (const c of clients) c.terminate(); });

  const FORGED = '2099-01-01T00:00:00.000Z error forged';
  // 1. A user id with quotes, spaces, "=" and a backslash (a valid id): logged at connect.
  const quoteSub = `q" ${'forged_field'}=yes x="\\`;
  const qc = await connectReady(srv.url, { headers: { Authorization: `Bearer ${srv.token(quoteSub)}` } });
  clients.push(qc);
  assert.equal(qc.hello.user_id, quoteSub);

  // 2. A user id with a newline: refused by the new server; an old one logs it at connect.
  const nlSub = `nl\n${FORGED} by=sub`;
  try {
    const c = await connectReady(srv.url, { headers: { Authorization: `Bearer ${srv.token(nlSub)}` } });
    clients.push(c);
  } catch { /* refused: what the server should do */ }

  // 3. Free text from the client reaches a log value through the agent's refused event type.
  const request = `x\n${FORGED} by=agent_type\r\n${FORGED} by=crlf`;
  const id = uniqueMessageId('start');
  qc.send({ type: 'start_agent', message_id: id, payload: { user_request: request } });
  const ack = await qc.nextMessage((m) => m.message_id === id && (m.type === 'ack' || m.type === 'error'));
  assert.equal(ack.type, 'ack', JSON.stringify(ack));
  const done = await qc.nextMessage((m) => m.type === 'agent_completed' && m.run_id === ack.run_id, 20000);
  assert.equal(done.status, 'success', JSON.stringify(done));

  // A marker: once its line is read, every line written before it was read too.
  const marker = `marker_${crypto.randomBytes(4).toString('hex')}`;
  const kick = await api(srv, 'POST', `/api/v1/users/${marker}/disconnect`, undefined);
  assert.equal(kick.status, 200, kick.text);
  await pollUntil(() => h.stderr.split('\n').some((l) => l.includes(` kick `) && l.includes(marker)),
    { timeoutMs: 10000, what: 'the kick log line of the marker' });
  await qc.close();

  const lines = h.stderr.split('\n').filter((l) => l.length);
  const shape = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (debug|info|warn|error) /;
  const forged = lines.filter((l) => l.startsWith('2099-') || l.startsWith(FORGED));
  assert.deepEqual(forged, [], `log lines forged by client text:\n${forged.join('\n')}`);
  for (const l of lines) {
    assert.match(l, shape, `every log line starts with a timestamp and a level: ${JSON.stringify(l)}`);
    assert.ok(!l.includes('\r'), `no raw carriage return in a log line: ${JSON.stringify(l)}`);
  }

  // The refused agent event is logged once, with the whole type in one escaped value.
  const refusedLines = lines.filter((l) => / agent event refused /.test(l));
  assert.equal(refusedLines.length, 1, `one "agent event refused" line: ${JSON.stringify(lines.slice(-20))}`);
  const refFields = parseTextFields(refusedLines[0].replace(/^.* agent event refused /, ''));
  const refType = refFields.filter(([k]) => k === 'type');
  assert.equal(refType.length, 1, `one type field: ${refusedLines[0]}`);
  assert.equal(refType[0][1], request, `the type value reads back as the client sent it: ${refusedLines[0]}`);

  // The connect line of the quote user: its user field reads back exactly, no field was forged.
  const connectLines = lines.filter((l) => / info connect /.test(l) && l.includes('q\\"'));
  const connectLine = connectLines[0] || lines.find((l) => / info connect /.test(l) && l.includes('forged_field'));
  assert.ok(connectLine, `a connect line for the quote user: ${JSON.stringify(lines.filter((l) => / connect /.test(l)))}`);
  const fields = parseTextFields(connectLine.replace(/^.* info connect /, ''));
  const keys = fields.map(([k]) => k);
  assert.ok(!keys.includes('forged_field'), `a client forged a field: ${connectLine}`);
  assert.deepEqual(fields.filter(([k]) => k === 'user').map(([, v]) => v), [quoteSub], `user field of ${connectLine}`);
  assert.deepEqual(keys.filter((k) => k === 'x'), [], `no stray field: ${connectLine}`);

  const exit = await h.stop();
  assert.deepEqual(exit, { code: 0, signal: null }, `clean exit after SIGTERM\n${h.stderr.slice(-3000)}`);
});

/* ================================================================== */
/* 10. permessage-deflate with BFINAL=1                                 */
/* ================================================================== */


/** A masked client frame. */
function clientFrame(opcode, payload, { rsv1 = false } = {}) {
  const len = payload.length;
  assert.ok(len < 65536, 'small frames only');
  const head = len < 126 ? Buffer.from([0, 0x80 | len]) : Buffer.from([0, 0x80 | 126, len >> 8, len & 255]);
  head[0] = 0x80 | (rsv1 ? 0x40 : 0) | opcode;
  const mask = crypto.randomBytes(4);
  const body = Buffer.from(payload);
  for (let i = 0; i < body.length; i++) body[i] ^= mask[i % 4];
  return Buffer.concat([head, mask, body]);
}

/** Upgrades a raw socket with a deflate offer; resolves {status, headers, reader, sock}. */
async function rawDeflateUpgrade(srv, token) {
  const up = await rawUpgrade(srv, { Authorization: `Bearer ${token}`, 'Sec-WebSocket-Extensions': 'permessage-deflate; client_max_window_bits' }, { timeoutMs: 10000 });
  return { status: up.status, headers: up.headers, sock: up.socket, reader: frameReader(up.socket, up.rest), head: up.text };
}

test('permessage-deflate: messages ending in a final block (zlib Z_FINISH, BFINAL=1) are read, several in a row, with context takeover', T, async (t) => {
  const srv = await useServer(t, BASE);
  const up = await rawDeflateUpgrade(srv, srv.token(randomId('bfinal')));
  assert.equal(up.status, 101, up.head);
  assert.match(up.headers['sec-websocket-extensions'] || '', /permessage-deflate/);
  assert.doesNotMatch(up.headers['sec-websocket-extensions'], /client_no_context_takeover/, 'the client keeps its context');
  const hello = await up.reader.next();
  assert.equal(JSON.parse(hello.payload).type, 'connection_established');

  // The server's window: everything inflated so far on this connection (32 KiB max).
  let window = Buffer.alloc(0);
  const pad = crypto.randomBytes(96).toString('hex'); // repeated in every message: back-references into the window
  const compress = (text, { final = true, useWindow = true } = {}) => {
    const data = Buffer.from(text);
    const opts = { finishFlush: final ? zlib.constants.Z_FINISH : zlib.constants.Z_SYNC_FLUSH };
    if (useWindow && window.length) opts.dictionary = window.subarray(-32768);
    let out = zlib.deflateRawSync(data, opts);
    if (final) assert.equal(out[0] & 1, 1, 'the first block is the final one (BFINAL=1), no sync-flush tail');
    else { assert.deepEqual([...out.subarray(-4)], [0, 0, 0xff, 0xff]); out = out.subarray(0, out.length - 4); }
    window = Buffer.concat([window, data]).subarray(-32768);
    return out;
  };
  const frameCheck = async (what, pred) => {
    const f = await up.reader.next(10000).catch((err) => { throw new Error(`${what}: ${err.message}`); });
    if (f.opcode === 8) assert.fail(`${what}: the server closed with ${f.payload.length >= 2 ? f.payload.readUInt16BE(0) : '(no code)'} ${f.payload.subarray(2).toString()}`);
    assert.equal(f.opcode, 1, `${what}: a text frame`);
    const m = JSON.parse(f.rsv1 ? zlib.inflateRawSync(Buffer.concat([f.payload, Buffer.from([0, 0, 0xff, 0xff])]), { finishFlush: zlib.constants.Z_SYNC_FLUSH }) : f.payload);
    assert.ok(pred(m), `${what}: got ${JSON.stringify(m)}`);
    return m;
  };
  const ping = (i) => JSON.stringify({ type: 'ping', timestamp: i, message_id: `bf${i}`, pad });

  // 1. A lone Z_FINISH message (a fresh deflate stream).
  up.sock.write(clientFrame(1, compress(ping(1), { useWindow: false }), { rsv1: true }));
  await frameCheck('ping 1 (Z_FINISH)', (m) => m.type === 'pong' && m.message_id === 'bf1' && m.timestamp === 1);

  // 2..4. Z_FINISH messages that refer back to earlier messages (context takeover).
  for (let i = 2; i <= 4; i++) {
    const z = compress(ping(i));
    assert.ok(z.length < 100, `message ${i} uses the window (${z.length} bytes on the wire)`);
    up.sock.write(clientFrame(1, z, { rsv1: true }));
    await frameCheck(`ping ${i} (Z_FINISH, context takeover)`, (m) => m.type === 'pong' && m.message_id === `bf${i}` && m.timestamp === i);
  }

  // 5. A sync-flushed message after the final-block ones: the context goes on.
  up.sock.write(clientFrame(1, compress(ping(5), { final: false }), { rsv1: true }));
  await frameCheck('ping 5 (Z_SYNC_FLUSH after Z_FINISH ones)', (m) => m.type === 'pong' && m.message_id === 'bf5');

  // 6. An unknown type compressed with Z_FINISH gets its error reply, not a close.
  up.sock.write(clientFrame(1, compress(JSON.stringify({ type: 'no_such_type', message_id: 'bf6', pad })), { rsv1: true }));
  await frameCheck('unknown type (Z_FINISH)', (m) => m.type === 'error' && m.message_id === 'bf6');

  // 7. Several final-block messages written at once (one TCP write), all answered in order.
  const burst = [];
  for (let i = 7; i <= 10; i++) burst.push(clientFrame(1, compress(ping(i)), { rsv1: true }));
  up.sock.write(Buffer.concat(burst));
  for (let i = 7; i <= 10; i++) await frameCheck(`ping ${i} (burst of Z_FINISH messages)`, (m) => m.type === 'pong' && m.message_id === `bf${i}`);

  up.sock.destroy();
});

/* ================================================================== */
/* 12. ES256 high-S                                                     */
/* ================================================================== */

const P256_N = BigInt('0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551');

/** ES256 token for claims with both spellings of one signature: {low, high, input, rawLow, rawHigh}. */
function es256Pair(privateKey, claims) {
  const input = unsignedParts({ alg: 'ES256', typ: 'JWT' }, { exp: nowS() + 3600, ...claims });
  const sig = crypto.sign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' });
  const r = sig.subarray(0, 32);
  const s = BigInt(`0x${sig.subarray(32).toString('hex')}`);
  const flipped = P256_N - s; // s' = n - s: the same signature, spelled the other way
  const enc = (v) => Buffer.from(v.toString(16).padStart(64, '0'), 'hex');
  const lowS = s <= P256_N / 2n ? s : flipped;
  const highS = s <= P256_N / 2n ? flipped : s;
  const rawLow = Buffer.concat([r, enc(lowS)]);
  const rawHigh = Buffer.concat([r, enc(highS)]);
  return { input, rawLow, rawHigh, low: `${input}.${b64url(rawLow)}`, high: `${input}.${b64url(rawHigh)}` };
}

test('ES256: the high-S spelling (s\' = n - s) of a valid signature is refused (401) at the upgrade and at /api/v1/tickets; low-S is accepted', T, async (t) => {
  const keys = generateKeys('ES256');
  const pem = tempFile(t, 'es256.pem', keys.publicPem);
  const srv = await useServer(t, [...BASE, '--jwt-public-key', pem, '--jwt-alg', 'ES256']);
  for (let i = 0; i < 3; i++) {
    const user = randomId('es');
    const p = es256Pair(keys.privateKey, { sub: user });
    // Both spellings verify mathematically: the refusal is about malleability, not a broken signature.
    for (const raw of [p.rawLow, p.rawHigh]) {
      assert.ok(crypto.verify('sha256', Buffer.from(p.input), { key: keys.publicKey, dsaEncoding: 'ieee-p1363' }, raw));
    }
    const up = await expectRefusal(srv.url, { headers: { Authorization: `Bearer ${p.high}` } })
      .catch((err) => { throw new Error(`high-S token at the upgrade: ${err.message}`); });
    assert.equal(up.status, 401, `high-S token at the upgrade: ${up.status} ${up.text}`);
    const tk = await requestTicket(srv, p.high);
    assert.equal(tk.status, 401, `high-S token at /api/v1/tickets: ${tk.status} ${tk.text}`);

    const c = await connectReady(srv.url, { headers: { Authorization: `Bearer ${p.low}` } });
    assert.equal(c.hello.user_id, user);
    await c.close();
    await issueTicket(srv, p.low, 'a ticket for the low-S token');
  }
  // for issuers whose signing library does not normalize S
  const lax = await useServer(t, [...BASE, '--jwt-public-key', pem, '--jwt-alg', 'ES256', '--jwt-allow-high-s']);
  const user = randomId('eslax');
  const p = es256Pair(keys.privateKey, { sub: user });
  const c = await connectReady(lax.url, { headers: { Authorization: `Bearer ${p.high}` } });
  assert.equal(c.hello.user_id, user, '--jwt-allow-high-s takes the high-S spelling');
  await c.close();
});
