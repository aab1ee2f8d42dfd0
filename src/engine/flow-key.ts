/**
 * The key of a reflected conversation, shared by the flow table (flow-table.ts) and the port mapper
 * (port-mapper.ts): its hash, and its addresses back as text. A key is (family, protocol) as `kind`
 * = (family << 8) | protocol, two 16-bit ports in one word, and the addresses R (the reflect address) and L (the
 * local one) as big-endian Int32 words; IPv4 uses the first word of each, IPv6 all four.
 *
 * Hot path: no allocation; the hash is a few multiplies the JIT inlines.
 */
import ipaddr from 'ipaddr.js';

/**
 * Hash of a key from its words (r1..r3 and l1..l3 are read only for IPv6). Multiply-xor mixing of the key words with
 * a murmur3-style finaliser: cheap, and spreads keys that differ only in one port or one address bit over the table.
 */
export function flowKeyHash(
  kind: number, ports: number, family: number,
  r0: number, l0: number, r1: number, l1: number, r2: number, l2: number, r3: number, l3: number,
): number {
  let h = Math.imul(kind ^ 0x811c9dc5, 0x01000193);
  h = Math.imul(h ^ ports, 0x01000193);
  h = Math.imul(h ^ r0, 0x01000193);
  h = Math.imul(h ^ l0, 0x01000193);
  if (family === 6) {
    h = Math.imul(h ^ r1 ^ (l1 << 1), 0x01000193);
    h = Math.imul(h ^ r2 ^ (l2 << 1), 0x01000193);
    h = Math.imul(h ^ r3 ^ (l3 << 1), 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  return h;
}

/** flowKeyHash of a key whose addresses are in a packet: R at byte `r` and L at byte `l` of `v`. */
export function flowKeyHashAt(v: DataView, family: number, kind: number, ports: number, r: number, l: number): number {
  if (family !== 6) return flowKeyHash(kind, ports, family, v.getInt32(r), v.getInt32(l), 0, 0, 0, 0, 0, 0);
  return flowKeyHash(
    kind, ports, family,
    v.getInt32(r), v.getInt32(l), v.getInt32(r + 4), v.getInt32(l + 4), v.getInt32(r + 8), v.getInt32(l + 8), v.getInt32(r + 12), v.getInt32(l + 12),
  );
}

/** An address a key stores as words (from `at`: 1 word for IPv4, 4 for IPv6), as text. Off the hot path. */
export function formatAddressWords(family: number, words: Int32Array, at: number): string {
  const bytes: number[] = [];
  const count = family === 4 ? 1 : 4;
  for (let w = 0; w < count; w++) {
    const v = words[at + w];
    bytes.push((v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff);
  }
  return ipaddr.fromByteArray(bytes).toString();
}
