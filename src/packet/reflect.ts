/**
 * Reflection: swap the source and destination addresses of an IP packet in place. Nothing else changes, and no
 * checksum needs fixing: the IPv4 header checksum and the TCP/UDP/ICMPv6 pseudo-header sums add the two addresses'
 * 16-bit words, and addition does not care about order (a partial, offloaded checksum stays valid for the same
 * reason). ICMP over IPv4 does not cover the addresses at all.
 */
import type { ParsedPacket } from './parse.ts';

/** Swap addresses of a packet `parsePacket` accepted. No allocation. */
export function reflectPacket(buf: Uint8Array, p: ParsedPacket): void {
  swapBytes(buf, p.srcOffset, p.dstOffset, p.addressLength);
}

/** Swap `count` bytes between buf[a ..] and buf[b ..] (the ranges must not overlap). */
export function swapBytes(buf: Uint8Array, a: number, b: number, count: number): void {
  for (let i = 0; i < count; i++) {
    const t = buf[a + i];
    buf[a + i] = buf[b + i];
    buf[b + i] = t;
  }
}
