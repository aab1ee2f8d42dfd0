/**
 * WinDivert backend, main-thread half (`WinDivertHostBackend`): finds WinDivert.dll, opens handles at the network
 * layer with one filter (filter.ts) that captures both what retroflect reflects (outbound packets to a reflect
 * address) and what it shields (inbound packets from other hosts to a shield port), and shuts them down on
 * stop and on apply (a live change). The worker half is source.ts.
 *
 * A live change opens the NEW handle first, so no packet goes uncaptured, then shuts down receiving on the old one;
 * the worker drains and closes the old one. Both handles have the same priority, and WinDivert never hands a handle
 * a packet that a handle of equal or higher priority injected, so the new handle never sees our own reflected
 * packets (they arrive from a reflect address, which the new filter captures as forged). Open handles are recorded
 * in a ledger shared with the worker (handle-ledger.ts), so each is closed exactly once, even when the worker died.
 */
import type { InterceptConfig } from '../../config/intercept-config.ts';
import { ErrorCode, RetroflectError } from '../../errors.ts';
import type { HostBackend, PlanStep, WinDivertSourceInit, WinDivertSourceUpdate } from '../packet-source.ts';
import { queueParamError, winDivertCallError, winDivertLoadError, winDivertOpenError } from './errors.ts';
import { INVALID_HANDLE, loadWinDivert, WinDivertLayer, WinDivertParam, WinDivertShutdown, type WinDivertApi } from './ffi.ts';
import { buildWinDivertFilter } from './filter.ts';
import { HandleLedger, MAX_OPEN_BEFORE_SWITCH } from './handle-ledger.ts';
import { WINDIVERT_PRIORITY, WINDIVERT_QUEUE_LENGTH, WINDIVERT_QUEUE_SIZE_BYTES, WINDIVERT_QUEUE_TIME_MS } from './limits.ts';
import { locateWinDivert } from './location.ts';

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
  private driverVersion = '';

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
      this.api = loadWinDivert(path);
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

