/**
 * The mapped-flow table when it is full (issue 19, item 17): a flood of flows the server never answers cannot starve
 * other flows (a new flow takes the slot of the unanswered one idle longest), while a flow the server answered is
 * never evicted (a full window of answered flows refuses the new one, as before). A table of 16 entries is one probe
 * window, so every flow competes for the same 16 slots.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Verdict } from '../../src/packet/verdicts.ts';
import { EngineCounters } from '../../src/engine/counters.ts';
import { Dataplane } from '../../src/engine/dataplane.ts';
import { FlowTable } from '../../src/engine/flow-table.ts';
import { MAPPED_PROBE_WINDOW, PortMapper } from '../../src/engine/port-mapper.ts';
import { ipv4, udpDatagram, withChecksum, addressBytes } from '../helpers/packet-builders.ts';

const L = '192.0.2.10';
const R = '203.0.113.7';
const T0 = Date.UTC(2026, 0, 1);

function setup() {
  const counters = new EngineCounters();
  const mapper = new PortMapper(MAPPED_PROBE_WINDOW);
  const dp = new Dataplane(counters, new FlowTable({ capacity: 64 }), mapper);
  const portMaps = [{ address: R, protocol: 'udp' as const, port: 53, target: 5353 }];
  dp.configure({ reflect: [{ address: R, slot: 0 }], shield: [], portMaps });
  return { dp, counters, mapper };
}

/** A UDP datagram L:src → R:dst, as this host sends it. */
function datagram(src: number, dst: number, data: number[]): Uint8Array {
  const payload = withChecksum(addressBytes(L), addressBytes(R), 17, udpDatagram(src, dst, data));
  return ipv4({ src: L, dst: R, proto: 17, payload });
}

/** A datagram L:src → R:dst through the data plane; returns its verdict and destination port. */
function send(dp: Dataplane, src: number, dst: number, now: number): { verdict: number; dstPort: number } {
  const pkt = datagram(src, dst, [1, 2]);
  const buf = Uint8Array.from(pkt);
  const verdict = dp.outbound(buf, 0, buf.length, now);
  return { verdict, dstPort: (buf[22] << 8) | buf[23] };
}

describe('a full mapped-flow table', () => {
  it('a new flow takes the slot of the unanswered flow idle longest: a flood cannot starve the others', () => {
    const { dp, counters, mapper } = setup();
    // One program opens 16,000 flows to R:53 that the server never answers, 1 ms apart.
    for (let i = 0; i < 16000; i++) assert.equal(send(dp, 10000 + i, 53, T0 + i).verdict, Verdict.Reflect);
    // Another program's query still opens its mapped flow (delivered to 5353), and its answer maps back to 53.
    const now = T0 + 16000;
    assert.deepEqual(send(dp, 40000, 53, now), { verdict: Verdict.Reflect, dstPort: 5353 });
    const reply = datagram(5353, 40000, [3]);
    const rbuf = Uint8Array.from(reply);
    assert.equal(dp.outbound(rbuf, 0, rbuf.length, now + 1), Verdict.Reflect);
    assert.equal((rbuf[20] << 8) | rbuf[21], 53, 'the answer leaves from the mapped port');
    assert.equal(counters.snapshot().portMapRefused, 0);
    assert.equal(mapper.evicted, 16000 - MAPPED_PROBE_WINDOW + 1);
    // The evicted ones were the oldest: the 15 newest flood flows and the answered one are what the table holds.
    const live = mapper.liveEntries(now + 1).map((e) => e.clientPort).sort((a, b) => a - b);
    assert.deepEqual(live, [...Array.from({ length: 15 }, (_, i) => 10000 + 16000 - 15 + i), 40000]);
  });

  it('a flow the server answered is never evicted: a window full of answered flows refuses the new one', () => {
    const { dp, counters, mapper } = setup();
    for (let i = 0; i < MAPPED_PROBE_WINDOW; i++) {
      send(dp, 20000 + i, 53, T0 + i);
      const reply = datagram(5353, 20000 + i, [3]);
      dp.outbound(Uint8Array.from(reply), 0, reply.length, T0 + i);
    }
    assert.equal(send(dp, 40000, 53, T0 + 100).verdict, Verdict.Drop);
    assert.equal(counters.snapshot().portMapRefused, 1);
    assert.equal(mapper.evicted, 0);
    // Once they expire (60 s idle for UDP), there is room again.
    assert.deepEqual(send(dp, 40000, 53, T0 + 100 + 60_001), { verdict: Verdict.Reflect, dstPort: 5353 });
  });
});
