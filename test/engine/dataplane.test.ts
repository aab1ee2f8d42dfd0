import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DropCause, Verdict } from '../../src/packet/verdicts.ts';
import { EngineCounters } from '../../src/engine/counters.ts';
import { buildEngineStats } from '../../src/engine/stats.ts';
import { Dataplane, type DataplaneConfig } from '../../src/engine/dataplane.ts';
import { FlowTable } from '../../src/engine/flow-table.ts';
import { isRetroflectError } from '../../src/errors.ts';
import { MAX_REFLECT_ADDRESSES, MAX_SHIELD_PORTS } from '../../src/config/intercept-config.ts';
import { icmpMessage, ipv4, ipv6, pattern, tcpSegment, udpDatagram } from '../helpers/packet-builders.ts';
import { AppGateMark, type OutboundGate } from '../../src/packet-sources/packet-source.ts';
import type { ParsedPacket } from '../../src/packet/parse.ts';

const L4 = '192.0.2.10';
const R4 = '203.0.113.7';
const OTHER4 = '198.51.100.99';
const L6 = '2001:db8::10';
const R6 = '2001:db8:ffff::7';
const T0 = Date.UTC(2026, 0, 1);

const BASE: DataplaneConfig = {
  reflect: [
    { address: R4, slot: 0 },
    { address: R6, slot: 5 },
  ],
  shield: [
    { port: 8080, protocol: 'tcp', slot: 0 },
    { port: 53, protocol: 'udp', slot: 7 },
  ],
};

function setup(cfg: DataplaneConfig = BASE): { dp: Dataplane; counters: EngineCounters; flows: FlowTable } {
  const counters = new EngineCounters();
  const flows = new FlowTable({ capacity: 64 });
  const dp = new Dataplane(counters, flows);
  dp.configure(cfg);
  return { dp, counters, flows };
}

const tcp4 = (dst: string, srcPort: number, dstPort: number, flags = 0x02, data: number[] = []) =>
  ipv4({ src: L4, dst, proto: 6, payload: tcpSegment({ srcPort, dstPort, flags, data }) });
const udp6 = (dst: string, srcPort: number, dstPort: number, n = 10) =>
  ipv6({ src: L6, dst, proto: 17, payload: udpDatagram(srcPort, dstPort, pattern(n)) });
const udp4 = (dst: string, srcPort: number, dstPort: number, n = 10) =>
  ipv4({ src: L4, dst, proto: 17, payload: udpDatagram(srcPort, dstPort, pattern(n)) });

/** The port unreachable error this host sends about `delivered` (from its destination back to its source). */
function portUnreachable(delivered: Uint8Array, type: 3 | 1): Uint8Array {
  const v4 = delivered[0] >> 4 === 4;
  const [s, n] = v4 ? [12, 4] : [8, 16];
  const text = (b: Uint8Array) => (v4 ? b.join('.') : Array.from({ length: 8 }, (_, i) => ((b[2 * i] << 8) | b[2 * i + 1]).toString(16)).join(':'));
  const spec = { src: text(delivered.subarray(s + n, s + 2 * n)), dst: text(delivered.subarray(s, s + n)), payload: icmpMessage(type, v4 ? 3 : 4, 0, 0, Array.from(delivered)) };
  return v4 ? ipv4({ ...spec, proto: 1 }) : ipv6({ ...spec, proto: 58 });
}

/** Run a packet through the data plane inside a bigger buffer, as a batch would hold it. */
function through(fn: (buf: Uint8Array, off: number, len: number, now: number) => number, pkt: Uint8Array): { verdict: number; out: Uint8Array } {
  const buf = new Uint8Array(pkt.length + 100).fill(0xee);
  buf.set(pkt, 50);
  const verdict = fn(buf, 50, pkt.length, T0);
  assert.ok(buf.subarray(0, 50).every((b) => b === 0xee) && buf.subarray(50 + pkt.length).every((b) => b === 0xee), 'nothing outside the packet is touched');
  return { verdict, out: buf.slice(50, 50 + pkt.length) };
}

