/**
 * WinDivert's SOCKET layer as retroflect reads it: who opens a flow. A handle opened there with SNIFF | RECV_ONLY
 * (RECV_ONLY is required at that layer; SNIFF, because we only watch: without it a socket operation would wait for
 * us, and a RECV_ONLY handle can never let it go on) receives one event per socket operation of the host — BIND,
 * CONNECT, LISTEN, ACCEPT, CLOSE — with WINDIVERT_DATA_SOCKET in the address union: EndpointId, ParentEndpointId,
 * ProcessId, LocalAddr, RemoteAddr (four host-order words, least significant first; IPv4 mapped as ::ffff:a.b.c.d),
 * LocalPort, RemotePort, Protocol. No packet data comes with an event.
 *
 * The driver reports a connect (TCP connect(), the first datagram of a UDP socket to a new remote) from the ALE
 * connect layer, before that flow's first packet reaches the network layer; but it is queued on this handle and the
 * packet on another, so user space may read the packet first. The app gate (app-gate.ts) joins the two by 5-tuple.
 * The layer cannot report operations from before the handle was opened.
 */
import { WINDIVERT_ADDRESS_SIZE } from './address.ts';
import { winDivertCallError } from './errors.ts';
import { INVALID_HANDLE, WinDivertFlag, WinDivertLayer, WinDivertShutdown, WinError } from './ffi.ts';
import type { WinDivertApi } from './ffi.ts';
import { SOCKET_EVENT_BATCH } from './limits.ts';

/** SOCKET-layer events (WINDIVERT_EVENT_SOCKET_*). */
export const SocketEventKind = { Bind: 3, Connect: 4, Listen: 5, Accept: 6, Close: 7 } as const;
export type SocketEventKind = (typeof SocketEventKind)[keyof typeof SocketEventKind];

/** Byte offsets of WINDIVERT_DATA_SOCKET inside one WINDIVERT_ADDRESS (the union starts at 16). */
export const SocketOffset = {
  EndpointId: 16,
  ParentEndpointId: 24,
  ProcessId: 32,
  LocalAddr: 36,
  RemoteAddr: 52,
  LocalPort: 68,
  RemotePort: 70,
  Protocol: 72,
} as const;

/** One socket operation. Addresses are 16 bytes in network order (IPv4 as ::ffff:a.b.c.d), as flow keys use them. */
export interface SocketEvent {
  event: number;
  processId: number;
  endpointId: bigint;
  parentEndpointId: bigint;
  protocol: number;
  localAddr: Uint8Array;
  remoteAddr: Uint8Array;
  localPort: number;
  remotePort: number;
  loopback: boolean;
}

/** The SOCKET layer's filter: connects only (the gate needs nothing else), of any protocol, not on loopback. */
export const SOCKET_FILTER = 'event == CONNECT and not loopback';

/** Four host-order words (least significant first) → 16 bytes in network order. */
function addrBytes(buf: Buffer, at: number): Uint8Array {
  const out = new Uint8Array(16);
  for (let w = 0; w < 4; w++) {
    const v = buf.readUInt32LE(at + w * 4);
    const o = (3 - w) * 4;
    out[o] = v >>> 24;
    out[o + 1] = (v >>> 16) & 0xff;
    out[o + 2] = (v >>> 8) & 0xff;
    out[o + 3] = v & 0xff;
  }
  return out;
}

/** 16 bytes in network order → the four host-order words WinDivert keeps (tests and the double's controls). */
export function writeSocketAddr(bytes: Uint8Array, buf: Buffer, at: number): void {
  for (let w = 0; w < 4; w++) {
    const o = (3 - w) * 4;
    buf.writeUInt32LE(((bytes[o] << 24) | (bytes[o + 1] << 16) | (bytes[o + 2] << 8) | bytes[o + 3]) >>> 0, at + w * 4);
  }
}

