/**
 * The Pester tests of the allow lists (powershell/Tests/Allowed.Tests.ps1) alone, against the real engine in a
 * network namespace, so `npm test -- allowed` covers the cmdlets too (module.test.ts runs them with all the others).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTopology, run } from '../helpers/netns.ts';
import { pwshTestGate } from '../helpers/pwsh.ts';

const root = join(new URL('.', import.meta.url).pathname, '..', '..');

test('pwsh: Pester tests of the allow lists against a real engine', { timeout: 10 * 60_000 }, async (t) => {
  const pwsh = pwshTestGate('the Pester tests of the allow lists');
  if (typeof pwsh === 'string') {
    t.skip(pwsh);
    return;
  }
  const exe = join(root, 'dist', 'retroflect');
  assert.ok(existsSync(exe), `${exe} is missing: run 'npm run build' first`);
  const topo = await createTopology('pwsallow');
  const dir = mkdtempSync(join(tmpdir(), 'rft-pwsallow-'));
  try {
    const r = await run('env', [`RETROFLECT_TEST_ENGINE_EXE=${exe}`, `RETROFLECT_TEST_DIR=${dir}`, `RETROFLECT_TEST_PWSH=${pwsh.path}`,
      'RETROFLECT_TEST_FILTER=Allowed', 'ip', 'netns', 'exec', topo.a.name,
      pwsh.path, '-NoProfile', '-NonInteractive', '-File', join(root, 'powershell', 'Tests', 'Invoke-RetroflectTests.ps1')], { timeoutMs: 9 * 60_000 });
    const plain = r.stdout.replace(/\x1b\[[0-9;]*m/g, '');
    assert.equal(r.code, 0, `Pester failed:\n${plain}\n${r.stderr}`);
    assert.match(plain, /Tests Passed: [1-9]/, plain);
  } finally {
    await topo.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
});
