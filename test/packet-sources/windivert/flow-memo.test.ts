/**
 * The app gate's flow memo (src/packet-sources/windivert/flow-memo.ts) on real packets parsed by the packet core: a
 * hit needs the same protocol, both ports and both addresses (IPv4 and IPv6, every byte); two flows are kept and a
 * third replaces the older; forget() empties it. The gate's own behaviour with it (verdicts changing under it) is
 * covered end to end by apps-allowed.test.ts.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parsePacket, ParsedPacket } from '../../../src/packet/parse.ts';
import { FlowMemo } from '../../../src/packet-sources/windivert/flow-memo.ts';
import { addressBytes, ipv4, ipv6, tcpSegment, udpDatagram, withChecksum } from '../../helpers/packet-builders.ts';

function tcp4(src: string, dst: string, sport: number, dport: number): Uint8Array {
  const segment = tcpSegment({ srcPort: sport, dstPort: dport, flags: 0x10 });
  const seg = withChecksum(addressBytes(src), addressBytes(dst), 6, segment);
  return ipv4({ src, dst, proto: 6, payload: seg });
}

function udp6(src: string, dst: string, sport: number, dport: number): Uint8Array {
  const dg = withChecksum(addressBytes(src), addressBytes(dst), 17, udpDatagram(sport, dport, [1, 2, 3]));
  return ipv6({ src, dst, proto: 17, payload: dg });
}

/** The memo's answer for `pkt` (parsed here as the data plane would), -1 when it has none. */
function find(memo: FlowMemo, pkt: Uint8Array): number {
  const p = new ParsedPacket();
  assert.ok(parsePacket(pkt, 0, pkt.length, p));
  return memo.find(pkt, p);
}

function remember(memo: FlowMemo, pkt: Uint8Array, answer: number): void {
  const p = new ParsedPacket();
  assert.ok(parsePacket(pkt, 0, pkt.length, p));
  memo.remember(pkt, p, answer);
}

test('flow memo: a hit needs protocol, ports and every address byte to match', () => {
  const memo = new FlowMemo();
  const flow = tcp4('198.51.100.2', '192.0.2.1', 40000, 80);
  assert.equal(find(memo, flow), -1, 'empty');
  remember(memo, flow, 2);
  assert.equal(find(memo, flow), 2);
  assert.equal(find(memo, tcp4('198.51.100.2', '192.0.2.1', 40000, 81)), -1, 'destination port');
  assert.equal(find(memo, tcp4('198.51.100.2', '192.0.2.1', 40001, 80)), -1, 'source port');
  assert.equal(find(memo, tcp4('198.51.100.3', '192.0.2.1', 40000, 80)), -1, 'source address');
  assert.equal(find(memo, tcp4('198.51.100.2', '192.0.2.2', 40000, 80)), -1, 'destination address');
  assert.equal(find(memo, tcp4('192.0.2.1', '198.51.100.2', 80, 40000)), -1, 'the other direction is another flow');
  const six = udp6('2001:db8::2', '2001:db8::1', 5353, 53);
  remember(memo, six, 0);
  assert.equal(find(memo, six), 0);
  assert.equal(find(memo, udp6('2001:db8::2', '2001:db8:0:0:0:0:1:1', 5353, 53)), -1, 'a later IPv6 byte differs');
  assert.equal(find(memo, udp6('2001:db9::2', '2001:db8::1', 5353, 53)), -1, 'an early IPv6 byte differs');
});

test('flow memo: keeps two flows, a third replaces the older; forget() empties it', () => {
  const memo = new FlowMemo();
  const a = tcp4('198.51.100.2', '192.0.2.1', 40000, 80);
  const b = tcp4('192.0.2.9', '192.0.2.1', 80, 40000);
  const c = tcp4('198.51.100.2', '192.0.2.1', 40002, 80);
  remember(memo, a, 0);
  remember(memo, b, 2);
  assert.deepEqual([find(memo, a), find(memo, b)], [0, 2]);
  remember(memo, c, 0);
  assert.deepEqual([find(memo, a), find(memo, b), find(memo, c)], [-1, 2, 0]);
  memo.forget();
  assert.deepEqual([find(memo, a), find(memo, b), find(memo, c)], [-1, -1, -1]);
});
