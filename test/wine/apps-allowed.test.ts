/**
 * Apps lists as Windows runs them (issue 23): test/packet-sources/windivert/apps-allowed.test.ts bundled and run by
 * the Windows node.exe under Wine against the mingw WinDivert.dll double — the engine, its packet worker, the app
 * gate reading the double's SOCKET layer through koffi's async calls, and there the REAL process lookup
 * (OpenProcess, QueryFullProcessImageNameW, GetProcessTimes, GetPackageFamilyName through kernel32) on the test's
 * own process. Skips without Wine locally, fails on CI.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { join } from 'node:path';
import { bundle, NODE_EXE, ROOT, runWine, wineTestGate, winPath } from './setup.ts';

const skip = await wineTestGate('apps lists on Windows');
const DLL = join(ROOT, 'native', 'build', 'win64', 'WinDivert.dll');

const TAG = 'windivert-apps-allowed-test';

test('apps-allowed.test.ts passes under Windows node.exe, the Win32 process lookup included', {
  skip,
  timeout: 300_000,
}, async () => {
  const script = await bundle(join(ROOT, 'test', 'packet-sources', 'windivert', 'apps-allowed.test.ts'), TAG);
  const env = { RETROFLECT_TEST_WINDIVERT_DLL: winPath(DLL) };
  const r = await runWine([NODE_EXE, script], { tag: TAG, env, timeoutMs: 240_000 });
  const stdout = r.stdout.replace(/\r/g, '');
  const summary = /# pass (\d+)\s+# fail (\d+)\s+# cancelled \d+\s+# skipped (\d+)/.exec(stdout);
  assert.ok(summary, `no summary from node.exe (exit ${r.code}):\n${stdout.slice(-2000)}\n${r.stderr.slice(-2000)}`);
  const failures = stdout.split('\n').filter((l) => /^not ok|error:|expected|actual/.test(l.trim()));
  assert.equal(Number(summary[2]), 0, failures.join('\n'));
  for (const name of ['Win32 process lookup', 'apps with the real lookup']) {
    assert.match(stdout, new RegExp(`^ok \\d+ - ${name}[^\n#]*$`, 'm'), `${name} ran and passed (not skipped)`);
  }
  assert.equal(Number(summary[3]), 1, 'only the Unix-socket control-plane test skipped');
  assert.equal(Number(summary[1]), 7);
  assert.equal(r.code, 0);
});
