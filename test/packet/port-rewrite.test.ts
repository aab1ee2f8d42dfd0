/**
 * Port maps in the data plane, checked packet by packet: mapped packets' checksums are recomputed with the
 * independent reference in test/helpers/packet-builders.ts and compared (full and partial, IPv4 and IPv6, TCP and UDP), and the per-flow
 * decisions of engine/port-mapper.ts are exercised through Dataplane.outbound exactly as the worker calls it.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { PortMap } from '../../src/config/port-maps.ts';
import { Verdict } from '../../src/packet/verdicts.ts';
import { EngineCounters } from '../../src/engine/counters.ts';
import { Dataplane, type DataplaneConfig } from '../../src/engine/dataplane.ts';
import { FlowTable } from '../../src/engine/flow-table.ts';
import { PortMapper } from '../../src/engine/port-mapper.ts';
import { adjustChecksum } from '../../src/packet/port-rewrite.ts';
import { rng } from '../helpers/rng.ts';
import { addressBytes, icmpMessage, ipv4, ipv6, pattern, pseudoHeader, referenceChecksum, referenceTransportValid, tcpSegment, udpDatagram, withChecksum } from '../helpers/packet-builders.ts';

const L4 = '192.0.2.10';
const R4 = '198.51.100.1';
const L6 = '2001:db8::10';
const R6 = '2001:db8:ffff::1';
const T0 = Date.UTC(2026, 0, 1);
const SYN = 0x02;
const ACK = 0x10;
const FIN = 0x01;

function maps(address: string, specs: [number, number, ('tcp' | 'udp')?][]): PortMap[] {
  return specs.flatMap(([port, target, proto]) =>
    (proto ? [proto] : (['tcp', 'udp'] as const)).map((protocol) => ({ address, protocol, port, target })),
  );
}

function setup(portMaps: PortMap[], capacity?: number) {
  const cfg: DataplaneConfig = { reflect: [{ address: R4, slot: 0 }, { address: R6, slot: 3 }], shield: [], portMaps };
  const counters = new EngineCounters();
  const flows = new FlowTable({ capacity: 64 });
  const dp = new Dataplane(counters, flows, new PortMapper(capacity));
  dp.configure(cfg);
  return { dp, counters, flows, cfg };
}

type Proto = 6 | 17;
interface Spec {
  family: 4 | 6;
  proto: Proto;
  src: number;
  dst: number;
  flags?: number;
  data?: number[];
  /** Checksum field: 'full' (valid), 'partial' (pseudo-header sum only, as an offloading stack leaves it). */
  checksum?: 'full' | 'partial';
}

function segment(s: Spec): number[] {
  return s.proto === 6 ? tcpSegment({ srcPort: s.src, dstPort: s.dst, flags: s.flags ?? ACK, data: s.data ?? [] }) : udpDatagram(
    s.src,
    s.dst,
    s.data ?? [],
  );
}

/** A packet L → R as this host would send it. */
function packet(s: Spec): Uint8Array {
  const [src, dst] = s.family === 4 ? [L4, R4] : [L6, R6];
  let seg = segment(s);
  const at = s.proto === 6 ? 16 : 6;
  if ((s.checksum ?? 'full') === 'full') seg = withChecksum(addressBytes(src), addressBytes(dst), s.proto, seg);
  else {
    // Linux CHECKSUM_PARTIAL: the field holds the folded (not complemented) pseudo-header sum.
    const partial = ~referenceChecksum(pseudoHeader(addressBytes(src), addressBytes(dst), s.proto, seg.length)) & 0xffff;
    seg[at] = partial >> 8;
    seg[at + 1] = partial & 0xff;
  }
  return s.family === 4 ? ipv4({ src, dst, proto: s.proto, payload: seg }) : ipv6({ src, dst, proto: s.proto, payload: seg });
}

