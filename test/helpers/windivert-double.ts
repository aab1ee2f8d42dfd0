/**
 * Helpers for the WinDivert tests: the ABI-compatible TEST DOUBLE of WinDivert.dll (native/windivert_double.c,
 * built by `make -C native` before the tests), packets to feed it, and a reader for what it was sent.
 * The double stands in for the WinDivert driver, which cannot run here; everything above it is the real code.
 */
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Dataplane, type DataplaneConfig } from '../../src/engine/dataplane.ts';
import { EngineCounters } from '../../src/engine/counters.ts';
import { FlowTable } from '../../src/engine/flow-table.ts';
import type { InterceptConfig } from '../../src/config/intercept-config.ts';
import type { PacketSource } from '../../src/packet-sources/packet-source.ts';
import { addressBuffer, decodeAddress, WINDIVERT_ADDRESS_SIZE, type WinDivertAddress } from '../../src/packet-sources/windivert/address.ts';
import { loadWinDivert, type WinDivertApi } from '../../src/packet-sources/windivert/ffi.ts';
import { bindDoubleControls, type WinDivertDoubleControl } from '../packet-sources/windivert/double-controls.ts';
import { addressBytes, ipv4, ipv6, tcpSegment, udpDatagram, withChecksum } from './packet-builders.ts';
import { SocketOffset, writeSocketAddr } from '../../src/packet-sources/windivert/socket-events.ts';
import { addressKey } from '../../src/packet-sources/windivert/app-flow-key.ts';

/** The double built for this platform (the mingw DLL under Wine, the .so on Linux). */
export const DOUBLE_PATH = process.platform === 'win32'
  ? (process.env.RETROFLECT_TEST_WINDIVERT_DLL ?? fileURLToPath(new URL('../../native/build/win64/WinDivert.dll', import.meta.url)))
  : fileURLToPath(new URL('../../native/build/linux/libwindivert_double.so', import.meta.url));

/** WinDivert's API in the double (the shipped binding) and the double's own controls (double-controls.ts). */
export function loadDouble(): { api: WinDivertApi; double: WinDivertDoubleControl } {
  const api = loadWinDivert(DOUBLE_PATH);
  try {
    return { api, double: bindDoubleControls(DOUBLE_PATH) };
  } catch (err) {
    throw new Error(`${DOUBLE_PATH} is not the WinDivert test double`, { cause: err });
  }
}

/** How a packet left the driver model: a handle sent it, a handle's close released it, or no handle took it. */
export type WireOrigin = 'sent' | 'released' | 'unclaimed';
const ORIGINS: Record<number, WireOrigin> = { 1: 'sent', 2: 'released', 3: 'unclaimed' };

export interface SentPacket {
  bytes: Buffer;
  addr: WinDivertAddress;
  /** The handle that sent or released it; 0 when no handle took it. */
  handle: number;
  origin: WireOrigin;
}

/**
 * Take everything that reached the double's "wire" so far, oldest first: outbound packets that would go out on the
 * network and inbound packets that would be delivered to the local stack.
 */
export function collectSent(double: WinDivertDoubleControl): SentPacket[] {
  const out: SentPacket[] = [];
  const max = 255;
  const buf = Buffer.alloc(max * 65575);
  const addrs = Buffer.alloc(max * WINDIVERT_ADDRESS_SIZE);
  const handles = new BigInt64Array(max);
  const origins = new Uint8Array(max);
  const bytes = new Uint32Array(1);
  for (;;) {
    const n = double.collectSent(buf, buf.length, bytes, addrs, handles, origins, max);
    let off = 0;
    for (let i = 0; i < n; i++) {
      const version = buf[off] >> 4;
      const len = version === 4 ? buf.readUInt16BE(off + 2) : 40 + buf.readUInt16BE(off + 4);
      out.push({
        bytes: Buffer.from(buf.subarray(off, off + len)),
        addr: decodeAddress(addrs, i * WINDIVERT_ADDRESS_SIZE),
        handle: Number(handles[i]),
        origin: ORIGINS[origins[i]],
      });
      off += len;
    }
    if (n < max) return out;
  }
}

