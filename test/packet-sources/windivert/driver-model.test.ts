/**
 * The test double as a model of the WinDivert 2.2 driver (native/windivert_double.c): each behaviour retroflect
 * relies on, as the WinDivert documentation states it (docs/windows.md lists them). These tests check the MODEL, so
 * that the backend tests built on it (source, defects, property, live-change, engine) are held to the driver's
 * documented behaviour rather than to our own assumptions. Runs on Linux (gcc .so) and under Wine (mingw DLL).
 */
import assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';
import { addressBuffer, WINDIVERT_ADDRESS_SIZE, decodeAddress, type WinDivertAddress } from '../../../src/packet-sources/windivert/address.ts';
import { doubleLastOpenReason } from './double-controls.ts';
import { addressBytes, icmpMessage, ipv4, ipv6, pattern, referenceChecksum, referenceTransportValid, udpDatagram, withChecksum } from '../../helpers/packet-builders.ts';
import { collectSent, doubleMatches, inboundAddr, loadDouble, offer, outboundAddr, packet, packetSeq } from '../../helpers/windivert-double.ts';

const { api, double } = loadDouble();
const R = '192.0.2.10';
const LOCAL = '198.51.100.2';
const PEER = '203.0.113.9';
const R6 = '2001:db8::10';
const LOCAL6 = '2001:db8:1::2';
const FLAG_FRAGMENTS = 0x20n;

beforeEach(() => double.reset());

function open(filter: string, priority = 0, flags = 0n): number {
  const h = api.open(filter, 0, priority, flags);
  assert.notEqual(h, -1, `open refused: ${doubleLastOpenReason(double)}`);
  return h;
}

/** Receive one batch from a handle that has packets queued. */
function recv(h: number): { bytes: Buffer[]; addrs: WinDivertAddress[]; raw: Buffer; addrRaw: Buffer; total: number } {
  const raw = Buffer.alloc(1 << 20);
  const addrRaw = Buffer.alloc(255 * WINDIVERT_ADDRESS_SIZE);
  const len = new Uint32Array(1);
  const alen = new Uint32Array([addrRaw.length]);
  assert.ok(api.recvEx(h, raw, raw.length, len, addrRaw, alen), `recv failed: ${api.lastError()}`);
  const bytes: Buffer[] = [];
  const addrs: WinDivertAddress[] = [];
  let off = 0;
  for (let i = 0; i < alen[0] / WINDIVERT_ADDRESS_SIZE; i++) {
    const l = raw[off] >> 4 === 4 ? raw.readUInt16BE(off + 2) : 40 + raw.readUInt16BE(off + 4);
    bytes.push(Buffer.from(raw.subarray(off, off + l)));
    addrs.push(decodeAddress(addrRaw, i * WINDIVERT_ADDRESS_SIZE));
    off += l;
  }
  return { bytes, addrs, raw, addrRaw, total: len[0] };
}

/** Send packets back through a handle, each with its address; returns [ok, lastError, sendLen]. */
function send(h: number, packets: Buffer[], addrs: Partial<WinDivertAddress>[]): [boolean, number, number] {
  const data = Buffer.concat(packets);
  const a = Buffer.concat(addrs.map((x) => addressBuffer(x)));
  const sendLen = new Uint32Array(1);
  const ok = api.sendEx(h, data, data.length, sendLen, a, a.length);
  return [ok, ok ? 0 : api.lastError(), sendLen[0]];
}

// ---- filter compiler ------------------------------------------------------------------------------------------

