/**
 * The key the app gate joins packets and socket events by: the client socket's 5-tuple, 37 bytes — protocol,
 * local address (16 bytes, IPv4 as ::ffff:a.b.c.d), local port, remote address, remote port (ports big-endian) —
 * as a latin1 string so it can key a Map. A client's packet gives it as (source, destination); the local server's
 * answer to that client (sent to the reflect address too) gives the same key with its ports swapped.
 */
import ipaddr from 'ipaddr.js';
import type { ParsedPacket } from '../../packet/parse.ts';
import { mappedAddress, type SocketEvent } from './socket-events.ts';

export const FLOW_KEY_BYTES = 37;

/** Write a key into `out` (FLOW_KEY_BYTES). */
function put(
  out: Uint8Array,
  proto: number,
  local: Uint8Array,
  localAt: number,
  lport: number,
  remote: Uint8Array,
  remoteAt: number,
  rport: number,
  v6: boolean,
): void {
  out[0] = proto;
  mappedAddress(local, localAt, v6, out, 1);
  out[17] = lport >> 8;
  out[18] = lport & 0xff;
  mappedAddress(remote, remoteAt, v6, out, 19);
  out[35] = rport >> 8;
  out[36] = rport & 0xff;
}

function text(key: Uint8Array): string {
  return Buffer.from(key.buffer, key.byteOffset, FLOW_KEY_BYTES).toString('latin1');
}

/**
 * The key of an outbound TCP/UDP packet as the client's (reverse = false: source is the client) or as the server's
 * answer to a client (reverse = true: the ports are the other way round). `scratch` is FLOW_KEY_BYTES, reused.
 */
export function packetFlowKey(buf: Uint8Array, p: ParsedPacket, reverse: boolean, scratch: Uint8Array): string {
  packetFlowKeyBytes(buf, p, reverse, scratch);
  return text(scratch);
}

/** packetFlowKey's bytes only, into `scratch` (the hot path: nothing allocated). */
export function packetFlowKeyBytes(buf: Uint8Array, p: ParsedPacket, reverse: boolean, scratch: Uint8Array): void {
  const lport = reverse ? p.dstPort : p.srcPort;
  const rport = reverse ? p.srcPort : p.dstPort;
  put(scratch, p.protocol, buf, p.srcOffset, lport, buf, p.dstOffset, rport, p.family === 6);
}

/** The key of a socket event (its endpoints are already 16-byte addresses). */
export function socketFlowKey(e: SocketEvent): string {
  const out = new Uint8Array(FLOW_KEY_BYTES);
  put(out, e.protocol, e.localAddr, 0, e.localPort, e.remoteAddr, 0, e.remotePort, true);
  return text(out);
}

/** The 16-byte form of an address written as text (IPv4 as ::ffff:a.b.c.d), as a latin1 string. */
export function addressKey(address: string): string {
  const a = ipaddr.parse(address);
  const bytes = a.kind() === 'ipv4' ? (a as ipaddr.IPv4).toIPv4MappedAddress().toByteArray() : a.toByteArray();
  return Buffer.from(bytes).toString('latin1');
}

/** The key of a flow written as text (what `flows` lists), to find its owner. */
export function textFlowKey(
  protocol: 'tcp' | 'udp',
  localAddress: string,
  localPort: number,
  remoteAddress: string,
  remotePort: number,
): string {
  const out = new Uint8Array(FLOW_KEY_BYTES);
  const l = Buffer.from(addressKey(localAddress), 'latin1');
  const r = Buffer.from(addressKey(remoteAddress), 'latin1');
  put(out, protocol === 'tcp' ? 6 : 17, l, 0, localPort, r, 0, remotePort, true);
  return text(out);
}

/** The remote (reflect) address part of a key, in the 16-byte form addressKey gives. */
export function keyRemote(key: string): string {
  return key.slice(19, 35);
}
