// jwks.test.mjs -- keys from an identity provider: --jwks-url over HTTPS
// (a local server with its own CA, made by the test) and --jwks-file.
// RS256, ES256 and EdDSA keys chosen by kid; the algorithm pinned per key
// (none, confusion and a key's wrong algorithm refused); rotation while
// connections are open; unknown kids refresh the set, rate-limited; a
// failed refresh keeps the last good keys and says so; start-up without a
// usable key fails clearly; issuer and a list of audiences.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import test from 'node:test';

import {
  api, connectReady, expectRefusal, metricValue, nowS, pollUntil, runExpectExit, signNone, signWith, startServer,
} from './lib/harness.mjs';

// ---- a CA and a certificate for 127.0.0.1, made once ----
const pki = fs.mkdtempSync(path.join(os.tmpdir(), 'agentwire-jwks-pki-'));
process.on('exit', () => fs.rmSync(pki, { recursive: true, force: true }));
const P = (f) => path.join(pki, f);
const ssl = (...a) => execFileSync('openssl', a, { stdio: 'pipe' });
ssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', P('ca.key'),
  '-out', P('ca.pem'), '-subj', '/CN=agentwire test CA', '-days', '2');
ssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', P('srv.key'),
  '-out', P('srv.csr'), '-subj', '/CN=127.0.0.1');
fs.writeFileSync(P('ext.cnf'), 'subjectAltName=IP:127.0.0.1\n');
ssl('x509', '-req', '-in', P('srv.csr'), '-CA', P('ca.pem'), '-CAkey', P('ca.key'), '-CAcreateserial',
  '-out', P('srv.pem'), '-days', '2', '-extfile', P('ext.cnf'));

// ---- keys ----
function keyPair(alg, kid, jwkAlg = alg) {
  const kp = alg === 'RS256' ? crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
    : alg === 'ES256' ? crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' })
      : crypto.generateKeyPairSync('ed25519');
  const jwk = { ...kp.publicKey.export({ format: 'jwk' }), kid, use: 'sig' };
  if (jwkAlg) jwk.alg = jwkAlg;
  return { alg, kid, privateKey: kp.privateKey, jwk };
}
const token = (k, sub, claims = {}, header = {}) =>
  signWith(k.alg, k.privateKey, { sub, exp: nowS() + 600, ...claims }, { header: { kid: k.kid, ...header } });

// ---- the identity provider: an HTTPS server whose key set can change ----
async function idp(t, keys, { maxAge } = {}) {
  const state = { keys, requests: 0, down: false, maxAge };
  const server = https.createServer({ key: fs.readFileSync(P('srv.key')), cert: fs.readFileSync(P('srv.pem')) }, (req, res) => {
    state.requests++;
    if (state.down) { res.writeHead(500); res.end('down'); return; }
    const headers = { 'Content-Type': 'application/json' };
    if (state.maxAge !== undefined) headers['Cache-Control'] = `public, max-age=${state.maxAge}`;
    res.writeHead(200, headers);
    res.end(JSON.stringify({ keys: state.keys.map((k) => k.jwk ?? k) }));
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => new Promise((r) => { server.closeAllConnections?.(); server.close(r); }));
  state.url = `https://127.0.0.1:${server.address().port}/.well-known/jwks.json`;
  state.close = () => new Promise((r) => { server.closeAllConnections?.(); server.close(r); });
  return state;
}

const jwksArgs = (p, extra = []) => ['--jwks-url', p.url, '--jwks-ca-file', P('ca.pem'), ...extra];
const omit = { omit: ['--jwt-secret'] };

async function accepted(srv, tok) {
  const c = await connectReady(srv.url, { headers: { Authorization: `Bearer ${tok}` } });
  return c;
}
async function refused(srv, tok) {
  const r = await expectRefusal(srv.url, { headers: { Authorization: `Bearer ${tok}` } });
  assert.equal(r.status, 401, r.text);
  return r;
}
async function metrics(srv) {
  return (await api(srv, 'GET', '/metrics')).text;
}

test('RS256, ES256 and EdDSA keys from an HTTPS key set, chosen by kid; none, confusion and wrong algorithms refused', { timeout: 60000 }, async (t) => {
  const rsa = keyPair('RS256', 'rsa-1');
  const ec = keyPair('ES256', 'ec-1');
  const ed = keyPair('EdDSA', 'ed-1');
  const wrong = keyPair('ES256', 'ec-as-rsa', 'RS256'); // an EC key that says RS256: skipped
  const p = await idp(t, [rsa, ec, ed, wrong]);
  const srv = await startServer(jwksArgs(p), {}, omit);
  t.after(() => srv.stop());
  for (const k of [rsa, ec, ed]) {
    const c = await accepted(srv, token(k, `user_${k.kid}`));
    assert.equal(c.hello.user_id, `user_${k.kid}`);
    c.close();
  }
  assert.ok(srv.logs.some((l) => l.msg === 'key skipped' && l.kid === 'ec-as-rsa'), 'the mismatched key is logged');
  await refused(srv, token(wrong, 'x')); // its kid is not in use
  // a kid names a key of another algorithm: the header's alg must be the key's
  await refused(srv, signWith('ES256', ec.privateKey, { sub: 'x', exp: nowS() + 600 }, { header: { kid: 'rsa-1' } }));
  // HS256 with the RSA key's modulus as the secret (algorithm confusion)
  const h = Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'JWT', kid: 'rsa-1' })).toString('base64url');
  const b = Buffer.from(JSON.stringify({ sub: 'x', exp: nowS() + 600 })).toString('base64url');
  const mac = crypto.createHmac('sha256', Buffer.from(rsa.jwk.n, 'base64url')).update(`${h}.${b}`).digest('base64url');
  await refused(srv, `${h}.${b}.${mac}`);
  await refused(srv, signNone({ sub: 'x', exp: nowS() + 600 }));
  // signed by a key that is not in the set, under a kid that is
  await refused(srv, token({ ...keyPair('RS256', 'rsa-1') }, 'x'));
  // no kid with several keys: which one?
  await refused(srv, signWith('RS256', rsa.privateKey, { sub: 'x', exp: nowS() + 600 }));
  const ready = await api(srv, 'GET', '/readyz');
  assert.equal(ready.status, 200);
  assert.equal(ready.json.jwks.keys, 3);
  assert.equal(ready.json.jwks.fresh, true);
  assert.equal(metricValue(await metrics(srv), 'agentwire_jwks_keys'), 3);
});

