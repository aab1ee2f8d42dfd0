/**
 * A Wine prefix of its own for the service tests (.tmp/wine-service/prefix): Wine's service manager (services.exe)
 * runs there with the environment and stderr of the command that booted the prefix, so each test boots it afresh
 * with what the service needs (the WinDivert double's files, WINEDEBUG=+eventlog for the Event Log text) and keeps
 * `wineserver -p` up until it ends the prefix (`wineserver -k`, only this prefix's processes). Apart from test/wine's
 * and the Windows pwsh's prefixes, so tests of those may run at the same time.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, runWine, wineEnv, type WineResult } from './setup.ts';

export const SERVICE_DIR = join(ROOT, '.tmp', 'wine-service');
export const SERVICE_PREFIX = join(SERVICE_DIR, 'prefix');
/** Where the booting command's stderr goes: services inherit it, so the Event Log text lands here. */
export const BOOT_ERR = join(SERVICE_DIR, 'boot.err.txt');

function prefixFailed(prefix: string, argv: string[], r: { error?: Error; status: number | null }): Error {
  return new Error(`the Wine prefix ${prefix}: '${argv.join(' ')}' failed (${r.error ?? `exit ${r.status}`})`);
}

function serviceEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return wineEnv({ WINEPREFIX: SERVICE_PREFIX, ...extra });
}

/** Make the prefix once (wineboot, Windows 10), as test/wine/setup.ts makes its own. */
export function ensureServicePrefix(): void {
  if (existsSync(join(SERVICE_PREFIX, 'system.reg'))) return;
  rmSync(SERVICE_PREFIX, { recursive: true, force: true });
  mkdirSync(SERVICE_DIR, { recursive: true });
  for (const argv of [['wineboot', '-i'], ['wine', 'winecfg', '/v', 'win10'], ['wineserver', '-w']]) {
    const r = spawnSync(argv[0], argv.slice(1), { env: serviceEnv(), stdio: 'ignore', timeout: 300_000 });
    if (r.error || r.status !== 0) throw prefixFailed(SERVICE_PREFIX, argv, r);
  }
}

/** End every process of the prefix (services included). */
export function endServicePrefix(): void {
  spawnSync('wineserver', ['-k'], { env: serviceEnv(), stdio: 'ignore', timeout: 60_000 });
  spawnSync('wineserver', ['-w'], { env: serviceEnv(), stdio: 'ignore', timeout: 60_000 });
}

/** Start wineserver and services.exe; stdio on files (node.exe under Wine crashes on a Linux pipe, and services
 * would hold a pipe open for ever). */
function boot(full: NodeJS.ProcessEnv): void {
  const p = spawnSync('wineserver', ['-p'], { env: full, stdio: 'ignore', timeout: 60_000 });
  if (p.error || p.status !== 0) throw new Error(`wineserver -p failed (${p.error ?? `exit ${p.status}`})`);
  const out = openSync(join(SERVICE_DIR, 'boot.out.txt'), 'w');
  const err = openSync(BOOT_ERR, 'w');
  const nul = openSync('/dev/null', 'r');
  try {
    const stdio: [number, number, number] = [nul, out, err];
    const r = spawnSync('wine', ['cmd', '/c', 'exit', '0'], { env: full, cwd: SERVICE_DIR, stdio, timeout: 180_000 });
    if (r.error || r.status !== 0) throw prefixFailed(SERVICE_PREFIX, ['wine', 'cmd', '/c', 'exit', '0'], r);
  } finally {
    for (const fd of [out, err, nul]) closeSync(fd);
  }
}

const SYSTEM_ENVIRONMENT = 'HKLM\\System\\CurrentControlSet\\Control\\Session Manager\\Environment';

/**
 * Start the prefix afresh with `systemEnv` as system environment variables (a variable set to '' is removed):
 * Wine's services.exe gives services the system environment from the registry, read when it starts, not its own
 * environment; it does pass on the Unix side's WINEDEBUG and stderr, so services log ReportEventW calls to BOOT_ERR.
 */
export function bootServicePrefix(systemEnv: Record<string, string>): void {
  endServicePrefix();
  const full = serviceEnv({ WINEDEBUG: '+eventlog' });
  boot(full);
  for (const [name, value] of Object.entries(systemEnv)) {
    const args = value === ''
      ? ['reg', 'delete', SYSTEM_ENVIRONMENT, '/v', name, '/f']
      : ['reg', 'add', SYSTEM_ENVIRONMENT, '/v', name, '/d', value, '/f'];
    spawnSync('wine', args, { env: serviceEnv(), stdio: 'ignore', timeout: 60_000 });
  }
  endServicePrefix();
  boot(full);
}

