#!/usr/bin/env node
// Benchmark peer: per-user event fan-out over WebSocket on Node's `ws`.
//
//   node bench/peers/ws-server.mjs --port 0 --jwt-secret S --api-key K
//
//   GET  /ws?token=JWT      subscribe as the token's sub (HS256; 401 otherwise)
//   GET  /echo?token=JWT    every message is sent back unchanged
//   POST /publish           one event object with a string user_id
//   POST /publish/batch     a JSON array of such objects
//                           (both need 'Authorization: Bearer K'; answer {"published":N})
//
// Prints {"listening":true,"port":P} on stdout once listening. Single process:
// fan-out to a user needs every socket of that user in this process.
import http from 'node:http';
import { parseArgs } from 'node:util';
import { WebSocket, WebSocketServer } from 'ws';
import { makeApiKeyChecker, makeJwtVerifier } from './jwt.mjs';

const USAGE = `usage: node ws-server.mjs --jwt-secret S --api-key K [--port 0] [--host 127.0.0.1]
  [--max-payload 65536] [--max-body-bytes 4194304] [--max-batch 1000]
  [--max-buffered-bytes 1048576 (0: no limit)] [--heartbeat-ms 25000] [--backlog 1024]`;

function parseOptions(argv) {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      options: {
        port: { type: 'string', default: '0' },
        host: { type: 'string', default: '127.0.0.1' },
        'jwt-secret': { type: 'string' },
        'api-key': { type: 'string' },
        'max-payload': { type: 'string', default: '65536' },
        'max-body-bytes': { type: 'string', default: '4194304' },
        'max-batch': { type: 'string', default: '1000' },
        'max-buffered-bytes': { type: 'string', default: '1048576' },
        'heartbeat-ms': { type: 'string', default: '25000' },
        backlog: { type: 'string', default: '1024' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    process.stderr.write(`${err.message}\n${USAGE}\n`);
    process.exit(2);
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const int = (name, min, max) => {
    const n = Number(values[name]);
    if (!Number.isInteger(n) || n < min || n > max) {
      process.stderr.write(`--${name}: expected an integer in [${min}, ${max}]\n${USAGE}\n`);
      process.exit(2);
    }
    return n;
  };
  if (!values['jwt-secret'] || !values['api-key']) {
    process.stderr.write(`--jwt-secret and --api-key are required\n${USAGE}\n`);
    process.exit(2);
  }
  return {
    port: int('port', 0, 65535),
    host: values.host,
    jwtSecret: values['jwt-secret'],
    apiKey: values['api-key'],
    maxPayload: int('max-payload', 1, 2 ** 30),
    maxBodyBytes: int('max-body-bytes', 1, 2 ** 30),
    maxBatch: int('max-batch', 1, 1e6),
    maxBufferedBytes: int('max-buffered-bytes', 0, 2 ** 40),
    heartbeatMs: int('heartbeat-ms', 1000, 2 ** 31 - 1),
    backlog: int('backlog', 1, 65535),
  };
}

const opts = parseOptions(process.argv.slice(2));
const verifyJwt = makeJwtVerifier(opts.jwtSecret);
const checkApiKey = makeApiKeyChecker(opts.apiKey);

/** @type {Map<string, Set<WebSocket>>} user id -> that user's open subscriber sockets */
const users = new Map();

function addSubscriber(user, ws) {
  let set = users.get(user);
  if (set === undefined) {
    set = new Set();
    users.set(user, set);
  }
  set.add(ws);
}

function removeSubscriber(user, ws) {
  const set = users.get(user);
  if (set === undefined) return;
  set.delete(ws);
  if (set.size === 0) users.delete(user);
}

// Serializes the event once and writes the same string to every socket of its
// user. A socket whose send buffer is over the limit is a consumer that cannot
// keep up; it is cut off rather than allowed to grow without bound.
function deliver(event) {
  const set = users.get(event.user_id);
  if (set === undefined) return;
  const data = JSON.stringify(event);
  for (const ws of set) {
    if (ws.readyState !== WebSocket.OPEN) continue;
    if (opts.maxBufferedBytes > 0 && ws.bufferedAmount > opts.maxBufferedBytes) {
      ws.terminate();
      continue;
    }
    ws.send(data);
  }
}

function isEvent(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && typeof v.user_id === 'string' && v.user_id !== '';
}

function sendJson(res, status, body, extraHeaders) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(text),
    ...extraHeaders,
  });
  res.end(text);
}

function readBody(req, limit) {
  return new Promise((resolve, reject) => {
    const declared = req.headers['content-length'];
    if (declared !== undefined && Number(declared) > limit) {
      reject(Object.assign(new Error('request body too large'), { status: 413 }));
      return;
    }
    const chunks = [];
    let size = 0;
    let failed = false;
    req.on('data', (chunk) => {
      if (failed) return;
      size += chunk.length;
      if (size > limit) {
        failed = true;
        chunks.length = 0;
        reject(Object.assign(new Error('request body too large'), { status: 413 }));
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (!failed) resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size));
    });
    req.on('error', (err) => {
      if (!failed) {
        failed = true;
        reject(err);
      }
    });
  });
}