test('rotation while connections are open: a new kid is fetched, a removed key stops working, open connections stay', { timeout: 60000 }, async (t) => {
  const k1 = keyPair('RS256', 'k1');
  const k2 = keyPair('ES256', 'k2');
  const p = await idp(t, [k1]);
  const srv = await startServer(jwksArgs(p, ['--jwks-min-interval-ms', '200']), {}, omit);
  t.after(() => srv.stop());
  const open = await accepted(srv, token(k1, 'rot'));
  p.keys = [k2]; // the provider rotates: k1 out, k2 in
  // the first token with k2 is refused (unknown kid) and makes the node fetch
  await refused(srv, token(k2, 'rot'));
  await pollUntil(async () => {
    const r = await expectRefusal(srv.url, { headers: { Authorization: `Bearer ${token(k1, 'rot')}` } }).catch(() => null);
    return r && r.status === 401;
  }, { timeoutMs: 15000, what: 'k1 gone after the refresh' });
  const c = await accepted(srv, token(k2, 'rot'));
  // the connection opened with k1 is still there and still delivered to
  await api(srv, 'POST', '/api/v1/publish', { user_id: 'rot', type: 'after_rotation' });
  await open.nextMessage((m) => m.type === 'after_rotation');
  await c.nextMessage((m) => m.type === 'after_rotation');
  open.close();
  c.close();
});

test('unknown kids refresh the set at most once per --jwks-min-interval-ms; a failed refresh keeps the last good keys and says so', { timeout: 60000 }, async (t) => {
  const k1 = keyPair('EdDSA', 'k1');
  const p = await idp(t, [k1]);
  const srv = await startServer(jwksArgs(p, ['--jwks-min-interval-ms', '3000']), {}, omit);
  t.after(() => srv.stop());
  const base = p.requests;
  const stranger = keyPair('EdDSA', 'nobody');
  for (let i = 0; i < 20; i++) await refused(srv, token(stranger, 'x'));
  await pollUntil(async () => metricValue(await metrics(srv), 'agentwire_jwks_refreshes_total') >= 2, { timeoutMs: 10000, what: 'one refresh' });
  for (let i = 0; i < 20; i++) await refused(srv, token(stranger, 'x'));
  assert.ok(p.requests - base <= 2, `twenty unknown kids made ${p.requests - base} fetches`);
  // the provider goes down: the next refresh fails, the keys stay
  p.down = true;
  await pollUntil(async () => {
    await refused(srv, token(stranger, 'x'));
    return metricValue(await metrics(srv), 'agentwire_jwks_refresh_failures_total') >= 1;
  }, { timeoutMs: 20000, intervalMs: 500, what: 'a failed refresh' });
  const ready = await api(srv, 'GET', '/readyz');
  assert.equal(ready.status, 200, 'the keys in use still verify');
  assert.equal(ready.json.jwks.fresh, false);
  assert.match(ready.json.jwks.error, /HTTP status 500/);
  assert.equal(metricValue(await metrics(srv), 'agentwire_jwks_up'), 0);
  assert.ok(srv.logs.some((l) => l.msg === 'cannot refresh the keys: keeping the last good ones'));
  (await accepted(srv, token(k1, 'still'))).close();
});

