/**
 * WinDivert backend, worker half (`WinDivertPacketSource`): RecvEx/SendEx in batches of up to WINDIVERT_BATCH_MAX
 * packets, no allocation per packet. Captured packets are taken from the network stack; whatever is not sent back
 * is dropped. So:
 *   Reflect → sent back as inbound (Outbound cleared, interface kept, checksums finished where the NIC would have);
 *   Pass    → sent back unchanged;
 *   Drop    → not sent.
 *
 * On a live change the main thread (host.ts) has opened a new handle and shut down receiving on the old one: this
 * half drains the old handle (WinDivert returns what is still queued, then ERROR_NO_DATA), deciding each packet as
 * usual, closes it and moves to the new one. Stop drains the same way (beginStop): closing a handle that still
 * holds packets would put them back unmodified — outbound packets to a reflect address onto the network, inbound
 * packets to a shielded port into the server. Handles are closed through the shared ledger (handle-ledger.ts).
 *
 * WinDivertRecvEx has no timeout without overlapped I/O: receive() blocks until packets arrive or the main thread
 * shuts the handle down (wake(), apply()). The worker loop reads control messages after every receive, and every
 * message that matters (stop, the engine's reconfigure) is preceded by such a shutdown, so nothing waits on an idle link.
 */
import type { InterceptConfig } from '../../config/intercept-config.ts';
import { fillIpv4HeaderChecksum, fillTransportChecksum } from '../../packet/checksum.ts';
import { IpProto, ParsedPacket, parsePacket } from '../../packet/parse.ts';
import { Verdict } from '../../packet/verdicts.ts';
import { REFUSAL_MAX_BYTES } from '../../packet/refusal.ts';
import {
  allocatePacketBatch,
  AppGateMark,
  type OutboundGate,
  type PacketBatch,
  type PacketSource,
  type PacketSourceFactory,
  type WinDivertSourceInit,
  type WinDivertSourceUpdate,
} from '../packet-source.ts';
import { AddressFlag, AddressOffset, WINDIVERT_ADDRESS_SIZE } from './address.ts';
import { winDivertCallError } from './errors.ts';
import { INVALID_HANDLE, loadWinDivert, WinDivertShutdown, WinError, type WinDivertApi } from './ffi.ts';
import { HandleLedger } from './handle-ledger.ts';
import { AppCheck } from './app-check.ts';
import { WINDIVERT_BATCH_BYTES, WINDIVERT_BATCH_MAX } from './limits.ts';

/** How long an idle receive() pauses when its handle is shut down and no new handle has arrived yet. */
const SHUTDOWN_IDLE_MS = 2;

/**
 * Expected re-injection failures, by kind. WinDivert documents both as harmless: ERROR_HOST_UNREACHABLE when an
 * impostor's TTL runs out or two drivers re-inject each other's packets in a loop, and the Windows stack refusing
 * some inbound ICMP/ICMPv6 messages. They are counted apart from `sendErrors` so that `stats` shows them without
 * reading as an alarm.
 */
export interface ExpectedSendFailures {
  hostUnreachable: number;
  icmpRefused: number;
}

export class WinDivertPacketSource implements PacketSource<'windivert'>, OutboundGate {
  readonly kind = 'windivert' as const;
  readonly batch: PacketBatch;
  /**
   * Unexpected re-injection failures, in packets. WinDivertSendEx injects the rest of a batch when one packet fails
   * and reports only the last failure's code, so a failed batch counts as one failed packet (a lower bound) unless
   * it is an inbound ICMP message, which is sent on its own (see send()) and so counted exactly.
   */
  sendErrors = 0;
  /** Windows error of the last unexpected send failure, 0 if none. */
  lastSendError = 0;
  readonly expectedSendFailures: ExpectedSendFailures = { hostUnreachable: 0, icmpRefused: 0 };
  /** Set by beginStop(): the current handle no longer receives; receive() closes it once it is empty. */
  private stopping = false;
  /** Handles whose receiving was shut down by a reconfiguration, oldest first: drained, then closed. */
  private readonly draining: number[] = [];
  private current: number | null;
  /** The handle the packets in `batch` came from (sendHandle() picks the one they are sent through). */
  private batchHandle = INVALID_HANDLE;
  private readonly addrs = Buffer.alloc(WINDIVERT_BATCH_MAX * WINDIVERT_ADDRESS_SIZE);
  private readonly recvLen = new Uint32Array(1);
  private readonly addrLen = new Uint32Array(1);
  /** Packets whose length could not be read from their IP header: never sent back (SendEx would reject the batch). */
  private readonly broken = new Uint8Array(WINDIVERT_BATCH_MAX);
  private readonly parsed = new ParsedPacket();
  private readonly idle = new Int32Array(new SharedArrayBuffer(4));
  private readonly ledger: HandleLedger;
  /** A refusal and its address, copied here to be sent (made once). */
  private readonly refusalPacket = Buffer.alloc(REFUSAL_MAX_BYTES);
  private readonly refusalAddr = Buffer.alloc(WINDIVERT_ADDRESS_SIZE);
  /** The app gate's worker half (apps lists), when the host half shares its rings. */
  private readonly apps: AppCheck | null;

