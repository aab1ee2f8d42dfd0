/**
 * The port mapper as the authority over a kernel cache of its decisions (ebpf: PacketSource.mappedFlowCache): which
 * flows it hands over and when (answered only), when it takes them back (an end, idle, its map removed), and that
 * its idle expiry asks the kernel before treating a cached flow as idle. The kernel is replaced here by a recording
 * test double (RecordingCache); the real cache is tested against the kernel in
 * test/packet-sources/ebpf/mapped-rewrite.test.ts and end to end in test/packet-sources/ebpf/mapped-flows.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Verdict } from '../../src/packet/verdicts.ts';
import { EngineCounters } from '../../src/engine/counters.ts';
import { Dataplane } from '../../src/engine/dataplane.ts';
import { FlowTable } from '../../src/engine/flow-table.ts';
import { MAPPED_FLOW_IDLE_MS, PortMapper } from '../../src/engine/port-mapper.ts';
import type { MappedFlowCache, MappedFlowRef } from '../../src/packet-sources/packet-source.ts';
import { addressBytes, ipv4, tcpSegment, udpDatagram, withChecksum } from '../helpers/packet-builders.ts';

const L = '192.0.2.10';
const R = '203.0.113.7';
const T0 = Date.UTC(2026, 0, 1);
const SYN = 0x02;
const ACK = 0x10;
const FIN = 0x01;
const RST = 0x04;

type Seen = { clientPort: number; serverPort: number; mappedPort: number; protocol: number; r: number; l: number };

/** Test double of the kernel cache: records what the mapper hands over and takes back; `kernelLastSeen` is what the
 *  kernel would answer for when it last rewrote a packet. */
class RecordingCache implements MappedFlowCache {
  installs: Seen[] = [];
  removes: (Seen & { ended: boolean })[] = [];
  kernelLastSeen = 0;
  asked = 0;
  private seen(f: MappedFlowRef): Seen {
    const { clientPort, serverPort, mappedPort, protocol } = f;
    return { clientPort, serverPort, mappedPort, protocol, r: f.words[f.addressAt], l: f.words[f.addressAt + 4] };
  }
  install(f: MappedFlowRef): boolean {
    this.installs.push(this.seen(f));
    return true;
  }
  remove(f: MappedFlowRef, ended: boolean): void {
    this.removes.push({ ...this.seen(f), ended });
  }
  lastSeenMs(): number {
    this.asked++;
    return this.kernelLastSeen;
  }
}

function setup() {
  const mapper = new PortMapper(64);
  const dp = new Dataplane(new EngineCounters(), new FlowTable({ capacity: 64 }), mapper);
  const cache = new RecordingCache();
  dp.useMappedFlowCache(cache);
  const portMaps = [
    { address: R, protocol: 'udp' as const, port: 53, target: 5353 },
    { address: R, protocol: 'tcp' as const, port: 80, target: 8080 },
  ];
  const configure = (maps = portMaps): void =>
    dp.configure({ reflect: [{ address: R, slot: 0 }], shield: [], portMaps: maps });
  configure();
  return { dp, mapper, cache, configure };
}

/** A packet L:src → R:dst through the data plane (UDP, or TCP with `flags`); returns its verdict. */
function send(dp: Dataplane, proto: 6 | 17, src: number, dst: number, now: number, flags = ACK): Verdict {
  const segment = proto === 17 ? udpDatagram(src, dst, [1]) : tcpSegment({ srcPort: src, dstPort: dst, flags });
  const payload = withChecksum(addressBytes(L), addressBytes(R), proto, segment);
  const buf = Uint8Array.from(ipv4({ src: L, dst: R, proto, payload }));
  return dp.outbound(buf, 0, buf.length, now);
}

const word = (a: string): number => new DataView(Uint8Array.from(addressBytes(a)).buffer).getInt32(0);
const flow = (protocol: number, clientPort: number, serverPort: number, mappedPort: number): Seen =>
  ({ clientPort, serverPort, mappedPort, protocol, r: word(R), l: word(L) });

