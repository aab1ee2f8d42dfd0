/**
 * `PortMapper`: applies port maps to reflected packets, deciding by the flow, not by the port alone. The rule (also
 * in docs/port-mapping.md):
 *
 * Every packet here is one this host sends to a reflect address R (source L). With a map `P=T` on R:
 *  - A new mapped flow starts only with a packet *to* R:P that opens a conversation: a TCP SYN without ACK, or any
 *    UDP datagram. It is recorded under its server-side key (R, L, protocol, client port C, server port T) and its
 *    destination port becomes T, so the local server on T sees the peer R:C.
 *  - Later packets of the flow to R:P are rewritten the same way (found by the key, whatever their flags).
 *  - A packet from L:T to R:C is a reply of a mapped flow only if that key is recorded: its source port becomes P,
 *    so the client sees R:P. A client that connected to R:T directly (no map involved) has no mapped entry, so its
 *    replies pass with port T unchanged, even while mapped flows to the same server exist.
 *  - A UDP client whose own port happens to be P (a mapped port) talking to R:X directly is recorded as a *direct*
 *    entry, so the server's reply to R:P is not taken for a new mapped flow. (TCP needs no such entry: replies are
 *    never SYN-only.)
 *  - ICMP errors this host sends about a mapped flow (port unreachable, ...) get the quoted ports mapped back the
 *    same way, by the same key, so the sender of the original packet recognises it.
 *
 * Entries expire when idle: UDP after 60 s, TCP after 2 h 4 min once the server answered (RFC 5382 §5), 4 min
 * before that, and 10 s after an RST or a FIN from each side. A new flow takes a free or expired slot of its probe
 * window; when all 16 hold live flows it takes the slot of the one idle longest among those the server never
 * answered, and only when every one of them was answered is the new flow refused (its packet dropped and counted).
 * So one local program that opens flows by the thousand (any local user can: 20,000 UDP flows in 0.4 s) cannot
 * starve the rest — its unanswered flows make room for anyone's new flow — while a conversation the server took up
 * is never broken to make room. Removing a map forgets its flows at once.
 *
 * A kernel that rewrites ports itself (ebpf: PacketSource.mappedFlowCache) is a cache of this table's decisions: a
 * flow is handed over once the server answered (eviction takes unanswered flows only) and taken back whenever it is
 * forgotten here (finished — the kernel passes every SYN, FIN and RST up —, idle, overwritten, map removed). Before a
 * cached flow counts as idle, the kernel is asked when it last rewrote one of its packets (a rare system call).
 *
 * Worker-thread only (no sharing): plain typed arrays, no allocation on the hot path, never throws there.
 */
import { MAX_REFLECT_ADDRESSES } from '../config/intercept-config.ts';
import { MAX_MAPPED_FLOWS, type PortMap } from '../config/port-maps.ts';
import { IpProto, TcpFlag, type ParsedPacket } from '../packet/parse.ts';
import { EmbeddedPacket, parseEmbeddedPacket } from '../packet/icmp-error.ts';
import { rewritePort, rewriteQuotedPort } from '../packet/port-rewrite.ts';
import type { MappedFlowCache, MappedFlowRef } from '../packet-sources/packet-source.ts';
import {
  checkTableCapacity, flowKeyHashAt, formatAddressWords, KEY_ENTRY, PROBE_WINDOW, sameKeyAddresses, storeKeyAddresses,
} from './flow-key.ts';

export const DEFAULT_MAPPED_FLOW_CAPACITY = MAX_MAPPED_FLOWS;
export const MAPPED_PROBE_WINDOW = PROBE_WINDOW;

/** Idle limits of mapped-flow entries (see the module comment). */
export const MAPPED_FLOW_IDLE_MS = {
  udp: 60_000,
  tcpEstablished: 7_440_000,
  tcpOpening: 240_000,
  tcpClosed: 10_000,
} as const;

/** What `outbound` returns besides a port: the packet must be dropped (no room for a new mapped flow). */
export const MAP_REFUSED = -1;

/** Port role bits in `role` (any address). */
const ROLE_MAPPED = 1;
const ROLE_TARGET = 2;

