/**
 * `FlowTable`: the reflected conversations the data plane has seen, in a fixed-size open-addressed hash table that
 * lives in a SharedArrayBuffer. The worker thread is the only writer (`record`, `sweep`, zero allocation); the main
 * thread reads with `snapshot(now)`.
 *
 * A flow is one conversation through a reflect address R. Both directions of it are packets this host *sends*
 * toward R (the client's L:a→R:b, and the server's reply L:b→R:a, which the server addressed to R because the
 * reflected packet came "from" R), so both arrive at `Dataplane.outbound` with source L and destination R. The key is
 * therefore canonical without any swapping: (family, protocol, R, L, low port, high port). The client port is the
 * source port of a TCP SYN without ACK when one is seen; otherwise the server is guessed to be the lower port. For
 * ICMP/ICMPv6 echo the identifier plays the client port.
 *
 * Consistency between writer and reader: each slot has a sequence number that is odd while the writer is changing
 * the slot (a seqlock). The reader retries a slot whose sequence is odd or changed while it read, and skips it after
 * a few tries. Idle flows expire lazily (an expired entry is reused and hidden from snapshots) and on `sweep(now)`;
 * when the probe window is full, the entry seen longest ago is evicted.
 */
import ipaddr from 'ipaddr.js';
import { IcmpType, Icmpv6Type, IpProto, TcpFlag, type ParsedPacket } from '../packet/parse.ts';
import type { FlowProtocol, FlowRecord } from './types.ts';

export const DEFAULT_FLOW_CAPACITY = 4096;
/** How many consecutive slots a key may occupy from its home slot (linear probing). */
export const PROBE_WINDOW = 16;

/** Idle time after which a flow is forgotten, by protocol and TCP state. */
export const FLOW_IDLE_MS = {
  /** UDP, ICMP and everything else. */
  datagram: 60_000,
  tcpOpen: 300_000,
  /** After FIN or RST: the conversation is over, keep it briefly so it still shows. */
  tcpClosed: 10_000,
} as const;

/** Flow state stored per slot. */
const FlowState = { Active: 0, Open: 1, Closed: 2 } as const;
const STATE_NAMES = ['active', 'open', 'closed'] as const;

/** Int32 fields per slot in the meta region. */
const M_USED = 0; // 0 = empty, 1 = holds a flow
const M_HASH = 1;
const M_FAMILY = 2;
const M_PROTO = 3;
const M_LOW = 4; // low / high port (key)
const M_HIGH = 5;
const M_CLIENT = 6; // client / server port (decided as described above)
const M_SERVER = 7;
const M_STATE = 8; // FlowState
const META_STRIDE = 9;
/** Int32 words of addresses per slot: R (4 words) then L (4 words); IPv4 uses the first word of each. */
const ADDR_STRIDE = 8;
/** Float64 fields per slot. */
const N_PACKETS = 0;
const N_BYTES = 1;
const N_FIRST = 2; // ms since epoch
const N_LAST = 3;
const NUM_STRIDE = 4;
/** Buffer header: Int32 capacity, padded to 8 bytes for the Float64 region alignment. */
const HEADER_BYTES = 8;

function regionBytes(capacity: number): { seq: number; meta: number; addr: number; num: number; total: number } {
  const seq = HEADER_BYTES;
  const meta = seq + capacity * 4;
  const addr = meta + capacity * META_STRIDE * 4;
  let num = addr + capacity * ADDR_STRIDE * 4;
  num = (num + 7) & ~7;
  return { seq, meta, addr, num, total: num + capacity * NUM_STRIDE * 8 };
}

export class FlowTable {
  readonly buffer: SharedArrayBuffer;
  readonly capacity: number;
  private readonly mask: number;
  private readonly seq: Int32Array;
  private readonly meta: Int32Array;
  private readonly addr: Int32Array;
  private readonly num: Float64Array;
  /** Key words of a flow being written (reused; R then L), filled just before `write`. */
  private readonly keyWords = new Int32Array(ADDR_STRIDE);

  static bytesFor(capacity: number): number {
    return regionBytes(capacity).total;
  }