/** Does `filter` (compiled by the double as WinDivertOpen would) match this packet with this address? */
export function doubleMatches(double: WinDivertDoubleControl, filter: string, packet: Uint8Array, addr: Partial<WinDivertAddress>): boolean {
  const buf = Buffer.from(packet);
  const r = double.matches(filter, buf, buf.length, addressBuffer(addr));
  if (r < 0) throw new Error(`the double refuses the filter: ${filter}`);
  return r === 1;
}

/** Hand a packet to the double as the stack would; throws unless a handle captured it. */
export function inject(double: WinDivertDoubleControl, packet: Uint8Array, addr: Partial<WinDivertAddress>): void {
  if (offer(double, packet, addr) !== 1) throw new Error('no handle captured the packet');
}

/** Hand a packet to the double as the stack would: 1 captured, 2 held for reassembly, 3 blocked by a DROP handle,
 *  0 went to the wire. */
export function offer(double: WinDivertDoubleControl, packet: Uint8Array, addr: Partial<WinDivertAddress>): number {
  const buf = Buffer.from(packet);
  return double.inject(buf, buf.length, addressBuffer(addr));
}

/** Address flags of a packet this host sends on interface 7/3, with all checksums computed. */
export function outboundAddr(ipv6Packet: boolean, extra: Partial<WinDivertAddress> = {}): Partial<WinDivertAddress> {
  return { outbound: true, ipv6: ipv6Packet, ipChecksum: !ipv6Packet, tcpChecksum: true, udpChecksum: true, ifIdx: 7, subIfIdx: 3, timestamp: 123456789n, ...extra };
}

export function inboundAddr(ipv6Packet: boolean, extra: Partial<WinDivertAddress> = {}): Partial<WinDivertAddress> {
  return { outbound: false, ipv6: ipv6Packet, ipChecksum: !ipv6Packet, tcpChecksum: true, udpChecksum: true, ifIdx: 9, subIfIdx: 1, timestamp: 987654321n, ...extra };
}

/** A TCP (6) or UDP (17) packet with valid checksums; `seq` goes into the payload so packets can be told apart. */
export function packet(src: string, dst: string, proto: 6 | 17, srcPort: number, dstPort: number, seq = 0, dataLen = 16): Uint8Array {
  const data = Array.from({ length: dataLen }, (_, i) => (seq >> ((i % 4) * 8)) & 0xff);
  const seg = proto === 6 ? tcpSegment({ srcPort, dstPort, flags: 0x18, data }) : udpDatagram(srcPort, dstPort, data);
  const payload = withChecksum(addressBytes(src), addressBytes(dst), proto, seg);
  return src.includes(':') ? ipv6({ src, dst, proto, payload }) : ipv4({ src, dst, proto, payload });
}

/** Read back the `seq` that packet() put in the payload. */
export function packetSeq(bytes: Buffer): number {
  const ipLen = bytes[0] >> 4 === 4 ? (bytes[0] & 0x0f) * 4 : 40;
  const proto = bytes[0] >> 4 === 4 ? bytes[9] : bytes[6];
  const dataAt = ipLen + (proto === 6 ? (bytes[ipLen + 12] >> 4) * 4 : 8);
  return bytes.readUInt32LE(dataAt);
}

export function dataplaneConfig(cfg: InterceptConfig): DataplaneConfig {
  return {
    reflect: cfg.reflectAddresses.map((address, slot) => ({ address, slot })),
    shield: cfg.shieldPorts.map((p, slot) => ({ port: p.port, protocol: p.protocol, slot })),
  };
}

export function makeDataplane(cfg: InterceptConfig): { dataplane: Dataplane; counters: EngineCounters } {
  const counters = new EngineCounters();
  const dataplane = new Dataplane(counters, new FlowTable());
  dataplane.configure(dataplaneConfig(cfg));
  return { dataplane, counters };
}