/** Entry flags. */
const F_MAPPED = 1;
const F_DIRECT = 2;
const F_REPLIED = 4;
const F_FIN_CLIENT = 8;
const F_FIN_SERVER = 16;
const F_RST = 32;
const F_CACHED = 64; // handed to the kernel (MappedFlowCache): its packets are rewritten there meanwhile

/** Entry layout (Int32 words): the key where flow-key.ts says, then this table's own words. */
const ENTRY_WORDS = KEY_ENTRY.WORDS;
const E_HASH = KEY_ENTRY.HASH;
const E_KIND = KEY_ENTRY.KIND; // (family << 8) | protocol; 0 = empty
const E_ADDR = KEY_ENTRY.ADDR; // R (4 words) then L (4 words)
const E_SLOT = 0; // reflect address counter slot
const E_CLIENT = 3;
const E_SERVER = 4;
const E_MAPPED = 5; // the mapped port P (0 for direct entries)
const E_FLAGS = 6;

/** A TCP flow that saw an RST, or a FIN from each side. */
function finished(flags: number): boolean {
  return (flags & F_RST) !== 0 || (flags & (F_FIN_CLIENT | F_FIN_SERVER)) === (F_FIN_CLIENT | F_FIN_SERVER);
}

function protoIndex(proto: number): number {
  return proto === IpProto.Tcp ? 0 : 1;
}

export class PortMapper {
  readonly capacity: number;
  private readonly mask: number;
  /** Per reflect-address slot: 1 when it has any map (the only check unmapped addresses pay). */
  readonly active = new Uint8Array(MAX_REFLECT_ADDRESSES);
  /** [protoIndex * 65536 + port]: ROLE_* bits over all addresses, to skip packets no map can concern. */
  private readonly role = new Uint8Array(2 * 65536);
  /** Maps per address slot: mapStart[slot] .. mapStart[slot + 1) index mapProto/mapPort/mapTarget. */
  private readonly mapStart = new Int32Array(MAX_REFLECT_ADDRESSES + 1);
  private mapProto = new Int32Array(0);
  private mapPort = new Int32Array(0);
  private mapTarget = new Int32Array(0);
  private readonly entries: Int32Array;
  private readonly lastSeen: Float64Array;
  private readonly quoted = new EmbeddedPacket();
  /** New flows refused because their probe window was full of live flows the server had answered. */
  refused = 0;
  /** Unanswered flows whose slot a new flow took because their probe window was full. */
  evicted = 0;
  /** Whether a direct entry was ever recorded (until the next configure): until then no UDP reply can be one. */
  private directEntries = false;
  /** The kernel's cache of answered mapped flows (null: none, every mapped packet comes here). */
  private cache: MappedFlowCache | null = null;
  /** Flows cached in the kernel now. */
  cachedFlows = 0;

  constructor(capacity = DEFAULT_MAPPED_FLOW_CAPACITY) {
    checkTableCapacity('PortMapper', capacity);
    this.capacity = capacity;
    this.mask = capacity - 1;
    this.entries = new Int32Array(capacity * ENTRY_WORDS);
    this.lastSeen = new Float64Array(capacity);
  }

