/**
 * `Dataplane`: the per-packet decision every backend's worker loop calls — reflect, pass or drop — plus counting.
 * Hot path: `outbound` and `inbound` allocate nothing and never throw (the packet core reports malformed packets by
 * code). `configure` runs only when the config changes and may allocate.
 */
import { DropCause, Verdict } from '../packet/verdicts.ts';
import { ReflectAddressSet, type ReflectAddressEntry } from '../packet/address-set.ts';
import { hasAddresses, IpProto, ParsedPacket, parsePacket } from '../packet/parse.ts';
import { reflectPacket } from '../packet/reflect.ts';
import { ShieldPortSet, type ShieldPortEntry } from '../packet/shield-set.ts';
import { StatsProto, type EngineCounters } from './counters.ts';
import { AllowDecision, nextDecisionEpoch, type FlowTable } from './flow-table.ts';
import { MAP_REFUSED, PortMapper } from './port-mapper.ts';
import type { PortMap } from '../config/port-maps.ts';
import { AllowedPortSet, type AllowedPortEntry } from '../packet/allowed-ports.ts';
import { REFUSAL_MAX_BYTES, writePortUnreachable, writeTcpReset } from '../packet/refusal.ts';
import { AppGateMark, type MappedFlowCache, type OutboundGate } from '../packet-sources/packet-source.ts';
import { MAX_REFLECT_ADDRESSES } from '../config/intercept-config.ts';
import { ErrorCode, RetroflectError } from '../errors.ts';

export interface DataplaneConfig {
  /** Canonical address → counter slot (0 .. MAX_REFLECT_ADDRESSES - 1). */
  reflect: ReflectAddressEntry[];
  /** Shield port → counter slot (0 .. MAX_SHIELD_PORTS - 1). */
  shield: ShieldPortEntry[];
  /** Port maps of reflect addresses in `reflect` (absent: none). */
  portMaps?: PortMap[];
  /** Allowed ports of the addresses that have a port list (absent or no entry for a slot: every port). */
  allowedPorts?: AllowedPortEntry[];
  /** Slots of the addresses with an apps list: the `gate` is asked only about packets to these (absent: none). */
  appGateSlots?: number[];
}

/** Stats protocol of an IP protocol number (ICMPv6 counts as icmp). */
function statsProto(proto: number): StatsProto {
  if (proto === IpProto.Tcp) return StatsProto.Tcp;
  if (proto === IpProto.Udp) return StatsProto.Udp;
  if (proto === IpProto.Icmp || proto === IpProto.Icmpv6) return StatsProto.Icmp;
  return StatsProto.Other;
}

export class Dataplane {
  /** The parse of the packet decided last (the capture tap reads it right after outbound/inbound). */
  readonly packet = new ParsedPacket();
  /** A DropCause, meaningful right after outbound/inbound returned Verdict.Drop. */
  dropCause = 0;
  /**
   * The refusal (packet/refusal.ts) for the packet just dropped as not allowed, in `refusal[0, refusalLength)`; 0 =
   * none. The worker injects it inbound and sets the length back to 0.
   */
  readonly refusal = new Uint8Array(REFUSAL_MAX_BYTES);
  refusalLength = 0;
  /**
   * The backend's "who" check (PacketSource.outboundGate), asked with this parse for every packet `outbound` is
   * given a batch index for that goes to an address of `appGateSlots`; null: none. The worker sets it before each
   * batch.
   */
  gate: OutboundGate | null = null;
  /** 1 = the slot's address has an apps list (DataplaneConfig.appGateSlots): ask the `gate`. */
  private readonly gated = new Uint8Array(MAX_REFLECT_ADDRESSES);
  /**
   * The epoch of the allow decisions the flow table keeps (flow-table.ts AllowDecision): a new one on every configure
   * and whenever the gate's answers may have changed (another gate, or its `generation` moved).
   */
  private epoch = 1;
  private gateSeen: OutboundGate | null = null;
  private gateGeneration = 0;
  private readonly allowed = new AllowedPortSet();
  private readonly addresses = new ReflectAddressSet();
  private readonly shields = new ShieldPortSet();
  private readonly mapper: PortMapper;
  /** The config last applied, to tell which slots are new (their counters start from zero). */
  private current: DataplaneConfig = { reflect: [], shield: [] };

  constructor(
    private readonly counters: EngineCounters,
    private readonly flows: FlowTable,
    mapper?: PortMapper,
  ) {
    this.mapper = mapper ?? new PortMapper();
  }

