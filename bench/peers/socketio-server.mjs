#!/usr/bin/env node
// Benchmark peer: per-user event fan-out on Socket.IO v4 (WebSocket transport only).
//
//   node bench/peers/socketio-server.mjs --port 0 --jwt-secret S --api-key K [--redis URL]
//
//   GET  /socket.io/?EIO=4&transport=websocket   then CONNECT with auth {"token":"<JWT>"};
//                           the socket joins the room named by the token's sub and receives
//                           each event as emit("event", event)
//   POST /publish           one event object with a string user_id
//   POST /publish/batch     a JSON array of such objects
//                           (both need 'Authorization: Bearer K'; answer {"published":N})
//
// Prints {"listening":true,"port":P} on stdout once listening. Without --redis,
// a single process: rooms live in this process's in-memory adapter. With
// --redis redis://HOST:PORT, one process of a cluster (bench/cluster.mjs): the
// Redis adapter (@socket.io/redis-adapter, classic createAdapter: PUBLISH per
// room broadcast, every process PSUBSCRIBEd to the namespace's channels) on
// node-redis clients, so that an event published to any process reaches the
// sockets of its user on every process; "listening" then also waits until the
// adapter's subscriptions are in place in Redis (PUBSUB NUMSUB of this
// process's own response channel is 1), so that a publish to another process
// right after reaches this one's sockets.
import http from 'node:http';
import { Server } from 'socket.io';
import { makeApiKeyChecker, makeJwtVerifier } from './jwt.mjs';
import { makeRequestHandler, parsePeerOptions } from './publish.mjs';

const USAGE = `usage: node socketio-server.mjs --jwt-secret S --api-key K [--port 0] [--host 127.0.0.1] [--redis URL]
  [--max-payload 65536] [--max-body-bytes 4194304] [--max-batch 1000]
  [--ping-interval-ms 25000] [--ping-timeout-ms 20000] [--backlog 1024]`;

// --redis is the one option that is not an integer: taken out before the common parser.
const argv = process.argv.slice(2);
let redisUrl = null;
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--redis' && i + 1 < argv.length) {
    redisUrl = argv[i + 1];
    argv.splice(i, 2);
    break;
  }
  if (argv[i].startsWith('--redis=')) {
    redisUrl = argv[i].slice('--redis='.length);
    argv.splice(i, 1);
    break;
  }
}
if (redisUrl !== null && !/^rediss?:\/\//.test(redisUrl)) {
  process.stderr.write(`--redis needs redis://HOST:PORT\n${USAGE}\n`);
  process.exit(2);
}

const opts = parsePeerOptions(argv, USAGE, {
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
let redisClients = []; // with --redis: the adapter's two clients
function shutdown() {
  if (stopping) return;
  stopping = true;
  const force = setTimeout(() => process.exit(0), 2000);
  force.unref();
  // Disconnects every socket and closes the HTTP server, then the Redis clients.
  io.close(() => {
    Promise.allSettled(redisClients.map((c) => c.quit())).then(() => process.exit(0));
  });
  server.closeAllConnections();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

server.on('error', (err) => {
  process.stderr.write(`socketio-server: ${err.message}\n`);
  process.exit(1);
});
if (redisUrl !== null) {
  // A lost Redis connection is fatal here: a cluster member that silently stops
  // forwarding would make the benchmark's checks fail for the wrong reason.
  const fail = (what) => (err) => {
    process.stderr.write(`socketio-server: redis ${what}: ${err?.message ?? err}\n`);
    if (!stopping) process.exit(1);
  };
  try {
    const { createAdapter } = await import('@socket.io/redis-adapter');
    const { createClient } = await import('redis');
    const pubClient = createClient({ url: redisUrl, socket: { reconnectStrategy: false } });
    const subClient = pubClient.duplicate();
    pubClient.on('error', fail('publisher'));
    subClient.on('error', fail('subscriber'));
    redisClients = [pubClient, subClient];
    await Promise.all([pubClient.connect(), subClient.connect()]);
    io.adapter(createAdapter(pubClient, subClient));
    // The adapter subscribes without waiting; its own response channel is
    // subscribed after its pattern, on the same connection: once Redis counts
    // one subscriber there, both are in place.
    const channel = io.of('/').adapter.specificResponseChannel;
    const end = Date.now() + 10000;
    for (;;) {
      const r = await pubClient.sendCommand(['PUBSUB', 'NUMSUB', channel]);
      if (Number(r?.[1]) >= 1) break;
      if (Date.now() > end) throw new Error(`adapter not subscribed to ${channel} after 10 s`);
      await new Promise((res) => setTimeout(res, 10));
    }
  } catch (err) {
    process.stderr.write(`socketio-server: ${err.message}\n`);
    process.exit(1);
  }
}

server.listen({ port: opts.port, host: opts.host, backlog: opts.backlog }, () => {
  process.stdout.write(`${JSON.stringify({ listening: true, port: server.address().port })}\n`);
});