describe('Dataplane.outbound', () => {
  it('reflects packets to a reflect address in place and counts them per address and protocol', () => {
    const { dp, counters } = setup();
    const a = tcp4(R4, 50000, 80, 0x02);
    const b = udp6(R6, 40000, 5353, 100);
    const c = ipv4({ src: L4, dst: R4, proto: 1, payload: icmpMessage(8, 0, 1, 1, pattern(20)) });
    const d = ipv6({ src: L6, dst: R6, proto: 58, payload: icmpMessage(128, 0, 1, 1, pattern(20)) });
    const e = ipv4({ src: L4, dst: R4, proto: 47, payload: pattern(30) });
    for (const pkt of [a, b, c, d, e]) {
      const { verdict, out } = through(dp.outbound.bind(dp), pkt);
      assert.equal(verdict, Verdict.Reflect);
      const n = pkt[0] >> 4 === 4 ? 4 : 16;
      const s = pkt[0] >> 4 === 4 ? 12 : 8;
      assert.deepEqual(out.subarray(s, s + n), pkt.subarray(s + n, s + 2 * n), 'source is now the reflect address');
      assert.deepEqual(out.subarray(s + n, s + 2 * n), pkt.subarray(s, s + n), 'destination is now the local address');
    }
    const snap = counters.snapshot();
    assert.deepEqual(snap.reflected, { packets: 5, bytes: a.length + b.length + c.length + d.length + e.length });
    assert.deepEqual(snap.addressSlots[0].byProtocol, {
      tcp: { packets: 1, bytes: a.length },
      udp: { packets: 0, bytes: 0 },
      icmp: { packets: 1, bytes: c.length },
      other: { packets: 1, bytes: e.length },
    });
    assert.deepEqual(snap.addressSlots[5].byProtocol.udp, { packets: 1, bytes: b.length });
    assert.deepEqual(snap.addressSlots[5].byProtocol.icmp, { packets: 1, bytes: d.length });
    assert.deepEqual([snap.addressSlots[5].packets, snap.addressSlots[5].bytes], [2, b.length + d.length]);
    assert.deepEqual(snap.passed, { packets: 0, bytes: 0 });
  });

  it('passes everything else unchanged and counts it', () => {
    const { dp, counters } = setup();
    for (const pkt of [tcp4(OTHER4, 1, 2), udp6('2001:db8:ffff::8', 1, 2), tcp4(L4, 1, 2)]) {
      const { verdict, out } = through(dp.outbound.bind(dp), pkt);
      assert.equal(verdict, Verdict.Pass);
      assert.deepEqual(out, pkt);
    }
    const snap = counters.snapshot();
    assert.equal(snap.passed.packets, 3);
    assert.equal(snap.reflected.packets, 0);
  });

  it('an IPv4 reflect address does not match the same bytes in an IPv6 packet, nor vice versa', () => {
    const { dp } = setup({ reflect: [{ address: '203.0.113.7', slot: 0 }], shield: [] });
    // ::203.0.113.7 style: the last 4 bytes equal the IPv4 address.
    assert.equal(through(dp.outbound.bind(dp), udp6('::cb00:7107', 1, 2)).verdict, Verdict.Pass);
  });

  it('counts bytes as the IP packet length, not trailing bytes in the buffer', () => {
    const { dp, counters } = setup();
    const pkt = tcp4(R4, 1, 2);
    const buf = new Uint8Array(pkt.length + 10);
    buf.set(pkt);
    assert.equal(dp.outbound(buf, 0, buf.length, T0), Verdict.Reflect);
    assert.equal(counters.snapshot().reflected.bytes, pkt.length);
  });

  it('drops malformed packets and counts them by reason', () => {
    const { dp, counters } = setup();
    const bad = tcp4(R4, 1, 2);
    bad[0] = 0x35;
    assert.equal(dp.outbound(bad, 0, bad.length, T0), Verdict.Drop);
    const cut = tcp4(R4, 1, 2);
    assert.equal(dp.outbound(cut, 0, 10, T0), Verdict.Drop);
    assert.deepEqual(cut, tcp4(R4, 1, 2), 'a dropped packet is not reflected');
    const snap = counters.snapshot();
    assert.equal(snap.malformed.byReason.badVersion, 1);
    assert.equal(snap.malformed.byReason.truncated, 1);
    assert.equal(snap.malformed.total, 2);
    assert.equal(snap.reflected.packets + snap.passed.packets, 0);
  });

  it('reflects an ICMP port unreachable so its embedded packet reads as the client sent it (v4 and v6)', () => {
    const { dp, counters } = setup();
    for (const [client, type] of [[udp4(R4, 50000, 9), 3], [udp6(R6, 50000, 9), 1]] as const) {
      const { verdict, out: delivered } = through(dp.outbound.bind(dp), client);
      assert.equal(verdict, Verdict.Reflect);
      const error = portUnreachable(delivered, type);
      const { verdict: v, out } = through(dp.outbound.bind(dp), error);
      assert.equal(v, Verdict.Reflect);
      const [at, n] = client[0] >> 4 === 4 ? [12, 4] : [8, 16];
      const inner = at + 2 * n + 8;
      assert.deepEqual(out.subarray(inner), client, 'embedded: the client packet, addresses back as sent');
      assert.deepEqual(out.subarray(at, at + 2 * n), delivered.subarray(at, at + 2 * n), 'outer: R → L, like the packet it answers');
    }
    assert.equal(counters.snapshot().addressSlots[0].byProtocol.icmp.packets, 1);
    assert.equal(counters.snapshot().addressSlots[5].byProtocol.icmp.packets, 1);
  });

  it('records flows with the pre-swap orientation: both directions are one flow', () => {
    const { dp, flows } = setup();
    dp.outbound(tcp4(R4, 50000, 8080, 0x02), 0, tcp4(R4, 50000, 8080).length, T0); // client SYN to R:8080
    const reply = tcp4(R4, 8080, 50000, 0x12); // the server's SYN-ACK, addressed to R (it saw the client as R)
    dp.outbound(reply, 0, reply.length, T0 + 1);
    const [flow, ...rest] = flows.snapshot(T0 + 2);
    assert.equal(rest.length, 0);
    assert.deepEqual([flow.reflectAddress, flow.localAddress, flow.clientPort, flow.serverPort, flow.packets, flow.state], [R4, L4, 50000, 8080, 2, 'open']);
    // Passed traffic is not a flow.
    dp.outbound(tcp4(OTHER4, 1, 2), 0, tcp4(OTHER4, 1, 2).length, T0);
    assert.equal(flows.snapshot(T0 + 2).length, 1);
  });
});