/** A socket operation as the stack reports it to the SOCKET layer (the double's WinDivertDouble_SocketEvent). */
export interface SocketOperation {
  event: 'bind' | 'connect' | 'listen' | 'accept' | 'close';
  processId: number;
  protocol: 6 | 17;
  localAddress: string;
  localPort: number;
  remoteAddress: string;
  remotePort: number;
  endpointId?: bigint;
  parentEndpointId?: bigint;
  loopback?: boolean;
}

const SOCKET_EVENTS = { bind: 3, connect: 4, listen: 5, accept: 6, close: 7 } as const;

/** Hand a socket operation to the double; returns how many SOCKET handles queued it. */
export function socketEvent(double: WinDivertDoubleControl, op: SocketOperation): number {
  const a = addressBuffer({
    layer: 3,
    event: SOCKET_EVENTS[op.event],
    outbound: op.event === 'connect',
    loopback: op.loopback ?? false,
    ipv6: op.localAddress.includes(':'),
  });
  a.writeBigUInt64LE(op.endpointId ?? 0n, SocketOffset.EndpointId);
  a.writeBigUInt64LE(op.parentEndpointId ?? 0n, SocketOffset.ParentEndpointId);
  a.writeUInt32LE(op.processId, SocketOffset.ProcessId);
  writeSocketAddr(Buffer.from(addressKey(op.localAddress), 'latin1'), a, SocketOffset.LocalAddr);
  writeSocketAddr(Buffer.from(addressKey(op.remoteAddress), 'latin1'), a, SocketOffset.RemoteAddr);
  a.writeUInt16LE(op.localPort, SocketOffset.LocalPort);
  a.writeUInt16LE(op.remotePort, SocketOffset.RemotePort);
  a[SocketOffset.Protocol] = op.protocol;
  return double.socketEvent(a);
}

/** One turn of the worker loop (the shape of src/engine/worker.ts): receive, decide every packet, send. */
export function loopOnce(source: PacketSource, dataplane: Dataplane): number {
  return decideBatch(source, dataplane, 50);
}

/** Stop as src/engine/worker.ts does: stop capturing, decide and send what is still queued, then close. */
export function stopLikeWorker(source: PacketSource, dataplane: Dataplane): number {
  let decided = 0;
  if (source.beginStop) {
    source.beginStop();
    for (let n = decideBatch(source, dataplane, 0); n > 0; n = decideBatch(source, dataplane, 0)) decided += n;
  }
  source.close();
  return decided;
}

function decideBatch(source: PacketSource, dataplane: Dataplane, timeoutMs: number): number {
  const n = source.receive(timeoutMs);
  if (n === 0) return 0;
  const { data, offset, length, outbound, verdict } = source.batch;
  const now = Date.now();
  // As worker.ts: the data plane asks the backend's app gate, which may hold a packet back or refuse it.
  dataplane.gate = source.outboundGate ?? null;
  for (let i = 0; i < n; i++) {
    verdict[i] = outbound[i] === 0
      ? dataplane.inbound(data, offset[i], length[i], now, source.batch.injected[i])
      : dataplane.outbound(data, offset[i], length[i], now, 0, i);
    if (verdict[i] === 3 && dataplane.refusalLength !== 0) {
      source.sendRefusal(i, dataplane.refusal, dataplane.refusalLength);
      dataplane.refusalLength = 0;
    }
  }
  source.send();
  return n;
}

/**
 * Inject `total` TCP packets 198.51.100.2:40000 → 192.0.2.1:80, numbered in their first payload bytes, 40 at a time
 * with a turn of the event loop between, so config changes can run while packets arrive. `refused` counts injections
 * no handle captured. With `shieldedEvery` = k, every k-th turn also hands over an inbound packet from another host
 * (203.0.113.9:5555 → 198.51.100.2:80, numbered from SHIELDED_SEQ_BASE) for a test that shields port 80.
 */
