/**
 * A Windows PowerShell 7 (pwsh.exe) for Wine, built from NuGet only and cached in .tmp/winpwsh/ (git-ignored):
 * test/wine/pwsh-host/WinPwsh.csproj published self-contained for win-x64 into .tmp/winpwsh/host, which then holds
 * $PSHOME (Modules, Pester, powershell.config.json). Rebuilt only when the project's files change (a stamp of their
 * hash). Needs the dotnet SDK (as test/dotnet does) and NuGet.
 *
 * What running it under Wine 8 takes, learned the hard way:
 *  - a pty on stdin: with a file or /dev/null there PowerShell's console host finds no console and exits 0 without
 *    running anything. runWindowsPwsh() gives it one (python3's pty module, argument arrays, no shell), output to
 *    files.
 *  - mscoree must NOT be disabled (wineEnv() disables it for node.exe): every IL-only .NET assembly imports
 *    mscoree.dll, and with it disabled CoreCLR cannot load even System.Runtime.dll ("Module not found").
 *  - DOTNET_EnableWriteXorExecute=0, else an intermittent internal CLR error.
 *  - Pester's XML report crashes the process after the run: the runner script writes its own results and ends with
 *    [Environment]::Exit.
 *  - Wine 8 matches nothing for file patterns ending in '.*', so PowerShell finds no command through PATH/PATHEXT
 *    (cmd, node): full paths only.
 *  - CIM, WMI and the ScheduledTasks/NetSecurity modules are not there: the Pester files mock those cmdlets.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, test } from 'node:test';
import { ROOT, wineAvailable, wineEnv } from './setup.ts';

export const WINPWSH_DIR = join(ROOT, '.tmp', 'winpwsh');
export const PSHOME = join(WINPWSH_DIR, 'host');
export const PWSH_EXE = join(PSHOME, 'pwsh.exe');
/**
 * A Wine prefix of its own: the engines these tests start, and the files they write to C:\ProgramData, stay apart
 * from test/wine's prefix (whose tests may run at the same time), and `wineserver -k` here ends only our processes.
 */
export const PWSH_PREFIX = join(WINPWSH_DIR, 'prefix');
const PROJECT_DIR = join(ROOT, 'test', 'wine', 'pwsh-host');
const PROJECT_FILES = ['WinPwsh.csproj', 'Program.cs'];
const STAMP = join(PSHOME, '.built-from');

/**
 * Gives the child a pseudo-terminal as stdin (drained, never written), stdout and stderr to files, and exits with
 * the child's exit code. argv: out-file err-file program args...
 */
const PTY_RUNNER = `
import os, pty, subprocess, sys, threading
out, err, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
master, slave = pty.openpty()
def drain():
    try:
        while os.read(master, 65536):
            pass
    except OSError:
        pass
threading.Thread(target=drain, daemon=True).start()
with open(out, 'wb') as o, open(err, 'wb') as e:
    child = subprocess.Popen(argv, stdin=slave, stdout=o, stderr=e)
    os.close(slave)
    sys.exit(child.wait())
`;

function projectHash(): string {
  const h = createHash('sha256');
  for (const f of PROJECT_FILES) h.update(f).update(readFileSync(join(PROJECT_DIR, f)));
  return h.digest('hex');
}

export function dotnetAvailable(): boolean {
  const r = spawnSync('dotnet', ['--version'], { encoding: 'utf8' });
  return !r.error && r.status === 0;
}

/**
 * Publish the host unless the cached one was built from the same project files. Idempotent; returns what it did
 * and how long it took. The new build goes to a side folder first, so an interrupted build never looks complete.
 */