describe('Dataplane.inbound', () => {
  it('drops TCP/UDP to shielded ports (per protocol) and counts them per shield slot; passes the rest', () => {
    const { dp, counters } = setup();
    const cases: [Uint8Array, number][] = [
      [ipv4({ src: OTHER4, dst: L4, proto: 6, payload: tcpSegment({ srcPort: 5555, dstPort: 8080, flags: 2 }) }), Verdict.Drop],
      [ipv6({ src: '2001:db8:1::1', dst: L6, proto: 6, payload: tcpSegment({ srcPort: 5555, dstPort: 8080, flags: 2 }) }), Verdict.Drop],
      [ipv4({ src: OTHER4, dst: L4, proto: 17, payload: udpDatagram(5555, 8080, [1]) }), Verdict.Pass], // 8080 shielded for tcp only
      [ipv4({ src: OTHER4, dst: L4, proto: 17, payload: udpDatagram(5555, 53, [1]) }), Verdict.Drop],
      [ipv4({ src: OTHER4, dst: L4, proto: 6, payload: tcpSegment({ srcPort: 8080, dstPort: 5555, flags: 2 }) }), Verdict.Pass], // source port does not count
      [ipv4({ src: OTHER4, dst: L4, proto: 1, payload: icmpMessage(8, 0, 8080, 53, []) }), Verdict.Pass],
      // First fragment carries the port: dropped. A later fragment cannot be matched to a port: passes.
      [ipv4({ src: OTHER4, dst: L4, proto: 17, moreFragments: true, payload: udpDatagram(5555, 53, pattern(100)).slice(0, 64) }), Verdict.Drop],
      [ipv4({ src: OTHER4, dst: L4, proto: 17, fragmentOffset: 64, payload: pattern(40) }), Verdict.Pass],
    ];
    for (const [pkt, expected] of cases) {
      const { verdict, out } = through(dp.inbound.bind(dp), pkt);
      assert.equal(verdict, expected);
      assert.deepEqual(out, pkt, 'inbound never modifies packets');
    }
    const snap = counters.snapshot();
    assert.deepEqual(snap.shieldSlots[0], { packets: 2, bytes: cases[0][0].length + cases[1][0].length });
    assert.deepEqual(snap.shieldSlots[7], { packets: 2, bytes: cases[3][0].length + cases[6][0].length });
    assert.equal(snap.shieldDropped.packets, 4);
    assert.equal(snap.passed.packets, 4);
  });

  it('drops packets whose source is a reflect address (forged) and counts them on their own, shielded port or not', () => {
    const { dp, counters } = setup();
    const forged = [
      ipv4({ src: R4, dst: L4, proto: 17, payload: udpDatagram(5555, 7000, [1, 2, 3]) }),
      ipv6({ src: R6, dst: L6, proto: 6, payload: tcpSegment({ srcPort: 5555, dstPort: 8080, flags: 2 }) }),
      ipv4({ src: R4, dst: L4, proto: 1, payload: icmpMessage(8, 0, 1, 1, []) }),
      ipv4({ src: R4, dst: L4, proto: 17, fragmentOffset: 64, payload: pattern(40) }),
    ];
    // Broken after the IP header: its source is still known, and still forged.
    const broken = ipv4({ src: R4, dst: L4, proto: 6, payload: tcpSegment({ srcPort: 1, dstPort: 2, flags: 2 }) });
    broken[20 + 12] = 0x20;
    for (const pkt of [...forged, broken]) {
      const { verdict, out } = through(dp.inbound.bind(dp), pkt);
      assert.equal(verdict, Verdict.Drop);
      assert.deepEqual(out, pkt);
    }
    // Only the source counts: to a reflect address, or from a neighbour of one, passes.
    for (const pkt of [udp6(R6, 1, 2), ipv4({ src: '203.0.113.8', dst: L4, proto: 17, payload: udpDatagram(1, 2, []) })]) {
      assert.equal(through(dp.inbound.bind(dp), pkt).verdict, Verdict.Pass);
    }
    const snap = counters.snapshot();
    assert.deepEqual(snap.forgedSourceDropped, { packets: 5, bytes: [...forged, broken].reduce((n, p) => n + p.length, 0) });
    assert.equal(snap.shieldDropped.packets, 0, 'a forged packet to a shielded port counts as forged, once');
    assert.equal(snap.malformed.total, 0);
    assert.equal(snap.passed.packets, 2);
    const stats = buildEngineStats(snap, BASE, { sampledAt: new Date(T0), uptimeSeconds: 1 });
    assert.deepEqual(stats.forgedSourceDropped, snap.forgedSourceDropped);
  });

  it('a packet from a reflect address that another driver injected is ours, re-injected: passed, shielded port or not (issue 19 item 20)', () => {
    const { dp, counters } = setup();
    const toShield = ipv6({ src: R6, dst: L6, proto: 6, payload: tcpSegment({ srcPort: 5555, dstPort: 8080, flags: 2 }) });
    const other = ipv4({ src: R4, dst: L4, proto: 17, payload: udpDatagram(5555, 7000, [1, 2, 3]) });
    for (const pkt of [toShield, other]) {
      assert.equal(dp.inbound(Uint8Array.from(pkt), 0, pkt.length, T0, 1), Verdict.Pass, 'injected by a driver: not forged');
      assert.equal(dp.inbound(Uint8Array.from(pkt), 0, pkt.length, T0, 0), Verdict.Drop, 'from the network: forged');
      assert.equal(dp.dropCause, DropCause.ForgedSource);
    }
    // Malformed stays malformed, injected or not.
    const broken = ipv4({ src: R4, dst: L4, proto: 6, payload: tcpSegment({ srcPort: 1, dstPort: 2, flags: 2 }) });
    broken[20 + 12] = 0x20;
    assert.equal(dp.inbound(broken, 0, broken.length, T0, 1), Verdict.Drop);
    assert.equal(dp.dropCause, DropCause.Malformed);
    // Another host's packet to a shielded port stays shielded when a driver injected it (a VPN, say).
    const peer = ipv4({ src: OTHER4, dst: L4, proto: 6, payload: tcpSegment({ srcPort: 1, dstPort: 8080, flags: 2 }) });
    assert.equal(dp.inbound(peer, 0, peer.length, T0, 1), Verdict.Drop);
    assert.equal(dp.dropCause, DropCause.ShieldPort);
    const snap = counters.snapshot();
    assert.deepEqual([snap.passed.packets, snap.forgedSourceDropped.packets, snap.malformed.total, snap.shieldDropped.packets], [2, 2, 1, 1]);
  });

  it('an IPv6 source ::ffff:<R> is the IPv4 reflect address R (a dual-stack socket reads it as R): forged, counted', () => {
    const { dp, counters } = setup();
    const mapped = ipv6({ src: `::ffff:${R4}`, dst: L6, proto: 17, payload: udpDatagram(5555, 7000, [1]) });
    assert.equal(through(dp.inbound.bind(dp), mapped).verdict, Verdict.Drop);
    // A mapped neighbour of R, and R's bits without the ::ffff: prefix, are other addresses.
    for (const src of ['::ffff:203.0.113.8', '::cb00:7107', '::ffff:0:203.0.113.7']) {
      assert.equal(through(dp.inbound.bind(dp), ipv6({ src, dst: L6, proto: 17, payload: udpDatagram(1, 2, []) })).verdict, Verdict.Pass, src);
    }
    assert.deepEqual(counters.snapshot().forgedSourceDropped, { packets: 1, bytes: mapped.length });
  });

  it('TCP/UDP behind an IPv6 Authentication Header to a shielded port is dropped', () => {
    const { dp, counters } = setup();
    const ah = { type: 51, body: [0, 0, 0, 0, 0x10, 0x01, 0, 0, 0, 1, ...pattern(12)] };
    const tcp = ipv6({ src: '2001:db8:1::1', dst: L6, proto: 6, ext: [ah], payload: tcpSegment({ srcPort: 5555, dstPort: 8080, flags: 2 }) });
    const udp = ipv6({ src: '2001:db8:1::1', dst: L6, proto: 17, ext: [{ type: 60 }, ah], payload: udpDatagram(5555, 53, [1]) });
    assert.equal(through(dp.inbound.bind(dp), tcp).verdict, Verdict.Drop);
    assert.equal(through(dp.inbound.bind(dp), udp).verdict, Verdict.Drop);
    const snap = counters.snapshot();
    assert.deepEqual([snap.shieldSlots[0].packets, snap.shieldSlots[7].packets], [1, 1]);
  });

  it('drops malformed inbound packets and counts them (fail closed, issue 19 item 21)', () => {
    const { dp, counters } = setup();
    const pkt = ipv4({ src: OTHER4, dst: L4, proto: 6, payload: tcpSegment({ srcPort: 1, dstPort: 8080, flags: 2 }) });
    pkt[20 + 12] = 0x20; // data offset 2
    assert.equal(dp.inbound(pkt, 0, pkt.length, T0), Verdict.Drop);
    assert.equal(dp.dropCause, DropCause.Malformed);
    assert.equal(counters.snapshot().malformed.byReason.badTransportHeader, 1);
    assert.equal(counters.snapshot().shieldDropped.packets, 0);
  });
});

