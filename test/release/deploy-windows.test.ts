/**
 * The fleet cases of the Windows release's Install.ps1 / Uninstall.ps1 / Detect.ps1, in the Windows pwsh under Wine
 * with the service Retroflect in Wine's real service manager (Pester: powershell/Tests/Windows/Release.Tests.ps1 and
 * ReleaseDeploy.Tests.ps1, one pwsh.exe run): install, detect, repair, uninstall; from a 32-bit host stand-in
 * (exit code 3010 and the success line handed back, the forwarded switches bound); the second run that changes
 * nothing; the downgrade refusal; a failure injected after each step rolled back to exactly the state before.
 * The archive is package.mjs's, with dist\retroflect.exe and the WinDivert TEST DOUBLE as its WinDivert.dll.
 * The 32-bit host stand-in: a folder standing for %WINDIR% whose sysnative\WindowsPowerShell\v1.0\powershell.exe is
 * this same Windows pwsh (links to its files), and Deployment.ps1's test hook RETROFLECT_TEST_DEPLOY_AS_32BIT.
 * Windows PowerShell 5.1 itself cannot run here: test/release/deploy-scripts.test.ts checks the forwarded form.
 * Skips locally when Wine, dotnet or the Windows build is missing; fails on CI.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import {
  copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, test } from 'node:test';
import { ROOT, winPath } from '../wine/setup.ts';
import { assertWindowsPesterPassed, PSHOME, PWSH_EXE, runWindowsPwsh, WINPWSH_DIR, windowsPwshTestGate }
  from '../wine/windows-pwsh.ts';
import { endPwshServicePrefix, ensurePwshServicePrefix, RELEASE_PESTER_FILES } from '../wine/service-prefix.ts';

const execFileAsync = promisify(execFile);
const TESTS_DIR = join(ROOT, 'powershell', 'Tests', 'Windows');
const ENGINE_EXE = join(ROOT, 'dist', 'retroflect.exe');
const DOUBLE_DLL = join(ROOT, 'native', 'build', 'win64', 'WinDivert.dll');
/** A prefix of its own: the service tests' prefix may be in use at the same time. */
const PREFIX = join(ROOT, '.tmp', 'winpwsh-release', 'prefix');

let skip = await windowsPwshTestGate('the Windows release scripts');
if (!skip) {
  const missing = !existsSync(ENGINE_EXE)
    ? `${ENGINE_EXE} is missing (npm run build -- --windows)`
    : !existsSync(DOUBLE_DLL) ? `${DOUBLE_DLL} is missing (make -C native)` : null;
  if (missing && process.env.CI) test('the Windows release scripts can be tested on CI', () => assert.fail(missing));
  skip = missing ?? false;
}

after(() => {
  if (!skip) endPwshServicePrefix(PREFIX);
});

/** %WINDIR% of the 32-bit host stand-in: sysnative\WindowsPowerShell\v1.0\powershell.exe is the Windows pwsh. */
function fakeWindir(work: string): string {
  const windir = join(work, 'windir');
  const v1 = join(windir, 'sysnative', 'WindowsPowerShell', 'v1.0');
  mkdirSync(v1, { recursive: true });
  for (const name of readdirSync(PSHOME)) symlinkSync(join(PSHOME, name), join(v1, name));
  symlinkSync(PWSH_EXE, join(v1, 'powershell.exe'));
  return windir;
}

const TITLE = 'Install.ps1 / Uninstall.ps1 of the Windows release: 32-bit relaunch, no-op rerun, downgrade, '
  + 'rollback after each step (Pester under Wine)';

test(TITLE, { skip, timeout: 1_500_000 }, async () => {
  ensurePwshServicePrefix(PREFIX);
  endPwshServicePrefix(PREFIX);
  const work = join(WINPWSH_DIR, `release-run-${process.pid}`);
  rmSync(work, { recursive: true, force: true });
  const windivertDir = join(work, 'windivert');
  mkdirSync(windivertDir, { recursive: true });
  copyFileSync(DOUBLE_DLL, join(windivertDir, 'WinDivert.dll'));
  writeFileSync(join(windivertDir, 'WinDivert64.sys'), ''); // the module checks the driver file is there
  writeFileSync(join(windivertDir, 'LICENSE'), 'WinDivert TEST DOUBLE (native/), not the real driver\n');
  const releaseDir = join(work, 'release');
  const packageArgs = ['--no-build', '--only', 'windows', '--out-dir', releaseDir, '--windivert', windivertDir];
  const packageScript = join(ROOT, 'scripts', 'package.mjs');
  const pkg = await execFileAsync(process.execPath, [packageScript, ...packageArgs], { cwd: ROOT });
  const version = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
  const releaseZip = join(releaseDir, `retroflect-${version}-win-x64.zip`);
  assert.ok(existsSync(releaseZip), `package.mjs made no ${releaseZip}:\n${pkg.stdout}${pkg.stderr}`);

  const resultsFile = join(work, 'results.json');
  try {
    const runner = winPath(join(TESTS_DIR, 'Invoke-WindowsTests.ps1'));
    const r = await runWindowsPwsh(['-NoProfile', '-NonInteractive', '-File', runner], {
      tag: `release-pester-${process.pid}`,
      timeoutMs: 1_400_000,
      env: {
        WINEPREFIX: PREFIX,
        RETROFLECT_TEST_ONLY: RELEASE_PESTER_FILES.join(','),
        RETROFLECT_TEST_ENGINE_EXE: winPath(ENGINE_EXE),
        RETROFLECT_TEST_WINDIVERT_DIR: winPath(windivertDir),
        RETROFLECT_TEST_DIR: winPath(work),
        RETROFLECT_TEST_RESULTS: winPath(resultsFile),
        RETROFLECT_TEST_RELEASE_ZIP: winPath(releaseZip),
        RETROFLECT_TEST_RELEASE_VERSION: version,
        RETROFLECT_TEST_FAKE_WINDIR: winPath(fakeWindir(work)),
      },
    });
    console.log(`# Pester (release scripts) under Wine took ${r.seconds.toFixed(1)} s`);
    // Release.Tests.ps1's 6, and ReleaseDeploy's 3 + 12 injections (6 steps from two starting states) + 1.
    assertWindowsPesterPassed(r, resultsFile, RELEASE_PESTER_FILES, 22, 8000);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});
