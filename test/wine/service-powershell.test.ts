/**
 * The service as an admin installs and drives it, in the Windows pwsh under Wine (Pester files of
 * powershell/Tests/Windows named in SERVICE_PESTER_FILES): Install-Retroflect / Uninstall-Retroflect register and
 * remove the service Retroflect in Wine's real service manager (migrating a scheduled task), Start-/Stop-Retroflect
 * and Restart-Service act through it (the release archive's scripts: test/release/deploy-windows.test.ts);
 * Start-Retroflect's engine inherits no handle of the caller. The engine is dist\retroflect.exe on the WinDivert
 * TEST DOUBLE. Skips locally when Wine, dotnet or the Windows build is missing; fails on CI.
 */
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { ROOT, winPath } from './setup.ts';
import { assertWindowsPesterPassed, runWindowsPwsh, WINPWSH_DIR, windowsPwshTestGate } from './windows-pwsh.ts';
import { endPwshServicePrefix, ensurePwshServicePrefix, PWSH_SERVICE_PREFIX } from './service-prefix.ts';
import { SERVICE_PESTER_FILES } from './service-prefix.ts';

const TESTS_DIR = join(ROOT, 'powershell', 'Tests', 'Windows');
const ENGINE_EXE = join(ROOT, 'dist', 'retroflect.exe');
const DOUBLE_DLL = join(ROOT, 'native', 'build', 'win64', 'WinDivert.dll');

let skip = await windowsPwshTestGate('the service from the PowerShell module on Windows');
if (!skip) {
  const missing = !existsSync(ENGINE_EXE)
    ? `${ENGINE_EXE} is missing (npm run build -- --windows)`
    : !existsSync(DOUBLE_DLL) ? `${DOUBLE_DLL} is missing (make -C native)` : null;
  if (missing && process.env.CI) test('the Windows service PowerShell test can run on CI', () => assert.fail(missing));
  skip = missing ?? false;
}

after(() => {
  if (!skip) endPwshServicePrefix();
});

const TITLE = 'Install-/Uninstall-Retroflect, Start-/Stop-Retroflect and Restart-Service with the service Retroflect; '
  + 'a detached start (Pester under Wine)';

test(TITLE, { skip, timeout: 900_000 }, async () => {
  ensurePwshServicePrefix();
  endPwshServicePrefix();
  const work = join(WINPWSH_DIR, 'service-run');
  rmSync(work, { recursive: true, force: true });
  const windivertDir = join(work, 'windivert');
  mkdirSync(windivertDir, { recursive: true });
  copyFileSync(DOUBLE_DLL, join(windivertDir, 'WinDivert.dll'));
  writeFileSync(join(windivertDir, 'WinDivert64.sys'), ''); // the module checks the driver file is there

  const resultsFile = join(work, 'results.json');
  const runner = winPath(join(TESTS_DIR, 'Invoke-WindowsTests.ps1'));
  const r = await runWindowsPwsh(['-NoProfile', '-NonInteractive', '-File', runner], {
    tag: 'service-pester',
    timeoutMs: 800_000,
    env: {
      WINEPREFIX: PWSH_SERVICE_PREFIX,
      RETROFLECT_TEST_ONLY: SERVICE_PESTER_FILES.join(','),
      RETROFLECT_TEST_ENGINE_EXE: winPath(ENGINE_EXE),
      RETROFLECT_TEST_WINDIVERT_DIR: winPath(windivertDir),
      RETROFLECT_TEST_DIR: winPath(work),
      RETROFLECT_TEST_RESULTS: winPath(resultsFile),
    },
  });
  console.log(`# Pester (service) under Wine took ${r.seconds.toFixed(1)} s`);
  assertWindowsPesterPassed(r, resultsFile, SERVICE_PESTER_FILES, 12, 6000);
});