  /**
   * Configure the decisions. A slot is "new" unless the previous config had the same slot for the same address (or
   * port and protocol); new slots have their counters zeroed, so a slot the engine reuses for another address starts
   * at 0.
   * Throws RetroflectError on a bad entry and then changes nothing.
   */
  configure(cfg: DataplaneConfig): void {
    const nextAddresses = new ReflectAddressSet();
    nextAddresses.replace(cfg.reflect); // validates
    const gated = cfg.appGateSlots ?? [];
    for (const slot of gated) {
      if (!Number.isInteger(slot) || slot < 0 || slot >= MAX_REFLECT_ADDRESSES) {
        throw new RetroflectError(ErrorCode.INTERNAL, `App gate slot ${slot} is out of range.`, { details: { slot } });
      }
    }
    this.shields.replace(cfg.shield); // validates before changing anything
    this.addresses.replace(cfg.reflect);
    this.mapper.configure(cfg.portMaps ?? [], new Map(cfg.reflect.map((e) => [e.address, e.slot])));
    this.allowed.replace(cfg.allowedPorts ?? []);
    this.gated.fill(0);
    for (const slot of gated) this.gated[slot] = 1;
    this.epoch = nextDecisionEpoch(this.epoch); // every running flow is decided again under the new lists and maps
    const prevAddress = new Map(this.current.reflect.map((e) => [e.slot, e.address]));
    const prevShield = new Map(this.current.shield.map((e) => [e.slot, `${e.port}/${e.protocol}`]));
    for (const e of cfg.reflect) if (prevAddress.get(e.slot) !== e.address) this.counters.zeroAddressSlot(e.slot);
    for (const e of cfg.shield) {
      if (prevShield.get(e.slot) !== `${e.port}/${e.protocol}`) this.counters.zeroShieldSlot(e.slot);
    }
    this.current = {
      reflect: cfg.reflect.map((e) => ({ address: e.address, slot: e.slot })),
      shield: cfg.shield.map((e) => ({ port: e.port, protocol: e.protocol, slot: e.slot })),
    };
  }

  /** A packet this host sends. To a reflect address its allow lists refuse → count, write the refusal, Drop
   *  (DropCause.NotAllowed). To a reflect address → apply its port maps (engine/port-mapper.ts), swap addresses
   *  in place, count, Reflect. Else Pass. Malformed → count by reason, Drop. Bytes counted are the IP packet's own
   *  length. `partialChecksum` 1: the TCP/UDP checksum field is offloaded (PacketBatch.partialChecksum).
   *  `index` ≥ 0: the packet's place in the batch, so for an address with an apps list the `gate` is asked first
   *  (before the port list): held → Drop, not counted (it comes back decided); refused → refused as a port that is
   *  not allowed. */
  outbound(buf: Uint8Array, off: number, len: number, now: number, partialChecksum = 0, index = -1): Verdict {
    const p = this.packet;
    if (!parsePacket(buf, off, len, p)) {
      this.counters.addMalformed(p.malformed);
      this.dropCause = DropCause.Malformed;
      return Verdict.Drop;
    }
    const slot = this.addresses.lookupDestination(buf, p);
    if (slot < 0) {
      this.counters.addPassed(p.ipLength);
      return Verdict.Pass;
    }
    const gated = this.gated[slot] === 1;
    const restricted = this.allowed.restricted[slot] === 1;
    let decision: AllowDecision = AllowDecision.Ignore;
    if (gated || restricted) {
      const gate = gated && index >= 0 ? this.gate : null;
      if (gate !== null && (gate !== this.gateSeen || gate.generation !== this.gateGeneration)) {
        this.gateSeen = gate; // its answers may have changed: the decisions kept so far are stale
        this.gateGeneration = gate.generation;
        this.epoch = nextDecisionEpoch(this.epoch);
      }
      // A TCP/UDP flow's entry in the flow table remembers that its direction was allowed in this epoch, so the
      // packets of a running allowed flow skip the gate and the bitsets: counted there, then reflected. Not when the
      // gate applies but is not asked (no batch index, no gate). Not for an address with port maps: its packets are
      // checked with the ports the client used and recorded with the ones the server sees, so there the checks run
      // per packet (mapping costs far more than they do).
      const proto = p.protocol;
      if ((!gated || gate !== null) && this.mapper.active[slot] === 0 && p.hasTransport &&
        (proto === IpProto.Tcp || proto === IpProto.Udp)) {
        if (this.flows.record(buf, p, p.ipLength, now, 0, AllowDecision.Require, this.epoch)) {
          return this.reflect(buf, slot);
        }
        decision = AllowDecision.Remember;
      }
      if (gate !== null) {
        const mark = gate.mark(index, buf, off, len, p);
        if (mark === AppGateMark.Held) return Verdict.Drop;
        if (mark === AppGateMark.Refuse) return this.refuse(buf, slot);
        if (mark !== AppGateMark.Allowed) decision = AllowDecision.Ignore; // no verdict of the gate's to keep
      }
      if (restricted && !(p.fragment && !p.hasTransport) && !this.allows(slot)) return this.refuse(buf, slot);
    }
    let mappedFrom = 0;
    if (this.mapper.active[slot] === 1 && p.hasTransport) {
      const proto = p.protocol;
      if (proto === IpProto.Tcp || proto === IpProto.Udp) {
        mappedFrom = this.mapper.outbound(buf, p, slot, partialChecksum === 1, now);
        if (mappedFrom === MAP_REFUSED) {
          this.counters.addPortMapRefused();
          return Verdict.Drop;
        }
      } else if (p.icmpError) {
        this.mapper.icmpError(buf, p, slot, now);
      }
    }
    this.flows.record(buf, p, p.ipLength, now, mappedFrom, decision, this.epoch);
    return this.reflect(buf, slot);
  }