/** Send through the data plane (partial flag as the backend would set it); returns the verdict and the packet. */
function send(dp: Dataplane, pkt: Uint8Array, partial = 0, now = T0): { verdict: number; out: Uint8Array } {
  const buf = new Uint8Array(pkt.length + 64).fill(0xee);
  buf.set(pkt, 32);
  const verdict = dp.outbound(buf, 32, pkt.length, now, partial);
  assert.ok(
    buf.subarray(0, 32).every((b) => b === 0xee) && buf.subarray(32 + pkt.length).every((b) => b === 0xee),
    'nothing outside the packet is touched',
  );
  return { verdict, out: buf.slice(32, 32 + pkt.length) };
}

function view(out: Uint8Array) {
  const family = out[0] >> 4;
  const ipHeader = family === 4 ? (out[0] & 0x0f) * 4 : 40;
  const src = Array.from(out.subarray(family === 4 ? 12 : 8, family === 4 ? 16 : 24));
  const dst = Array.from(out.subarray(family === 4 ? 16 : 24, family === 4 ? 20 : 40));
  const proto = family === 4 ? out[9] : out[6];
  const seg = out.subarray(ipHeader);
  return { src, dst, proto, seg, srcPort: (seg[0] << 8) | seg[1], dstPort: (seg[2] << 8) | seg[3] };
}

function checksumAt(seg: Uint8Array, proto: number): number {
  const at = proto === 6 ? 16 : 6;
  return (seg[at] << 8) | seg[at + 1];
}

describe('incremental checksum update (RFC 1624)', () => {
  it('equals a full recomputation for random segments and port changes', () => {
    const rand = rng(1313);
    for (let i = 0; i < 2000; i++) {
      const seg = pattern(8 + Math.floor(rand() * 60), i + 1);
      seg[6] = seg[7] = 0;
      const before = referenceChecksum(seg);
      const oldWord = (seg[2] << 8) | seg[3];
      const newWord = Math.floor(rand() * 65536);
      seg[2] = newWord >> 8;
      seg[3] = newWord & 0xff;
      const after = referenceChecksum(seg);
      // 0x0000 and 0xffff are the same one's-complement value; a field never holds "negative zero" for a sum of data
      // that is not all zero, so compare modulo that.
      const got = adjustChecksum(before, oldWord, newWord);
      assert.ok(
        got === after || (got ^ after) === 0xffff && (got === 0 || after === 0),
        `case ${i}: ${got} vs ${after}`,
      );
    }
  });
});