  /**
   * Configure maps (already validated by config/port-maps.ts) for addresses at the given counter slots. Entries whose
   * map is gone (or now points elsewhere) are forgotten, so a removed map stops rewriting at once.
   */
  configure(maps: readonly PortMap[], slotOf: ReadonlyMap<string, number>): void {
    const bySlot: { slot: number; proto: number; port: number; target: number }[] = [];
    for (const m of maps) {
      const slot = slotOf.get(m.address);
      if (slot === undefined) continue;
      bySlot.push({ slot, proto: m.protocol === 'tcp' ? IpProto.Tcp : IpProto.Udp, port: m.port, target: m.target });
    }
    bySlot.sort((a, b) => a.slot - b.slot);
    this.mapProto = Int32Array.from(bySlot, (m) => m.proto);
    this.mapPort = Int32Array.from(bySlot, (m) => m.port);
    this.mapTarget = Int32Array.from(bySlot, (m) => m.target);
    this.active.fill(0);
    this.role.fill(0);
    let i = 0;
    for (let slot = 0; slot <= MAX_REFLECT_ADDRESSES; slot++) {
      this.mapStart[slot] = i;
      while (i < bySlot.length && bySlot[i].slot === slot) {
        const m = bySlot[i];
        this.active[slot] = 1;
        this.role[protoIndex(m.proto) * 65536 + m.port] |= ROLE_MAPPED;
        this.role[protoIndex(m.proto) * 65536 + m.target] |= ROLE_TARGET;
        i++;
      }
    }
    const e = this.entries;
    this.directEntries = false;
    for (let at = 0; at < e.length; at += ENTRY_WORDS) {
      if (e[at + E_KIND] !== 0 && (e[at + E_FLAGS] & F_DIRECT) !== 0) this.directEntries = true;
      if (e[at + E_KIND] === 0 || (e[at + E_FLAGS] & F_MAPPED) === 0) continue;
      const target = this.targetOf(e[at + E_SLOT], e[at + E_KIND] & 0xff, e[at + E_MAPPED]);
      if (target !== e[at + E_SERVER]) this.forget(at);
    }
  }

  /** Hand answered mapped flows to the kernel from now on (null: no kernel cache). Worker thread, at start. */
  useCache(cache: MappedFlowCache | null): void {
    this.cache = cache;
  }

  /** Take back cached flows that went idle (the kernel's last packet included), so the kernel never rewrites a
   *  packet of a flow this table has let go. The worker calls it every second or so; cheap while nothing is cached. */
  sweep(now: number): void {
    if (this.cachedFlows === 0) return;
    for (let e = 0; e < this.capacity; e++) {
      const at = e * ENTRY_WORDS;
      if (this.entries[at + E_KIND] !== 0 && (this.entries[at + E_FLAGS] & F_CACHED) !== 0) this.expired(at, e, now);
    }
  }

  /** The target of `port` on the address at `slot` for `proto`, or 0 when that port is not mapped. */
  targetOf(slot: number, proto: number, port: number): number {
    if (slot < 0 || slot >= MAX_REFLECT_ADDRESSES) return 0;
    const end = this.mapStart[slot + 1];
    for (let i = this.mapStart[slot]; i < end; i++) {
      if (this.mapPort[i] === port && this.mapProto[i] === proto) return this.mapTarget[i];
    }
    return 0;
  }

