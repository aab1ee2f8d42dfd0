/**
 * `EngineCounters`: every data-plane counter, as float64 cells in one SharedArrayBuffer. The worker thread is the
 * only writer (plain `+=`, no Atomics: a single writer cannot lose updates, and an aligned float64 store is not torn
 * on the platforms Node runs on); the main thread only reads, via `snapshot()`. Float64 keeps counts exact up to
 * 2^53, the same range as the JSON numbers they end up in.
 *
 * Layout (index = cell number in the Float64Array):
 *
 *   [0, GLOBAL_CELLS)                        global counters, see `Cell` below
 *   ADDRESS_BASE + slot*10 + proto*2 + {0,1} per reflect-address slot (MAX_REFLECT_ADDRESSES) × StatsProto
 *                                            (tcp, udp, icmp, other): packets, bytes reflected
 *   ADDRESS_BASE + slot*10 + 8 + {0,1}       per slot: packets, bytes refused as not allowed (allow lists)
 *   SHIELD_BASE + slot*2 + {0,1}             per shield slot (MAX_SHIELD_PORTS): packets, bytes dropped
 *
 * Slots are assigned by the engine; `Dataplane.configure` (in the worker, so still a single writer) zeroes slots
 * that are new in a config.
 */
import { MAX_REFLECT_ADDRESSES, MAX_SHIELD_PORTS } from '../config/intercept-config.ts';
import { MALFORMED_REASONS, type MalformedCode, type MalformedReason } from '../packet/parse.ts';
import type { PacketByteCount, StatsProtocol } from './types.ts';

/** Global cells. Malformed counts follow at MALFORMED_BASE + code - 1 (MalformedCode order). */
const Cell = {
  ReflectedPackets: 0,
  ReflectedBytes: 1,
  PassedPackets: 2,
  PassedBytes: 3,
  ShieldDroppedPackets: 4,
  ShieldDroppedBytes: 5,
  ReceiveErrors: 6,
  SendErrors: 7,
  MalformedBase: 8,
  // MalformedBase + 0 .. 5: one per MalformedCode.
  ForgedSourcePackets: 14,
  ForgedSourceBytes: 15,
  /** Expected (documented, harmless) re-injection failures. */
  SendHostUnreachable: 16,
  SendIcmpRefused: 17,
  /** Packets opening a mapped flow dropped because the mapped-flow table had no room (engine/port-mapper.ts). */
  PortMapRefused: 18,
  /** Packets to a reflect address refused by its allow lists (in the data plane: ports). */
  NotAllowedPackets: 19,
  NotAllowedBytes: 20,
} as const;
/** Room for the global cells (8 named + 6 malformed reasons + 5 named, padded). */
const GLOBAL_CELLS = 24;

/** Protocol index used by the per-address counters (ICMPv6 counts as icmp). */
export const StatsProto = { Tcp: 0, Udp: 1, Icmp: 2, Other: 3 } as const;
export type StatsProto = (typeof StatsProto)[keyof typeof StatsProto];
export const STATS_PROTOCOLS: readonly StatsProtocol[] = ['tcp', 'udp', 'icmp', 'other'];

/** Reflected packets and bytes per protocol, then not-allowed packets and bytes. */
const NOT_ALLOWED_AT = STATS_PROTOCOLS.length * 2;
const CELLS_PER_ADDRESS = NOT_ALLOWED_AT + 2;
const ADDRESS_BASE = GLOBAL_CELLS;
const SHIELD_BASE = ADDRESS_BASE + MAX_REFLECT_ADDRESSES * CELLS_PER_ADDRESS;
const TOTAL_CELLS = SHIELD_BASE + MAX_SHIELD_PORTS * 2;

/** Size of the shared buffer `EngineCounters` needs. */
export const COUNTERS_BYTES = TOTAL_CELLS * Float64Array.BYTES_PER_ELEMENT;

export interface AddressSlotCounts extends PacketByteCount {
  byProtocol: Record<StatsProtocol, PacketByteCount>;
  notAllowed: PacketByteCount;
}

/** Plain numbers copied out of shared memory at one moment (per slot, not yet mapped to addresses/ports). */
export interface CountersSnapshot {
  reflected: PacketByteCount;
  passed: PacketByteCount;
  shieldDropped: PacketByteCount;
  forgedSourceDropped: PacketByteCount;
  malformed: { total: number; byReason: Record<MalformedReason, number> };
  errors: { receive: number; send: number; sendExpected: { hostUnreachable: number; icmpRefused: number } };
  portMapRefused: number;
  notAllowed: PacketByteCount;
  /** Index = reflect-address slot. */
  addressSlots: AddressSlotCounts[];
  /** Index = shield slot. */
  shieldSlots: PacketByteCount[];
}

export class EngineCounters {
  readonly buffer: SharedArrayBuffer;
  private readonly cells: Float64Array;

  /** Pass the buffer another thread created to share its counters; omit it to create a zeroed one. */
  constructor(buffer?: SharedArrayBuffer) {
    this.buffer = buffer ?? new SharedArrayBuffer(COUNTERS_BYTES);
    if (this.buffer.byteLength < COUNTERS_BYTES) {
      const got = this.buffer.byteLength;
      throw new RangeError(`EngineCounters needs a SharedArrayBuffer of ${COUNTERS_BYTES} bytes, got ${got}`);
    }
    this.cells = new Float64Array(this.buffer, 0, TOTAL_CELLS);
  }

  // ---- worker side (hot path: no allocation) ----

