/**
 * Internet checksums (RFC 1071): the IPv4 header checksum, and the TCP / UDP / ICMPv6 checksums over the RFC 768 /
 * RFC 9293 / RFC 8200 §8.1 pseudo-header plus the upper-layer data (ICMP over IPv4 has no pseudo-header).
 *
 * The data plane itself never needs these: swapping source and destination keeps every checksum valid because the
 * one's-complement sum of 16-bit words does not depend on their order. They exist for tests (to prove that), and
 * for backends that must finish checksums a NIC would otherwise fill in (offload): `fillIpv4HeaderChecksum`,
 * `fillTransportChecksum`. No allocation.
 *
 * Sums are accumulated in a plain JS number (exact integers up to 2^53, so a 64 KiB packet cannot overflow it) and
 * folded to 16 bits once at the end.
 */
import { IpProto, type ParsedPacket } from './parse.ts';

/** Where the checksum field sits inside each transport header. */
const TCP_CHECKSUM_AT = 16;
const UDP_CHECKSUM_AT = 6;
const ICMP_CHECKSUM_AT = 2;
/** IPv4 header checksum field offset. */
const IPV4_CHECKSUM_AT = 10;

/** What a transport checksum field holds. */
export const ChecksumState = {
  /** Not a TCP/UDP/ICMP/ICMPv6 packet, or a fragment (the checksum covers data in other fragments). */
  NotApplicable: 0,
  Valid: 1,
  Invalid: 2,
  /**
   * Offloaded: the field holds only the folded pseudo-header sum, left for the NIC to finish (Linux
   * CHECKSUM_PARTIAL; what tcpdump shows on loopback). Reflection keeps this state too.
   */
  Partial: 3,
  /** UDP over IPv4 with checksum 0: the sender chose not to compute one (RFC 768). */
  Absent: 4,
} as const;
export type ChecksumState = (typeof ChecksumState)[keyof typeof ChecksumState];

/** Plain integer sum of the big-endian 16-bit words of buf[start .. end); an odd last byte is padded with zero. */
export function sumWords(buf: Uint8Array, start: number, end: number, initial: number): number {
  let sum = initial;
  let i = start;
  for (; i + 1 < end; i += 2) sum += (buf[i] << 8) | buf[i + 1];
  if (i < end) sum += buf[i] << 8;
  return sum;
}

/** Fold a plain sum into a 16-bit one's-complement sum (not complemented). */
export function foldSum(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

function readWord(buf: Uint8Array, at: number): number {
  return (buf[at] << 8) | buf[at + 1];
}

function writeWord(buf: Uint8Array, at: number, value: number): void {
  buf[at] = value >> 8;
  buf[at + 1] = value & 0xff;
}

/** The value the IPv4 header checksum field should hold (computed as if the field were zero). */
export function computeIpv4HeaderChecksum(buf: Uint8Array, ipOffset: number): number {
  const headerLength = (buf[ipOffset] & 0x0f) << 2;
  const sum = sumWords(buf, ipOffset, ipOffset + headerLength, 0) - readWord(buf, ipOffset + IPV4_CHECKSUM_AT);
  return ~foldSum(sum) & 0xffff;
}

export function isIpv4HeaderChecksumValid(buf: Uint8Array, ipOffset: number): boolean {
  const headerLength = (buf[ipOffset] & 0x0f) << 2;
  return foldSum(sumWords(buf, ipOffset, ipOffset + headerLength, 0)) === 0xffff;
}

/** Recompute the IPv4 header checksum in place. */
export function fillIpv4HeaderChecksum(buf: Uint8Array, ipOffset: number): void {
  writeWord(buf, ipOffset + IPV4_CHECKSUM_AT, computeIpv4HeaderChecksum(buf, ipOffset));
}

/** Offset of the transport checksum field, or -1 when the packet has none we can handle. */
export function transportChecksumOffset(p: ParsedPacket): number {
  if (!p.hasTransport || p.fragment) return -1;
  switch (p.protocol) {
    case IpProto.Tcp:
      return p.transportOffset + TCP_CHECKSUM_AT;
    case IpProto.Udp:
      return p.transportOffset + UDP_CHECKSUM_AT;
    case IpProto.Icmp:
    case IpProto.Icmpv6:
      return p.transportOffset + ICMP_CHECKSUM_AT;
    default:
      return -1;
  }
}

/** Plain sum of the pseudo-header (addresses, protocol, upper-layer length); 0 for ICMP over IPv4, which has none. */
export function pseudoHeaderSum(buf: Uint8Array, p: ParsedPacket): number {
  if (p.protocol === IpProto.Icmp && p.family === 4) return 0;
  let sum = sumWords(buf, p.srcOffset, p.srcOffset + p.addressLength, 0);
  sum = sumWords(buf, p.dstOffset, p.dstOffset + p.addressLength, sum);
  // Upper-layer length is 16 bits for IPv4 and 32 bits for IPv6; both fit in one word below 64 KiB.
  return sum + p.protocol + p.transportLength;
}

/** The value the transport checksum field should hold, or -1 when not applicable. */
export function computeTransportChecksum(buf: Uint8Array, p: ParsedPacket): number {
  const at = transportChecksumOffset(p);
  if (at < 0) return -1;
  const end = p.transportOffset + p.transportLength;
  const sum = sumWords(buf, p.transportOffset, end, pseudoHeaderSum(buf, p)) - readWord(buf, at);
  let value = ~foldSum(sum) & 0xffff;
  // UDP sends a computed zero as 0xffff, because 0 on IPv4 means "no checksum" (RFC 768).
  if (value === 0 && p.protocol === IpProto.Udp) value = 0xffff;
  return value;
}

export function transportChecksumState(buf: Uint8Array, p: ParsedPacket): ChecksumState {
  const at = transportChecksumOffset(p);
  if (at < 0) return ChecksumState.NotApplicable;
  const field = readWord(buf, at);
  if (field === 0 && p.protocol === IpProto.Udp && p.family === 4) return ChecksumState.Absent;
  const end = p.transportOffset + p.transportLength;
  const pseudo = pseudoHeaderSum(buf, p);
  if (foldSum(sumWords(buf, p.transportOffset, end, pseudo)) === 0xffff) return ChecksumState.Valid;
  const partial = foldSum(pseudo);
  if (p.protocol !== IpProto.Icmp && (field === partial || (field === 0 && partial === 0xffff))) return ChecksumState.Partial;
  return ChecksumState.Invalid;
}

/** Recompute the transport checksum in place (TCP, UDP, ICMP, ICMPv6; unfragmented only). False if not applicable. */
export function fillTransportChecksum(buf: Uint8Array, p: ParsedPacket): boolean {
  const at = transportChecksumOffset(p);
  if (at < 0) return false;
  writeWord(buf, at, computeTransportChecksum(buf, p));
  return true;
}