describe('Dataplane allowed ports, decided once per flow and direction', () => {
  const ports = (open: number[], reply: number[] = []) => ({
    ...BASE,
    allowedPorts: [{
      slot: 0,
      open: open.map((port) => ({ port, protocol: 'tcp' as const })),
      reply: reply.map((port) => ({ port, protocol: 'tcp' as const })),
    }],
  });
  const out = (dp: Dataplane, pkt: Uint8Array): number => dp.outbound(Uint8Array.from(pkt), 0, pkt.length, T0);

  it('a running flow is decided again after every configure: narrowed, it is refused at once; widened, allowed', () => {
    const { dp, counters, flows } = setup(ports([8080]));
    assert.equal(out(dp, tcp4(R4, 40000, 8080, 0x02)), Verdict.Reflect);
    for (let i = 0; i < 3; i++) assert.equal(out(dp, tcp4(R4, 40000, 8080, 0x10)), Verdict.Reflect);
    assert.equal(flows.snapshot(T0)[0].packets, 4, 'every packet of the flow is counted in its entry');
    dp.configure(ports([9090]));
    assert.equal(out(dp, tcp4(R4, 40000, 8080, 0x10)), Verdict.Drop, 'refused by the next packet after the change');
    assert.equal(dp.dropCause, DropCause.NotAllowed);
    assert.ok(dp.refusalLength > 0, 'answered with a reset');
    dp.refusalLength = 0;
    assert.equal(out(dp, tcp4(R4, 40000, 8080, 0x10)), Verdict.Drop, 'and stays refused');
    assert.equal(counters.snapshot().addressSlots[0].notAllowed.packets, 2);
    assert.equal(flows.snapshot(T0)[0].packets, 4, 'refused packets are not counted in the flow');
    dp.configure(ports([8080]));
    assert.equal(out(dp, tcp4(R4, 40000, 8080, 0x10)), Verdict.Reflect, 'allowed again');
    dp.configure(BASE);
    assert.equal(out(dp, tcp4(R4, 40000, 9999, 0x10)), Verdict.Reflect, 'no list: every port');
    dp.configure(ports([8080]));
    assert.equal(out(dp, tcp4(R4, 40000, 9999, 0x10)), Verdict.Drop, 'a list again: the unlisted flow is refused');
  });

  it('each direction of a flow is decided on its own, and a SYN always in full', () => {
    // 9090 is only a reply port (as a port map's target is): the server may answer from it, no client may open it.
    const { dp } = setup(ports([8080], [9090]));
    assert.equal(out(dp, tcp4(R4, 9090, 40000, 0x10)), Verdict.Reflect, 'the answer from a reply port');
    assert.equal(out(dp, tcp4(R4, 9090, 40000, 0x10)), Verdict.Reflect, 'again, from its remembered decision');
    assert.equal(out(dp, tcp4(R4, 40000, 9090, 0x10)), Verdict.Drop, 'the same flow\'s other direction is not open');
    dp.refusalLength = 0;
    assert.equal(out(dp, tcp4(R4, 9090, 40000, 0x02)), Verdict.Drop, 'a SYN from the reply port opens nothing');
    dp.refusalLength = 0;
    assert.equal(out(dp, tcp4(R4, 9090, 40000, 0x10)), Verdict.Reflect, 'the answers still go');
  });

  it('UDP flows remember their decision too; addresses with port maps are checked per packet', () => {
    const cfg: DataplaneConfig = {
      ...BASE,
      portMaps: [{ address: R6, protocol: 'udp', port: 5353, target: 6000 }],
      allowedPorts: [
        { slot: 0, open: [{ port: 53, protocol: 'udp' }], reply: [] },
        { slot: 5, open: [{ port: 5353, protocol: 'udp' }], reply: [{ port: 6000, protocol: 'udp' }] },
      ],
    };
    const { dp } = setup(cfg);
    for (let i = 0; i < 3; i++) assert.equal(out(dp, udp4(R4, 40000, 53)), Verdict.Reflect);
    assert.equal(out(dp, udp4(R4, 40000, 54)), Verdict.Drop);
    dp.refusalLength = 0;
    for (let i = 0; i < 3; i++) assert.equal(out(dp, udp6(R6, 40000, 5353)), Verdict.Reflect, 'to the mapped port');
    assert.equal(out(dp, udp6(R6, 40000, 6000)), Verdict.Drop, 'the target itself is no open port');
  });
});

