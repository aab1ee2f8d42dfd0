/**
 * Windows packet backend: WinDivert 2.x at the network layer.
 *
 * One handle with one filter (filter.ts) captures both what retroflect reflects (outbound packets to a
 * reflect address) and what it shields (inbound packets from other hosts to a shield port). Captured packets are
 * taken from the network stack; whatever is not sent back is dropped. So:
 *   Reflect → sent back as inbound (Outbound cleared, interface kept, checksums finished where the NIC would have);
 *   Pass    → sent back unchanged;
 *   Drop    → not sent.
 *
 *  - `WinDivertHostBackend` (main thread): finds WinDivert.dll, opens handles, shuts them down on stop and on apply (a live change).
 *  - `WinDivertPacketSource` (worker): RecvEx/SendEx in batches of up to 255 packets, no allocation per packet.
 *
 * A live change opens the NEW handle first, so no packet goes uncaptured, then shuts down receiving on the old one.
 * The worker drains the old handle (WinDivert returns what is still queued, then ERROR_NO_DATA), deciding each
 * packet as usual, closes it and moves to the new one. Both handles have the same priority, and WinDivert never
 * hands a handle a packet that a handle of equal or higher priority injected, so the new handle never sees our own
 * reflected packets (they arrive from a reflect address, which the new filter captures as forged). Stop drains the
 * same way (beginStop): closing a handle that still holds packets would put them back unmodified — outbound packets
 * to a reflect address onto the network, inbound packets to a shielded port into the server.
 * Handles are numbers shared through a small ledger in shared memory (HandleLedger), so whichever thread gets to a
 * handle last closes it exactly once, even when the worker died.
 *
 * WinDivertRecvEx has no timeout without overlapped I/O: receive() blocks until packets arrive or the main thread
 * shuts the handle down (wake(), apply()). The worker loop reads control messages after every receive, and every
 * message that matters (stop, the engine's reconfigure) is preceded by such a shutdown, so nothing waits on an idle link.
 */
import type { InterceptConfig } from '../../config/intercept-config.ts';
import { ErrorCode, RetroflectError } from '../../errors.ts';
import { fillIpv4HeaderChecksum, fillTransportChecksum } from '../../packet/checksum.ts';
import { IpProto, ParsedPacket, parsePacket } from '../../packet/parse.ts';
import { locateWinDivert } from './location.ts';
import {
  allocatePacketBatch,
  Verdict,
  type HostBackend,
  type PacketBatch,
  type PacketSource,
  type PacketSourceFactory,
  type PlanStep,
  type WinDivertSourceInit,
  type WinDivertSourceUpdate,
} from '../packet-source.ts';
import { AddressFlag, AddressOffset, WINDIVERT_ADDRESS_SIZE } from './address.ts';
import { queueParamError, winDivertCallError, winDivertLoadError, winDivertOpenError } from './errors.ts';
import {
  INVALID_HANDLE,
  loadWinDivert,
  QUEUE_LIMITS,
  WINDIVERT_BATCH_MAX,
  WINDIVERT_MTU_MAX,
  WINDIVERT_PRIORITY_MAX,
  WinDivertLayer,
  WinDivertParam,
  WinDivertShutdown,
  WinError,
  type WinDivertApi,
} from './ffi.ts';
import { buildWinDivertFilter } from './filter.ts';
import { DEFAULT_WINDIVERT_PRIORITY } from './priority.ts';

/** Packet bytes per batch: room for many full-size packets, and always for one of WinDivert's largest. */
export const WINDIVERT_BATCH_BYTES = Math.max(512 * 1024, WINDIVERT_MTU_MAX);

/** Queue settings applied to every handle. Larger than WinDivert's defaults so a busy worker does not lose bursts. */
export const DEFAULT_QUEUE = { length: 8192, timeMs: 2000, bytes: 8 * 1024 * 1024 } as const;

/** How long an idle receive() pauses when its handle is shut down and no new handle has arrived yet. */
const SHUTDOWN_IDLE_MS = 2;

// ---------------------------------------------------------------------------------------------------------------
// Handle ledger: who still has to close which handle.

/** Ledger slot states. */
const SlotState = { Free: 0, Open: 1, Closed: 2, Writing: 3 } as const;
/** Handles open at once are few (current + one being drained); 64 leaves room for fast successive changes. */
const LEDGER_SLOTS = 64;
/**
 * A live change waits while this many handles are still open (the worker drains and closes old ones on its own
 * thread), so a burst of changes faster than the worker can drain slows down instead of running out of slots.
 */
