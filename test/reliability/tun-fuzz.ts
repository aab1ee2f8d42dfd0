/**
 * Runs tun-injector.ts in the engine's namespace and checks the engine's books against the kernel's: the packets
 * the kernel transmitted into the engine's device (its tx counter) must all be decided and counted by the engine
 * (reflected + passed + malformed), and the packets the engine reflected must all have been written back (the
 * device's rx counter).
 */
import { JsonLines, type NetNs } from '../helpers/netns.ts';
import type { EngineHandle } from '../helpers/engine.ts';

const DEVICE = 'rflct0';

export interface TunFuzzResult {
  injected: number;
  handedToEngine: number;
  decided: number;
  reflected: number;
  passed: number;
  malformed: number;
  writtenBack: number;
  returnedToInjector: number;
  sendErrors: number;
  state: string;
  seconds: number;
}

async function deviceCounters(ns: NetNs): Promise<{ tx: number; rx: number }> {
  const [link] = await ns.ipJson<{ stats64: { tx: { packets: number }; rx: { packets: number } } }[]>(['-s', 'link', 'show', 'dev', DEVICE]);
  return { tx: link!.stats64.tx.packets, rx: link!.stats64.rx.packets };
}

/**
 * The engine's stats and the device's counters at one quiet moment: the kernel's own IPv6 traffic on the device
 * (neighbour and router solicitations) can fall between two readings, so read until two rounds agree.
 */
async function books(ns: NetNs, engine: EngineHandle): Promise<{ stats: any; device: { tx: number; rx: number } }> {
  let prev = '';
  for (let i = 0; i < 20; i++) {
    const device = await deviceCounters(ns);
    const stats = (await engine.cli(['stats'])).json;
    const again = await deviceCounters(ns);
    const key = JSON.stringify([device, again, stats.reflected, stats.passed, stats.malformed.total]);
    if (device.tx === again.tx && device.rx === again.rx && key === prev) return { stats, device };
    prev = JSON.stringify([again, again, stats.reflected, stats.passed, stats.malformed.total]);
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error('the engine and device counters never settled');
}

export async function runTunFuzz(ns: NetNs, engine: EngineHandle, count: number, seed: number): Promise<TunFuzzResult> {
  const t0 = performance.now();
  const { stats: s0, device: d0 } = await books(ns, engine);
  const inj = new JsonLines(ns.spawn(process.execPath, ['--import', 'tsx', 'test/reliability/tun-injector.ts', String(count), String(seed)]));
  await inj.next((o) => o.ready === true);
  const res = await inj.next((o) => typeof o.written === 'number', 600_000);
  const { stats: s1, device: d1 } = await books(ns, engine);
  const reflected = s1.reflected.packets - s0.reflected.packets;
  const passed = s1.passed.packets - s0.passed.packets;
  const malformed = s1.malformed.total - s0.malformed.total;
  const state = (await engine.cli(['status'])).json.state as string;
  return {
    injected: res.written as number,
    handedToEngine: d1.tx - d0.tx,
    decided: reflected + passed + malformed,
    reflected,
    passed,
    malformed,
    writtenBack: d1.rx - d0.rx,
    returnedToInjector: res.returned as number,
    sendErrors: s1.errors.send - s0.errors.send,
    state,
    seconds: (performance.now() - t0) / 1000,
  };
}
