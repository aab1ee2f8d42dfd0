#!/usr/bin/env node
// Runs every test/**/*.test.ts with Node's test runner (through tsx), after building the native test double.
// Usage: npm test [-- <file or folder filter>...]
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const filters = process.argv.slice(2);

function walk(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else if (name.endsWith('.test.ts')) out.push(relative(root, p));
  }
  return out;
}

if (existsSync(join(root, 'native', 'Makefile'))) {
  const make = spawnSync('make', ['-s', '-C', join(root, 'native')], { stdio: 'inherit' });
  if (make.status !== 0) process.exit(make.status ?? 1);
}

let files = walk(join(root, 'test'));
if (filters.length) files = files.filter((f) => filters.some((x) => f.includes(x)));
if (!files.length) {
  console.error('no test files matched');
  process.exit(1);
}
const res = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=2', ...files], {
  cwd: root,
  stdio: 'inherit',
});
process.exit(res.status ?? 1);