const MAX_OPEN_BEFORE_SWITCH = LEDGER_SLOTS / 2;
/** How long a change waits for the worker to close old handles before it fails. */
const SWITCH_WAIT_MS = 10_000;

/**
 * Shared record of the handles the main thread opened and nobody has closed yet. A handle is closed by whoever
 * moves its slot from Open to Closed (an atomic compare-exchange), so a handle value is never closed twice — which
 * matters on Windows, where a closed handle's number may be reused by an unrelated object.
 */
export class HandleLedger {
  readonly buffer: SharedArrayBuffer;
  private readonly states: Int32Array;
  private readonly handles: BigInt64Array;

  constructor(buffer?: SharedArrayBuffer) {
    this.buffer = buffer ?? new SharedArrayBuffer(LEDGER_SLOTS * (4 + 8));
    this.handles = new BigInt64Array(this.buffer, 0, LEDGER_SLOTS);
    this.states = new Int32Array(this.buffer, LEDGER_SLOTS * 8, LEDGER_SLOTS);
  }

  add(handle: number): void {
    for (let i = 0; i < LEDGER_SLOTS; i++) {
      const s = Atomics.load(this.states, i);
      if (s !== SlotState.Free && s !== SlotState.Closed) continue;
      if (Atomics.compareExchange(this.states, i, s, SlotState.Writing) !== s) continue;
      Atomics.store(this.handles, i, BigInt(handle));
      Atomics.store(this.states, i, SlotState.Open);
      return;
    }
    throw new RetroflectError(ErrorCode.INTERNAL, 'Too many WinDivert handles are open at once.', {
      hint: 'Wait for earlier config changes to finish, then retry.',
    });
  }

  /** True when the caller now owns closing `handle` (it was open and nobody claimed it before). */
  claim(handle: number): boolean {
    const h = BigInt(handle);
    for (let i = 0; i < LEDGER_SLOTS; i++) {
      if (Atomics.load(this.states, i) !== SlotState.Open || Atomics.load(this.handles, i) !== h) continue;
      if (Atomics.compareExchange(this.states, i, SlotState.Open, SlotState.Closed) === SlotState.Open) return true;
    }
    return false;
  }

