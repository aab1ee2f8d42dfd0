/**
 * Port rewriting for port maps, in place, with incremental checksum updates (RFC 1624, eqn. 3:
 * HC' = ~(~HC + ~m + m')). No allocation, never throws.
 *
 * Which checksums change:
 *  - A full TCP/UDP checksum covers the ports, so it is updated for the changed word.
 *  - A partial (offloaded) checksum holds only the pseudo-header sum (addresses, protocol, length) and leaves the
 *    data — ports included — to whoever finishes it (the kernel for a TUN vnet packet marked NEEDS_CSUM, the
 *    WinDivert backend for a packet whose checksum flag is clear). A port change does not touch the pseudo-header,
 *    so the field must stay exactly as it is; updating it would make the finished checksum wrong.
 *  - UDP over IPv4 with checksum 0 means "no checksum" (RFC 768) and stays 0; a computed 0 is sent as 0xffff.
 *  - ICMP errors quote the packet they are about: changing a quoted port changes the ICMP message, so the ICMP
 *    (ICMPv6) checksum, always computed in full by the sender, is updated for every word changed in the quote.
 */
import { IpProto, type ParsedPacket } from './parse.ts';

const TCP_CHECKSUM_AT = 16;
const UDP_CHECKSUM_AT = 6;

/** Checksum field value after one 16-bit word of the covered data changes from `oldWord` to `newWord`. */
export function adjustChecksum(checksum: number, oldWord: number, newWord: number): number {
  let sum = (~checksum & 0xffff) + (~oldWord & 0xffff) + newWord;
  sum = (sum & 0xffff) + (sum >>> 16);
  sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function readWord(buf: Uint8Array, at: number): number {
  return (buf[at] << 8) | buf[at + 1];
}

function writeWord(buf: Uint8Array, at: number, value: number): void {
  buf[at] = value >> 8;
  buf[at + 1] = value & 0xff;
}

/**
 * Write `value` into the word at `at` and keep the checksum at `checksumAt` valid for it. `udp`: apply UDP's rules
 * (a 0 field means "no checksum" on IPv4 and is left alone; a computed 0 is written as 0xffff).
 */
export function replaceWordAdjusting(buf: Uint8Array, at: number, value: number, checksumAt: number, udp: boolean): void {
  const old = readWord(buf, at);
  if (old === value) return;
  writeWord(buf, at, value);
  const field = readWord(buf, checksumAt);
  if (udp && field === 0) return;
  let next = adjustChecksum(field, old, value);
  if (udp && next === 0) next = 0xffff;
  writeWord(buf, checksumAt, next);
}

/**
 * Set the source (`which` 0) or destination (`which` 2) port of a TCP/UDP packet `parsePacket` accepted with its
 * transport header (unfragmented or first fragment). `partialChecksum`: the checksum field holds an offloaded,
 * pseudo-header-only sum and is left unchanged (see above). Keeps `p.srcPort` / `p.dstPort` in step.
 */
export function rewritePort(buf: Uint8Array, p: ParsedPacket, which: 0 | 2, port: number, partialChecksum: boolean): void {
  const at = p.transportOffset + which;
  const udp = p.protocol === IpProto.Udp;
  if (partialChecksum) writeWord(buf, at, port);
  else replaceWordAdjusting(buf, at, port, p.transportOffset + (udp ? UDP_CHECKSUM_AT : TCP_CHECKSUM_AT), udp);
  if (which === 0) p.srcPort = port;
  else p.dstPort = port;
}

/** Where a quoted (embedded) packet's transport header starts inside an ICMP error, and what it is. */
export class QuotedPacket {
  /** 4 or 6; 0 when the message is not an ICMP error quoting a TCP/UDP header we can read. */
  family = 0;
  protocol = 0;
  /** Offsets of the quoted source and destination addresses. */
  srcOffset = 0;
  dstOffset = 0;
  /** Offset of the quoted transport header (its ports are the first 4 bytes). */
  transportOffset = 0;
  /** Offset of the quoted transport checksum, or -1 when the quote ends before it. */
  checksumAt = -1;
  srcPort = 0;
  dstPort = 0;
}

/** ICMP error types that quote the offending packet (RFC 792, RFC 4443). */
function isIcmpError(family: number, type: number): boolean {
  if (family === 4) return type === 3 || type === 4 || type === 5 || type === 11 || type === 12;
  return type >= 1 && type <= 4;
}

/**
 * Find the TCP/UDP header quoted by an ICMP/ICMPv6 error `p` (already parsed, unfragmented). Fills `q` and returns
 * true when the quote holds at least the two ports; false otherwise (q.family = 0). Quoted IPv6 packets are read
 * only when TCP/UDP follows the fixed header directly.
 */
export function locateQuotedPorts(buf: Uint8Array, p: ParsedPacket, q: QuotedPacket): boolean {
  q.family = 0;
  if (!p.hasTransport || p.fragment || !isIcmpError(p.family, p.icmpType)) return false;
  const start = p.transportOffset + 8; // after type, code, checksum and 4 bytes of type-specific data
  const end = p.transportOffset + p.transportLength;
  if (start + 1 > end) return false;
  const version = buf[start] >> 4;
  let t: number;
  let proto: number;
  if (version === 4 && p.family === 4) {
    if (start + 20 > end) return false;
    const ihl = (buf[start] & 0x0f) << 2;
    if (ihl < 20 || (((buf[start + 6] << 8) | buf[start + 7]) & 0x1fff) !== 0) return false;
    proto = buf[start + 9];
    q.srcOffset = start + 12;
    q.dstOffset = start + 16;
    t = start + ihl;
  } else if (version === 6 && p.family === 6) {
    if (start + 40 > end) return false;
    proto = buf[start + 6];
    q.srcOffset = start + 8;
    q.dstOffset = start + 24;
    t = start + 40;
  } else {
    return false;
  }
  if ((proto !== IpProto.Tcp && proto !== IpProto.Udp) || t + 4 > end) return false;
  const csum = t + (proto === IpProto.Tcp ? TCP_CHECKSUM_AT : UDP_CHECKSUM_AT);
  q.family = version;
  q.protocol = proto;
  q.transportOffset = t;
  q.checksumAt = csum + 2 <= end ? csum : -1;
  q.srcPort = readWord(buf, t);
  q.dstPort = readWord(buf, t + 2);
  return true;
}

/**
 * Set a quoted port (`which` 0 source, 2 destination) inside the ICMP error `p`: the quoted transport checksum is
 * updated when the quote includes it (as a NAT does, RFC 5508 §4.2), and the ICMP checksum for every changed word.
 */
export function rewriteQuotedPort(buf: Uint8Array, p: ParsedPacket, q: QuotedPacket, which: 0 | 2, port: number): void {
  const icmpChecksumAt = p.transportOffset + 2;
  const at = q.transportOffset + which;
  const old = readWord(buf, at);
  if (old === port) return;
  if (q.checksumAt >= 0) {
    const quoted = readWord(buf, q.checksumAt);
    const udp = q.protocol === IpProto.Udp;
    if (!(udp && quoted === 0)) {
      let next = adjustChecksum(quoted, old, port);
      if (udp && next === 0) next = 0xffff;
      replaceWordAdjusting(buf, q.checksumAt, next, icmpChecksumAt, false);
    }
  }
  replaceWordAdjusting(buf, at, port, icmpChecksumAt, false);
  if (which === 0) q.srcPort = port;
  else q.dstPort = port;
}
