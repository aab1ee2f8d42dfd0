/**
 * The host state both Linux backends keep alike (`LinuxHostState`), beside their own device: one host route per
 * reflect address into the device, the host's one nft table (platform/linux/nftables.ts: shield ports, forged
 * sources, and who may use each address, allow-rules.ts, matched on the output hook before the packet is routed into
 * whichever device), the NFLOG socket captures read the table's drops from, and the wake eventfd. It claims the table
 * (refusing another running engine's), applies live changes all or nothing, checks and repairs the table and routes,
 * and undoes all of it. The backends' host halves (tun/host.ts, ebpf/host.ts) hold one each.
 */
import type { InterceptConfig } from '../../config/intercept-config.ts';
import { ErrorCode, RetroflectError } from '../../errors.ts';
import { allowUpdateCommands, CGROUP_V2_ROOT, missingCgroups } from '../../platform/linux/allow-rules.ts';
import { runCommand } from '../../platform/linux/command.ts';
import { interfaceIndex, interfaceNameOf } from '../../platform/linux/interfaces.ts';
import { EFD_CLOEXEC, EFD_NONBLOCK, libc } from '../../platform/linux/libc.ts';
import { groupTakenBy, netlinkPortId, openFirewallLog } from '../../platform/linux/nflog.ts';
import {
  installShield,
  NFT_FAMILY,
  NFT_TABLE,
  readFirewallCounters,
  removeShield,
  shieldTableDevice,
  updateShield,
} from '../../platform/linux/nftables.ts';
import { routeAddCommand, routeDeleteCommand } from '../../platform/linux/routes.ts';
import { socketOwners, type SocketOwner, type SocketQuery } from '../../platform/linux/socket-owners.ts';
import type { FirewallCounters } from '../packet-source.ts';
import { installedShape, tableDamage, type TableShape } from './nft-check.ts';

/** A step of a live change that can be taken back (a route added, a map entry written). */
type Undo = () => Promise<unknown>;

function anotherEngine(device: string): RetroflectError {
  const why = `Another retroflect engine (device ${device}) is running on this host.`;
  return new RetroflectError(ErrorCode.ALREADY_RUNNING, why, {
    hint:
      'On Linux one engine runs per host, since the shield rules are per host: stop the other engine first, ' +
      'or add your addresses and ports to it.',
    details: { device },
  });
}

export class LinuxHostState {
  /** Written to wake a worker blocked in poll (the shared worker half polls it). */
  wakeFd = -1;
  /** The NFLOG socket and group the drop rules log to, for captures (null: NFLOG unusable, see logProblem). */
  log: { fd: number; group: number } | null = null;
  private logProblem: string | null = null;
  /** Set once the host's shield table is claimed: only then may stop() remove it. */
  private ownsShield = false;
  /** Our table as nft listed it right after we installed it (nft-check.ts): what every check compares with. */
  private tableShape: TableShape | null = null;
  /** cgroups of the config that did not exist when the rules were made (allow-rules.ts), for `status`. */
  private missingCgroups: string[] = [];
  private readonly wakeValue = Buffer.from([1, 0, 0, 0, 0, 0, 0, 0]);

  constructor(private readonly device: string) {}

  get logGroup(): number | null {
    return this.log?.group ?? null;
  }

  /** `status` facts: where captures get the table's drops (or why they cannot), and cgroups refused as missing. */
  describe(): Record<string, string> {
    return {
      // The group was free at start, but another program can bind it whenever no capture listens (checked here).
      firewallLog: this.log
        ? (groupTakenBy(this.log.group, netlinkPortId(this.log.fd)) ?? `NFLOG group ${this.log.group}`)
        : `unavailable: ${this.logProblem ?? 'not started'}`,
      ...(this.missingCgroups.length
        ? { missingCgroups: `${this.missingCgroups.join(', ')} (not found when the rules were made: refused)` }
        : {}),
    };
  }

  /** Before the device is made: a table whose device exists belongs to a running engine (even one on our name). */
  async refuseIfAnotherEngineRuns(): Promise<void> {
    const holder = await shieldTableDevice();
    if (holder !== null && interfaceIndex(holder) > 0) throw anotherEngine(holder);
  }

  /**
   * The wake eventfd and the firewall log. The log is for captures only: without it the engine runs, and `status`
   * says why captures miss drops.
   */
  openFds(): void {
    const c = libc();
    this.wakeFd = c.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (this.wakeFd < 0) {
      throw new RetroflectError(ErrorCode.BACKEND_FAILED, `eventfd failed: ${c.strerror(c.errno())}.`);
    }
    try {
      this.log = openFirewallLog();
    } catch (err) {
      this.logProblem = err instanceof Error ? err.message : String(err);
    }
  }

  /**
   * The shield table is one per host. A leftover of a killed run is removed; a table another running engine uses is
   * refused, never deleted (deleting it would silently unshield that engine's ports).
   */
  async claimShieldTable(): Promise<void> {
    const holder = await shieldTableDevice();
    if (holder !== null && holder !== this.device && interfaceIndex(holder) > 0) throw anotherEngine(holder);
    await removeShield(); // a leftover of a killed run, if there is one
    this.ownsShield = true;
  }

  /** Routes of `cfg`'s addresses into the device, then its nft table (after claimShieldTable). */
  async install(cfg: InterceptConfig): Promise<void> {
    for (const a of cfg.reflectAddresses) await runCommand(routeAddCommand(a, this.device));
    this.missingCgroups = missingCgroups(cfg);
    await installShield(cfg, this.device, this.logGroup);
    this.tableShape = await installedShape();
  }

