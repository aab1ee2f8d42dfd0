/**
 * Does another WinDivert handle's filter catch our traffic? Asked the way WinDivert offers it: its own
 * WinDivertHelperEvalFilter run on sample packets of what our filter captures — for each reflect address an outbound
 * TCP and UDP packet to it (the server ports and mapped ports of the config, or 80) and an inbound one claiming it
 * as source; for each shielded port an inbound packet from another host. A match on any sample is an overlap.
 */
import ipaddr from 'ipaddr.js';
import type { InterceptConfig } from '../../config/intercept-config.ts';
import { portMapsOf } from '../../config/port-maps.ts';
import { addressBuffer } from './address.ts';
import { loadWinDivert } from './ffi.ts';

/** Stand-ins for "this host" and "another host" in the samples (documentation ranges). */
const HOST = { 4: '198.51.100.2', 6: '2001:db8:1::2' } as const;
const PEER = { 4: '203.0.113.200', 6: '2001:db8:2::200' } as const;
const CLIENT_PORT = 49152;

function sample(src: string, dst: string, protocol: 6 | 17, srcPort: number, dstPort: number): Buffer {
  const v6 = src.includes(':');
  const l4 = protocol === 6 ? 20 : 8;
  const ip = v6 ? 40 : 20;
  const p = Buffer.alloc(ip + l4);
  if (v6) {
    p[0] = 0x60;
    p.writeUInt16BE(l4, 4);
    p[6] = protocol;
    p[7] = 64;
    Buffer.from(ipaddr.parse(src).toByteArray()).copy(p, 8);
    Buffer.from(ipaddr.parse(dst).toByteArray()).copy(p, 24);
  } else {
    p[0] = 0x45;
    p.writeUInt16BE(ip + l4, 2);
    p[8] = 64;
    p[9] = protocol;
    Buffer.from(ipaddr.parse(src).toByteArray()).copy(p, 12);
    Buffer.from(ipaddr.parse(dst).toByteArray()).copy(p, 16);
  }
  p.writeUInt16BE(srcPort, ip);
  p.writeUInt16BE(dstPort, ip + 2);
  if (protocol === 6) p[ip + 12] = 0x50;
  else p.writeUInt16BE(l4, ip + 4);
  return p;
}

/** The packets our filter exists to capture, with their WINDIVERT_ADDRESS. */
export function ourSamples(cfg: InterceptConfig): { packet: Buffer; addr: Buffer }[] {
  const out: { packet: Buffer; addr: Buffer }[] = [];
  const serverPorts = [...new Set([...cfg.shieldPorts.map((p) => p.port), ...portMapsOf(cfg).map((m) => m.port)])];
  for (const r of cfg.reflectAddresses) {
    const fam = r.includes(':') ? 6 : 4;
    for (const port of serverPorts.length ? serverPorts : [80]) {
      for (const proto of [6, 17] as const) out.push({ packet: sample(HOST[fam], r, proto, CLIENT_PORT, port),
        addr: addressBuffer({ outbound: true, ipv6: fam === 6 }) });
    }
    out.push({ packet: sample(r, HOST[fam], 6, port0(serverPorts), CLIENT_PORT), addr: addressBuffer({ outbound: false,
      ipv6: fam === 6 }) });
  }
  for (const s of cfg.shieldPorts) {
    for (const fam of [4, 6] as const) out.push({ packet: sample(PEER[fam], HOST[fam], s.protocol === 'tcp' ? 6 : 17,
      CLIENT_PORT, s.port), addr: addressBuffer({ outbound: false, ipv6: fam === 6 }) });
  }
  return out;
}

function port0(ports: number[]): number {
  return ports[0] ?? 80;
}

/** true: the filter catches some of our packets; false: none; null: it cannot be told (no filter text, refused). */
export function filterOverlaps(dll: string, cfg: InterceptConfig, filter: string | null): boolean | null {
  if (filter === null) return null;
  const api = loadWinDivert(dll);
  let unknown = false;
  for (const s of ourSamples(cfg)) {
    const r = api.evalFilter(filter, s.packet, s.addr);
    if (r === true) return true;
    if (r === null) unknown = true;
  }
  return unknown ? null : false;
}
