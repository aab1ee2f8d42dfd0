/**
 * The engine, main-thread half: owns the live intercept config and its counter slots, drives the host backend
 * (devices, routes, firewall, WinDivert handles) and the packet worker, and answers the control plane cheaply from
 * shared memory. Host transitions and stop() go through one queue, so a stop never cuts a transition in half.
 */
import { EventEmitter } from 'node:events';
import { MessageChannel, Worker } from 'node:worker_threads';
import {
  MAX_REFLECT_ADDRESSES,
  MAX_SHIELD_PORTS,
  addReflectAddresses,
  addShieldPorts,
  checkLimits,
  cloneInterceptConfig,
  shieldKey,
  type InterceptConfig,
} from '../config/intercept-config.ts';
import { portMapsOf } from '../config/port-maps.ts';
import { allowListsOf, cloneAllowLists } from '../config/allow-lists.ts';
import { appGateSlots, widerAllowLists } from './allowed-ports-config.ts';
import { allowedPortEntries } from '../packet/allowed-ports.ts';
import type { HostBackend, SourceUpdate } from '../packet-sources/packet-source.ts';
import { ErrorCode, RetroflectError } from '../errors.ts';
import { VERSION } from '../version.ts';
import { EngineCounters } from './counters.ts';
import type { DataplaneConfig } from './dataplane.ts';
import { mergeKernelFlows } from './flow-merge.ts';
import { flowIdleLimitMs, FlowTable } from './flow-table.ts';
import { EngineStatsSource } from './stats.ts';
import type { ChangeOrigin, EngineState, EngineStats, EngineStatus, FlowRecord, RunsAs } from './types.ts';
import type { MainToWorker, WorkerData, WorkerToMain } from './worker-protocol.ts';
import { createPacketWorker } from './worker-entry.ts';
import { CaptureHub } from '../capture/hub.ts';
import type { CapturePort } from '../capture/port.ts';

export interface EngineOptions {
  config: InterceptConfig;
  backend: HostBackend;
  pipeName?: string | null;
  configPath?: string | null;
  flowCapacity?: number;
  /** How long start() waits for the worker to report ready. */
  startTimeoutMs?: number;
  log?: (level: 'info' | 'warn' | 'error', message: string) => void;
  /** How the engine runs (shown in status); 'console' unless the caller knows better. */
  runsAs?: RunsAs;
}

/** Counter slots are stable for as long as an address or port stays configured, so its counters survive changes. */
class SlotMap<K> {
  private readonly slots = new Map<K, number>();
  private readonly free: number[];
  constructor(capacity: number) {
    this.free = Array.from({ length: capacity }, (_, i) => capacity - 1 - i);
  }
  ensure(key: K): number {
    let slot = this.slots.get(key);
    if (slot === undefined) {
      slot = this.free.pop();
      if (slot === undefined) {
        throw new RetroflectError(ErrorCode.LIMIT_REACHED, 'No counter slot is free.', {
          hint: 'Remove entries you no longer use.',
        });
      }
      this.slots.set(key, slot);
    }
    return slot;
  }
  get(key: K): number | undefined {
    return this.slots.get(key);
  }
  /** Release every slot whose key is not in `keep`. */
  retain(keep: Set<K>): void {
    for (const [key, slot] of this.slots) {
      if (!keep.has(key)) {
        this.slots.delete(key);
        this.free.push(slot);
      }
    }
  }
}

/** Flows whose process `flows()` looks up, most recent first (each costs a look at the host's socket tables). */
const MAX_OWNER_LOOKUPS = 1000;

/** How often the engine checks that its host state (nft table, routes) is still in place. */
const HOST_CHECK_INTERVAL_MS = 5000;

/** How long ending the captures waits for the worker to move the kernel's last copied packets (ebpf) into them. */
const CAPTURE_FLUSH_MS = 1000;

