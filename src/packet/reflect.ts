/**
 * Reflection: swap the source and destination addresses of an IP packet in place, and for an ICMP/ICMPv6 error
 * also those of the packet it carries (icmp-error.ts says why). Nothing else changes, and no checksum needs fixing:
 * the IPv4 header checksum and the TCP/UDP/ICMPv6 pseudo-header sums add the two addresses' 16-bit words, and
 * addition does not care about order (a partial, offloaded checksum stays valid for the same reason). ICMP over
 * IPv4 does not cover the addresses at all.
 *
 * The embedded swap keeps every checksum valid for the same reason: the embedded addresses start at even offsets
 * inside the ICMP message (8 + 12/16 for IPv4, 8 + 8/24 for IPv6), so they are whole words of the ICMP/ICMPv6
 * checksum's sum; they are whole words of the embedded IPv4 header checksum; and the embedded transport checksum
 * covers them only through its own pseudo-header, where their order does not matter either.
 */
import { EmbeddedPacket, parseEmbeddedPacket } from './icmp-error.ts';
import type { ParsedPacket } from './parse.ts';

/** Scratch for reflectPacket (one per thread: the data plane runs one packet at a time). */
const embedded = new EmbeddedPacket();

/** Swap addresses of a packet `parsePacket` accepted (of `buf`, the buffer it parsed). No allocation. */
export function reflectPacket(buf: Uint8Array, p: ParsedPacket): void {
  swapAddresses(p.view, p.srcOffset, p.dstOffset, p.addressLength);
  if (p.icmpError) reflectEmbeddedPacket(buf, p, embedded);
}

/**
 * Swap the embedded packet's addresses of the ICMP error `p` (no-op for other packets). Fills `e` with what
 * parseEmbeddedPacket found, so a caller can go on to the embedded ports. Returns whether there was a packet to swap.
 */
export function reflectEmbeddedPacket(buf: Uint8Array, p: ParsedPacket, e: EmbeddedPacket): boolean {
  if (!parseEmbeddedPacket(buf, p, e)) return false;
  swapAddresses(p.view, e.srcOffset, e.dstOffset, e.addressLength);
  return true;
}

/** Swap two equal-length address fields (4 or 16 bytes) as 32-bit words through the packet's DataView. */
function swapAddresses(v: DataView, s: number, d: number, length: number): void {
  let t = v.getInt32(s);
  v.setInt32(s, v.getInt32(d));
  v.setInt32(d, t);
  if (length === 16) {
    t = v.getInt32(s + 4);
    v.setInt32(s + 4, v.getInt32(d + 4));
    v.setInt32(d + 4, t);
    t = v.getInt32(s + 8);
    v.setInt32(s + 8, v.getInt32(d + 8));
    v.setInt32(d + 8, t);
    t = v.getInt32(s + 12);
    v.setInt32(s + 12, v.getInt32(d + 12));
    v.setInt32(d + 12, t);
  }
}
