/**
 * The PowerShell side of managed policy and desired state, against a real engine in a namespace (as
 * module.test.ts runs the whole Pester suite): Set-ReflectAddress.Tests.ps1 and Set-ShieldPort.Tests.ps1 (sources
 * shown, policy entries refused with Retroflect.ManagedByPolicy, exact lists from several starting states, -WhatIf),
 * PolicyLock.Tests.ps1 (a policy file with lockChanges: each change cmdlet ends in one Retroflect.ManagedByPolicy
 * error saying the configuration is locked, Get-Retroflect shows LockedByPolicy, lifting the lock works live),
 * and the Intune Remediations pair (Detect-/Remediate-RetroflectDrift.ps1) run as Intune runs them.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { createTopology, run } from '../helpers/netns.ts';
import { pwshTestGate } from '../helpers/pwsh.ts';

const root = resolve(import.meta.dirname, '..', '..');
const ps = join(root, 'powershell');

async function pester(t: import('node:test').TestContext, filter: string): Promise<void> {
  const pwsh = pwshTestGate(`the Pester tests ${filter}`);
  if (typeof pwsh === 'string') {
    t.skip(pwsh);
    return;
  }
  const exe = join(root, 'dist', 'retroflect');
  assert.ok(existsSync(exe), `${exe} is missing: run 'npm run build' first`);
  const topo = await createTopology('pol');
  const dir = mkdtempSync(join(tmpdir(), 'rft-pol-'));
  try {
    const r = await run('env', [`RETROFLECT_TEST_ENGINE_EXE=${exe}`, `RETROFLECT_TEST_DIR=${dir}`, `RETROFLECT_TEST_PWSH=${pwsh.path}`, `RETROFLECT_TEST_FILTER=${filter}`,
      'ip', 'netns', 'exec', topo.a.name,
      pwsh.path, '-NoProfile', '-NonInteractive', '-File', join(ps, 'Tests', 'Invoke-RetroflectTests.ps1')], { timeoutMs: 10 * 60_000 });
    const plain = r.stdout.replace(/\x1b\[[0-9;]*m/g, '');
    assert.equal(r.code, 0, `Pester failed:\n${plain}\n${r.stderr}`);
    for (const line of plain.split('\n').filter((l) => /Tests (completed|Passed)/.test(l))) t.diagnostic(line.trim());
  } finally {
    await topo.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

test('pwsh policy: Set-ReflectAddress and Set-ShieldPort against a real engine with a policy file', (t) => pester(t, 'Set-ReflectAddress,Set-ShieldPort'));
test('pwsh policy: a locking policy refuses Add-ReflectAddress, Remove-ShieldPort, Set-ReflectAddress, one error each',
  (t) => pester(t, 'PolicyLock'));
test('pwsh policy: the Remediations pair detects and remediates drift', (t) => pester(t, 'Remediations'));
