// The HTTP API: its authentication, event validation, the agent events'
// required fields, connections and disconnect, errors, health and metrics.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  api,
  connectAs,
  metricValue,
  pollUntil,
  publish,
  rawSocket,
  useServer,
  withTimeout,
} from './lib/harness.mjs';

const T = { timeout: 30000 };

function assertError(res, status, code) {
  assert.equal(res.status, status, `expected ${status} ${code}, got ${res.status}: ${res.text.slice(0, 300)}`);
  assert.ok(res.json && typeof res.json === 'object', `error body is not JSON: ${res.text.slice(0, 300)}`);
  assert.equal(res.json.error, code, res.text.slice(0, 300));
  assert.equal(typeof res.json.message, 'string');
}

/* ---------------- authentication ---------------- */

test('API calls need the API key as Bearer: missing, wrong, or a user JWT is 401', T, async (t) => {
  const srv = await useServer(t);
  const calls = [
    ['POST', '/api/v1/publish', { user_id: 'u', type: 'note' }],
    ['POST', '/api/v1/publish/batch', [{ user_id: 'u', type: 'note' }]],
    ['GET', '/api/v1/users/u/connections', undefined],
    ['POST', '/api/v1/users/u/disconnect', undefined],
  ];
  const badAuth = [
    ['no header', { key: null }],
    ['wrong key', { key: `${srv.apiKey}x` }],
    ['key prefix', { key: srv.apiKey.slice(0, -1) }],
    ['a user JWT', { key: srv.token('u') }],
    ['Basic scheme', { key: null, headers: { Authorization: `Basic ${Buffer.from(`x:${srv.apiKey}`).toString('base64')}` } }],
    ['raw key without scheme', { key: null, headers: { Authorization: srv.apiKey } }],
  ];
  const c = await connectAs(srv, 'u');
  for (const [method, path, body] of calls) {
    for (const [what, opts] of badAuth) {
      const res = await api(srv, method, path, body, opts);
      assert.equal(res.status, 401, `${method} ${path} with ${what}: ${res.status} ${res.text}`);
      assert.equal(res.json?.error, 'unauthorized', `${method} ${path} with ${what}: ${res.text}`);
    }
  }
  await c.sync();
  assert.deepEqual(c.events(), [], 'an unauthorized publish was delivered');
  assert.ok(c.isOpen, 'an unauthorized disconnect took effect');
  assert.equal((await publish(srv, { user_id: 'u', type: 'note' })).seq, 1, 'an unauthorized publish took a seq');
});

test('/healthz, /readyz and /metrics are open', T, async (t) => {
  const srv = await useServer(t);
  for (const p of ['/healthz', '/readyz', '/metrics']) {
    const res = await api(srv, 'GET', p, undefined, { key: null });
    assert.equal(res.status, 200, `${p}: ${res.status} ${res.text}`);
  }
});

/* ---------------- validation ---------------- */

test('publish: invalid JSON body is 400 invalid_json', T, async (t) => {
  const srv = await useServer(t);
  for (const body of ['{"user_id":"u",', 'nope', '']) {
    assertError(await api(srv, 'POST', '/api/v1/publish', body), 400, 'invalid_json');
  }
  assertError(await api(srv, 'POST', '/api/v1/publish/batch', '[{"user_id":'), 400, 'invalid_json');
});