describe('port-mapped packets: checksums recomputed and compared', () => {
  for (const family of [4, 6] as const) {
    for (const proto of [6, 17] as const) {
      for (const checksum of ['full', 'partial'] as const) {
        const name = `IPv${family} ${proto === 6 ? 'TCP' : 'UDP'}, ${checksum} checksum`;
        it(`${name}: request to R:80 reaches :8080, the reply from :8080 leaves as R:80`, () => {
          const { dp } = setup([...maps(R4, [[80, 8080]]), ...maps(R6, [[80, 8080]])]);
          const partial = checksum === 'partial' ? 1 : 0;
          const data = pattern(proto === 6 ? 37 : 101, family + proto);
          const req = send(dp, packet({ family, proto, src: 40001, dst: 80, flags: SYN, data, checksum }), partial);
          assert.equal(req.verdict, Verdict.Reflect);
          const r = view(req.out);
          assert.deepEqual([r.srcPort, r.dstPort], [40001, 8080]);
          assert.deepEqual(r.src, addressBytes(family === 4 ? R4 : R6), 'reflected: source is R');
          if (checksum === 'full') {
            assert.ok(referenceTransportValid(r.src, r.dst, proto, r.seg), 'full checksum valid after mapping');
          } else {
            // The field still holds only the pseudo-header sum, which the port change does not touch ...
            const pseudo = ~referenceChecksum(pseudoHeader(r.src, r.dst, proto, r.seg.length)) & 0xffff;
            assert.equal(checksumAt(r.seg, proto), pseudo);
            // ... so finishing it over the rewritten segment gives exactly the full checksum.
            const full = withChecksum(r.src, r.dst, proto, Array.from(r.seg));
            assert.equal(referenceChecksum(Array.from(r.seg)), checksumAt(Uint8Array.from(full), proto));
          }
          const reply = send(
            dp,
            packet({ family, proto, src: 8080, dst: 40001, flags: SYN | ACK, data, checksum }),
            partial,
          );
          assert.equal(reply.verdict, Verdict.Reflect);
          const q = view(reply.out);
          assert.deepEqual([q.srcPort, q.dstPort], [80, 40001]);
          if (checksum === 'full') {
            assert.ok(
              referenceTransportValid(q.src, q.dst, proto, q.seg),
              'reply checksum valid',
            );
          }
          else {
            const full = withChecksum(q.src, q.dst, proto, Array.from(q.seg));
            assert.equal(referenceChecksum(Array.from(q.seg)), checksumAt(Uint8Array.from(full), proto));
          }
        });
      }
    }
  }

  it('UDP over IPv4 without a checksum (0) stays without one', () => {
    const { dp } = setup(maps(R4, [[53, 5353, 'udp']]));
    const pkt = ipv4({ src: L4, dst: R4, proto: 17, payload: udpDatagram(40000, 53, pattern(20)) }); // field 0
    const { out } = send(dp, pkt);
    const v = view(out);
    assert.equal(v.dstPort, 5353);
    assert.equal(checksumAt(v.seg, 17), 0);
  });

  it('random ports and payloads: every mapped packet checks out against the reference', () => {
    const rand = rng(4242);
    for (let i = 0; i < 300; i++) {
      const family = rand() < 0.5 ? 4 : 6;
      const proto = rand() < 0.5 ? 6 : 17;
      const port = 1 + Math.floor(rand() * 65535);
      let target = 1 + Math.floor(rand() * 65535);
      if (target === port) target = (target % 65535) + 1;
      let client = 1024 + Math.floor(rand() * 64000);
      if (client === port || client === target) client = 1023;
      const { dp } = setup([...maps(R4, [[port, target]]), ...maps(R6, [[port, target]])]);
      const data = pattern(Math.floor(rand() * 200), i);
      const { out } = send(dp, packet({ family, proto, src: client, dst: port, flags: SYN, data }));
      const v = view(out);
      assert.equal(v.dstPort, target, `case ${i}`);
      assert.ok(referenceTransportValid(v.src, v.dst, proto, v.seg), `case ${i}: checksum`);
      const back = view(send(dp, packet({ family, proto, src: target, dst: client, flags: ACK, data })).out);
      assert.equal(back.srcPort, port, `case ${i}: reply`);
      assert.ok(referenceTransportValid(back.src, back.dst, proto, back.seg), `case ${i}: reply checksum`);
    }
  });
});

