/**
 * Test-Retroflect's Pester file (powershell/Tests/Test-Retroflect.Tests.ps1) in pwsh 7 against the real engine
 * (dist/retroflect) inside a network namespace, as test/powershell/module.test.ts runs the whole suite; here only that
 * file, so `npm test -- doctor` covers the cmdlet. Without pwsh it skips locally and fails on CI.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createTopology, run } from '../helpers/netns.ts';
import { pwshTestGate } from '../helpers/pwsh.ts';

const root = join(import.meta.dirname, '..', '..');

test('pwsh: Test-Retroflect.Tests.ps1 against a real engine', { timeout: 600_000 }, async (t) => {
  const pwsh = pwshTestGate('the Pester tests of Test-Retroflect');
  if (typeof pwsh === 'string') {
    t.skip(pwsh);
    return;
  }
  const exe = join(root, 'dist', 'retroflect');
  assert.ok(existsSync(exe), `${exe} is missing: run 'npm run build' first`);
  const topo = await createTopology('dps');
  const dir = mkdtempSync(join(tmpdir(), 'rft-dps-'));
  try {
    const r = await run('env', [`RETROFLECT_TEST_ENGINE_EXE=${exe}`, `RETROFLECT_TEST_DIR=${dir}`,
      `RETROFLECT_TEST_PWSH=${pwsh.path}`, 'RETROFLECT_TEST_FILTER=Test-Retroflect',
      'ip', 'netns', 'exec', topo.a.name,
      pwsh.path, '-NoProfile', '-NonInteractive', '-File', join(root, 'powershell', 'Tests',
        'Invoke-RetroflectTests.ps1')], { timeoutMs: 10 * 60_000 });
    const plain = r.stdout.replace(/\x1b\[[0-9;]*m/g, '');
    assert.equal(r.code, 0, `Pester failed:\n${plain}\n${r.stderr}`);
    const passed = /Tests Passed: (\d+)/.exec(plain);
    assert.ok(passed && Number(passed[1]) >= 5, `expected at least 5 Pester tests to pass:\n${plain}`);
  } finally {
    await topo.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
});
