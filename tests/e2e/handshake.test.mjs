// The upgrade: refusals and their order, where credentials are looked for,
// token verification, subprotocol answers, tickets and connection limits.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { test } from 'node:test';
import {
  api,
  b64url,
  connect,
  connectAs,
  connectReady,
  expectRefusal,
  generateKeys,
  nowS,
  rawHttp,
  runExpectExit,
  signHMAC,
  signHS256,
  signNone,
  signWith,
  tempFile,
  upgradeRequest,
  useServer,
  wsKeyPair,
} from './lib/harness.mjs';

const T = { timeout: 30000 };

function assertRefused(res, status, code) {
  assert.equal(res.status, status, `expected HTTP ${status} ${code}, got ${res.status}: ${res.text}`);
  assert.ok(res.body && typeof res.body === 'object', `refusal body is not JSON: ${JSON.stringify(res.text)}`);
  assert.equal(res.body.error, code, `refusal body: ${res.text}`);
  assert.equal(typeof res.body.message, 'string', `refusal body has no message: ${res.text}`);
}

const bearer = (tok) => ({ Authorization: `Bearer ${tok}` });

/* ---------------- first frame ---------------- */

test('connection_established is the first frame and carries the contract fields', T, async (t) => {
  const srv = await useServer(t);
  const before = Date.now();
  const c = await connectReady(srv.url, { headers: bearer(srv.token('alice')) });
  const after = Date.now();
  assert.equal(c.messages[0].data.type, 'connection_established', 'first frame must be connection_established');
  const h = c.hello;
  assert.equal(typeof h.connection_id, 'string');
  assert.ok(h.connection_id.length > 0);
  assert.equal(h.user_id, 'alice');
  assert.match(String(h.epoch), /^[A-Za-z0-9_-]{1,64}$/);
  assert.equal(h.seq, 0, 'a user with no events has seq 0');
  assert.equal(h.resumed, false);
  assert.equal(h.missed, 0);
  assert.equal(h.heartbeat_interval_ms, 25000);
  assert.equal(h.max_message_bytes, 65536);
  assert.equal(typeof h.server_time, 'number');
  assert.ok(h.server_time >= before - 2000 && h.server_time <= after + 2000, `server_time ${h.server_time} not near ${before}..${after}`);

  const c2 = await connectReady(srv.url, { headers: bearer(srv.token('alice')) });
  assert.notEqual(c2.hello.connection_id, h.connection_id, 'connection ids are unique');
  assert.equal(c2.hello.epoch, h.epoch, 'one user, one stream epoch');
});

test('the /api/v1/websocket alias upgrades like /ws', T, async (t) => {
  const srv = await useServer(t);
  const c = await connectReady(srv.wsUrl('', '/api/v1/websocket'), { headers: bearer(srv.token('alias-user')) });
  assert.equal(c.hello.user_id, 'alias-user');
});

test('a raw upgrade gets 101 with the RFC 6455 accept value', T, async (t) => {
  const srv = await useServer(t);
  const { key, accept } = wsKeyPair();
  const res = await rawHttp(srv, upgradeRequest({ key, headers: bearer(srv.token('raw-user')) }));
  assert.equal(res.status, 101, res.statusLine);
  assert.equal(res.headers['sec-websocket-accept'], accept);
  assert.equal(res.headers.upgrade?.toLowerCase(), 'websocket');
});

/* ---------------- refusals and their order ---------------- */

test('no credential: 401 unauthorized with a JSON body', T, async (t) => {
  const srv = await useServer(t);
  assertRefused(await expectRefusal(srv.url), 401, 'unauthorized');
});

test('Sec-WebSocket-Version 12 is 400 bad_handshake, before authentication', T, async (t) => {
  const srv = await useServer(t);
  assertRefused(await rawHttp(srv, upgradeRequest({ version: '12' })), 400, 'bad_handshake');
  // A valid token does not rescue a bad upgrade.
  assertRefused(await rawHttp(srv, upgradeRequest({ version: '12', headers: bearer(srv.token('v12')) })), 400, 'bad_handshake');
});

test('a missing Sec-WebSocket-Key is 400 bad_handshake', T, async (t) => {
  const srv = await useServer(t);
  assertRefused(await rawHttp(srv, upgradeRequest({ key: null })), 400, 'bad_handshake');
  assertRefused(await rawHttp(srv, upgradeRequest({ key: null, headers: bearer(srv.token('nokey')) })), 400, 'bad_handshake');
});

