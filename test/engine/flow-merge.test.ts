/**
 * engine/flow-merge.ts: a conversation whose packets took both paths (ebpf: a mapped flow's SYN, FIN and RST in the
 * data plane, the rest in the kernel) is listed once, with everything added up.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { mergeKernelFlows } from '../../src/engine/flow-merge.ts';
import type { FlowRecord } from '../../src/engine/types.ts';

function flow(over: Partial<FlowRecord>): FlowRecord {
  return {
    protocol: 'tcp', reflectAddress: '203.0.113.7', localAddress: '192.0.2.10', clientPort: 40000, serverPort: 8080,
    mappedFromPort: null, packets: 1, bytes: 60, firstSeen: '2026-01-01T00:00:01.000Z',
    lastSeen: '2026-01-01T00:00:02.000Z', state: 'open', pid: null, processName: null, uid: null, user: null,
    packageFamilyName: null, ...over,
  };
}

test('records of one conversation are summed; others are kept apart', () => {
  const user = [
    flow({ mappedFromPort: 80, packets: 4, bytes: 240, state: 'closed', lastSeen: '2026-01-01T00:00:09.000Z' }),
    flow({ clientPort: 40001 }),
  ];
  const kernel = [
    flow({ mappedFromPort: 80, packets: 1000, bytes: 1_000_000, firstSeen: '2026-01-01T00:00:01.500Z',
      lastSeen: '2026-01-01T00:00:08.000Z' }),
    flow({ reflectAddress: '203.0.113.8' }),
  ];
  const out = mergeKernelFlows(user, kernel);
  assert.equal(out.length, 3);
  assert.deepEqual(
    (({ packets, bytes, firstSeen, lastSeen, state, mappedFromPort }) => ({ packets, bytes, firstSeen, lastSeen, state,
      mappedFromPort }))(out[0]),
    { packets: 1004, bytes: 1_000_240, firstSeen: '2026-01-01T00:00:01.000Z', lastSeen: '2026-01-01T00:00:09.000Z',
      state: 'closed', mappedFromPort: 80 },
  );
  assert.deepEqual(out.map((f) => [f.reflectAddress, f.clientPort]), [
    ['203.0.113.7', 40000], ['203.0.113.7', 40001], ['203.0.113.8', 40000],
  ]);
});

test('a record that guessed the ports the wrong way round still merges, and takes the mapped flow\'s ports', () => {
  // No SYN seen here: the data plane guessed the higher port is the client's; the kernel knows from the mapper.
  const user = [flow({ clientPort: 50000, serverPort: 40000, packets: 2 })];
  const kernel = [flow({ clientPort: 40000, serverPort: 50000, mappedFromPort: 443, packets: 10 })];
  const [f, ...rest] = mergeKernelFlows(user, kernel);
  assert.deepEqual(rest, []);
  assert.deepEqual([f.clientPort, f.serverPort, f.mappedFromPort, f.packets], [40000, 50000, 443, 12]);
});
