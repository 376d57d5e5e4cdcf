// The TypeScript declarations of the JS client (clients/js/agentwire.d.ts),
// checked with the project's own tsc (npm ci installs it):
//  - usage.ts, which uses every public member, compiles with --strict;
//  - misuse.ts fails, with exactly the error marked on each of its lines;
//  - the declarations name exactly the public members of agentwire.js (its
//    class, exports and JSDoc options, as tsc reads them from the JS itself),
//    and that check notices a member the declarations lack.
//   node --test tests/types/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..', '..');
const TSC = path.join(ROOT, 'node_modules', '.bin', 'tsc');
const CLIENT_JS = path.join(ROOT, 'clients', 'js', 'agentwire.js');
const CLIENT_DTS = path.join(ROOT, 'clients', 'js', 'agentwire.d.ts');
const FLAGS = ['--noEmit', '--strict', '--target', 'es2022', '--module', 'nodenext',
  '--moduleResolution', 'nodenext', '--lib', 'es2022,dom', '--pretty', 'false'];

/** Runs tsc; resolves with its exit code, its output and the parsed errors. */
function tsc(args, cwd = ROOT) {
  return new Promise((resolve, reject) => {
    execFile(TSC, [...FLAGS, ...args], { cwd, timeout: 120_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') { reject(err); return; } // not run, or killed
      const out = `${stdout}${stderr}`;
      const errors = [...out.matchAll(/^(.+?)\((\d+),(\d+)\): error (TS\d+): (.*)$/gm)].map((m) => ({
        file: path.basename(m[1]), line: Number(m[2]), code: m[4], text: m[5],
      }));
      resolve({ code: err ? err.code : 0, out, errors });
    });
  });
}

test('tsc and the declarations are there', () => {
  assert.ok(existsSync(TSC), `${TSC} is missing: run npm ci`);
  assert.ok(existsSync(CLIENT_DTS), `${CLIENT_DTS} is missing`);
});

test('usage.ts, using every public member, compiles with --strict', async () => {
  const r = await tsc([path.join(HERE, 'usage.ts')]);
  assert.equal(r.out.trim(), '', `tsc reported:\n${r.out}`);
  assert.equal(r.code, 0);
});

test('misuse.ts does not compile: each marked line fails with its error, no other line fails', async () => {
  const file = path.join(HERE, 'misuse.ts');
  const expected = new Map();
  readFileSync(file, 'utf8').split('\n').forEach((line, i) => {
    const m = /\/\/ error (TS\d+)\s*$/.exec(line);
    if (m) expected.set(i + 1, m[1]);
  });
  assert.ok(expected.size >= 20, `only ${expected.size} marked misuses`);
  const r = await tsc([file]);
  assert.notEqual(r.code, 0, 'misuse.ts compiled: the declarations accept what they should refuse');
  const got = new Map();
  for (const e of r.errors) {
    assert.equal(e.file, 'misuse.ts', `an error outside misuse.ts: ${e.file}: ${e.code} ${e.text}`);
    got.set(e.line, got.has(e.line) ? `${got.get(e.line)},${e.code}` : e.code);
  }
  const missing = [...expected].filter(([line]) => !got.has(line)).map(([line, code]) => `line ${line} (${code}) compiled`);
  const extra = [...got].filter(([line]) => !expected.has(line)).map(([line, code]) => `line ${line}: unexpected ${code}`);
  const wrong = [...expected].filter(([line, code]) => got.has(line) && got.get(line) !== code)
    .map(([line, code]) => `line ${line}: ${got.get(line)}, expected ${code}`);
  assert.deepEqual([...missing, ...extra, ...wrong], [], `tsc reported:\n${r.out}`);
});

/**
 * Compiles, in a scratch directory, a check that the declarations and the JS
 * (its own inferred types: class members, exports, JSDoc typedefs) name the
 * same public members. `js` is the JS source to check against.
 */
async function driftCheck(js) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'agentwire-types-'));
  try {
    mkdirSync(path.join(dir, 'js'));
    writeFileSync(path.join(dir, 'js', 'agentwire.js'), js);
    const lifecycle = /const LIFECYCLE = new Set\(\[([^\]]*)\]\)/.exec(js);
    assert.ok(lifecycle, 'agentwire.js has no LIFECYCLE set');
    const dts = JSON.stringify(CLIENT_JS.replace(/\\/g, '/'));
    writeFileSync(path.join(dir, 'drift.ts'), `
import type * as Js from './js/agentwire.js';
import type * as Dts from ${dts};
type Public<K> = K extends \`_\${string}\` ? never : K;
type Keys<T> = T extends unknown ? keyof T : never;
type Only<A, B> = Exclude<Public<A>, Public<B>>;
type None<D> = [D] extends [never] ? true : D;
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
type JsClient = InstanceType<typeof Js.AgentwireClient>;
export const clientMembersMissingFromDts: None<Only<keyof JsClient, keyof Dts.AgentwireClient>> = true;
export const clientMembersOnlyInDts: None<Only<keyof Dts.AgentwireClient, keyof JsClient>> = true;
export const exportsMissingFromDts: None<Only<keyof typeof Js, keyof typeof Dts>> = true;
export const exportsOnlyInDts: None<Only<keyof typeof Dts, keyof typeof Js>> = true;
export const optionsMissingFromDts: None<Only<Keys<Js.AgentwireOptions>, Keys<Dts.AgentwireOptions>>> = true;
export const optionsOnlyInDts: None<Only<Keys<Dts.AgentwireOptions>, Keys<Js.AgentwireOptions>>> = true;
export const resetInfoSame: Equal<keyof Js.ResetInfo, keyof Dts.ResetInfo> = true;
export const errorMembersMissingFromDts: None<Only<keyof InstanceType<typeof Js.AgentwireError>, keyof Dts.AgentwireError>> = true;
export const statusSame: Equal<JsClient['status'], Dts.ConnectionStatus> = true;
export const tokenReasonSame: Equal<Parameters<NonNullable<Js.AgentwireOptions['getToken']>>[0]['reason'], Dts.TokenReason> = true;
export const lifecycleSame: Equal<Dts.LifecycleName, ${lifecycle[1].split(',').map((s) => s.trim()).join(' | ')}> = true;
`);
    return await tsc(['--allowJs', path.join(dir, 'drift.ts')], dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('the declarations name exactly the public members of agentwire.js', async () => {
  const r = await driftCheck(readFileSync(CLIENT_JS, 'utf8'));
  assert.equal(r.out.trim(), '', `agentwire.d.ts and agentwire.js differ:\n${r.out}`);
  assert.equal(r.code, 0);
});

test('that check notices a public method the declarations lack', async () => {
  const js = readFileSync(CLIENT_JS, 'utf8');
  const anchor = 'export class AgentwireClient {';
  assert.ok(js.includes(anchor));
  const r = await driftCheck(js.replace(anchor, `${anchor}\n  resumeFrom(seq) { return seq; }\n`));
  assert.notEqual(r.code, 0, 'a method missing from the declarations went unnoticed');
  assert.match(r.out, /clientMembersMissingFromDts[\s\S]*resumeFrom|resumeFrom[\s\S]*clientMembersMissingFromDts|"resumeFrom"/);
});
