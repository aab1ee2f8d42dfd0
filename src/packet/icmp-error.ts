/**
 * The packet inside an ICMP/ICMPv6 error message. Destination unreachable, time exceeded, parameter problem
 * (RFC 792) and, for ICMPv6, packet too big as well (RFC 4443) carry after their 8-byte header as much of the
 * offending packet as fits: its IP header, then the start of its upper-layer data. The host receiving the error
 * finds the socket to tell by that embedded packet's addresses and ports, as the socket sent them.
 *
 * Why reflection needs this: a client on this host sends L → R; we reflect it to R → L; when nothing listens, the
 * host answers with an error L → R that embeds R → L. Reflecting the outer header gives R → L, but the client's
 * socket only recognises the error if the embedded packet reads L → R again, the packet it sent. So the embedded
 * addresses are swapped too (reflect.ts). Port mapping will also rewrite the embedded ports, so this parser reports
 * where they and the embedded transport checksum are.
 *
 * The embedded packet is nearly always cut short (IPv4 routers send the IP header + 8 bytes, Linux up to 576 bytes
 * in all, IPv6 up to 1280), so its own length fields describe the original packet, not the bytes present, and a
 * short embedded transport header is normal rather than malformed. What this parser requires is the complete
 * embedded IP header (IPv4 with its options, or the 40-byte IPv6 header) of the outer packet's family; anything
 * less, or a header no sender could have produced (IHL below 5, total length below the header), means "no
 * embedded packet": the outer packet is still reflected, the bytes inside are left alone.
 *
 * Hot path rules as in parse.ts: fills a caller-owned EmbeddedPacket, allocates nothing, never throws.
 */
import { extensionHeaderSize, ICMP_MIN_HEADER, IpProto, IPV4_DST, IPV4_MIN_HEADER, IPV4_SRC, IPV6_DST, IPV6_HEADER, IPV6_SRC, UDP_HEADER, type ParsedPacket } from './parse.ts';

/** Where the transport checksum sits in each header (the field must be present in full to be reported). */
const TCP_CHECKSUM_AT = 16;
const UDP_CHECKSUM_AT = 6;
const ICMP_CHECKSUM_AT = 2;

/** The embedded packet of an ICMP error. All offsets are absolute indexes into the buffer that was parsed. */
export class EmbeddedPacket {
  /** False when the ICMP message is not an error, or holds no usable embedded IP header; other fields then mean nothing. */
  present = false;
  /** 4 or 6 (always the outer packet's family). */
  family = 0;
  /** Where the embedded IP header starts (8 bytes into the ICMP message). */
  ipOffset = 0;
  /** Embedded source and destination address offsets, and their length (4 or 16). */
  srcOffset = 0;
  dstOffset = 0;
  addressLength = 0;
  /** Upper-layer protocol of the embedded packet (after the IPv6 extension headers that are present). */
  protocol = 0;
  /** The embedded packet is a fragment (any). */
  fragment = false;
  /** True when the start of the embedded upper-layer data is known (not a later fragment, extension headers present). */
  hasTransport = false;
  /** Start of the embedded upper-layer data, and how many of its bytes are present in this message. */
  transportOffset = 0;
  transportLength = 0;
  /** TCP/UDP ports, when at least their 4 bytes are present. */
  hasPorts = false;
  srcPort = 0;
  dstPort = 0;
  /** Offset of the embedded TCP/UDP/ICMP checksum field, or -1 when the header is cut off before it ends. */
  checksumOffset = -1;
}

/**
 * Find the packet embedded in the ICMP error `p` (a packet parsePacket accepted, of `buf`). Returns `out.present`.
 * Only the embedded IP header is required; every later field is reported only as far as its bytes are present.
 */