  /** Handles still open. */
  open(): number[] {
    const out: number[] = [];
    for (let i = 0; i < LEDGER_SLOTS; i++) {
      if (Atomics.load(this.states, i) === SlotState.Open) out.push(Number(Atomics.load(this.handles, i)));
    }
    return out;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Worker half.

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

export class WinDivertPacketSource implements PacketSource<'windivert'> {
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
  /** The handle the packets in `batch` came from; they are sent back through it. */
  private batchHandle = INVALID_HANDLE;
  private readonly addrs = Buffer.alloc(WINDIVERT_BATCH_MAX * WINDIVERT_ADDRESS_SIZE);
  private readonly recvLen = new Uint32Array(1);
  private readonly addrLen = new Uint32Array(1);
  /** Packets whose length could not be read from their IP header: never sent back (SendEx would reject the batch). */
  private readonly broken = new Uint8Array(WINDIVERT_BATCH_MAX);
  private readonly parsed = new ParsedPacket();
  private readonly idle = new Int32Array(new SharedArrayBuffer(4));
  private readonly ledger: HandleLedger;

  constructor(
    private readonly api: WinDivertApi,
    init: Pick<WinDivertSourceInit, 'handle' | 'ledger'>,
  ) {
    this.current = init.handle;
    this.ledger = new HandleLedger(init.ledger);
    this.batch = allocatePacketBatch(WINDIVERT_BATCH_MAX, WINDIVERT_BATCH_BYTES);
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
        return this.split(this.recvLen[0], this.addrLen[0] / WINDIVERT_ADDRESS_SIZE);
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
      b.ifIndex[i] = this.addrs.readUInt32LE(i * WINDIVERT_ADDRESS_SIZE + AddressOffset.IfIdx);
      // Neither transport checksum flag set: the stack left the checksum to the NIC (finishReflected completes it).
      b.partialChecksum[i] = (bits & (AddressFlag.TCPChecksum | AddressFlag.UDPChecksum)) === 0 ? 1 : 0;
      b.verdict[i] = Verdict.Pass;
      this.broken[i] = bad ? 1 : 0;
      off += len;
      count = i + 1;
      if (bad) break;
    }
    b.count = count;
    return count;
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
    if (!this.api.sendEx(this.batchHandle, data, bytes, null, addrs, kept * WINDIVERT_ADDRESS_SIZE)) {
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
    if (this.api.sendEx(this.batchHandle, packet, len, null, addr, WINDIVERT_ADDRESS_SIZE)) return;
    const err = this.api.lastError();
    if (err === WinError.HOST_UNREACHABLE) this.expectedSendFailures.hostUnreachable++;
    else if (err === WinError.INVALID_HANDLE || err === WinError.INVALID_PARAMETER) this.countUnexpected(err);
    else this.expectedSendFailures.icmpRefused++;
  }

  private countUnexpected(err: number): void {
    this.sendErrors++;
    this.lastSendError = err;
  }

  /**
   * Turn a reflected packet's address into an inbound one: clear Outbound, keep the interface indexes (the packet
   * re-enters on the interface it was leaving by). Where the checksum flags say the stack left a checksum for the
   * NIC to compute (offload), compute it now, because no NIC will see an inbound packet; then mark it valid.
   */
  private finishReflected(off: number, len: number, base: number, bits: number): void {
    let next = bits & ~AddressFlag.Outbound;
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

  adopt(_cfg: InterceptConfig, update: WinDivertSourceUpdate): void {
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

export const createWinDivertPacketSource: PacketSourceFactory<'windivert'> = (init) =>
  new WinDivertPacketSource(loadWinDivert(init.dllPath).api, init);

// ---------------------------------------------------------------------------------------------------------------
// Main half.

export interface WinDivertHostOptions {
  /** Exact DLL to load (tests; the Linux test double). Otherwise it is searched for (windivert-location.ts). */
  dllPath?: string;
  /** The `--windivert-dir` option. */
  windivertDir?: string;
  /** WinDivert priority, -30000..30000 (higher sees packets first). Default DEFAULT_WINDIVERT_PRIORITY (why: there). */
  priority?: number;
  /** Queue settings; defaults DEFAULT_QUEUE. */
  queue?: { length?: number; timeMs?: number; bytes?: number };
}

export class WinDivertHostBackend implements HostBackend<'windivert'> {
  readonly kind = 'windivert' as const;
  readonly priority: number;
  private readonly queue: { length: number; timeMs: number; bytes: number };
  private api: WinDivertApi | null = null;
  private readonly ledger = new HandleLedger();
  /** The handle currently capturing (the newest), or null before start / after stop. */
  private handle: number | null = null;
  private filter = '';
  private driverVersion = '';

  constructor(private readonly opts: WinDivertHostOptions = {}) {
    const priority = opts.priority ?? DEFAULT_WINDIVERT_PRIORITY;
    if (!Number.isInteger(priority) || priority < -WINDIVERT_PRIORITY_MAX || priority > WINDIVERT_PRIORITY_MAX) {
      throw new RetroflectError(ErrorCode.INVALID_PARAMS, `WinDivert priority ${opts.priority} is not an integer from -${WINDIVERT_PRIORITY_MAX} to ${WINDIVERT_PRIORITY_MAX}.`, {
        hint: `Give --priority a whole number in that range (${DEFAULT_WINDIVERT_PRIORITY} is the default; higher sees packets first).`,
        details: { priority: opts.priority },
      });
    }
    this.priority = priority;
    this.queue = { ...DEFAULT_QUEUE, ...opts.queue };
    const checks: [string, number, readonly [number, number]][] = [
      ['queue length', this.queue.length, QUEUE_LIMITS.length],
      ['queue time (ms)', this.queue.timeMs, QUEUE_LIMITS.timeMs],
      ['queue size (bytes)', this.queue.bytes, QUEUE_LIMITS.bytes],
    ];
    for (const [name, value, [min, max]] of checks) {
      if (!Number.isInteger(value) || value < min || value > max) throw queueParamError(name, value, min, max);
    }
  }

  /** The DLL that would be loaded, and where it was looked for. Reads the file system only. */
  locate(): { path: string | null; searched: string[] } {
    if (this.opts.dllPath) return { path: this.opts.dllPath, searched: [this.opts.dllPath] };
    return locateWinDivert({ windivertDir: this.opts.windivertDir });
  }

  plan(cfg: InterceptConfig): PlanStep[] {
    const { path, searched } = this.locate();
    return [
      { action: 'load WinDivert', detail: path ?? `WinDivert.dll not found (looked in: ${searched.join(', ')})` },
      {
        action: 'open WinDivert handle',
        detail: `layer network, priority ${this.priority}, queue ${this.queue.length} packets / ${this.queue.timeMs} ms / ${this.queue.bytes} bytes, filter: ${buildWinDivertFilter(cfg)}`,
      },
    ];
  }

  async start(cfg: InterceptConfig): Promise<WinDivertSourceInit> {
    const api = this.load();
    const filter = buildWinDivertFilter(cfg);
    const handle = this.openHandle(api, filter);
    this.handle = handle;
    this.filter = filter;
    return { kind: 'windivert', dllPath: api.path, handle, ledger: this.ledger.buffer, filter };
  }

  async apply(_prev: InterceptConfig, next: InterceptConfig): Promise<WinDivertSourceUpdate> {
    const api = this.load();
    const filter = buildWinDivertFilter(next);
    if (filter === this.filter && this.handle !== null) return { kind: 'windivert', switchTo: null };
    for (const end = Date.now() + SWITCH_WAIT_MS; this.ledger.open().length >= MAX_OPEN_BEFORE_SWITCH && Date.now() < end; ) {
      await new Promise((r) => setTimeout(r, 2));
    }
    // New handle first: from here on both capture, so no packet slips through while we switch.
    const handle = this.openHandle(api, filter);
    const old = this.handle;
    this.handle = handle;
    this.filter = filter;
    if (old !== null) api.shutdown(old, WinDivertShutdown.Recv); // the worker drains it, then closes it
    return { kind: 'windivert', switchTo: { handle, filter } };
  }

  wake(): void {
    if (this.api && this.handle !== null) this.api.shutdown(this.handle, WinDivertShutdown.Recv);
  }

  async stop(): Promise<void> {
    const api = this.api;
    this.handle = null;
    if (!api) return;
    for (const h of this.ledger.open()) {
      if (!this.ledger.claim(h)) continue;
      api.shutdown(h, WinDivertShutdown.Both);
      api.close(h);
    }
  }

  /**
   * WinDivert's IfIdx is the Windows interface index (`Get-NetAdapter -InterfaceIndex N` names it). The index is
   * shown as it is: looking names up would need another Windows API for a name the admin can get with one cmdlet.
   */
  interfaceName(ifIndex: number): string {
    return ifIndex === 0 ? 'windivert' : `if${ifIndex}`;
  }

  /** Facts for `status`: filter, priority, driver version, DLL. */
  describe(): Record<string, string | number> {
    return { filter: this.filter, priority: this.priority, driverVersion: this.driverVersion, dll: this.api?.path ?? '' };
  }

  private load(): WinDivertApi {
    if (this.api) return this.api;
    const { path, searched } = this.locate();
    if (!path) throw winDivertLoadError(searched);
    try {
      this.api = loadWinDivert(path).api;
    } catch (err) {
      throw winDivertLoadError([path], err);
    }
    return this.api;
  }

  /** Open a handle for `filter` and apply the queue settings; on any failure nothing stays open. */
  private openHandle(api: WinDivertApi, filter: string): number {
    const handle = api.open(filter, WinDivertLayer.Network, this.priority, 0n);
    if (handle === INVALID_HANDLE) throw winDivertOpenError(api.lastError(), { dllPath: api.path, filter, priority: this.priority });
    const settings: [number, number, string][] = [
      [WinDivertParam.QueueLength, this.queue.length, 'WinDivertSetParam(QUEUE_LENGTH)'],
      [WinDivertParam.QueueTime, this.queue.timeMs, 'WinDivertSetParam(QUEUE_TIME)'],
      [WinDivertParam.QueueSize, this.queue.bytes, 'WinDivertSetParam(QUEUE_SIZE)'],
    ];
    for (const [param, value, call] of settings) {
      if (!api.setParam(handle, param, BigInt(value))) {
        const err = api.lastError();
        api.close(handle);
        throw winDivertCallError(call, err, { value });
      }
    }
    const version = new BigUint64Array(1);
    const major = api.getParam(handle, WinDivertParam.VersionMajor, version) ? version[0] : -1n;
    const minor = api.getParam(handle, WinDivertParam.VersionMinor, version) ? version[0] : -1n;
    this.driverVersion = `${major}.${minor}`;
    this.ledger.add(handle);
    return handle;
  }
}
