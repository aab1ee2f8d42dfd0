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
import type { EmbeddedPacket } from './icmp-error.ts';
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

/**
 * Set a port of the packet embedded in the ICMP error `p` (`which` 0 source, 2 destination; `q` as
 * parseEmbeddedPacket filled it, with hasPorts): the embedded transport checksum is updated when the quote includes it
 * (as a NAT does, RFC 5508 §4.2), and the ICMP checksum for every changed word.
 */
export function rewriteQuotedPort(buf: Uint8Array, p: ParsedPacket, q: EmbeddedPacket, which: 0 | 2, port: number): void {
  const icmpChecksumAt = p.transportOffset + 2;
  const at = q.transportOffset + which;
  const old = readWord(buf, at);
  if (old === port) return;
  if (q.checksumOffset >= 0) {
    const quoted = readWord(buf, q.checksumOffset);
    const udp = q.protocol === IpProto.Udp;
    if (!(udp && quoted === 0)) {
      let next = adjustChecksum(quoted, old, port);
      if (udp && next === 0) next = 0xffff;
      replaceWordAdjusting(buf, q.checksumOffset, next, icmpChecksumAt, false);
    }
  }
  replaceWordAdjusting(buf, at, port, icmpChecksumAt, false);
  if (which === 0) q.srcPort = port;
  else q.dstPort = port;
}