export function parseEmbeddedPacket(buf: Uint8Array, p: ParsedPacket, out: EmbeddedPacket): boolean {
  out.present = false;
  out.fragment = false;
  out.hasTransport = false;
  out.hasPorts = false;
  out.srcPort = 0;
  out.dstPort = 0;
  out.checksumOffset = -1;
  if (!p.icmpError) return false;
  const start = p.transportOffset + ICMP_MIN_HEADER;
  const end = p.transportOffset + p.transportLength;
  const avail = end - start;
  if (p.family === 4) {
    if (avail < IPV4_MIN_HEADER || buf[start] >> 4 !== 4) return false;
    const headerLength = (buf[start] & 0x0f) << 2;
    if (headerLength < IPV4_MIN_HEADER || headerLength > avail) return false;
    const totalLength = (buf[start + 2] << 8) | buf[start + 3];
    if (totalLength < headerLength) return false;
    out.family = 4;
    out.ipOffset = start;
    out.srcOffset = start + IPV4_SRC;
    out.dstOffset = start + IPV4_DST;
    out.addressLength = 4;
    out.protocol = buf[start + 9];
    out.present = true;
    const fragmentField = ((buf[start + 6] << 8) | buf[start + 7]) & 0x3fff;
    out.fragment = fragmentField !== 0;
    // A later fragment starts in the middle of the upper-layer data: there is no header to read.
    if ((fragmentField & 0x1fff) === 0) readTransport(buf, out, start + headerLength, Math.min(start + totalLength, end));
    return true;
  }
  if (avail < IPV6_HEADER || buf[start] >> 4 !== 6) return false;
  out.family = 6;
  out.ipOffset = start;
  out.srcOffset = start + IPV6_SRC;
  out.dstOffset = start + IPV6_DST;
  out.addressLength = 16;
  out.present = true;
  const packetEnd = Math.min(start + IPV6_HEADER + ((buf[start + 4] << 8) | buf[start + 5]), end);
  let next = buf[start + 6];
  let pos = start + IPV6_HEADER;
  // The extension header walk of parse.ts, except that running out of bytes only ends what can be known. Every
  // header is at least 8 bytes, so the loop is bounded by the length.
  for (;;) {
    out.protocol = next;
    if (next === IpProto.HopByHop || next === IpProto.Routing || next === IpProto.DestinationOptions || next === IpProto.AuthenticationHeader) {
      if (pos + 2 > packetEnd) return true;
      const size = extensionHeaderSize(next, buf[pos + 1]);
      if (pos + size > packetEnd) return true;
      next = buf[pos];
      pos += size;
    } else if (next === IpProto.Fragment) {
      if (pos + 8 > packetEnd) return true;
      out.fragment = true;
      const laterFragment = ((buf[pos + 2] << 8) | buf[pos + 3]) >> 3 !== 0;
      next = buf[pos];
      pos += 8;
      if (laterFragment) {
        out.protocol = next;
        return true;
      }
    } else {
      break;
    }
  }
  readTransport(buf, out, pos, packetEnd);
  return true;
}

/** Record where the embedded upper-layer data starts and which of its header fields are present in [t, end). */
function readTransport(buf: Uint8Array, out: EmbeddedPacket, t: number, end: number): void {
  const length = end > t ? end - t : 0;
  out.hasTransport = true;
  out.transportOffset = t;
  out.transportLength = length;
  const proto = out.protocol;
  if (proto === IpProto.Tcp || proto === IpProto.Udp) {
    if (length >= 4) {
      out.hasPorts = true;
      out.srcPort = (buf[t] << 8) | buf[t + 1];
      out.dstPort = (buf[t + 2] << 8) | buf[t + 3];
    }
    if (proto === IpProto.Tcp ? length >= TCP_CHECKSUM_AT + 2 : length >= UDP_HEADER) {
      out.checksumOffset = t + (proto === IpProto.Tcp ? TCP_CHECKSUM_AT : UDP_CHECKSUM_AT);
    }
  } else if ((proto === IpProto.Icmp && out.family === 4) || (proto === IpProto.Icmpv6 && out.family === 6)) {
    if (length >= ICMP_CHECKSUM_AT + 2) out.checksumOffset = t + ICMP_CHECKSUM_AT;
  }
}