test('WinDivertOpen refuses, with error 87, what the real compiler refuses', () => {
  const refused = [
    'tcp and', // bad syntax
    '(tcp',
    'tcp)',
    'foo == 1', // unknown field
    'tcp.DstPrt == 80',
    'not (tcp or udp)', // `not` applies to a test, never to a group
    'tcp ? udp : icmp', // `? :` only inside parentheses
    'tcp.DstPort ==', // no value
    'ip.DstAddr == 300.1.1.1',
    `ip.DstAddr == ${'a'.repeat(40)}`, // a token of 40 characters
    Array.from({ length: 256 }, (_, i) => `tcp.DstPort == ${i}`).join(' or '), // 256 tests: the driver refuses length >= 256
    [...Array.from({ length: 638 }, () => 'true'), '!tcp'].join(' and '), // 1,278 tokens (the DLL takes 1,277)
    'tcp & udp',
    '',
  ];
  for (const f of refused) {
    assert.equal(api.open(f, 0, 0, 0n), -1, `refused: ${f.slice(0, 60)}`);
    assert.equal(api.lastError(), 87, f.slice(0, 60));
  }
  const accepted = [
    'true',
    'false',
    'tcp && !udp || icmp',
    '(tcp ? tcp.DstPort == 80 : udp.DstPort == 53)',
    'ip.DstAddr = 192.0.2.1 and ipv6.SrcAddr != ::1 and ipv6.DstAddr == 2001:0db8:0000:0000:0000:0000:0000:0001',
    'tcp.DstPort >= 0x50 and not tcp.DstPort > 100 and tcp.SrcPort < 65535 and tcp.Syn',
    'inbound and !loopback and !impostor and ifIdx == 7 and subIfIdx <= 3 and fragment == 0 and protocol == TCP',
    Array.from({ length: 255 }, (_, i) => `tcp.DstPort == ${i}`).join(' or '), // exactly 255 tests
    Array.from({ length: 639 }, () => 'true').join(' and '), // exactly 1,277 tokens
  ];
  for (const f of accepted) api.close(open(f));
  assert.equal(double.openHandles(), 0);
});

test('filters evaluate as documented: a test on a field the packet lacks fails, even under `not`; and binds before or; ? :', () => {
  const udp53 = packet(LOCAL, R, 17, 40000, 53);
  const tcp80 = packet(LOCAL, R, 6, 40000, 80);
  const out = outboundAddr(false);
  const m = (f: string, p: Uint8Array, a = out) => doubleMatches(double, f, p, a);
  assert.equal(m('not tcp.DstPort == 80', udp53), false, 'not relevant: fails whatever the operator');
  assert.equal(m('tcp.DstPort != 80', udp53), false);
  assert.equal(m('!tcp', udp53), true);
  assert.equal(m('udp or tcp and tcp.DstPort == 1', udp53), true, 'and binds tighter than or');
  assert.equal(m('(udp or tcp) and tcp.DstPort == 1', udp53), false);
  assert.equal(m('(tcp ? tcp.DstPort == 80 : udp.DstPort == 53)', udp53), true);
  assert.equal(m('(tcp ? tcp.DstPort == 80 : udp.DstPort == 54)', udp53), false);
  assert.equal(m('(tcp ? tcp.DstPort == 80 : udp.DstPort == 54)', tcp80), true);
  assert.equal(m(`ip.DstAddr == ${R} and ip.SrcAddr == ${LOCAL} and ip.TTL == 64 and ip.Protocol == 17`, udp53), true);
  assert.equal(m(`ipv6.DstAddr == ${R}`, udp53), false);
  assert.equal(m('outbound and !inbound and !loopback and !impostor and ifIdx == 7 and subIfIdx == 3', udp53), true);
  assert.equal(m('inbound', udp53, inboundAddr(false)), true);
  assert.equal(m('loopback', udp53, outboundAddr(false, { loopback: true })), true);
  assert.equal(m('impostor', udp53, outboundAddr(false, { impostor: true })), true);
  assert.equal(m(`length == ${udp53.length} and udp.PayloadLength == ${udp53.length - 28} and udp.Length == ${udp53.length - 20}`, udp53), true);
  assert.equal(m('tcp.PayloadLength == 16 and tcp.HdrLength == 5 and tcp.Ack and tcp.Psh and !tcp.Syn', tcp80), true);
  const v6 = packet(LOCAL6, R6, 6, 40000, 8080);
  assert.equal(m(`ipv6 and !ip and ipv6.DstAddr == ${R6} and ipv6.HopLimit == 64 and ipv6.NextHdr == 6 and tcp.DstPort == 8080`, v6, outboundAddr(true)), true);
  const ping = ipv4({ src: LOCAL, dst: R, proto: 1, payload: withChecksum([], [], 1, icmpMessage(8, 0, 1, 1, [1, 2])) });
  assert.equal(m('icmp and icmp.Type == 8 and icmp.Code == 0 and !icmpv6 and !tcp', ping), true);
  // The driver never matches a packet whose IP length disagrees with its size.
  const bad = Buffer.from(udp53);
  bad.writeUInt16BE(bad.length + 4, 2);
  assert.equal(m('true', bad), false);
});

