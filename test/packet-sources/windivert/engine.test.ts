/**
 * The whole engine on the WinDivert backend: Engine (main thread) + the packet worker thread + WinDivertPacketSource
 * + the real Dataplane, with the ABI-compatible test double standing in for the driver (the double is one library
 * per process, so the test thread injects into the same "network" the worker receives from).
 *
 * Proves that a live config change (new handle opened first, old one drained and closed) loses no packet while
 * packets keep arriving, that stop under traffic decides every captured packet before it closes (issue 9, defect 2),
 * and that send failures reach `stats` by kind (defect 4).
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { buildInterceptConfig } from '../../../src/config/intercept-config.ts';
import { WinDivertHostBackend } from '../../../src/packet-sources/windivert/host.ts';
import { Engine } from '../../../src/engine/engine.ts';
import { assertEachReflectedOnce, collectSent, DOUBLE_PATH, loadDouble, startNumberedInjection } from '../../helpers/windivert-double.ts';

const { double } = loadDouble();

test('live changes while packets flow: every injected packet comes out, reflected, exactly once', { timeout: 60_000 }, async () => {
  double.reset();
  const base = ['192.0.2.1'];
  const engine = await Engine.start({
    config: buildInterceptConfig(base, ['80/tcp']), // the server's own port is shielded: reflected traffic must pass all the same
    backend: new WinDivertHostBackend({ dllPath: DOUBLE_PATH }),
    // Address validation against host routes is not what this test is about; every documentation address is usable.
  });
  try {
    assert.equal(double.openHandles(), 2, 'the capture handle and the fragment-drop handle');
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
    assert.ok(double.openHandles() <= 3);
    const stats = await engine.stats();
    assert.equal(stats.reflected.packets, TOTAL);
  } finally {
    await engine.stop();
  }
  assert.equal(double.openHandles(), 0, 'stop released every handle');
});

const BURST_SEQ = 2_000_000;

test('stop under traffic (Engine.stop, as Ctrl+C, console close and `stop` run it): every captured packet is decided before the handle closes', { timeout: 60_000 }, async () => {
  double.reset();
  const engine = await Engine.start({
    config: buildInterceptConfig(['192.0.2.1'], ['80/tcp']),
    backend: new WinDivertHostBackend({ dllPath: DOUBLE_PATH }),
  });
  const { packet, outboundAddr, inboundAddr } = await import('../../helpers/windivert-double.ts');
  const { addressBuffer } = await import('../../../src/packet-sources/windivert/address.ts');
  // A burst queued faster than the worker can drain it (the double's own loop hands them over), then traffic that
  // keeps coming while the engine stops.
  // Each burst stays well inside the queue (8,192 packets: a full queue drops its oldest, issue 19 item 23).
  const BURST = 3_000;
  const burst = Buffer.from(packet('198.51.100.2', '192.0.2.1', 6, 40000, 80, BURST_SEQ));
  const shielded = Buffer.from(packet('203.0.113.9', '198.51.100.2', 6, 5555, 80, BURST_SEQ + 1));
  const captured = double.injectRepeat(burst, burst.length, addressBuffer(outboundAddr(false)), BURST);
  const capturedShielded = double.injectRepeat(shielded, shielded.length, addressBuffer(inboundAddr(false)), BURST);
  const injection = startNumberedInjection(double, 4000, { shieldedEvery: 1 });
  await engine.stop(); // the burst is still mostly queued when the worker gets the stop
  await injection.done;
  assert.equal(double.openHandles(), 0);
  const wire = collectSent(double);
  assert.deepEqual(wire.filter((w) => w.origin === 'released').length, 0, 'nothing put back undecided by a close');
  const seq = (w: (typeof wire)[number]) => w.bytes.readUInt32LE(40);
  const toServerFromPeer = wire.filter((w) => w.bytes.subarray(12, 16).join('.') === '203.0.113.9');
  assert.deepEqual(toServerFromPeer.filter((w) => w.origin !== 'unclaimed').map(seq), [], 'no captured shielded packet delivered');
  assert.equal(toServerFromPeer.length, injection.shieldedRefused, 'only those that arrived after capture stopped got in');
  const reflected = wire.filter((w) => w.origin === 'sent');
  for (const w of reflected) assert.equal(w.bytes.subarray(12, 16).join('.'), '192.0.2.1');
  assert.equal(reflected.length, captured + (injection.injected - injection.refused), 'every captured packet reflected once');
  const numbered = reflected.filter((w) => seq(w) !== BURST_SEQ);
  assert.equal(new Set(numbered.map(seq)).size, numbered.length, 'no numbered packet twice');
  assert.ok(captured === BURST && capturedShielded === BURST);
  assert.equal(Number(double.queueDropped()), 0, 'no queue overflowed, so every count above is exact');
});

test('send failures reach `stats` by kind: ERROR_HOST_UNREACHABLE as expected, anything else as an alarm', { timeout: 60_000 }, async () => {
  double.reset();
  const engine = await Engine.start({
    config: buildInterceptConfig(['192.0.2.1'], []),
    backend: new WinDivertHostBackend({ dllPath: DOUBLE_PATH }),
  });
  try {
    const { inject, outboundAddr, packet } = await import('../../helpers/windivert-double.ts');
    const waitFor = async (done: () => Promise<boolean>) => {
      const deadline = Date.now() + 20_000;
      while (!(await done()) && Date.now() < deadline) await sleep(20);
    };
    double.setSendFailure(-1, 'tcp.SrcPort == 40001', 1232);
    for (let i = 0; i < 3; i++) inject(double, packet('198.51.100.2', '192.0.2.1', 6, 40000 + i, 80, i), outboundAddr(false));
    await waitFor(async () => (await engine.stats()).errors.sendExpected.hostUnreachable === 1);
    double.setSendFailure(-1, 'tcp.SrcPort == 40002', 31);
    for (let i = 0; i < 3; i++) inject(double, packet('198.51.100.2', '192.0.2.1', 6, 40000 + i, 80, i), outboundAddr(false));
    await waitFor(async () => (await engine.stats()).errors.send === 1);
    const stats = await engine.stats();
    assert.deepEqual(stats.errors, { receive: 0, send: 1, sendExpected: { hostUnreachable: 1, icmpRefused: 0 } });
    assert.equal(collectSent(double).length, 4, 'the other packets of both batches went out');
  } finally {
    await engine.stop();
  }
});
