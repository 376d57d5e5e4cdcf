#!/usr/bin/env node
// tail.mjs -- prints a user's agentwire events as JSON lines (stdout) and the
// connection's life (stderr), reconnecting and resuming as needed.
//
//   node clients/js/examples/tail.mjs --url ws://127.0.0.1:8080/ws --token $TOKEN
//   node clients/js/examples/tail.mjs --token $TOKEN --type agent_completed --type tool_completed
//
// Options: --url (default ws://127.0.0.1:8080/ws), --token (or env AGENTWIRE_TOKEN),
// --since N --epoch E (resume from a known position), --type T (repeatable filter).
// Ctrl-C closes cleanly.

import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { AgentwireClient } from '../agentwire.js';

const { values } = parseArgs({
  options: {
    url: { type: 'string', default: 'ws://127.0.0.1:8080/ws' },
    token: { type: 'string', default: process.env.AGENTWIRE_TOKEN },
    since: { type: 'string' },
    epoch: { type: 'string' },
    type: { type: 'string', multiple: true },
    help: { type: 'boolean', short: 'h' },
  },
});
if (values.help || !values.token) {
  process.stderr.write('usage: tail.mjs --url ws://HOST/ws --token JWT [--since N --epoch E] [--type T]...\n');
  process.exit(values.help ? 0 : 2);
}

const log = (...a) => process.stderr.write(`[agentwire] ${a.join(' ')}\n`);

const client = new AgentwireClient({
  url: values.url,
  // A fixed token works until it expires; then the client stops with a
  // token_expired error. A real app passes getToken: async () => fetchFreshToken()
  // instead, and gets refresh before expiry and renewal on reconnect.
  token: values.token,
  WebSocket,
  ...(values.since !== undefined && values.epoch ? { lastSeq: Number(values.since), epoch: values.epoch } : {}),
  onReset: ({ epoch, seq, previousEpoch, previousSeq }) => {
    log(`reset: could not resume ${previousEpoch}/${previousSeq}; stream continues at ${epoch}/${seq}`,
      '(an app would reload its state from GET /api/v1/history here)');
  },
});

client.on('open', (o) => log(`open ${o.connectionId} user=${o.userId} epoch=${o.epoch} seq=${o.seq}`,
  o.resumed ? `resumed, ${o.missed} missed event(s) follow` : ''));
client.on('close', (c) => log(`closed ${c.code} ${c.reason}`,
  c.willReconnect ? `- reconnecting in ${c.delayMs} ms` : '- not reconnecting'));
client.on('error', (e) => log(`error ${e.code || ''}: ${e.message}`));
client.on('refresh', (r) => log(`token refreshed, expires ${new Date(r.expiresAt).toISOString()}`));

const types = values.type ? new Set(values.type) : null;
client.on('event', (ev) => {
  if (!types || types.has(ev.type)) process.stdout.write(`${JSON.stringify(ev)}\n`);
});

process.on('SIGINT', async () => {
  log(`closing at epoch=${client.epoch} seq=${client.lastSeq} (resume later with --since ${client.lastSeq} --epoch ${client.epoch})`);
  await client.close();
  process.exit(0);
});

try {
  await client.connect();
} catch (err) {
  log(`giving up: ${err.message}`);
  process.exit(1);
}