  addReflected(slot: number, proto: StatsProto, bytes: number): void {
    const c = this.cells;
    c[Cell.ReflectedPackets] += 1;
    c[Cell.ReflectedBytes] += bytes;
    const at = ADDRESS_BASE + slot * CELLS_PER_ADDRESS + proto * 2;
    c[at] += 1;
    c[at + 1] += bytes;
  }

  /** A packet to the reflect address of `slot` that its allow lists refuse. */
  addNotAllowed(slot: number, bytes: number): void {
    const c = this.cells;
    c[Cell.NotAllowedPackets] += 1;
    c[Cell.NotAllowedBytes] += bytes;
    const at = ADDRESS_BASE + slot * CELLS_PER_ADDRESS + NOT_ALLOWED_AT;
    c[at] += 1;
    c[at + 1] += bytes;
  }

  addPassed(bytes: number): void {
    this.cells[Cell.PassedPackets] += 1;
    this.cells[Cell.PassedBytes] += bytes;
  }

  addShieldDropped(slot: number, bytes: number): void {
    const c = this.cells;
    c[Cell.ShieldDroppedPackets] += 1;
    c[Cell.ShieldDroppedBytes] += bytes;
    c[SHIELD_BASE + slot * 2] += 1;
    c[SHIELD_BASE + slot * 2 + 1] += bytes;
  }

  /** An inbound packet from another host whose source is a reflect address (forged), dropped. */
  addForgedSource(bytes: number): void {
    this.cells[Cell.ForgedSourcePackets] += 1;
    this.cells[Cell.ForgedSourceBytes] += bytes;
  }

  /** `code` is a non-zero MalformedCode. */
  addMalformed(code: MalformedCode): void {
    this.cells[Cell.MalformedBase + code - 1] += 1;
  }

  /** A packet opening a mapped flow was dropped: no room in the mapped-flow table. */
  addPortMapRefused(): void {
    this.cells[Cell.PortMapRefused] += 1;
  }

  /** A receive from the packet source failed (and the loop carried on). */
  addReceiveError(): void {
    this.cells[Cell.ReceiveErrors] += 1;
  }

  /** Re-injecting a packet failed unexpectedly (and the loop carried on). */
  addSendError(): void {
    this.cells[Cell.SendErrors] += 1;
  }

  /** Re-injecting a packet failed in a way the backend documents as harmless (not an alarm). */
  addExpectedSendFailure(kind: 'hostUnreachable' | 'icmpRefused'): void {
    this.cells[kind === 'hostUnreachable' ? Cell.SendHostUnreachable : Cell.SendIcmpRefused] += 1;
  }

  zeroAddressSlot(slot: number): void {
    const at = ADDRESS_BASE + slot * CELLS_PER_ADDRESS;
    this.cells.fill(0, at, at + CELLS_PER_ADDRESS);
  }

  zeroShieldSlot(slot: number): void {
    this.cells.fill(0, SHIELD_BASE + slot * 2, SHIELD_BASE + slot * 2 + 2);
  }

  // ---- main-thread side ----

  snapshot(): CountersSnapshot {
    const c = this.cells.slice();
    const byReason = {} as Record<MalformedReason, number>;
    let total = 0;
    MALFORMED_REASONS.forEach((reason, i) => {
      byReason[reason] = c[Cell.MalformedBase + i];
      total += c[Cell.MalformedBase + i];
    });
    const addressSlots: AddressSlotCounts[] = [];
    for (let slot = 0; slot < MAX_REFLECT_ADDRESSES; slot++) {
      const byProtocol = {} as Record<StatsProtocol, PacketByteCount>;
      let packets = 0;
      let bytes = 0;
      STATS_PROTOCOLS.forEach((name, proto) => {
        const at = ADDRESS_BASE + slot * CELLS_PER_ADDRESS + proto * 2;
        byProtocol[name] = { packets: c[at], bytes: c[at + 1] };
        packets += c[at];
        bytes += c[at + 1];
      });
      const na = ADDRESS_BASE + slot * CELLS_PER_ADDRESS + NOT_ALLOWED_AT;
      addressSlots.push({ packets, bytes, byProtocol, notAllowed: { packets: c[na], bytes: c[na + 1] } });
    }
    const shieldSlots: PacketByteCount[] = [];
    for (let slot = 0; slot < MAX_SHIELD_PORTS; slot++) {
      shieldSlots.push({ packets: c[SHIELD_BASE + slot * 2], bytes: c[SHIELD_BASE + slot * 2 + 1] });
    }
    return {
      reflected: { packets: c[Cell.ReflectedPackets], bytes: c[Cell.ReflectedBytes] },
      passed: { packets: c[Cell.PassedPackets], bytes: c[Cell.PassedBytes] },
      shieldDropped: { packets: c[Cell.ShieldDroppedPackets], bytes: c[Cell.ShieldDroppedBytes] },
      forgedSourceDropped: { packets: c[Cell.ForgedSourcePackets], bytes: c[Cell.ForgedSourceBytes] },
      malformed: { total, byReason },
      errors: {
        receive: c[Cell.ReceiveErrors],
        send: c[Cell.SendErrors],
        sendExpected: { hostUnreachable: c[Cell.SendHostUnreachable], icmpRefused: c[Cell.SendIcmpRefused] },
      },
      portMapRefused: c[Cell.PortMapRefused],
      notAllowed: { packets: c[Cell.NotAllowedPackets], bytes: c[Cell.NotAllowedBytes] },
      addressSlots,
      shieldSlots,
    };
  }
}
