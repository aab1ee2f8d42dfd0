/**
 * Parsing of raw IP packets (IPv4 and IPv6, as a TUN device or WinDivert hands them over: no link-layer header).
 *
 * Hot path rules: `parsePacket` fills a caller-owned `ParsedPacket` and returns a boolean. It allocates nothing,
 * creates no strings, never throws. A malformed packet is reported by a numeric `MalformedCode`; the reason names
 * used in stats (`MalformedReason` below) are looked up only off the hot path.
 *
 * What "malformed" means here (a packet breaking several rules gets the first one the parser meets, reading the
 * headers front to back):
 *  - badVersion:         the version nibble is neither 4 nor 6.
 *  - truncated:          the buffer ends before the packet's own headers say it should (shorter than the fixed IP
 *                        header, or shorter than the IPv4 total length / IPv6 40 + payload length). So every proper
 *                        prefix of a valid packet is "truncated".
 *  - badHeaderLength:    IPv4 IHL below 5, or IHL * 4 larger than the total length.
 *  - badTotalLength:     IPv4 total length below 20.
 *  - badExtensionHeader: an IPv6 extension header or an IPv4 Authentication Header runs past the payload, or
 *                        hop-by-hop is not the first header. The IPv6 walk covers hop-by-hop, routing, fragment,
 *                        destination options and the Authentication Header (RFC 4302: its length counts 4-byte
 *                        units, minus 2); IPv4 walks AH only (it has no other extension headers). Both stop at any
 *                        other next header (ESP's contents are encrypted, so TCP/UDP behind it are unknowable).
 *  - badTransportHeader: the TCP/UDP/ICMP header of an unfragmented or first-fragment packet does not fit inside
 *                        the IP payload, or TCP data offset is below 5 / past the payload, or an unfragmented UDP
 *                        datagram's length field is below 8 or beyond the IP payload (shorter is padding: allowed).
 * Bytes after the IP packet (buffer longer than total length) are allowed and ignored.
 * IPv6 jumbograms (payload length 0 + hop-by-hop jumbo option) are not supported: they cannot occur at TUN/WinDivert
 * MTUs, and are parsed as a 40-byte packet (so usually badTransportHeader).
 */
import { packetView } from './view.ts';

/** IP protocol / IPv6 next-header numbers (IANA "Assigned Internet Protocol Numbers"). */
export const IpProto = {
  HopByHop: 0,
  Icmp: 1,
  Tcp: 6,
  Udp: 17,
  Routing: 43,
  Fragment: 44,
  AuthenticationHeader: 51,
  Icmpv6: 58,
  NoNextHeader: 59,
  DestinationOptions: 60,
} as const;

/** TCP flag bits in byte 13 of the TCP header (RFC 9293). */
export const TcpFlag = { Fin: 0x01, Syn: 0x02, Rst: 0x04, Psh: 0x08, Ack: 0x10 } as const;

/** ICMP (RFC 792) and ICMPv6 (RFC 4443) echo message types; their identifier is at transport offset 4. */
export const IcmpType = { EchoReply: 0, DestinationUnreachable: 3, EchoRequest: 8, TimeExceeded: 11, ParameterProblem: 12 } as const;
export const Icmpv6Type = { DestinationUnreachable: 1, PacketTooBig: 2, TimeExceeded: 3, ParameterProblem: 4, EchoRequest: 128, EchoReply: 129 } as const;

/** Fixed header sizes in bytes. */
export const IPV4_MIN_HEADER = 20;
export const IPV6_HEADER = 40;
export const TCP_MIN_HEADER = 20;
export const UDP_HEADER = 8;
/** ICMP and ICMPv6 messages are at least type, code, checksum and 4 bytes of type-specific data. */
export const ICMP_MIN_HEADER = 8;

/** Byte offsets of the addresses inside the IP header. */
export const IPV4_SRC = 12;
export const IPV4_DST = 16;
export const IPV6_SRC = 8;
export const IPV6_DST = 24;

