// TLS end to end: https and wss with real clients, TLS 1.2 and 1.3, ALPN
// http/1.1, certificate reload on SIGHUP without dropping connections, and
// broken clients that do not take the server down.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, copyFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import https from 'node:https';
import tls from 'node:tls';
import net from 'node:net';
import WebSocket from 'ws';
import { useServer, runExpectExit, pollUntil, withTimeout } from './lib/harness.mjs';

const T = { timeout: 30000 };

function makeCert(dir, name) {
  const key = path.join(dir, `${name}.key`);
  const cert = path.join(dir, `${name}.crt`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=${name}`,
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' });
  return { key, cert, pem: execFileSync('cat', [cert]).toString() };
}

function tlsDir(t) {
  const dir = mkdtempSync(path.join(tmpdir(), 'aw-tls-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function request(srv, ca, method, p, body, opts = {}) {
  return withTimeout(new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port: srv.port, method, path: p, ca, servername: 'localhost', agent: false,
      headers: { Authorization: `Bearer ${srv.apiKey}`, 'Content-Type': 'application/json' }, ...opts }, (res) => {
      let data = '';
      res.on('data', (c) => (data += c));
      res.on('end', () => resolve({ status: res.statusCode, text: data, socket: res.socket }));
    });
    req.on('error', reject);
    req.end(body ? JSON.stringify(body) : undefined);
  }), 5000, `https ${method} ${p}`);
}

function peerCN(srv, ca) {
  return withTimeout(new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port: srv.port, ca, servername: 'localhost' }, () => {
      const cn = s.getPeerCertificate().subject.CN;
      s.destroy();
      resolve(cn);
    });
    s.on('error', reject);
  }), 5000, 'a TLS handshake');
}

async function tlsServer(t, extra = []) {
  const dir = tlsDir(t);
  const a = makeCert(dir, 'cert-a');
  const live = { cert: path.join(dir, 'live.crt'), key: path.join(dir, 'live.key') };
  copyFileSync(a.cert, live.cert);
  copyFileSync(a.key, live.key);
  const srv = await useServer(t, ['--tls-cert', live.cert, '--tls-key', live.key, ...extra]);
  return { srv, dir, a, live };
}

test('https API and /healthz over TLS 1.3 and TLS 1.2; TLS 1.1 is refused', T, async (t) => {
  const { srv, a } = await tlsServer(t);
  const h = await request(srv, a.pem, 'GET', '/healthz');
  assert.equal(h.status, 200);
  assert.equal(h.socket.getProtocol(), 'TLSv1.3');
  const h12 = await request(srv, a.pem, 'GET', '/readyz', undefined, { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' });
  assert.equal(h12.status, 200);
  assert.equal(h12.socket.getProtocol(), 'TLSv1.2');
  await assert.rejects(request(srv, a.pem, 'GET', '/healthz', undefined, { minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' }));
  const after = await request(srv, a.pem, 'GET', '/healthz');
  assert.equal(after.status, 200, 'still serving');
});

test('ALPN selects http/1.1 when offered and goes on without it otherwise', T, async (t) => {
  const { srv, a } = await tlsServer(t);
  const alpn = (protocols) => withTimeout(new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port: srv.port, ca: a.pem, servername: 'localhost', ALPNProtocols: protocols }, () => {
      const p = s.alpnProtocol;
      s.destroy();
      resolve(p);
    });
    s.on('error', reject);
  }), 5000, 'ALPN');
  assert.equal(await alpn(['h2', 'http/1.1']), 'http/1.1');
  assert.equal(await alpn(['h2']), false);
});

test('wss: connect with a token, receive a published event', T, async (t) => {
  const { srv, a } = await tlsServer(t);
  const ws = new WebSocket(`wss://127.0.0.1:${srv.port}/ws`, ['jwt-auth', `jwt.${srv.token('tls-u')}`], { ca: a.pem, servername: 'localhost' });
  const got = [];
  ws.on('message', (d) => got.push(JSON.parse(d)));
  t.after(() => ws.terminate());
  await withTimeout(new Promise((r, j) => { ws.once('open', r); ws.once('error', j); }), 5000, 'wss open');
  assert.equal(ws.protocol, 'jwt-auth');
  const r = await request(srv, a.pem, 'POST', '/api/v1/publish', { user_id: 'tls-u', type: 'note', text: 'x'.repeat(5000) });
  assert.equal(r.status, 200, r.text);
  await pollUntil(() => got.some((m) => m.type === 'note'), { timeoutMs: 5000, what: 'the event over wss' });
  assert.equal(got[0].type, 'connection_established');
  assert.equal(got.find((m) => m.type === 'note').text.length, 5000);
});

test('SIGHUP reloads the certificate; open connections keep working; a bad file keeps the old one', T, async (t) => {
  const { srv, dir, a, live } = await tlsServer(t);
  const b = makeCert(dir, 'cert-b');
  const ws = new WebSocket(`wss://127.0.0.1:${srv.port}/ws`, { ca: a.pem, servername: 'localhost', headers: { Authorization: `Bearer ${srv.token('hup')}` } });
  const got = [];
  ws.on('message', (d) => got.push(JSON.parse(d)));
  t.after(() => ws.terminate());
  await withTimeout(new Promise((r, j) => { ws.once('open', r); ws.once('error', j); }), 5000, 'wss open');
  assert.equal(await peerCN(srv, a.pem), 'cert-a');

  copyFileSync(b.cert, live.cert);
  copyFileSync(b.key, live.key);
  srv.signal('SIGHUP');
  await pollUntil(() => srv.logs.some((l) => l.msg === 'TLS certificate reloaded'), { timeoutMs: 5000, what: 'the reload log line' });
  assert.equal(await peerCN(srv, b.pem), 'cert-b', 'new connections get the new certificate');
  const r = await request(srv, b.pem, 'POST', '/api/v1/publish', { user_id: 'hup', type: 'note', n: 1 });
  assert.equal(r.status, 200);
  await pollUntil(() => got.some((m) => m.type === 'note'), { timeoutMs: 5000, what: 'an event on the connection made before the reload' });

  writeFileSync(live.cert, 'not a certificate');
  srv.signal('SIGHUP');
  await pollUntil(() => srv.logs.some((l) => l.msg === 'TLS reload failed; keeping the previous certificate'), { timeoutMs: 5000, what: 'the failed reload log line' });
  assert.equal(await peerCN(srv, b.pem), 'cert-b');
});

test('plaintext and garbage on the TLS port are dropped; everyone else is served', T, async (t) => {
  const { srv, a } = await tlsServer(t);
  const closed = (payload) => withTimeout(new Promise((resolve) => {
    const s = net.connect(srv.port, '127.0.0.1', () => s.write(payload));
    s.on('data', () => {});
    s.on('error', () => resolve());
    s.on('close', () => resolve());
  }), 5000, 'the server to drop a non-TLS client');
  await closed('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
  await closed(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]));
  const h = await request(srv, a.pem, 'GET', '/healthz');
  assert.equal(h.status, 200);
});

test('--tls-cert without --tls-key, or an unreadable certificate, exits 2 with a reason', T, async (t) => {
  const dir = tlsDir(t);
  const a = makeCert(dir, 'solo');
  const r1 = await runExpectExit(['--tls-cert', a.cert]);
  assert.equal(r1.code, 2);
  assert.match(r1.stderr, /--tls-cert and --tls-key go together/);
  const r2 = await runExpectExit(['--tls-cert', path.join(dir, 'missing.crt'), '--tls-key', a.key]);
  assert.equal(r2.code, 2);
  assert.match(r2.stderr, /--tls-cert/);
});