export class Engine extends EventEmitter {
  private state: EngineState = 'starting';
  private current: InterceptConfig;
  private readonly startedAt = new Date();
  private readonly counters = new EngineCounters();
  private readonly flowTable: FlowTable;
  private readonly addressSlots = new SlotMap<string>(MAX_REFLECT_ADDRESSES);
  private readonly shieldSlots = new SlotMap<string>(MAX_SHIELD_PORTS);
  private worker: Worker | null = null;
  private port: MessageChannel['port1'] | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  private stopped: Promise<void> | null = null;
  private readonly statsSource: EngineStatsSource;
  private readonly captureHub = new CaptureHub((captures) => {
    const seq = ++this.captureSeq;
    this.post({ type: 'capture', captures, seq });
    this.emit('captures', captures.map((c) => c.id)); // for the event log (cli/engine-events.ts)
    // A packet that reaches the worker takes the capture message before it is decided (worker.ts), so a capture is in
    // force for it at once. A backend that reflects in the kernel (ebpf) copies packets for captures only once the
    // worker wrote its capture maps: wait for that (on WinDivert the worker may block until a packet comes).
    if (!this.opts.backend.kernel || !this.port) return;
    return new Promise<void>((resolve) => this.captureWaiters.push({ seq, resolve }));
  });
  /** The last 'capture' message posted, and who waits for the worker to take which (worker-protocol.ts). */
  private captureSeq = 0;
  private captureWaiters: { seq: number; resolve: () => void }[] = [];
  /** Packet capture (capture/port.ts): captures open only while the engine runs; the backend names interfaces. */
  readonly capture: CapturePort;
  private hostCheckTimer: NodeJS.Timeout | null = null;
  private hostRepairs = { count: 0, last: null as { at: string; what: string } | null };

  private constructor(private readonly opts: EngineOptions) {
    super();
    this.current = cloneInterceptConfig(opts.config);
    this.capture = {
      open: (captureOpts) => {
        this.assertRunning();
        const session = this.captureHub.open(captureOpts);
        this.emit('captureStarted', session);
        return session;
      },
      backend: opts.backend.kind,
      interfaceName: (ifIndex) => opts.backend.interfaceName(ifIndex),
    };
    this.flowTable = new FlowTable({ capacity: opts.flowCapacity });
    this.statsSource = new EngineStatsSource(
      this.counters,
      opts.backend.firewallCounters?.bind(opts.backend) ?? null,
      // A failed firewall reading most likely means our table is gone: check (and restore) before answering.
      () => this.serialize(() => this.verifyHost('all')),
      opts.backend.kernel ?? null,
    );
  }

  /** Prepare the host, start the packet worker and wait until it reports ready. Undoes everything on failure. */
  static async start(opts: EngineOptions): Promise<Engine> {
    checkLimits(opts.config);
    const engine = new Engine(opts);
    try {
      await engine.boot();
    } catch (err) {
      await engine.teardown();
      engine.state = 'failed';
      throw err;
    }
    return engine;
  }

  private async boot(): Promise<void> {
    const init = await this.opts.backend.start(this.current);
    const channel = new MessageChannel();
    this.port = channel.port1;
    const data: WorkerData = {
      port: channel.port2,
      init,
      config: this.current,
      dataplane: this.dataplaneConfig(this.current),
      countersBuffer: this.counters.buffer,
      flowsBuffer: this.flowTable.buffer,
    };
    const worker = createPacketWorker(data, [channel.port2]);
    this.worker = worker;
    await new Promise<void>((resolve, reject) => {
      const failed = (message: string) => new RetroflectError(ErrorCode.BACKEND_FAILED, message);
      const timer = setTimeout(() => reject(failed('The packet worker did not start in time.')),
        this.opts.startTimeoutMs ?? 15000);
      channel.port1.on('message', (msg: WorkerToMain) => {
        if (msg.type === 'ready') {
          clearTimeout(timer);
          resolve();
        } else if (msg.type === 'fatal') {
          clearTimeout(timer);
          const err = new RetroflectError(msg.error.code as ErrorCode, msg.error.message,
            { hint: msg.error.hint, details: msg.error.details });
          if (this.state === 'starting') reject(err);
          else this.onWorkerFatal(err);
        } else if (msg.type === 'captureTaken') {
          this.releaseCaptureWaiters(msg.seq);
        } else if (msg.type === 'warning') {
          this.opts.log?.('warn', `packet worker: ${msg.error.message}`);
        }
      });
      worker.once('error', (err) => {
        clearTimeout(timer);
        const wrapped = new RetroflectError(ErrorCode.BACKEND_FAILED, `The packet worker crashed: ${err.message}`,
          { cause: err });
        if (this.state === 'starting') reject(wrapped);
        else this.onWorkerFatal(wrapped);
      });
      worker.once('exit', (code) => {
        clearTimeout(timer);
        if (this.state === 'starting') reject(failed(`The packet worker exited (${code}) before it was ready.`));
        else if (this.state === 'running') {
          this.onWorkerFatal(failed(`The packet worker exited unexpectedly (${code}).`));
        }
      });
    });
    this.state = 'running';
    this.statsSource.start();
    if (this.opts.backend.verify) {
      const check = () => void this.serialize(() => this.verifyHost('all')).catch(() => undefined);
      this.hostCheckTimer = setInterval(check, HOST_CHECK_INTERVAL_MS);
      this.hostCheckTimer.unref();
    }
  }