async function handlePublish(req, res, batch) {
  if (!checkApiKey(req.headers.authorization)) {
    sendJson(res, 401, { error: 'unauthorized' }, { 'WWW-Authenticate': 'Bearer' });
    return;
  }
  let body;
  try {
    body = await readBody(req, opts.maxBodyBytes);
  } catch (err) {
    if (err.status === 413) sendJson(res, 413, { error: 'request body too large' }, { Connection: 'close' });
    else req.destroy();
    return;
  }
  let parsed;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    sendJson(res, 400, { error: 'invalid JSON' });
    return;
  }
  if (batch) {
    if (!Array.isArray(parsed) || parsed.length > opts.maxBatch || !parsed.every(isEvent)) {
      sendJson(res, 400, { error: `expected a JSON array of at most ${opts.maxBatch} objects with a string user_id` });
      return;
    }
    for (const event of parsed) deliver(event);
    sendJson(res, 200, { published: parsed.length });
  } else {
    if (!isEvent(parsed)) {
      sendJson(res, 400, { error: 'expected a JSON object with a string user_id' });
      return;
    }
    deliver(parsed);
    sendJson(res, 200, { published: 1 });
  }
}

function onRequest(req, res) {
  const q = req.url.indexOf('?');
  const path = q === -1 ? req.url : req.url.slice(0, q);
  if (path === '/publish' || path === '/publish/batch') {
    if (req.method !== 'POST') {
      sendJson(res, 405, { error: 'method not allowed' }, { Allow: 'POST' });
      return;
    }
    handlePublish(req, res, path === '/publish/batch').catch((err) => {
      process.stderr.write(`publish failed: ${err.stack ?? err}\n`);
      if (!res.headersSent) sendJson(res, 500, { error: 'internal error' });
      else res.destroy();
    });
    return;
  }
  if (path === '/healthz' && req.method === 'GET') {
    sendJson(res, 200, { ok: true });
    return;
  }
  sendJson(res, 404, { error: 'not found' });
}

const server = http.createServer({ noDelay: true }, onRequest);
server.keepAliveTimeout = 65_000;
server.headersTimeout = 66_000;

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: opts.maxPayload });

function rejectUpgrade(socket, status, reason) {
  socket.end(`HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
}

function onUpgradeSocketError() {
  // A socket that errors before the handshake completes is simply dropped.
}

server.on('upgrade', (req, socket, head) => {
  socket.on('error', onUpgradeSocketError);
  let url;
  try {
    url = new URL(req.url, 'http://localhost');
  } catch {
    rejectUpgrade(socket, 400, 'Bad Request');
    return;
  }
  const kind = url.pathname === '/ws' ? 'subscriber' : url.pathname === '/echo' ? 'echo' : null;
  if (kind === null) {
    rejectUpgrade(socket, 404, 'Not Found');
    return;
  }
  let token = url.searchParams.get('token');
  const auth = req.headers.authorization;
  if (!token && typeof auth === 'string' && auth.startsWith('Bearer ')) token = auth.slice(7);
  const claims = verifyJwt(token);
  if (claims === null) {
    rejectUpgrade(socket, 401, 'Unauthorized');
    return;
  }
  socket.removeListener('error', onUpgradeSocketError);
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.isAlive = true;
    ws.on('pong', heartbeatAck);
    ws.on('error', () => {});
    if (kind === 'echo') {
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
      return;
    }
    const user = claims.sub;
    addSubscriber(user, ws);
    ws.on('close', () => removeSubscriber(user, ws));
  });
});

function heartbeatAck() {
  this.isAlive = true;
}

const heartbeat = setInterval(() => {
  for (const ws of wss.clients) {
    if (ws.isAlive === false) {
      ws.terminate();
      continue;
    }
    ws.isAlive = false;
    ws.ping();
  }
}, opts.heartbeatMs);

let stopping = false;
function shutdown() {
  if (stopping) return;
  stopping = true;
  clearInterval(heartbeat);
  server.close();
  for (const ws of wss.clients) ws.close(1001, 'server shutting down');
  server.closeAllConnections();
  const force = setTimeout(() => {
    for (const ws of wss.clients) ws.terminate();
    process.exit(0);
  }, 2000);
  force.unref();
  // The callback runs once every client socket has closed.
  wss.close(() => process.exit(0));
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

server.on('error', (err) => {
  process.stderr.write(`ws-server: ${err.message}\n`);
  process.exit(1);
});
server.listen({ port: opts.port, host: opts.host, backlog: opts.backlog }, () => {
  process.stdout.write(`${JSON.stringify({ listening: true, port: server.address().port })}\n`);
});
