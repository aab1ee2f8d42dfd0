/**
 * Linux packet backend, main-thread half (`TunHostBackend`): a TUN device plus one host route per reflect address,
 * so everything this host sends to a reflect address is routed into the device; shield ports enforced by nftables
 * (platform/linux/nftables.ts), which also keeps their drop counters and logs the drops to NFLOG (platform/linux/
 * nflog.ts) for captures. It makes the device (device.ts), link, routes (platform/linux/routes.ts) and nft table, applies live changes, and cleans up (also after a
 * killed run). The worker half, reading and writing the device, is source.ts.
 */
import { addressFamily, type InterceptConfig } from '../../config/intercept-config.ts';
import { ErrorCode, RetroflectError } from '../../errors.ts';
import { runCommand, describeCommand, type HostCommand } from '../../platform/linux/command.ts';
import { interfaceIndex, interfaceNameOf } from '../../platform/linux/interfaces.ts';
import { EFD_CLOEXEC, EFD_NONBLOCK, libc } from '../../platform/linux/libc.ts';
import type { FirewallCounters, HostBackend, PlanStep, TunSourceInit, TunSourceUpdate } from '../packet-source.ts';
import { installedShape, tableDamage, type TableShape } from './nft-check.ts';
import {
  checkDeviceName,
  DEFAULT_TUN_NAME,
  DEFAULT_TUN_VARIANT,
  enableIpv6,
  ipv6SysctlPath,
  linkUpCommand,
  openTunDevice,
  TUN_VARIANTS,
  type TunVariant,
  type TunVariantName,
} from './device.ts';
import { FIRST_LOG_GROUP, groupTakenBy, netlinkPortId, openFirewallLog } from '../../platform/linux/nflog.ts';
import {
  installShield,
  NFT_FAMILY,
  NFT_TABLE,
  nftScriptCommand,
  readFirewallCounters,
  removeShield,
  removeTableScript,
  shieldTableDevice,
  shieldTableScript,
  updateShield,
} from '../../platform/linux/nftables.ts';
import { routeAddCommand, routeDeleteCommand } from '../../platform/linux/routes.ts';
import { allowUpdateCommands, CGROUP_V2_ROOT, missingCgroups } from '../../platform/linux/allow-rules.ts';
import { socketOwners, type SocketOwner, type SocketQuery } from '../../platform/linux/socket-owners.ts';

export interface TunHostOptions {
  /** Device name; default rflct0. */
  deviceName?: string;
  /** Device setup; default DEFAULT_TUN_VARIANT. */
  variant?: TunVariantName | TunVariant;
}

/** Whether a network device of that name exists in this namespace (`ip link show` fails when it does not). */
async function linkExists(name: string): Promise<boolean> {
  return runCommand({ file: 'ip', args: ['link', 'show', 'dev', name] }).then(() => true, () => false);
}

function anotherEngine(device: string): RetroflectError {
  return new RetroflectError(ErrorCode.ALREADY_RUNNING, `Another retroflect engine (TUN device ${device}) is running on this host.`, {
    hint: 'On Linux one engine runs per host, since the shield rules are per host: stop the other engine first, or add your addresses and ports to it.',
    details: { device },
  });
}

export class TunHostBackend implements HostBackend<'tun'> {
  readonly kind = 'tun' as const;
  readonly device: string;
  readonly variant: TunVariant;
  private fd = -1;
  private wakeFd = -1;
  private ifIndex = 0;
  /** The NFLOG socket and group the drop rules log to, for captures (null: NFLOG unusable, see logProblem). */
  private log: { fd: number; group: number } | null = null;
  private logProblem: string | null = null;
  /** Set once start() has claimed the host's shield table: only then may stop() remove it. */
  private ownsShield = false;
  /** Our table as nft listed it right after we installed it (nft-check.ts): what every check compares with. */
  private tableShape: TableShape | null = null;
  private readonly wakeValue = Buffer.from([1, 0, 0, 0, 0, 0, 0, 0]);
  /** cgroups of the config that did not exist when the rules were made (allow-rules.ts), for `status`. */
  private missingCgroups: string[] = [];

  constructor(opts: TunHostOptions = {}) {
    this.device = opts.deviceName ?? DEFAULT_TUN_NAME;
    checkDeviceName(this.device); // refuse a bad --device before anything is planned or changed
    const v = opts.variant ?? DEFAULT_TUN_VARIANT;
    this.variant = typeof v === 'string' ? TUN_VARIANTS[v] : v;
  }

