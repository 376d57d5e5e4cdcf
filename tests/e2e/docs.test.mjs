// The documentation tells the truth about the options: every flag that
// --help lists is documented in docs/operations.md with the same default.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { BIN, REPO_ROOT } from './lib/harness.mjs';

test('every --help option is in docs/operations.md with its default', () => {
  const help = execFileSync(BIN, ['--help'], { encoding: 'utf8' });
  const doc = readFileSync(path.join(REPO_ROOT, 'docs', 'operations.md'), 'utf8');
  const lines = help.split('\n').filter((l) => /^\s+--[a-z]/.test(l));
  assert.ok(lines.length >= 20, `--help lists ${lines.length} options`);
  for (const line of lines) {
    const flag = /--[a-z0-9-]+/.exec(line)[0];
    const docLine = doc.split('\n').find((l) => l.includes(`${flag} `) || l.trimEnd().endsWith(flag));
    assert.ok(docLine, `${flag} is not documented in docs/operations.md`);
    const def = /\[([^\]]*)\]\s*$/.exec(line);
    if (def) assert.ok(docLine.includes(`[${def[1]}]`), `${flag}: docs do not show the default [${def[1]}]`);
  }
});