  /** A change that names a cgroup that does not exist is refused before anything is touched. */
  checkChange(prev: InterceptConfig, next: InterceptConfig): void {
    const missing = missingCgroups(next).filter((c) => !missingCgroups(prev).includes(c));
    if (!missing.length) return;
    const why = `No cgroup ${missing.join(', ')} under ${CGROUP_V2_ROOT}; nothing was changed.`;
    throw new RetroflectError(ErrorCode.INVALID_PARAMS, why, {
      hint:
        'Give the path of a running unit\'s cgroup below the cgroup v2 root, such as system.slice/squid.service ' +
        '(see `systemctl status`).',
      details: { field: 'cgroups', missing },
    });
  }

  /**
   * Live change of routes and rules, all or nothing on the host: a step that fails (or a helper killed after its
   * timeout) undoes the steps before it, and those in `undo` (the backend's own, taken before), so routes and rules
   * stay those of `prev` and the engine stays consistent with its config. Call checkChange first.
   */
  async apply(prev: InterceptConfig, next: InterceptConfig, undo: Undo[] = []): Promise<void> {
    const nextSet = new Set(next.reflectAddresses);
    const prevSet = new Set(prev.reflectAddresses);
    try {
      for (const a of next.reflectAddresses.filter((x) => !prevSet.has(x))) {
        await runCommand(routeAddCommand(a, this.device));
        undo.push(() => this.deleteRoute(a));
      }
      for (const a of prev.reflectAddresses.filter((x) => !nextSet.has(x))) {
        await this.deleteRoute(a);
        undo.push(() => runCommand(routeAddCommand(a, this.device)));
      }
      // One nft transaction: applied whole or not at all (a killed nft commits nothing).
      await updateShield(prev, next, this.logGroup);
      this.missingCgroups = missingCgroups(next);
      // A change of who may use an address replaces chains and rules, not only elements: the checks compare with the
      // table as it is now (nft-check.ts).
      if (allowUpdateCommands(NFT_FAMILY, NFT_TABLE, prev, next, '').length) this.tableShape = await installedShape();
    } catch (err) {
      for (const step of undo.reverse()) await step().catch(() => undefined);
      throw err;
    }
  }

  private async deleteRoute(address: string): Promise<void> {
    // A route already gone (deleted by hand) is what we wanted anyway.
    await runCommand(routeDeleteCommand(address, this.device)).catch((err: RetroflectError) => {
      if (!/No such process|not found/i.test(String(err.details?.stderr ?? ''))) throw err;
    });
  }

  /** Put back the table (compared whole) and, for 'all', the routes that someone else removed; one sentence each. */
  async verify(cfg: InterceptConfig, scope: 'firewall' | 'all'): Promise<string[]> {
    if (!this.ownsShield) return [];
    const repairs: string[] = [];
    // The whole table, not one rule: a deleted shield rule or a flushed set turns shielding off as surely.
    const damage = this.tableShape === null ? 'was not in place' : await tableDamage(cfg, this.tableShape);
    if (damage !== null) {
      await installShield(cfg, this.device, this.logGroup);
      this.tableShape = await installedShape();
      repairs.push(
        `The nft table ${NFT_FAMILY} ${NFT_TABLE} ${damage} by something else; restored it whole ` +
          '(shielding was off or partly off meanwhile).',
      );
    }
    if (scope === 'firewall') return repairs;
    const routes = async (family: string[]): Promise<{ dst: string }[]> => {
      const shown = await runCommand({ file: 'ip', args: ['-j', ...family, 'route', 'show', 'dev', this.device] });
      return JSON.parse(shown.stdout || '[]');
    };
    const all = [...(await routes([])), ...(await routes(['-6']))];
    const routed = new Set(all.map((r) => r.dst.replace(/\/(32|128)$/, '')));
    for (const a of cfg.reflectAddresses) {
      if (routed.has(a)) continue;
      await runCommand(routeAddCommand(a, this.device));
      repairs.push(`The route of reflect address ${a} into ${this.device} was deleted by something else; restored it.`);
    }
    return repairs;
  }

  firewallCounters(): Promise<FirewallCounters> {
    return readFirewallCounters();
  }

  socketOwners(queries: readonly SocketQuery[]): (SocketOwner | null)[] {
    return socketOwners(queries);
  }

  /** A name for an interface index as captures show it (`ownIndex`: the device's). */
  interfaceName(ifIndex: number, ownIndex: number): string {
    if (ifIndex === 0 || ifIndex === ownIndex) return this.device;
    return interfaceNameOf(ifIndex) ?? `if${ifIndex}`;
  }

  wake(): void {
    if (this.wakeFd >= 0) libc().write(this.wakeFd, this.wakeValue, 8);
  }

  /**
   * Undo everything: the shield table, then the device (`releaseDevice`, the backend's own; its routes go with it),
   * then our fds. Each step runs even when one before it failed; the first failure is thrown at the end.
   */
  async stop(releaseDevice: () => Promise<void>): Promise<void> {
    let failure: unknown;
    try {
      if (this.ownsShield) await removeShield();
      this.ownsShield = false;
      this.tableShape = null;
    } catch (err) {
      failure = err;
    }
    try {
      await releaseDevice();
    } catch (err) {
      failure ??= err;
    }
    const c = libc();
    if (this.wakeFd >= 0) c.close(this.wakeFd);
    if (this.log) c.close(this.log.fd); // frees the NFLOG group
    this.wakeFd = -1;
    this.log = null;
    if (failure) throw failure;
  }
}
