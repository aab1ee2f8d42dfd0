/**
 * The app gate's main-thread half (`AppGate`): who may use a reflect address with an `apps` list (executables by
 * full path, AppContainer packages by family name; compared case-insensitively, as Windows compares them).
 *
 * WinDivert's network layer carries no process. Its SOCKET layer does (socket-events.ts): the gate reads connect
 * events there and keeps them by 5-tuple (app-flow-key.ts). The worker (app-check.ts) hands over a copy of each
 * new flow's first packets it has no verdict for; the gate decides the flow as soon as its connect event is known —
 * at once when the event was read first, else when it arrives, at most APP_HOLD_MS later, else "no socket event" —
 * sends the verdict to the worker, and re-offers the held packets by injecting them through a handle of its own one
 * priority step above the capture handle: the driver hands what a handle injects to the handles ranked below it,
 * so the worker receives them again, now with their verdict (an allowed flow's packets are reflected, a refused
 * flow's first packet is answered with the refusal, the others are dropped). Held packets are bounded in flows,
 * packets and bytes (limits.ts); a flow that finds no room is refused at once ("hold full").
 *
 * A connect event that comes after its flow was refused for want of one re-decides that flow (the client's next
 * retransmission gets the new verdict); so does a live change of the lists, for every flow whose process is known.
 */
import { allowListsOf } from '../../config/allow-lists.ts';
import type { InterceptConfig } from '../../config/intercept-config.ts';
import type { ProcessIdentity, ProcessLookup } from '../../platform/windows/process-identity.ts';
import { WINDIVERT_ADDRESS_SIZE } from './address.ts';
import { FlowVerdict, WorkerCounter } from './app-check.ts';
import type { AppGateRings } from '../packet-source.ts';
import type { SocketQuery } from '../../platform/linux/socket-owners.ts';
import { addressKey, FLOW_KEY_BYTES, keyRemote, packetFlowKey, socketFlowKey, textFlowKey } from './app-flow-key.ts';
import { ParsedPacket, parsePacket } from '../../packet/parse.ts';
import { ErrorCode, RetroflectError } from '../../errors.ts';
import { winDivertOpenError } from './errors.ts';
import { INVALID_HANDLE, WinDivertLayer, WinDivertShutdown, type WinDivertApi } from './ffi.ts';
import { APP_FLOWS_KEPT, APP_HOLD_BYTES, APP_HOLD_FLOWS, APP_HOLD_MS, APP_HOLD_PACKETS } from './limits.ts';
import { SOCKET_EVENT_TTL_MS, SOCKET_EVENTS_KEPT, WINDIVERT_PRIORITY } from './limits.ts';
import { RecordRing } from './record-ring.ts';
import { SocketEventReader, type SocketEvent } from './socket-events.ts';

/** Bytes of each ring: held packets (worker → gate) and verdicts (gate → worker, 38 bytes each). */
const VERDICT_RING_BYTES = 256 * 1024;

export interface AppGateOptions {
  /** The capture handle's priority; the re-offer handle takes the next one up. */
  priority: number;
  holdMs?: number;
  holdFlows?: number;
  holdPackets?: number;
  holdBytes?: number;
  /** Where failures of the SOCKET reader are reported (the engine's log). */
  warn?: (message: string) => void;
}

/** What the gate counts, for `status` (backendInfo) and the tests. */
export interface AppGateCounts {
  allowed: number;
  notListed: number;
  noSocketEvent: number;
  holdFull: number;
  /** Flows waiting for their connect event now, and their packets. */
  heldFlows: number;
  heldPackets: number;
}

interface Held {
  packets: { addr: Buffer; bytes: Buffer }[];
  bytes: number;
  timer: ReturnType<typeof setTimeout>;
}

/** Who made a flow, as `flows` lists it. */
export interface FlowProcess {
  pid: number;
  processName: string | null;
  packageFamilyName: string | null;
}

interface FlowOwner {
  verdict: FlowVerdict;
  pid: number | null;
  identity: ProcessIdentity | null;
}

/** Create the rings both halves share (posted to the worker in WinDivertSourceInit). */
export function createAppGateRings(holdBytes: number = APP_HOLD_BYTES.DEFAULT): AppGateRings {
  return {
    held: new RecordRing(holdBytes).buffer,
    verdicts: new RecordRing(VERDICT_RING_BYTES).buffer,
    counters: new SharedArrayBuffer(16),
  };
}

