/**
 * `koffi` as seen by the bundled executable (scripts/build.mjs aliases the `koffi` import to this file; from source
 * the real package is used). koffi is a native addon, and a single-file executable cannot `require` a file inside
 * itself, so its `koffi.node` travels as a SEA asset and is written out once, next to the config, before loading.
 *
 * The copy lives in a folder only root/Administrators can write (the engine runs elevated: loading a library from a
 * user-writable place would let anyone plant code in it), and it is compared byte for byte before every load.
 * Outside a single-file executable (dist/retroflect.cjs run by node) the koffi package is resolved normally, or
 * from RETROFLECT_KOFFI_NATIVE when set (used by the Wine tests).
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { isAbsolute, join } from 'node:path';

type Koffi = typeof import('koffi');

function runtimeDir(): string {
  if (process.platform === 'win32') return join(process.env.ProgramData ?? 'C:\\ProgramData', 'Retroflect', 'runtime');
  return '/var/lib/retroflect/runtime';
}

function dlopen(path: string): Koffi {
  const mod = { exports: {} as Koffi };
  process.dlopen(mod, path);
  return mod.exports;
}

/**
 * The bundle's own path. A worker started with `eval: true` has no file of its own (`__filename` is "[worker eval]"),
 * so the main thread leaves its path in the environment, which workers inherit.
 */
function bundlePath(): string {
  if (isAbsolute(__filename)) {
    process.env.RETROFLECT_BUNDLE_PATH ??= __filename;
    return __filename;
  }
  return process.env.RETROFLECT_BUNDLE_PATH ?? join(process.cwd(), 'retroflect.cjs');
}

function loadFromSea(): Koffi | null {
  let sea: typeof import('node:sea') | undefined;
  try {
    sea = require('node:sea') as typeof import('node:sea');
  } catch {
    return null;
  }
  if (!sea.isSea()) return null;
  const bytes = Buffer.from(sea.getRawAsset('koffi.node') as ArrayBuffer);
  const digest = createHash('sha256').update(bytes).digest('hex').slice(0, 16);
  const dir = runtimeDir();
  const file = join(dir, `koffi-${digest}.node`);
  if (!existsSync(file) || !readFileSync(file).equals(bytes)) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, bytes, { mode: 0o600 });
    renameSync(tmp, file);
  }
  return dlopen(file);
}

function loadKoffi(): Koffi {
  const fromSea = loadFromSea();
  if (fromSea) return fromSea;
  if (process.env.RETROFLECT_KOFFI_NATIVE) return dlopen(process.env.RETROFLECT_KOFFI_NATIVE);
  // A plain bundle run by node: resolve the package from the bundle's folder upwards, or NODE_PATH.
  const name = 'koffi';
  return createRequire(bundlePath())(name) as Koffi;
}

const koffi: Koffi = loadKoffi();
export default koffi;