test('publish: missing user_id or a bad type is 422 invalid_event; a valid one goes through', T, async (t) => {
  const srv = await useServer(t);
  const c = await connectAs(srv, 'val');
  const bad = [
    { type: 'note' },
    { user_id: 'val' },
    { user_id: 'val', type: '' },
    { user_id: 'val', type: 'Note' },
    { user_id: 'val', type: '1note' },
    { user_id: 'val', type: '_note' },
    { user_id: 'val', type: 'no-te' },
    { user_id: 'val', type: 'no te' },
    { user_id: 'val', type: 'nöte' },
    { user_id: 'val', type: `a${'b'.repeat(64)}` },
    { user_id: 'val', type: 7 },
    { user_id: 7, type: 'note' },
  ];
  for (const ev of bad) assertError(await api(srv, 'POST', '/api/v1/publish', ev), 422, 'invalid_event');
  // a JSON value that is not an object is no event either
  for (const body of ['[]', '"note"', '42']) {
    const res = await api(srv, 'POST', '/api/v1/publish', body);
    assert.ok([400, 422].includes(res.status), `${body}: ${res.status} ${res.text}`);
  }
  // the longest valid type (64 chars) and underscores/digits are fine
  const longest = `a${'b_9'.repeat(21)}`;
  assert.equal(longest.length, 64);
  const ok = await publish(srv, { user_id: 'val', type: longest });
  assert.equal(ok.seq, 1, 'refused events must not take a seq');
  const ev = await c.nextMessage((m) => m.type === longest);
  assert.equal(ev.seq, 1);
  await c.sync();
  assert.equal(c.events().length, 1);
});

/* ---------------- the five agent events ---------------- */

test('agent events with their required fields are accepted and delivered in order', T, async (t) => {
  const srv = await useServer(t);
  const c = await connectAs(srv, 'agent-user');
  const ids = { user_id: 'agent-user', thread_id: 'th_1', run_id: 'run_1' };
  const run = [
    { type: 'agent_started', agent_name: 'demo' },
    { type: 'agent_thinking', reasoning: 'let me count' },
    { type: 'tool_executing', tool_name: 'word_count', parameters: { text: 'a b c' } },
    { type: 'tool_completed', tool_name: 'word_count', results: { words: 3 }, duration: 12.5 },
    { type: 'agent_completed', status: 'success', final_response: 'three words' },
  ];
  const seqs = [];
  for (const ev of run) {
    const res = await api(srv, 'POST', '/api/v1/publish', { ...ids, ...ev });
    assert.equal(res.status, 200, `${ev.type}: ${res.status} ${res.text}`);
    seqs.push(res.json.seq);
  }
  assert.deepEqual(seqs, [1, 2, 3, 4, 5]);
  const got = await c.nextMessages(5, (m) => typeof m.seq === 'number');
  assert.deepEqual(got.map((e) => e.type), run.map((e) => e.type));
  for (const e of got) {
    assert.equal(e.thread_id, 'th_1');
    assert.equal(e.run_id, 'run_1');
  }
  assert.deepEqual(got[2].parameters, { text: 'a b c' });
  assert.deepEqual(got[3].results, { words: 3 });
  assert.equal(got[3].duration, 12.5);
  assert.equal(got[4].final_response, 'three words');
});

