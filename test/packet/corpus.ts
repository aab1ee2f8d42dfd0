/**
 * Hand-built packets covering every protocol the core understands, both families, IPv4 options, IPv6 extension
 * header chains and fragments — each with the facts the parser should report.
 */
import { icmpMessage, ipv4, ipv6, pattern, tcpSegment, udpDatagram, withChecksum, addressBytes } from '../helpers/packet-builders.ts';

export const A4 = '192.0.2.10'; // "local" address
export const R4 = '203.0.113.7'; // reflect address
export const A6 = '2001:db8::10';
export const R6 = '2001:db8:ffff::7';

export interface CorpusPacket {
  name: string;
  bytes: Uint8Array;
  family: 4 | 6;
  protocol: number;
  hasTransport: boolean;
  fragment: boolean;
  srcPort?: number;
  dstPort?: number;
  tcpFlags?: number;
  icmpType?: number;
  icmpId?: number;
  /** Offset of the transport header from the start of the packet. */
  transportAt: number;
  /** Whole upper-layer message in this packet, so its checksum can be verified. */
  checksummed: boolean;
}

function seg4(proto: number, segment: number[]): number[] {
  return withChecksum(addressBytes(A4), addressBytes(R4), proto, segment);
}
function seg6(proto: number, segment: number[]): number[] {
  return withChecksum(addressBytes(A6), addressBytes(R6), proto, segment);
}

