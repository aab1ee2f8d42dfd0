#!/usr/bin/env node
// Runs the test files (test/**/*.test.ts) with Node's test runner (through tsx), after building the native test
// double: all of them, or one tier of test/tiers.mjs, narrowed by path filters.
// Usage: npm test [-- <file or folder filter>...]   npm run test:<tier> [-- <filter>...]   (tiers: test/tiers.mjs)
// An argument starting with --test- goes to Node's test runner, e.g. --test-name-pattern=<regexp>.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join, relative, sep } from 'node:path';
import { TIERS, tierOf } from '../test/tiers.mjs';
import { bundleTests } from './bundle.mjs';

/**
 * Test files run at once. Bundled (unit) files are CPU-bound: one per core, at least two. The others mostly wait on
 * namespaces, engines starting, Wine and pwsh (a full run kept 2 cores about half busy at two at once), so one more.
 */
const CONCURRENCY = Math.max(2, availableParallelism());
const CONCURRENCY_FROM_SOURCE = CONCURRENCY + 1;

const root = new URL('..', import.meta.url).pathname;
const testDir = join(root, 'test');

function walk(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else if (name.endsWith('.test.ts')) out.push(relative(testDir, p).split(sep).join('/'));
  }
  return out;
}

function fail(message) {
  console.error(message);
  process.exit(1);
}

const args = process.argv.slice(2);
let tier;
if (args[0] === '--tier') {
  tier = args[1];
  args.splice(0, 2);
  if (!Object.hasOwn(TIERS, tier)) fail(`unknown test tier "${tier}" (tiers: ${Object.keys(TIERS).join(', ')})`);
}
const runnerOptions = args.filter((a) => a.startsWith('--test-'));
const filters = args.filter((a) => !a.startsWith('--test-'));

const all = walk(testDir);
const unclaimed = all.filter((f) => tierOf(f) === undefined);
if (unclaimed.length) {
  fail(`test files in no tier (add them to test/tiers.mjs):\n${unclaimed.map((f) => `  test/${f}`).join('\n')}`);
}

let files = all.map((f) => `test/${f}`);
if (tier) files = files.filter((f) => tierOf(f.slice('test/'.length)) === tier);
if (filters.length) files = files.filter((f) => filters.some((x) => f.includes(x)));
if (!files.length) fail(`no test files matched${tier ? ` in tier ${tier}` : ''}`);

if (existsSync(join(root, 'native', 'Makefile'))) {
  const make = spawnSync('make', ['-s', '-C', join(root, 'native')], { stdio: 'inherit' });
  if (make.status !== 0) process.exit(make.status ?? 1);
}

// Files of a bundled tier run as bundles with plain node, the rest from source through tsx: two runs of the test
// runner, one after the other.
const isBundled = (f) => TIERS[tierOf(f.slice('test/'.length))].bundled === true;
const bundled = files.filter(isBundled);
const fromSource = files.filter((f) => !isBundled(f));
const runs = [];
// Each run bundles into a folder of its own (two runs in one checkout must not remove each other's), removed after.
const outdir = join(root, '.tmp', 'test-bundles', String(process.pid));
if (bundled.length) {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  const args = await bundleTests({ root, version: pkg.version, files: bundled, outdir });
  runs.push({ concurrency: CONCURRENCY, args });
}
if (fromSource.length) runs.push({ concurrency: CONCURRENCY_FROM_SOURCE, args: ['--import', 'tsx', ...fromSource] });
let status = 0;
for (const { concurrency, args: run } of runs) {
  const res = spawnSync(process.execPath, ['--test', `--test-concurrency=${concurrency}`, ...runnerOptions, ...run], {
    cwd: root,
    stdio: 'inherit',
  });
  if (res.status !== 0) status = res.status ?? 1;
}
rmSync(outdir, { recursive: true, force: true });
process.exit(status);