test('agent events missing a required field, or with a wrong type, are 422 invalid_event', T, async (t) => {
  const srv = await useServer(t);
  const c = await connectAs(srv, 'agent-bad');
  const ids = { user_id: 'agent-bad', thread_id: 'th_b', run_id: 'run_b' };
  // open a run with a tool call in flight, so that only the fields can be wrong
  for (const ev of [
    { type: 'agent_started', agent_name: 'demo' },
    { type: 'tool_executing', tool_name: 'calc', parameters: { expr: '1+1' } },
  ]) {
    const res = await api(srv, 'POST', '/api/v1/publish', { ...ids, ...ev });
    assert.equal(res.status, 200, `${ev.type}: ${res.text}`);
  }
  const bad = {
    'agent_started without agent_name': { ...ids, run_id: 'run_b2', type: 'agent_started' },
    'agent_started with an empty agent_name': { ...ids, run_id: 'run_b3', type: 'agent_started', agent_name: '' },
    'agent_started without thread_id': { user_id: 'agent-bad', run_id: 'run_b4', type: 'agent_started', agent_name: 'x' },
    'agent_started without run_id': { user_id: 'agent-bad', thread_id: 'th_b', type: 'agent_started', agent_name: 'x' },
    'agent_started with an empty run_id': { ...ids, run_id: '', type: 'agent_started', agent_name: 'x' },
    'agent_thinking without reasoning': { ...ids, type: 'agent_thinking' },
    'agent_thinking with a numeric reasoning': { ...ids, type: 'agent_thinking', reasoning: 5 },
    'tool_executing without parameters': { ...ids, type: 'tool_executing', tool_name: 'calc' },
    'tool_executing with string parameters': { ...ids, type: 'tool_executing', tool_name: 'calc', parameters: '1+1' },
    'tool_executing without tool_name': { ...ids, type: 'tool_executing', parameters: {} },
    'tool_completed with a string duration': { ...ids, type: 'tool_completed', tool_name: 'calc', results: 2, duration: '12' },
    'tool_completed without duration': { ...ids, type: 'tool_completed', tool_name: 'calc', results: 2 },
    'tool_completed without results': { ...ids, type: 'tool_completed', tool_name: 'calc', duration: 3 },
    'agent_completed with an unknown status': { ...ids, type: 'agent_completed', status: 'done', final_response: 'x' },
    'agent_completed without final_response': { ...ids, type: 'agent_completed', status: 'success' },
    'agent_completed with a numeric final_response': { ...ids, type: 'agent_completed', status: 'success', final_response: 1 },
    'agent_completed without status': { ...ids, type: 'agent_completed', final_response: 'x' },
  };
  for (const [what, ev] of Object.entries(bad)) {
    const res = await api(srv, 'POST', '/api/v1/publish', ev);
    assert.equal(res.status, 422, `${what}: ${res.status} ${res.text}`);
    assert.equal(res.json?.error, 'invalid_event', `${what}: ${res.text}`);
  }
  // the run goes on: the valid completion pair is accepted after all those refusals
  for (const ev of [
    { type: 'tool_completed', tool_name: 'calc', results: 2, duration: 3 },
    { type: 'agent_completed', status: 'success', final_response: '2' },
  ]) {
    const res = await api(srv, 'POST', '/api/v1/publish', { ...ids, ...ev });
    assert.equal(res.status, 200, `${ev.type}: ${res.text}`);
  }
  const evs = await c.nextMessages(4, (m) => typeof m.seq === 'number');
  assert.deepEqual(evs.map((e) => e.seq), [1, 2, 3, 4]);
  await c.sync();
  assert.equal(c.events().length, 4, 'a refused event was delivered');
});

/* ---------------- connections and disconnect ---------------- */

test('GET /api/v1/users/{id}/connections lists that user\'s live connections', T, async (t) => {
  const srv = await useServer(t);
  const a1 = await connectAs(srv, 'lister');
  const a2 = await connectAs(srv, 'lister');
  await connectAs(srv, 'someone-else');
  const res = await api(srv, 'GET', '/api/v1/users/lister/connections');
  assert.equal(res.status, 200, res.text);
  assert.equal(res.json.user_id, 'lister');
  assert.ok(Array.isArray(res.json.connections));
  assert.deepEqual(
    res.json.connections.map((c) => c.connection_id).sort(),
    [a1.hello.connection_id, a2.hello.connection_id].sort(),
  );
  const none = await api(srv, 'GET', '/api/v1/users/nobody/connections');
  assert.equal(none.status, 200, none.text);
  assert.deepEqual(none.json, { user_id: 'nobody', connections: [] });
  // a closed connection leaves the list
  await a1.close();
  await pollUntil(async () => {
    const r = await api(srv, 'GET', '/api/v1/users/lister/connections');
    return r.json.connections.length === 1 && r.json.connections[0].connection_id === a2.hello.connection_id;
  }, { what: 'the closed connection to leave the list' });
});

test('user ids with reserved characters round-trip through the path', T, async (t) => {
  const srv = await useServer(t);
  const id = 'mail@example.com:a b+c';
  const c = await connectAs(srv, id);
  const res = await api(srv, 'GET', `/api/v1/users/${encodeURIComponent(id)}/connections`);
  assert.equal(res.status, 200, res.text);
  assert.equal(res.json.user_id, id);
  assert.deepEqual(res.json.connections.map((x) => x.connection_id), [c.hello.connection_id]);
});

