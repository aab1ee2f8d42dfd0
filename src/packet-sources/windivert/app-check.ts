/**
 * The app gate's worker half (`AppCheck`): for each packet this host sends to a reflect address with an `apps` list,
 * whether its flow may be reflected. It knows only verdicts: the main thread's half (app-gate.ts) joins packets to
 * the SOCKET layer's connect events, asks who the process is, decides, and passes each flow's verdict here through
 * a ring (record-ring.ts), drained before every batch is decided.
 *
 *   a flow with a verdict               → Allowed: decided by the data plane as usual; refused: refused (RST / ICMP
 *                                         port unreachable from the reflect address, counted notAllowed);
 *   the server's answer to an allowed flow (same key, ports swapped) → decided as usual;
 *   a new flow (TCP SYN, a UDP datagram) without a verdict → held: a copy goes to the main thread, which re-offers
 *                                         it once the flow is decided (re-injected above our handle, so it comes
 *                                         back here with its verdict); when that ring is full it is refused;
 *   any other packet without a verdict  → refused: it belongs to no flow the gate allowed.
 * ICMP passes as it does for port lists (echo names no port; errors belong to flows already allowed); later
 * fragments carry no ports and pass (their first fragment decides); other protocols are refused.
 */
import { allowListsOf } from '../../config/allow-lists.ts';
import type { InterceptConfig } from '../../config/intercept-config.ts';
import { IpProto, ParsedPacket, parsePacket, TcpFlag } from '../../packet/parse.ts';
import { WINDIVERT_ADDRESS_SIZE } from './address.ts';
import { addressKey, FLOW_KEY_BYTES, packetFlowKey } from './app-flow-key.ts';
import { APP_FLOWS_KEPT } from './limits.ts';
import { mappedAddress } from './socket-events.ts';
import { RecordRing } from './record-ring.ts';
import { AppGateMark, type AppGateRings } from '../packet-source.ts';

/** What the gate says of one packet (PacketBatch.appGate). */
const AppMark = AppGateMark;
type AppMark = (typeof AppGateMark)[keyof typeof AppGateMark];

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

export class AppCheck {
  private readonly held: RecordRing;
  private readonly verdictRing: RecordRing;
  private readonly counters: Int32Array;
  private readonly verdicts = new Map<string, number>();
  /** 16-byte forms of the reflect addresses with an apps list. */
  private restricted = new Set<string>();
  private readonly parsed = new ParsedPacket();
  private readonly key = new Uint8Array(FLOW_KEY_BYTES);
  private readonly dst = new Uint8Array(16);

  constructor(rings: AppGateRings) {
    this.held = new RecordRing(rings.held);
    this.verdictRing = new RecordRing(rings.verdicts);
    this.counters = new Int32Array(rings.counters);
  }

  /** Whether any address has an apps list (when none, the source never asks). */
  get active(): boolean {
    return this.restricted.size > 0;
  }

  configure(cfg: InterceptConfig): void {
    const listed = allowListsOf(cfg).filter((a) => a.apps && cfg.reflectAddresses.includes(a.address));
    this.restricted = new Set(listed.map((a) => addressKey(a.address)));
  }

  /** Take the verdicts the main thread has sent. Before a batch is decided. */
  drainVerdicts(): void {
    for (let r = this.verdictRing.read(); r !== null; r = this.verdictRing.read()) {
      const key = Buffer.from(r.buffer, r.byteOffset, FLOW_KEY_BYTES).toString('latin1');
      const verdict = r[FLOW_KEY_BYTES];
      this.verdicts.delete(key);
      if (verdict === 0) continue; // forgotten
      this.verdicts.set(key, verdict);
      if (this.verdicts.size > APP_FLOWS_KEPT.DEFAULT) {
        this.verdicts.delete(this.verdicts.keys().next().value as string); // the oldest
      }
    }
  }

  /** The mark of an outbound packet `buf[off, off+len)` whose WINDIVERT_ADDRESS is `addrs[base, base+80)`. */
  mark(buf: Buffer, off: number, len: number, addrs: Buffer, base: number): AppMark {
    const p = this.parsed;
    if (!parsePacket(buf, off, len, p)) return AppMark.Decide; // the data plane counts it as malformed
    mappedAddress(buf, p.dstOffset, p.family === 6, this.dst, 0);
    if (!this.restricted.has(Buffer.from(this.dst.buffer, 0, 16).toString('latin1'))) return AppMark.Decide;
    const proto = p.protocol;
    if (proto === IpProto.Icmp || proto === IpProto.Icmpv6) return AppMark.Decide;
    if (proto !== IpProto.Tcp && proto !== IpProto.Udp) return AppMark.Refuse;
    if (!p.hasTransport) return AppMark.Decide; // a later fragment: its first fragment was decided
    const opens = proto === IpProto.Udp || (p.tcpFlags & (TcpFlag.Syn | TcpFlag.Ack)) === TcpFlag.Syn;
    // A refused flow stays refused until the main thread sends another verdict (a connect event that came late).
    const own = this.verdicts.get(packetFlowKey(buf, p, false, this.key));
    if (own !== undefined) return own === FlowVerdict.Allowed ? AppMark.Decide : AppMark.Refuse;
    if (this.verdicts.get(packetFlowKey(buf, p, true, this.key)) === FlowVerdict.Allowed) return AppMark.Decide;
    if (!opens) return AppMark.Refuse;
    const addr = addrs.subarray(base, base + WINDIVERT_ADDRESS_SIZE);
    if (this.held.write(addr, buf.subarray(off, off + len))) return AppMark.Held;
    Atomics.add(this.counters, WorkerCounter.RingFull, 1);
    return AppMark.Refuse;
  }
}