/** Decode the SOCKET part of the address at `base`. */
export function decodeSocketEvent(buf: Buffer, base: number): SocketEvent {
  const bits = buf.readUInt32LE(base + 8);
  return {
    event: (bits >>> 8) & 0xff,
    loopback: (bits & (1 << 18)) !== 0,
    endpointId: buf.readBigUInt64LE(base + SocketOffset.EndpointId),
    parentEndpointId: buf.readBigUInt64LE(base + SocketOffset.ParentEndpointId),
    processId: buf.readUInt32LE(base + SocketOffset.ProcessId),
    localAddr: addrBytes(buf, base + SocketOffset.LocalAddr),
    remoteAddr: addrBytes(buf, base + SocketOffset.RemoteAddr),
    localPort: buf.readUInt16LE(base + SocketOffset.LocalPort),
    remotePort: buf.readUInt16LE(base + SocketOffset.RemotePort),
    protocol: buf[base + SocketOffset.Protocol],
  };
}

/** An IP address as the 16 bytes flow keys use: IPv6 as it is, IPv4 as ::ffff:a.b.c.d. */
export function mappedAddress(ip: Uint8Array, off: number, ipv6: boolean, out: Uint8Array, at: number): void {
  if (ipv6) {
    for (let i = 0; i < 16; i++) out[at + i] = ip[off + i];
    return;
  }
  for (let i = 0; i < 10; i++) out[at + i] = 0;
  out[at + 10] = 0xff;
  out[at + 11] = 0xff;
  for (let i = 0; i < 4; i++) out[at + 12 + i] = ip[off + i];
}

/**
 * A SOCKET-layer handle (sniff, receive only) and its reads. `read()` blocks until events are queued or the handle
 * is shut down (then it returns []): call it from a thread that may wait.
 */
export class SocketEventReader {
  private handle: number;
  private readonly data = Buffer.alloc(1);
  private readonly addrs = Buffer.alloc(SOCKET_EVENT_BATCH * WINDIVERT_ADDRESS_SIZE);
  private readonly recvLen = new Uint32Array(1);
  private readonly addrLen = new Uint32Array(1);

  /** Open the handle; throws the Windows error as a RetroflectError. `priority`: any (sniffing takes nothing). */
  constructor(
    private readonly api: WinDivertApi,
    filter = SOCKET_FILTER,
    priority = 0,
  ) {
    const h = api.open(filter, WinDivertLayer.Socket, priority, WinDivertFlag.Sniff | WinDivertFlag.RecvOnly);
    if (h === INVALID_HANDLE) throw winDivertCallError('WinDivertOpen', api.lastError(), { layer: 'socket', filter });
    this.handle = h;
  }

  /** The events queued now (at least one, waiting for it), or [] once the handle is shut down or closed. */
  read(): SocketEvent[] {
    if (this.handle === INVALID_HANDLE) return [];
    this.recvLen[0] = 0;
    this.addrLen[0] = this.addrs.length;
    if (!this.api.recvEx(this.handle, this.data, this.data.length, this.recvLen, this.addrs, this.addrLen)) {
      const err = this.api.lastError();
      if (err === WinError.NO_DATA || err === WinError.INVALID_HANDLE) return [];
      throw winDivertCallError('WinDivertRecvEx', err, { layer: 'socket' });
    }
    return this.decoded();
  }

  /** The events the last receive put in `addrs`. */
  private decoded(): SocketEvent[] {
    const out: SocketEvent[] = [];
    for (let i = 0; i < this.addrLen[0] / WINDIVERT_ADDRESS_SIZE; i++) {
      out.push(decodeSocketEvent(this.addrs, i * WINDIVERT_ADDRESS_SIZE));
    }
    return out;
  }

  /**
   * read() on a thread of the pool (koffi async), for the main thread: resolves with the events, or [] once the
   * handle is shut down (or the call failed: then a failed read cannot be told from a shutdown, and reading ends).
   */
  readAsync(): Promise<SocketEvent[]> {
    if (this.handle === INVALID_HANDLE) return Promise.resolve([]);
    this.recvLen[0] = 0;
    this.addrLen[0] = this.addrs.length;
    const read = this.api.recvExAsync(this.handle, this.data, this.data.length, this.recvLen, this.addrs, this.addrLen);
    return read.then((ok) => (ok ? this.decoded() : []));
  }

  /** Make a read() that waits return (it returns what is queued, then []). */
  shutdown(): void {
    if (this.handle !== INVALID_HANDLE) this.api.shutdown(this.handle, WinDivertShutdown.Recv);
  }

  close(): void {
    if (this.handle === INVALID_HANDLE) return;
    this.api.close(this.handle);
    this.handle = INVALID_HANDLE;
  }
}
