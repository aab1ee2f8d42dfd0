/**
 * The tc program's port rewrite for cached mapped flows (native/reflect_tc.bpf.c mapped_flow/map_ports), run in the
 * kernel with BPF_PROG_TEST_RUN on hand-built frames whose checksums come from the independent reference in
 * test/helpers/packet-builders.ts. The test-run packet has a full (not offloaded) checksum, so every rewrite must
 * update it: the result is compared with the reference computed afresh over the rewritten packet. Entries are put in
 * by the worker's own class (KernelMappedFlowCache), as the port mapper would. Needs root and a kernel that loads
 * the program.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { libbpf } from '../../../src/packet-sources/ebpf/libbpf.ts';
import { closeProgram, loadProgram, type LoadedProgram } from '../../../src/packet-sources/ebpf/program.ts';
import { KernelMaps, portRoleIndex, REFLECT_PORT_MAPS } from '../../../src/packet-sources/ebpf/maps.ts';
import { KernelMappedFlowCache } from '../../../src/packet-sources/ebpf/mapped-flows.ts';
import type { MappedFlowRef } from '../../../src/packet-sources/packet-source.ts';
import {
  addressBytes, ipv4, ipv6, referenceTransportValid, tcpSegment, udpDatagram, withChecksum,
} from '../../helpers/packet-builders.ts';

const TC_ACT_OK = 0;
const TC_ACT_REDIRECT = 7;
const TCP = 6;
const UDP = 17;
const ACK = 0x10;
const PSH = 0x08;
const SYN = 0x02;
const FIN = 0x01;
const RST = 0x04;
const L4 = '192.0.2.10';
const R4 = '203.0.113.7';
const L6 = '2001:db8::10';
const R6 = '2001:db8:ffff::7';
/** Client port c, map P=T. */
const C = 40001;
const P = 80;
const T = 8080;

function flowRef(family: 4 | 6, protocol: number, r: string, l: string): MappedFlowRef {
  const words = new Int32Array(8);
  const view = (a: string): DataView => new DataView(Uint8Array.from(addressBytes(a)).buffer);
  const n = family === 4 ? 1 : 4;
  for (let i = 0; i < n; i++) {
    words[i] = view(r).getInt32(4 * i);
    words[4 + i] = view(l).getInt32(4 * i);
  }
  return { family, protocol, words, addressAt: 0, clientPort: C, serverPort: T, mappedPort: P };
}

/** An Ethernet frame of L → R carrying `segment` (checksum filled by the reference unless `rawChecksum`). */
function frame(family: 4 | 6, protocol: number, segment: number[], rawChecksum = false): Buffer {
  const [src, dst] = family === 4 ? [L4, R4] : [L6, R6];
  const payload = rawChecksum ? segment : withChecksum(addressBytes(src), addressBytes(dst), protocol, segment);
  const ip = family === 4 ? ipv4({ src, dst, proto: protocol, payload }) : ipv6({ src, dst, proto: protocol, payload });
  const eth = Buffer.alloc(14);
  eth.writeUInt16BE(family === 4 ? 0x0800 : 0x86dd, 12);
  return Buffer.concat([eth, Buffer.from(ip)]);
}

function segmentOf(family: 4 | 6, protocol: number, sport: number, dport: number, flags = ACK | PSH): number[] {
  const data = Array.from({ length: 333 }, (_, i) => (i * 13) & 0xff);
  if (protocol === UDP) return udpDatagram(sport, dport, data);
  return tcpSegment({ srcPort: sport, dstPort: dport, flags, data });
}

/** What came out: verdict, the IP packet's addresses, its ports and whether its transport checksum is valid. */
function parse(out: Buffer, size: number, family: 4 | 6) {
  const ipLen = family === 4 ? 20 : 40;
  const ip = out.subarray(14, size);
  const src = [...ip.subarray(family === 4 ? 12 : 8, family === 4 ? 16 : 24)];
  const dst = [...ip.subarray(family === 4 ? 16 : 24, family === 4 ? 20 : 40)];
  const seg = ip.subarray(ipLen);
  const protocol = family === 4 ? ip[9] : ip[6];
  return {
    src, dst, sport: seg.readUInt16BE(0), dport: seg.readUInt16BE(2),
    checksum: seg.readUInt16BE(protocol === TCP ? 16 : 6), valid: referenceTransportValid(src, dst, protocol, seg),
  };
}

