/**
 * What the malformed-packet tests (malformed.test.ts) and the long packet fuzz (test/reliability/packet-fuzz.ts)
 * start from: every captured fixture and corpus packet, and a data plane that reflects every destination found in
 * them, so mutated packets are decided as reflected or shielded, not just passed.
 */
import { EngineCounters } from '../../src/engine/counters.ts';
import { Dataplane } from '../../src/engine/dataplane.ts';
import { FlowTable } from '../../src/engine/flow-table.ts';
import { corpus } from './corpus.ts';
import { FIXTURES, loadFixture } from './fixture-files.ts';

export function seedPackets(): Uint8Array[] {
  return [...FIXTURES.flatMap((f) => loadFixture(f).map((p) => p.data)), ...corpus().map((c) => c.bytes)];
}

export function reflectingDataplane(flowCapacity: number): { dp: Dataplane; counters: EngineCounters } {
  const counters = new EngineCounters();
  const dp = new Dataplane(counters, new FlowTable({ capacity: flowCapacity }));
  dp.configure({
    reflect: ['198.51.100.2', '198.51.100.1', '2001:db8:1::2', '2001:db8:1::1', '203.0.113.7', '2001:db8:ffff::7'].map((address, slot) => ({ address, slot })),
    shield: [
      { port: 8080, protocol: 'tcp', slot: 0 },
      { port: 5353, protocol: 'udp', slot: 1 },
    ],
  });
  return { dp, counters };
}