test('POST /api/v1/users/{id}/disconnect closes that user\'s connections with 4002, only those', T, async (t) => {
  const srv = await useServer(t);
  const a1 = await connectAs(srv, 'kicked');
  const a2 = await connectAs(srv, 'kicked');
  const b = await connectAs(srv, 'bystander');
  const res = await api(srv, 'POST', '/api/v1/users/kicked/disconnect');
  assert.equal(res.status, 200, res.text);
  assert.deepEqual(res.json, { user_id: 'kicked', disconnected: 2 });
  for (const c of [a1, a2]) {
    const info = await c.waitClose();
    assert.equal(info.code, 4002);
    assert.equal(info.reason, 'disconnected');
  }
  await b.sync();
  assert.ok(b.isOpen);
  const again = await api(srv, 'POST', '/api/v1/users/kicked/disconnect');
  assert.equal(again.status, 200);
  assert.equal(again.json.disconnected, 0);
  await pollUntil(async () => (await api(srv, 'GET', '/api/v1/users/kicked/connections')).json.connections.length === 0,
    { what: 'kicked connections to leave the list' });
  // the user may connect again, and events still flow
  const back = await connectAs(srv, 'kicked');
  await publish(srv, { user_id: 'kicked', type: 'welcome_back' });
  assert.equal((await back.nextMessage('welcome_back')).user_id, 'kicked');
});

/* ---------------- errors ---------------- */

test('unknown routes are 404 not_found', T, async (t) => {
  const srv = await useServer(t);
  assertError(await api(srv, 'GET', '/api/v1/nope'), 404, 'not_found');
  assertError(await api(srv, 'POST', '/api/v1/publish/nope', {}), 404, 'not_found');
  assertError(await api(srv, 'GET', '/api/v1/users/x/nope'), 404, 'not_found');
  const res = await api(srv, 'GET', '/definitely-not-here', undefined, { key: null });
  assert.equal(res.status, 404);
});

test('a body over the limit is 413 too_large', T, async (t) => {
  const srv = await useServer(t);
  // Announce 64 MiB (far above any default limit) and send the start of it. A
  // server may answer from the Content-Length alone; if it waits for more, send
  // the rest. Writing while the server answers and closes would race its reset,
  // so the rest goes in one write, only after a pause in which no answer came.
  const total = 64 * 1024 * 1024;
  const sock = await rawSocket(srv);
  let response = '';
  let onAnswer;
  const answered = new Promise((resolve) => { onAnswer = resolve; });
  const complete = () => {
    const i = response.indexOf('\r\n\r\n');
    const m = /content-length:\s*(\d+)/i.exec(response);
    return i >= 0 && m && response.length >= i + 4 + Number(m[1]);
  };
  sock.on('data', (c) => { response += c.toString('latin1'); if (complete()) onAnswer(response); });
  sock.on('close', () => onAnswer(response));
  sock.on('error', () => {}); // EPIPE/ECONNRESET once the server gave up on the body
  const prefix = '{"user_id":"big","type":"note","pad":"';
  sock.write(`POST /api/v1/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${srv.apiKey}\r\n` +
    `Content-Type: application/json\r\nContent-Length: ${total}\r\n\r\n${prefix}${'x'.repeat(65536)}`);
  const early = await Promise.race([answered, new Promise((r) => { const tm = setTimeout(() => r(null), 2000); answered.then(() => clearTimeout(tm)); })]);
  if (early === null && !sock.destroyed) sock.write('x'.repeat(total - prefix.length - 65536));
  const text = await withTimeout(answered, 10000, '413 answer');
  sock.destroy();
  assert.match(text, /^HTTP\/1\.[01] 413/, `expected 413, got ${JSON.stringify(text.slice(0, 200))}`);
  const body = JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4));
  assert.equal(body.error, 'too_large');
  // the server is fine afterwards, and nothing was published
  assert.equal((await api(srv, 'GET', '/healthz', undefined, { key: null })).status, 200);
  assert.equal((await publish(srv, { user_id: 'big', type: 'note' })).seq, 1);
});

