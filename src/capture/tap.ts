/**
 * The packet worker's capture tap: after the data plane decided a packet, copy it into the ring of every capture
 * whose filter matches. When no capture is active the worker loop skips the tap entirely (one integer test per
 * batch), so capture costs nothing while it is off. With captures active: no allocation for snap lengths up to
 * 256 bytes, one typed-array view per longer packet, and never a wait (a full ring counts a drop).
 */
import { CaptureVerdict, DropCause, Verdict } from '../packet/verdicts.ts';
import { IpProto, type ParsedPacket } from '../packet/parse.ts';
import { type CaptureSpec } from './filter.ts';
import { RECORD_HEADER_BYTES, RecordFlag, recordBytes } from './record.ts';
import { RingWriter } from './ring.ts';

interface Tap {
  id: number;
  ring: RingWriter;
  snaplen: number;
  addresses: Uint8Array[];
  ports: number[];
  verdictMask: number;
  protocolMask: number;
}

/** Copy loops below this length beat a subarray + set (which allocates a view). */
const SMALL_COPY = 256;

/** The verdict bits (CaptureSpec.verdictMask) of packets a host firewall drops before the data plane sees them. */
const SHIELD_DROP_BIT = 1 << CaptureVerdict.ShieldDropped;
const FORGED_DROP_BIT = 1 << CaptureVerdict.ForgedSourceDropped;
/** Protocol bits (CaptureSpec.protocolMask) a shield rule can drop: it names TCP and UDP ports only. */
const SHIELDED_PROTOCOL_BITS = 1 | 2;

/**
 * Whether a capture with this filter could match a packet the host firewall drops (TUN: the nft shield and
 * forged-source rules, seen only through NFLOG). Addresses and ports cannot rule one out (a forged packet may carry
 * any port, a shielded one comes from any peer); the verdict list can, and the protocol list for shield drops.
 */
export function couldMatchFirewallDrop(spec: Pick<CaptureSpec, 'verdictMask' | 'protocolMask'>): boolean {
  const wants = (bit: number): boolean => spec.verdictMask === 0 || (spec.verdictMask & bit) !== 0;
  const shieldProtocol = spec.protocolMask === 0 || (spec.protocolMask & SHIELDED_PROTOCOL_BITS) !== 0;
  return wants(FORGED_DROP_BIT) || (wants(SHIELD_DROP_BIT) && shieldProtocol);
}

export class CaptureTaps {
  private taps: Tap[] = [];
  /** Number of active captures; the worker loop tests this once per batch. */
  count = 0;
  /** Whether some active capture could match a firewall drop: only then does the worker listen for them. */
  wantsFirewallDrops = false;

  /** Replace the set of captures (rings of captures that stay are kept: their positions live in shared memory). */
  update(specs: readonly CaptureSpec[]): void {
    const old = new Map(this.taps.map((t) => [t.id, t]));
    this.taps = specs.map((s) => ({
      id: s.id,
      ring: old.get(s.id)?.ring ?? new RingWriter(s.buffer),
      snaplen: s.snaplen,
      addresses: s.addresses,
      ports: s.ports,
      verdictMask: s.verdictMask,
      protocolMask: s.protocolMask,
    }));
    this.count = this.taps.length;
    this.wantsFirewallDrops = specs.some(couldMatchFirewallDrop);
  }

  /** Count `n` records every capture missed (the backend lost them before the tap could see them). */
  countDropped(n: number): void {
    for (const t of this.taps) t.ring.countDropped(n);
  }

