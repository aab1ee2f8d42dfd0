/**
 * Property: our WinDivert filter captures everything the data plane must act on, and nothing it captures is left
 * undecided. Random packets — IPv4/IPv6 × TCP/UDP/ICMP/other protocols × fragments × IPv6 extension headers (AH
 * included) × to and from reflect addresses and shield ports × loopback/inbound/outbound — are handed to the test
 * double, which compiles and evaluates our real filters as the driver documents (outbound fragments one by one,
 * inbound ones reassembled; inbound IPv6 fragments to a shield port or forged from a reflect address are blocked in
 * the driver by our fragment-drop handle, which counts as acting on them). For each packet the data plane is asked, on a copy of what the driver would hand it,
 * whether it would reflect it (outbound) or drop it (inbound: shielded, forged source); every such packet must have
 * been captured.
 * Then the real WinDivertPacketSource + Dataplane loop runs until the queue is empty and stops as the worker does:
 * every captured packet is decided exactly once and nothing is put back undecided.
 */
import assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';
import { buildInterceptConfig } from '../../../src/config/intercept-config.ts';
import { Verdict } from '../../../src/packet/verdicts.ts';
import { WinDivertHostBackend } from '../../../src/packet-sources/windivert/host.ts';
import { createWinDivertPacketSource } from '../../../src/packet-sources/windivert/source.ts';
import type { WinDivertAddress } from '../../../src/packet-sources/windivert/address.ts';
import { addressBytes, icmpMessage, ipv4, pattern, tcpSegment, udpDatagram, withChecksum } from '../../helpers/packet-builders.ts';
import { rng } from '../../helpers/rng.ts';
import { collectSent, DOUBLE_PATH, inboundAddr, loadDouble, loopOnce, makeDataplane, offer, outboundAddr, stopLikeWorker } from '../../helpers/windivert-double.ts';

const { double } = loadDouble();
const R4 = '192.0.2.10';
const R6 = '2001:db8::10';
const OTHER_R4 = '192.0.2.11'; // reflected too
const LOCAL4 = '198.51.100.2';
const LOCAL6 = '2001:db8:1::2';
const PEER4 = '203.0.113.9';
const PEER6 = '2001:db8:2::9';
const cfg = buildInterceptConfig([R4, R6, OTHER_R4], ['8080/tcp', '53/udp', '5000']);

beforeEach(() => double.reset());

/** IPv6 with an extension header chain (0 hop-by-hop, 43 routing, 60 destination options, 51 AH, 44 fragment). */
function ipv6WithChain(src: string, dst: string, proto: number, payload: number[], chain: number[], frag?: { offset: number; more: boolean; id: number }): Uint8Array {
  const types = frag ? [...chain, 44] : chain;
  const bytes: number[] = [];
  types.forEach((type, i) => {
    const next = i + 1 < types.length ? types[i + 1] : proto;
    if (type === 44) {
      const v = ((frag!.offset / 8) << 3) | (frag!.more ? 1 : 0);
      bytes.push(next, 0, v >> 8, v & 0xff, 0, 0, frag!.id >> 8, frag!.id & 0xff);
    } else if (type === 51) {
      bytes.push(next, 2, 0, 0, ...pattern(12, 51)); // 16 bytes: length in 4-byte units minus 2
    } else {
      bytes.push(next, 0, 1, 4, 0, 0, 0, 0); // 8 bytes, a PadN option
    }
  });
  const h = new Array(40).fill(0);
  h[0] = 0x60;
  const len = bytes.length + payload.length;
  h[4] = len >> 8;
  h[5] = len & 0xff;
  h[6] = types.length ? types[0] : proto;
  h[7] = 64;
  h.splice(8, 32, ...addressBytes(src), ...addressBytes(dst));
  return Uint8Array.from([...h, ...bytes, ...payload]);
}

interface Case {
  what: string;
  /** What the stack hands the driver: one packet, or the fragments of one. */
  pieces: Uint8Array[];
  /** The packet the driver hands a handle when inbound fragments are reassembled (= pieces[0] when not fragmented). */
  whole: Uint8Array;
  addr: Partial<WinDivertAddress>;
  outbound: boolean;
}

/** Fragment identification, unique per datagram (as a stack assigns it), so reassembly never mixes two datagrams. */
let nextFragmentId = 1;

