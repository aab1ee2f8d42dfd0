/**
 * The style check of scripts/lint.mjs: the tree passes it (so CI and `npm run test:unit` run it), and it does catch
 * a line over the limit, a file gaining long lines beyond its baseline, and a src/ file without a job comment.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
// @ts-expect-error: a plain .mjs script without type declarations
import { lint, MAX_LINE_LENGTH } from '../../scripts/lint.mjs';

type LintResult = { problems: string[]; longLines: Record<string, number>; shrinkable: string[] };
const runLint = lint as (root: string, baseline: Record<string, number>) => LintResult;

describe('lint (scripts/lint.mjs)', () => {
  it('the tree passes: no new long lines, every src/ file states its job', () => {
    const r = spawnSync(process.execPath, ['scripts/lint.mjs'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
  });

  const root = mkdtempSync(join(tmpdir(), 'rft-lint-'));
  after(() => rmSync(root, { recursive: true, force: true }));
  mkdirSync(join(root, 'src'));
  mkdirSync(join(root, 'powershell'));
  const long = `const x = '${'x'.repeat(MAX_LINE_LENGTH)}';`;

  it('fails on a line over the limit and a src/ file with no job comment; a baseline allows what it lists', () => {
    // Exactly at the limit: allowed.
    writeFileSync(join(root, 'src', 'ok.ts'), `/** Holds x. */\nconst x = '${'x'.repeat(MAX_LINE_LENGTH - 13)}';\n`);
    writeFileSync(join(root, 'src', 'long.ts'), `// Holds x.\n${long}\n${long}\n`);
    writeFileSync(join(root, 'src', 'no-job.ts'), 'export const y = 1;\n');
    writeFileSync(join(root, 'powershell', 'Long.ps1'), `# Writes x.\nWrite-Output '${'x'.repeat(MAX_LINE_LENGTH)}'\n`);

    const strict = runLint(root, {});
    assert.deepEqual(strict.longLines, { 'src/long.ts': 2, 'powershell/Long.ps1': 1 });
    assert.equal(strict.problems.length, 3, strict.problems.join('\n'));
    assert.ok(strict.problems[0].includes(`src/long.ts:2: ${MAX_LINE_LENGTH + 13} characters`), strict.problems[0]);
    assert.match(strict.problems.join('\n'), /src\/no-job\.ts: no comment at the top/);

    const known = runLint(root, { 'src/long.ts': 2, 'powershell/Long.ps1': 1 });
    assert.deepEqual(known.problems, ['src/no-job.ts: no comment at the top stating the file\'s job']);
    const grown = runLint(root, { 'src/long.ts': 1, 'powershell/Long.ps1': 1 });
    assert.ok(grown.problems[0]?.startsWith(`src/long.ts: 2 lines over ${MAX_LINE_LENGTH} characters (1 known`));
    assert.deepEqual(runLint(root, { 'src/long.ts': 3, 'gone.ts': 1 }).shrinkable, ['src/long.ts', 'gone.ts']);
  });
});