test('fragments: a fragment at a non-zero offset has no transport header; the first one has it; IPv6 extension headers incl. AH are walked', () => {
  const m = (f: string, p: Uint8Array, a = outboundAddr(false)) => doubleMatches(double, f, p, a);
  const first = ipv4({ src: LOCAL, dst: R, proto: 17, payload: udpDatagram(40000, 53, pattern(24)), moreFragments: true });
  const later = ipv4({ src: LOCAL, dst: R, proto: 17, payload: pattern(16), fragmentOffset: 32 });
  assert.equal(m('fragment and udp and udp.DstPort == 53 and ip.MF and ip.FragOff == 0', first), true);
  assert.equal(m('fragment and !udp and protocol == 17 and ip.FragOff == 4 and !ip.MF', later), true);
  assert.equal(m('udp.DstPort == 53', later), false);
  const v6later = ipv6({ src: LOCAL6, dst: R6, proto: 6, payload: pattern(24), ext: [{ type: 44, fragmentOffset: 64 }] });
  assert.equal(m('fragment and !tcp and protocol == 6 and ipv6.NextHdr == 44', v6later, outboundAddr(true)), true);
  // Hop-by-hop options then AH (RFC 4302 length in 4-byte units) then TCP: the driver reads through both.
  const PEER6 = '2001:db8:2::9';
  const tcp = [...packet(PEER6, LOCAL6, 6, 5555, 8080).subarray(40)];
  const ah = Buffer.from(ipv6({ src: PEER6, dst: LOCAL6, proto: 6, payload: tcp, ext: [{ type: 0, body: [1, 0, 0, 0, 0, 0] }, { type: 60, body: pattern(14) }] }));
  ah[40] = 51; // hop-by-hop (40..47) now names AH as the next header
  ah[49] = 2; // the 16-byte header at 48..63 as AH: length in 4-byte units minus 2
  assert.equal(m('ipv6.NextHdr == 0 and protocol == 6 and tcp and tcp.DstPort == 8080 and !fragment', ah, inboundAddr(true)), true);
});

// ---- priorities, re-injection, impostors ----------------------------------------------------------------------

test('a packet goes to the matching handle of highest priority (ties: the newest); what it injects goes on to lower internal priorities, older equal ones included', () => {
  const low = open('tcp', -5);
  const high = open('tcp', 10);
  const highNewer = open('tcp', 10);
  const other = open('udp', 20); // higher, but does not match
  assert.equal(offer(double, packet(LOCAL, R, 6, 40000, 80, 1), outboundAddr(false)), 1);
  assert.equal(double.queued(highNewer), 1);
  assert.equal(double.queued(high) + double.queued(low) + double.queued(other), 0);
  const got = recv(highNewer);
  assert.equal(got.addrs[0].impostor, false);
  assert.deepEqual(send(highNewer, got.bytes, [{ ...got.addrs[0] }]), [true, 0, got.bytes[0].length]);
  // Driver: internal priority = user priority << 16 | a per-open counter, so the OLDER handle of equal user priority
  // ranks below the newer one and sees what it injects (issue 19 item 23).
  assert.equal(double.queued(high), 1, 'an older handle of equal priority sees what the newer one injected');
  assert.equal(double.queued(low), 0);
  const fromHigh = recv(high);
  send(high, fromHigh.bytes, [{ ...fromHigh.addrs[0] }]);
  assert.equal(double.queued(highNewer), 0, 'the newer one never sees what the older one injected');
  assert.equal(double.queued(low), 1, 'the next lower priority does');
  const again = recv(low);
  send(low, again.bytes, [{ ...again.addrs[0] }]);
  const wire = collectSent(double);
  assert.equal(wire.length, 1);
  assert.equal(wire[0].origin, 'sent');
  assert.equal(wire[0].handle, low);
  // A shut-down handle takes nothing new.
  api.shutdown(highNewer, 1);
  offer(double, packet(LOCAL, R, 6, 40000, 80, 2), outboundAddr(false));
  assert.equal(double.queued(high), 1);
});

