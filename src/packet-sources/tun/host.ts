/**
 * Linux packet backend, main-thread half (`TunHostBackend`): a TUN device (device.ts) that the reflect routes point
 * at, so everything this host sends to a reflect address is routed into it. The routes, the nft table (shield ports,
 * forged sources, who may use each address) and its NFLOG log are the Linux host state both backends share
 * (linux/host-state.ts). It makes the device and link, applies live changes, and cleans up (also after a killed run:
 * the device is not persistent, so it goes with our fd). The worker half, reading and writing the device, is
 * source.ts.
 */
import { addressFamily, type InterceptConfig } from '../../config/intercept-config.ts';
import { ErrorCode, RetroflectError } from '../../errors.ts';
import { runCommand, describeCommand, type HostCommand } from '../../platform/linux/command.ts';
import { interfaceIndex } from '../../platform/linux/interfaces.ts';
import { libc } from '../../platform/linux/libc.ts';
import type { FirewallCounters, HostBackend, PlanStep, TunSourceInit, TunSourceUpdate } from '../packet-source.ts';
import { DEFAULT_DEVICE } from '../default-device.ts';
import { LinuxHostState } from '../linux/host-state.ts';
import {
  checkDeviceName,
  DEFAULT_TUN_VARIANT,
  enableIpv6,
  ipv6SysctlPath,
  linkUpCommand,
  openTunDevice,
  TUN_VARIANTS,
  type TunVariant,
  type TunVariantName,
} from './device.ts';
import { FIRST_LOG_GROUP } from '../../platform/linux/nflog.ts';
import { nftScriptCommand, removeTableScript, shieldTableScript } from '../../platform/linux/nftables.ts';
import { routeAddCommand } from '../../platform/linux/routes.ts';
import type { SocketOwner, SocketQuery } from '../../platform/linux/socket-owners.ts';

export interface TunHostOptions {
  /** Device name; default DEFAULT_DEVICE.tun (../default-device.ts). */
  deviceName?: string;
  /** Device setup; default DEFAULT_TUN_VARIANT. */
  variant?: TunVariantName | TunVariant;
}

export class TunHostBackend implements HostBackend<'tun'> {
  readonly kind = 'tun' as const;
  readonly device: string;
  readonly variant: TunVariant;
  private fd = -1;
  private ifIndex = 0;
  /** Routes, nft table, NFLOG socket and wake eventfd (shared with the ebpf backend). */
  private readonly host: LinuxHostState;

  constructor(opts: TunHostOptions = {}) {
    this.device = opts.deviceName ?? DEFAULT_DEVICE.tun;
    checkDeviceName(this.device); // refuse a bad --device before anything is planned or changed
    const v = opts.variant ?? DEFAULT_TUN_VARIANT;
    this.variant = typeof v === 'string' ? TUN_VARIANTS[v] : v;
    this.host = new LinuxHostState(this.device);
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
      ...this.host.describe(),
    };
  }

  async start(cfg: InterceptConfig): Promise<TunSourceInit> {
    if (this.fd >= 0) throw new RetroflectError(ErrorCode.INTERNAL, 'The TUN backend is already started.');
    // A running engine is detected before anything is touched (exit code 8, not a TUN "device busy"): its table names
    // its device, and that device exists only while the engine holds it.
    await this.host.refuseIfAnotherEngineRuns();
    // Then the device: if another engine grabbed it since, we fail here, still before touching its nft table.
    this.fd = openTunDevice(this.device, this.variant);
    this.ifIndex = interfaceIndex(this.device);
    try {
      this.host.openFds();
      await this.host.claimShieldTable();
      await runCommand(linkUpCommand(this.device, this.variant.mtu));
      const hasV6 = enableIpv6(this.device);
      if (!hasV6 && cfg.reflectAddresses.some((a) => addressFamily(a) === 6)) {
        throw new RetroflectError(ErrorCode.BACKEND_FAILED, 'This kernel has IPv6 disabled, so IPv6 reflect addresses cannot be routed.', {
          hint: 'Enable IPv6 (ipv6.disable=0) or use IPv4 reflect addresses only.',
        });
      }
      await this.host.install(cfg);
    } catch (err) {
      await this.stop().catch(() => undefined);
      throw err;
    }
    return {
      kind: 'tun',
      fd: this.fd,
      wakeFd: this.host.wakeFd,
      logFd: this.host.log?.fd ?? -1,
      logGroup: this.host.log?.group ?? -1,
      ifIndex: this.ifIndex,
      mtu: this.variant.mtu,
      vnetHdr: this.variant.vnetHdr,
    };
  }

  interfaceName(ifIndex: number): string {
    return this.host.interfaceName(ifIndex, this.ifIndex);
  }

  /** Live change: routes and rules only (linux/host-state.ts), all or nothing; the device stays the same. */
  async apply(prev: InterceptConfig, next: InterceptConfig): Promise<TunSourceUpdate> {
    if (this.fd < 0) throw new RetroflectError(ErrorCode.INTERNAL, 'The TUN backend is not started.');
    this.host.checkChange(prev, next);
    await this.host.apply(prev, next);
    return { kind: 'tun' }; // the worker needs nothing new: the device and its fd stay the same
  }

  async verify(cfg: InterceptConfig, scope: 'firewall' | 'all'): Promise<string[]> {
    if (this.fd < 0) return [];
    return this.host.verify(cfg, scope);
  }

  socketOwners(queries: readonly SocketQuery[]): (SocketOwner | null)[] {
    return this.host.socketOwners(queries);
  }

  firewallCounters(): Promise<FirewallCounters> {
    return this.host.firewallCounters();
  }

  wake(): void {
    this.host.wake();
  }

  /** Undo everything. Closing the fd removes the non-persistent device and, with it, every route through it. */
  async stop(): Promise<void> {
    await this.host.stop(async () => {
      if (this.fd >= 0) libc().close(this.fd);
      this.fd = -1;
    });
  }
}
