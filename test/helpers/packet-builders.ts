/**
 * Hand-built packets for the packet-core tests, with checksums from a reference implementation that is written
 * independently of src/packet/checksum.ts (it concatenates an explicit pseudo-header and sums it), so a test that
 * compares the two is not comparing code with itself.
 */
import ipaddr from 'ipaddr.js';

export function addressBytes(text: string): number[] {
  return ipaddr.parse(text).toByteArray();
}

/** RFC 1071 checksum of a byte list: one's-complement of the one's-complement sum of 16-bit words. */
export function referenceChecksum(bytes: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < bytes.length; i += 2) {
    sum += (bytes[i] << 8) + (i + 1 < bytes.length ? bytes[i + 1] : 0);
    sum = (sum & 0xffff) + (sum >>> 16);
  }
  return ~sum & 0xffff;
}

/** The pseudo-header of RFC 768/9293 (IPv4, 12 bytes) or RFC 8200 §8.1 (IPv6, 40 bytes). */
export function pseudoHeader(src: number[], dst: number[], proto: number, length: number): number[] {
  if (src.length === 4) return [...src, ...dst, 0, proto, length >> 8, length & 0xff];
  return [...src, ...dst, 0, 0, length >> 8, length & 0xff, 0, 0, 0, proto];
}

/** Is the transport checksum of `segment` (with its checksum field in place) valid for these addresses? */
export function referenceTransportValid(src: number[], dst: number[], proto: number, segment: ArrayLike<number>): boolean {
  const pseudo = proto === 1 ? [] : pseudoHeader(src, dst, proto, segment.length);
  return referenceChecksum([...pseudo, ...Array.from(segment)]) === 0;
}

function put16(b: number[], at: number, v: number): void {
  b[at] = (v >> 8) & 0xff;
  b[at + 1] = v & 0xff;
}

export interface TcpSpec {
  srcPort: number;
  dstPort: number;
  flags: number;
  /** TCP options bytes (padded to 4 with NOPs here). */
  options?: number[];
  data?: number[];
}

export function tcpSegment(s: TcpSpec): number[] {
  const options = [...(s.options ?? [])];
  while (options.length % 4) options.push(1);
  const h = new Array(20 + options.length).fill(0);
  put16(h, 0, s.srcPort);
  put16(h, 2, s.dstPort);
  put16(h, 4, 0x1234);
  put16(h, 6, 0x5678); // seq
  put16(h, 8, 0x0000);
  put16(h, 10, 0x0001); // ack
  h[12] = ((20 + options.length) / 4) << 4;
  h[13] = s.flags;
  put16(h, 14, 64240); // window
  for (let i = 0; i < options.length; i++) h[20 + i] = options[i];
  return [...h, ...(s.data ?? [])];
}

export function udpDatagram(srcPort: number, dstPort: number, data: number[]): number[] {
  const h = new Array(8).fill(0);
  put16(h, 0, srcPort);
  put16(h, 2, dstPort);
  put16(h, 4, 8 + data.length);
  return [...h, ...data];
}

/** ICMP / ICMPv6 echo (or any type with a 4-byte id/seq rest-of-header). */
export function icmpMessage(type: number, code: number, id: number, seq: number, data: number[]): number[] {
  const h = [type, code, 0, 0, 0, 0, 0, 0];
  put16(h, 4, id);
  put16(h, 6, seq);
  return [...h, ...data];
}

/** Offset of the checksum field inside each transport header. */
const CHECKSUM_AT: Record<number, number> = { 6: 16, 17: 6, 1: 2, 58: 2 };

/** Fill the transport checksum of a whole segment with the reference implementation. */
export function withChecksum(src: number[], dst: number[], proto: number, segment: number[]): number[] {
  const out = [...segment];
  const at = CHECKSUM_AT[proto];
  if (at === undefined) return out;
  put16(out, at, 0);
  const pseudo = proto === 1 ? [] : pseudoHeader(src, dst, proto, out.length);
  let c = referenceChecksum([...pseudo, ...out]);
  if (c === 0 && proto === 17) c = 0xffff;
  put16(out, at, c);
  return out;
}