test('Impostor is set only on packets another driver injected; a WinDivert injection is never an impostor; an impostor out of TTL fails with ERROR_HOST_UNREACHABLE alone', () => {
  const h = open('tcp', 5);
  const below = open('tcp', 0);
  offer(double, packet(PEER, LOCAL, 6, 5555, 80, 1), inboundAddr(false, { impostor: true }));
  const got = recv(h);
  assert.equal(got.addrs[0].impostor, true, 'from another driver');
  send(h, got.bytes, [{ ...got.addrs[0], impostor: false }]);
  assert.equal(recv(below).addrs[0].impostor, false, 're-injected by WinDivert: not an impostor');
  // Impostor flag on send: TTL goes down by one; at 1 it cannot, so that packet fails and the others go out.
  const p1 = Buffer.from(packet(PEER, LOCAL, 17, 1, 9, 1));
  const p2 = Buffer.from(packet(PEER, LOCAL, 17, 2, 9, 2));
  p2[8] = 1;
  p2.writeUInt16BE(0, 10);
  p2.writeUInt16BE(referenceChecksum([...p2.subarray(0, 20)]), 10);
  const [ok, err, len] = send(below, [p1, p2], [inboundAddr(false, { impostor: true }), inboundAddr(false, { impostor: true })]);
  assert.deepEqual([ok, err, len], [false, 1232, p1.length + p2.length]);
  const wire = collectSent(double).filter((w) => w.bytes[9] === 17);
  assert.equal(wire.length, 1);
  assert.equal(wire[0].bytes[8], 63, 'TTL decremented');
  assert.equal(referenceChecksum([...wire[0].bytes.subarray(0, 20)]), 0, 'header checksum still valid');
});

// ---- fragments -------------------------------------------------------------------------------------------------

function fragmentsV4(src: string, dst: string, proto: number, payload: number[], size: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let off = 0; off < payload.length; off += size) {
    out.push(ipv4({ src, dst, proto, payload: payload.slice(off, off + size), fragmentOffset: off, moreFragments: off + size < payload.length, id: 0x77 }));
  }
  return out;
}

test('outbound fragments arrive one by one; only a filter without a transport test sees them all', () => {
  const dgram = withChecksum(addressBytes(LOCAL), addressBytes(R), 17, udpDatagram(40000, 53, pattern(100)));
  const frags = fragmentsV4(LOCAL, R, 17, dgram, 48);
  assert.equal(frags.length, 3);
  const byProto = open('outbound and udp', 1);
  const byAddr = open(`outbound and ip.DstAddr == ${R}`, 0);
  frags.forEach((f) => offer(double, f, outboundAddr(false)));
  assert.equal(double.queued(byProto), 1, 'only the first fragment has a UDP header');
  assert.equal(double.queued(byAddr), 2, 'the later fragments, one by one');
  assert.equal(recv(byAddr).bytes.length, 2);
});