/** Numeric malformed reasons (0 = well-formed). Index i + 1 corresponds to MALFORMED_REASONS[i]. */
export const MalformedCode = {
  None: 0,
  Truncated: 1,
  BadVersion: 2,
  BadHeaderLength: 3,
  BadTotalLength: 4,
  BadExtensionHeader: 5,
  BadTransportHeader: 6,
} as const;
export type MalformedCode = (typeof MalformedCode)[keyof typeof MalformedCode];

/** Names of the malformed reasons, as stats report them (`malformed.byReason`). */
export type MalformedReason =
  | 'truncated'
  | 'badVersion'
  | 'badHeaderLength'
  | 'badTotalLength'
  | 'badExtensionHeader'
  | 'badTransportHeader';

/** Reason names, in MalformedCode order (code c ↔ MALFORMED_REASONS[c - 1]). */
export const MALFORMED_REASONS: readonly MalformedReason[] = [
  'truncated',
  'badVersion',
  'badHeaderLength',
  'badTotalLength',
  'badExtensionHeader',
  'badTransportHeader',
];

const EMPTY_VIEW = new DataView(new ArrayBuffer(0));

/**
 * The result of parsing one packet. One instance is reused for every packet; all offsets are absolute indexes
 * into the buffer that was parsed. Fields beyond `malformed` are only meaningful when `malformed === 0`.
 */
export class ParsedPacket {
  /** DataView over the parsed buffer (see view.ts); offsets below index both it and the buffer. */
  view: DataView = EMPTY_VIEW;
  /** MalformedCode; 0 when the packet is well-formed. */
  malformed: MalformedCode = 0;
  /** 4 or 6. */
  family = 0;
  /** Where the IP header starts, and the IP packet's length by its own header (trailing bytes excluded). */
  ipOffset = 0;
  ipLength = 0;
  /** Offsets of the source and destination address, and their length (4 or 16). */
  srcOffset = 0;
  dstOffset = 0;
  addressLength = 0;
  /** Upper-layer protocol: the IPv4 protocol field, or the IPv6 next header after the extension headers. */
  protocol = 0;
  /** True for any fragment (more-fragments set or offset non-zero). */
  fragment = false;
  /** True when the transport header is present and was checked (unfragmented or first fragment, TCP/UDP/ICMP). */
  hasTransport = false;
  /** Where the upper-layer data starts (after IPv4 options / IPv6 extension headers) and how long it is. */
  transportOffset = 0;
  transportLength = 0;
  /** TCP/UDP ports (0 otherwise). */
  srcPort = 0;
  dstPort = 0;
  /** TCP flags byte (0 otherwise). */
  tcpFlags = 0;
  /** ICMP/ICMPv6 type, and the echo identifier for echo request/reply (0 otherwise). */
  icmpType = 0;
  icmpId = 0;
  /**
   * True for an ICMP/ICMPv6 error message (destination unreachable, packet too big, time exceeded, parameter
   * problem): its body, after the 8-byte header, holds the start of the packet it is about (see icmp-error.ts).
   */
  icmpError = false;
}

/** Parse an IP packet at buf[off .. off + len). Returns true when well-formed; otherwise `out.malformed` says why. */
export function parsePacket(buf: Uint8Array, off: number, len: number, out: ParsedPacket): boolean {
  out.malformed = 0;
  out.fragment = false;
  out.hasTransport = false;
  out.srcPort = 0;
  out.dstPort = 0;
  out.tcpFlags = 0;
  out.icmpType = 0;
  out.icmpId = 0;
  out.icmpError = false;
  out.ipOffset = off;
  out.view = packetView(buf);
  if (len < 1) return fail(out, MalformedCode.Truncated);
  const version = buf[off] >> 4;
  if (version === 4) return parseIpv4(buf, off, len, out);
  if (version === 6) return parseIpv6(buf, off, len, out);
  return fail(out, MalformedCode.BadVersion);
}