  /**
   * Put back host state someone else removed (an admin's `nft flush ruleset`, a firewall tool reloading): shielding
   * must not be silently off while status says running. Runs inside the change queue. Repairs are logged and counted
   * in status; a check that fails is logged and retried at the next occasion.
   */
  private async verifyHost(scope: 'firewall' | 'all'): Promise<void> {
    if (this.state !== 'running' || !this.opts.backend.verify) return;
    let repairs: string[];
    try {
      repairs = await this.opts.backend.verify(this.current, scope);
    } catch (err) {
      this.opts.log?.('warn', `host check failed: ${(err as Error).message}`);
      return;
    }
    for (const what of repairs) {
      this.hostRepairs = { count: this.hostRepairs.count + 1, last: { at: new Date().toISOString(), what } };
      this.emit('hostRepaired', what);
    }
    if (repairs.length) this.statsSource.forgetHostReading(); // read before the repair: of a table that is gone
  }

  private onWorkerFatal(err: RetroflectError): void {
    if (this.state !== 'running') return;
    this.opts.log?.('error', `${err.message}${err.hint ? ` ${err.hint}` : ''}`);
    this.state = 'failed';
    // A dead data plane must not leave routes pointing into a device nobody reads: undo the host setup.
    void this.teardown().then(() => this.emit('failed', err));
  }

  private post(msg: MainToWorker): void {
    this.port?.postMessage(msg);
  }

  /** The worker took the captures up to `seq` (Infinity: it is gone, no one should wait for it any longer). */
  private releaseCaptureWaiters(seq: number): void {
    const done = this.captureWaiters.filter((w) => w.seq <= seq);
    this.captureWaiters = this.captureWaiters.filter((w) => w.seq > seq);
    for (const w of done) w.resolve();
  }

  private dataplaneConfig(cfg: InterceptConfig): DataplaneConfig {
    return {
      reflect: cfg.reflectAddresses.map((address) => ({ address, slot: this.addressSlots.ensure(address) })),
      shield: cfg.shieldPorts.map((p) =>
        ({ port: p.port, protocol: p.protocol, slot: this.shieldSlots.ensure(shieldKey(p)) })),
      portMaps: portMapsOf(cfg).map((m) => ({ ...m })),
      allowedPorts: allowedPortEntries(cfg, (address) => this.addressSlots.ensure(address)),
      appGateSlots: appGateSlots(cfg, (address) => this.addressSlots.ensure(address)),
    };
  }

  /** Run changes one at a time, in arrival order. */
  private serialize<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  private assertRunning(): void {
    if (this.state !== 'running') {
      const problem = `The engine is ${this.state}; it cannot change its config now.`;
      throw new RetroflectError(ErrorCode.BACKEND_FAILED, problem, {
        hint: 'Check the engine log, then restart it with `retroflect run`.',
      });
    }
  }

  /**
   * Move to `next`: first widen the data plane to cover both configs, then change the host (routes, firewall,
   * WinDivert filter), then narrow the data plane to `next`. No packet that the host hands us is ever decided under
   * a config that lacks its address, so traffic to addresses that stay is never disturbed.
   */
  private async transition(next: InterceptConfig): Promise<void> {
    const prev = this.current;
    const union = cloneInterceptConfig(prev);
    addReflectAddresses(union, next.reflectAddresses);
    addShieldPorts(union, next.shieldPorts);
    // Maps cannot be united (a port may change target): addresses that stay get next's maps, leaving ones keep theirs.
    const leaving = portMapsOf(prev).filter((m) => !next.reflectAddresses.includes(m.address));
    union.portMaps = [...portMapsOf(next), ...leaving];
    union.allow = widerAllowLists(prev, next);
    checkLimits(next);
    await this.verifyHost('firewall'); // edit the table we think we have, not a hole where it was
    this.post({ type: 'dataplane', dataplane: this.dataplaneConfig(union) });
    let update: SourceUpdate;
    try {
      update = await this.opts.backend.apply(prev, next);
    } catch (err) {
      this.post({ type: 'dataplane', dataplane: this.dataplaneConfig(prev) });
      this.releaseSlots(prev);
      throw err;
    }
    this.current = cloneInterceptConfig(next);
    this.post({ type: 'reconfigure', config: this.current, dataplane: this.dataplaneConfig(this.current), update });
    this.releaseSlots(this.current);
  }

  private releaseSlots(cfg: InterceptConfig): void {
    this.addressSlots.retain(new Set(cfg.reflectAddresses));
    this.shieldSlots.retain(new Set(cfg.shieldPorts.map(shieldKey)));
  }