  /**
   * Offer one decided packet, which left through or arrived on interface `ifIndex` (PacketBatch.ifIndex).
   * `p` is the data plane's parse of it (addresses already swapped when reflected),
   * `decision` the data plane's Verdict, `dropCause` its DropCause when that is Drop, `time` ms since the epoch.
   * `wireLen`: the packet's whole length when `len` bytes are only its start (a kernel copy cut at a snap length).
   */
  offer(buf: Uint8Array, off: number, len: number, outbound: boolean, ifIndex: number, decision: number, dropCause: number, p: ParsedPacket, time: number, wireLen = len): void {
    const malformed = p.malformed;
    // A drop has one cause. The data plane drops every malformed packet, both ways; a malformed packet that was
    // still sent on would show as malformed too.
    const verdict = decision === Verdict.Drop
      ? dropCause === DropCause.ForgedSource
        ? CaptureVerdict.ForgedSourceDropped
        : dropCause === DropCause.ShieldPort
          ? CaptureVerdict.ShieldDropped
          : dropCause === DropCause.NotAllowed
            ? CaptureVerdict.NotAllowed
            : CaptureVerdict.Malformed
      : malformed !== 0
        ? CaptureVerdict.Malformed
        : decision === Verdict.Reflect
          ? CaptureVerdict.Reflected
          : CaptureVerdict.Passed;
    const proto = p.protocol;
    const protoBit = proto === IpProto.Tcp ? 1 : proto === IpProto.Udp ? 2 : proto === IpProto.Icmp || proto === IpProto.Icmpv6 ? 4 : 8;
    for (let i = 0; i < this.taps.length; i++) {
      const t = this.taps[i];
      if (!matches(t, buf, verdict, protoBit, p)) continue;
      const captured = len < t.snaplen ? len : t.snaplen;
      const ring = t.ring;
      const at = ring.reserve(captured);
      if (at < 0) continue;
      const v = ring.view;
      v.setUint32(at, recordBytes(captured), true);
      v.setUint32(at + 4, wireLen, true);
      v.setUint32(at + 8, captured, true);
      const bytes = ring.bytes;
      bytes[at + 12] = outbound ? 1 : 0;
      bytes[at + 13] = verdict;
      bytes[at + 14] = malformed;
      bytes[at + 15] = decision === Verdict.Reflect && malformed === 0 ? RecordFlag.Reflected : 0;
      v.setFloat64(at + 16, time, true);
      v.setUint32(at + 24, ifIndex, true);
      v.setUint32(at + 28, 0, true);
      const dst = at + RECORD_HEADER_BYTES;
      if (captured <= SMALL_COPY) {
        for (let k = 0; k < captured; k++) bytes[dst + k] = buf[off + k];
      } else {
        bytes.set(buf.subarray(off, off + captured), dst);
      }
      ring.commit();
    }
  }
}

function matches(t: Tap, buf: Uint8Array, verdict: number, protoBit: number, p: ParsedPacket): boolean {
  if (t.verdictMask !== 0 && (t.verdictMask & (1 << verdict)) === 0) return false;
  if (verdict === CaptureVerdict.Malformed) {
    // Addresses and ports of a malformed packet cannot be trusted: only an explicit 'malformed' or an open filter.
    return t.verdictMask !== 0 || (t.addresses.length === 0 && t.ports.length === 0 && t.protocolMask === 0);
  }
  if (t.protocolMask !== 0 && (t.protocolMask & protoBit) === 0) return false;
  if (t.ports.length !== 0) {
    if (!p.hasTransport || (protoBit !== 1 && protoBit !== 2)) return false;
    let hit = false;
    for (let i = 0; i < t.ports.length; i++) {
      if (t.ports[i] === p.srcPort || t.ports[i] === p.dstPort) {
        hit = true;
        break;
      }
    }
    if (!hit) return false;
  }
  if (t.addresses.length !== 0) {
    let hit = false;
    for (let i = 0; i < t.addresses.length && !hit; i++) {
      const a = t.addresses[i];
      if (a.length !== p.addressLength) continue;
      hit = equalAt(buf, p.srcOffset, a) || equalAt(buf, p.dstOffset, a);
    }
    if (!hit) return false;
  }
  return true;
}

function equalAt(buf: Uint8Array, at: number, a: Uint8Array): boolean {
  for (let i = 0; i < a.length; i++) if (buf[at + i] !== a[i]) return false;
  return true;
}
