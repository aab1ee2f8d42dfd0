#!/usr/bin/env node
// The house style a reader can check without tools: no line longer than MAX_LINE_LENGTH in the code and scripts, and
// a comment stating the file's job at the top of every src/ file. Lines over the limit that were there when this
// check came are listed per file in scripts/lint-baseline.json; a file may not gain more, and the list only shrinks.
// Usage: npm run lint [-- --shrink-baseline]   (also run by test/structure/lint.test.ts, so by npm run test:unit)
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The longest line allowed, in characters (what the comments and README are wrapped at). */
export const MAX_LINE_LENGTH = 120;
/** The folders checked, and the files in them that hold code. */
export const CHECKED_FOLDERS = ['src', 'test', 'bench', 'scripts', 'powershell'];
const CODE_FILE = /\.(ts|mjs|cjs|js|ps1|psm1)$/;
/** Folders that hold what tools made or fetched, not what we wrote. */
const SKIPPED_FOLDERS = new Set(['node_modules', 'dist', 'build', 'bin', 'obj', '.tmp']);
/** Files whose job comment is checked: every source file of the product. */
const JOB_COMMENT_FOLDER = 'src/';
export const BASELINE_FILE = 'scripts/lint-baseline.json';

function codeFiles(root, dir) {
  const out = [];
  let names;
  try {
    names = readdirSync(join(root, dir)).sort();
  } catch {
    return out;
  }
  for (const name of names) {
    const rel = `${dir}/${name}`;
    if (statSync(join(root, rel)).isDirectory()) {
      if (!SKIPPED_FOLDERS.has(name)) out.push(...codeFiles(root, rel));
    } else if (CODE_FILE.test(name)) out.push(rel);
  }
  return out;
}

/** True when the first line with text (after a #! line) opens a comment. */
function hasJobComment(text) {
  const first = text.split('\n').find((l) => l.trim() !== '' && !l.startsWith('#!'));
  return first !== undefined && /^\s*(\/\/|\/\*)/.test(first);
}

/**
 * Check every code file under `root`: returns `problems` (each fails the lint), `longLines` (per file, how many lines
 * are over the limit) and `shrinkable` (baseline entries higher than what the file has now).
 */
export function lint(root, baseline) {
  const problems = [];
  const longLines = {};
  for (const file of CHECKED_FOLDERS.flatMap((d) => codeFiles(root, d))) {
    const text = readFileSync(join(root, file), 'utf8');
    const long = [];
    text.split(/\r?\n/).forEach((line, i) => {
      const length = [...line].length;
      if (length > MAX_LINE_LENGTH) long.push(`${file}:${i + 1}: ${length} characters`);
    });
    if (long.length) longLines[file] = long.length;
    const allowed = baseline[file] ?? 0;
    if (long.length > allowed) {
      const known = allowed ? ` (${allowed} known in ${BASELINE_FILE})` : '';
      const over = `${long.length} lines over ${MAX_LINE_LENGTH} characters${known}`;
      problems.push(`${file}: ${over}:\n    ${long.join('\n    ')}`);
    }
    if (file.startsWith(JOB_COMMENT_FOLDER) && !hasJobComment(text)) {
      problems.push(`${file}: no comment at the top stating the file's job`);
    }
  }
  const shrinkable = Object.keys(baseline).filter((f) => (longLines[f] ?? 0) < baseline[f]);
  return { problems, longLines, shrinkable };
}

function main() {
  const root = relative(process.cwd(), fileURLToPath(new URL('..', import.meta.url))) || '.';
  const baseline = JSON.parse(readFileSync(join(root, BASELINE_FILE), 'utf8'));
  const { problems, longLines, shrinkable } = lint(root, baseline);
  if (process.argv.includes('--shrink-baseline')) {
    // Lower entries to what the files have now and drop fixed files; never raise one or add a file.
    const shrunk = {};
    for (const [file, count] of Object.entries(baseline)) {
      const now = Math.min(count, longLines[file] ?? 0);
      if (now > 0) shrunk[file] = now;
    }
    writeFileSync(join(root, BASELINE_FILE), `${JSON.stringify(shrunk, null, 2)}\n`);
    console.log(`${BASELINE_FILE}: ${shrinkable.length} entries lowered or dropped`);
  } else if (shrinkable.length) {
    console.log(`fewer long lines than ${BASELINE_FILE} allows in ${shrinkable.length} files: ` +
      'run `npm run lint -- --shrink-baseline` to keep them from coming back');
  }
  for (const p of problems) console.error(p);
  if (problems.length) {
    console.error(`lint: ${problems.length} problems`);
    process.exit(1);
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) main();