export const SHIELDED_SEQ_BASE = 1_000_000;
export function startNumberedInjection(
  double: WinDivertDoubleControl,
  total: number,
  opts: { shieldedEvery?: number } = {},
): { readonly injected: number; readonly refused: number; readonly shielded: number; readonly shieldedRefused: number; done: Promise<void> } {
  const state = { injected: 0, refused: 0, shielded: 0, shieldedRefused: 0, done: Promise.resolve() };
  const addr = addressBuffer(outboundAddr(false));
  const inAddr = addressBuffer(inboundAddr(false));
  const template = Buffer.from(packet('198.51.100.2', '192.0.2.1', 6, 40000, 80, 0));
  const peer = Buffer.from(packet('203.0.113.9', '198.51.100.2', 6, 5555, 80, 0));
  state.done = (async () => {
    let turn = 0;
    while (state.injected < total) {
      for (let k = 0; k < 40 && state.injected < total; k++) {
        template.writeUInt32LE(state.injected, 40); // sequence number: first payload bytes after the 20-byte TCP header
        if (double.inject(template, template.length, addr) !== 1) state.refused++;
        state.injected++;
      }
      if (opts.shieldedEvery && ++turn % opts.shieldedEvery === 0) {
        peer.writeUInt32LE(SHIELDED_SEQ_BASE + state.shielded, 40);
        if (double.inject(peer, peer.length, inAddr) !== 1) state.shieldedRefused++;
        state.shielded++;
      }
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  })();
  return state;
}

/** Every numbered packet came out exactly once, reflected (source 192.0.2.1) and turned inbound, sent by a handle. */
export function assertEachReflectedOnce(sent: SentPacket[], total: number): void {
  if (sent.length !== total) throw new Error(`sent ${sent.length} packets, expected ${total}`);
  const seen = new Uint8Array(total);
  for (const s of sent) {
    if (s.origin !== 'sent') throw new Error(`packet ${packetSeq(s.bytes)} reached the wire ${s.origin}, not sent by a handle`);
    seen[packetSeq(s.bytes)]++;
    if (s.bytes.subarray(12, 16).join('.') !== '192.0.2.1') throw new Error(`packet ${packetSeq(s.bytes)} not reflected`);
    if (s.addr.outbound) throw new Error(`packet ${packetSeq(s.bytes)} still marked outbound`);
  }
  const twice = seen.findIndex((n) => n !== 1);
  if (twice >= 0) throw new Error(`packet ${twice} came out ${seen[twice]} times`);
}

/**
 * The double's file format for injecting packets into a process that opens it (WINDIVERT_DOUBLE_INJECT_FILE) and for
 * what that process sends (WINDIVERT_DOUBLE_SENT_FILE): per packet a 32-bit little-endian length, the
 * WINDIVERT_ADDRESS, then the packet. Used by the tests that run the engine in another process (under Wine).
 */
export function fileRecord(p: Uint8Array, a: Partial<WinDivertAddress>): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32LE(p.length);
  return Buffer.concat([len, addressBuffer(a), Buffer.from(p)]);
}

/** Every record of a file in that format (none when it does not exist yet). */
export function readFileRecords(path: string): { bytes: Buffer; addr: WinDivertAddress }[] {
  if (!existsSync(path)) return [];
  const f = readFileSync(path);
  const out = [];
  for (let off = 0; off + 4 + WINDIVERT_ADDRESS_SIZE <= f.length; ) {
    const len = f.readUInt32LE(off);
    out.push({ addr: decodeAddress(f, off + 4), bytes: f.subarray(off + 4 + WINDIVERT_ADDRESS_SIZE, off + 4 + WINDIVERT_ADDRESS_SIZE + len) });
    off += 4 + WINDIVERT_ADDRESS_SIZE + len;
  }
  return out;
}