describe('Dataplane.gate', () => {
  /** A RECORDING STAND-IN for a backend's "who" check: notes which slots' packets it was asked about. */
  class RecordingGate implements OutboundGate {
    asked: string[] = [];
    answer: AppGateMark = AppGateMark.Decide;
    generation = 0;
    mark(_index: number, _buf: Uint8Array, _off: number, _len: number, p: ParsedPacket): AppGateMark {
      this.asked.push(`${p.family}:${p.dstPort}`);
      return this.answer;
    }
  }

  it('is asked only about packets to addresses with an apps list, and only with a batch index', () => {
    const { dp } = setup({ ...BASE, appGateSlots: [5] });
    const gate = new RecordingGate();
    dp.gate = gate;
    const send = (pkt: Uint8Array, index = 0) => dp.outbound(Uint8Array.from(pkt), 0, pkt.length, T0, 0, index);
    assert.equal(send(tcp4(R4, 40000, 80)), Verdict.Reflect);
    assert.equal(send(udp6(R6, 40000, 5353)), Verdict.Reflect);
    assert.equal(send(udp6(R6, 40000, 5353), -1), Verdict.Reflect);
    assert.deepEqual(gate.asked, ['6:5353'], 'the address without a list and the index-less call skip the gate');
    gate.answer = AppGateMark.Held;
    assert.equal(send(udp6(R6, 40000, 5353)), Verdict.Drop);
    gate.answer = AppGateMark.Refuse;
    assert.equal(send(udp6(R6, 40000, 5353)), Verdict.Drop);
    assert.equal(dp.dropCause, DropCause.NotAllowed);
    dp.configure({ ...BASE, appGateSlots: [0] });
    gate.asked = [];
    assert.equal(send(udp6(R6, 40000, 5353)), Verdict.Reflect, 'slot 5 lost its list: not asked');
    assert.equal(send(tcp4(R4, 40000, 80)), Verdict.Drop, 'slot 0 has one now');
    assert.deepEqual(gate.asked, ['4:80']);
    assert.throws(() => dp.configure({ ...BASE, appGateSlots: [MAX_REFLECT_ADDRESSES] }), isRetroflectError);
  });

  it('keeps an Allowed answer per flow and direction until the gate\'s generation moves; never another answer', () => {
    const { dp } = setup({ ...BASE, appGateSlots: [0] });
    const gate = new RecordingGate();
    dp.gate = gate;
    const send = (pkt: Uint8Array, index = 0) => dp.outbound(Uint8Array.from(pkt), 0, pkt.length, T0, 0, index);
    const asked = (): number => gate.asked.splice(0).length;
    for (let i = 0; i < 3; i++) assert.equal(send(tcp4(R4, 40000, 80, 0x10)), Verdict.Reflect);
    assert.equal(asked(), 3, 'Decide (the gate has no verdict to give) is asked every time');
    gate.answer = AppGateMark.Allowed;
    for (let i = 0; i < 3; i++) assert.equal(send(tcp4(R4, 40000, 80, 0x10)), Verdict.Reflect);
    assert.equal(asked(), 1, 'an Allowed answer is kept for the flow');
    assert.equal(send(tcp4(R4, 80, 40000, 0x10)), Verdict.Reflect);
    assert.equal(send(tcp4(R4, 40000, 80, 0x02)), Verdict.Reflect);
    assert.equal(send(tcp4(R4, 40000, 80, 0x10), -1), Verdict.Reflect);
    assert.equal(asked(), 2, 'the other direction and a SYN are asked; without a batch index nothing is');
    gate.answer = AppGateMark.Refuse;
    assert.equal(send(tcp4(R4, 40000, 80, 0x10)), Verdict.Reflect, 'the kept answer holds within a generation');
    gate.generation++;
    assert.equal(send(tcp4(R4, 40000, 80, 0x10)), Verdict.Drop, 'a new generation: asked, refused at once');
    assert.equal(dp.dropCause, DropCause.NotAllowed);
    dp.refusalLength = 0;
    assert.equal(send(tcp4(R4, 40000, 80, 0x10)), Verdict.Drop, 'and again: a refusal is never kept');
    assert.equal(asked(), 2);
    gate.answer = AppGateMark.Allowed;
    assert.equal(send(tcp4(R4, 40000, 80, 0x10)), Verdict.Reflect);
    dp.gate = new RecordingGate();
    dp.gate.mark = () => AppGateMark.Held;
    assert.equal(send(tcp4(R4, 40000, 80, 0x10)), Verdict.Drop, 'another gate is asked anew');
  });
});