describe('tc program: port rewrite of cached mapped flows (BPF_PROG_TEST_RUN)', () => {
  let program: LoadedProgram;
  let cache: KernelMappedFlowCache;
  const run = (f: Buffer) => {
    const out = Buffer.alloc(f.length + 64);
    const r = libbpf().testRun(program.programFd, f, out, 1);
    return { verdict: r.verdict, out, size: r.size };
  };

  before(() => {
    program = loadProgram();
    const maps = new KernelMaps(program.mapFds);
    maps.setReflect(R4, 0, REFLECT_PORT_MAPS, true);
    maps.setReflect(R6, 1, REFLECT_PORT_MAPS, true);
    maps.addPortRoles(['tcp', 'udp'].flatMap((p) => [P, T].map((port) => portRoleIndex(p as 'tcp' | 'udp', port))));
    cache = new KernelMappedFlowCache({ mappedFlows: program.mapFds.mappedFlows, flows: program.mapFds.flows });
  });

  after(() => closeProgram(program));

  for (const family of [4, 6] as const) {
    for (const protocol of [TCP, UDP]) {
      const name = `IPv${family} ${protocol === TCP ? 'TCP' : 'UDP'}`;
      test(`${name}: both directions rewritten with a valid full checksum; a miss and a SYN/FIN/RST go up`, () => {
        const [l, r] = family === 4 ? [L4, R4] : [L6, R6];
        const ref = flowRef(family, protocol, r, l);
        const toServer = frame(family, protocol, segmentOf(family, protocol, C, P));
        const reply = frame(family, protocol, segmentOf(family, protocol, T, C));
        // Not cached yet: both go to the user-space path untouched.
        for (const f of [toServer, reply]) {
          const res = run(f);
          assert.equal(res.verdict, TC_ACT_OK);
          assert.ok(res.out.subarray(0, res.size).equals(f), 'a packet for user space is left as it was');
        }
        assert.equal(cache.install(ref), true);
        try {
          const a = run(toServer);
          assert.equal(a.verdict, TC_ACT_REDIRECT);
          const pa = parse(a.out, a.size, family);
          // Reflected (addresses swapped), to the target port, checksum valid by the reference.
          const reflected = [addressBytes(r), addressBytes(l)];
          assert.deepEqual([pa.src, pa.dst, pa.sport, pa.dport, pa.valid], [...reflected, C, T, true]);
          const b = run(reply);
          assert.equal(b.verdict, TC_ACT_REDIRECT);
          const pb = parse(b.out, b.size, family);
          assert.deepEqual([pb.src, pb.dst, pb.sport, pb.dport, pb.valid], [...reflected, P, C, true]);
          assert.ok(cache.lastSeenMs(ref) > Date.now() - 60_000, 'the kernel noted when it last rewrote the flow');
          // Another client port: no entry. TCP state changes always go up.
          assert.equal(run(frame(family, protocol, segmentOf(family, protocol, C + 1, P))).verdict, TC_ACT_OK);
          if (protocol === TCP) {
            for (const flags of [SYN, SYN | ACK, FIN | ACK, RST, RST | ACK]) {
              const f = frame(family, protocol, segmentOf(family, protocol, C, P, flags));
              const res = run(f);
              assert.equal(res.verdict, TC_ACT_OK, `flags ${flags}`);
              assert.ok(res.out.subarray(0, res.size).equals(f));
            }
          }
        } finally {
          cache.remove(ref, false);
        }
        assert.equal(run(toServer).verdict, TC_ACT_OK, 'removed: the user-space path again');
        assert.equal(cache.lastSeenMs(ref), 0);
      });
    }
  }

  test('IPv4 UDP without a checksum (0) keeps none; a sum that comes out 0 is written as 0xffff', () => {
    const ref = flowRef(4, UDP, R4, L4);
    cache.install(ref);
    try {
      const none = run(frame(4, UDP, segmentOf(4, UDP, C, P), true));
      assert.equal(none.verdict, TC_ACT_REDIRECT);
      const p = parse(none.out, none.size, 4);
      assert.deepEqual([p.dport, p.checksum], [T, 0]);
      // Find a payload whose checksum after the rewrite is 0 by the arithmetic (sent as 0xffff).
      for (let x = 0; x < 65536; x++) {
        const seg = udpDatagram(C, T, [x >> 8, x & 0xff]);
        const filled = withChecksum(addressBytes(R4), addressBytes(L4), UDP, seg);
        if (((filled[6] << 8) | filled[7]) !== 0xffff) continue;
        const res = run(frame(4, UDP, udpDatagram(C, P, [x >> 8, x & 0xff])));
        const q = parse(res.out, res.size, 4);
        assert.deepEqual([q.dport, q.checksum, q.valid], [T, 0xffff, true]);
        return;
      }
      assert.fail('no payload gives a zero sum');
    } finally {
      cache.remove(ref, false);
    }
  });

  test('the kernel records the flow as the server sees it, with the mapped port; an end marks it closed', () => {
    const maps = new KernelMaps(program.mapFds);
    const ref = flowRef(4, TCP, R4, L4);
    cache.install(ref);
    run(frame(4, TCP, segmentOf(4, TCP, C, P)));
    run(frame(4, TCP, segmentOf(4, TCP, T, C)));
    const find = () => maps.readFlows(() => false).find((f) => f.protocol === TCP && f.reflectAddress === R4)!;
    const { clientPort, serverPort, mappedPort, state } = find();
    const expected = { clientPort: C, serverPort: T, mappedPort: P, state: 1 };
    assert.deepEqual({ clientPort, serverPort, mappedPort, state }, expected);
    cache.remove(ref, true);
    assert.equal(find()!.state, 2);
  });
});