  /**
   * A TCP/UDP packet with its transport header, sent by this host to the reflect address at `slot` (which has maps),
   * not yet reflected. Rewrites its ports where the rule says so; `p`'s ports are left as the server side sees them
   * (client port and target), for the flow table. Returns the mapped port P when the packet belongs
   * to a mapped flow (its ports are then the server-side ones), 0 when no map applies, MAP_REFUSED when it opens a
   * mapped flow the table has no room for.
   */
  outbound(buf: Uint8Array, p: ParsedPacket, slot: number, partialChecksum: boolean, now: number): number {
    const proto = p.protocol;
    const a = p.srcPort;
    const b = p.dstPort;
    const base = protoIndex(proto) * 65536;
    const ra = this.role[base + a];
    const rb = this.role[base + b];
    if ((ra | rb) === 0) return 0;
    const udp = proto === IpProto.Udp;
    const flags = p.tcpFlags;
    // 1. A reply (L:a → R:b) of a flow whose client is b and server a.
    if ((ra & ROLE_TARGET) !== 0 || (udp && this.directEntries && (rb & ROLE_MAPPED) !== 0)) {
      const e = this.find(p, p.dstOffset, p.srcOffset, b, a, now);
      if (e >= 0) {
        const at = e * ENTRY_WORDS;
        this.touchServerSide(at, e, udp, flags, now);
        if ((this.entries[at + E_FLAGS] & F_MAPPED) === 0) return 0;
        const mapped = this.entries[at + E_MAPPED];
        rewritePort(buf, p, 0, mapped, partialChecksum);
        p.srcPort = a; // p keeps the server-side ports: the flow table records both directions as one flow
        return mapped;
      }
    }
    // 2. To a mapped port: a packet of a mapped flow, or one opening it.
    if ((rb & ROLE_MAPPED) !== 0) {
      const target = this.targetOf(slot, proto, b);
      if (target !== 0) {
        const synOnly = !udp && (flags & (TcpFlag.Syn | TcpFlag.Ack)) === TcpFlag.Syn;
        let e = this.find(p, p.dstOffset, p.srcOffset, a, target, now);
        if (e >= 0) {
          const at = e * ENTRY_WORDS;
          const f = this.entries[at + E_FLAGS];
          // A new connection reusing the ports of a finished one starts afresh; anything else keeps the entry.
          if (synOnly && finished(f)) e = this.insert(p, slot, a, target, b, F_MAPPED, now, e);
          else if ((f & F_MAPPED) === 0 || this.entries[at + E_MAPPED] !== b) return 0;
          else this.touchClientSide(at, e, udp, flags, now);
        } else {
          if (!udp && !synOnly) return 0;
          e = this.insert(p, slot, a, target, b, F_MAPPED, now, -1);
          if (e < 0) {
            this.refused++;
            return MAP_REFUSED;
          }
        }
        rewritePort(buf, p, 2, target, partialChecksum);
        return b;
      }
    }
    // 3. A UDP client whose own port is a mapped port, talking to R:b directly: remember it (see module comment).
    if (udp && (ra & ROLE_MAPPED) !== 0 && this.targetOf(slot, proto, a) !== 0) {
      const e = this.find(p, p.dstOffset, p.srcOffset, a, b, now);
      if (e >= 0) this.lastSeen[e] = now;
      else if (this.insert(p, slot, a, b, 0, F_DIRECT, now, -1) >= 0) this.directEntries = true;
    }
    return 0;
  }

  /**
   * An ICMP/ICMPv6 message this host sends to the reflect address at `slot` (which has maps), not yet reflected.
   * When it is an error quoting a packet of a mapped flow, the quoted ports are mapped back: the quote then shows
   * what the other side of the flow sent (R:P rather than R:T), so that side can match it to its socket.
   */
  icmpError(buf: Uint8Array, p: ParsedPacket, slot: number, now: number): void {
    const q = this.quoted;
    if (!parseEmbeddedPacket(buf, p, q) || !q.hasPorts) return;
    if (q.protocol !== IpProto.Tcp && q.protocol !== IpProto.Udp) return;
    const base = protoIndex(q.protocol) * 65536;
    // The quoted packet was delivered to this host by reflection: source R, destination L.
    if ((this.role[base + q.dstPort] & ROLE_TARGET) !== 0) {
      // The client's packet R:C → L:T, as the server got it: the client sent it to R:P.
      const e = this.findQuoted(p, q, q.srcPort, q.dstPort, now);
      if (e >= 0 && (this.entries[e * ENTRY_WORDS + E_FLAGS] & F_MAPPED) !== 0) {
        rewriteQuotedPort(buf, p, q, 2, this.entries[e * ENTRY_WORDS + E_MAPPED]);
        return;
      }
    }
    if ((this.role[base + q.srcPort] & ROLE_MAPPED) !== 0) {
      // The server's reply R:P → L:C, as the client got it: the server sent it from T.
      const target = this.targetOf(slot, q.protocol, q.srcPort);
      if (target === 0) return;
      const e = this.findQuoted(p, q, q.dstPort, target, now);
      const at = e * ENTRY_WORDS;
      if (e >= 0 && (this.entries[at + E_FLAGS] & F_MAPPED) !== 0 && this.entries[at + E_MAPPED] === q.srcPort) {
        rewriteQuotedPort(buf, p, q, 0, target);
      }
    }
  }

