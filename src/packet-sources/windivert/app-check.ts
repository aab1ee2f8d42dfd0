/**
 * The app gate's worker half (`AppCheck`): for each packet this host sends to a reflect address with an `apps` list,
 * whether its flow may be reflected. It knows only verdicts: the main thread's half (app-gate.ts) joins packets to
 * the SOCKET layer's connect events, asks who the process is, decides, and passes each flow's verdict here through
 * a ring (record-ring.ts), drained before every batch is decided. The data plane asks it (Dataplane.gate, through
 * the source's OutboundGate) only about packets to an address with an apps list (it knows their slots), with the
 * parse it already made, so no packet is parsed twice; the address is checked here again on a memo miss, as the
 * data plane's slots and these lists change at different moments of a live change; the flows answered last
 * from their verdicts are remembered (flow-memo.ts), so a packet of a running flow costs one short comparison.
 *
 *   a flow with a verdict               → Allowed: decided by the data plane as usual (marked Allowed: the data
 *                                         plane keeps that per flow until `generation` moves); refused: refused (RST
 *                                         / ICMP port unreachable from the reflect address, counted notAllowed);
 *   the server's answer to an allowed flow (same key, ports swapped) → Allowed, as above;
 *   a new flow (TCP SYN, a UDP datagram) without a verdict → held: a copy goes to the main thread, which re-offers
 *                                         it once the flow is decided (re-injected above our handle, so it comes
 *                                         back here with its verdict); when that ring is full it is refused;
 *   any other packet without a verdict  → refused: it belongs to no flow the gate allowed.
 * ICMP passes as it does for port lists (echo names no port; errors belong to flows already allowed); later
 * fragments carry no ports and pass (their first fragment decides); other protocols are refused.
 */
import { allowListsOf } from '../../config/allow-lists.ts';
import type { InterceptConfig } from '../../config/intercept-config.ts';
import { IpProto, type ParsedPacket, TcpFlag } from '../../packet/parse.ts';
import { WINDIVERT_ADDRESS_SIZE } from './address.ts';
import { addressKey, FLOW_KEY_BYTES, packetFlowKeyBytes } from './app-flow-key.ts';
import { APP_FLOWS_KEPT } from './limits.ts';
import { FlowMemo } from './flow-memo.ts';
import { RecordRing } from './record-ring.ts';
import { AppGateMark, type AppGateRings } from '../packet-source.ts';

/** What the gate says of one packet (PacketBatch.appGate). */
const AppMark = AppGateMark;
type AppMark = AppGateMark;

/** A flow's verdict, as the main thread sends it (one byte after the key). */
export const FlowVerdict = {
  Allowed: 1,
  /** The process is not on the address's list (or could not be identified). */
  NotListed: 2,
  /** No connect event came within the hold time. */
  NoSocketEvent: 3,
  /** Too many flows or packets were waiting already. */
  HoldFull: 4,
} as const;
export type FlowVerdict = (typeof FlowVerdict)[keyof typeof FlowVerdict];

/** The worker's counts in AppGateRings.counters (Int32): [0] new flows refused as the held-packet ring was full. */
export const WorkerCounter = { RingFull: 0 } as const;

/**
 * Flow verdicts the worker knows, looked up per packet without allocating: buckets by a 32-bit hash of the key
 * bytes (FNV-1a), the key compared in full. Inserts and the oldest-first eviction (APP_FLOWS_KEPT) may allocate.
 */
class VerdictTable {
  private readonly buckets = new Map<number, { key: Uint8Array; verdict: number }[]>();
  /** Keys in insertion order (latin1), for eviction. */
  private readonly order = new Set<string>();

  get(key: Uint8Array): number | undefined {
    const bucket = this.buckets.get(hash(key));
    if (bucket === undefined) return undefined;
    for (const e of bucket) if (same(e.key, key)) return e.verdict;
    return undefined;
  }

  /** Set (verdict > 0) or forget (0) a key. */
  set(key: Uint8Array, verdict: number): void {
    const h = hash(key);
    const text = Buffer.from(key.buffer, key.byteOffset, FLOW_KEY_BYTES).toString('latin1');
    const bucket = (this.buckets.get(h) ?? []).filter((e) => !same(e.key, key));
    this.order.delete(text);
    if (verdict !== 0) {
      bucket.push({ key: Uint8Array.from(key), verdict });
      this.order.add(text);
    }
    if (bucket.length > 0) this.buckets.set(h, bucket);
    else this.buckets.delete(h);
    if (this.order.size > APP_FLOWS_KEPT.DEFAULT) {
      const oldest = this.order.values().next().value as string;
      this.set(Uint8Array.from(Buffer.from(oldest, 'latin1')), 0);
    }
  }
}

function hash(key: Uint8Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < FLOW_KEY_BYTES; i++) h = Math.imul(h ^ key[i], 16777619);
  return h >>> 0;
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < FLOW_KEY_BYTES; i++) if (a[i] !== b[i]) return false;
  return true;
}

