/**
 * powershell/Tests/Windows/Driver.Tests.ps1 in the Windows pwsh under Wine (as test/wine/powershell.test.ts runs the
 * whole Windows suite), so `npm test -- doctor` covers Test-Retroflect on Windows: its Windows checks, another
 * WinDivert user at our priority, a stale driver entry reported and repaired; and Uninstall-Retroflect leaving the
 * driver service entry alone while another program holds a WinDivert handle, removing ours once none does. Skips
 * locally without Wine, dotnet or dist/retroflect.exe; fails on CI.
 */
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { bundle, NODE_EXE, ROOT, setupWine, winPath } from '../wine/setup.ts';
import { holdWindowsPwshPrefix, runWindowsPwsh, stopWindowsPwshProcesses, WINPWSH_DIR, windowsPwshTestGate }
  from '../wine/windows-pwsh.ts';

const ENGINE_EXE = join(ROOT, 'dist', 'retroflect.exe');
const DOUBLE_DLL = join(ROOT, 'native', 'build', 'win64', 'WinDivert.dll');
const SYS = join(ROOT, 'native', 'build', 'win64', 'WinDivert64.sys');

interface PesterRow {
  name: string;
  result: string;
  error: string;
}
interface PesterResults {
  passed: number;
  skipped: number;
  notRun: number;
  tests: PesterRow[];
  containers: PesterRow[];
}

let skip = await windowsPwshTestGate('the doctor cmdlets on Windows');
if (!skip) {
  const missing = !existsSync(ENGINE_EXE)
    ? `${ENGINE_EXE} is missing (npm run build -- --windows)`
    : !existsSync(DOUBLE_DLL) ? `${DOUBLE_DLL} is missing (make -C native, needs mingw)` : null;
  if (missing && process.env.CI) test('the Windows doctor Pester test can run on CI', () => assert.fail(missing));
  skip = missing ?? false;
}

// The prefix is ours alone for the whole file, as in test/wine/powershell.test.ts (holdWindowsPwshPrefix).
let releasePrefix: (() => void) | null = null;
before(async () => {
  if (!skip) releasePrefix = await holdWindowsPwshPrefix();
}, { timeout: 1_900_000 });
after(() => {
  if (!skip) stopWindowsPwshProcesses();
  releasePrefix?.();
});

test('Windows pwsh under Wine: Driver.Tests.ps1 (Test-Retroflect: Windows checks, another WinDivert user, -Repair of ' +
  'a stale entry; Uninstall-Retroflect keeps the driver entry while another handle is open)',
  { skip, timeout: 600_000 }, async () => {
  stopWindowsPwshProcesses();
  const work = join(WINPWSH_DIR, 'doctor-run');
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  const windivertDir = join(work, 'windivert');
  mkdirSync(windivertDir);
  copyFileSync(DOUBLE_DLL, join(windivertDir, 'WinDivert.dll'));
  copyFileSync(SYS, join(windivertDir, 'WinDivert64.sys'));
  await setupWine(); // node.exe and koffi's Windows build for the holder
  const holder = await bundle(join(ROOT, 'test', 'doctor', 'fixtures', 'hold-windivert-handle.ts'),
    'doctor-pester-holder');
  const resultsFile = join(work, 'results.json');
  const r = await runWindowsPwsh(['-NoProfile', '-NonInteractive', '-File', winPath(join(ROOT, 'powershell', 'Tests',
    'Windows', 'Invoke-WindowsTests.ps1'))], {
    tag: 'doctor-pester',
    timeoutMs: 480_000,
    env: {
      RETROFLECT_TEST_ENGINE_EXE: winPath(ENGINE_EXE),
      RETROFLECT_TEST_WINDIVERT_DIR: winPath(windivertDir),
      RETROFLECT_TEST_DIR: winPath(work),
      RETROFLECT_TEST_RESULTS: winPath(resultsFile),
      RETROFLECT_TEST_FILTER: 'Driver',
      RETROFLECT_TEST_NODE_EXE: winPath(NODE_EXE),
      RETROFLECT_TEST_HOLDER: winPath(holder),
    },
  });
  const output = `exit ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr.slice(-4000)}`;
  assert.ok(existsSync(resultsFile), `the Pester runner wrote no results:\n${output}`);
  const results = JSON.parse(readFileSync(resultsFile,
    'utf8')) as PesterResults;
  const failures = [...results.containers,
    ...results.tests].filter((t) => t.result === 'Failed').map((t) => `${t.name}: ${t.error}`);
  assert.deepEqual(failures, [], `Pester failures:\n${failures.join('\n\n')}\n${output}`);
  assert.deepEqual(results.containers.map((c) => c.name.split(/[\\/]/).pop()), ['Driver.Tests.ps1']);
  assert.equal(results.passed, 5, output);
  assert.equal(results.skipped + results.notRun, 0);
  assert.equal(r.code, 0, output);
  writeFileSync(join(work, 'done'), '');
});