export interface Ipv4Spec {
  src: string;
  dst: string;
  proto: number;
  /** Upper-layer bytes of this packet (for a fragment: this fragment's part). */
  payload: number[];
  options?: number[];
  /** More-fragments flag and fragment offset in bytes (multiple of 8). */
  moreFragments?: boolean;
  fragmentOffset?: number;
  id?: number;
}

export function ipv4(s: Ipv4Spec): Uint8Array {
  const options = [...(s.options ?? [])];
  while (options.length % 4) options.push(0);
  const ihl = 20 + options.length;
  const h = new Array(ihl).fill(0);
  h[0] = 0x40 | (ihl / 4);
  h[1] = 0;
  put16(h, 2, ihl + s.payload.length);
  put16(h, 4, s.id ?? 0x4242);
  const frag = ((s.fragmentOffset ?? 0) / 8) | (s.moreFragments ? 0x2000 : 0) | (s.moreFragments || s.fragmentOffset ? 0 : 0x4000);
  put16(h, 6, frag);
  h[8] = 64;
  h[9] = s.proto;
  h.splice(12, 8, ...addressBytes(s.src), ...addressBytes(s.dst));
  for (let i = 0; i < options.length; i++) h[20 + i] = options[i];
  put16(h, 10, referenceChecksum(h));
  return Uint8Array.from([...h, ...s.payload]);
}

export interface ExtensionHeader {
  /** 0 hop-by-hop, 43 routing, 60 destination options, 44 fragment, 51 authentication header. */
  type: number;
  /** Body after the next-header and length bytes (padded here to a multiple of 8 overall). For a fragment header:
   *  ignored; use fragmentOffset/moreFragments. For AH: reserved, SPI, sequence number, ICV (a default if omitted). */
  body?: number[];
  fragmentOffset?: number;
  moreFragments?: boolean;
}

export interface Ipv6Spec {
  src: string;
  dst: string;
  /** Upper-layer protocol after the extension headers. */
  proto: number;
  payload: number[];
  ext?: ExtensionHeader[];
}

export function ipv6(s: Ipv6Spec): Uint8Array {
  const ext = s.ext ?? [];
  const chain: number[] = [];
  ext.forEach((e, i) => {
    const next = i + 1 < ext.length ? ext[i + 1].type : s.proto;
    if (e.type === 44) {
      const off = ((e.fragmentOffset ?? 0) / 8) << 3;
      const v = off | (e.moreFragments ? 1 : 0);
      chain.push(next, 0, v >> 8, v & 0xff, 0xde, 0xad, 0xbe, 0xef);
    } else if (e.type === 51) {
      // Authentication Header (RFC 4302 §2.2): reserved(2), SPI(4), sequence(4), ICV; length in 4-byte units - 2.
      const body = [...(e.body ?? [0, 0, 0, 0, 0x10, 0x01, 0, 0, 0, 7])];
      while ((body.length + 2) % 8) body.push(0); // IPv6 keeps AH a multiple of 8 bytes
      chain.push(next, (body.length + 2) / 4 - 2, ...body);
    } else {
      const body = [...(e.body ?? [])];
      while ((body.length + 2) % 8) body.push(0); // PadN-free padding: Pad1 options are zero bytes
      chain.push(next, (body.length + 2) / 8 - 1, ...body);
    }
  });
  const h = new Array(40).fill(0);
  h[0] = 0x60;
  h[1] = 0x01; // a flow label, to be sure it is left alone
  h[2] = 0x23;
  h[3] = 0x45;
  put16(h, 4, chain.length + s.payload.length);
  h[6] = ext.length ? ext[0].type : s.proto;
  h[7] = 64;
  h.splice(8, 32, ...addressBytes(s.src), ...addressBytes(s.dst));
  return Uint8Array.from([...h, ...chain, ...s.payload]);
}

/** A deterministic byte pattern of length n (so packets of many sizes are easy to build). */
export function pattern(n: number, seed = 1): number[] {
  const out: number[] = [];
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    out.push(x >>> 24);
  }
  return out;
}
