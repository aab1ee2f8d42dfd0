/**
 * isAdministrator() on Windows: the real Windows node.exe and koffi's Windows prebuilt under Wine (set up by
 * test/wine/setup.ts) call shell32's IsUserAnAdmin through our binding. Wine runs programs as an administrator, so
 * the answer must be true — this proves the binding loads and calls, which is all the Windows branch does.
 * Without wine it skips locally and fails on CI (as the other Wine tests do).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { bundle, NODE_EXE, ROOT, runWine, wineTestGate } from '../wine/setup.ts';

const skip = await wineTestGate('the Windows privilege check');

test('isAdministrator() under Windows node.exe calls IsUserAnAdmin and returns true under Wine', { skip, timeout: 180_000 }, async () => {
  const script = await bundle(join(ROOT, 'test', 'platform', 'fixtures', 'privileges-entry.ts'), 'privileges-entry');
  const r = await runWine([NODE_EXE, script], { tag: 'privileges-entry', timeoutMs: 150_000 });
  const line = r.stdout.replace(/\r/g, '').trim().split('\n').at(-1) ?? '';
  assert.deepEqual(JSON.parse(line || '{}'), { platform: 'win32', admin: true }, `exit ${r.code}\n${r.stdout}\n${r.stderr.slice(-2000)}`);
});
