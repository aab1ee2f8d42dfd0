/**
 * The key of a reflected conversation and the table entry around it, shared by the flow table (flow-table.ts) and
 * the port mapper (port-mapper.ts): the entry layout and probe window both tables use, the key's hash, its addresses
 * stored, compared and read back as text. A key is (family, protocol) as `kind` = (family << 8) | protocol, two
 * 16-bit ports, and the addresses R (the reflect address) and L (the local one) as big-endian Int32 words; IPv4 uses
 * the first word of each, IPv6 all four.
 *
 * Hot path: no allocation; the hash is a few multiplies the JIT inlines.
 */
import ipaddr from 'ipaddr.js';

/**
 * Where both tables keep a key in an entry of Int32 words: its hash and kind, and the addresses in the last eight
 * words (R in four, then L in four). An entry is 16 words, one 64-byte cache line, so a lookup that finds its key in
 * the home entry touches one line. The other words (0, 3 to 7) are each table's own.
 */
export const KEY_ENTRY = { WORDS: 16, HASH: 1, KIND: 2, ADDR: 8 } as const;

/** How many consecutive entries a key may occupy from its home entry (linear probing), in both tables. */
export const PROBE_WINDOW = 16;

/** Throws unless `capacity` (entries of the table `table`) is a power of two holding at least one probe window. */
export function checkTableCapacity(table: string, capacity: number): void {
  if (!Number.isInteger(capacity) || capacity < PROBE_WINDOW || (capacity & (capacity - 1)) !== 0) {
    throw new RangeError(`${table} capacity must be a power of two of at least ${PROBE_WINDOW}, got ${capacity}`);
  }
}

/** Store the key's addresses (R at byte `r`, L at byte `l` of `v`) into the entry at word `at`; unused words 0. */
export function storeKeyAddresses(words: Int32Array, at: number, v: DataView, family: number, r: number,
  l: number): void {
  const n = family === 6 ? 4 : 1;
  for (let i = 0; i < 4; i++) {
    words[at + KEY_ENTRY.ADDR + i] = i < n ? v.getInt32(r + 4 * i) : 0;
    words[at + KEY_ENTRY.ADDR + 4 + i] = i < n ? v.getInt32(l + 4 * i) : 0;
  }
}

/** Whether the entry at word `at` holds the addresses R at byte `r` and L at byte `l` of `v`. */
export function sameKeyAddresses(words: Int32Array, at: number, v: DataView, family: number, r: number,
  l: number): boolean {
  const n = family === 6 ? 4 : 1;
  for (let i = 0; i < n; i++) {
    if (words[at + KEY_ENTRY.ADDR + i] !== v.getInt32(r + 4 * i)) return false;
    if (words[at + KEY_ENTRY.ADDR + 4 + i] !== v.getInt32(l + 4 * i)) return false;
  }
  return true;
}

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
export function flowKeyHashAt(v: DataView, family: number, kind: number, ports: number, r: number,
  l: number): number {
  if (family !== 6) return flowKeyHash(kind, ports, family, v.getInt32(r), v.getInt32(l), 0, 0, 0, 0, 0, 0);
  return flowKeyHash(
    kind, ports, family, v.getInt32(r), v.getInt32(l),
    v.getInt32(r + 4), v.getInt32(l + 4), v.getInt32(r + 8), v.getInt32(l + 8), v.getInt32(r + 12), v.getInt32(l + 12),
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
