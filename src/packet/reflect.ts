/**
 * Reflection: swap the source and destination addresses of an IP packet in place. Nothing else changes, and no
 * checksum needs fixing: the IPv4 header checksum and the TCP/UDP/ICMPv6 pseudo-header sums add the two addresses'
 * 16-bit words, and addition does not care about order (a partial, offloaded checksum stays valid for the same
 * reason). ICMP over IPv4 does not cover the addresses at all.
 */
import type { ParsedPacket } from './parse.ts';

/** Swap addresses of a packet `parsePacket` accepted (of `buf`, the buffer it parsed). No allocation. */
export function reflectPacket(_buf: Uint8Array, p: ParsedPacket): void {
  const v = p.view; // the DataView parsePacket made over this buffer
  const s = p.srcOffset;
  const d = p.dstOffset;
  let t = v.getInt32(s);
  v.setInt32(s, v.getInt32(d));
  v.setInt32(d, t);
  if (p.addressLength === 16) {
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
