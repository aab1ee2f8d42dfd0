/**
 * WinDivert backend, main-thread half (`WinDivertHostBackend`): finds WinDivert.dll, opens handles at the network
 * layer and shuts them down on stop and on apply (a live change). The worker half is source.ts. Two handles per
 * config (filter.ts):
 *  - the capture handle, whose filter captures both what retroflect reflects (outbound packets to a reflect
 *    address) and what it shields (inbound packets from other hosts to a shield port); the worker receives from it;
 *  - the fragment-drop handle (WINDIVERT_FLAG_FRAGMENTS | WINDIVERT_FLAG_DROP), opened right AFTER the capture
 *    handle, when the config has IPv6 reflect addresses or shield ports: the driver drops inbound IPv6 fragments
 *    (atomic ones included) to shield ports or forged from a reflect address; nobody receives from it. Opened
 *    after, it ranks above the capture handle (internal priority: the per-open counter), so it skips the reflected
 *    fragments the capture handle injects.
 *
 * A live change opens the NEW pair first, so no packet goes uncaptured, then shuts down receiving on the old capture
 * handle (the worker drains and closes it) and closes the old fragment-drop handle (it holds no packets). The worker
 * sends everything through the newest capture handle, which never sees what it injects itself, and every older
 * capture handle has stopped receiving: our own reflected packets are never captured as forged, even when the
 * driver's per-open counter wraps between two opens (source.ts, sendHandle()). Open handles are recorded in a ledger
 * shared with the worker (handle-ledger.ts), so each is closed exactly once, even when the worker died.
 *
 * While some reflect address has an `apps` list, the app gate (app-gate.ts) runs here too, with two handles of its
 * own: a SOCKET-layer handle (sniff, receive only) and a re-offer handle one priority step above the capture handle.
 */
import type { InterceptConfig } from '../../config/intercept-config.ts';
import { ErrorCode, RetroflectError } from '../../errors.ts';
import type { HostBackend, PlanStep, WinDivertSourceInit, WinDivertSourceUpdate } from '../packet-source.ts';
import { queueParamError, winDivertCallError, winDivertLoadError, winDivertOpenError } from './errors.ts';
import { INVALID_HANDLE, loadWinDivert, WinDivertFlag, WinDivertLayer, WinDivertParam, WinDivertShutdown, type WinDivertApi } from './ffi.ts';
import { buildFragmentDropFilter, buildWinDivertFilter, MATCH_NOTHING } from './filter.ts';
import { HandleLedger, MAX_OPEN_BEFORE_SWITCH } from './handle-ledger.ts';
import { WINDIVERT_PRIORITY, WINDIVERT_QUEUE_LENGTH, WINDIVERT_QUEUE_SIZE_BYTES, WINDIVERT_QUEUE_TIME_MS } from './limits.ts';
import { locateWinDivert } from './location.ts';
import { AppGate, createAppGateRings, type AppGateCounts, type FlowProcess } from './app-gate.ts';
import { Win32ProcessLookup, type ProcessLookup } from '../../platform/windows/process-identity.ts';
import { PROCESS_CACHE_SIZE } from './limits.ts';
import type { SocketQuery } from '../../platform/linux/socket-owners.ts';

/** How long a change waits for the worker to close old handles before it fails. */
const SWITCH_WAIT_MS = 10_000;

export interface WinDivertHostOptions {
  /** Exact DLL to load (tests; the Linux test double). Otherwise it is searched for (location.ts). */
  dllPath?: string;
  /** The `--windivert-dir` option. */
  windivertDir?: string;
  /** WinDivert priority, WINDIVERT_PRIORITY.MIN..MAX (higher sees packets first); default WINDIVERT_PRIORITY.DEFAULT (why: limits.ts). */
  priority?: number;
  /** Queue settings; defaults WINDIVERT_QUEUE_*.DEFAULT (limits.ts). */
  queue?: { length?: number; timeMs?: number; bytes?: number };
  /** Who a process is, for apps lists: Windows' own (kernel32) unless given (tests off Windows: a stand-in). */
  processLookup?: ProcessLookup;
  /** How long a new flow waits for its socket event, APP_HOLD_MS (limits.ts). */
  appHoldMs?: number;
  /** Failures the app gate survives, for the engine's log. */
  warn?: (message: string) => void;
}