export function setupWindowsPwsh(): { built: boolean; seconds: number } {
  const started = performance.now();
  if (!existsSync(join(PWSH_PREFIX, 'system.reg'))) {
    rmSync(PWSH_PREFIX, { recursive: true, force: true });
    mkdirSync(WINPWSH_DIR, { recursive: true });
    // wineEnv() keeps mscoree/mshtml disabled here: no Mono or Gecko install prompt during wineboot.
    const env = wineEnv({ WINEPREFIX: PWSH_PREFIX });
    for (const argv of [['wineboot', '-i'], ['wine', 'winecfg', '/v', 'win10'], ['wineserver', '-w']]) {
      const r = spawnSync(argv[0], argv.slice(1), { env, stdio: 'ignore', timeout: 300_000 });
      if (r.error || r.status !== 0) throw new Error(`making the Wine prefix ${PWSH_PREFIX} failed at '${argv.join(' ')}' (${r.error ?? `exit ${r.status}`})`);
    }
  }
  const hash = projectHash();
  if (existsSync(PWSH_EXE) && existsSync(STAMP) && readFileSync(STAMP, 'utf8') === hash) {
    return { built: false, seconds: (performance.now() - started) / 1000 };
  }
  const staging = join(WINPWSH_DIR, 'host.new');
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(WINPWSH_DIR, { recursive: true });
  const r = spawnSync('dotnet', ['publish', join(PROJECT_DIR, 'WinPwsh.csproj'), '-c', 'Release', '-o', staging, '--nologo', '-v', 'q',
    // Intermediate and output folders under .tmp, not beside the committed project.
    `-p:BaseIntermediateOutputPath=${join(WINPWSH_DIR, 'obj')}/`, `-p:BaseOutputPath=${join(WINPWSH_DIR, 'bin')}/`], {
    encoding: 'utf8',
    env: { ...process.env, DOTNET_CLI_TELEMETRY_OPTOUT: '1', DOTNET_NOLOGO: '1', DOTNET_SKIP_FIRST_TIME_EXPERIENCE: '1' },
    maxBuffer: 16 << 20,
  });
  if (r.error || r.status !== 0) throw new Error(`publishing the Windows pwsh host failed:\n${r.error ?? ''}${r.stdout}\n${r.stderr}`);
  writeFileSync(join(staging, '.built-from'), hash);
  rmSync(PSHOME, { recursive: true, force: true });
  renameSync(staging, PSHOME);
  return { built: true, seconds: (performance.now() - started) / 1000 };
}

/**
 * For a test file that runs the Windows pwsh under Wine: returns the `skip` option (false when Wine and dotnet are
 * here) and prepares Wine and the host before the tests; on CI a missing piece fails instead of skipping.
 */
export async function windowsPwshTestGate(what: string): Promise<false | string> {
  const wine = await wineAvailable();
  const missing = !wine ? 'wine is not installed (apt-get install wine)' : !dotnetAvailable() ? 'the dotnet SDK is not on PATH (the Windows pwsh host is built with it)' : null;
  if (missing) {
    const reason = `${missing}: ${what} cannot be tested`;
    if (process.env.CI) test('wine and dotnet are required on CI', () => assert.fail(reason));
    return reason;
  }
  before(() => {
    const r = setupWindowsPwsh();
    if (r.built) console.log(`# Windows pwsh host published in ${r.seconds.toFixed(1)} s`);
  }, { timeout: 900_000 });
  return false;
}

/** Environment for the Windows pwsh: wineEnv() with mscoree enabled and W^X off (see the file comment). */
export function windowsPwshEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return wineEnv({ WINEPREFIX: PWSH_PREFIX, WINEDLLOVERRIDES: 'mshtml=', DOTNET_EnableWriteXorExecute: '0', ...extra });
}

export interface WindowsPwshResult {
  code: number | null;
  stdout: string;
  stderr: string;
  seconds: number;
}

/** How long a test file waits for its turn at the prefix, and how often it looks. */
const PREFIX_TURN = { WAIT_MS: 1_800_000, POLL_MS: 1000, NEW_LOCK_MS: 10_000 } as const;

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * The prefix is one Windows machine: test files that use it at the same time (`npm test` runs two files at once;
 * worktrees whose .tmp/winpwsh links to one folder share it too) share \\.\pipe\retroflect, C:\ProgramData\Retroflect
 * and the service manager, and each one's stopWindowsPwshProcesses() (`wineserver -k`) ends the other's pwsh and
 * engines mid-run. So each file takes its turn: an exclusive lock folder beside the prefix holding the owner's pid,
 * taken over when that process is gone. Call it before the first use of the prefix; call what it returns after the
 * last (after stopWindowsPwshProcesses()).
 */
