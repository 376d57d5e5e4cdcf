// Configuration: the flags the server reads, and refusing a bad configuration
// with a non-zero exit and a one-line reason on stderr.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { api, connectAs, runExpectExit, useServer } from './lib/harness.mjs';

const T = { timeout: 30000 };

function assertRefusedConfig(res, what) {
  assert.notEqual(res.code, 0, `${what}: expected a non-zero exit, got ${JSON.stringify({ code: res.code, signal: res.signal })}\n${res.stderr}`);
  assert.equal(res.signal, null, `${what}: the process died of a signal instead of exiting\n${res.stderr}`);
  const lines = res.stderr.split('\n').filter((l) => l.trim() !== '');
  assert.equal(lines.length, 1, `${what}: expected a one-line reason on stderr, got ${lines.length} line(s):\n${res.stderr}`);
}

const badConfigs = [
  ['an unknown JWT algorithm', ['--jwt-alg', 'XX256']],
  ['a listen address that is not HOST:PORT', ['--listen', 'nonsense']],
  ['a negative --max-message-bytes', ['--max-message-bytes', '-1']],
  ['a --max-message-bytes that is not a number', ['--max-message-bytes', 'lots']],
  ['a missing public key file', ['--jwt-public-key', '/nonexistent/agentwire-key.pem', '--jwt-alg', 'RS256']],
  ['an unknown flag', ['--no-such-flag', 'x']],
  ['an unknown log format', ['--log-format', 'xml']],
];

for (const [what, args] of badConfigs) {
  test(`refuses ${what}: non-zero exit, one-line reason`, T, async () => {
    const res = await runExpectExit(args);
    assertRefusedConfig(res, what);
  });
}

test('starts with the defaults, logs JSON lines and reports the configured limits', T, async (t) => {
  const srv = await useServer(t, ['--max-message-bytes', '4096', '--heartbeat-interval-ms', '7000']);
  const c = await connectAs(srv, 'cfg-user');
  assert.equal(c.hello.max_message_bytes, 4096);
  assert.equal(c.hello.heartbeat_interval_ms, 7000);
  await c.close();
  const health = await api(srv, 'GET', '/healthz', undefined, { key: null });
  assert.equal(health.status, 200);
  await srv.stop({ check: true });
  assert.ok(srv.logs.length >= 1);
  for (const entry of srv.logs) {
    assert.ok(!('unparsed' in entry), `--log-format json wrote a line that is not JSON: ${entry.unparsed}`);
    assert.equal(typeof entry.msg, 'string', `log line without a "msg" string: ${JSON.stringify(entry)}`);
  }
});

test('reports the default limits in connection_established', T, async (t) => {
  const srv = await useServer(t);
  const c = await connectAs(srv, 'cfg-defaults');
  assert.equal(c.hello.max_message_bytes, 65536);
  assert.equal(c.hello.heartbeat_interval_ms, 25000);
});
