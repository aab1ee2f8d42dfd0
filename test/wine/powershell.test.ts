/**
 * The PowerShell module's Windows branches, run for real: the Pester files in powershell/Tests/Windows run in a
 * Windows pwsh.exe (PowerShell 7.6.9, built from NuGet by test/wine/windows-pwsh.ts) under Wine, against the
 * Windows engine dist/retroflect.exe with the WinDivert TEST DOUBLE as its WinDivert.dll. Only what cannot exist
 * under Wine is mocked there (an unelevated token; the ScheduledTasks and NetSecurity cmdlets).
 *
 * Here: queue packets for the double, run the Pester runner once, and check its JSON results (every file ran,
 * nothing failed) and, independently of PowerShell, the packets the engine sent back through the double.
 * Skips locally when Wine, dotnet or dist/retroflect.exe (npm run build -- --windows) is missing; fails on CI.
 */
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileRecord, inboundAddr, outboundAddr, packet, packetSeq, readFileRecords } from '../helpers/windivert-double.ts';
import { ROOT, winPath } from './setup.ts';
import { holdWindowsPwshPrefix, runWindowsPwsh, stopWindowsPwshProcesses, WINPWSH_DIR, windowsPwshTestGate }
  from './windows-pwsh.ts';
import { RELEASE_PESTER_FILES, SERVICE_PESTER_FILES } from './service-prefix.ts';

const TESTS_DIR = join(ROOT, 'powershell', 'Tests', 'Windows');
/** Pester files other suites run: the service's (service-powershell.test.ts) and the doctor's Driver.Tests.ps1
 *  (test/doctor/doctor-windows-pester.test.ts, which hands it the WinDivert-holding fixture it needs). */
const RUN_ELSEWHERE = [...SERVICE_PESTER_FILES, ...RELEASE_PESTER_FILES, 'Driver'];
const ENGINE_EXE = join(ROOT, 'dist', 'retroflect.exe');
const DOUBLE_DLL = join(ROOT, 'native', 'build', 'win64', 'WinDivert.dll');
const REFLECT = '203.0.113.77'; // as in the Pester files: documentation range, on no local subnet
const LOCAL = '198.51.100.2';
const PEER = '203.0.113.9';

let skip = await windowsPwshTestGate('the PowerShell module on Windows');
if (!skip) {
  const missing = !existsSync(ENGINE_EXE) ? `${ENGINE_EXE} is missing (npm run build -- --windows)` : !existsSync(DOUBLE_DLL) ? `${DOUBLE_DLL} is missing (make -C native, needs mingw)` : null;
  if (missing && process.env.CI) test('the Windows PowerShell test can run on CI', () => assert.fail(missing));
  skip = missing ?? false;
}

// The prefix is ours alone for the whole file (holdWindowsPwshPrefix: another file's `wineserver -k` would end this
// file's engines and pwsh mid-run); ended and handed on afterwards.
let releasePrefix: (() => void) | null = null;
before(async () => {
  if (!skip) releasePrefix = await holdWindowsPwshPrefix();
}, { timeout: 1_900_000 });
after(() => {
  if (!skip) stopWindowsPwshProcesses();
  releasePrefix?.();
});

interface PesterResults {
  passed: number;
  failed: number;
  skipped: number;
  notRun: number;
  failedBlocks: number;
  failedContainers: number;
  tests: { name: string; result: string; error: string }[];
  containers: { name: string; result: string; error: string }[];
}

test('the Windows pwsh host runs PowerShell 7.6.9 as Windows, with Pester 5.7.1 and the RemoteSigned policy', { skip, timeout: 120_000 }, async () => {
  const probe = ['-NoProfile', '-NonInteractive', '-Command',
    "'{0}|{1}|{2}|{3}' -f $PSVersionTable.PSVersion, $IsWindows, (Get-Module -ListAvailable Pester).Version, (Get-ExecutionPolicy); [Environment]::Exit(7)"];
  const cold = await runWindowsPwsh(probe, { tag: 'probe' });
  const warm = await runWindowsPwsh(probe, { tag: 'probe' });
  console.log(`# Windows pwsh start: first ${cold.seconds.toFixed(1)} s, second ${warm.seconds.toFixed(1)} s`);
  for (const r of [cold, warm]) {
    assert.equal(r.code, 7, `the script's exit code comes back:\n${r.stdout}\n${r.stderr}`);
    assert.equal(r.stdout.trim(), '7.6.9|True|5.7.1|RemoteSigned');
  }
});

