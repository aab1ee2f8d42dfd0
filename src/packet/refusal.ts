/**
 * Refusals: the packet a closed port would answer with, written as if the reflect address R sent it, so a client
 * whose packet is not allowed fails at once instead of waiting for a timeout. A TCP segment gets a reset (RFC 9293
 * §3.10.7.1: to a segment with ACK, a reset with that sequence number; otherwise a reset acknowledging the segment);
 * a UDP datagram gets ICMP port unreachable (RFC 792 / RFC 4443 type 1 code 4) quoting as much of it as fits in 576
 * (IPv4) or 1280 (IPv6) bytes. Checksums are complete (the refusal is injected inbound: no NIC finishes them).
 *
 * Written into a caller-owned buffer of REFUSAL_MAX_BYTES; nothing is allocated. Returns the length, 0 when the
 * packet gets no refusal (a reset is never answered, other protocols are only dropped).
 */
import { foldSum, sumWords } from './checksum.ts';
import { IpProto, TcpFlag, type ParsedPacket } from './parse.ts';

/** Largest refusal: an ICMPv6 error is at most the IPv6 minimum MTU (RFC 4443 §2.4 (c)). */
export const REFUSAL_MAX_BYTES = 1280;
/** Largest ICMPv4 error (RFC 1812 §4.3.2.3: no more than 576 bytes). */
const ICMPV4_ERROR_MAX_BYTES = 576;
/** Hop limit of refusals: they never leave this host, any value above 0 would do; 64 as the stacks use. */
const REFUSAL_TTL = 64;
const ICMP_DEST_UNREACHABLE = 3;
const ICMP_PORT_UNREACHABLE = 3;
const ICMPV6_DEST_UNREACHABLE = 1;
const ICMPV6_PORT_UNREACHABLE = 4;
const TCP_HEADER = 20;
const ICMP_HEADER = 8;

function u16(out: Uint8Array, at: number, v: number): void {
  out[at] = (v >>> 8) & 0xff;
  out[at + 1] = v & 0xff;
}

function u32(out: Uint8Array, at: number, v: number): void {
  u16(out, at, (v >>> 16) & 0xffff);
  u16(out, at + 2, v & 0xffff);
}

/** Copy buf[from, from + n) to out[to, ...) byte by byte (a subarray would allocate a view per refusal). */
function copy(buf: Uint8Array, from: number, n: number, out: Uint8Array, to: number): void {
  for (let i = 0; i < n; i++) out[to + i] = buf[from + i];
}

function read32(buf: Uint8Array, at: number): number {
  return ((buf[at] << 24) | (buf[at + 1] << 16) | (buf[at + 2] << 8) | buf[at + 3]) >>> 0;
}

/**
 * The IP header of a refusal from the packet's destination (R) to its source, for `payload` bytes of `protocol`.
 * Returns the header length (20 or 40).
 */
function writeIpHeader(buf: Uint8Array, p: ParsedPacket, out: Uint8Array, protocol: number, payload: number): number {
  const n = p.addressLength;
  if (p.family === 4) {
    out[0] = 0x45;
    out[1] = 0;
    u16(out, 2, 20 + payload);
    u32(out, 4, 0x00004000); // id 0, don't fragment
    out[8] = REFUSAL_TTL;
    out[9] = protocol;
    u16(out, 10, 0);
    copy(buf, p.dstOffset, n, out, 12);
    copy(buf, p.srcOffset, n, out, 16);
    u16(out, 10, ~foldSum(sumWords(out, 0, 20, 0)) & 0xffff);
    return 20;
  }
  u32(out, 0, 0x60000000);
  u16(out, 4, payload);
  out[6] = protocol;
  out[7] = REFUSAL_TTL;
  copy(buf, p.dstOffset, n, out, 8);
  copy(buf, p.srcOffset, n, out, 24);
  return 40;
}

/** Checksum of `out[start, start + length)` with the pseudo-header of the refusal's addresses (none for ICMPv4). */
function fillChecksum(out: Uint8Array, family: number, protocol: number, start: number, length: number, at: number): void {
  let sum = 0;
  if (!(family === 4 && protocol === IpProto.Icmp)) {
    sum = family === 4 ? sumWords(out, 12, 20, 0) : sumWords(out, 8, 40, 0);
    sum += protocol + length;
  }
  u16(out, at, 0);
  u16(out, at, ~foldSum(sumWords(out, start, start + length, sum)) & 0xffff);
}

/** A TCP reset answering the TCP segment `p` (of `buf`); 0 for a segment that is itself a reset. */
export function writeTcpReset(buf: Uint8Array, p: ParsedPacket, out: Uint8Array): number {
  const flags = p.tcpFlags;
  if ((flags & TcpFlag.Rst) !== 0 || !p.hasTransport || p.protocol !== IpProto.Tcp) return 0;
  const t = p.transportOffset;
  const dataLength = p.transportLength - ((buf[t + 12] >> 4) << 2);
  const h = writeIpHeader(buf, p, out, IpProto.Tcp, TCP_HEADER);
  u16(out, h, p.dstPort);
  u16(out, h + 2, p.srcPort);
  if ((flags & TcpFlag.Ack) !== 0) {
    u32(out, h + 4, read32(buf, t + 8));
    u32(out, h + 8, 0);
    out[h + 13] = TcpFlag.Rst;
  } else {
    const used = dataLength + ((flags & TcpFlag.Syn) !== 0 ? 1 : 0) + ((flags & TcpFlag.Fin) !== 0 ? 1 : 0);
    u32(out, h + 4, 0);
    u32(out, h + 8, (read32(buf, t + 4) + used) >>> 0);
    out[h + 13] = TcpFlag.Rst | TcpFlag.Ack;
  }
  out[h + 12] = (TCP_HEADER / 4) << 4;
  u16(out, h + 14, 0); // window
  u16(out, h + 18, 0); // urgent pointer
  fillChecksum(out, p.family, IpProto.Tcp, h, TCP_HEADER, h + 16);
  return h + TCP_HEADER;
}

/** ICMP / ICMPv6 port unreachable quoting the packet `p` (of `buf`) from its IP header on. */
export function writePortUnreachable(buf: Uint8Array, p: ParsedPacket, out: Uint8Array): number {
  const v4 = p.family === 4;
  const protocol = v4 ? IpProto.Icmp : IpProto.Icmpv6;
  const ipHeader = v4 ? 20 : 40;
  const max = v4 ? ICMPV4_ERROR_MAX_BYTES : REFUSAL_MAX_BYTES;
  const quoted = Math.min(p.ipLength, max - ipHeader - ICMP_HEADER);
  const h = writeIpHeader(buf, p, out, protocol, ICMP_HEADER + quoted);
  out[h] = v4 ? ICMP_DEST_UNREACHABLE : ICMPV6_DEST_UNREACHABLE;
  out[h + 1] = v4 ? ICMP_PORT_UNREACHABLE : ICMPV6_PORT_UNREACHABLE;
  u32(out, h + 4, 0);
  copy(buf, p.ipOffset, quoted, out, h + ICMP_HEADER);
  fillChecksum(out, p.family, protocol, h, ICMP_HEADER + quoted, h + 2);
  return h + ICMP_HEADER + quoted;
}