  /**
   * `buffer`: wrap the table another thread created (its capacity is read from the buffer). Otherwise a new table of
   * `capacity` slots (a power of two) is created.
   */
  constructor(opts: { capacity?: number; buffer?: SharedArrayBuffer } = {}) {
    let capacity: number;
    if (opts.buffer) {
      capacity = new Int32Array(opts.buffer, 0, 1)[0];
      this.buffer = opts.buffer;
    } else {
      capacity = opts.capacity ?? DEFAULT_FLOW_CAPACITY;
      if (!Number.isInteger(capacity) || capacity < PROBE_WINDOW || (capacity & (capacity - 1)) !== 0) {
        throw new RangeError(`FlowTable capacity must be a power of two of at least ${PROBE_WINDOW}, got ${capacity}`);
      }
      this.buffer = new SharedArrayBuffer(regionBytes(capacity).total);
      new Int32Array(this.buffer, 0, 1)[0] = capacity;
    }
    const r = regionBytes(capacity);
    if (this.buffer.byteLength < r.total) throw new RangeError('FlowTable buffer is smaller than its capacity needs');
    this.capacity = capacity;
    this.mask = capacity - 1;
    this.seq = new Int32Array(this.buffer, r.seq, capacity);
    this.meta = new Int32Array(this.buffer, r.meta, capacity * META_STRIDE);
    this.addr = new Int32Array(this.buffer, r.addr, capacity * ADDR_STRIDE);
    this.num = new Float64Array(this.buffer, r.num, capacity * NUM_STRIDE);
  }

  // ---- writer (worker thread) ----

  /**
   * Count one outbound packet to a reflect address, parsed by `parsePacket` and not yet reflected (source = L,
   * destination = R). Later fragments (no transport header, so no ports) are not recorded: they would form a
   * port-less pseudo-flow; the counters still count them.
   */
  record(_buf: Uint8Array, p: ParsedPacket, bytes: number, now: number): void {
    const proto = p.protocol;
    const isTcp = proto === IpProto.Tcp;
    let low = 0;
    let high = 0;
    let client = 0;
    let server = 0;
    let synOnly = false;
    if (isTcp || proto === IpProto.Udp) {
      if (!p.hasTransport) return;
      const a = p.srcPort;
      const b = p.dstPort;
      low = a < b ? a : b;
      high = a < b ? b : a;
      synOnly = isTcp && (p.tcpFlags & (TcpFlag.Syn | TcpFlag.Ack)) === TcpFlag.Syn;
      client = synOnly ? a : high;
      server = synOnly ? b : low;
    } else if (proto === IpProto.Icmp || proto === IpProto.Icmpv6) {
      if (!p.hasTransport) return;
      const t = p.icmpType;
      const echo = proto === IpProto.Icmp ? t === IcmpType.EchoRequest || t === IcmpType.EchoReply : t === Icmpv6Type.EchoRequest || t === Icmpv6Type.EchoReply;
      if (echo) low = client = p.icmpId;
    }
    // Other protocols have no ports: all their packets (fragments too) between L and R form one flow.

    // The key's address words in locals (R then L; IPv4 uses the first word of each), not in an array: this is
    // the hottest code of the data plane.
    const family = p.family;
    let r0: number, l0: number;
    let r1 = 0, r2 = 0, r3 = 0, l1 = 0, l2 = 0, l3 = 0;
    const d = p.dstOffset;
    const s = p.srcOffset;
    const v = p.view; // the DataView parsePacket made over `buf`
    r0 = v.getInt32(d);
    l0 = v.getInt32(s);
    if (family === 6) {
      r1 = v.getInt32(d + 4);
      r2 = v.getInt32(d + 8);
      r3 = v.getInt32(d + 12);
      l1 = v.getInt32(s + 4);
      l2 = v.getInt32(s + 8);
      l3 = v.getInt32(s + 12);
    }
    // FNV-1a style mixing with a murmur-like finaliser: cheap, and spreads keys that differ in one port.
    let h = 0x811c9dc5 ^ (family << 8) ^ proto;
    h = Math.imul(h ^ ((low << 16) | high), 0x01000193);
    h = Math.imul(h ^ r0, 0x01000193);
    h = Math.imul(h ^ l0, 0x01000193);
    h = Math.imul(h ^ r1 ^ (l1 << 1), 0x01000193);
    h = Math.imul(h ^ r2 ^ (l2 << 1), 0x01000193);
    h = Math.imul(h ^ r3 ^ (l3 << 1), 0x01000193);
    h ^= h >>> 16;
    h = Math.imul(h, 0x7feb352d);
    h ^= h >>> 15;

