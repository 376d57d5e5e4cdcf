// HS256 JSON Web Token verification and API key checking shared by the Node
// benchmark peers (ws-server.mjs, socketio-server.mjs).
import { createHash, createHmac, createSecretKey, timingSafeEqual } from 'node:crypto';

const B64URL = /^[A-Za-z0-9_-]+$/;
const MAX_TOKEN_CHARS = 8192;

function decodeJson(part) {
  try {
    const value = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? value : null;
  } catch {
    return null;
  }
}

// Returns verify(token) -> { sub, exp } for a valid token, null otherwise.
// The header must say alg HS256; the signature is compared in constant time;
// exp is required, nbf is honoured when present, both with leewaySeconds of
// clock tolerance; sub must be a non-empty string.
export function makeJwtVerifier(secret, { leewaySeconds = 30 } = {}) {
  if (typeof secret !== 'string' || secret === '') throw new Error('JWT secret must be a non-empty string');
  const key = createSecretKey(Buffer.from(secret, 'utf8'));
  return function verify(token) {
    if (typeof token !== 'string' || token.length > MAX_TOKEN_CHARS) return null;
    const d1 = token.indexOf('.');
    const d2 = token.indexOf('.', d1 + 1);
    if (d1 <= 0 || d2 <= d1 + 1 || d2 === token.length - 1 || token.indexOf('.', d2 + 1) !== -1) return null;
    const h = token.slice(0, d1);
    const p = token.slice(d1 + 1, d2);
    const s = token.slice(d2 + 1);
    if (!B64URL.test(h) || !B64URL.test(p) || !B64URL.test(s)) return null;

    const header = decodeJson(h);
    if (header === null || header.alg !== 'HS256') return null;
    if (header.typ !== undefined && header.typ !== 'JWT') return null;

    const expected = createHmac('sha256', key).update(token.slice(0, d2)).digest();
    const given = Buffer.from(s, 'base64url');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;

    const claims = decodeJson(p);
    if (claims === null) return null;
    const now = Date.now() / 1000;
    if (typeof claims.exp !== 'number' || !Number.isFinite(claims.exp) || claims.exp + leewaySeconds <= now) return null;
    if (claims.nbf !== undefined && (typeof claims.nbf !== 'number' || claims.nbf - leewaySeconds > now)) return null;
    if (typeof claims.sub !== 'string' || claims.sub === '') return null;
    return { sub: claims.sub, exp: claims.exp };
  };
}

// Returns check(authorizationHeader) -> boolean for 'Bearer <apiKey>'.
// Both sides are hashed first so the comparison is constant-time whatever
// the length of what the client sent.
export function makeApiKeyChecker(apiKey) {
  if (typeof apiKey !== 'string' || apiKey === '') throw new Error('API key must be a non-empty string');
  const digest = (v) => createHash('sha256').update(v, 'utf8').digest();
  const want = digest(`Bearer ${apiKey}`);
  return function check(header) {
    if (typeof header !== 'string' || header.length > 4096) return false;
    return timingSafeEqual(digest(header), want);
  };
}