function fail(out: ParsedPacket, code: MalformedCode): boolean {
  out.malformed = code;
  return false;
}

function parseIpv4(buf: Uint8Array, off: number, len: number, out: ParsedPacket): boolean {
  if (len < IPV4_MIN_HEADER) return fail(out, MalformedCode.Truncated);
  const headerLength = (buf[off] & 0x0f) << 2;
  if (headerLength < IPV4_MIN_HEADER) return fail(out, MalformedCode.BadHeaderLength);
  const totalLength = (buf[off + 2] << 8) | buf[off + 3];
  if (totalLength > len) return fail(out, MalformedCode.Truncated);
  if (totalLength < IPV4_MIN_HEADER) return fail(out, MalformedCode.BadTotalLength);
  if (headerLength > totalLength) return fail(out, MalformedCode.BadHeaderLength);
  out.family = 4;
  out.ipLength = totalLength;
  out.srcOffset = off + IPV4_SRC;
  out.dstOffset = off + IPV4_DST;
  out.addressLength = 4;
  out.protocol = buf[off + 9];
  out.transportOffset = off + headerLength;
  out.transportLength = totalLength - headerLength;
  // Flags and fragment offset: bit 0x2000 = more fragments, low 13 bits = offset in 8-byte units.
  const fragmentField = ((buf[off + 6] << 8) | buf[off + 7]) & 0x3fff;
  if (fragmentField !== 0) {
    out.fragment = true;
    // Only the first fragment (offset 0) carries the transport header; later ones are reflected by address only.
    if ((fragmentField & 0x1fff) !== 0) return true;
  }
  // IPsec AH (RFC 4302) sits between the IPv4 header and the transport header, as in IPv6: walk it, so the ports
  // behind it are read (and shielded). ESP is not walked: its contents are encrypted.
  const end = off + totalLength;
  let pos = out.transportOffset;
  while (out.protocol === IpProto.AuthenticationHeader) {
    if (pos + 2 > end) return fail(out, MalformedCode.BadExtensionHeader);
    const size = extensionHeaderSize(IpProto.AuthenticationHeader, buf[pos + 1]);
    if (pos + size > end) return fail(out, MalformedCode.BadExtensionHeader);
    out.protocol = buf[pos];
    pos += size;
  }
  out.transportOffset = pos;
  out.transportLength = end - pos;
  return parseTransport(buf, out);
}

function parseIpv6(buf: Uint8Array, off: number, len: number, out: ParsedPacket): boolean {
  if (len < IPV6_HEADER) return fail(out, MalformedCode.Truncated);
  const payloadLength = (buf[off + 4] << 8) | buf[off + 5];
  const totalLength = IPV6_HEADER + payloadLength;
  if (totalLength > len) return fail(out, MalformedCode.Truncated);
  out.family = 6;
  out.ipLength = totalLength;
  out.srcOffset = off + IPV6_SRC;
  out.dstOffset = off + IPV6_DST;
  out.addressLength = 16;
  const end = off + totalLength;
  let next = buf[off + 6];
  let pos = off + IPV6_HEADER;
  let first = true;
  // Walk the extension headers we know (RFC 8200 §4). Each is at least 8 bytes, so the loop is bounded by length.
  for (;;) {
    if (next === IpProto.HopByHop || next === IpProto.Routing || next === IpProto.DestinationOptions || next === IpProto.AuthenticationHeader) {
      if (next === IpProto.HopByHop && !first) return fail(out, MalformedCode.BadExtensionHeader);
      if (pos + 2 > end) return fail(out, MalformedCode.BadExtensionHeader);
      const size = extensionHeaderSize(next, buf[pos + 1]);
      if (pos + size > end) return fail(out, MalformedCode.BadExtensionHeader);
      next = buf[pos];
      pos += size;
    } else if (next === IpProto.Fragment) {
      if (pos + 8 > end) return fail(out, MalformedCode.BadExtensionHeader);
      out.fragment = true;
      const fragmentOffset = ((buf[pos + 2] << 8) | buf[pos + 3]) >> 3;
      next = buf[pos];
      pos += 8;
      if (fragmentOffset !== 0) {
        // A later fragment: what follows is the middle of the upper-layer data, not a header.
        out.protocol = next;
        out.transportOffset = pos;
        out.transportLength = end - pos;
        return true;
      }
    } else {
      break;
    }
    first = false;
  }
  out.protocol = next;
  out.transportOffset = pos;
  out.transportLength = end - pos;
  return parseTransport(buf, out);
}

