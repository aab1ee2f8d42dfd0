/**
 * The whole engine on the WinDivert backend: Engine (main thread) + the packet worker thread + WinDivertPacketSource
 * + the real Dataplane, with the ABI-compatible test double standing in for the driver (the double is one library
 * per process, so the test thread injects into the same "network" the worker receives from).
 *
 * Proves that a live config change (new handle opened first, old one drained and closed) loses no packet while
 * packets keep arriving, and that stop releases every handle.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { buildInterceptConfig } from '../../../src/config/intercept-config.ts';
import { WinDivertHostBackend } from '../../../src/packet-sources/windivert/windivert.ts';
import { Engine } from '../../../src/engine/engine.ts';
import { assertEachReflectedOnce, collectSent, DOUBLE_PATH, loadDouble, startNumberedInjection } from './double.ts';

const { double } = loadDouble();

test('live changes while packets flow: every injected packet comes out, reflected, exactly once', { timeout: 60_000 }, async () => {
  double.reset();
  const base = ['192.0.2.1'];
  const engine = await Engine.start({
    config: buildInterceptConfig(base, ['8080/tcp']),
    backend: new WinDivertHostBackend({ dllPath: DOUBLE_PATH }),
    // Address validation against host routes is not what this test is about; every documentation address is usable.
    validateAddress: async (address) => ({ address, warnings: [] }),
  });
  try {
    assert.equal(double.openHandles(), 1);
    const TOTAL = 20_000;
    const injection = startNumberedInjection(double, TOTAL);
    let changes = 0;
    while (injection.injected < TOTAL) {
      const extra = `192.0.2.${100 + (changes % 50)}`;
      const port = 9000 + (changes % 500);
      let cfg = engine.config();
      await engine.reconfigure({ ...cfg, reflectAddresses: [...cfg.reflectAddresses, extra] }); // widens the filter: new handle
      cfg = engine.config();
      if (!cfg.shieldPorts.some((p) => p.port === port)) await engine.reconfigure({ ...cfg, shieldPorts: [...cfg.shieldPorts, { port, protocol: 'udp' }] });
      cfg = engine.config();
      await engine.reconfigure({ ...cfg, reflectAddresses: cfg.reflectAddresses.filter((a) => a !== extra) }); // narrows it again: another handle
      changes += 3;
      await sleep(3);
    }
    await injection.done;
    assert.equal(injection.refused, 0, 'a receiving handle existed at every moment');
    assert.ok(changes >= 6, `config changed ${changes} times while packets flowed`);
    const deadline = Date.now() + 20_000;
    while (Number(double.totalSent()) < TOTAL && Date.now() < deadline) await sleep(20);
    const sent = collectSent(double);
    assertEachReflectedOnce(sent, TOTAL);
    assert.ok(double.openHandles() <= 2);
    const stats = await engine.stats();
    assert.equal(stats.reflected.packets, TOTAL);
  } finally {
    await engine.stop();
  }
  assert.equal(double.openHandles(), 0, 'stop released every handle');
});
