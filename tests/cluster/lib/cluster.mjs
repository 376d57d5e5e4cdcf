// cluster.mjs -- a gateway cluster for the tests: N redis shards and N
// agentwire nodes (the real binary, started through the e2e harness) that share
// one JWT secret, one API key and one --redis list. Also the helpers that the
// cluster suites share: the shard of a user, users on a chosen shard, publishing,
// history, sequence checks and the FIGURES lines.
//
// CLUSTER_TESTS_SINGLE_NODE=1 checks the suites' own logic: one node in memory
// mode (no --redis) stands for every node; the tests that kill nodes or shards
// cannot pass that way.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import {
  api,
  connectReady,
  pollUntil,
  signHS256,
  startServer,
  withTimeout,
  WAIT_MS,
} from '../../e2e/lib/harness.mjs';
import { startRedis } from './redis.mjs';

/* Every node process started here: killed at exit if a test left one behind. */
const liveNodes = new Set();
process.on('exit', () => {
  for (const srv of liveNodes) {
    try { if (!srv.exitInfo) srv.proc.kill('SIGKILL'); } catch { /* gone */ }
  }
});

/** Flags every node gets unless a test overrides them. */
const NODE_DEFAULTS = ['--drain-timeout-ms', '2000'];

/**
 * Starts `shards` redis-servers and `nodes` agentwire nodes with
 * `--redis url1,url2,...`. opts.args: extra flags of every node; opts.nodeArgs[i]:
 * extra flags of node i; opts.durable: AOF with appendfsync always on every shard.
 * Everything is stopped when t ends (nodes first, then the shards). Returns
 * {redis, nodes, urls, secret, apiKey, startNode(extra), kill9Node(i), token(sub)}.
 */
export async function startCluster(t, { nodes = 3, shards = 2, args = [], nodeArgs = [], durable = false, env = {}, checkExit = true } = {}) {
  const secret = crypto.randomBytes(24).toString('hex');
  const apiKey = `ak_${crypto.randomBytes(16).toString('hex')}`;
  const redis = [];
  const all = [];
  const cluster = {
    redis,
    nodes: [],
    urls: '',
    secret,
    apiKey,
    token: (sub, claims = {}) => signHS256(secret, { sub, ...claims }),
    /** Starts one more node of this cluster (same secrets and shards); stopped when t ends. */
    async startNode(extra = []) {
      const srv = await startServer([
        ...NODE_DEFAULTS,
        '--jwt-secret', secret,
        '--api-key', apiKey,
        '--redis', cluster.urls,
        ...args,
        ...extra,
      ], env);
      // the harness made its own random secret and key: this node uses the cluster's
      srv.secret = secret;
      srv.apiKey = apiKey;
      srv.token = (sub, claims = {}) => signHS256(secret, { sub, ...claims });
      srv.killedByTest = false;
      /** SIGKILL; resolves once the process has exited. */
      srv.kill9 = async () => {
        srv.killedByTest = true;
        srv.signal('SIGKILL');
        await withTimeout(srv.exited, 5000, 'agentwire node to die after SIGKILL');
      };
      all.push(srv);
      liveNodes.add(srv);
      srv.exited.then(() => liveNodes.delete(srv));
      // listening is not ready: a node serves once its shards answer (/readyz 200)
      await waitNodeReady(srv);
      return srv;
    },
    kill9Node: (i) => cluster.nodes[i].kill9(),
  };

  t.after(async () => {
    const errors = [];
    // nodes first (they may log about the shards going away), then the shards
    await Promise.all(all.map(async (srv) => {
      try {
        await srv.stop({ check: checkExit && !srv.killedByTest });
      } catch (err) {
        errors.push(err);
      }
    }));
    await Promise.all(redis.map((r) => r.destroy().catch((err) => errors.push(err))));
    if (errors.length) throw errors[0];
  });

  for (let i = 0; i < shards; i++) redis.push(await startRedis(null, { durable }));
  cluster.urls = redis.map((r) => r.url).join(',');
  if (process.env.CLUSTER_TESTS_SINGLE_NODE === '1') {
    // Self-test of the suites only: one node in memory mode standing for every
    // node (no --redis), to check the tests' own logic against the one-node server.
    const srv = await startServer([...NODE_DEFAULTS, '--jwt-secret', secret, '--api-key', apiKey,
      ...args.filter((a, i) => !/^--(node-ttl-ms|redis-timeout-ms)$/.test(a) && !/^--(node-ttl-ms|redis-timeout-ms)$/.test(args[i - 1] ?? ''))], env);
    srv.secret = secret;
    srv.apiKey = apiKey;
    srv.token = cluster.token;
    srv.index = 0;
    srv.kill9 = async () => { srv.killedByTest = true; srv.signal('SIGKILL'); await srv.exited; };
    all.push(srv);
    for (let i = 0; i < nodes; i++) cluster.nodes.push(srv);
    return cluster;
  }
  for (let i = 0; i < nodes; i++) {
    const srv = await cluster.startNode(nodeArgs[i] || []);
    srv.index = i;
    cluster.nodes.push(srv);
  }
  return cluster;
}