  plan(cfg: InterceptConfig): PlanStep[] {
    const cmd = (action: string, c: HostCommand): PlanStep => ({ action, detail: describeCommand(c) });
    const flags = ['IFF_TUN', 'IFF_NO_PI', ...(this.variant.vnetHdr ? ['IFF_VNET_HDR'] : [])].join(' | ');
    const steps: PlanStep[] = [
      cmd('remove leftover shield table', nftScriptCommand(removeTableScript())),
      { action: 'create TUN device', detail: `open /dev/net/tun; ioctl TUNSETIFF ${this.device} (${flags})` },
    ];
    if (this.variant.vnetHdr) steps.push({ action: 'enable offloads', detail: 'ioctl TUNSETOFFLOAD TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6' });
    steps.push({
      action: 'open the firewall log',
      detail: `netlink socket (NETLINK_NETFILTER); NFLOG group: the first free from ${FIRST_LOG_GROUP}, listened to only while a capture runs`,
    });
    steps.push(cmd('bring the device up', linkUpCommand(this.device, this.variant.mtu)));
    steps.push({ action: 'enable IPv6 on the device', detail: `write 0 to ${ipv6SysctlPath(this.device)}` });
    for (const a of cfg.reflectAddresses) steps.push(cmd(`route ${a} into the device`, routeAddCommand(a, this.device)));
    steps.push(cmd(`install shield rules (drops logged to NFLOG group ${FIRST_LOG_GROUP} if free)`, nftScriptCommand(shieldTableScript(cfg, this.device, FIRST_LOG_GROUP))));
    return steps;
  }

  describe(): Record<string, string | number> {
    return {
      device: this.device,
      mtu: this.variant.mtu,
      offloads: this.variant.vnetHdr ? 'vnet header, TSO, checksum' : 'none',
      // Where captures get the packets the shield rules drop (or why they cannot).
      // The group was free at start, but another program can bind it whenever no capture listens (checked here).
      firewallLog: this.log
        ? (groupTakenBy(this.log.group, netlinkPortId(this.log.fd)) ?? `NFLOG group ${this.log.group}`)
        : `unavailable: ${this.logProblem ?? 'not started'}`,
      ...(this.missingCgroups.length ? { missingCgroups: `${this.missingCgroups.join(', ')} (not found when the rules were made: refused)` } : {}),
    };
  }

  async start(cfg: InterceptConfig): Promise<TunSourceInit> {
    if (this.fd >= 0) throw new RetroflectError(ErrorCode.INTERNAL, 'The TUN backend is already started.');
    const c = libc();
    // A running engine is detected before anything is touched (exit code 8, not a TUN "device busy"): its table names
    // its device, and that device exists only while the engine holds it.
    await this.refuseIfAnotherEngineRuns();
    // Then the device: if another engine grabbed it since, we fail here, still before touching its nft table.
    this.fd = openTunDevice(this.device, this.variant);
    this.ifIndex = interfaceIndex(this.device);
    try {
      this.wakeFd = c.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
      if (this.wakeFd < 0) throw new RetroflectError(ErrorCode.BACKEND_FAILED, `eventfd failed: ${c.strerror(c.errno())}.`);
      this.openLog();
      await this.claimShieldTable();
      await runCommand(linkUpCommand(this.device, this.variant.mtu));
      const hasV6 = enableIpv6(this.device);
      if (!hasV6 && cfg.reflectAddresses.some((a) => addressFamily(a) === 6)) {
        throw new RetroflectError(ErrorCode.BACKEND_FAILED, 'This kernel has IPv6 disabled, so IPv6 reflect addresses cannot be routed.', {
          hint: 'Enable IPv6 (ipv6.disable=0) or use IPv4 reflect addresses only.',
        });
      }
      for (const a of cfg.reflectAddresses) await runCommand(routeAddCommand(a, this.device));
      this.missingCgroups = missingCgroups(cfg);
      await installShield(cfg, this.device, this.log?.group ?? null);
      this.tableShape = await installedShape();
    } catch (err) {
      await this.stop().catch(() => undefined);
      throw err;
    }
    return {
      kind: 'tun',
      fd: this.fd,
      wakeFd: this.wakeFd,
      logFd: this.log?.fd ?? -1,
      logGroup: this.log?.group ?? -1,
      ifIndex: this.ifIndex,
      mtu: this.variant.mtu,
      vnetHdr: this.variant.vnetHdr,
    };
  }

  interfaceName(ifIndex: number): string {
    if (ifIndex === 0 || ifIndex === this.ifIndex) return this.device;
    return interfaceNameOf(ifIndex) ?? `if${ifIndex}`;
  }