test('Windows pwsh under Wine: Start-Retroflect, the pipe cmdlets, Stop-Retroflect and the firewall rule (Pester, powershell/Tests/Windows)', { skip, timeout: 900_000 }, async () => {
  stopWindowsPwshProcesses(); // an engine an interrupted run left would hold \\.\pipe\retroflect
  const work = join(WINPWSH_DIR, 'run');
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  // The engine's WinDivert folder: the double as WinDivert.dll, and an empty WinDivert64.sys only because the
  // module checks the driver file is there before starting (the double needs no driver).
  const windivertDir = join(work, 'windivert');
  mkdirSync(windivertDir);
  copyFileSync(DOUBLE_DLL, join(windivertDir, 'WinDivert.dll'));
  writeFileSync(join(windivertDir, 'WinDivert64.sys'), '');

  const injectFile = join(work, 'inject.bin');
  const sentFile = join(work, 'sent.bin');
  const records: Buffer[] = [];
  for (let i = 0; i < 100; i++) records.push(fileRecord(packet(LOCAL, REFLECT, 6, 40000, 80, i), outboundAddr(false)));
  for (let i = 100; i < 120; i++) records.push(fileRecord(packet(PEER, LOCAL, 6, 5555, 8080, i), inboundAddr(false)));
  for (let i = 120; i < 130; i++) records.push(fileRecord(packet(PEER, LOCAL, 6, 5555, 8081, i), inboundAddr(false)));
  writeFileSync(injectFile, Buffer.concat(records));

  const resultsFile = join(work, 'results.json');
  const r = await runWindowsPwsh(['-NoProfile', '-NonInteractive', '-File', winPath(join(TESTS_DIR, 'Invoke-WindowsTests.ps1'))], {
    tag: 'pester',
    timeoutMs: 600_000,
    env: {
      RETROFLECT_TEST_ENGINE_EXE: winPath(ENGINE_EXE),
      RETROFLECT_TEST_WINDIVERT_DIR: winPath(windivertDir),
      RETROFLECT_TEST_DIR: winPath(work),
      RETROFLECT_TEST_RESULTS: winPath(resultsFile),
      RETROFLECT_TEST_SKIP: RUN_ELSEWHERE.join(','),
      // Inherited by the engine Start-Retroflect launches: the double replays these packets to its first handle.
      WINDIVERT_DOUBLE_INJECT_FILE: winPath(injectFile),
      WINDIVERT_DOUBLE_SENT_FILE: winPath(sentFile),
    },
  });
  console.log(`# Pester under Wine took ${r.seconds.toFixed(1)} s`);
  const output = `exit ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr.slice(-4000)}`;
  assert.ok(existsSync(resultsFile), `the Pester runner wrote no results:\n${output}`);
  const results = JSON.parse(readFileSync(resultsFile, 'utf8')) as PesterResults;
  const failures = [...results.containers, ...results.tests].filter((t) => t.result === 'Failed').map((t) => `${t.name}: ${t.error}`);
  assert.deepEqual(failures, [], `Pester failures:\n${failures.join('\n\n')}\n${output}`);
  assert.equal(r.code, 0, output);

  // Every Pester file ran, and every test in it (none skipped or left out by a failed setup).
  const files = readdirSync(TESTS_DIR).filter((f) => f.endsWith('.Tests.ps1') && !RUN_ELSEWHERE.includes(f.replace('.Tests.ps1', ''))).sort();
  assert.deepEqual(results.containers.map((c) => c.name.split(/[\\/]/).pop()).sort(), files);
  assert.ok(results.containers.every((c) => c.result === 'Passed'), JSON.stringify(results.containers));
  assert.equal(results.skipped + results.notRun, 0, 'no Pester test skipped or not run');
  assert.ok(results.passed >= 20, `only ${results.passed} Pester tests ran`);

  // What the engine started by Start-Retroflect really did, read from the double's log rather than from PowerShell.
  const sent = readFileRecords(sentFile);
  const reflected = sent.filter((s) => packetSeq(s.bytes) < 100);
  assert.equal(reflected.length, 100, 'the 100 packets to the reflect address come back reflected');
  for (const s of reflected) {
    assert.equal(s.bytes.subarray(12, 16).join('.'), REFLECT);
    assert.equal(s.bytes.subarray(16, 20).join('.'), LOCAL);
    assert.equal(s.addr.outbound, false);
  }
  assert.deepEqual(sent.filter((s) => packetSeq(s.bytes) >= 100).map((s) => packetSeq(s.bytes)), Array.from({ length: 10 }, (_, i) => 120 + i), 'shielded packets dropped, others passed');
});