describe('port mapper with a kernel cache', () => {
  it('UDP: handed over at the first reply, once', () => {
    const { dp, cache } = setup();
    assert.equal(send(dp, 17, 40000, 53, T0), Verdict.Reflect);
    assert.deepEqual(cache.installs, [], 'unanswered flows stay here (eviction may take them)');
    send(dp, 17, 5353, 40000, T0 + 1);
    assert.deepEqual(cache.installs, [flow(17, 40000, 5353, 53)]);
    send(dp, 17, 5353, 40000, T0 + 2);
    send(dp, 17, 40000, 53, T0 + 3);
    assert.equal(cache.installs.length, 1);
  });

  it('TCP: handed over at the SYN-ACK; taken back, as ended, at the second FIN or an RST', () => {
    const { dp, cache } = setup();
    send(dp, 6, 40001, 80, T0, SYN);
    assert.equal(cache.installs.length, 0);
    send(dp, 6, 8080, 40001, T0 + 1, SYN | ACK);
    assert.deepEqual(cache.installs, [flow(6, 40001, 8080, 80)]);
    send(dp, 6, 40001, 80, T0 + 2, FIN | ACK);
    assert.equal(cache.removes.length, 0, 'half closed: still cached');
    send(dp, 6, 8080, 40001, T0 + 3, FIN | ACK);
    assert.deepEqual(cache.removes, [{ ...flow(6, 40001, 8080, 80), ended: true }]);

    send(dp, 6, 40002, 80, T0 + 4, SYN);
    send(dp, 6, 8080, 40002, T0 + 5, SYN | ACK);
    send(dp, 6, 40002, 80, T0 + 6, RST);
    assert.deepEqual(cache.removes.at(-1), { ...flow(6, 40002, 8080, 80), ended: true });
    // A new connection on the ports of the finished one starts afresh and is handed over again when answered.
    send(dp, 6, 40002, 80, T0 + 7, SYN);
    send(dp, 6, 8080, 40002, T0 + 8, SYN | ACK);
    assert.equal(cache.installs.length, 3);
  });

  it('idle expiry asks the kernel: a flow busy there stays, an idle one is taken back by the sweep', () => {
    const { dp, mapper, cache } = setup();
    send(dp, 17, 40000, 53, T0);
    send(dp, 17, 5353, 40000, T0 + 1);
    const later = T0 + MAPPED_FLOW_IDLE_MS.udp + 1000;
    dp.sweep(T0 + 1000);
    assert.equal(cache.asked, 0, 'not past its limit here: the kernel is not asked');
    cache.kernelLastSeen = later - 500; // the kernel rewrote a packet half a second ago
    dp.sweep(later);
    assert.equal(cache.asked, 1);
    assert.deepEqual(cache.removes, []);
    assert.equal(mapper.liveEntries(later).length, 1);
    dp.sweep(later + 1000);
    assert.equal(cache.asked, 1, 'the kernel time counts as seen here: not asked again until that is old too');
    const idle = later - 500 + MAPPED_FLOW_IDLE_MS.udp + 1;
    dp.sweep(idle);
    assert.deepEqual(cache.removes, [{ ...flow(17, 40000, 5353, 53), ended: false }]);
    assert.equal(mapper.liveEntries(idle).length, 0);
    assert.equal(mapper.cachedFlows, 0);
  });

  it('removing a map takes its cached flows back at once; the other map keeps its own', () => {
    const { dp, cache, configure } = setup();
    send(dp, 17, 40000, 53, T0);
    send(dp, 17, 5353, 40000, T0 + 1);
    send(dp, 6, 40001, 80, T0 + 2, SYN);
    send(dp, 6, 8080, 40001, T0 + 3, SYN | ACK);
    assert.equal(cache.installs.length, 2);
    configure([{ address: R, protocol: 'tcp', port: 80, target: 8080 }]);
    assert.deepEqual(cache.removes, [{ ...flow(17, 40000, 5353, 53), ended: false }]);
    configure([]);
    assert.deepEqual(cache.removes.at(-1), { ...flow(6, 40001, 8080, 80), ended: false });
  });
});