/** Limits of one queue setting: DEFAULT/MIN/MAX as limits.ts holds them. */
type Limits = { readonly DEFAULT: number; readonly MIN: number; readonly MAX: number };

export class WinDivertHostBackend implements HostBackend<'windivert'> {
  readonly kind = 'windivert' as const;
  readonly priority: number;
  private readonly queue: { length: number; timeMs: number; bytes: number };
  private api: WinDivertApi | null = null;
  private readonly ledger = new HandleLedger();
  /** The handle currently capturing (the newest), or null before start / after stop. */
  private handle: number | null = null;
  private filter = '';
  /** The fragment-drop handle of the current config (null when its filter would match nothing), and its filter. */
  private fragmentHandle: number | null = null;
  private fragmentFilter = MATCH_NOTHING;
  private driverVersion = '';
  /** The app gate's rings, made once: the worker keeps them for its whole life. */
  private readonly appRings = createAppGateRings();
  private appGate: AppGate | null = null;

  constructor(private readonly opts: WinDivertHostOptions = {}) {
    const { DEFAULT, MIN, MAX } = WINDIVERT_PRIORITY;
    const priority = opts.priority ?? DEFAULT;
    if (!Number.isInteger(priority) || priority < MIN || priority > MAX) {
      throw new RetroflectError(ErrorCode.INVALID_PARAMS, `WinDivert priority ${opts.priority} is not an integer from ${MIN} to ${MAX}.`, {
        hint: `Give --priority a whole number in that range (${DEFAULT} is the default; higher sees packets first).`,
        details: { priority: opts.priority },
      });
    }
    this.priority = priority;
    this.queue = {
      length: opts.queue?.length ?? WINDIVERT_QUEUE_LENGTH.DEFAULT,
      timeMs: opts.queue?.timeMs ?? WINDIVERT_QUEUE_TIME_MS.DEFAULT,
      bytes: opts.queue?.bytes ?? WINDIVERT_QUEUE_SIZE_BYTES.DEFAULT,
    };
    const checks: [string, number, Limits][] = [
      ['queue length', this.queue.length, WINDIVERT_QUEUE_LENGTH],
      ['queue time (ms)', this.queue.timeMs, WINDIVERT_QUEUE_TIME_MS],
      ['queue size (bytes)', this.queue.bytes, WINDIVERT_QUEUE_SIZE_BYTES],
    ];
    for (const [name, value, { MIN: min, MAX: max }] of checks) {
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
      {
        action: 'open WinDivert fragment-drop handle',
        detail: buildFragmentDropFilter(cfg) === MATCH_NOTHING
          ? 'not needed: no IPv6 reflect address and no shield port'
          : `layer network, flags FRAGMENTS|DROP, priority ${this.priority}, filter: ${buildFragmentDropFilter(cfg)}`,
      },
    ];
  }

  async start(cfg: InterceptConfig): Promise<WinDivertSourceInit> {
    const api = this.load();
    const filter = buildWinDivertFilter(cfg);
    const fragmentFilter = buildFragmentDropFilter(cfg);
    const handle = this.openHandle(api, filter);
    this.fragmentHandle = this.openFragmentDrop(api, fragmentFilter, handle);
    this.handle = handle;
    this.filter = filter;
    this.fragmentFilter = fragmentFilter;
    try {
      await this.gate(api, cfg);
    } catch (err) {
      await this.stop();
      throw err;
    }
    return { kind: 'windivert', dllPath: api.path, handle, ledger: this.ledger.buffer, filter, appGate: this.appRings };
  }

  /** Run the app gate while some address has an apps list, under `cfg`'s lists; stop it when none has. */
  private async gate(api: WinDivertApi, cfg: InterceptConfig): Promise<void> {
    this.appGate ??= new AppGate(api, this.opts.processLookup ?? new Win32ProcessLookup(PROCESS_CACHE_SIZE), {
      priority: this.priority,
      holdMs: this.opts.appHoldMs,
      warn: this.opts.warn,
    }, this.appRings);
    this.appGate.configure(cfg);
    if (this.appGate.restricting) this.appGate.start();
    else await this.appGate.stop();
  }