test('a GET /ws that is not an upgrade is 400 bad_handshake', T, async (t) => {
  const srv = await useServer(t);
  const res = await rawHttp(srv, `GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${srv.token('plain')}\r\n\r\n`);
  assertRefused(res, 400, 'bad_handshake');
});

test('Origin allow-list: 403 forbidden_origin, checked before credentials', T, async (t) => {
  const srv = await useServer(t, ['--allowed-origins', 'https://app.example,https://other.example']);
  const tok = srv.token('origin-user');
  // bad origin and no token: 403, not 401
  assertRefused(await expectRefusal(srv.url, { origin: 'https://evil.example' }), 403, 'forbidden_origin');
  // bad origin and a good token: still 403
  assertRefused(await expectRefusal(srv.url, { origin: 'https://evil.example', headers: bearer(tok) }), 403, 'forbidden_origin');
  // an allowed origin without a token: 401
  assertRefused(await expectRefusal(srv.url, { origin: 'https://app.example' }), 401, 'unauthorized');
  // both allowed origins work; no Origin (not a browser) is allowed too
  for (const origin of ['https://app.example', 'https://other.example', undefined]) {
    const c = await connectReady(srv.url, { origin, headers: bearer(tok) });
    assert.equal(c.hello.user_id, 'origin-user');
    await c.close();
  }
  // bad version, bad origin and no token: 400 comes first
  assertRefused(await rawHttp(srv, upgradeRequest({ version: '12', headers: { Origin: 'https://evil.example' } })), 400, 'bad_handshake');
});

test('without --allowed-origins every Origin is accepted', T, async (t) => {
  const srv = await useServer(t);
  const c = await connectReady(srv.url, { origin: 'https://anything.example', headers: bearer(srv.token('any-origin')) });
  assert.equal(c.hello.user_id, 'any-origin');
});

/* ---------------- where credentials are looked for ---------------- */

test('Authorization: Bearer header authenticates; sub becomes user_id', T, async (t) => {
  const srv = await useServer(t);
  const c = await connectAs(srv, 'header-user');
  assert.equal(c.hello.user_id, 'header-user');
});

test('?token= authenticates; a bad ?token= is 401', T, async (t) => {
  const srv = await useServer(t);
  const c = await connectReady(srv.wsUrl({ token: srv.token('query-user') }));
  assert.equal(c.hello.user_id, 'query-user');
  assertRefused(await expectRefusal(srv.wsUrl({ token: signHS256('wrong-secret', { sub: 'query-user' }) })), 401, 'unauthorized');
  assertRefused(await expectRefusal(srv.wsUrl({ token: 'not-a-jwt' })), 401, 'unauthorized');
});

test('Sec-WebSocket-Protocol jwt.<JWT>: accepted, and that entry is selected', T, async (t) => {
  const srv = await useServer(t);
  const entry = `jwt.${srv.token('sp-user')}`;
  const c = await connectReady(srv.url, { protocols: [entry] });
  assert.equal(c.hello.user_id, 'sp-user');
  assert.equal(c.ws.protocol, entry);
});

test('Sec-WebSocket-Protocol bearer.<base64url(JWT)>: accepted, and that entry is selected', T, async (t) => {
  const srv = await useServer(t);
  const entry = `bearer.${b64url(srv.token('sp-b64-user'))}`;
  assert.ok(!entry.slice('bearer.'.length).includes('.'));
  const c = await connectReady(srv.url, { protocols: ['chat.v1', entry] });
  assert.equal(c.hello.user_id, 'sp-b64-user');
  assert.equal(c.ws.protocol, entry);
});

test('Sec-WebSocket-Protocol bearer.<JWT> and jwt.<base64url(JWT)> work too', T, async (t) => {
  const srv = await useServer(t);
  for (const entry of [`bearer.${srv.token('sp-mix1')}`, `jwt.${b64url(srv.token('sp-mix2'))}`]) {
    const c = await connectReady(srv.url, { protocols: [entry] });
    assert.equal(c.ws.protocol, entry);
    await c.close();
  }
});

test('when jwt-auth is offered the server selects jwt-auth', T, async (t) => {
  const srv = await useServer(t);
  const c = await connectReady(srv.url, { protocols: ['jwt-auth', `jwt.${srv.token('sp-jwtauth')}`] });
  assert.equal(c.hello.user_id, 'sp-jwtauth');
  assert.equal(c.ws.protocol, 'jwt-auth');
  // also when the credential came from the Authorization header
  const c2 = await connectReady(srv.url, { protocols: ['jwt-auth'], headers: bearer(srv.token('sp-jwtauth')) });
  assert.equal(c2.ws.protocol, 'jwt-auth');
});

