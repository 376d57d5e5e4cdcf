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
import { parseArgs } from 'node:util';
import { Server } from 'socket.io';
import { makeApiKeyChecker, makeJwtVerifier } from './jwt.mjs';

const USAGE = `usage: node socketio-server.mjs --jwt-secret S --api-key K [--port 0] [--host 127.0.0.1]
  [--max-payload 65536] [--max-body-bytes 4194304] [--max-batch 1000]
  [--ping-interval-ms 25000] [--ping-timeout-ms 20000] [--backlog 1024]`;

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
        'ping-interval-ms': { type: 'string', default: '25000' },
        'ping-timeout-ms': { type: 'string', default: '20000' },
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
    pingIntervalMs: int('ping-interval-ms', 1000, 2 ** 31 - 1),
    pingTimeoutMs: int('ping-timeout-ms', 1000, 2 ** 31 - 1),
    backlog: int('backlog', 1, 65535),
  };
}

const opts = parseOptions(process.argv.slice(2));
const verifyJwt = makeJwtVerifier(opts.jwtSecret);
const checkApiKey = makeApiKeyChecker(opts.apiKey);

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
    for (const event of parsed) io.to(event.user_id).emit('event', event);
    sendJson(res, 200, { published: parsed.length });
  } else {
    if (!isEvent(parsed)) {
      sendJson(res, 400, { error: 'expected a JSON object with a string user_id' });
      return;
    }
    io.to(parsed.user_id).emit('event', parsed);
    sendJson(res, 200, { published: 1 });
  }
}

// Engine.IO answers /socket.io/ itself; everything else comes here.
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