  constructor(
    private readonly api: WinDivertApi,
    init: Pick<WinDivertSourceInit, 'handle' | 'ledger'> & Partial<Pick<WinDivertSourceInit, 'appGate'>>,
    cfg?: InterceptConfig,
  ) {
    this.current = init.handle;
    this.ledger = new HandleLedger(init.ledger);
    this.batch = allocatePacketBatch(WINDIVERT_BATCH_MAX, WINDIVERT_BATCH_BYTES);
    this.apps = init.appGate ? new AppCheck(init.appGate) : null;
    if (cfg) this.apps?.configure(cfg);
  }

  receive(timeoutMs: number): number {
    const b = this.batch;
    b.count = 0;
    for (;;) {
      const h = this.draining.length > 0 ? this.draining[0] : this.current;
      if (h === null) return 0;
      this.recvLen[0] = 0;
      this.addrLen[0] = this.addrs.length;
      if (this.api.recvEx(h, b.data, b.data.length, this.recvLen, this.addrs, this.addrLen)) {
        this.batchHandle = h;
        const n = this.split(this.recvLen[0], this.addrLen[0] / WINDIVERT_ADDRESS_SIZE);
        if (this.apps?.active) this.apps.drainVerdicts(); // before the batch is decided
        return n;
      }
      const err = this.api.lastError();
      if (err === WinError.NO_DATA) {
        if (this.draining.length > 0) {
          this.closeHandle(this.draining.shift()!);
          continue;
        }
        if (this.stopping) {
          // Stopping and everything decided: only now is closing safe (nothing is left to put back unmodified).
          this.closeHandle(h);
          this.current = null;
          return 0;
        }
        // Our handle was shut down: a stop or a new handle is on its way. Yield briefly instead of spinning.
        Atomics.wait(this.idle, 0, 0, Math.min(Math.max(timeoutMs, 0), SHUTDOWN_IDLE_MS));
        return 0;
      }
      if (err === WinError.INSUFFICIENT_BUFFER) continue; // cannot happen (buffer ≥ MTU max); the packet is lost
      throw winDivertCallError('WinDivertRecvEx', err, { handle: h });
    }
  }

  /** Cut the received bytes into packets by their own IP length; one address each. */
  private split(total: number, n: number): number {
    const b = this.batch;
    const data = b.data;
    let off = 0;
    let count = 0;
    for (let i = 0; i < n && off < total; i++) {
      const version = data[off] >> 4;
      let len = 0;
      if (version === 4 && total - off >= 4) len = data.readUInt16BE(off + 2);
      else if (version === 6 && total - off >= 6) len = 40 + data.readUInt16BE(off + 4);
      const bad = len < 20 || off + len > total;
      if (bad) len = total - off;
      b.offset[i] = off;
      b.length[i] = len;
      const bits = this.addrs.readUInt32LE(i * WINDIVERT_ADDRESS_SIZE + AddressOffset.Bits);
      b.outbound[i] = (bits & AddressFlag.Outbound) !== 0 ? 1 : 0;
      b.injected[i] = (bits & AddressFlag.Impostor) !== 0 ? 1 : 0;
      b.ifIndex[i] = this.addrs.readUInt32LE(i * WINDIVERT_ADDRESS_SIZE + AddressOffset.IfIdx);
      // Neither transport checksum flag set: the stack left the checksum to the NIC (finishReflected completes it).
      b.partialChecksum[i] = (bits & (AddressFlag.TCPChecksum | AddressFlag.UDPChecksum)) === 0 ? 1 : 0;
      b.verdict[i] = Verdict.Pass;
      b.appGate[i] = 0;
      this.broken[i] = bad ? 1 : 0;
      off += len;
      count = i + 1;
      if (bad) break;
    }
    b.count = count;
    return count;
  }

  /** The app gate, while some reflect address has an apps list (the data plane asks it; PacketSource). */
  get outboundGate(): OutboundGate | null {
    return this.apps?.active ? this : null;
  }

  /** OutboundGate: moves whenever the app gate's answers may change. */
  get generation(): number {
    return this.apps?.generation ?? 0;
  }