  /** Reflect the packet just parsed and recorded (in place), count it for `slot`. */
  private reflect(buf: Uint8Array, slot: number): Verdict {
    const p = this.packet;
    reflectPacket(buf, p);
    this.counters.addReflected(slot, statsProto(p.protocol), p.ipLength);
    return Verdict.Reflect;
  }

  /** Let a kernel data path rewrite answered mapped flows itself (PacketSource.mappedFlowCache; null: none). */
  useMappedFlowCache(cache: MappedFlowCache | null): void {
    this.mapper.useCache(cache);
  }

  /** Periodic upkeep off the hot path: take idle mapped flows back from the kernel cache (PortMapper.sweep). */
  sweep(now: number): void {
    this.mapper.sweep(now);
  }

  /** Count the packet just parsed as not allowed for `slot`, write its refusal, Drop. */
  private refuse(buf: Uint8Array, slot: number): Verdict {
    const p = this.packet;
    this.counters.addNotAllowed(slot, p.ipLength);
    this.dropCause = DropCause.NotAllowed;
    const proto = p.protocol;
    this.refusalLength = proto === IpProto.Tcp
      ? writeTcpReset(buf, p, this.refusal)
      : proto === IpProto.Udp ? writePortUnreachable(buf, p, this.refusal) : 0;
    return Verdict.Drop;
  }

  /**
   * Whether the allow list of a restricted slot lets the packet just parsed through: TCP and UDP by port
   * (packet/allowed-ports.ts), ICMP always (echo and errors name no port; errors belong to flows already allowed),
   * any other protocol never. Not asked for later fragments (they carry no ports; without their first fragment,
   * refused, they never reassemble).
   */
  private allows(slot: number): boolean {
    const p = this.packet;
    const proto = p.protocol;
    if (proto === IpProto.Icmp || proto === IpProto.Icmpv6) return true;
    return p.hasTransport && this.allowed.allows(slot, proto, p.srcPort, p.dstPort, p.tcpFlags);
  }

  /**
   * A packet arriving at this host. Decided in this order:
   *  - its source is a reflect address and it came from the network (`injected` 0) → forged (no other host can send
   *    from an address while it is reflected): count, Drop — malformed or not, as long as the IP header was read;
   *  - its source is a reflect address and another driver on this host injected it (`injected` 1: WinDivert's
   *    Impostor flag) → it is one of our reflected packets that a driver below us took and re-injected (a forged
   *    packet comes from the network, never from a driver): count as passed, Pass, unshielded like every reflected
   *    packet (reflection exists to reach shielded servers);
   *  - malformed → count by reason, Drop (fail closed: a packet the parser cannot read might be to a shielded port
   *    the capture filter saw; the stack would discard it anyway);
   *  - TCP/UDP with a transport header (unfragmented or first fragment) to a shielded port → count, Drop. Later
   *    fragments cannot be matched to a port and pass;
   *  - anything else → Pass.
   */
  inbound(buf: Uint8Array, off: number, len: number, _now: number, injected = 0): Verdict {
    const p = this.packet;
    const wellFormed = parsePacket(buf, off, len, p);
    if (hasAddresses(p) && this.addresses.lookupSource(buf, p) >= 0) {
      if (injected === 0) {
        this.counters.addForgedSource(p.ipLength);
        this.dropCause = DropCause.ForgedSource;
        return Verdict.Drop;
      }
      if (wellFormed) {
        this.counters.addPassed(p.ipLength);
        return Verdict.Pass;
      }
    }
    if (!wellFormed) {
      this.counters.addMalformed(p.malformed);
      this.dropCause = DropCause.Malformed;
      return Verdict.Drop;
    }
    if (p.hasTransport) {
      const proto = p.protocol;
      const slot = proto === IpProto.Tcp
        ? this.shields.tcp[p.dstPort]
        : proto === IpProto.Udp ? this.shields.udp[p.dstPort] : -1;
      if (slot >= 0) {
        this.counters.addShieldDropped(slot, p.ipLength);
        this.dropCause = DropCause.ShieldPort;
        return Verdict.Drop;
      }
    }
    this.counters.addPassed(p.ipLength);
    return Verdict.Pass;
  }
}
