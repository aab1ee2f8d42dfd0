/**
 * What one captured packet means, as `retroflect trace`, `trace --json` and PowerShell's Watch-ReflectTraffic show
 * it: time, direction, verdict (with the malformed reason), protocol, addresses and ports before and after
 * reflection, length, TCP flags. Also the pcapng comment text, so the file and the live view say the same.
 */
import type { MalformedReason } from '../packet/parse.ts';
import { IpProto, ParsedPacket, parsePacket, TcpFlag } from '../packet/parse.ts';
import type { CaptureVerdictName } from '../packet/verdicts.ts';
import type { CaptureRecord } from './record.ts';

export type SummaryProtocol = 'tcp' | 'udp' | 'icmp' | 'icmpv6' | 'other';

export interface Endpoints {
  source: string | null;
  sourcePort: number | null;
  destination: string | null;
  destinationPort: number | null;
}

export interface PacketSummary {
  /** ISO 8601 UTC with microseconds. */
  time: string;
  direction: 'outbound' | 'inbound';
  /** The interface it left through or arrived on, as the backend names it ("rflct0", "eth0"; WinDivert: "if12"). */
  interface: string;
  verdict: CaptureVerdictName;
  malformedReason: MalformedReason | null;
  protocol: SummaryProtocol | null;
  /** The packet as this host sent it / as it arrived. */
  before: Endpoints;
  /** The packet as the engine sent it on (the same as before unless reflected; null-filled when dropped). */
  after: Endpoints;
  /** The IP packet's length. */
  length: number;
  capturedLength: number;
  /** e.g. "SYN,ACK"; null for other protocols. */
  tcpFlags: string | null;
  icmpType: number | null;
}

const scratch = new Uint8Array(65536);
/** Bytes of `scratch` past which it is all zeros (a cut packet parses against zeros, never an older packet's bytes). */
let scratchDirty = 0;
const parsed = new ParsedPacket();

function ipText(b: Uint8Array, at: number, len: number): string {
  if (len === 4) return `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;
  const words: number[] = [];
  for (let i = 0; i < 16; i += 2) words.push((b[at + i] << 8) | b[at + i + 1]);
  // RFC 5952: drop leading zeros, compress the longest run of two or more zero words.
  let bestAt = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen) {
      bestAt = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = words.map((w) => w.toString(16));
  if (bestAt < 0) return hex.join(':');
  return `${hex.slice(0, bestAt).join(':')}::${hex.slice(bestAt + bestLen).join(':')}`;
}

function flagsText(f: number): string {
  const names: string[] = [];
  if (f & TcpFlag.Syn) names.push('SYN');
  if (f & TcpFlag.Fin) names.push('FIN');
  if (f & TcpFlag.Rst) names.push('RST');
  if (f & TcpFlag.Psh) names.push('PSH');
  if (f & TcpFlag.Ack) names.push('ACK');
  return names.join(',');
}

/** "2026-11-28T05:00:00." of the second last formatted: packets come many per second, a Date each is the cost. */
let isoSecond = NaN;
let isoPrefix = '';

function isoMicros(ms: number): string {
  const second = Math.floor(ms / 1000);
  if (second !== isoSecond) {
    isoSecond = second;
    isoPrefix = new Date(second * 1000).toISOString().slice(0, 20);
  }
  const micros = Math.floor((ms - second * 1000) * 1000);
  return `${isoPrefix}${String(micros).padStart(6, '0')}Z`;
}

const NONE: Endpoints = { source: null, sourcePort: null, destination: null, destinationPort: null };

/** What `rec` means; `interfaceName` is the backend's name for its interface (`HostBackend.interfaceName`). */
export function summarize(rec: CaptureRecord, interfaceName: string): PacketSummary {
  // Parse as if the whole packet were there: the snap length cuts only payload, never the headers we read. What the
  // record lacks reads as zeros (only the bytes the previous record left are cleared).
  const captured = Math.min(rec.data.length, scratch.length);
  scratch.set(captured === rec.data.length ? rec.data : rec.data.subarray(0, captured));
  if (scratchDirty > captured) scratch.fill(0, captured, scratchDirty);
  scratchDirty = captured;
  if (!parsePacket(scratch, 0, Math.min(rec.originalLength, scratch.length), parsed)) {
    // Malformed: show what the fixed IP header says, if it is there at all.
    const v = rec.data[0] >> 4;
    const len = v === 4 && rec.data.length >= 20 ? 4 : v === 6 && rec.data.length >= 40 ? 16 : 0;
    const e: Endpoints = len === 0 ? NONE : {
      source: ipText(rec.data, len === 4 ? 12 : 8, len),
      sourcePort: null,
      destination: ipText(rec.data, len === 4 ? 16 : 24, len),
      destinationPort: null,
    };
    return summary(rec, interfaceName, null, e, NONE, rec.originalLength, null, null);
  }
  const p = parsed;
  const proto: SummaryProtocol = p.protocol === IpProto.Tcp ? 'tcp' : p.protocol === IpProto.Udp ? 'udp' : p.protocol === IpProto.Icmp ? 'icmp' : p.protocol === IpProto.Icmpv6 ? 'icmpv6' : 'other';
  const ports = p.hasTransport && (proto === 'tcp' || proto === 'udp');
  const source = ipText(scratch, p.srcOffset, p.addressLength);
  const destination = ipText(scratch, p.dstOffset, p.addressLength);
  const sourcePort = ports ? p.srcPort : null;
  const destinationPort = ports ? p.dstPort : null;
  const now: Endpoints = { source, sourcePort, destination, destinationPort };
  // The bytes are the packet as re-injected; a reflected packet had its addresses swapped (ports stay).
  const before: Endpoints = rec.reflected ? { source: destination, sourcePort, destination: source, destinationPort } : now;
  const dropped = rec.verdict !== 'reflected' && rec.verdict !== 'passed';
  const tcpFlags = proto === 'tcp' && p.hasTransport ? flagsText(p.tcpFlags) : null;
  const icmpType = (proto === 'icmp' || proto === 'icmpv6') && p.hasTransport ? p.icmpType : null;
  return summary(rec, interfaceName, proto, before, dropped ? NONE : now, p.ipLength, tcpFlags, icmpType);
}

/**
 * The summary object, every field spelled out: a spread (`{ ...common, protocol }`) takes V8's slow path and cost
 * ~7 µs of the ~8 a summary took (bench/README.md, capture).
 */
function summary(
  rec: CaptureRecord,
  interfaceName: string,
  protocol: SummaryProtocol | null,
  before: Endpoints,
  after: Endpoints,
  length: number,
  tcpFlags: string | null,
  icmpType: number | null,
): PacketSummary {
  return {
    time: isoMicros(rec.time),
    direction: rec.outbound ? 'outbound' : 'inbound',
    interface: interfaceName,
    verdict: rec.verdict,
    malformedReason: rec.malformedReason,
    protocol,
    before,
    after,
    length,
    capturedLength: rec.data.length,
    tcpFlags,
    icmpType,
  };
}

function endpointText(address: string | null, port: number | null): string {
  if (address === null) return '?';
  if (port === null) return address;
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

export function endpointsText(e: Endpoints): string {
  return `${endpointText(e.source, e.sourcePort)} > ${endpointText(e.destination, e.destinationPort)}`;
}

/** The pcapng packet comment: `verdict=reflected original=198.51.100.2:40000 > 192.0.2.1:8081`. */
export function packetComment(s: PacketSummary): string {
  const reason = s.malformedReason ? ` reason=${s.malformedReason}` : '';
  return `verdict=${s.verdict}${reason} original=${endpointsText(s.before)}`;
}