  /** OutboundGate: the app gate's mark of batch packet `index`, also left in batch.appGate. */
  mark(index: number, buf: Uint8Array, off: number, len: number, p: ParsedPacket): AppGateMark {
    // A packet split wrongly is never sent (send); it must not reach the gate's held ring either.
    const m = this.broken[index] === 1
      ? AppGateMark.Decide
      : this.apps!.mark(buf, off, len, p, this.addrs, index * WINDIVERT_ADDRESS_SIZE);
    this.batch.appGate[index] = m;
    return m;
  }

  send(): void {
    const b = this.batch;
    const data = b.data;
    const addrs = this.addrs;
    let bytes = 0;
    let kept = 0;
    for (let i = 0; i < b.count; i++) {
      const verdict = b.verdict[i];
      if (verdict === Verdict.Drop || this.broken[i] === 1) continue;
      const base = i * WINDIVERT_ADDRESS_SIZE;
      const bits = addrs.readUInt32LE(base + AddressOffset.Bits);
      const off = b.offset[i];
      const len = b.length[i];
      if (verdict === Verdict.Reflect) this.finishReflected(off, len, base, bits);
      if (verdict === Verdict.Reflect || b.outbound[i] === 0) {
        if (isIcmp(data, off)) {
          // Windows refuses to take some inbound ICMP/ICMPv6 messages (a documented, harmless failure). Sent alone,
          // such a refusal is counted exactly and cannot hide a real failure of another packet. Packets before
          // this one were already moved below `off`, so its bytes are still intact here.
          this.sendOne(off, len, base);
          continue;
        }
      }
      if (bytes !== off) data.copyWithin(bytes, off, off + len);
      if (kept !== i) addrs.copyWithin(kept * WINDIVERT_ADDRESS_SIZE, base, base + WINDIVERT_ADDRESS_SIZE);
      bytes += len;
      kept++;
    }
    b.count = 0;
    if (kept === 0) return;
    if (!this.api.sendEx(this.sendHandle(), data, bytes, null, addrs, kept * WINDIVERT_ADDRESS_SIZE)) {
      const err = this.api.lastError();
      if (err === WinError.HOST_UNREACHABLE) this.expectedSendFailures.hostUnreachable++;
      else this.countUnexpected(err);
    }
  }

  /** Inject one inbound ICMP/ICMPv6 packet on its own (two small views per call: the only per-packet allocation,
   *  on a path as rare as ICMP is). */
  private sendOne(off: number, len: number, base: number): void {
    const packet = this.batch.data.subarray(off, off + len);
    const addr = this.addrs.subarray(base, base + WINDIVERT_ADDRESS_SIZE);
    if (this.api.sendEx(this.sendHandle(), packet, len, null, addr, WINDIVERT_ADDRESS_SIZE)) return;
    const err = this.api.lastError();
    if (err === WinError.HOST_UNREACHABLE) this.expectedSendFailures.hostUnreachable++;
    // 232: the handle was shut down for sending (the driver's STATUS_PIPE_EMPTY), never an ICMP refusal.
    else if (err === WinError.INVALID_HANDLE || err === WinError.INVALID_PARAMETER || err === WinError.NO_DATA) this.countUnexpected(err);
    else this.expectedSendFailures.icmpRefused++;
  }

  /**
   * Inject a refusal inbound in answer to batch packet `index`: its address with Outbound cleared (the refusal
   * enters on the interface the refused packet was leaving by) and every checksum marked valid (they are complete).
   * Sent before the batch, while the batch's addresses are still in place.
   */
  sendRefusal(index: number, packet: Uint8Array, length: number): void {
    const addr = this.refusalAddr;
    this.addrs.copy(addr, 0, index * WINDIVERT_ADDRESS_SIZE, (index + 1) * WINDIVERT_ADDRESS_SIZE);
    const bits = (addr.readUInt32LE(AddressOffset.Bits) & ~AddressFlag.Outbound) | AddressFlag.IPChecksum | AddressFlag.TCPChecksum | AddressFlag.UDPChecksum;
    addr.writeUInt32LE(bits >>> 0, AddressOffset.Bits);
    for (let i = 0; i < length; i++) this.refusalPacket[i] = packet[i];
    if (this.api.sendEx(this.sendHandle(), this.refusalPacket, length, null, addr, WINDIVERT_ADDRESS_SIZE)) return;
    const err = this.api.lastError();
    if (err === WinError.HOST_UNREACHABLE) this.expectedSendFailures.hostUnreachable++;
    else if (err === WinError.INVALID_HANDLE || err === WinError.INVALID_PARAMETER || isIcmp(this.refusalPacket, 0) === false) this.countUnexpected(err);
    else this.expectedSendFailures.icmpRefused++;
  }