    const meta = this.meta;
    const addr = this.addr;
    const mask = this.mask;
    // First pass: is the conversation already here? (Usually found in the home slot.)
    let stale = -1;
    for (let i = 0; i < PROBE_WINDOW; i++) {
      const slot = (h + i) & mask;
      const m = slot * META_STRIDE;
      if (meta[m + M_USED] === 0 || meta[m + M_HASH] !== h) continue;
      if (meta[m + M_LOW] !== low || meta[m + M_HIGH] !== high || meta[m + M_PROTO] !== proto || meta[m + M_FAMILY] !== family) continue;
      const a = slot * ADDR_STRIDE;
      if (addr[a] !== r0 || addr[a + 4] !== l0 || addr[a + 1] !== r1 || addr[a + 2] !== r2 || addr[a + 3] !== r3) continue;
      if (addr[a + 5] !== l1 || addr[a + 6] !== l2 || addr[a + 7] !== l3) continue;
      // Same conversation, unless it went idle long enough to be forgotten, or a new TCP connection reuses the
      // ports of a closed one: then start counting afresh in the same slot.
      if (this.isExpired(slot, now) || (synOnly && meta[m + M_STATE] === FlowState.Closed)) {
        stale = slot;
        break;
      }
      this.update(slot, p.tcpFlags, isTcp, synOnly, client, server, bytes, now);
      return;
    }
    // A stale entry of this very conversation is reused in place (no duplicate key left behind). Otherwise take a
    // free slot, else an expired one, else evict the one seen longest ago.
    const num = this.num;
    let free = stale;
    let expired = -1;
    let oldest = -1;
    let oldestSeen = Infinity;
    for (let i = 0; i < PROBE_WINDOW && free < 0; i++) {
      const slot = (h + i) & mask;
      const m = slot * META_STRIDE;
      if (meta[m + M_USED] === 0) {
        free = slot;
        break;
      }
      if (this.isExpired(slot, now)) {
        if (expired < 0) expired = slot;
      } else {
        const seen = num[slot * NUM_STRIDE + N_LAST];
        if (seen < oldestSeen) {
          oldestSeen = seen;
          oldest = slot;
        }
      }
    }
    const slot = free >= 0 ? free : expired >= 0 ? expired : oldest;
    const k = this.keyWords;
    k[0] = r0;
    k[1] = r1;
    k[2] = r2;
    k[3] = r3;
    k[4] = l0;
    k[5] = l1;
    k[6] = l2;
    k[7] = l3;
    this.write(slot, h, family, proto, low, high, client, server, isTcp, bytes, now);
    if (isTcp) this.applyTcpFlags(slot, p.tcpFlags);
  }

  /** Forget every flow idle past its timeout. Returns how many were removed. */
  sweep(now: number): number {
    let removed = 0;
    for (let slot = 0; slot < this.capacity; slot++) {
      if (this.meta[slot * META_STRIDE + M_USED] !== 0 && this.isExpired(slot, now)) {
        const s = this.seq[slot];
        Atomics.store(this.seq, slot, s + 1);
        this.meta[slot * META_STRIDE + M_USED] = 0;
        Atomics.store(this.seq, slot, s + 2);
        removed++;
      }
    }
    return removed;
  }

  private isExpired(slot: number, now: number): boolean {
    const state = this.meta[slot * META_STRIDE + M_STATE];
    const idle = state === FlowState.Open ? FLOW_IDLE_MS.tcpOpen : state === FlowState.Closed ? FLOW_IDLE_MS.tcpClosed : FLOW_IDLE_MS.datagram;
    return now - this.num[slot * NUM_STRIDE + N_LAST] > idle;
  }

  private write(slot: number, h: number, family: number, proto: number, low: number, high: number, client: number, server: number, isTcp: boolean, bytes: number, now: number): void {
    const s = this.seq[slot];
    Atomics.store(this.seq, slot, s + 1);
    const m = slot * META_STRIDE;
    const meta = this.meta;
    meta[m + M_USED] = 1;
    meta[m + M_HASH] = h;
    meta[m + M_FAMILY] = family;
    meta[m + M_PROTO] = proto;
    meta[m + M_LOW] = low;
    meta[m + M_HIGH] = high;
    meta[m + M_CLIENT] = client;
    meta[m + M_SERVER] = server;
    meta[m + M_STATE] = isTcp ? FlowState.Open : FlowState.Active;
    const a = slot * ADDR_STRIDE;
    for (let w = 0; w < ADDR_STRIDE; w++) this.addr[a + w] = this.keyWords[w];
    const n = slot * NUM_STRIDE;
    this.num[n + N_PACKETS] = 1;
    this.num[n + N_BYTES] = bytes;
    this.num[n + N_FIRST] = now;
    this.num[n + N_LAST] = now;
    Atomics.store(this.seq, slot, s + 2);
  }