export function corpus(): CorpusPacket[] {
  const syn = tcpSegment({ srcPort: 51000, dstPort: 8080, flags: 0x02, options: [2, 4, 5, 0xb4, 4, 2] });
  const data = tcpSegment({ srcPort: 8080, dstPort: 51000, flags: 0x18, data: pattern(300) });
  const oddData = tcpSegment({ srcPort: 443, dstPort: 40000, flags: 0x11, data: pattern(7) }); // FIN|ACK, odd length
  const dns = udpDatagram(53000, 53, pattern(33));
  const echo = icmpMessage(8, 0, 0xbeef, 1, pattern(56));
  const echo6 = icmpMessage(128, 0, 0xcafe, 2, pattern(57));
  const bigUdp = withChecksum(addressBytes(A4), addressBytes(R4), 17, udpDatagram(5000, 6000, pattern(1400)));
  const bigUdp6 = withChecksum(addressBytes(A6), addressBytes(R6), 17, udpDatagram(5000, 6000, pattern(1400)));
  const hbh = { type: 0, body: [5, 2, 0, 0] }; // router alert option
  const dst = { type: 60, body: [1, 2, 0, 0] }; // PadN
  const rt = { type: 43, body: [0, 0, 0, 0, 0, 0] };
  const ah = { type: 51, body: [0, 0, 0, 0, 0x10, 0x01, 0, 0, 0, 9, ...pattern(12, 3)] };
  return [
    { name: 'ipv4 tcp syn with options', bytes: ipv4({ src: A4, dst: R4, proto: 6, payload: seg4(6, syn) }), family: 4, protocol: 6, hasTransport: true, fragment: false, srcPort: 51000, dstPort: 8080, tcpFlags: 0x02, transportAt: 20, checksummed: true },
    { name: 'ipv4 tcp data', bytes: ipv4({ src: A4, dst: R4, proto: 6, payload: seg4(6, data) }), family: 4, protocol: 6, hasTransport: true, fragment: false, srcPort: 8080, dstPort: 51000, tcpFlags: 0x18, transportAt: 20, checksummed: true },
    { name: 'ipv4 tcp odd length, ip options', bytes: ipv4({ src: A4, dst: R4, proto: 6, options: [1, 1, 1, 1, 1, 1, 1, 0], payload: seg4(6, oddData) }), family: 4, protocol: 6, hasTransport: true, fragment: false, srcPort: 443, dstPort: 40000, tcpFlags: 0x11, transportAt: 28, checksummed: true },
    { name: 'ipv4 udp', bytes: ipv4({ src: A4, dst: R4, proto: 17, payload: seg4(17, dns) }), family: 4, protocol: 17, hasTransport: true, fragment: false, srcPort: 53000, dstPort: 53, transportAt: 20, checksummed: true },
    { name: 'ipv4 icmp echo', bytes: ipv4({ src: A4, dst: R4, proto: 1, payload: seg4(1, echo) }), family: 4, protocol: 1, hasTransport: true, fragment: false, icmpType: 8, icmpId: 0xbeef, transportAt: 20, checksummed: true },
    { name: 'ipv4 gre (other protocol)', bytes: ipv4({ src: A4, dst: R4, proto: 47, payload: pattern(24) }), family: 4, protocol: 47, hasTransport: false, fragment: false, transportAt: 20, checksummed: false },
    { name: 'ipv4 udp first fragment', bytes: ipv4({ src: A4, dst: R4, proto: 17, moreFragments: true, payload: bigUdp.slice(0, 800) }), family: 4, protocol: 17, hasTransport: true, fragment: true, srcPort: 5000, dstPort: 6000, transportAt: 20, checksummed: false },
    { name: 'ipv4 udp later fragment', bytes: ipv4({ src: A4, dst: R4, proto: 17, fragmentOffset: 800, payload: bigUdp.slice(800) }), family: 4, protocol: 17, hasTransport: false, fragment: true, transportAt: 20, checksummed: false },
    { name: 'ipv6 tcp syn', bytes: ipv6({ src: A6, dst: R6, proto: 6, payload: seg6(6, syn) }), family: 6, protocol: 6, hasTransport: true, fragment: false, srcPort: 51000, dstPort: 8080, tcpFlags: 0x02, transportAt: 40, checksummed: true },
    { name: 'ipv6 tcp data odd length', bytes: ipv6({ src: A6, dst: R6, proto: 6, payload: seg6(6, oddData) }), family: 6, protocol: 6, hasTransport: true, fragment: false, srcPort: 443, dstPort: 40000, tcpFlags: 0x11, transportAt: 40, checksummed: true },
    { name: 'ipv6 udp', bytes: ipv6({ src: A6, dst: R6, proto: 17, payload: seg6(17, dns) }), family: 6, protocol: 17, hasTransport: true, fragment: false, srcPort: 53000, dstPort: 53, transportAt: 40, checksummed: true },
    { name: 'ipv6 icmpv6 echo', bytes: ipv6({ src: A6, dst: R6, proto: 58, payload: seg6(58, echo6) }), family: 6, protocol: 58, hasTransport: true, fragment: false, icmpType: 128, icmpId: 0xcafe, transportAt: 40, checksummed: true },
    { name: 'ipv6 hbh+dstopts+routing+tcp', bytes: ipv6({ src: A6, dst: R6, proto: 6, ext: [hbh, dst, rt], payload: seg6(6, data) }), family: 6, protocol: 6, hasTransport: true, fragment: false, srcPort: 8080, dstPort: 51000, tcpFlags: 0x18, transportAt: 64, checksummed: true },
    { name: 'ipv6 hbh+udp', bytes: ipv6({ src: A6, dst: R6, proto: 17, ext: [hbh], payload: seg6(17, dns) }), family: 6, protocol: 17, hasTransport: true, fragment: false, srcPort: 53000, dstPort: 53, transportAt: 48, checksummed: true },
    { name: 'ipv6 dstopts+icmpv6', bytes: ipv6({ src: A6, dst: R6, proto: 58, ext: [{ type: 60, body: pattern(14) .map(() => 0) }], payload: seg6(58, echo6) }), family: 6, protocol: 58, hasTransport: true, fragment: false, icmpType: 128, icmpId: 0xcafe, transportAt: 56, checksummed: true },
    { name: 'ipv6 first fragment udp', bytes: ipv6({ src: A6, dst: R6, proto: 17, ext: [{ type: 44, moreFragments: true }], payload: bigUdp6.slice(0, 800) }), family: 6, protocol: 17, hasTransport: true, fragment: true, srcPort: 5000, dstPort: 6000, transportAt: 48, checksummed: false },
    { name: 'ipv6 later fragment udp', bytes: ipv6({ src: A6, dst: R6, proto: 17, ext: [hbh, { type: 44, fragmentOffset: 800 }], payload: bigUdp6.slice(800) }), family: 6, protocol: 17, hasTransport: false, fragment: true, transportAt: 56, checksummed: false },
    // AH with a 12-byte ICV (HMAC-SHA1-96): 24 bytes, length byte 4. Read as 8-byte units it would claim 40.
    { name: 'ipv6 ah+tcp', bytes: ipv6({ src: A6, dst: R6, proto: 6, ext: [ah], payload: seg6(6, syn) }), family: 6, protocol: 6, hasTransport: true, fragment: false, srcPort: 51000, dstPort: 8080, tcpFlags: 0x02, transportAt: 64, checksummed: true },
    { name: 'ipv6 hbh+ah+dstopts+udp', bytes: ipv6({ src: A6, dst: R6, proto: 17, ext: [hbh, ah, dst], payload: seg6(17, dns) }), family: 6, protocol: 17, hasTransport: true, fragment: false, srcPort: 53000, dstPort: 53, transportAt: 80, checksummed: true },
    { name: 'ipv6 no next header', bytes: ipv6({ src: A6, dst: R6, proto: 59, payload: [] }), family: 6, protocol: 59, hasTransport: false, fragment: false, transportAt: 40, checksummed: false },
  ];
}