export class AppGate {
  readonly rings: AppGateRings;
  private readonly held: RecordRing;
  private readonly verdictRing: RecordRing;
  private readonly workerCounters: Int32Array;
  private readonly holdMs: number;
  private readonly limits: { flows: number; packets: number; bytes: number };
  private readonly events = new Map<string, { pid: number; at: number }>();
  private readonly flows = new Map<string, FlowOwner>();
  private readonly pending = new Map<string, Held>();
  private heldPackets = 0;
  private heldBytes = 0;
  /** Per restricted address (16-byte key): its apps list, lower-cased. */
  private lists = new Map<string, Set<string>>();
  private readonly counts = { allowed: 0, notListed: 0, noSocketEvent: 0, holdFull: 0 };
  private reader: SocketEventReader | null = null;
  private reofferHandle = INVALID_HANDLE;
  private running = false;
  private loops: Promise<void>[] = [];

  constructor(
    private readonly api: WinDivertApi,
    private readonly lookup: ProcessLookup,
    private readonly opts: AppGateOptions,
    rings?: AppGateRings,
  ) {
    this.holdMs = clamp(opts.holdMs ?? APP_HOLD_MS.DEFAULT, APP_HOLD_MS);
    this.limits = {
      flows: clamp(opts.holdFlows ?? APP_HOLD_FLOWS.DEFAULT, APP_HOLD_FLOWS),
      packets: clamp(opts.holdPackets ?? APP_HOLD_PACKETS.DEFAULT, APP_HOLD_PACKETS),
      bytes: clamp(opts.holdBytes ?? APP_HOLD_BYTES.DEFAULT, APP_HOLD_BYTES),
    };
    this.rings = rings ?? createAppGateRings(this.limits.bytes);
    this.held = new RecordRing(this.rings.held);
    this.verdictRing = new RecordRing(this.rings.verdicts);
    this.workerCounters = new Int32Array(this.rings.counters);
  }

  /** Whether the gate's handles are open. */
  get started(): boolean {
    return this.running;
  }

  /**
   * Open the SOCKET handle and the re-offer handle and start reading. Throws (nothing left open) when either cannot
   * be opened, or when the capture handle's priority is WinDivert's highest (no room above it to re-offer from).
   */
  start(): void {
    if (this.running) return;
    if (this.opts.priority >= WINDIVERT_PRIORITY.MAX) {
      const message = `'apps' lists need a WinDivert priority below ${WINDIVERT_PRIORITY.MAX}: held packets are ` +
        're-offered from one step above the capture handle.';
      throw new RetroflectError(ErrorCode.INVALID_PARAMS, message, {
        hint: `Give the engine a lower --priority (default ${WINDIVERT_PRIORITY.DEFAULT}), or remove the apps lists.`,
        details: { priority: this.opts.priority },
      });
    }
    const reader = new SocketEventReader(this.api);
    const h = this.api.open('false', WinDivertLayer.Network, this.opts.priority + 1, 0n);
    if (h === INVALID_HANDLE) {
      const err = this.api.lastError();
      reader.close();
      throw winDivertOpenError(err, { dllPath: this.api.path, filter: 'false', priority: this.opts.priority + 1 });
    }
    this.reader = reader;
    this.reofferHandle = h;
    this.running = true;
    this.loops = [this.readEvents(reader), this.watchHeld()];
  }