test('the server never selects a subprotocol it was not offered, nor one without the credential', T, async (t) => {
  const srv = await useServer(t);
  // header credential, an unrelated subprotocol offered: no Sec-WebSocket-Protocol in the 101
  const res = await rawHttp(srv, upgradeRequest({ headers: { ...bearer(srv.token('sp-none')), 'Sec-WebSocket-Protocol': 'chat.v1' } }));
  assert.equal(res.status, 101, res.statusLine);
  assert.equal(res.headers['sec-websocket-protocol'], undefined);
  // no subprotocol offered: none in the answer
  const res2 = await rawHttp(srv, upgradeRequest({ headers: bearer(srv.token('sp-none')) }));
  assert.equal(res2.status, 101, res2.statusLine);
  assert.equal(res2.headers['sec-websocket-protocol'], undefined);
});

test('the first place holding a credential decides: a bad one there is 401 even if a later place is good', T, async (t) => {
  const srv = await useServer(t);
  const good = srv.token('order-user');
  const bad = signHS256('not-the-secret', { sub: 'order-user' });
  // bad header, good subprotocol
  assertRefused(await expectRefusal(srv.url, { headers: bearer(bad), protocols: [`jwt.${good}`] }), 401, 'unauthorized');
  // bad header, good ?token
  assertRefused(await expectRefusal(srv.wsUrl({ token: good }), { headers: bearer(bad) }), 401, 'unauthorized');
  // bad subprotocol, good ?token
  assertRefused(await expectRefusal(srv.wsUrl({ token: good }), { protocols: [`jwt.${bad}`] }), 401, 'unauthorized');
  // bad ticket, good ?token
  assertRefused(await expectRefusal(srv.wsUrl({ ticket: 'no-such-ticket', token: good })), 401, 'unauthorized');
  // and the good one alone works in each place
  for (const opts of [{ headers: bearer(good) }, { protocols: [`jwt.${good}`] }]) {
    const c = await connectReady(srv.url, opts);
    assert.equal(c.hello.user_id, 'order-user');
    await c.close();
  }
});

/* ---------------- tickets ---------------- */

test('tickets: issued for a user JWT, authenticate once, second use is 401', T, async (t) => {
  const srv = await useServer(t);
  const userJwt = srv.token('ticket-user');
  const before = Date.now();
  const res = await api(srv, 'POST', '/api/v1/tickets', undefined, { key: userJwt });
  assert.equal(res.status, 200, res.text);
  assert.equal(typeof res.json.ticket, 'string');
  assert.ok(res.json.ticket.length >= 16, 'a ticket must not be guessable');
  assert.ok(!res.json.ticket.includes(userJwt), 'the ticket must not embed the JWT');
  assert.equal(typeof res.json.expires_at, 'number');
  assert.ok(res.json.expires_at > before && res.json.expires_at <= Date.now() + 120000, `expires_at ${res.json.expires_at} is not a time in ms in the next two minutes`);

  const url = srv.wsUrl({ ticket: res.json.ticket });
  const c = await connectReady(url);
  assert.equal(c.hello.user_id, 'ticket-user');
  assertRefused(await expectRefusal(url), 401, 'unauthorized');

  // Two tickets are distinct.
  const res2 = await api(srv, 'POST', '/api/v1/tickets', undefined, { key: userJwt });
  assert.equal(res2.status, 200);
  assert.notEqual(res2.json.ticket, res.json.ticket);
});

test('tickets: refused without a valid user JWT; unknown ticket is 401', T, async (t) => {
  const srv = await useServer(t);
  for (const key of [null, srv.apiKey, signHS256('wrong', { sub: 'x' }), srv.token('x', { exp: nowS() - 60 })]) {
    const res = await api(srv, 'POST', '/api/v1/tickets', undefined, { key });
    assert.equal(res.status, 401, `ticket with key ${String(key).slice(0, 20)}…: ${res.status} ${res.text}`);
    assert.equal(res.json?.error, 'unauthorized');
  }
  assertRefused(await expectRefusal(srv.wsUrl({ ticket: 'AAAAAAAAAAAAAAAAAAAAAAAA' })), 401, 'unauthorized');
});

/* ---------------- token verification ---------------- */

