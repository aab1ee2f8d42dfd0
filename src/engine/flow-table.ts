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
 * The data plane's allow decision (Dataplane: the address's port list and the backend's app gate) is kept in a flow's
 * entry too, per direction (packets from the key's low port, packets from its high port), with the data plane's
 * decision epoch it was made in, so a running allowed flow's packets skip those checks: `record` with
 * `AllowDecision.Require` counts a packet only when its direction was remembered as allowed in the current epoch.
 * The data plane starts a new epoch whenever an answer of those checks may change (its config, the gate's verdicts),
 * so each flow is decided again by its next packet; a new or restarted flow starts undecided.
 *
 * Consistency between writer and reader: each slot has a sequence number that is odd while the writer is changing
 * the slot (a seqlock). The reader retries a slot whose sequence is odd or changed while it read, and skips it after
 * a few tries. Idle flows expire lazily (an expired entry is reused and hidden from snapshots) and on `sweep(now)`;
 * when the probe window is full, the entry seen longest ago is evicted.
 */
import { IpProto, TcpFlag, type ParsedPacket } from '../packet/parse.ts';
import { checkTableCapacity, flowKeyHash, formatAddressWords, KEY_ENTRY, PROBE_WINDOW } from './flow-key.ts';
import type { FlowProtocol, FlowRecord } from './types.ts';

export const DEFAULT_FLOW_CAPACITY = 4096;

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

/**
 * Slot layout. Each slot is one entry of Int32 words (flow-key.ts KEY_ENTRY: the key, plus here its sequence number
 * and TCP facts) plus four Float64 counters in a second region.
 */
const SLOT_WORDS = KEY_ENTRY.WORDS;
const W_HASH = KEY_ENTRY.HASH;
const W_KIND = KEY_ENTRY.KIND; // (family << 8) | protocol; 0 = empty slot (family is 4 or 6 in a used one)
const W_ADDR = KEY_ENTRY.ADDR; // 8 words: R (4 words) then L (4 words); IPv4 uses the first word of each
const W_SEQ = 0; // seqlock sequence: odd while the writer changes the slot
const W_PORTS = 3; // (low port << 16) | high port: the key's ports in one word
const W_ROLES = 4; // (client port << 16) | server port (decided as described above)
const W_ALLOWED = 5; // (decision epoch << 2) | FROM_*_PORT bits of the directions allowed in it (see AllowDecision)
const W_STATE = 6; // FlowState
const W_MAPPED = 7; // the reflect-address port the client used when the flow came through a port map; 0 = none
/** A direction's bit in W_ALLOWED: packets whose source port is the key's low port (also when both are equal), or
 *  its high port. */
const FROM_LOW_PORT = 1;
const FROM_HIGH_PORT = 2;
/** Float64 fields per slot. */
const N_PACKETS = 0;
const N_BYTES = 1;
const N_FIRST = 2; // ms since epoch
const N_LAST = 3;
const NUM_STRIDE = 4;
/** Buffer header: Int32 capacity, padded to 64 bytes so the slot records start on a cache-line boundary. */
const HEADER_BYTES = 64;

/**
 * Whether the writer may publish with plain stores. A seqlock writer needs its three store groups (sequence odd,
 * data, sequence even) to become visible in that order. On x86 (TSO) the hardware keeps stores in order, and V8 emits
 * typed-array element stores in program order, so plain stores suffice; the torn-read test in
 * test/engine/flow-table.test.ts checks it with a real second thread. Elsewhere (e.g. arm64, weakly ordered) the
 * sequence stores go through Atomics.store, whose full barrier costs ~20 ns each here (Node 20 calls a builtin).
 */
const PLAIN_STORES_ARE_ORDERED = process.arch === 'x64' || process.arch === 'ia32';

/**
 * What `record` does with the allow decision its entry keeps (see the file comment). Ignore: nothing to remember
 * (count the packet, keep the entry's decision as it is). Remember: the caller just found this TCP/UDP packet allowed
 * in `epoch`: count it and remember its direction as allowed. Require: count the TCP/UDP packet only if its direction
 * is remembered as allowed in `epoch`; otherwise write nothing and return false (the caller decides it in full, then
 * records it with Remember). A TCP SYN without ACK is never counted under Require: a SYN is allowed by fewer ports
 * (its destination must be open) than the flow's other segments, so it is always decided in full.
 */
export const AllowDecision = { Ignore: 0, Remember: 1, Require: 2 } as const;
export type AllowDecision = (typeof AllowDecision)[keyof typeof AllowDecision];

/**
 * Decision epochs run from 1 to MAX_DECISION_EPOCH, then start at 1 again. A decision of an earlier round could only
 * be taken for a current one if its entry saw no packet while the epoch went round once (2^29 changes), and an entry
 * idle longer than FLOW_IDLE_MS.tcpOpen is a new flow: that many changes within that time cannot happen (each is a
 * config change or a batch that brought flow verdicts).
 */
export const MAX_DECISION_EPOCH = 2 ** 29 - 1;

/** The epoch after `epoch`. */
export function nextDecisionEpoch(epoch: number): number {
  return epoch >= MAX_DECISION_EPOCH ? 1 : epoch + 1;
}

/** The same rule by state name, for flows kept elsewhere (a kernel data path, see HostBackend.kernel). */
export function flowIdleLimitMs(state: 'active' | 'open' | 'closed'): number {
  return idleLimit(STATE_NAMES.indexOf(state));
}

/** How long a flow in `state` may stay idle before it is forgotten. */
function idleLimit(state: number): number {
  if (state === FlowState.Open) return FLOW_IDLE_MS.tcpOpen;
  return state === FlowState.Closed ? FLOW_IDLE_MS.tcpClosed : FLOW_IDLE_MS.datagram;
}

function regionBytes(capacity: number): { slots: number; num: number; total: number } {
  const slots = HEADER_BYTES;
  const num = slots + capacity * SLOT_WORDS * 4; // a multiple of 64, so Float64-aligned
  return { slots, num, total: num + capacity * NUM_STRIDE * 8 };
}

export class FlowTable {
  readonly buffer: SharedArrayBuffer;
  readonly capacity: number;
  private readonly mask: number;
  /** SLOT_WORDS Int32 words per slot (see W_*). */
  private readonly slots: Int32Array;
  /** NUM_STRIDE Float64 counters per slot (see N_*). */
  private readonly num: Float64Array;

  static bytesFor(capacity: number): number {
    return regionBytes(capacity).total;
  }

  /**
   * `buffer`: wrap the table another thread created (its capacity is read from the buffer). Otherwise a new table of
   * `capacity` slots (a power of two) is created.
   */
  constructor(opts: { capacity?: number; buffer?: SharedArrayBuffer } = {}) {
    let capacity: number;
    let buffer: SharedArrayBuffer;
    if (opts.buffer) {
      buffer = opts.buffer;
      capacity = new Int32Array(buffer, 0, 1)[0];
    } else {
      capacity = opts.capacity ?? DEFAULT_FLOW_CAPACITY;
      checkTableCapacity('FlowTable', capacity);
      buffer = new SharedArrayBuffer(regionBytes(capacity).total);
      new Int32Array(buffer, 0, 1)[0] = capacity;
    }
    const r = regionBytes(capacity);
    if (buffer.byteLength < r.total) throw new RangeError('FlowTable buffer is smaller than its capacity needs');
    // Every field is assigned exactly once, here, so all tables share one hidden class and the hot path sees one shape.
    this.buffer = buffer;
    this.capacity = capacity;
    this.mask = capacity - 1;
    this.slots = new Int32Array(buffer, r.slots, capacity * SLOT_WORDS);
    this.num = new Float64Array(buffer, r.num, capacity * NUM_STRIDE);
  }

  // ---- writer (worker thread) ----

  /**
   * Count one outbound packet to a reflect address, parsed by `parsePacket` and not yet reflected (source = L,
   * destination = R). Later fragments (no transport header, so no ports) are not recorded: they would form a
   * port-less pseudo-flow; the counters still count them. A port-mapped packet is recorded with the ports the local
   * server sees (client port, map target) and `mappedFrom`, the port the client used (engine/port-mapper.ts).
   * `decision`: what to do with the flow's remembered allow decision in `epoch` (AllowDecision). Returns false only
   * under Require, when the packet was not counted (its direction is not remembered as allowed); true otherwise.
   *
   * This is the hottest code of the data plane. Every typed-array read below runs on every call (none sits in a
   * branch that warm-up traffic may never take): V8 compiles a read it has no type feedback for into a generic,
   * megamorphic lookup costing more than everything else here together.
   */
  record(_buf: Uint8Array, p: ParsedPacket, bytes: number, now: number, mappedFrom = 0,
    decision: AllowDecision = AllowDecision.Ignore, epoch = 0): boolean {
    const proto = p.protocol;
    const isTcp = proto === IpProto.Tcp;
    let low = 0;
    let high = 0;
    let client = 0;
    let server = 0;
    let synOnly = false;
    let direction = FROM_LOW_PORT;
    if (isTcp || proto === IpProto.Udp) {
      if (!p.hasTransport) return decision !== AllowDecision.Require;
      const a = p.srcPort;
      const b = p.dstPort;
      low = a < b ? a : b;
      high = a < b ? b : a;
      direction = a === low ? FROM_LOW_PORT : FROM_HIGH_PORT;
      synOnly = isTcp && (p.tcpFlags & (TcpFlag.Syn | TcpFlag.Ack)) === TcpFlag.Syn;
      client = synOnly ? a : high;
      server = synOnly ? b : low;
      if (synOnly && decision === AllowDecision.Require) return false;
    } else if (proto === IpProto.Icmp || proto === IpProto.Icmpv6) {
      if (!p.hasTransport) return true;
      // parsePacket sets icmpId only for echo request/reply; other ICMP messages share one flow per address pair.
      low = client = p.icmpId;
    }
    // Other protocols have no ports: all their packets (fragments too) between L and R form one flow.

    // The key's address words in locals (R then L; IPv4 uses the first word of each).
    const family = p.family;
    const d = p.dstOffset;
    const s = p.srcOffset;
    const v = p.view; // the DataView parsePacket made over `buf`
    const r0 = v.getInt32(d);
    const l0 = v.getInt32(s);
    let r1 = 0, r2 = 0, r3 = 0, l1 = 0, l2 = 0, l3 = 0;
    if (family === 6) {
      r1 = v.getInt32(d + 4);
      r2 = v.getInt32(d + 8);
      r3 = v.getInt32(d + 12);
      l1 = v.getInt32(s + 4);
      l2 = v.getInt32(s + 8);
      l3 = v.getInt32(s + 12);
    }
    const kind = (family << 8) | proto;
    const ports = (low << 16) | high;
    const h = flowKeyHash(kind, ports, family, r0, l0, r1, l1, r2, l2, r3, l3);

    const w = this.slots;
    const num = this.num;
    const mask = this.mask;
    // Is the conversation already here? (Usually found in the home slot.)
    for (let i = 0; i < PROBE_WINDOW; i++) {
      const slot = (h + i) & mask;
      const b = slot * SLOT_WORDS;
      if (w[b + W_HASH] !== h || w[b + W_KIND] !== kind || w[b + W_PORTS] !== ports) continue;
      const a = b + W_ADDR;
      if (w[a] !== r0 || w[a + 4] !== l0 || w[a + 1] !== r1 || w[a + 2] !== r2 || w[a + 3] !== r3) continue;
      if (w[a + 5] !== l1 || w[a + 6] !== l2 || w[a + 7] !== l3) continue;
      const state = w[b + W_STATE];
      const allowed = w[b + W_ALLOWED];
      const n = slot * NUM_STRIDE;
      // Same conversation, unless it went idle long enough to be forgotten, or a new TCP connection reuses the
      // ports of a closed one: then start counting afresh in the same slot (no duplicate key left behind).
      if (now - num[n + N_LAST] > idleLimit(state) || (synOnly && state === FlowState.Closed)) {
        if (decision === AllowDecision.Require) return false; // a new flow: undecided
        const allowedNow = decision === AllowDecision.Remember ? (epoch << 2) | direction : 0;
        this.write(slot, h, kind, ports, client, server, isTcp, p.tcpFlags, bytes, now,
          r0, r1, r2, r3, l0, l1, l2, l3, mappedFrom, allowedNow);
        return true;
      }
      const current = allowed >>> 2 === epoch;
      if (decision === AllowDecision.Require && !(current && (allowed & direction) !== 0)) return false;
      const seq = w[b + W_SEQ];
      this.beginWrite(b, seq);
      num[n + N_PACKETS] += 1;
      num[n + N_BYTES] += bytes;
      num[n + N_LAST] = now;
      w[b + W_MAPPED] = mappedFrom;
      if (decision === AllowDecision.Remember) {
        w[b + W_ALLOWED] = (epoch << 2) | (current ? allowed & (FROM_LOW_PORT | FROM_HIGH_PORT) : 0) | direction;
      }
      // A SYN tells us for sure who the client is; it overrides an earlier guess.
      if (synOnly) w[b + W_ROLES] = (client << 16) | server;
      if (isTcp && (p.tcpFlags & (TcpFlag.Fin | TcpFlag.Rst)) !== 0) w[b + W_STATE] = FlowState.Closed;
      this.endWrite(b, seq);
      return true;
    }
    if (decision === AllowDecision.Require) return false;
    const allowedNow = decision === AllowDecision.Remember ? (epoch << 2) | direction : 0;
    this.write(this.freeSlot(h, now), h, kind, ports, client, server, isTcp, p.tcpFlags, bytes, now,
      r0, r1, r2, r3, l0, l1, l2, l3, mappedFrom, allowedNow);
    return true;
  }

  /** Forget every flow idle past its timeout. Returns how many were removed. */
  sweep(now: number): number {
    let removed = 0;
    const w = this.slots;
    for (let slot = 0; slot < this.capacity; slot++) {
      const b = slot * SLOT_WORDS;
      if (w[b + W_KIND] !== 0 && this.isExpired(slot, now)) {
        const seq = w[b + W_SEQ];
        this.beginWrite(b, seq);
        w[b + W_KIND] = 0;
        this.endWrite(b, seq);
        removed++;
      }
    }
    return removed;
  }

  private isExpired(slot: number, now: number): boolean {
    return now - this.num[slot * NUM_STRIDE + N_LAST] > idleLimit(this.slots[slot * SLOT_WORDS + W_STATE]);
  }

  /** Where a new flow with hash `h` goes: a free slot in its probe window, else an expired one, else the one seen
   *  longest ago (evicted). */
  private freeSlot(h: number, now: number): number {
    let expired = -1;
    let oldest = -1;
    let oldestSeen = Infinity;
    for (let i = 0; i < PROBE_WINDOW; i++) {
      const slot = (h + i) & this.mask;
      if (this.slots[slot * SLOT_WORDS + W_KIND] === 0) return slot;
      if (this.isExpired(slot, now)) {
        if (expired < 0) expired = slot;
      } else {
        const seen = this.num[slot * NUM_STRIDE + N_LAST];
        if (seen < oldestSeen) {
          oldestSeen = seen;
          oldest = slot;
        }
      }
    }
    return expired >= 0 ? expired : oldest;
  }

  /** Start a new flow in `slot` (overwriting whatever was there) with this packet as its first. */
  private write(
    slot: number, h: number, kind: number, ports: number, client: number, server: number, isTcp: boolean,
    tcpFlags: number, bytes: number, now: number,
    r0: number, r1: number, r2: number, r3: number, l0: number, l1: number, l2: number, l3: number,
    mappedFrom: number, allowed: number,
  ): void {
    const w = this.slots;
    const b = slot * SLOT_WORDS;
    const seq = w[b + W_SEQ];
    this.beginWrite(b, seq);
    w[b + W_HASH] = h;
    w[b + W_KIND] = kind;
    w[b + W_PORTS] = ports;
    w[b + W_ROLES] = (client << 16) | server;
    w[b + W_ALLOWED] = allowed;
    w[b + W_MAPPED] = mappedFrom;
    const closing = isTcp && (tcpFlags & (TcpFlag.Fin | TcpFlag.Rst)) !== 0;
    w[b + W_STATE] = !isTcp ? FlowState.Active : closing ? FlowState.Closed : FlowState.Open;
    const a = b + W_ADDR;
    w[a] = r0;
    w[a + 1] = r1;
    w[a + 2] = r2;
    w[a + 3] = r3;
    w[a + 4] = l0;
    w[a + 5] = l1;
    w[a + 6] = l2;
    w[a + 7] = l3;
    const n = slot * NUM_STRIDE;
    this.num[n + N_PACKETS] = 1;
    this.num[n + N_BYTES] = bytes;
    this.num[n + N_FIRST] = now;
    this.num[n + N_LAST] = now;
    this.endWrite(b, seq);
  }

  /** Mark the slot at word `b` as being written (sequence odd); `seq` is its current, even, sequence. */
  private beginWrite(b: number, seq: number): void {
    if (PLAIN_STORES_ARE_ORDERED) this.slots[b + W_SEQ] = seq + 1;
    else Atomics.store(this.slots, b + W_SEQ, seq + 1);
  }

  /** Publish the slot's new contents (sequence even again, and changed). */
  private endWrite(b: number, seq: number): void {
    if (PLAIN_STORES_ARE_ORDERED) this.slots[b + W_SEQ] = seq + 2;
    else Atomics.store(this.slots, b + W_SEQ, seq + 2);
  }

  // ---- reader (main thread) ----

  /** The live flows at `now` (expired ones hidden), most recently active first. */
  snapshot(now: number): FlowRecord[] {
    const out: { rec: FlowRecord; last: number }[] = [];
    const w = new Int32Array(SLOT_WORDS);
    const n = new Float64Array(NUM_STRIDE);
    for (let slot = 0; slot < this.capacity; slot++) {
      const b = slot * SLOT_WORDS;
      let ok = false;
      // Seqlock read: copy the slot, and keep the copy only if the sequence was even and unchanged around it.
      for (let attempt = 0; attempt < 4 && !ok; attempt++) {
        const before = Atomics.load(this.slots, b + W_SEQ);
        if ((before & 1) !== 0) continue;
        w.set(this.slots.subarray(b, b + SLOT_WORDS));
        n.set(this.num.subarray(slot * NUM_STRIDE, slot * NUM_STRIDE + NUM_STRIDE));
        ok = Atomics.load(this.slots, b + W_SEQ) === before;
      }
      if (!ok || w[W_KIND] === 0) continue;
      const state = w[W_STATE];
      if (now - n[N_LAST] > idleLimit(state)) continue;
      const family = w[W_KIND] >> 8;
      const proto = w[W_KIND] & 0xff;
      const ported = proto === IpProto.Tcp || proto === IpProto.Udp;
      out.push({
        last: n[N_LAST],
        rec: {
          protocol: flowProtocol(proto),
          reflectAddress: formatAddressWords(family, w, W_ADDR),
          localAddress: formatAddressWords(family, w, W_ADDR + 4),
          clientPort: w[W_ROLES] >>> 16,
          serverPort: ported ? w[W_ROLES] & 0xffff : 0,
          mappedFromPort: ported && w[W_MAPPED] !== 0 ? w[W_MAPPED] : null,
          packets: n[N_PACKETS],
          bytes: n[N_BYTES],
          firstSeen: new Date(n[N_FIRST]).toISOString(),
          lastSeen: new Date(n[N_LAST]).toISOString(),
          state: STATE_NAMES[state] ?? 'active',
          pid: null,
          processName: null,
          uid: null,
          user: null,
          packageFamilyName: null,
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