/* ------------------------------------------------------------------ */
/* shards                                                               */
/* ------------------------------------------------------------------ */

const MASK64 = (1n << 64n) - 1n;

/** FNV-1a 64 of the UTF-8 bytes of s, as a BigInt. */
export function fnv1a64(s) {
  let h = 0xcbf29ce484222325n;
  for (const b of Buffer.from(s, 'utf8')) {
    h ^= BigInt(b);
    h = (h * 0x100000001b3n) & MASK64;
  }
  return h;
}

/** Jump consistent hash (Lamping and Veach) of a 64-bit key into n buckets. */
export function jumpHash(key, n) {
  let b = -1;
  let j = 0;
  let k = key;
  while (j < n) {
    b = j;
    k = (k * 2862933555777941757n + 1n) & MASK64;
    j = Math.floor((b + 1) * (2 ** 31 / (Number(k >> 33n) + 1)));
  }
  return b;
}

/** The shard (index into the --redis list) of a user id. */
export const shardOf = (user, shards) => jumpHash(fnv1a64(user), shards);

/** A fresh random user id whose stream lives on shard `shard` of `shards`. */
export function userOnShard(shard, shards, prefix = 'u') {
  for (let i = 0; i < 10000; i++) {
    const u = `${prefix}_${crypto.randomBytes(5).toString('hex')}`;
    if (shardOf(u, shards) === shard) return u;
  }
  throw new Error(`no user id found on shard ${shard} of ${shards}`);
}

/* ------------------------------------------------------------------ */
/* clients, publishing, history                                         */
/* ------------------------------------------------------------------ */

/** Connects user to node (Authorization header) with an optional query; waits for connection_established. */
export function connectUser(node, user, query, opts = {}) {
  return connectReady(node.wsUrl(query), { ...opts, headers: { Authorization: `Bearer ${node.token(user)}`, ...(opts.headers || {}) } });
}

/** POST /api/v1/publish/batch; asserts 200 and a seq for every element; resolves the receipts. */
export async function publishBatch(node, events, opts = {}) {
  const res = await api(node, 'POST', '/api/v1/publish/batch', events, opts);
  assert.equal(res.status, 200, `batch of ${events.length} through node ${node.index ?? node.port}: ${res.status} ${res.text.slice(0, 300)}`);
  assert.equal(res.json.length, events.length, 'one receipt per event');
  for (const r of res.json) assert.equal(typeof r.seq, 'number', `batch element refused: ${JSON.stringify(r)}`);
  return res.json;
}