  /** Stop reading, let the loops end, close both handles. Held packets are dropped (as a stop drops a queue). */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.reader?.shutdown();
    Atomics.notify(this.held.signal.array, this.held.signal.index);
    await Promise.all(this.loops);
    this.reader?.close();
    this.reader = null;
    if (this.reofferHandle !== INVALID_HANDLE) this.api.close(this.reofferHandle);
    this.reofferHandle = INVALID_HANDLE;
    for (const held of this.pending.values()) clearTimeout(held.timer);
    this.pending.clear();
    this.heldPackets = this.heldBytes = 0;
  }

  /** Take the apps lists of `cfg`; flows whose process is known are decided again under them. */
  configure(cfg: InterceptConfig): void {
    this.lists = new Map(
      allowListsOf(cfg)
        .filter((a) => a.apps && cfg.reflectAddresses.includes(a.address))
        .map((a) => [addressKey(a.address), new Set(a.apps!.map((e) => e.toLowerCase()))]),
    );
    for (const [key, flow] of this.flows) {
      if (flow.pid === null) continue;
      const verdict = this.judge(key, flow.identity);
      if (verdict !== flow.verdict) this.settle(key, flow.pid, flow.identity, verdict);
    }
  }

  /** Whether any address has an apps list. */
  get restricting(): boolean {
    return this.lists.size > 0;
  }

  counters(): AppGateCounts {
    return {
      ...this.counts,
      holdFull: this.counts.holdFull + Atomics.load(this.workerCounters, WorkerCounter.RingFull),
      heldFlows: this.pending.size,
      heldPackets: this.heldPackets,
    };
  }

  /** Who made a listed flow (the client's socket), where the gate decided it. */
  owner(q: SocketQuery): FlowProcess | null {
    let key: string;
    try {
      key = textFlowKey(q.protocol, q.localAddress, q.localPort, q.remoteAddress, q.remotePort);
    } catch {
      return null;
    }
    const flow = this.flows.get(key);
    if (!flow || flow.pid === null) return null;
    const id = flow.identity;
    return { pid: flow.pid, processName: id?.processName ?? null, packageFamilyName: id?.packageFamilyName ?? null };
  }

  /** Connect events read from the SOCKET handle (the read loop calls this; tests may too). */
  socketEvents(events: readonly SocketEvent[], now = Date.now()): void {
    for (const e of events) {
      const key = socketFlowKey(e);
      this.events.delete(key);
      this.events.set(key, { pid: e.processId, at: now });
      if (this.events.size > SOCKET_EVENTS_KEPT.DEFAULT) this.events.delete(this.events.keys().next().value as string);
      const held = this.pending.get(key);
      if (held) {
        this.release(key, held, this.decide(key, e.processId));
        continue;
      }
      const known = this.flows.get(key);
      // A flow refused for want of an event, or a reused 5-tuple of another process: decide it again.
      if (known && (known.pid === null || known.pid !== e.processId)) this.decide(key, e.processId);
    }
  }

  /** Take the packets the worker held back (the watch loop calls this; tests may too). */
  takeHeld(now = Date.now()): void {
    for (let r = this.held.read(); r !== null; r = this.held.read()) {
      const addr = Buffer.from(r.buffer, r.byteOffset, WINDIVERT_ADDRESS_SIZE);
      const bytes = Buffer.from(r.buffer, r.byteOffset + WINDIVERT_ADDRESS_SIZE, r.length - WINDIVERT_ADDRESS_SIZE);
      const key = keyOfPacket(bytes);
      if (key === null) continue;
      const held = this.pending.get(key);
      if (held) {
        if (this.hasRoom(bytes.length)) this.hold(held, addr, bytes);
        continue; // past a cap: this copy is dropped; the flow's verdict comes with its first packets
      }
      const known = this.flows.get(key);
      if (known) {
        this.send(key, known.verdict); // decided meanwhile: the worker lacked the verdict when it held this
        this.reoffer([{ addr, bytes }], known.verdict);
        continue;
      }
      const event = this.events.get(key);
      if (event && now - event.at <= SOCKET_EVENT_TTL_MS) {
        this.reoffer([{ addr, bytes }], this.decide(key, event.pid));
        continue;
      }
      if (this.pending.size >= this.limits.flows || !this.hasRoom(bytes.length)) {
        this.counts.holdFull++;
        this.settle(key, null, null, FlowVerdict.HoldFull);
        this.reoffer([{ addr, bytes }], FlowVerdict.HoldFull);
        continue;
      }
      const entry: Held = { packets: [], bytes: 0, timer: setTimeout(() => this.expire(key), this.holdMs) };
      entry.timer.unref?.();
      this.pending.set(key, entry);
      this.hold(entry, addr, bytes);
    }
  }

  /** Whether one more packet of `bytes` fits under the packet and byte caps. */
  private hasRoom(bytes: number): boolean {
    return this.heldPackets < this.limits.packets && this.heldBytes + bytes <= this.limits.bytes;
  }

  private hold(held: Held, addr: Buffer, bytes: Buffer): void {
    held.packets.push({ addr: Buffer.from(addr), bytes: Buffer.from(bytes) });
    held.bytes += bytes.length;
    this.heldPackets++;
    this.heldBytes += bytes.length;
  }

  /** The hold time of a flow ran out without its connect event. */
  private expire(key: string): void {
    const held = this.pending.get(key);
    if (!held) return;
    this.counts.noSocketEvent++;
    this.settle(key, null, null, FlowVerdict.NoSocketEvent);
    this.release(key, held, FlowVerdict.NoSocketEvent);
  }

  private release(key: string, held: Held, verdict: FlowVerdict): void {
    clearTimeout(held.timer);
    this.pending.delete(key);
    this.heldPackets -= held.packets.length;
    this.heldBytes -= held.bytes;
    this.reoffer(held.packets, verdict);
  }

  /** Decide a flow by its process, record and send the verdict. */
  private decide(key: string, pid: number): FlowVerdict {
    const identity = this.lookup.identify(pid);
    const verdict = this.judge(key, identity);
    if (verdict === FlowVerdict.Allowed) this.counts.allowed++;
    else this.counts.notListed++;
    this.settle(key, pid, identity, verdict);
    return verdict;
  }

  private judge(key: string, identity: ProcessIdentity | null): FlowVerdict {
    const list = this.lists.get(keyRemote(key));
    if (!list) return FlowVerdict.Allowed; // the address lost its list meanwhile
    if (!identity) return FlowVerdict.NotListed;
    const family = identity.packageFamilyName?.toLowerCase();
    const listed = list.has(identity.imagePath.toLowerCase()) || (family !== undefined && list.has(family));
    return listed ? FlowVerdict.Allowed : FlowVerdict.NotListed;
  }

  private settle(key: string, pid: number | null, identity: ProcessIdentity | null, verdict: FlowVerdict): void {
    this.flows.delete(key);
    this.flows.set(key, { verdict, pid, identity });
    if (this.flows.size > APP_FLOWS_KEPT.DEFAULT) {
      const oldest = this.flows.keys().next().value as string;
      this.flows.delete(oldest);
      this.send(oldest, 0);
    }
    this.send(key, verdict);
  }

  private send(key: string, verdict: number): void {
    if (!this.verdictRing.write(Buffer.from(key, 'latin1'), Uint8Array.of(verdict))) {
      this.opts.warn?.('apps: the worker is not taking flow verdicts; a held flow waits for its next packet.');
    }
  }

  /**
   * Put held packets back in front of the capture handle. An allowed flow's packets all go (in order); a refused
   * flow's first one only (it gets the refusal; the rest would only repeat it).
   */
  private reoffer(packets: { addr: Buffer; bytes: Buffer }[], verdict: FlowVerdict): void {
    if (this.reofferHandle === INVALID_HANDLE) return;
    const list = verdict === FlowVerdict.Allowed ? packets : packets.slice(0, 1);
    for (const p of list) {
      this.api.sendEx(this.reofferHandle, p.bytes, p.bytes.length, null, p.addr, WINDIVERT_ADDRESS_SIZE);
    }
  }

  private async readEvents(reader: SocketEventReader): Promise<void> {
    while (this.running) {
      let events: SocketEvent[];
      try {
        events = await reader.readAsync();
      } catch (err) {
        const why = (err as Error).message;
        this.opts.warn?.(`apps: reading socket events failed (${why}); new flows are refused until restart.`);
        return;
      }
      if (events.length === 0) return; // shut down
      this.socketEvents(events);
    }
  }

  private async watchHeld(): Promise<void> {
    const { array, index } = this.held.signal;
    while (this.running) {
      const seen = Atomics.load(array, index);
      this.takeHeld();
      const w = waitAsync(array, index, seen);
      if (w.async) await w.value;
    }
  }
}

/** The client's flow key of a held packet (an outbound TCP/UDP packet, as the worker parsed it). */
function keyOfPacket(bytes: Buffer): string | null {
  const p = new ParsedPacket();
  if (!parsePacket(bytes, 0, bytes.length, p) || !p.hasTransport) return null;
  return packetFlowKey(bytes, p, false, new Uint8Array(FLOW_KEY_BYTES));
}

/** Atomics.waitAsync (Node 16+; the TypeScript lib in use predates its types). */
const waitAsync = (Atomics as unknown as {
  waitAsync(a: Int32Array, i: number, v: number): { async: boolean; value: Promise<string> | string };
}).waitAsync;

function clamp(value: number, { MIN, MAX }: { MIN: number; MAX: number }): number {
  return Math.min(Math.max(Math.trunc(value), MIN), MAX);
}