  /** The firewall log is for captures only: without it the engine runs, and `status` says why captures miss drops. */
  private openLog(): void {
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
  private async claimShieldTable(): Promise<void> {
    const holder = await shieldTableDevice();
    if (holder !== null && holder !== this.device && (await linkExists(holder))) throw anotherEngine(holder);
    await removeShield(); // a leftover of a killed run, if there is one
    this.ownsShield = true;
  }

  /** Before the device is opened: a table whose device exists belongs to a running engine (even one on our name). */
  private async refuseIfAnotherEngineRuns(): Promise<void> {
    const holder = await shieldTableDevice();
    if (holder !== null && (await linkExists(holder))) throw anotherEngine(holder);
  }

  /**
   * Live change. All or nothing on the host: a step that fails (or a helper killed after its timeout) undoes the
   * steps before it, so routes and rules stay those of `prev` and the engine stays consistent with its config.
   */
  async apply(prev: InterceptConfig, next: InterceptConfig): Promise<TunSourceUpdate> {
    if (this.fd < 0) throw new RetroflectError(ErrorCode.INTERNAL, 'The TUN backend is not started.');
    const nextSet = new Set(next.reflectAddresses);
    const prevSet = new Set(prev.reflectAddresses);
    const removed = prev.reflectAddresses.filter((a) => !nextSet.has(a));
    const added = next.reflectAddresses.filter((a) => !prevSet.has(a));
    const missing = missingCgroups(next).filter((c) => !missingCgroups(prev).includes(c));
    if (missing.length) {
      throw new RetroflectError(ErrorCode.INVALID_PARAMS, `No cgroup ${missing.join(', ')} under ${CGROUP_V2_ROOT}; nothing was changed.`, {
        hint: 'Give the path of a running unit\'s cgroup below the cgroup v2 root, such as system.slice/squid.service (see `systemctl status`).',
        details: { field: 'cgroups', missing },
      });
    }
    const undo: (() => Promise<unknown>)[] = [];
    try {
      for (const a of added) {
        await runCommand(routeAddCommand(a, this.device));
        undo.push(() => this.deleteRoute(a));
      }
      for (const a of removed) {
        await this.deleteRoute(a);
        undo.push(() => runCommand(routeAddCommand(a, this.device)));
      }
      await updateShield(prev, next, this.log?.group ?? null); // one nft transaction: applied whole or not at all (a killed nft commits nothing)
      this.missingCgroups = missingCgroups(next);
      // A change of who may use an address replaces chains and rules, not only elements: the checks compare with the
      // table as it is now (nft-check.ts).
      if (allowUpdateCommands(NFT_FAMILY, NFT_TABLE, prev, next, '').length) this.tableShape = await installedShape();
    } catch (err) {
      for (const step of undo.reverse()) await step().catch(() => undefined);
      throw err;
    }
    return { kind: 'tun' }; // the worker needs nothing new: the device and its fd stay the same
  }

  private async deleteRoute(address: string): Promise<void> {
    // A route already gone (deleted by hand) is what we wanted anyway.
    await runCommand(routeDeleteCommand(address, this.device)).catch((err: RetroflectError) => {
      if (!/No such process|not found/i.test(String(err.details?.stderr ?? ''))) throw err;
    });
  }

  async verify(cfg: InterceptConfig, scope: 'firewall' | 'all'): Promise<string[]> {
    if (this.fd < 0 || !this.ownsShield) return [];
    const repairs: string[] = [];
    // The whole table, not one rule: a deleted shield rule or a flushed set turns shielding off as surely.
    const damage = this.tableShape === null ? 'was not in place' : await tableDamage(cfg, this.tableShape);
    if (damage !== null) {
      await installShield(cfg, this.device, this.log?.group ?? null);
      this.tableShape = await installedShape();
      repairs.push(`The nft table ${NFT_FAMILY} ${NFT_TABLE} ${damage} by something else; restored it whole (shielding was off or partly off meanwhile).`);
    }
    if (scope === 'firewall') return repairs;
    const routed = new Set(
      JSON.parse((await runCommand({ file: 'ip', args: ['-j', 'route', 'show', 'dev', this.device] })).stdout || '[]')
        .concat(JSON.parse((await runCommand({ file: 'ip', args: ['-j', '-6', 'route', 'show', 'dev', this.device] })).stdout || '[]'))
        .map((r: { dst: string }) => r.dst.replace(/\/(32|128)$/, '')),
    );
    for (const a of cfg.reflectAddresses) {
      if (routed.has(a)) continue;
      await runCommand(routeAddCommand(a, this.device));
      repairs.push(`The route of reflect address ${a} into ${this.device} was deleted by something else; restored it.`);
    }
    return repairs;
  }

  socketOwners(queries: readonly SocketQuery[]): (SocketOwner | null)[] {
    return socketOwners(queries);
  }

  firewallCounters(): Promise<FirewallCounters> {
    return readFirewallCounters();
  }

  wake(): void {
    if (this.wakeFd >= 0) libc().write(this.wakeFd, this.wakeValue, 8);
  }

  /** Undo everything. Closing the fd removes the non-persistent device and, with it, every route through it. */
  async stop(): Promise<void> {
    let failure: unknown;
    try {
      if (this.ownsShield) await removeShield();
      this.ownsShield = false;
      this.tableShape = null;
    } catch (err) {
      failure = err;
    }
    const c = libc();
    if (this.fd >= 0) c.close(this.fd);
    if (this.wakeFd >= 0) c.close(this.wakeFd);
    if (this.log) c.close(this.log.fd); // frees the NFLOG group
    this.fd = -1;
    this.wakeFd = -1;
    this.log = null;
    if (failure) throw failure;
  }
}