  /** Live mapped flows, for tests and diagnostics (off the hot path). */
  liveEntries(now: number): {
    reflectAddress: string; localAddress: string; protocol: 'tcp' | 'udp'; clientPort: number; serverPort: number;
    mappedPort: number; direct: boolean; cached: boolean;
  }[] {
    const out = [];
    for (let e = 0; e < this.capacity; e++) {
      const at = e * ENTRY_WORDS;
      if (this.entries[at + E_KIND] === 0 || this.expired(at, e, now)) continue;
      const family = this.entries[at + E_KIND] >> 8;
      out.push({
        reflectAddress: formatAddressWords(family, this.entries, at + E_ADDR),
        localAddress: formatAddressWords(family, this.entries, at + E_ADDR + 4),
        protocol: (this.entries[at + E_KIND] & 0xff) === IpProto.Tcp ? ('tcp' as const) : ('udp' as const),
        clientPort: this.entries[at + E_CLIENT],
        serverPort: this.entries[at + E_SERVER],
        mappedPort: this.entries[at + E_MAPPED],
        direct: (this.entries[at + E_FLAGS] & F_DIRECT) !== 0,
        cached: (this.entries[at + E_FLAGS] & F_CACHED) !== 0,
      });
    }
    return out;
  }

  // ---- internals ----

  private touchClientSide(at: number, e: number, udp: boolean, flags: number, now: number): void {
    this.lastSeen[e] = now;
    if (udp) return;
    if ((flags & TcpFlag.Rst) !== 0) this.entries[at + E_FLAGS] |= F_RST;
    if ((flags & TcpFlag.Fin) !== 0) this.entries[at + E_FLAGS] |= F_FIN_CLIENT;
    if ((this.entries[at + E_FLAGS] & F_CACHED) !== 0 && finished(this.entries[at + E_FLAGS])) this.uncache(at);
  }

  private touchServerSide(at: number, e: number, udp: boolean, flags: number, now: number): void {
    this.lastSeen[e] = now;
    let f = this.entries[at + E_FLAGS] | F_REPLIED; // answered: never evicted to make room (see insert)
    if (!udp) {
      if ((flags & TcpFlag.Rst) !== 0) f |= F_RST;
      if ((flags & TcpFlag.Fin) !== 0) f |= F_FIN_SERVER;
    }
    this.entries[at + E_FLAGS] = f;
    if ((f & F_CACHED) !== 0) {
      if (finished(f)) this.uncache(at);
    } else if (this.cache !== null && (f & F_MAPPED) !== 0 && !finished(f)) {
      // Answered: from now on the kernel may rewrite this flow's packets itself.
      if (this.cache.install(this.ref(at))) {
        this.entries[at + E_FLAGS] |= F_CACHED;
        this.cachedFlows++;
      }
    }
  }

  /** The flow of the entry at word `at`, for the kernel cache (off the hot path: once per flow handed over). */
  private ref(at: number): MappedFlowRef {
    const e = this.entries;
    const kind = e[at + E_KIND];
    return { family: kind >> 8, protocol: kind & 0xff, words: e, addressAt: at + E_ADDR, clientPort: e[at + E_CLIENT],
      serverPort: e[at + E_SERVER], mappedPort: e[at + E_MAPPED] };
  }

  /** Take the flow at `at` back from the kernel: its packets come here again. */
  private uncache(at: number): void {
    const f = (this.entries[at + E_FLAGS] &= ~F_CACHED);
    this.cachedFlows--;
    this.cache!.remove(this.ref(at), (this.entries[at + E_KIND] & 0xff) === IpProto.Tcp && finished(f));
  }

  /** Forget the entry at `at` (its kernel copy first). */
  private forget(at: number): void {
    if ((this.entries[at + E_FLAGS] & F_CACHED) !== 0) this.uncache(at);
    this.entries[at + E_KIND] = 0;
  }

  /** Whether the entry is past its idle limit. A cached flow is first checked against the kernel's last packet of it,
   *  and taken back from the kernel when it is expired after all. */
  private expired(at: number, e: number, now: number): boolean {
    if (!this.idleTooLong(at, e, now)) return false;
    if ((this.entries[at + E_FLAGS] & F_CACHED) === 0) return true;
    const kernel = this.cache!.lastSeenMs(this.ref(at));
    if (kernel > this.lastSeen[e]) {
      this.lastSeen[e] = kernel;
      if (!this.idleTooLong(at, e, now)) return false;
    }
    this.uncache(at);
    return true;
  }