describe('Dataplane.configure', () => {
  it('keeps counters of slots that stay, zeroes slots that are new or now hold something else', () => {
    const { dp, counters } = setup();
    const send = () => {
      dp.outbound(tcp4(R4, 1, 2), 0, tcp4(R4, 1, 2).length, T0);
      const u = udp6(R6, 1, 2);
      dp.outbound(u, 0, u.length, T0);
      const s = ipv4({ src: OTHER4, dst: L4, proto: 6, payload: tcpSegment({ srcPort: 1, dstPort: 8080, flags: 2 }) });
      dp.inbound(s, 0, s.length, T0);
      const d = ipv4({ src: OTHER4, dst: L4, proto: 17, payload: udpDatagram(1, 53, []) });
      dp.inbound(d, 0, d.length, T0);
    };
    send();
    send();
    // Slot 9 held an address earlier in another life: its stale count must not show up for the new address.
    const before = counters.snapshot();
    assert.equal(before.addressSlots[0].packets, 2);
    dp.configure({
      reflect: [
        { address: R4, slot: 0 }, // stays
        { address: '2001:db8:ffff::9', slot: 5 }, // slot 5 reused for another address
        { address: '203.0.113.9', slot: 9 }, // new
      ],
      shield: [
        { port: 8080, protocol: 'tcp', slot: 0 }, // stays
        { port: 9090, protocol: 'udp', slot: 7 }, // slot 7 reused
      ],
    });
    const after = counters.snapshot();
    assert.equal(after.addressSlots[0].packets, 2);
    assert.equal(after.addressSlots[5].packets, 0);
    assert.equal(after.addressSlots[9].packets, 0);
    assert.equal(after.shieldSlots[0].packets, 2);
    assert.equal(after.shieldSlots[7].packets, 0);
    assert.equal(after.reflected.packets, 4, 'totals are not per slot and are kept');
    // The new config is live: R6 now passes, slot 9 address reflects, 53/udp no longer shielded.
    assert.equal(dp.outbound(udp6(R6, 1, 2), 0, udp6(R6, 1, 2).length, T0), Verdict.Pass);
    const n = tcp4('203.0.113.9', 1, 2);
    assert.equal(dp.outbound(n, 0, n.length, T0), Verdict.Reflect);
    assert.equal(counters.snapshot().addressSlots[9].packets, 1);
    const d = ipv4({ src: OTHER4, dst: L4, proto: 17, payload: udpDatagram(1, 53, []) });
    assert.equal(dp.inbound(d, 0, d.length, T0), Verdict.Pass);
  });

  it('configuring the same config again zeroes nothing (idempotent)', () => {
    const { dp, counters } = setup();
    dp.outbound(tcp4(R4, 1, 2), 0, tcp4(R4, 1, 2).length, T0);
    dp.configure(structuredClone(BASE));
    assert.equal(counters.snapshot().addressSlots[0].packets, 1);
  });

  it('refuses a bad config with a RetroflectError and changes nothing', () => {
    const { dp, counters } = setup();
    dp.outbound(tcp4(R4, 1, 2), 0, tcp4(R4, 1, 2).length, T0);
    const bad: [string, DataplaneConfig, string][] = [
      ['bad address', { reflect: [{ address: '203.0.113.9', slot: 1 }, { address: 'not-an-ip', slot: 2 }], shield: [] }, 'E_INVALID_ADDRESS'],
      ['slot out of range', { reflect: [{ address: '203.0.113.9', slot: MAX_REFLECT_ADDRESSES }], shield: [] }, 'E_INTERNAL'],
      ['bad port', { reflect: [], shield: [{ port: 0, protocol: 'tcp', slot: 1 }] }, 'E_INVALID_PORT'],
      ['bad protocol', { reflect: [], shield: [{ port: 80, protocol: 'sctp' as 'tcp', slot: 1 }] }, 'E_INVALID_PORT'],
      ['shield slot out of range', { reflect: [], shield: [{ port: 80, protocol: 'tcp', slot: MAX_SHIELD_PORTS }] }, 'E_INTERNAL'],
      ['too many addresses', { reflect: Array.from({ length: MAX_REFLECT_ADDRESSES + 1 }, (_, i) => ({ address: `203.0.113.${i}`, slot: i % 64 })), shield: [] }, 'E_LIMIT_REACHED'],
    ];
    for (const [name, cfg, code] of bad) {
      assert.throws(() => dp.configure(cfg), (e: unknown) => isRetroflectError(e) && e.code === code, name);
    }
    // Still the old config, counters untouched.
    assert.equal(dp.outbound(tcp4(R4, 1, 2), 0, tcp4(R4, 1, 2).length, T0), Verdict.Reflect);
    const s = ipv4({ src: OTHER4, dst: L4, proto: 6, payload: tcpSegment({ srcPort: 1, dstPort: 8080, flags: 2 }) });
    assert.equal(dp.inbound(s, 0, s.length, T0), Verdict.Drop);
    assert.equal(counters.snapshot().addressSlots[0].packets, 2);
  });

  it('handles all 64 reflect addresses of both families', () => {
    const reflect = Array.from({ length: 64 }, (_, i) => ({ address: i % 2 ? `2001:db8:ffff::${i.toString(16)}` : `203.0.113.${i}`, slot: 63 - i }));
    const { dp, counters } = setup({ reflect, shield: [] });
    for (const { address } of reflect) {
      const pkt = address.includes(':') ? udp6(address, 1, 2) : tcp4(address, 1, 2);
      assert.equal(dp.outbound(pkt, 0, pkt.length, T0), Verdict.Reflect, address);
    }
    const snap = counters.snapshot();
    assert.ok(snap.addressSlots.every((s) => s.packets === 1));
  });
});