function randomCase(r: () => number): Case {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
  const v6 = r() < 0.5;
  const dir = pick(['out', 'out', 'in', 'in', 'loop'] as const);
  const [local, peer, reflect] = v6 ? [LOCAL6, PEER6, pick([R6])] : [LOCAL4, PEER4, pick([R4, OTHER_R4])];
  let src: string;
  let dst: string;
  if (dir === 'out') [src, dst] = [local, r() < 0.6 ? reflect : peer];
  else if (dir === 'in') [src, dst] = [r() < 0.3 ? reflect : peer, local];
  else [src, dst] = [local, local];
  const proto = pick([6, 17, v6 ? 58 : 1, 47, 50, 132] as const);
  const dstPort = pick([8080, 53, 5000, 80, 1 + Math.floor(r() * 65535)]);
  const srcPort = 1024 + Math.floor(r() * 60000);
  const data = pattern(r() < 0.2 ? 1200 + Math.floor(r() * 400) : Math.floor(r() * 120), Math.floor(r() * 1000));
  let upper: number[];
  if (proto === 6) upper = tcpSegment({ srcPort, dstPort, flags: 0x18, data });
  else if (proto === 17) upper = udpDatagram(srcPort, dstPort, data);
  else if (proto === 1 || proto === 58) upper = icmpMessage(proto === 1 ? 8 : 128, 0, 7, 1, data);
  else upper = data;
  upper = proto === 1 ? withChecksum([], [], 1, upper) : withChecksum(addressBytes(src), addressBytes(dst), proto, upper);
  const chain = v6 ? [0, 43, 60, 51].filter((t, i) => (i === 0 ? r() < 0.3 : r() < 0.25)) : [];
  const id = nextFragmentId++ & 0xffff;
  const build = (payload: number[], frag?: { offset: number; more: boolean }): Uint8Array =>
    v6
      ? ipv6WithChain(src, dst, proto, payload, chain, frag && { ...frag, id })
      : ipv4({ src, dst, proto, payload, ...(frag ? { fragmentOffset: frag.offset, moreFragments: frag.more, id } : {}) });
  const whole = build(upper);
  let pieces = [whole];
  if (upper.length > 16 && r() < 0.3) {
    const cut = 8 * (1 + Math.floor(r() * Math.floor((upper.length - 1) / 8)));
    pieces = v6
      ? [build(upper.slice(0, cut), { offset: 0, more: true }), build(upper.slice(cut), { offset: cut, more: false })]
      : [0, 1].map((k) => ipv4({ src, dst, proto, payload: k ? upper.slice(cut) : upper.slice(0, cut), fragmentOffset: k ? cut : 0, moreFragments: k === 0, id }));
    if (dir !== 'out' && r() < 0.5) pieces.reverse(); // inbound fragments may arrive out of order
  }
  const addr = dir === 'out' ? outboundAddr(v6) : dir === 'in' ? inboundAddr(v6) : outboundAddr(v6, { loopback: true });
  const what = `${dir} IPv${v6 ? 6 : 4} proto ${proto} ${src} → ${dst}:${dstPort}${chain.length ? ` ext [${chain}]` : ''}${pieces.length > 1 ? ' fragmented' : ''}`;
  return { what, pieces, whole, addr, outbound: dir !== 'in' };
}

for (const seed of [1, 2, 3, 4, 5, 6]) {
  test(`seed ${seed}: everything the data plane must reflect or drop is captured; everything captured is decided once`, async () => {
    const backend = new WinDivertHostBackend({ dllPath: DOUBLE_PATH });
    const init = await backend.start(cfg);
    const source = createWinDivertPacketSource(init, cfg);
    const { dataplane, counters } = makeDataplane(cfg);
    const oracle = makeDataplane(cfg).dataplane; // judges copies, so the real loop's counters stay its own
    const r = rng(seed * 7919);
    const missed: string[] = [];
    let captured = 0;
    let blockedInDriver = 0;
    let mustAct = 0;
    for (let i = 0; i < 300; i++) {
      const c = randomCase(r);
      // Outbound fragments reach handles one by one; inbound ones as the reassembled packet.
      const judged = c.outbound ? c.pieces : [c.whole];
      const verdicts = judged.map((p) => {
        const copy = Buffer.from(p);
        return c.outbound ? oracle.outbound(copy, 0, copy.length, 0) : oracle.inbound(copy, 0, copy.length, 0);
      });
      const results = c.pieces.map((p) => offer(double, p, c.addr));
      const blocked = !c.outbound && results.includes(3); // a piece dropped in the driver: the datagram never completes
      const takenEach = c.outbound ? results.map((x) => x === 1) : [results[results.length - 1] === 1];
      takenEach.forEach((captureTook, k) => {
        captured += captureTook ? 1 : 0;
        const taken = captureTook || blocked;
        blockedInDriver += blocked && !captureTook ? 1 : 0;
        // Must act: reflect an outbound packet, or drop an inbound one (shielded, forged source). An outbound packet
        // the data plane would drop as malformed is not one it must see.
        const act = c.outbound ? verdicts[k] === Verdict.Reflect : verdicts[k] === Verdict.Drop;
        mustAct += act ? 1 : 0;
        if (act && !taken) missed.push(`${c.what} (piece ${k})`);
      });
      while (double.queued(init.handle) > 0) loopOnce(source, dataplane);
    }
    assert.deepEqual(missed, [], 'the data plane would act on these, but the filter did not capture them');
    assert.ok(mustAct > 60 && captured + blockedInDriver >= mustAct, `${mustAct} packets to act on, ${captured} captured, ${blockedInDriver} blocked in the driver`);
    assert.equal(stopLikeWorker(source, dataplane), 0, 'nothing was left queued');
    const snap = counters.snapshot();
    const decided = snap.reflected.packets + snap.passed.packets + snap.shieldDropped.packets + snap.forgedSourceDropped.packets + snap.malformed.total;
    assert.equal(decided, captured, 'every captured packet decided exactly once');
    assert.deepEqual(collectSent(double).filter((w) => w.origin === 'released'), [], 'nothing put back undecided');
    await backend.stop();
  });
}