describe('port maps decide by the flow', () => {
  it('a client of R:8080 and a client of R:80 (mapped to 8080) at the same time are told apart', () => {
    const { dp, flows } = setup(maps(R4, [[80, 8080, 'tcp']]));
    // Mapped client 41000 → R:80, direct client 42000 → R:8080.
    assert.equal(view(send(dp, packet({ family: 4, proto: 6, src: 41000, dst: 80, flags: SYN })).out).dstPort, 8080);
    assert.equal(view(send(dp, packet({ family: 4, proto: 6, src: 42000, dst: 8080, flags: SYN })).out).dstPort, 8080);
    const toMapped = view(send(dp, packet({ family: 4, proto: 6, src: 8080, dst: 41000, flags: SYN | ACK })).out);
    const toDirect = view(send(dp, packet({ family: 4, proto: 6, src: 8080, dst: 42000, flags: SYN | ACK })).out);
    assert.equal(toMapped.srcPort, 80, 'the mapped client hears from R:80');
    assert.equal(toDirect.srcPort, 8080, 'the direct client hears from R:8080, not rewritten');
    const recs = flows.snapshot(T0);
    const mapped = recs.find((f) => f.clientPort === 41000);
    const direct = recs.find((f) => f.clientPort === 42000);
    assert.equal(recs.length, 2, 'each conversation is one flow, both directions together');
    assert.deepEqual([mapped?.serverPort, mapped?.mappedFromPort], [8080, 80]);
    assert.deepEqual([direct?.serverPort, direct?.mappedFromPort], [8080, null]);
  });

  it('TCP: only a SYN opens a mapped flow; a stray segment to R:80 is left alone', () => {
    const { dp } = setup(maps(R4, [[80, 8080, 'tcp']]));
    assert.equal(view(send(dp, packet({ family: 4, proto: 6, src: 41000, dst: 80, flags: ACK })).out).dstPort, 80);
    // The reply of a direct client whose own port is 80 (SYN+ACK from the server on 8080) is not taken for a new map.
    assert.equal(view(send(dp, packet({ family: 4, proto: 6, src: 80, dst: 8080, flags: SYN })).out).dstPort, 8080);
    assert.equal(view(send(dp, packet({ family: 4, proto: 6, src: 8080, dst: 80, flags: SYN | ACK })).out).dstPort, 80);
  });

  it('UDP: a client on a mapped port talking to R:X directly gets its replies unmapped', () => {
    const { dp } = setup(maps(R4, [[80, 8080, 'udp']]));
    assert.equal(view(send(dp, packet({ family: 4, proto: 17, src: 80, dst: 9999 })).out).dstPort, 9999);
    const reply = view(send(dp, packet({ family: 4, proto: 17, src: 9999, dst: 80 })).out);
    assert.deepEqual([reply.srcPort, reply.dstPort], [9999, 80], 'the reply to R:80 is not rewritten to 8080');
  });

  it('a protocol-specific map leaves the other protocol alone', () => {
    const { dp } = setup(maps(R4, [[443, 8443, 'tcp']]));
    assert.equal(view(send(dp, packet({ family: 4, proto: 17, src: 40000, dst: 443 })).out).dstPort, 443);
    assert.equal(view(send(dp, packet({ family: 4, proto: 6, src: 40000, dst: 443, flags: SYN })).out).dstPort, 8443);
  });

  it('removing a map forgets its flows at once; new connections reach the port itself', () => {
    const { dp, cfg } = setup(maps(R4, [[80, 8080, 'tcp']]));
    send(dp, packet({ family: 4, proto: 6, src: 41000, dst: 80, flags: SYN }));
    dp.configure({ ...cfg, portMaps: [] });
    assert.equal(
      view(send(dp, packet({ family: 4, proto: 6, src: 8080, dst: 41000, flags: SYN | ACK })).out).srcPort,
      8080,
    );
    assert.equal(view(send(dp, packet({ family: 4, proto: 6, src: 41001, dst: 80, flags: SYN })).out).dstPort, 80);
  });

  it('a finished connection frees its entry; a new SYN on the same ports opens a fresh mapped flow', () => {
    const { dp } = setup(maps(R4, [[80, 8080, 'tcp']]));
    send(dp, packet({ family: 4, proto: 6, src: 41000, dst: 80, flags: SYN }));
    send(dp, packet({ family: 4, proto: 6, src: 41000, dst: 80, flags: FIN | ACK }));
    send(dp, packet({ family: 4, proto: 6, src: 8080, dst: 41000, flags: FIN | ACK }));
    assert.equal(
      view(send(dp, packet({ family: 4, proto: 6, src: 41000, dst: 80, flags: SYN }), 0, T0 + 1).out).dstPort,
      8080,
    );
  });

  it('when the table is full of answered flows, a new mapped flow is refused and counted; live flows keep working', () => {
    const { dp, counters } = setup(maps(R4, [[80, 8080, 'udp']]), 16);
    for (let i = 0; i < 16; i++) {
      assert.equal(send(dp, packet({ family: 4, proto: 17, src: 40000 + i, dst: 80 })).verdict, Verdict.Reflect);
      // The server answers each one: an answered flow is never evicted to make room (engine/port-mapper.ts).
      assert.equal(send(dp, packet({ family: 4, proto: 17, src: 8080, dst: 40000 + i })).verdict, Verdict.Reflect);
    }
    assert.equal(send(dp, packet({ family: 4, proto: 17, src: 50000, dst: 80 })).verdict, Verdict.Drop);
    assert.equal(counters.snapshot().portMapRefused, 1);
    assert.equal(view(send(dp, packet({ family: 4, proto: 17, src: 8080, dst: 40003 })).out).srcPort, 80);
    // After the UDP idle limit the old entries make room again.
    assert.equal(
      send(dp, packet({ family: 4, proto: 17, src: 50000, dst: 80 }), 0, T0 + 61_000).verdict,
      Verdict.Reflect,
    );
  });
});