test('bad tokens are 401: signature, expiry, nbf, alg none, other alg, missing claims, garbage', T, async (t) => {
  const srv = await useServer(t);
  const s = srv.secret;
  const good = signHS256(s, { sub: 'tok-user' });
  const [h, p] = good.split('.');
  const cases = {
    'wrong signature': signHS256(`${s}x`, { sub: 'tok-user' }),
    'tampered payload': `${h}.${b64url(JSON.stringify({ sub: 'admin', exp: nowS() + 3600 }))}.${good.split('.')[2]}`,
    'expired (leeway 0)': signHS256(s, { sub: 'tok-user', exp: nowS() - 5 }),
    'nbf in the future': signHS256(s, { sub: 'tok-user', nbf: nowS() + 3600 }),
    'alg none': signNone({ sub: 'tok-user' }),
    'alg none with the good signature': `${b64url(JSON.stringify({ alg: 'none', typ: 'JWT' }))}.${p}.${good.split('.')[2]}`,
    'alg HS384': signHMAC('HS384', s, { sub: 'tok-user' }),
    'alg RS256': signWith('RS256', generateKeys('RS256').privateKey, { sub: 'tok-user' }),
    'missing sub': signHS256(s, { sub: undefined }),
    'empty sub': signHS256(s, { sub: '' }),
    'missing exp': signHS256(s, { sub: 'tok-user', exp: undefined }),
    'two parts': `${h}.${p}`,
    garbage: 'abc',
  };
  for (const [what, tok] of Object.entries(cases)) {
    const res = await expectRefusal(srv.url, { headers: bearer(tok) });
    assert.equal(res.status, 401, `${what}: expected 401, got ${res.status} ${res.text}`);
    assert.equal(res.body?.error, 'unauthorized', `${what}: ${res.text}`);
  }
  // controls: the good token, and an nbf in the past
  for (const tok of [good, signHS256(s, { sub: 'tok-user', nbf: nowS() - 10, iat: nowS() - 10 })]) {
    const c = await connectReady(srv.url, { headers: bearer(tok) });
    assert.equal(c.hello.user_id, 'tok-user');
    await c.close();
  }
});

test('the default exp leeway is 30 s; --jwt-leeway-s changes it', T, async (t) => {
  const srv = await useServer(t, [], {}, { omit: ['--jwt-leeway-s'] });
  const c = await connectReady(srv.url, { headers: bearer(srv.token('leeway', { exp: nowS() - 5 })) });
  assert.equal(c.hello.user_id, 'leeway');
  assertRefused(await expectRefusal(srv.url, { headers: bearer(srv.token('leeway', { exp: nowS() - 120 })) }), 401, 'unauthorized');
  // nbf a little in the future is within the leeway too
  const c2 = await connectReady(srv.url, { headers: bearer(srv.token('leeway', { nbf: nowS() + 5 })) });
  assert.equal(c2.hello.user_id, 'leeway');

  const srv2 = await useServer(t, ['--jwt-leeway-s', '300']);
  const c3 = await connectReady(srv2.url, { headers: bearer(srv2.token('leeway', { exp: nowS() - 120 })) });
  assert.equal(c3.hello.user_id, 'leeway');
});

test('--jwt-issuer and --jwt-audience are enforced', T, async (t) => {
  const srv = await useServer(t, ['--jwt-issuer', 'https://issuer.example', '--jwt-audience', 'agentwire']);
  const ok = [
    { iss: 'https://issuer.example', aud: 'agentwire' },
    { iss: 'https://issuer.example', aud: ['other', 'agentwire'] },
  ];
  for (const claims of ok) {
    const c = await connectReady(srv.url, { headers: bearer(srv.token('iss-user', claims)) });
    assert.equal(c.hello.user_id, 'iss-user', JSON.stringify(claims));
    await c.close();
  }
  const bad = [
    { iss: 'https://evil.example', aud: 'agentwire' },
    { aud: 'agentwire' },
    { iss: 'https://issuer.example', aud: 'other' },
    { iss: 'https://issuer.example', aud: ['other', 'more'] },
    { iss: 'https://issuer.example' },
  ];
  for (const claims of bad) {
    const res = await expectRefusal(srv.url, { headers: bearer(srv.token('iss-user', claims)) });
    assert.equal(res.status, 401, `${JSON.stringify(claims)}: ${res.status} ${res.text}`);
  }
});

