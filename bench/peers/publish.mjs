// What both node peers share: their command line, and their HTTP side (POST
// /publish and /publish/batch with the API key, body limit and JSON checks, GET
// /healthz). Each peer passes its own deliver(event), which sends one event to
// the sockets of event.user_id.
import { parseArgs } from 'node:util';

// The common options plus the peer's own, extra = { 'flag': [key, default, min, max] }
// (integers). Prints usage and exits 2 on a bad command line.
export function parsePeerOptions(argv, usage, extra) {
  let values;
  const own = Object.fromEntries(Object.entries(extra).map(([flag, [, def]]) => [flag, { type: 'string', default: String(def) }]));
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
        backlog: { type: 'string', default: '1024' },
        ...own,
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    process.stderr.write(`${err.message}\n${usage}\n`);
    process.exit(2);
  }
  if (values.help) {
    process.stdout.write(`${usage}\n`);
    process.exit(0);
  }
  const int = (name, min, max) => {
    const n = Number(values[name]);
    if (!Number.isInteger(n) || n < min || n > max) {
      process.stderr.write(`--${name}: expected an integer in [${min}, ${max}]\n${usage}\n`);
      process.exit(2);
    }
    return n;
  };
  if (!values['jwt-secret'] || !values['api-key']) {
    process.stderr.write(`--jwt-secret and --api-key are required\n${usage}\n`);
    process.exit(2);
  }
  const opts = {
    port: int('port', 0, 65535),
    host: values.host,
    jwtSecret: values['jwt-secret'],
    apiKey: values['api-key'],
    maxPayload: int('max-payload', 1, 2 ** 30),
    maxBodyBytes: int('max-body-bytes', 1, 2 ** 30),
    maxBatch: int('max-batch', 1, 1e6),
    backlog: int('backlog', 1, 65535),
  };
  for (const [flag, [key, , min, max]] of Object.entries(extra)) opts[key] = int(flag, min, max);
  return opts;
}

export function makeRequestHandler({ checkApiKey, maxBodyBytes, maxBatch, deliver }) {
  const opts = { maxBodyBytes, maxBatch };
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


  return onRequest;
}
