/**
 * Bundles for child processes that run our code without tsx (which costs about five times the CPU to start), in
 * .tmp/test-cli/ of the checkout, so packages (koffi) still resolve from the bundle's folder upwards. Test files run
 * in parallel processes that may bundle the same sources: each writes its own temporary file and renames it over the
 * shared name, so no process ever starts a half-written bundle. The CLI's own bundle: test/helpers/cli.ts.
 */
import { build } from 'esbuild';
import { chmodSync, mkdirSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The checkout's root folder. */
export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BUNDLE_DIR = join(ROOT, '.tmp', 'test-cli');

/** Writes the bundle `name` through `write(temporaryFile)`, then renames it into place; returns its path. */
export async function writeBundle(name: string, write: (outfile: string) => Promise<unknown>): Promise<string> {
  mkdirSync(BUNDLE_DIR, { recursive: true });
  const bundle = join(BUNDLE_DIR, name);
  const tmp = `${bundle}.${process.pid}.tmp`;
  await write(tmp);
  // Readable and runnable by all: some tests start a bundle as another user (nobody).
  chmodSync(tmp, 0o755);
  renameSync(tmp, bundle);
  return bundle;
}

/**
 * A test script (TypeScript source, ESM imports of src/ by absolute path) bundled into .tmp/test-cli/<name>.cjs, for
 * `spawn(process.execPath, [path])`. Name it after the test file, so different scripts never share a name.
 */
export function bundleScript(name: string, source: string): Promise<string> {
  return writeBundle(`${name}.cjs`, (outfile) => build({
    stdin: { contents: source, loader: 'ts', resolveDir: ROOT, sourcefile: `${name}.ts` },
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    outfile,
    logLevel: 'error',
  }));
}