test('Cache-Control max-age drives the refresh', { timeout: 60000 }, async (t) => {
  const k1 = keyPair('RS256', 'k1');
  const p = await idp(t, [k1], { maxAge: 1 });
  const srv = await startServer(jwksArgs(p, ['--jwks-min-interval-ms', '500']), {}, omit);
  t.after(() => srv.stop());
  const base = p.requests;
  await pollUntil(() => p.requests >= base + 2, { timeoutMs: 15000, what: 'refreshes on max-age' });
  const k2 = keyPair('RS256', 'k2');
  p.keys = [k2];
  await pollUntil(async () => metricValue(await metrics(srv), 'agentwire_jwks_refreshes_total') >= 4, { timeoutMs: 15000, what: 'the new set read' });
  (await accepted(srv, token(k2, 'fresh'))).close();
});

test('start-up: no usable key, the provider down, a plain http URL or a certificate not trusted are clear errors', { timeout: 60000 }, async (t) => {
  const p = await idp(t, [keyPair('ES256', 'bad', 'EdDSA')]);
  let r = await runExpectExit(jwksArgs(p, ['--api-key', 'k']), { omit: ['--jwt-secret'] });
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /--jwks-url: no keys: .*no usable key in the set \(1 skipped; first: bad: EdDSA needs an Ed25519 public key\)/);
  // untrusted: no --jwks-ca-file
  r = await runExpectExit(['--jwks-url', p.url, '--api-key', 'k'], { omit: ['--jwt-secret'] });
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /--jwks-url: no keys: .*(certificate|SSL)/i);
  r = await runExpectExit(['--jwks-url', p.url.replace('https:', 'http:'), '--api-key', 'k'], { omit: ['--jwt-secret'] });
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /must be an https:\/\/ URL/);
  await p.close();
  r = await runExpectExit(jwksArgs(p, ['--api-key', 'k', '--jwks-timeout-ms', '2000']), { omit: ['--jwt-secret'] });
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /--jwks-url: no keys:/);
  r = await runExpectExit(['--jwks-file', '/nonexistent/jwks.json', '--api-key', 'k'], { omit: ['--jwt-secret'] });
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /--jwks-file: no keys: \/nonexistent\/jwks.json: cannot read it/);
  r = await runExpectExit(['--jwks-file', P('ca.pem'), '--jwt-secret', 's', '--api-key', 'k']);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /replace --jwt-secret/);
});

test('--jwks-file, read again when it changes; --jwt-issuer and a list of audiences', { timeout: 60000 }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentwire-jwks-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'jwks.json');
  const k1 = keyPair('ES256', 'f1');
  fs.writeFileSync(file, JSON.stringify({ keys: [k1.jwk] }));
  const srv = await startServer(['--jwks-file', file, '--jwks-min-interval-ms', '200', '--jwks-refresh-ms', '1000',
    '--jwt-issuer', 'https://idp.example', '--jwt-audience', 'agentwire,chat-api'], {}, omit);
  t.after(() => srv.stop());
  const claims = { iss: 'https://idp.example' };
  (await accepted(srv, token(k1, 'a', { ...claims, aud: 'chat-api' }))).close();
  (await accepted(srv, token(k1, 'a', { ...claims, aud: ['other', 'agentwire'] }))).close();
  await refused(srv, token(k1, 'a', { ...claims, aud: 'other' }));
  await refused(srv, token(k1, 'a', { aud: 'agentwire' })); // no iss
  const k2 = keyPair('EdDSA', 'f2');
  fs.writeFileSync(file, JSON.stringify({ keys: [k2.jwk] }));
  await pollUntil(async () => {
    const c = await connectReady(srv.url, { headers: { Authorization: `Bearer ${token(k2, 'b', { ...claims, aud: 'agentwire' })}` } }).catch(() => null);
    c?.close();
    return c !== null;
  }, { timeoutMs: 15000, intervalMs: 300, what: 'the changed file read' });
  await refused(srv, token(k1, 'a', { ...claims, aud: 'agentwire' }));
});