test('HTTP keep-alive: two requests on one connection get two answers', T, async (t) => {
  const srv = await useServer(t);
  const sock = await rawSocket(srv);
  sock.on('error', () => {});
  let buf = '';
  let waiter = null;
  sock.on('data', (c) => { buf += c.toString('latin1'); if (waiter) waiter(); });
  const readResponse = () => withTimeout(new Promise((resolve) => {
    const check = () => {
      const i = buf.indexOf('\r\n\r\n');
      const m = /content-length:\s*(\d+)/i.exec(buf.slice(0, i));
      if (i >= 0 && m && buf.length >= i + 4 + Number(m[1])) {
        const end = i + 4 + Number(m[1]);
        const res = buf.slice(0, end);
        buf = buf.slice(end);
        waiter = null;
        resolve(res);
      }
    };
    waiter = check;
    check();
  }), 5000, 'a keep-alive response');
  sock.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
  assert.match(await readResponse(), /^HTTP\/1\.1 200/);
  sock.write(`POST /api/v1/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${srv.apiKey}\r\n` +
    'Content-Type: application/json\r\nContent-Length: 32\r\n\r\n{"user_id":"ka","type":"note_1"}');
  const second = await readResponse();
  assert.match(second, /^HTTP\/1\.1 200/);
  assert.equal(JSON.parse(second.slice(second.indexOf('\r\n\r\n') + 4)).seq, 1);
});

test('batches of changing sizes, one after another on one keep-alive connection: each event arrives with exactly its own fields', T, async (t) => {
  const srv = await useServer(t);
  const ws = await connectAs(srv, 'sizes');
  // large, small, larger, tiny: the texts of a batch reuse the buffer of the one before
  const plan = [[40, 50000, 'a'], [3, 10, 'b'], [12, 70000, 'c'], [1, 1, 'd'], [5, 3000, 'e']];
  const sent = [];
  for (const [n, bytes, ch] of plan) {
    const batch = [];
    for (let i = 0; i < n; i++) {
      const ev = { user_id: 'sizes', type: 'note', k: `${ch}${i}`, pad: ch.repeat(bytes - (i % 7)) };
      batch.push(ev);
      sent.push(ev);
    }
    const res = await api(srv, 'POST', '/api/v1/publish/batch', batch, { keepAlive: true });
    assert.equal(res.status, 200, JSON.stringify(res.json).slice(0, 300));
    assert.equal(res.json.length, n);
  }
  const got = await ws.nextMessages(sent.length, (m) => m.type === 'note', 20000);
  for (let i = 0; i < sent.length; i++) {
    assert.equal(got[i].k, sent[i].k);
    assert.equal(got[i].pad, sent[i].pad, `event ${sent[i].k}: its pad differs`);
    assert.equal(got[i].seq, i + 1);
  }
});

/* ---------------- metrics ---------------- */

test('/metrics counts connections and published events', T, async (t) => {
  const srv = await useServer(t);
  const read = async () => {
    const res = await api(srv, 'GET', '/metrics', undefined, { key: null });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') || '', /^text\/plain/);
    return res.text;
  };
  const m0 = await read();
  const conns0 = metricValue(m0, 'agentwire_connections');
  const pub0 = metricValue(m0, 'agentwire_events_published_total');
  assert.ok(Number.isFinite(conns0), `agentwire_connections missing:\n${m0}`);
  assert.ok(Number.isFinite(pub0), `agentwire_events_published_total missing:\n${m0}`);
  assert.match(m0, /# TYPE agentwire_events_published_total counter/);

  const c1 = await connectAs(srv, 'metric-a');
  await connectAs(srv, 'metric-b');
  for (let i = 0; i < 3; i++) await publish(srv, { user_id: 'metric-a', type: 'm', i });
  await c1.nextMessages(3, 'm');
  const m1 = await read();
  assert.equal(metricValue(m1, 'agentwire_events_published_total') - pub0, 3);
  assert.equal(metricValue(m1, 'agentwire_connections') - conns0, 2);

  await c1.close();
  await pollUntil(async () => metricValue(await read(), 'agentwire_connections') === conns0 + 1,
    { what: 'agentwire_connections to drop after a close' });
  // refused publishes are not counted
  await api(srv, 'POST', '/api/v1/publish', { type: 'no_user' });
  assert.equal(metricValue(await read(), 'agentwire_events_published_total') - pub0, 3);
});