export async function holdWindowsPwshPrefix(): Promise<() => void> {
  const lock = join(WINPWSH_DIR, 'prefix.lock');
  const pidFile = join(lock, 'pid');
  mkdirSync(WINPWSH_DIR, { recursive: true });
  const started = Date.now();
  for (;;) {
    try {
      mkdirSync(lock);
      writeFileSync(pidFile, String(process.pid));
      return () => rmSync(lock, { recursive: true, force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    let owner = NaN;
    let age = 0;
    try {
      owner = Number(readFileSync(pidFile, 'utf8'));
      age = Date.now() - statSync(lock).mtimeMs;
    } catch {
      // Just made, its pid not written yet: the owner is alive.
    }
    // A lock whose owner is gone (or that never got its pid) is free; one being made right now is not.
    if ((Number.isInteger(owner) && !processAlive(owner)) || (Number.isNaN(owner) && age > PREFIX_TURN.NEW_LOCK_MS)) {
      rmSync(lock, { recursive: true, force: true });
      continue;
    }
    if (Date.now() - started > PREFIX_TURN.WAIT_MS) {
      throw new Error(`the Windows pwsh prefix stayed taken by process ${owner} (${lock})`);
    }
    await new Promise((r) => setTimeout(r, PREFIX_TURN.POLL_MS));
  }
}

/** End every process of our prefix (engines a failed test left running); only ours, never test/wine's. */
export function stopWindowsPwshProcesses(): void {
  spawnSync('wineserver', ['-k'], { env: windowsPwshEnv(), stdio: 'ignore', timeout: 60_000 });
}

/** Run pwsh.exe under Wine with `args` (pwsh's command line), a pty on stdin and output to files under .tmp/winpwsh. */
export function runWindowsPwsh(args: string[], opts: { tag: string; env?: Record<string, string>; timeoutMs?: number; cwd?: string }): Promise<WindowsPwshResult> {
  const outPath = join(WINPWSH_DIR, `${opts.tag}.out.txt`);
  const errPath = join(WINPWSH_DIR, `${opts.tag}.err.txt`);
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn('python3', ['-c', PTY_RUNNER, outPath, errPath, 'wine', PWSH_EXE, ...args], {
      env: windowsPwshEnv(opts.env),
      cwd: opts.cwd ?? WINPWSH_DIR,
      stdio: ['ignore', 'ignore', 'inherit'],
      detached: true, // its own process group, so a time-out ends wine with it
    });
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
    }, opts.timeoutMs ?? 120_000);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      const read = (p: string): string => (existsSync(p) ? readFileSync(p, 'utf8') : '');
      resolve({ code, stdout: read(outPath), stderr: read(errPath), seconds: (performance.now() - started) / 1000 });
    });
  });
}

if (process.argv[1] && import.meta.url === `file://${process.argv[1]}`) {
  try {
    const r = setupWindowsPwsh();
    console.log(`Windows pwsh host ${r.built ? 'published' : 'up to date'} in ${r.seconds.toFixed(1)} s: ${PWSH_EXE}`);
  } catch (e) {
    console.error(String(e));
    process.exit(1);
  }
}

/** What powershell/Tests/Windows/Invoke-WindowsTests.ps1 writes to RETROFLECT_TEST_RESULTS. */
export interface PesterResults {
  passed: number;
  skipped: number;
  notRun: number;
  tests: { name: string; result: string; error: string }[];
  containers: { name: string; result: string; error: string }[];
}

/**
 * A Windows Pester run of `files` (names without .Tests.ps1) passed whole: results written, no container or test
 * failed, exit 0, exactly those files ran, nothing skipped or not run, and at least `minPassed` tests passed.
 * `stdoutTail`: how much of stdout a failure shows.
 */
export function assertWindowsPesterPassed(r: WindowsPwshResult, resultsFile: string, files: readonly string[],
  minPassed: number, stdoutTail: number): void {
  const output = `exit ${r.code}\n--- stdout\n${r.stdout.slice(-stdoutTail)}\n--- stderr\n${r.stderr.slice(-3000)}`;
  assert.ok(existsSync(resultsFile), `the Pester runner wrote no results:\n${output}`);
  const results = JSON.parse(readFileSync(resultsFile, 'utf8')) as PesterResults;
  const failed = [...results.containers, ...results.tests].filter((t) => t.result === 'Failed');
  const failures = failed.map((t) => `${t.name}: ${t.error}`);
  assert.deepEqual(failures, [], `Pester failures:\n${failures.join('\n\n')}\n${output}`);
  assert.equal(r.code, 0, output);
  const ran = results.containers.map((c) => c.name.split(/[\\/]/).pop()).sort();
  assert.deepEqual(ran, files.map((f) => `${f}.Tests.ps1`).sort());
  assert.equal(results.skipped + results.notRun, 0, 'no Pester test skipped or not run');
  assert.ok(results.passed >= minPassed, `only ${results.passed} Pester tests ran`);
}
