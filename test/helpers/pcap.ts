/**
 * A tiny reader for classic pcap files (the format `tcpdump -w` writes), for tests: returns the IP packets inside,
 * with the link-layer header removed. Handles both byte orders and microsecond/nanosecond magics, and the link types
 * tcpdump uses on Linux: Ethernet (1), raw IP (101, 228, 229), Linux cooked v1 (113) and v2 (276). Frames that are
 * not IPv4/IPv6 (ARP...) are skipped. Truncated captures (snaplen) are refused: the tests need whole packets.
 *
 * File layout (pcap-savefile(5)): a 24-byte global header (magic, version, reserved, snaplen, linktype), then
 * records of a 16-byte header (seconds, sub-seconds, captured length, original length) followed by the bytes.
 */
import { readFileSync } from 'node:fs';

const MAGIC_MICRO = 0xa1b2c3d4;
const MAGIC_NANO = 0xa1b23c4d;
const GLOBAL_HEADER = 24;
const RECORD_HEADER = 16;

const LINKTYPE_ETHERNET = 1;
const LINKTYPE_RAW = 101;
const LINKTYPE_IPV4 = 228;
const LINKTYPE_IPV6 = 229;
const LINKTYPE_LINUX_SLL = 113;
const LINKTYPE_LINUX_SLL2 = 276;

const ETHERTYPE_IPV4 = 0x0800;
const ETHERTYPE_IPV6 = 0x86dd;
const ETHERTYPE_VLAN = 0x8100;

export interface PcapPacket {
  /** The IP packet (a copy, safe to modify). */
  data: Uint8Array;
  /** Index of the record in the file (0-based), for messages. */
  index: number;
}

export function readPcap(path: string): PcapPacket[] {
  return parsePcap(readFileSync(path));
}

export function parsePcap(file: Uint8Array): PcapPacket[] {
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  if (file.byteLength < GLOBAL_HEADER) throw new Error('pcap: file shorter than its header');
  let little: boolean;
  const magicBE = view.getUint32(0, false);
  if (magicBE === MAGIC_MICRO || magicBE === MAGIC_NANO) little = false;
  else if (view.getUint32(0, true) === MAGIC_MICRO || view.getUint32(0, true) === MAGIC_NANO) little = true;
  else throw new Error('pcap: not a classic pcap file (pcapng is not supported)');
  const linkType = view.getUint32(20, little) & 0xffff;
  const out: PcapPacket[] = [];
  let pos = GLOBAL_HEADER;
  let index = 0;
  while (pos + RECORD_HEADER <= file.byteLength) {
    const captured = view.getUint32(pos + 8, little);
    const original = view.getUint32(pos + 12, little);
    const start = pos + RECORD_HEADER;
    if (start + captured > file.byteLength) throw new Error(`pcap: record ${index} runs past the end of the file`);
    if (captured !== original) throw new Error(`pcap: record ${index} was truncated by the snaplen (capture with -s 0)`);
    const ip = stripLinkLayer(file.subarray(start, start + captured), linkType);
    if (ip) out.push({ data: Uint8Array.from(ip), index });
    pos = start + captured;
    index++;
  }
  return out;
}

function stripLinkLayer(frame: Uint8Array, linkType: number): Uint8Array | undefined {
  switch (linkType) {
    case LINKTYPE_RAW:
    case LINKTYPE_IPV4:
    case LINKTYPE_IPV6:
      return frame;
    case LINKTYPE_ETHERNET: {
      let at = 12;
      let type = (frame[at] << 8) | frame[at + 1];
      while (type === ETHERTYPE_VLAN) {
        at += 4;
        type = (frame[at] << 8) | frame[at + 1];
      }
      return type === ETHERTYPE_IPV4 || type === ETHERTYPE_IPV6 ? frame.subarray(at + 2) : undefined;
    }
    case LINKTYPE_LINUX_SLL: {
      const type = (frame[14] << 8) | frame[15];
      return type === ETHERTYPE_IPV4 || type === ETHERTYPE_IPV6 ? frame.subarray(16) : undefined;
    }
    case LINKTYPE_LINUX_SLL2: {
      const type = (frame[0] << 8) | frame[1];
      return type === ETHERTYPE_IPV4 || type === ETHERTYPE_IPV6 ? frame.subarray(20) : undefined;
    }
    default:
      throw new Error(`pcap: link type ${linkType} is not supported`);
  }
}