export class AppCheck {
  private readonly held: RecordRing;
  private readonly verdictRing: RecordRing;
  private readonly counters: Int32Array;
  private readonly verdicts = new VerdictTable();
  /** The reflect addresses with an apps list: IPv4 as numbers, IPv6 as 16 bytes. */
  private restricted4 = new Set<number>();
  private restricted6: Uint8Array[] = [];
  private readonly key = new Uint8Array(FLOW_KEY_BYTES);
  /** The flows answered last from `verdicts` (flow-memo.ts); forgotten whenever those change. */
  private readonly memo = new FlowMemo();
  /** Moves whenever an answer of `mark` may change: the lists changed, or verdicts arrived (OutboundGate). */
  generation = 0;

  constructor(rings: AppGateRings) {
    this.held = new RecordRing(rings.held);
    this.verdictRing = new RecordRing(rings.verdicts);
    this.counters = new Int32Array(rings.counters);
  }

  /** Whether any address has an apps list (when none, the source never asks). */
  get active(): boolean {
    return this.restricted4.size > 0 || this.restricted6.length > 0;
  }

  configure(cfg: InterceptConfig): void {
    const listed = allowListsOf(cfg).filter((a) => a.apps && cfg.reflectAddresses.includes(a.address));
    const bytes = listed.map((a) => Buffer.from(addressKey(a.address), 'latin1'));
    const mapped = (b: Buffer): boolean => b.subarray(0, 12).equals(V4_MAPPED_PREFIX);
    this.restricted4 = new Set(bytes.filter(mapped).map((b) => b.readUInt32BE(12)));
    this.restricted6 = bytes.filter((b) => !mapped(b)).map((b) => Uint8Array.from(b));
    this.memo.forget();
    this.generation++;
  }

  /** Take the verdicts the main thread has sent. Before a batch is decided. */
  drainVerdicts(): void {
    for (let r = this.verdictRing.read(); r !== null; r = this.verdictRing.read()) {
      this.verdicts.set(r.subarray(0, FLOW_KEY_BYTES), r[FLOW_KEY_BYTES]); // 0: forgotten
      this.memo.forget();
      this.generation++;
    }
  }

  /** Whether the packet parsed into `p` goes to a reflect address with an apps list. */
  private toRestricted(buf: Uint8Array, p: ParsedPacket): boolean {
    const at = p.dstOffset;
    if (p.family === 4) {
      const v4 = ((buf[at] << 24) | (buf[at + 1] << 16) | (buf[at + 2] << 8) | buf[at + 3]) >>> 0;
      return this.restricted4.size > 0 && this.restricted4.has(v4);
    }
    for (const a of this.restricted6) {
      let i = 0;
      while (i < 16 && buf[at + i] === a[i]) i++;
      if (i === 16) return true;
    }
    return false;
  }

  /**
   * The mark of an outbound packet `buf[off, off+len)`, parsed (well formed) into `p` by the data plane, whose
   * WINDIVERT_ADDRESS is `addrs[base, base+80)`.
   */
  mark(buf: Uint8Array, off: number, len: number, p: ParsedPacket, addrs: Buffer, base: number): AppMark {
    const proto = p.protocol;
    // The memo holds only flows to restricted addresses (forgotten on configure), so a hit needs no other check.
    if (p.hasTransport && (proto === IpProto.Tcp || proto === IpProto.Udp)) {
      const known = this.memo.find(buf, p);
      if (known >= 0) return known as AppMark;
    }
    if (!this.toRestricted(buf, p)) return AppMark.Decide;
    if (proto === IpProto.Icmp || proto === IpProto.Icmpv6) return AppMark.Decide;
    if (proto !== IpProto.Tcp && proto !== IpProto.Udp) return AppMark.Refuse;
    if (!p.hasTransport) return AppMark.Decide; // a later fragment: its first fragment was decided
    // A refused flow stays refused until the main thread sends another verdict (a connect event that came late).
    packetFlowKeyBytes(buf, p, false, this.key);
    const own = this.verdicts.get(this.key);
    if (own !== undefined) {
      const mark = own === FlowVerdict.Allowed ? AppMark.Allowed : AppMark.Refuse;
      this.memo.remember(buf, p, mark);
      return mark;
    }
    packetFlowKeyBytes(buf, p, true, this.key);
    if (this.verdicts.get(this.key) === FlowVerdict.Allowed) {
      this.memo.remember(buf, p, AppMark.Allowed);
      return AppMark.Allowed;
    }
    const opens = proto === IpProto.Udp || (p.tcpFlags & (TcpFlag.Syn | TcpFlag.Ack)) === TcpFlag.Syn;
    if (!opens) return AppMark.Refuse;
    const addr = addrs.subarray(base, base + WINDIVERT_ADDRESS_SIZE);
    if (this.held.write(addr, buf.subarray(off, off + len))) return AppMark.Held;
    Atomics.add(this.counters, WorkerCounter.RingFull, 1);
    return AppMark.Refuse;
  }
}

/** The first 12 bytes of an IPv4-mapped IPv6 address (::ffff:0:0/96). */
const V4_MAPPED_PREFIX = Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