describe('buildEngineStats', () => {
  it('maps slots to addresses and ports and sums protocols', () => {
    const { dp, counters } = setup();
    const a = tcp4(R4, 1, 2);
    const b = udp6(R6, 1, 2);
    dp.outbound(a, 0, a.length, T0);
    dp.outbound(b, 0, b.length, T0);
    const s = ipv4({ src: OTHER4, dst: L4, proto: 17, payload: udpDatagram(1, 53, []) });
    dp.inbound(s, 0, s.length, T0);
    counters.addReceiveError();
    counters.addSendError();
    counters.addSendError();
    counters.addExpectedSendFailure('icmpRefused');
    const stats = buildEngineStats(counters.snapshot(), BASE, { sampledAt: new Date(T0), uptimeSeconds: 5 });
    assert.equal(stats.sampledAt, '2026-01-01T00:00:00.000Z');
    assert.deepEqual(stats.reflected, { packets: 2, bytes: a.length + b.length });
    assert.deepEqual(stats.byProtocol.tcp, { packets: 1, bytes: a.length });
    assert.deepEqual(stats.byProtocol.udp, { packets: 1, bytes: b.length });
    assert.deepEqual(stats.byAddress.map((x) => [x.address, x.packets]), [[R4, 1], [R6, 1]]);
    assert.deepEqual(stats.byShieldPort, [
      { port: 8080, protocol: 'tcp', packets: 0, bytes: 0 },
      { port: 53, protocol: 'udp', packets: 1, bytes: s.length },
    ]);
    assert.deepEqual(stats.errors, { receive: 1, send: 2, sendExpected: { hostUnreachable: 0, icmpRefused: 1 } });
    assert.equal(stats.malformed.total, 0);
    assert.deepEqual(Object.keys(stats.malformed.byReason).sort(), ['badExtensionHeader', 'badHeaderLength', 'badTotalLength', 'badTransportHeader', 'badVersion', 'truncated']);
    assert.deepEqual(stats.rates, { reflectedPackets: 0, reflectedBytes: 0, shieldDroppedPackets: 0 });
    // A plain-JSON shape: survives the pipe unchanged.
    assert.deepEqual(JSON.parse(JSON.stringify(stats)), stats);
  });

  it('counters created over the same SharedArrayBuffer share values; a too-small buffer is refused', () => {
    const a = new EngineCounters();
    const b = new EngineCounters(a.buffer);
    b.addReflected(3, 1, 100);
    assert.deepEqual(a.snapshot().addressSlots[3].byProtocol.udp, { packets: 1, bytes: 100 });
    assert.throws(() => new EngineCounters(new SharedArrayBuffer(64)), RangeError);
  });
});
