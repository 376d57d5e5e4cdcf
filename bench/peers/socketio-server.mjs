#!/usr/bin/env node
// Benchmark peer: per-user event fan-out on Socket.IO v4 (WebSocket transport only).
//
//   node bench/peers/socketio-server.mjs --port 0 --jwt-secret S --api-key K
//
//   GET  /socket.io/?EIO=4&transport=websocket   then CONNECT with auth {"token":"<JWT>"};
//                           the socket joins the room named by the token's sub and receives
//                           each event as emit("event", event)
//   POST /publish           one event object with a string user_id
//   POST /publish/batch     a JSON array of such objects
//                           (both need 'Authorization: Bearer K'; answer {"published":N})
//
// Prints {"listening":true,"port":P} on stdout once listening. Single process:
// rooms live in this process's in-memory adapter.
import http from 'node:http';
import { Server } from 'socket.io';
import { makeApiKeyChecker, makeJwtVerifier } from './jwt.mjs';
import { makeRequestHandler, parsePeerOptions } from './publish.mjs';

const USAGE = `usage: node socketio-server.mjs --jwt-secret S --api-key K [--port 0] [--host 127.0.0.1]
  [--max-payload 65536] [--max-body-bytes 4194304] [--max-batch 1000]
  [--ping-interval-ms 25000] [--ping-timeout-ms 20000] [--backlog 1024]`;


const opts = parsePeerOptions(process.argv.slice(2), USAGE, {
  'ping-interval-ms': ['pingIntervalMs', 25000, 1000, 2 ** 31 - 1],
  'ping-timeout-ms': ['pingTimeoutMs', 20000, 1000, 2 ** 31 - 1],
});
const verifyJwt = makeJwtVerifier(opts.jwtSecret);
const checkApiKey = makeApiKeyChecker(opts.apiKey);

// Engine.IO answers /socket.io/ itself; everything else comes here.
const onRequest = makeRequestHandler({
  checkApiKey, maxBodyBytes: opts.maxBodyBytes, maxBatch: opts.maxBatch,
  deliver: (event) => io.to(event.user_id).emit('event', event),
});


const server = http.createServer({ noDelay: true }, onRequest);
server.keepAliveTimeout = 65_000;
server.headersTimeout = 66_000;

const io = new Server(server, {
  transports: ['websocket'],
  perMessageDeflate: false,
  serveClient: false,
  maxHttpBufferSize: opts.maxPayload,
  pingInterval: opts.pingIntervalMs,
  pingTimeout: opts.pingTimeoutMs,
});

io.use((socket, next) => {
  const claims = verifyJwt(socket.handshake.auth?.token);
  if (claims === null) {
    next(new Error('unauthorized'));
    return;
  }
  socket.data.user = claims.sub;
  next();
});

io.on('connection', (socket) => {
  socket.join(socket.data.user);
});

let stopping = false;
function shutdown() {
  if (stopping) return;
  stopping = true;
  const force = setTimeout(() => process.exit(0), 2000);
  force.unref();
  // Disconnects every socket and closes the HTTP server.
  io.close(() => process.exit(0));
  server.closeAllConnections();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

server.on('error', (err) => {
  process.stderr.write(`socketio-server: ${err.message}\n`);
  process.exit(1);
});
server.listen({ port: opts.port, host: opts.host, backlog: opts.backlog }, () => {
  process.stdout.write(`${JSON.stringify({ listening: true, port: server.address().port })}\n`);
});
