/**
 * Which local addresses servers are bound to, per port and protocol: Linux reads /proc/net/{tcp,tcp6,udp,udp6}
 * (the kernel's socket tables of this network namespace). TCP counts listening sockets; UDP counts every bound socket
 * without a peer (a UDP server never "listens").
 */
import { readFileSync } from 'node:fs';

export interface BoundSocket {
  protocol: 'tcp' | 'udp';
  /** Canonical text form: 0.0.0.0, ::, 127.0.0.1, ::1, 198.51.100.2... */
  address: string;
  port: number;
}

/** TCP_LISTEN and TCP_CLOSE (an unconnected UDP socket) in the `st` column (include/net/tcp_states.h). */
const TCP_LISTEN = 0x0a;
const UDP_UNCONNECTED = 0x07;

/** /proc prints each 32-bit word of an address in host byte order; x86 and arm64 Linux are little-endian. */
function procAddress(hex: string): string {
  const words = hex.match(/.{8}/g) ?? [];
  const bytes: number[] = [];
  for (const w of words) for (let i = 3; i >= 0; i--) bytes.push(parseInt(w.slice(i * 2, i * 2 + 2), 16));
  if (bytes.length === 4) return bytes.join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] << 8) | bytes[i + 1]).toString(16));
  return compressIpv6(groups);
}

function compressIpv6(groups: string[]): string {
  // RFC 5952: the longest run (2 or more) of zero groups becomes "::".
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen) { best = i; bestLen = j - i; }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

/** Parse one /proc/net table. Exported for tests. */
export function parseProcNet(text: string, protocol: 'tcp' | 'udp'): BoundSocket[] {
  const out: BoundSocket[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 4) continue;
    const [localAddr, localPort] = f[1].split(':');
    const state = parseInt(f[3], 16);
    if (protocol === 'tcp' ? state !== TCP_LISTEN : state !== UDP_UNCONNECTED) continue;
    out.push({ protocol, address: procAddress(localAddr), port: parseInt(localPort, 16) });
  }
  return out;
}

export function linuxBoundSockets(procNet = '/proc/net'): BoundSocket[] {
  const out: BoundSocket[] = [];
  for (const [file, protocol] of [['tcp', 'tcp'], ['tcp6', 'tcp'], ['udp', 'udp'], ['udp6', 'udp']] as const) {
    let text: string;
    try {
      text = readFileSync(`${procNet}/${file}`, 'utf8');
    } catch {
      continue; // no IPv6 in this kernel: no tcp6/udp6
    }
    out.push(...parseProcNet(text, protocol));
  }
  return out;
}

export function isWildcard(address: string): boolean {
  return address === '0.0.0.0' || address === '::';
}

export function isLoopback(address: string): boolean {
  return address.startsWith('127.') || address === '::1';
}