  /**
   * Move the running engine to `next`. The caller (control/config-changes.ts) has already checked, deduplicated and
   * host-validated every entry; the engine only keeps its limits. Queued behind earlier changes and before stop().
   * `origin` (who asked) travels with the 'reconfigured' event, for the log.
   */
  reconfigure(next: InterceptConfig, origin?: ChangeOrigin): Promise<void> {
    return this.serialize(async () => {
      this.assertRunning();
      const prev = this.config();
      await this.transition(next);
      this.emit('reconfigured', prev, this.config(), origin);
    });
  }

  config(): InterceptConfig {
    return cloneInterceptConfig(this.current);
  }

  status(): EngineStatus {
    return {
      state: this.state,
      version: VERSION,
      backend: this.opts.backend.kind,
      pid: process.pid,
      startedAt: this.startedAt.toISOString(),
      uptimeSeconds: Math.round((Date.now() - this.startedAt.getTime()) / 1000),
      reflectAddresses: [...this.current.reflectAddresses],
      shieldPorts: this.current.shieldPorts.map((p) => ({ ...p })),
      portMaps: portMapsOf(this.current).map((m) => ({ ...m })),
      allow: allowListsOf(this.current).map((a) => cloneAllowLists(a)),
      configPath: this.opts.configPath ?? null,
      pipeName: this.opts.pipeName ?? null,
      backendInfo: this.opts.backend.describe?.() ?? {},
      hostRepairs: { count: this.hostRepairs.count, last: this.hostRepairs.last && { ...this.hostRepairs.last } },
      runsAs: this.opts.runsAs ?? 'console',
    };
  }

  stats(): Promise<EngineStats> {
    const uptimeSeconds = Math.round((Date.now() - this.startedAt.getTime()) / 1000);
    return this.statsSource.stats(this.dataplaneConfig(this.current), uptimeSeconds, this.state === 'running');
  }

  /** The data plane's flows, plus those a kernel data path (ebpf) recorded itself (a conversation split between the
   *  two is one flow: flow-merge.ts), with who made each. */
  flows(limit = Infinity): FlowRecord[] {
    const now = Date.now();
    let flows = this.flowTable.snapshot(now);
    const kernel = this.opts.backend.kernel;
    if (kernel && this.state === 'running') flows = mergeKernelFlows(flows, kernel.flows(now, flowIdleLimitMs));
    flows.splice(limit);
    const owners = this.opts.backend.socketOwners;
    if (!owners) return flows;
    // Who made each flow: the client's socket, looked up now (packet-source.ts HostBackend.socketOwners).
    const asked = flows.filter((f) => f.protocol === 'tcp' || f.protocol === 'udp').slice(0, MAX_OWNER_LOOKUPS);
    const found = owners.call(this.opts.backend, asked.map((f) => ({
      protocol: f.protocol as 'tcp' | 'udp',
      localAddress: f.localAddress,
      localPort: f.clientPort,
      remoteAddress: f.reflectAddress,
      remotePort: f.mappedFromPort ?? f.serverPort,
    })));
    asked.forEach((f, i) => Object.assign(f, found[i] ?? {}));
    return flows;
  }

  /**
   * End every capture now: each client gets what is still in its ring, then `capture.end` (reason engineStopping).
   * `run` calls this on a stop signal before it closes the control server, so those last lines can still be sent.
   */
  async endCaptures(): Promise<void> {
    // On ebpf the packets reflected just before are copied into the kernel's ring, which only the worker reads: it
    // moves them into the captures' rings first (flush), at most a moment, so the files end with them.
    const late = new Promise<void>((resolve) => setTimeout(resolve, CAPTURE_FLUSH_MS).unref());
    await Promise.race([this.captureHub.flush(), late]);
    this.captureHub.closeAll();
  }

  /** Stop the worker, then undo all host changes. Safe to call more than once. */
  stop(): Promise<void> {
    if (!this.stopped) {
      this.stopped = this.serialize(async () => {
        if (this.state === 'running' || this.state === 'starting') this.state = 'stopping';
        await this.teardown();
        this.state = 'stopped';
        this.emit('stopped');
      });
    }
    return this.stopped;
  }

  private async teardown(): Promise<void> {
    this.statsSource.stop();
    this.captureHub.closeAll();
    if (this.hostCheckTimer) clearInterval(this.hostCheckTimer);
    this.hostCheckTimer = null;
    const worker = this.worker;
    this.worker = null;
    if (worker) {
      const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
      this.post({ type: 'stop' });
      this.opts.backend.wake();
      const timeout = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), 3000).unref());
      if ((await Promise.race([exited, timeout])) === 'timeout') await worker.terminate();
    }
    this.port?.close();
    this.port = null;
    this.releaseCaptureWaiters(Infinity);
    await this.opts.backend.stop();
  }
}