/**
 * Size in bytes of a hop-by-hop, routing, destination options or authentication header from its length byte:
 * AH counts 4-byte units minus 2 (RFC 4302 §2.2), the others 8-byte units minus 1 (RFC 8200 §4). Never below 8.
 */
export function extensionHeaderSize(type: number, lengthByte: number): number {
  return type === IpProto.AuthenticationHeader ? (lengthByte + 2) << 2 : (lengthByte + 1) << 3;
}

/** Check and read the TCP/UDP/ICMP header at out.transportOffset. Other protocols are accepted as they are. */
function parseTransport(buf: Uint8Array, out: ParsedPacket): boolean {
  const t = out.transportOffset;
  const avail = out.transportLength;
  const proto = out.protocol;
  if (proto === IpProto.Tcp) {
    if (avail < TCP_MIN_HEADER) return fail(out, MalformedCode.BadTransportHeader);
    const dataOffset = (buf[t + 12] >> 4) << 2;
    if (dataOffset < TCP_MIN_HEADER || dataOffset > avail) return fail(out, MalformedCode.BadTransportHeader);
    out.srcPort = (buf[t] << 8) | buf[t + 1];
    out.dstPort = (buf[t + 2] << 8) | buf[t + 3];
    out.tcpFlags = buf[t + 13];
  } else if (proto === IpProto.Udp) {
    if (avail < UDP_HEADER) return fail(out, MalformedCode.BadTransportHeader);
    // A first fragment holds only part of the datagram, so the UDP length can be checked only when unfragmented.
    const udpLength = (buf[t + 4] << 8) | buf[t + 5];
    if (!out.fragment && (udpLength < UDP_HEADER || udpLength > avail)) return fail(out, MalformedCode.BadTransportHeader);
    out.srcPort = (buf[t] << 8) | buf[t + 1];
    out.dstPort = (buf[t + 2] << 8) | buf[t + 3];
  } else if ((proto === IpProto.Icmp && out.family === 4) || (proto === IpProto.Icmpv6 && out.family === 6)) {
    if (avail < ICMP_MIN_HEADER) return fail(out, MalformedCode.BadTransportHeader);
    const type = buf[t];
    out.icmpType = type;
    if (proto === IpProto.Icmp) {
      if (type === IcmpType.EchoRequest || type === IcmpType.EchoReply) out.icmpId = (buf[t + 4] << 8) | buf[t + 5];
      else out.icmpError = type === IcmpType.DestinationUnreachable || type === IcmpType.TimeExceeded || type === IcmpType.ParameterProblem;
    } else if (type === Icmpv6Type.EchoRequest || type === Icmpv6Type.EchoReply) {
      out.icmpId = (buf[t + 4] << 8) | buf[t + 5];
    } else {
      out.icmpError = type >= Icmpv6Type.DestinationUnreachable && type <= Icmpv6Type.ParameterProblem;
    }
  } else {
    return true;
  }
  out.hasTransport = true;
  return true;
}

/**
 * True when the packet's addresses (and family, ipLength) were read from this packet: it is well-formed, or only
 * broken after the IP header (badExtensionHeader, badTransportHeader are found after the addresses are set).
 */
export function hasAddresses(p: ParsedPacket): boolean {
  return p.malformed === MalformedCode.None || p.malformed >= MalformedCode.BadExtensionHeader;
}

