/**
 * The real `retroflect` CLI for tests that start it as a child process: bundled from src/ once per test process
 * (with scripts/bundle.mjs, exactly as `npm run build` bundles dist/retroflect.cjs) into .tmp/test-cli/ and run with
 * plain node, which costs about a fifth of the CPU of starting the source through tsx (test/helpers/bundle.ts).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
// @ts-expect-error: a plain .mjs script without type declarations
import { bundleCli } from '../../scripts/bundle.mjs';
import { ROOT, writeBundle } from './bundle.ts';

const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };

/** The bundled CLI script. */
export const CLI_BUNDLE: string = await writeBundle('retroflect.cjs', (outfile) =>
  bundleCli({ root: ROOT, version: pkg.version, outfile, logLevel: 'error' }));

/** Node's arguments that start the CLI, before the CLI's own: `spawn(process.execPath, [...CLI_ARGV, ...args])`. */
export const CLI_ARGV: readonly string[] = [CLI_BUNDLE];
