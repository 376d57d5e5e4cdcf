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
import { WebSocket, WebSocketServer } from 'ws';
import { makeApiKeyChecker, makeJwtVerifier } from './jwt.mjs';
import { makeRequestHandler, parsePeerOptions } from './publish.mjs';

const USAGE = `usage: node ws-server.mjs --jwt-secret S --api-key K [--port 0] [--host 127.0.0.1]
  [--max-payload 65536] [--max-body-bytes 4194304] [--max-batch 1000]
  [--max-buffered-bytes 1048576 (0: no limit)] [--heartbeat-ms 25000] [--backlog 1024]`;


const opts = parsePeerOptions(process.argv.slice(2), USAGE, {
  'max-buffered-bytes': ['maxBufferedBytes', 1048576, 0, 2 ** 40],
  'heartbeat-ms': ['heartbeatMs', 25000, 1000, 2 ** 31 - 1],
});
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

const onRequest = makeRequestHandler({
  checkApiKey, maxBodyBytes: opts.maxBodyBytes, maxBatch: opts.maxBatch, deliver,
});

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
