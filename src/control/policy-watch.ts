/**
 * Keeps the managed policy in force: reads it once at start, then again whenever its source says it may have
 * changed (a file's status, a registry change notification), and hands it to ConfigChanges.applyPolicy. Changes are
 * coalesced (a burst of notifications is one read), reads never overlap, and every outcome is logged: an invalid
 * policy is reported and the engine serves on with the last valid one.
 */
import type { PolicySource } from '../config/policy.ts';
import type { InterceptConfig } from '../config/intercept-config.ts';
import type { ConfigChanges } from './config-changes.ts';

/** A change notification waits this long for more before the policy is read (editors write in several steps). */
export const POLICY_SETTLE_MS = 200;

export class PolicyWatch {
  private stopWatching: (() => void) | null = null;
  private timer: NodeJS.Timeout | null = null;
  private reading: Promise<void> = Promise.resolve();
  private last: string | null = null;
  private stopped = false;

  constructor(
    private readonly source: PolicySource,
    private readonly changes: ConfigChanges,
    private readonly log: (message: string) => void,
  ) {}

  /** Read and apply the policy, then watch it. Resolves once the first policy is in force (or reported invalid). */
  async start(): Promise<void> {
    await this.refresh();
    if (this.stopped) return;
    this.stopWatching = this.source.watch(
      () => this.changed(),
      (err) => this.log(`policy: watching ${this.source.origin} failed (${err.message}); changes are read at the next start.`),
    );
  }

  stop(): void {
    this.stopped = true;
    this.stopWatching?.();
    this.stopWatching = null;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private changed(): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.reading = this.reading.then(() => this.refresh());
    }, POLICY_SETTLE_MS);
    this.timer.unref?.();
  }

  private async refresh(): Promise<void> {
    let next: InterceptConfig | Error;
    try {
      next = this.source.read();
    } catch (err) {
      next = err as Error;
    }
    // The same outcome as last time (a touch, a rewrite with the same entries) is neither applied nor logged again.
    const key = next instanceof Error ? `error ${next.message}` : JSON.stringify(next);
    if (key === this.last) return;
    this.last = key;
    if (this.stopped) return;
    const { adopted, problems } = await this.changes.applyPolicy(next);
    const now = describe(this.changes.policy.config);
    if (!adopted) {
      this.log(`policy: ${problems[0]?.message ?? 'refused'} [${problems[0]?.code ?? 'E_INTERNAL'}]`);
      this.log(`policy: the policy as read is not used; ${now} stay in force.`);
      return;
    }
    for (const p of problems) this.log(`policy: ${p.message} [${p.code}]`);
    const lock = this.changes.policy.locked
      ? '; the configuration is locked (pipe changes to addresses, port maps and shield ports are refused)'
      : '';
    this.log(`policy: ${this.source.origin}: ${now} in force${lock}.`);
  }
}

function describe(cfg: InterceptConfig): string {
  const a = cfg.reflectAddresses.length;
  const s = cfg.shieldPorts.length;
  return `${a} reflect address${a === 1 ? '' : 'es'} and ${s} shield port${s === 1 ? '' : 's'}`;
}