/** A Windows program in the service prefix (output to files; WINEDEBUG off for the program itself). */
export function runInServicePrefix(args: string[], tag: string, env: Record<string, string> = {}, timeoutMs = 120_000):
  Promise<WineResult> {
  const wineEnvironment = { WINEPREFIX: SERVICE_PREFIX, ...env };
  return runWine(args, { tag: `service-${tag}`, env: wineEnvironment, timeoutMs, cwd: SERVICE_DIR });
}

/** Wine's sc.exe (argument array; sc's `name= value` pairs as two arguments, as sc.exe wants them). */
export async function sc(args: string[]): Promise<WineResult> {
  return runInServicePrefix(['sc', ...args], `sc-${args[0]}`);
}

export interface ScState {
  state: string;
  win32ExitCode: number;
  serviceExitCode: number;
}

/** `sc query <name>` parsed; null when sc knows no such service. */
export async function scQuery(name: string): Promise<ScState | null> {
  const r = await sc(['query', name]);
  const state = /STATE\s*:\s*\d+\s+(\w+)/.exec(r.stdout);
  if (!state) return null;
  return {
    state: state[1],
    win32ExitCode: Number(/WIN32_EXIT_CODE\s*:\s*(\d+)/.exec(r.stdout)?.[1]),
    serviceExitCode: Number(/SERVICE_EXIT_CODE\s*:\s*(\d+)/.exec(r.stdout)?.[1]),
  };
}

/** Poll `sc query` until the state is `want` (or the time is up); returns the last answer. */
export async function waitForState(name: string, want: string, timeoutMs = 90_000): Promise<ScState | null> {
  const end = Date.now() + timeoutMs;
  let last: ScState | null = null;
  while (Date.now() < end) {
    last = await scQuery(name);
    if (last?.state === want) return last;
    await new Promise((r) => setTimeout(r, 1000));
  }
  return last;
}

/** Event IDs and types ReportEventW was called with, in order, from the boot command's stderr (Wine's trace). */
export function reportedEvents(): { id: number; type: number; text: string }[] {
  const text = existsSync(BOOT_ERR) ? readFileSync(BOOT_ERR, 'utf8') : '';
  const events: { id: number; type: number; text: string }[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const m = /ReportEventW \([0-9A-Fa-f]+,0x([0-9a-f]{4}),0x[0-9a-f]{4},0x([0-9a-f]{8}),/.exec(lines[i]);
    if (!m) continue;
    const t = /(?:trace|warn|err):eventlog:ReportEventW L"(.*)/.exec(lines[i + 1] ?? '');
    events.push({ type: parseInt(m[1], 16), id: parseInt(m[2], 16), text: t ? t[1] : '' });
  }
  return events;
}

/**
 * The Pester files of powershell/Tests/Windows about the service (install, detached start): run by
 * test/wine/service-powershell.test.ts, so `npm test -- service` selects them, and skipped by powershell.test.ts.
 */
export const SERVICE_PESTER_FILES = ['Installation', 'Detached'];
/**
 * The Pester files about the release archive's scripts (Install/Detect/Uninstall.ps1, the fleet cases): run by
 * test/release/deploy-windows.test.ts, so `npm test -- release` selects them, and skipped by powershell.test.ts.
 */
export const RELEASE_PESTER_FILES = ['Release', 'ReleaseDeploy'];

/**
 * The Windows pwsh's own prefix for the service's Pester files, apart from powershell.test.ts's (which ends its
 * prefix's processes with `wineserver -k`; the two may run at the same time).
 */
export const PWSH_SERVICE_PREFIX = join(ROOT, '.tmp', 'winpwsh-service', 'prefix');

/** Make the prefix once (or another of the same kind: the release scripts' tests have their own). */
export function ensurePwshServicePrefix(prefix = PWSH_SERVICE_PREFIX): void {
  if (existsSync(join(prefix, 'system.reg'))) return;
  rmSync(prefix, { recursive: true, force: true });
  mkdirSync(join(prefix, '..'), { recursive: true });
  const env = wineEnv({ WINEPREFIX: prefix });
  for (const argv of [['wineboot', '-i'], ['wine', 'winecfg', '/v', 'win10'], ['wineserver', '-w']]) {
    const r = spawnSync(argv[0], argv.slice(1), { env, stdio: 'ignore', timeout: 300_000 });
    if (r.error || r.status !== 0) throw prefixFailed(prefix, argv, r);
  }
}

export function endPwshServicePrefix(prefix = PWSH_SERVICE_PREFIX): void {
  const env = wineEnv({ WINEPREFIX: prefix });
  spawnSync('wineserver', ['-k'], { env, stdio: 'ignore', timeout: 60_000 });
}