  private update(slot: number, flags: number, isTcp: boolean, synOnly: boolean, client: number, server: number, bytes: number, now: number): void {
    const s = this.seq[slot];
    Atomics.store(this.seq, slot, s + 1);
    const n = slot * NUM_STRIDE;
    this.num[n + N_PACKETS] += 1;
    this.num[n + N_BYTES] += bytes;
    this.num[n + N_LAST] = now;
    if (synOnly) {
      // A SYN tells us for sure who the client is; it overrides an earlier guess.
      this.meta[slot * META_STRIDE + M_CLIENT] = client;
      this.meta[slot * META_STRIDE + M_SERVER] = server;
    }
    if (isTcp && (flags & (TcpFlag.Fin | TcpFlag.Rst)) !== 0) this.meta[slot * META_STRIDE + M_STATE] = FlowState.Closed;
    Atomics.store(this.seq, slot, s + 2);
  }

  private applyTcpFlags(slot: number, flags: number): void {
    if ((flags & (TcpFlag.Fin | TcpFlag.Rst)) === 0) return;
    const s = this.seq[slot];
    Atomics.store(this.seq, slot, s + 1);
    this.meta[slot * META_STRIDE + M_STATE] = FlowState.Closed;
    Atomics.store(this.seq, slot, s + 2);
  }

  // ---- reader (main thread) ----

  /** The live flows at `now` (expired ones hidden), most recently active first. */
  snapshot(now: number): FlowRecord[] {
    const out: { rec: FlowRecord; last: number }[] = [];
    const key = new Int32Array(ADDR_STRIDE);
    const m = new Int32Array(META_STRIDE);
    const n = new Float64Array(NUM_STRIDE);
    for (let slot = 0; slot < this.capacity; slot++) {
      let ok = false;
      for (let attempt = 0; attempt < 4 && !ok; attempt++) {
        const before = Atomics.load(this.seq, slot);
        if ((before & 1) !== 0) continue;
        m.set(this.meta.subarray(slot * META_STRIDE, slot * META_STRIDE + META_STRIDE));
        key.set(this.addr.subarray(slot * ADDR_STRIDE, slot * ADDR_STRIDE + ADDR_STRIDE));
        n.set(this.num.subarray(slot * NUM_STRIDE, slot * NUM_STRIDE + NUM_STRIDE));
        ok = Atomics.load(this.seq, slot) === before;
      }
      if (!ok || m[M_USED] === 0) continue;
      const state = m[M_STATE];
      const idle = state === FlowState.Open ? FLOW_IDLE_MS.tcpOpen : state === FlowState.Closed ? FLOW_IDLE_MS.tcpClosed : FLOW_IDLE_MS.datagram;
      if (now - n[N_LAST] > idle) continue;
      const family = m[M_FAMILY];
      const ported = m[M_PROTO] === IpProto.Tcp || m[M_PROTO] === IpProto.Udp;
      out.push({
        last: n[N_LAST],
        rec: {
          protocol: flowProtocol(m[M_PROTO]),
          reflectAddress: formatAddress(family, key, 0),
          localAddress: formatAddress(family, key, 4),
          clientPort: m[M_CLIENT],
          serverPort: ported ? m[M_SERVER] : 0,
          packets: n[N_PACKETS],
          bytes: n[N_BYTES],
          firstSeen: new Date(n[N_FIRST]).toISOString(),
          lastSeen: new Date(n[N_LAST]).toISOString(),
          state: STATE_NAMES[state] ?? 'active',
        },
      });
    }
    out.sort((a, b) => b.last - a.last);
    return out.map((x) => x.rec);
  }
}

function flowProtocol(proto: number): FlowProtocol {
  switch (proto) {
    case IpProto.Tcp:
      return 'tcp';
    case IpProto.Udp:
      return 'udp';
    case IpProto.Icmp:
      return 'icmp';
    case IpProto.Icmpv6:
      return 'icmpv6';
    default:
      return 'other';
  }
}

function formatAddress(family: number, words: Int32Array, at: number): string {
  const bytes: number[] = [];
  const count = family === 4 ? 1 : 4;
  for (let w = 0; w < count; w++) {
    const v = words[at + w];
    bytes.push((v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff);
  }
  return ipaddr.fromByteArray(bytes).toString();
}
