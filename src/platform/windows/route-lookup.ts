/**
 * The Windows answer to "would this host route a packet to X?": iphlpapi's GetBestInterfaceEx, through koffi. It
 * picks the interface the IP stack would send on, or fails when no route covers the address (the rule users
 * learned: an IPv4 reflect address needs an IPv4 default route). Used by reflect-address validation.
 */
import koffi from 'koffi';
import type { RouteFacts } from '../route-facts.ts';

/** Address family numbers of the Windows socket API (ws2def.h): AF_INET6 is 23 on Windows, not Linux's 10. */
const AF_INET = 2;
const AF_INET6 = 23;
/** sizeof(SOCKADDR_IN) = 16, sizeof(SOCKADDR_IN6) = 28 (family u16, port u16, [flowinfo u32], address, [scope u32]). */
const SOCKADDR_IN_SIZE = 16;
const SOCKADDR_IN6_SIZE = 28;
const NO_ERROR = 0;
/** What GetBestInterfaceEx returns when no route covers the address (winerror.h). Other failures mean "cannot tell". */
const NO_ROUTE_ERRORS = new Set([1168 /* ERROR_NOT_FOUND */, 1231 /* ERROR_NETWORK_UNREACHABLE */, 1232 /* ERROR_HOST_UNREACHABLE */]);

type GetBestInterfaceEx = (sockaddr: Buffer, ifIndex: Buffer) => number;
let bound: GetBestInterfaceEx | undefined;

function api(): GetBestInterfaceEx {
  bound ??= koffi.load('iphlpapi.dll').func('uint32_t __stdcall GetBestInterfaceEx(void *pDestAddr, _Out_ uint32_t *pdwBestIfIndex)') as GetBestInterfaceEx;
  return bound;
}

/** Encode a canonical address as the SOCKADDR_IN / SOCKADDR_IN6 GetBestInterfaceEx takes (port and scope zero). */
export function encodeSockaddr(address: string): Buffer {
  if (!address.includes(':')) {
    const b = Buffer.alloc(SOCKADDR_IN_SIZE);
    b.writeUInt16LE(AF_INET, 0);
    address.split('.').forEach((part, i) => b.writeUInt8(Number(part), 4 + i));
    return b;
  }
  const b = Buffer.alloc(SOCKADDR_IN6_SIZE);
  b.writeUInt16LE(AF_INET6, 0);
  const [head, tail] = address.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  groups.forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), 8 + 2 * i));
  return b;
}

/** The raw answer: GetBestInterfaceEx's return code and the interface index it chose. */
export function bestInterface(address: string): { rc: number; ifIndex: number } {
  const out = Buffer.alloc(4);
  const rc = api()(encodeSockaddr(address), out);
  return { rc, ifIndex: out.readUInt32LE(0) };
}

/** null = no route covers the address. A failure that says nothing about routes is not held against the address. */
export function windowsRouteLookup(address: string): RouteFacts | null {
  const { rc, ifIndex } = bestInterface(address);
  if (rc === NO_ERROR) return { type: 'unicast', device: `ifIndex ${ifIndex}`, gateway: null, source: null };
  if (NO_ROUTE_ERRORS.has(rc)) return null;
  return { type: 'unknown', device: null, gateway: null, source: null };
}
