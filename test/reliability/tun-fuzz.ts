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

export async function runTunFuzz(ns: NetNs, engine: EngineHandle, count: number, seed: number): Promise<TunFuzzResult> {
  const t0 = performance.now();
  const s0 = (await engine.cli(['stats'])).json;
  const d0 = await deviceCounters(ns);
  const inj = new JsonLines(ns.spawn(process.execPath, ['--import', 'tsx', 'test/reliability/tun-injector.ts', String(count), String(seed)]));
  await inj.next((o) => o.ready === true);
  const res = await inj.next((o) => typeof o.written === 'number', 600_000);
  // Let the engine finish what is queued, then read both books.
  await new Promise((r) => setTimeout(r, 500));
  const s1 = (await engine.cli(['stats'])).json;
  const d1 = await deviceCounters(ns);
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