/** GET /api/v1/history?user_id=&since= (asserts 200); resolves the body. */
export async function history(node, user, since) {
  const q = new URLSearchParams({ user_id: user });
  if (since !== undefined) q.set('since', String(since));
  const res = await api(node, 'GET', `/api/v1/history?${q}`);
  assert.equal(res.status, 200, `history of ${user} on node ${node.index ?? node.port}: ${res.status} ${res.text.slice(0, 300)}`);
  return res.json;
}

/** GET /api/v1/users/{id}/connections (asserts 200); resolves the connection ids, sorted. */
export async function connectionIds(node, user) {
  const res = await api(node, 'GET', `/api/v1/users/${encodeURIComponent(user)}/connections`);
  assert.equal(res.status, 200, `connections of ${user} on node ${node.index ?? node.port}: ${res.status} ${res.text.slice(0, 300)}`);
  assert.equal(res.json.user_id, user);
  assert.ok(Array.isArray(res.json.connections), res.text);
  return res.json.connections.map((c) => c.connection_id).sort();
}

/** Resolves once node answers /readyz with 200 (its shards are connected). */
export function waitNodeReady(node, timeoutMs = 15000) {
  return pollUntil(async () => (await readyz(node)).status === 200,
    { timeoutMs, intervalMs: 20, what: `node on port ${node.port}: /readyz to answer 200` });
}

/** GET /readyz without a key: {status, text}. */
export async function readyz(node) {
  const res = await api(node, 'GET', '/readyz', undefined, { key: null, timeoutMs: 10000 });
  return { status: res.status, text: res.text, json: res.json };
}

/* ------------------------------------------------------------------ */
/* checks                                                               */
/* ------------------------------------------------------------------ */

export const range = (from, to) => Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);

/** Asserts that events carry exactly the seqs from..to in order, naming the first mismatch. */
export function assertSeqs(events, from, to, what) {
  const got = events.map((e) => e.seq);
  const n = Math.max(0, to - from + 1);
  for (let i = 0; i < Math.max(n, got.length); i++) {
    const want = i < n ? from + i : undefined;
    if (got[i] !== want) {
      assert.fail(`${what}: expected seq ${from}..${to} (${n} events), got ${got.length} events; ` +
        `first difference at index ${i}: got ${got[i]}, want ${want} (around: ${JSON.stringify(got.slice(Math.max(0, i - 3), i + 4))})`);
    }
  }
}

const isEvent = (d) => d && typeof d.seq === 'number' && d.type !== 'connection_established';

/**
 * Waits (on the client's messages, no polling) until client c holds at least n
 * events matching pred; rejects when it closes first or after timeoutMs.
 */
export function waitEvents(c, n, { pred = () => true, timeoutMs = 30000, what = 'client' } = {}) {
  return new Promise((resolve, reject) => {
    let seen = 0;
    let idx = 0;
    let timer = null;
    const done = () => {
      clearTimeout(timer);
      c.ws.off('message', check);
      c.ws.off('close', check);
    };
    function check() {
      for (; idx < c.messages.length; idx++) {
        const d = c.messages[idx].data;
        if (isEvent(d) && pred(d)) seen++;
      }
      if (seen >= n) {
        done();
        resolve(seen);
      } else if (c.closeInfo) {
        done();
        reject(new Error(`${what}: closed ${JSON.stringify(c.closeInfo)} holding ${seen} of ${n} events; last seq ${c.events().at(-1)?.seq}`));
      }
    }
    timer = setTimeout(() => {
      done();
      reject(new Error(`${what}: timed out after ${timeoutMs} ms holding ${seen} of ${n} events; last seq ${c.events().at(-1)?.seq}`));
    }, timeoutMs);
    c.ws.on('message', check);
    c.ws.on('close', check);
    check();
  });
}

/** Prints one `FIGURES {json}` line (and a test diagnostic). */
export function figures(t, obj) {
  const line = `FIGURES ${JSON.stringify(obj)}`;
  console.log(line);
}

export { WAIT_MS };