  /**
   * Every batch is sent through the NEWEST handle, even one drained from an older handle. The driver's internal
   * priority is the user priority << 16 | a host-wide per-open counter, and a handle skips only what was injected at
   * its own or a lower internal priority. Normally the newest handle ranks highest, so what an old handle injects
   * never reaches it; but the 16-bit counter wraps every 65,536 opens on the host, and then a new handle ranks BELOW
   * the old one and would capture the old one's reflected packets (inbound from a reflect address: dropped as
   * forged). Sent through the newest handle, our packets can reach only handles ranked below it, and every older
   * handle of ours has stopped receiving (apply() shuts it down before the worker adopts the new one).
   */
  private sendHandle(): number {
    return this.current ?? this.batchHandle;
  }

  private countUnexpected(err: number): void {
    this.sendErrors++;
    this.lastSendError = err;
  }

  /**
   * Turn a reflected packet's address into an inbound one: clear Outbound, keep the interface indexes (the packet
   * re-enters on the interface it was leaving by), and complete its checksums (completeChecksums).
   */
  private finishReflected(off: number, len: number, base: number, bits: number): void {
    this.completeAt(off, len, base, bits);
    this.addrs.writeUInt32LE((this.addrs.readUInt32LE(base + AddressOffset.Bits) & ~AddressFlag.Outbound) >>> 0, base + AddressOffset.Bits);
  }

  /**
   * Where the checksum flags of packet `i` say the stack left a checksum for the NIC to compute (offload), compute
   * it now and mark it valid: the bytes are then exactly what goes out (no NIC sees an inbound packet, and the driver
   * would otherwise recompute IP/TCP/UDP checksums whose flag is 0 at injection: same result, done where we can show
   * it). Idempotent; the worker calls it for a reflected packet before a capture copies it, send() for every one.
   */
  completeChecksums(i: number): void {
    const base = i * WINDIVERT_ADDRESS_SIZE;
    this.completeAt(this.batch.offset[i], this.batch.length[i], base, this.addrs.readUInt32LE(base + AddressOffset.Bits));
  }

  private completeAt(off: number, len: number, base: number, bits: number): void {
    let next = bits;
    const missing = ~bits & (AddressFlag.IPChecksum | AddressFlag.TCPChecksum | AddressFlag.UDPChecksum);
    if (missing !== 0 && parsePacket(this.batch.data, off, len, this.parsed)) {
      const p = this.parsed;
      if (p.family === 4 && (missing & AddressFlag.IPChecksum) !== 0) {
        fillIpv4HeaderChecksum(this.batch.data, p.ipOffset);
        next |= AddressFlag.IPChecksum;
      }
      if (p.protocol === IpProto.Tcp && (missing & AddressFlag.TCPChecksum) !== 0 && fillTransportChecksum(this.batch.data, p)) {
        next |= AddressFlag.TCPChecksum;
      }
      if (p.protocol === IpProto.Udp && (missing & AddressFlag.UDPChecksum) !== 0 && fillTransportChecksum(this.batch.data, p)) {
        next |= AddressFlag.UDPChecksum;
      }
    }
    this.addrs.writeUInt32LE(next >>> 0, base + AddressOffset.Bits);
  }

  adopt(cfg: InterceptConfig, update: WinDivertSourceUpdate): void {
    this.apps?.configure(cfg);
    if (update.switchTo === null) return; // same filter: keep the handle
    // The main thread already shut down receiving on the current handle; drain it before using the new one.
    if (this.current !== null) this.draining.push(this.current);
    this.current = update.switchTo.handle;
  }

  /**
   * Stop capturing: shut down receiving on the current handle. The caller then calls receive() (deciding and sending
   * every batch as usual) until it returns 0, which happens once every handle is empty and closed.
   */
  beginStop(): void {
    this.stopping = true;
    if (this.current !== null) this.api.shutdown(this.current, WinDivertShutdown.Recv);
  }

  close(): void {
    for (const h of this.draining.splice(0)) this.closeHandle(h);
    if (this.current !== null) this.closeHandle(this.current);
    this.current = null;
  }

  private closeHandle(h: number): void {
    if (this.ledger.claim(h)) this.api.close(h);
  }
}

/** An ICMP (IPv4 protocol 1) or ICMPv6 (IPv6 next header 58, no extension headers between) packet. */
function isIcmp(data: Buffer, off: number): boolean {
  const version = data[off] >> 4;
  return version === 4 ? data[off + 9] === IpProto.Icmp : version === 6 && data[off + 6] === IpProto.Icmpv6;
}

export const createWinDivertPacketSource: PacketSourceFactory<'windivert'> = (init, cfg) =>
  new WinDivertPacketSource(loadWinDivert(init.dllPath), init, cfg);
