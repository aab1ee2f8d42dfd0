/**
 * Where PowerShell 7 is: `pwsh` on PATH, else the .NET global tool that scripts/install-pwsh.sh installs in
 * ~/.dotnet/tools (not on PATH in a fresh shell). Tests that need it skip on a developer's machine without it and
 * FAIL on CI (process.env.CI), where a missing pwsh means .ci/run did not install it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

export interface Pwsh {
  path: string;
  version: string;
}

export function findPwsh(): Pwsh | null {
  for (const candidate of ['pwsh', join(homedir(), '.dotnet', 'tools', 'pwsh')]) {
    if (candidate.includes('/') && !existsSync(candidate)) continue;
    const r = spawnSync(candidate, ['-NoProfile', '-NonInteractive', '-Command', '$PSVersionTable.PSVersion.ToString()'], { encoding: 'utf8', timeout: 60_000 });
    if (!r.error && r.status === 0) return { path: candidate, version: r.stdout.trim() };
  }
  return null;
}

/** pwsh, or the `skip` reason; on CI a missing pwsh registers a failing test instead of skipping quietly. */
export function pwshTestGate(what: string): Pwsh | string {
  const found = findPwsh();
  if (found) return found;
  const reason = `pwsh is not installed (bash scripts/install-pwsh.sh): ${what} cannot be tested`;
  if (process.env.CI) test('pwsh is required on CI', () => assert.fail(reason));
  return reason;
}
