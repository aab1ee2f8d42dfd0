/**
 * What one captured packet means, as `retroflect trace`, `trace --json` and PowerShell's Watch-ReflectTraffic show
 * it: time, direction, verdict (with the malformed reason), protocol, addresses and ports before and after
 * reflection, length, TCP flags. Also the pcapng comment text, so the file and the live view say the same.
 */
import type { MalformedReason } from '../packet/parse.ts';
import { IpProto, ParsedPacket, parsePacket, TcpFlag } from '../packet/parse.ts';
import type { CaptureRecord, CaptureVerdictName } from './record.ts';

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

function isoMicros(ms: number): string {
  const whole = Math.floor(ms);
  const micros = Math.floor((ms - whole) * 1000);
  return new Date(whole).toISOString().replace(/Z$/, `${String(micros).padStart(3, '0')}Z`);
}

const NONE: Endpoints = { source: null, sourcePort: null, destination: null, destinationPort: null };

/** What `rec` means; `interfaceName` is the backend's name for its interface (`HostBackend.interfaceName`). */
export function summarize(rec: CaptureRecord, interfaceName: string): PacketSummary {
  const base = {
    time: isoMicros(rec.time),
    direction: rec.outbound ? ('outbound' as const) : ('inbound' as const),
    interface: interfaceName,
    verdict: rec.verdict,
    malformedReason: rec.malformedReason,
    capturedLength: rec.data.length,
  };
  // Parse as if the whole packet were there: the snap length cuts only payload, never the headers we read.
  scratch.fill(0, 0, Math.min(rec.originalLength, scratch.length));
  scratch.set(rec.data.subarray(0, Math.min(rec.data.length, scratch.length)));
  const ok = parsePacket(scratch, 0, Math.min(rec.originalLength, scratch.length), parsed);
  if (!ok) {
    // Malformed: show what the fixed IP header says, if it is there at all.
    const v = rec.data[0] >> 4;
    const len = v === 4 && rec.data.length >= 20 ? 4 : v === 6 && rec.data.length >= 40 ? 16 : 0;
    const e: Endpoints = len === 0 ? NONE : {
      source: ipText(rec.data, len === 4 ? 12 : 8, len),
      sourcePort: null,
      destination: ipText(rec.data, len === 4 ? 16 : 24, len),
      destinationPort: null,
    };
    return { ...base, protocol: null, before: e, after: NONE, length: rec.originalLength, tcpFlags: null, icmpType: null };
  }
  const p = parsed;
  const proto: SummaryProtocol = p.protocol === IpProto.Tcp ? 'tcp' : p.protocol === IpProto.Udp ? 'udp' : p.protocol === IpProto.Icmp ? 'icmp' : p.protocol === IpProto.Icmpv6 ? 'icmpv6' : 'other';
  const ports = p.hasTransport && (proto === 'tcp' || proto === 'udp');
  const now: Endpoints = {
    source: ipText(scratch, p.srcOffset, p.addressLength),
    sourcePort: ports ? p.srcPort : null,
    destination: ipText(scratch, p.dstOffset, p.addressLength),
    destinationPort: ports ? p.dstPort : null,
  };
  // The bytes are the packet as re-injected; a reflected packet had its addresses swapped (ports stay).
  const before: Endpoints = rec.reflected ? { ...now, source: now.destination, destination: now.source } : now;
  const dropped = rec.verdict !== 'reflected' && rec.verdict !== 'passed';
  return {
    ...base,
    protocol: proto,
    before,
    after: dropped ? NONE : now,
    length: p.ipLength,
    tcpFlags: proto === 'tcp' && p.hasTransport ? flagsText(p.tcpFlags) : null,
    icmpType: (proto === 'icmp' || proto === 'icmpv6') && p.hasTransport ? p.icmpType : null,
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
  const parts = [`verdict=${s.verdict}`];
  if (s.malformedReason) parts.push(`reason=${s.malformedReason}`);
  parts.push(`original=${endpointsText(s.before)}`);
  return parts.join(' ');
}