test('inbound fragments arrive reassembled, unless the handle asked for fragments (WINDIVERT_FLAG_FRAGMENTS)', () => {
  const dgram = withChecksum(addressBytes(PEER), addressBytes(LOCAL), 17, udpDatagram(5555, 53, pattern(100)));
  const frags = fragmentsV4(PEER, LOCAL, 17, dgram, 48);
  const h = open('inbound and udp.DstPort == 53');
  assert.deepEqual(frags.map((f) => offer(double, f, inboundAddr(false))), [2, 2, 1]);
  const got = recv(h);
  assert.equal(got.bytes.length, 1);
  const whole = got.bytes[0];
  assert.equal(whole.length, 20 + dgram.length);
  assert.equal(whole[6] & 0x3f, 0, 'MF and offset cleared');
  assert.equal(referenceChecksum([...whole.subarray(0, 20)]), 0);
  assert.ok(referenceTransportValid(addressBytes(PEER), addressBytes(LOCAL), 17, whole.subarray(20)));
  // Out of order, IPv6.
  const d6 = withChecksum(addressBytes('2001:db8:2::9'), addressBytes(LOCAL6), 17, udpDatagram(5555, 53, pattern(70)));
  const f6 = [0, 40].map((off) => ipv6({ src: '2001:db8:2::9', dst: LOCAL6, proto: 17, payload: d6.slice(off, off + 40), ext: [{ type: 44, fragmentOffset: off, moreFragments: off === 0 }] }));
  assert.deepEqual([offer(double, f6[1], inboundAddr(true)), offer(double, f6[0], inboundAddr(true))], [2, 1]);
  const w6 = recv(h).bytes[0];
  assert.equal(w6[6], 17, 'fragment header gone');
  assert.equal(w6.length, 40 + d6.length);
  api.close(h);
  const fragHandle = open('inbound', 0, FLAG_FRAGMENTS);
  assert.deepEqual(frags.map((f) => offer(double, f, inboundAddr(false))), [1, 1, 1]);
  assert.equal(recv(fragHandle).bytes.length, 3);
});

test('inbound loopback packets are never offered (WinDivert sees loopback only outbound)', () => {
  const h = open('true');
  assert.equal(offer(double, packet(LOCAL, LOCAL, 6, 1, 2), inboundAddr(false, { loopback: true })), 0);
  assert.equal(offer(double, packet(LOCAL, LOCAL, 6, 1, 2), outboundAddr(false, { loopback: true })), 1);
  assert.equal(double.queued(h), 1);
});

// ---- close, shutdown, SendEx -----------------------------------------------------------------------------------

test('close puts still-queued packets back unmodified (on to the wire); shutdown lets the queue be read, then ERROR_NO_DATA', () => {
  const h = open('true');
  for (let i = 0; i < 3; i++) offer(double, packet(LOCAL, R, 6, 40000, 80, i), outboundAddr(false));
  api.shutdown(h, 1);
  assert.equal(recv(h).bytes.length, 3);
  const raw = Buffer.alloc(100);
  const a = Buffer.alloc(WINDIVERT_ADDRESS_SIZE);
  assert.equal(api.recvEx(h, raw, raw.length, new Uint32Array(1), a, new Uint32Array([a.length])), false);
  assert.equal(api.lastError(), 232);
  const h2 = open('true');
  const original = [0, 1].map((i) => Buffer.from(packet(LOCAL, R, 6, 40000, 80, 10 + i)));
  original.forEach((p) => offer(double, p, outboundAddr(false)));
  api.close(h2);
  const wire = collectSent(double);
  assert.deepEqual(wire.map((w) => [packetSeq(w.bytes), w.origin, w.handle, w.addr.outbound]), [[10, 'released', h2, true], [11, 'released', h2, true]]);
  assert.deepEqual(wire.map((w) => w.bytes), original, 'unmodified');
});