for (const alg of ['RS256', 'ES256', 'EdDSA']) {
  test(`${alg} with --jwt-public-key: good token accepted, forged and confused tokens refused`, T, async (t) => {
    const keys = generateKeys(alg);
    const pemFile = tempFile(t, 'public.pem', keys.publicPem);
    const srv = await useServer(t, ['--jwt-public-key', pemFile, '--jwt-alg', alg]);

    const good = signWith(alg, keys.privateKey, { sub: `${alg}-user` });
    const c = await connectReady(srv.url, { headers: bearer(good) });
    assert.equal(c.hello.user_id, `${alg}-user`);
    await c.close();
    const c2 = await connectReady(srv.url, { protocols: [`jwt.${good}`] });
    assert.equal(c2.hello.user_id, `${alg}-user`);
    await c2.close();

    const other = generateKeys(alg);
    const otherAlg = alg === 'RS256' ? 'ES256' : 'RS256';
    const cases = {
      'signed by another key': signWith(alg, other.privateKey, { sub: `${alg}-user` }),
      'HS256 keyed with the public PEM (alg confusion)': signHS256(keys.publicPem, { sub: `${alg}-user` }),
      [`header alg ${otherAlg}`]: signWith(otherAlg, generateKeys(otherAlg).privateKey, { sub: `${alg}-user` }),
      'alg none': signNone({ sub: `${alg}-user` }),
      expired: signWith(alg, keys.privateKey, { sub: `${alg}-user`, exp: nowS() - 5 }),
    };
    if (alg === 'ES256') cases['DER-encoded signature'] = signWith('ES256', keys.privateKey, { sub: 'ES256-user' }, { dsaEncoding: 'der' });
    for (const [what, tok] of Object.entries(cases)) {
      const res = await expectRefusal(srv.url, { headers: bearer(tok) });
      assert.equal(res.status, 401, `${alg} ${what}: expected 401, got ${res.status} ${res.text}`);
    }
  });
}

test('a public key of the wrong type for --jwt-alg is a configuration error', T, async (t) => {
  const pemFile = tempFile(t, 'ec.pem', generateKeys('ES256').publicPem);
  const res = await runExpectExit(['--jwt-public-key', pemFile, '--jwt-alg', 'RS256']);
  assert.notEqual(res.code, 0, res.stderr);
  assert.ok(res.stderr.trim().length > 0);
});

/* ---------------- connection limits ---------------- */

test('per-user limit: the (N+1)th connection is 429; others and freed slots still connect', T, async (t) => {
  const srv = await useServer(t, ['--max-connections-per-user', '2']);
  const a = await connectAs(srv, 'limited');
  const b = await connectAs(srv, 'limited');
  assertRefused(await expectRefusal(srv.url, { headers: bearer(srv.token('limited')) }), 429, 'too_many_connections');
  // 401 is checked before 429
  assertRefused(await expectRefusal(srv.url, { headers: bearer(signHS256('bad', { sub: 'limited' })) }), 401, 'unauthorized');
  // another user is not affected
  const other = await connectAs(srv, 'unlimited-other');
  assert.equal(other.hello.user_id, 'unlimited-other');
  // a closed connection frees its slot
  await a.close();
  const c = await connectAs(srv, 'limited');
  assert.equal(c.hello.user_id, 'limited');
  assert.ok(b.isOpen);
});

test('the default per-user limit is 10', T, async (t) => {
  const srv = await useServer(t);
  const conns = [];
  for (let i = 0; i < 10; i++) conns.push(await connectAs(srv, 'ten'));
  assertRefused(await expectRefusal(srv.url, { headers: bearer(srv.token('ten')) }), 429, 'too_many_connections');
  assert.ok(conns.every((c) => c.isOpen));
});

test('--max-connections-per-ip 2: the third connection from 127.0.0.1 is 429', T, async (t) => {
  const srv = await useServer(t, ['--max-connections-per-ip', '2']);
  await connectAs(srv, 'ip-a');
  await connectAs(srv, 'ip-b');
  assertRefused(await expectRefusal(srv.url, { headers: bearer(srv.token('ip-c')) }), 429, 'too_many_connections');
});

/* ---------------- secrets stay out of the logs ---------------- */

test('tokens from the header and the subprotocol never appear in the logs', T, async (t) => {
  const srv = await useServer(t, ['--log-level', 'debug']);
  const t1 = srv.token('log-user', { jti: crypto.randomUUID() });
  const t2 = srv.token('log-user', { jti: crypto.randomUUID() });
  const c1 = await connectReady(srv.url, { headers: bearer(t1) });
  const c2 = await connectReady(srv.url, { protocols: ['jwt-auth', `bearer.${b64url(t2)}`] });
  await c1.sync();
  await c2.sync();
  await expectRefusal(srv.url, { protocols: [`jwt.${t1}x`] });
  await srv.stop({ check: true });
  for (const tok of [t1, t2]) {
    const sig = tok.split('.')[2];
    assert.ok(!srv.stderr.includes(sig), 'a token signature was logged');
    assert.ok(!srv.stderr.includes(b64url(tok).slice(0, 60)), 'a base64url token was logged');
  }
});