describe('ICMP errors about mapped flows', () => {
  /** A port-unreachable error L → R quoting `quoted` (the packet as this host received it: R → L). */
  function unreachable(family: 4 | 6, quoted: Uint8Array): Uint8Array {
    const [src, dst] = family === 4 ? [L4, R4] : [L6, R6];
    const proto = family === 4 ? 1 : 58;
    const msg = icmpMessage(family === 4 ? 3 : 1, family === 4 ? 3 : 4, 0, 0, Array.from(quoted));
    const payload = withChecksum(addressBytes(src), addressBytes(dst), proto, msg);
    return family === 4 ? ipv4({ src, dst, proto, payload }) : ipv6({ src, dst, proto, payload });
  }

  for (const family of [4, 6] as const) {
    it(`IPv${family}: an error about the client's packet quotes R:80, the port the client used`, () => {
      const { dp } = setup([...maps(R4, [[80, 8080, 'udp']]), ...maps(R6, [[80, 8080, 'udp']])]);
      const req = send(dp, packet({ family, proto: 17, src: 40001, dst: 80, data: pattern(16) }));
      // No server on 8080: this host answers the reflected datagram (R:40001 → L:8080) with port unreachable.
      const err = send(dp, unreachable(family, req.out));
      assert.equal(err.verdict, Verdict.Reflect);
      const v = view(err.out);
      assert.ok(referenceTransportValid(v.src, v.dst, v.proto, v.seg), 'ICMP checksum valid after the quote changed');
      const quote = v.seg.subarray(8);
      const qt = quote.subarray(family === 4 ? 20 : 40);
      assert.equal((qt[2] << 8) | qt[3], 80, 'quoted destination port mapped back to 80');
      assert.equal((qt[0] << 8) | qt[1], 40001);
      // The quoted UDP checksum was updated with it (the whole datagram is quoted here, so it can be checked).
      const qs = Array.from(quote.subarray(family === 4 ? 12 : 8, family === 4 ? 16 : 24));
      const qd = Array.from(quote.subarray(family === 4 ? 16 : 24, family === 4 ? 20 : 40));
      assert.ok(referenceTransportValid(qs, qd, 17, qt), 'quoted UDP checksum valid for the quoted ports');
    });
  }

  it('an error about the server reply quotes the server port 8080 the server sent from', () => {
    const { dp } = setup(maps(R4, [[80, 8080, 'udp']]));
    send(dp, packet({ family: 4, proto: 17, src: 40001, dst: 80 }));
    const reply = send(dp, packet({ family: 4, proto: 17, src: 8080, dst: 40001, data: pattern(8) }));
    assert.equal(view(reply.out).srcPort, 80);
    const err = view(send(dp, unreachable(4, reply.out)).out);
    const qt = err.seg.subarray(8 + 20);
    assert.equal((qt[0] << 8) | qt[1], 8080);
    assert.ok(referenceTransportValid(err.src, err.dst, 1, err.seg));
  });

  it('an error about an unmapped flow is left alone', () => {
    const { dp } = setup(maps(R4, [[80, 8080, 'udp']]));
    const direct = send(dp, packet({ family: 4, proto: 17, src: 40002, dst: 8080 }));
    const errIn = unreachable(4, direct.out);
    const err = view(send(dp, errIn).out);
    // The embedded addresses are reflected (packet/reflect.ts); its ports stay as they were.
    const qt = err.seg.subarray(8 + 20);
    assert.deepEqual([(qt[0] << 8) | qt[1], (qt[2] << 8) | qt[3]], [40002, 8080]);
    assert.ok(referenceTransportValid(err.src, err.dst, 1, err.seg));
  });
});