  private idleTooLong(at: number, e: number, now: number): boolean {
    const idle = now - this.lastSeen[e];
    if ((this.entries[at + E_KIND] & 0xff) !== IpProto.Tcp) return idle > MAPPED_FLOW_IDLE_MS.udp;
    const f = this.entries[at + E_FLAGS];
    if (finished(f)) return idle > MAPPED_FLOW_IDLE_MS.tcpClosed;
    return idle > ((f & F_REPLIED) !== 0 ? MAPPED_FLOW_IDLE_MS.tcpEstablished : MAPPED_FLOW_IDLE_MS.tcpOpening);
  }

  /** The live entry for (R at r, L at l in p's buffer, client, server), or -1. */
  private find(p: ParsedPacket, r: number, l: number, client: number, server: number, now: number): number {
    return this.lookup(p.view, p.family, (p.family << 8) | p.protocol, r, l, client, server, now);
  }

  private findQuoted(p: ParsedPacket, q: EmbeddedPacket, client: number, server: number, now: number): number {
    return this.lookup(p.view, q.family, (q.family << 8) | q.protocol, q.srcOffset, q.dstOffset, client, server, now);
  }

  private lookup(
    v: DataView, family: number, kind: number, r: number, l: number, client: number, server: number, now: number,
  ): number {
    const h = flowKeyHashAt(v, family, kind, (client << 16) | server, r, l);
    const e = this.entries;
    for (let i = 0; i < MAPPED_PROBE_WINDOW; i++) {
      const slot = (h + i) & this.mask;
      const at = slot * ENTRY_WORDS;
      if (e[at + E_HASH] !== h || e[at + E_KIND] !== kind) continue;
      if (e[at + E_CLIENT] !== client || e[at + E_SERVER] !== server) continue;
      if (e[at + E_ADDR] !== v.getInt32(r) || e[at + E_ADDR + 4] !== v.getInt32(l)) continue;
      if (family === 6 && !sameKeyAddresses(e, at, v, family, r, l)) continue;
      return this.expired(at, slot, now) ? -1 : slot;
    }
    return -1;
  }

  /** Record a flow of packet p (R = its destination, L = its source). `reuse` ≥ 0: overwrite that entry. Returns
   *  the entry, or -1 when every slot of the probe window holds a live flow the server answered. Otherwise a free or
   *  expired slot, or else the slot of the unanswered flow idle longest (evicted, counted). */
  private insert(
    p: ParsedPacket, slot: number, client: number, server: number, mapped: number, flags: number, now: number,
    reuse: number,
  ): number {
    const kind = (p.family << 8) | p.protocol;
    const v = p.view;
    const r = p.dstOffset;
    const l = p.srcOffset;
    const h = flowKeyHashAt(v, p.family, kind, (client << 16) | server, r, l);
    let e = reuse;
    if (e < 0) {
      let unanswered = -1;
      for (let i = 0; i < MAPPED_PROBE_WINDOW && e < 0; i++) {
        const s = (h + i) & this.mask;
        const at = s * ENTRY_WORDS;
        if (this.entries[at + E_KIND] === 0 || this.expired(at, s, now)) e = s;
        else if ((this.entries[at + E_FLAGS] & F_REPLIED) === 0) {
          if (unanswered < 0 || this.lastSeen[s] < this.lastSeen[unanswered]) unanswered = s;
        }
      }
      if (e < 0) {
        if (unanswered < 0) return -1;
        e = unanswered;
        this.evicted++;
      }
    }
    const at = e * ENTRY_WORDS;
    const w = this.entries;
    if (w[at + E_KIND] !== 0 && (w[at + E_FLAGS] & F_CACHED) !== 0) this.uncache(at);
    w[at + E_KIND] = kind;
    w[at + E_HASH] = h;
    w[at + E_CLIENT] = client;
    w[at + E_SERVER] = server;
    w[at + E_MAPPED] = mapped;
    w[at + E_FLAGS] = flags;
    w[at + E_SLOT] = slot;
    storeKeyAddresses(w, at, v, p.family, r, l);
    this.lastSeen[e] = now;
    return e;
  }
}
