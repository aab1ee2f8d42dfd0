/**
 * Live changes across threads, as the engine runs them: the WinDivert packet source on a real worker thread (the
 * loop of src/engine/worker.ts with the real Dataplane), WinDivertHostBackend on the main thread opening the new
 * handle first and shutting the old one down, the test double standing in for the driver (one library per process,
 * so this thread injects into the same "network" the worker receives from).
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { MessageChannel, Worker } from 'node:worker_threads';
import { buildInterceptConfig, type InterceptConfig } from '../../../src/config/intercept-config.ts';
import { WinDivertHostBackend } from '../../../src/packet-sources/windivert/host.ts';
import { assertEachReflectedOnce, collectSent, DOUBLE_PATH, loadDouble, startNumberedInjection } from '../../helpers/windivert-double.ts';

const { double } = loadDouble();

/** Under Windows node.exe (test/wine/backend.test.ts) the bundle carries loop-worker.ts already bundled. */
declare const __RETROFLECT_TEST_LOOP_WORKER_SOURCE__: string | undefined;

/** Start loop-worker.ts on a worker thread (tsx's tsImport loads the TypeScript there, or the injected bundle runs). */
function startWorker(data: Record<string, unknown>, port: import('node:worker_threads').MessagePort): Worker {
  const options = { eval: true, workerData: { ...data, port }, transferList: [port as never] };
  if (typeof __RETROFLECT_TEST_LOOP_WORKER_SOURCE__ === 'string') return new Worker(__RETROFLECT_TEST_LOOP_WORKER_SOURCE__, options);
  const target = new URL('./loop-worker.ts', import.meta.url).href;
  const code = `import('tsx/esm/api').then((m) => m.tsImport(${JSON.stringify(target)}, ${JSON.stringify(import.meta.url)}))`;
  return new Worker(code, options);
}

function next(port: import('node:worker_threads').MessagePort, type: string): Promise<Record<string, unknown>> {
  return new Promise((resolve) => {
    const on = (m: Record<string, unknown>) => {
      if (m.type === type) {
        port.off('message', on);
        resolve(m);
      }
    };
    port.on('message', on);
  });
}

test('live change under traffic with the server port shielded: every reflected packet comes out once, none dropped, nothing undecided on the wire; shielded ones dropped', { timeout: 60_000 }, async () => {
  double.reset();
  // The server listens on port 80 and is shielded: the reflected packets (192.0.2.1 → 198.51.100.2:80, inbound) match
  // every new handle's filter (inbound, from a reflect address, to a shield port) and would be dropped as forged or
  // shielded if a handle ever saw them. The worker sends through the newest handle, which skips what it injects.
  let cfg: InterceptConfig = buildInterceptConfig(['192.0.2.1'], ['80/tcp']);
  const backend = new WinDivertHostBackend({ dllPath: DOUBLE_PATH });
  const init = await backend.start(cfg);
  const channel = new MessageChannel();
  const worker = startWorker({ init, config: cfg }, channel.port2);
  let stoppedAlready = false;
  try {
    await next(channel.port1, 'ready');

    const TOTAL = 20_000;
    const injection = startNumberedInjection(double, TOTAL, { shieldedEvery: 5 });
    let changes = 0;
    while (injection.injected < TOTAL) {
      const nextCfg = buildInterceptConfig(['192.0.2.1', `192.0.2.${100 + (changes % 100)}`], ['80/tcp', `${9000 + changes}/udp`]);
      const update = await backend.apply(cfg, nextCfg);
      cfg = nextCfg;
      channel.port1.postMessage({ type: 'reconfigure', config: cfg, update });
      changes++;
      await sleep(3);
    }
    await injection.done;
    assert.equal(injection.refused, 0, 'a receiving handle existed at every moment');
    assert.equal(injection.shieldedRefused, 0);
    assert.ok(injection.shielded > 50, `${injection.shielded} shielded packets from another host`);
    assert.ok(changes >= 3, `config changed ${changes} times while packets flowed`);

    const deadline = Date.now() + 20_000;
    while (Number(double.totalSent()) < TOTAL && Date.now() < deadline) await sleep(20);
    const stopped = next(channel.port1, 'stopped');
    channel.port1.postMessage({ type: 'stop' });
    backend.wake();
    const result = await stopped;
    stoppedAlready = true;
    assert.equal(result.reconfigures, changes);
    assert.equal(result.sendErrors, 0);

    const sent = collectSent(double);
    assertEachReflectedOnce(sent, TOTAL); // also: each was sent by a handle, none released by a close or uncaptured
    assert.equal(double.openHandles(), 1, 'the worker drained and closed every old handle, and its last one on stop (left: the host\'s fragment-drop handle)');
    await backend.stop();
    assert.equal(double.openHandles(), 0);
  } finally {
    // Never leave the worker blocked in RecvEx (it would keep the process alive): shut everything down.
    if (!stoppedAlready) {
      channel.port1.postMessage({ type: 'stop' });
      backend.wake();
      await Promise.race([next(channel.port1, 'stopped'), sleep(2000)]);
    }
    await backend.stop();
    await worker.terminate();
    channel.port1.close();
  }
});