test('SendEx: a packet that fails softly is lost alone; the call returns FALSE with its error and counts every byte', () => {
  const h = open('false');
  const ps = [0, 1, 2].map((i) => Buffer.from(packet(LOCAL, PEER, 6, 40000 + i, 80, i)));
  assert.equal(double.setSendFailure(1, null, 31), 1);
  const [ok, err, len] = send(h, ps, ps.map(() => outboundAddr(false)));
  assert.deepEqual([ok, err, len], [false, 31, ps.reduce((s, p) => s + p.length, 0)]);
  assert.deepEqual(collectSent(double).map((w) => packetSeq(w.bytes)), [0, 2]);
  // By content: every ICMP echo fails.
  double.setSendFailure(-1, 'icmp.Type == 8', 1234);
  const ping = Buffer.from(ipv4({ src: LOCAL, dst: PEER, proto: 1, payload: withChecksum([], [], 1, icmpMessage(8, 0, 1, 1, [])) }));
  assert.deepEqual(send(h, [ps[0], ping], [outboundAddr(false), outboundAddr(false)]).slice(0, 2), [false, 1234]);
  assert.equal(collectSent(double).length, 1);
  // A malformed packet is a hard error: the batch stops there.
  double.setSendFailure(-1, null, 0);
  const broken = Buffer.from(ps[1]);
  broken[0] = 0x00;
  assert.deepEqual(send(h, [ps[0], broken], [outboundAddr(false), outboundAddr(false)]).slice(0, 2), [false, 87]);
  assert.equal(collectSent(double).length, 1, 'the packet before the bad one went out');
});

// ---- issue 19: checksums at injection, full queues ------------------------------------------------------------

test('at injection the driver recomputes IPv4 header, TCP and UDP checksums whose flag is 0, never ICMP; flagged ones are left alone', () => {
  const h = open('false');
  const tcp = Buffer.from(packet(LOCAL, R, 6, 40000, 80, 1));
  const good = tcp.readUInt16BE(36);
  const bad = (b: Buffer, at: number): Buffer => {
    const c = Buffer.from(b);
    c.writeUInt16BE(0x1234, at);
    return c;
  };
  const icmp = Buffer.from(ipv4({ src: LOCAL, dst: R, proto: 1, payload: [8, 0, 0x12, 0x34, 0, 1, 0, 1] }));
  const udp6 = Buffer.from(packet(LOCAL6, R6, 17, 40000, 53, 2));
  send(h, [bad(tcp, 36), bad(tcp, 36), bad(tcp, 10), icmp, bad(udp6, 46)], [
    outboundAddr(false, { tcpChecksum: false }),
    outboundAddr(false),
    outboundAddr(false, { ipChecksum: false }),
    outboundAddr(false, { ipChecksum: false, tcpChecksum: false, udpChecksum: false }),
    outboundAddr(true, { udpChecksum: false }),
  ]);
  const wire = collectSent(double);
  assert.equal(wire[0].bytes.readUInt16BE(36), good, 'TCP flag 0: recomputed');
  assert.equal(wire[1].bytes.readUInt16BE(36), 0x1234, 'flag set: left as it was');
  assert.equal(wire[2].bytes.readUInt16BE(10), tcp.readUInt16BE(10), 'IP flag 0: header checksum recomputed');
  assert.equal(wire[3].bytes.readUInt16BE(22), 0x1234, 'ICMP: never');
  assert.equal(wire[4].bytes.readUInt16BE(46), udp6.readUInt16BE(46), 'UDP over IPv6 flag 0: recomputed');
});

test('a full queue drops its oldest packet to take a new one', () => {
  const h = open('tcp');
  assert.ok(api.setParam(h, 0, 32n));
  for (let i = 0; i < 40; i++) offer(double, packet(LOCAL, R, 6, 40000, 80, i), outboundAddr(false));
  assert.equal(double.queued(h), 32);
  assert.equal(Number(double.queueDropped()), 8);
  assert.equal(recv(h).bytes.map((b) => b.readUInt32LE(40))[0], 8, 'the 8 oldest are gone');
});