  /** What the app gate counted (null before it ever ran). */
  appCounters(): AppGateCounts | null {
    return this.appGate?.started || this.appGate?.restricting ? this.appGate.counters() : null;
  }

  /** Who made each flow, where the app gate decided it (Windows: process id, name and package). */
  socketOwners(queries: readonly SocketQuery[]): (FlowProcess | null)[] {
    return queries.map((q) => {
      return this.appGate?.owner(q) ?? null;
    });
  }

  async apply(_prev: InterceptConfig, next: InterceptConfig): Promise<WinDivertSourceUpdate> {
    const api = this.load();
    await this.gate(api, next);
    const filter = buildWinDivertFilter(next);
    const fragmentFilter = buildFragmentDropFilter(next);
    if (filter === this.filter && fragmentFilter === this.fragmentFilter && this.handle !== null) return { kind: 'windivert', switchTo: null };
    for (const end = Date.now() + SWITCH_WAIT_MS; this.ledger.open().length >= MAX_OPEN_BEFORE_SWITCH && Date.now() < end; ) {
      await new Promise((r) => setTimeout(r, 2));
    }
    // New pair first: from here on both capture, so no packet slips through while we switch. The fragment-drop
    // handle is always reopened with the capture handle, so it is always the newer of the two.
    const handle = this.openHandle(api, filter);
    const fragmentHandle = this.openFragmentDrop(api, fragmentFilter, handle);
    const old = this.handle;
    const oldFragments = this.fragmentHandle;
    this.handle = handle;
    this.filter = filter;
    this.fragmentHandle = fragmentHandle;
    this.fragmentFilter = fragmentFilter;
    if (old !== null) api.shutdown(old, WinDivertShutdown.Recv); // the worker drains it, then closes it
    if (oldFragments !== null && this.ledger.claim(oldFragments)) api.close(oldFragments); // it queues nothing
    return { kind: 'windivert', switchTo: { handle, filter } };
  }

  wake(): void {
    if (this.api && this.handle !== null) this.api.shutdown(this.handle, WinDivertShutdown.Recv);
  }

  async stop(): Promise<void> {
    const api = this.api;
    this.handle = null;
    this.fragmentHandle = null;
    await this.appGate?.stop();
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

  /** Facts for `status`: filters, priority, driver version, DLL. */
  describe(): Record<string, string | number> {
    return {
      filter: this.filter,
      fragmentDropFilter: this.fragmentFilter,
      priority: this.priority,
      driverVersion: this.driverVersion,
      dll: this.api?.path ?? '',
      ...appFacts(this.appCounters()),
    };
  }

  private load(): WinDivertApi {
    if (this.api) return this.api;
    const { path, searched } = this.locate();
    if (!path) throw winDivertLoadError(searched);
    try {
      this.api = loadWinDivert(path);
    } catch (err) {
      throw winDivertLoadError([path], err);
    }
    return this.api;
  }

  /**
   * Open the fragment-drop handle for `filter` right after `capture` was opened (null when the filter matches
   * nothing). On failure `capture` is closed too, so nothing of the new pair stays open.
   */
  private openFragmentDrop(api: WinDivertApi, filter: string, capture: number): number | null {
    if (filter === MATCH_NOTHING) return null;
    try {
      return this.openHandle(api, filter, WinDivertFlag.Fragments | WinDivertFlag.Drop);
    } catch (err) {
      if (this.ledger.claim(capture)) api.close(capture);
      throw err;
    }
  }

  /** Open a handle for `filter` and apply the queue settings; on any failure nothing stays open. */
  private openHandle(api: WinDivertApi, filter: string, flags = 0n): number {
    const handle = api.open(filter, WinDivertLayer.Network, this.priority, flags);
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


/** The app gate's counts for `status` backendInfo (none while no address has an apps list). */
function appFacts(c: AppGateCounts | null): Record<string, number> {
  if (!c) return {};
  return {
    appsAllowedFlows: c.allowed,
    appsNotListedFlows: c.notListed,
    appsNoSocketEventFlows: c.noSocketEvent,
    appsHoldFullFlows: c.holdFull,
    appsHeldFlows: c.heldFlows,
  };
}
