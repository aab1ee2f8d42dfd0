/**
 * The engine's log file (src/platform/log-file.ts) on a real file system: size cap and rotation to .1 .. .3, and
 * writes that fail (a full device, a folder that is a file) lose lines without throwing, and say so later.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { LogFile, ROTATED_LOG_FILES } from '../../src/platform/log-file.ts';
import { parseLogSize } from '../../src/cli/log-options.ts';

const dir = mkdtempSync(join(tmpdir(), 'rft-logfile-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('a capped log rotates to .1 .. .3, stays under its cap, keeps the newest lines in order', () => {
  const path = join(dir, 'logs', 'engine.log'); // the folder is created on first write
  const cap = 16 * 1024;
  const log = new LogFile(path, cap);
  const line = (i: number): string => `line ${String(i).padStart(6, '0')} ${'x'.repeat(80)}`;
  for (let i = 0; i < 1000; i++) log.write(line(i));
  log.close();
  const files = [`${path}.${ROTATED_LOG_FILES}`, `${path}.2`, `${path}.1`, path];
  for (const f of files) {
    assert.ok(existsSync(f), `${f} exists`);
    assert.ok(statSync(f).size <= cap, `${f} is ${statSync(f).size} bytes, over the cap`);
  }
  assert.equal(existsSync(`${path}.${ROTATED_LOG_FILES + 1}`), false, 'no more rotated files than kept');
  const numbers = files.flatMap((f) => readFileSync(f, 'utf8').trim().split('\n')).map((l) => Number(l.split(' ')[1]));
  assert.equal(numbers.at(-1), 999, 'the newest line is last in the current file');
  for (let i = 1; i < numbers.length; i++) {
    assert.equal(numbers[i], numbers[i - 1] + 1, 'no line lost or reordered across files');
  }
  assert.ok(numbers[0] > 0, 'the oldest lines went with the oldest file');
});

test('a failed write (full disk) neither throws nor stops later writes; the next line says how many were lost', () => {
  const full = new LogFile('/dev/full');
  assert.doesNotThrow(() => full.write('to a full device'));
  full.close();

  const blocker = join(dir, 'blocked');
  writeFileSync(blocker, 'a file where the log folder should be');
  const path = join(blocker, 'engine.log');
  const log = new LogFile(path);
  log.write('lost 1');
  log.write('lost 2');
  rmSync(blocker);
  log.write('after the folder came back');
  log.close();
  assert.deepEqual(readFileSync(path, 'utf8').trim().split('\n'), [
    '(2 earlier log lines were lost: the log file could not be written)',
    'after the folder came back',
  ]);
});

test('--log-size takes bytes or K/M/G within 16K..1G, and refuses the rest with E_USAGE', () => {
  assert.equal(parseLogSize(undefined), undefined);
  assert.equal(parseLogSize('10M'), 10 * 1024 * 1024);
  assert.equal(parseLogSize('16384'), 16384);
  assert.equal(parseLogSize('1G'), 1024 ** 3);
  for (const bad of ['0', '1K', '2G', 'ten', '-5M', '']) {
    assert.throws(() => parseLogSize(bad), { code: 'E_USAGE' }, bad);
  }
});
