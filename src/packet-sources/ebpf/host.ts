/**
 * The ebpf backend's main-thread half: the veth pair (veth.ts), the tc program on its egress (program.ts) and its
 * maps (maps.ts), one host route per reflect address into the device, the user-space path's packet socket on the
 * peer (packet-socket.ts), and the same nft shield table and NFLOG listener as the TUN backend (platform/linux/
 * nftables.ts, nflog.ts). Live changes update maps and routes; the program is never reloaded.
 */
import { type InterceptConfig } from '../../config/intercept-config.ts';
import { portMapsFor, portMapsOf } from '../../config/port-maps.ts';
import { allowListsFor } from '../../config/allow-lists.ts';
import { ErrorCode, RetroflectError } from '../../errors.ts';
import { describeCommand, runCommand, type HostCommand } from '../../platform/linux/command.ts';
import { EFD_CLOEXEC, EFD_NONBLOCK, libc } from '../../platform/linux/libc.ts';
import { interfaceIndex, interfaceNameOf } from '../../platform/linux/interfaces.ts';
import {
  installShield,
  NFT_FAMILY,
  NFT_TABLE,
  nftScriptCommand,
  readFirewallCounters,
  removeShield,
  shieldTableDevice,
  shieldTableScript,
  updateShield,
} from '../../platform/linux/nftables.ts';
import { FIRST_LOG_GROUP, openFirewallLog } from '../../platform/linux/nflog.ts';
import { routeAddCommand, routeDeleteCommand } from '../../platform/linux/routes.ts';
import type {
  EbpfSourceInit,
  EbpfSourceUpdate,
  FirewallCounters,
  HostBackend,
  KernelDataPath,
  KernelFlow,
  PlanStep,
  ProtocolCounts,
} from '../packet-source.ts';
import { KernelMaps, MAP, portRoleIndex, REFLECT_PORT_MAPS, REFLECT_USER_PATH, type FlowEntry } from './maps.ts';
import {
  attachProgram,
  closeProgram,
  loadProgram,
  programAttached,
  PROGRAM_NAME,
  type LoadedProgram,
} from './program.ts';
import type { TcFilter } from './libbpf.ts';
import { openPacketSocket } from './packet-socket.ts';
import {
  checkEbpfDeviceName,
  createPairCommand,
  DEFAULT_EBPF_DEVICE,
  deletePairCommand,
  deviceExists,
  deviceUp,
  deviceUpCommand,
  ownerPid,
  peerName,
  peerUpCommand,
  processAlive,
  setIpv6,
} from './veth.ts';

export interface EbpfHostOptions {
  deviceName?: string;
}

const FLOW_STATES: KernelFlow['state'][] = ['active', 'open', 'closed'];

function flowProtocol(p: number): KernelFlow['protocol'] {
  return p === 6 ? 'tcp' : p === 17 ? 'udp' : p === 1 ? 'icmp' : p === 58 ? 'icmpv6' : 'other';
}

function anotherEngine(device: string, pid: number): RetroflectError {
  return new RetroflectError(ErrorCode.ALREADY_RUNNING, `Another retroflect engine (pid ${pid}) uses ${device}.`, {
    hint: 'Stop that engine first, or give this one another device with --device.',
    details: { device, pid },
  });
}

export class EbpfHostBackend implements HostBackend<'ebpf'> {
  readonly kind = 'ebpf' as const;
  readonly device: string;
  readonly kernel: KernelDataPath;
  private program: LoadedProgram | null = null;
  private filter: TcFilter | null = null;
  private maps: KernelMaps | null = null;
  private ifIndex = 0;
  private socketFd = -1;
  private wakeFd = -1;
  private log: { fd: number; group: number } | null = null;
  private logProblem: string | null = null;
  private ownsDevice = false;
  private ownsShield = false;
  /** Counter slot per reflect address in the kernel's counters (stable while the address stays). */
  private readonly slots = new Map<string, number>();
  private readonly wakeValue = Buffer.from([1, 0, 0, 0, 0, 0, 0, 0]);

  constructor(private readonly opts: EbpfHostOptions = {}) {
    this.device = opts.deviceName ?? DEFAULT_EBPF_DEVICE;
    checkEbpfDeviceName(this.device);
    this.kernel = {
      reflectedByAddress: () => this.reflectedByAddress(),
      flows: (nowMs, idleLimitMs) => this.flows(nowMs, idleLimitMs),
    };
  }

  plan(cfg: InterceptConfig): PlanStep[] {
    const cmd = (action: string, c: HostCommand): PlanStep => ({ action, detail: describeCommand(c) });
    const steps: PlanStep[] = [
      {
        action: 'remove leftovers',
        detail: `delete ${this.device} if the engine named in its alias is gone (with its qdisc, program and routes)`,
      },
      { action: 'load the tc program', detail: `libbpf: open the built-in object, load "${PROGRAM_NAME}" (verified)` },
      cmd('create the veth pair', createPairCommand(this.device)),
      cmd('bring the device up (NOARP, alias names this engine)', deviceUpCommand(this.device, process.pid)),
      cmd('bring the peer up', peerUpCommand(this.device)),
      { action: 'attach the tc program', detail: `libbpf: clsact qdisc on ${this.device}, program on its egress` },
      { action: 'open the user-space path', detail: `AF_PACKET socket on ${peerName(this.device)} (vnet header)` },
    ];
    for (const a of cfg.reflectAddresses) {
      steps.push({ action: `reflect ${a} in the kernel`, detail: `map ${MAP.reflect}: add ${a}` });
    }
    for (const a of cfg.reflectAddresses) {
      steps.push(cmd(`route ${a} into the device`, routeAddCommand(a, this.device)));
    }
    steps.push(
      cmd(
        `install shield rules (drops logged to NFLOG group ${FIRST_LOG_GROUP} if free)`,
        nftScriptCommand(shieldTableScript(cfg, this.device, FIRST_LOG_GROUP)),
      ),
    );
    return steps;
  }

  describe(): Record<string, string | number> {
    return {
      device: this.device,
      peer: peerName(this.device),
      program: `tc egress ${PROGRAM_NAME} (libbpf)`,
      firewallLog: this.log ? `NFLOG group ${this.log.group}` : `unavailable: ${this.logProblem ?? 'not started'}`,
    };
  }

  async start(cfg: InterceptConfig): Promise<EbpfSourceInit> {
    if (this.program) throw new RetroflectError(ErrorCode.INTERNAL, 'The ebpf backend is already started.');
    await this.removeLeftovers();
    // Loaded before the host is touched: a kernel or library that refuses it changes nothing.
    this.program = loadProgram();
    try {
      this.maps = new KernelMaps(this.program.mapFds);
      await runCommand(createPairCommand(this.device));
      this.ownsDevice = true;
      await runCommand(deviceUpCommand(this.device, process.pid));
      await runCommand(peerUpCommand(this.device));
      setIpv6(peerName(this.device), false);
      const hasV6 = setIpv6(this.device, true);
      if (!hasV6 && cfg.reflectAddresses.some((a) => a.includes(':'))) {
        const why = 'This kernel has IPv6 disabled, so IPv6 reflect addresses cannot be routed.';
        throw new RetroflectError(ErrorCode.BACKEND_FAILED, why, {
          hint: 'Enable IPv6 (ipv6.disable=0) or use IPv4 reflect addresses only.',
        });
      }
      this.ifIndex = interfaceIndex(this.device);
      this.filter = attachProgram(this.program, this.ifIndex);
      this.socketFd = openPacketSocket(interfaceIndex(peerName(this.device)));
      this.wakeFd = libc().eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
      if (this.wakeFd < 0) throw new RetroflectError(ErrorCode.BACKEND_FAILED, 'eventfd failed.');
      try {
        this.log = openFirewallLog();
      } catch (err) {
        this.logProblem = err instanceof Error ? err.message : String(err);
      }
      this.syncMaps(cfg);
      for (const a of cfg.reflectAddresses) await runCommand(routeAddCommand(a, this.device));
      await removeShield();
      this.ownsShield = true;
      await installShield(cfg, this.device, this.log?.group ?? null);
    } catch (err) {
      await this.stop().catch(() => undefined);
      throw err;
    }
    return {
      kind: 'ebpf',
      fd: this.socketFd,
      wakeFd: this.wakeFd,
      logFd: this.log?.fd ?? -1,
      logGroup: this.log?.group ?? -1,
      ifIndex: this.ifIndex,
      captureMapFds: {
        settings: this.program.mapFds.settings,
        addresses: this.program.mapFds.captureAddresses,
        ports: this.program.mapFds.capturePorts,
        ring: this.program.mapFds.captureRing,
        lost: this.program.mapFds.captureLost,
      },
    };
  }

  /**
   * A device of ours whose engine is gone is removed (with its qdisc, program, maps and routes); one whose engine
   * runs is refused. The shield table is one per host: one naming a device that exists belongs to a running engine.
   */
  private async removeLeftovers(): Promise<void> {
    if (deviceExists(this.device)) {
      const pid = ownerPid(this.device);
      if (pid === null) {
        const why = `A device named ${this.device} exists and is not retroflect's.`;
        throw new RetroflectError(ErrorCode.BACKEND_FAILED, why, {
          hint: 'Give the engine another device with --device.',
          details: { device: this.device },
        });
      }
      if (pid !== process.pid && processAlive(pid)) throw anotherEngine(this.device, pid);
      await runCommand(deletePairCommand(this.device));
    }
    const holder = await shieldTableDevice();
    if (holder !== null && holder !== this.device && deviceExists(holder)) {
      const why = `Another retroflect engine (device ${holder}) is running on this host.`;
      throw new RetroflectError(ErrorCode.ALREADY_RUNNING, why, {
        hint:
          'On Linux one engine runs per host, since the shield rules are per host: stop the other engine first, ' +
          'or add your addresses and ports to it.',
        details: { device: holder },
      });
    }
  }

  /**
   * Make the reflect map match `cfg`: new addresses get a fresh counter slot. An address with a port allow list takes
   * the user-space path whole; one with port maps only for the ports those maps name (port_roles, set before the
   * flag that makes the program read them, cleared after).
   */
  private syncMaps(cfg: InterceptConfig): void {
    const maps = this.maps!;
    const keep = new Set(cfg.reflectAddresses);
    for (const [address] of this.slots) {
      if (keep.has(address)) continue;
      maps.removeReflect(address);
      this.slots.delete(address);
    }
    const roles = new Set<number>();
    for (const m of portMapsOf(cfg)) {
      roles.add(portRoleIndex(m.protocol, m.port));
      roles.add(portRoleIndex(m.protocol, m.target));
    }
    maps.addPortRoles(roles);
    const used = new Set(this.slots.values());
    for (const address of cfg.reflectAddresses) {
      let slot = this.slots.get(address);
      const fresh = slot === undefined;
      if (slot === undefined) {
        slot = 0;
        while (used.has(slot)) slot++;
        used.add(slot);
        this.slots.set(address, slot);
      }
      // Port allow lists are the data plane's (packet/allowed-ports.ts), and so are mapped flows (port-mapper.ts).
      const flags =
        allowListsFor(cfg, address).ports !== undefined
          ? REFLECT_USER_PATH
          : portMapsFor(cfg, address).length > 0
            ? REFLECT_PORT_MAPS
            : 0;
      maps.setReflect(address, slot, flags, fresh);
    }
    maps.keepPortRoles(roles);
  }

  /**
   * Live change, all or nothing on the host. Map entries of added addresses go in before their routes (a routed
   * packet always finds its entry); removed ones leave after their routes are gone.
   */
  async apply(prev: InterceptConfig, next: InterceptConfig): Promise<EbpfSourceUpdate> {
    if (!this.program) throw new RetroflectError(ErrorCode.INTERNAL, 'The ebpf backend is not started.');
    const nextSet = new Set(next.reflectAddresses);
    const prevSet = new Set(prev.reflectAddresses);
    const removed = prev.reflectAddresses.filter((a) => !nextSet.has(a));
    const added = next.reflectAddresses.filter((a) => !prevSet.has(a));
    const undo: (() => Promise<unknown>)[] = [];
    try {
      // Both configs' addresses meanwhile; leaving ones keep their maps (as the engine's data plane does).
      const leavingMaps = portMapsOf(prev).filter((m) => !nextSet.has(m.address));
      const portMaps = [...portMapsOf(next), ...leavingMaps];
      this.syncMaps({ ...next, reflectAddresses: [...prev.reflectAddresses, ...added], portMaps } as InterceptConfig);
      undo.push(async () => this.syncMaps(prev));
      for (const a of added) {
        await runCommand(routeAddCommand(a, this.device));
        undo.push(() => this.deleteRoute(a));
      }
      for (const a of removed) {
        await this.deleteRoute(a);
        undo.push(() => runCommand(routeAddCommand(a, this.device)));
      }
      await updateShield(prev, next, this.log?.group ?? null);
      this.syncMaps(next);
    } catch (err) {
      for (const step of undo.reverse()) await step().catch(() => undefined);
      throw err;
    }
    return { kind: 'ebpf' };
  }

  private async deleteRoute(address: string): Promise<void> {
    await runCommand(routeDeleteCommand(address, this.device)).catch((err: RetroflectError) => {
      if (!/No such process|not found/i.test(String(err.details?.stderr ?? ''))) throw err;
    });
  }

  async verify(cfg: InterceptConfig, scope: 'firewall' | 'all'): Promise<string[]> {
    if (!this.program || !this.ownsShield) return [];
    const repairs: string[] = [];
    const holder = await shieldTableDevice();
    if (holder !== this.device) {
      await installShield(cfg, this.device, this.log?.group ?? null);
      const what = holder === null ? 'deleted' : 'replaced';
      repairs.push(
        `The nft table ${NFT_FAMILY} ${NFT_TABLE} was ${what} by something else; restored it ` +
          '(shielding was off meanwhile).',
      );
    }
    if (scope === 'firewall') return repairs;
    // A deleted device is not repaired here: the worker's packet socket fails with it and the engine stops cleanly.
    if (!deviceExists(this.device)) return repairs;
    repairs.push(...(await this.repairDevice()));
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

  /** The pair up and the program on the device's egress again, after an `ip link set down` or a `tc qdisc del`. */
  private async repairDevice(): Promise<string[]> {
    const repairs: string[] = [];
    if (!deviceUp(this.device) || !deviceUp(peerName(this.device))) {
      await runCommand(deviceUpCommand(this.device, process.pid));
      await runCommand(peerUpCommand(this.device));
      repairs.push(`The device ${this.device} or its peer was set down by something else; set them up again.`);
    }
    if (!programAttached(this.filter!, this.ifIndex)) {
      this.filter = attachProgram(this.program!, this.ifIndex);
      repairs.push(
        `The tc program on the egress of ${this.device} (or its clsact qdisc) was removed by something else; ` +
          'attached it again (the user-space path reflected meanwhile).',
      );
    }
    return repairs;
  }

  firewallCounters(): Promise<FirewallCounters> {
    return readFirewallCounters();
  }

  interfaceName(ifIndex: number): string {
    if (ifIndex === 0 || ifIndex === this.ifIndex) return this.device;
    return interfaceNameOf(ifIndex) ?? `if${ifIndex}`;
  }

  private reflectedByAddress(): Map<string, ProtocolCounts> {
    const out = new Map<string, ProtocolCounts>();
    if (!this.maps) return out;
    for (const [address, slot] of this.slots) out.set(address, this.maps.slotCounts(slot));
    return out;
  }

  private flows(nowMs: number, limit: (state: KernelFlow['state']) => number): KernelFlow[] {
    if (!this.maps) return [];
    const nowNs = process.hrtime.bigint(); // CLOCK_MONOTONIC, as the program's (coarse) clock
    const idleMs = (e: FlowEntry): number => Number(nowNs - e.lastNs) / 1e6;
    const entries = this.maps.readFlows((e) => idleMs(e) > limit(FLOW_STATES[e.state] ?? 'active'));
    return entries.map((e) => ({
      protocol: flowProtocol(e.protocol),
      reflectAddress: e.reflectAddress,
      localAddress: e.localAddress,
      clientPort: e.clientPort,
      serverPort: e.serverPort,
      mappedFromPort: null,
      packets: e.packets,
      bytes: e.bytes,
      firstSeen: new Date(nowMs - Number(nowNs - e.firstNs) / 1e6).toISOString(),
      lastSeen: new Date(nowMs - idleMs(e)).toISOString(),
      state: FLOW_STATES[e.state] ?? 'active',
      pid: null,
      processName: null,
      uid: null,
      user: null,
      packageFamilyName: null,
    }));
  }

  wake(): void {
    if (this.wakeFd >= 0) libc().write(this.wakeFd, this.wakeValue, 8);
  }

  /** Undo everything: the shield table, then the device (its qdisc, program and routes go with it), then our fds. */
  async stop(): Promise<void> {
    let failure: unknown;
    try {
      if (this.ownsShield) await removeShield();
      this.ownsShield = false;
    } catch (err) {
      failure = err;
    }
    try {
      if (this.ownsDevice && deviceExists(this.device)) await runCommand(deletePairCommand(this.device));
      this.ownsDevice = false;
    } catch (err) {
      failure ??= err;
    }
    const c = libc();
    if (this.socketFd >= 0) c.close(this.socketFd);
    if (this.wakeFd >= 0) c.close(this.wakeFd);
    if (this.log) c.close(this.log.fd);
    this.socketFd = -1;
    this.wakeFd = -1;
    this.log = null;
    if (this.program) closeProgram(this.program);
    this.program = null;
    this.filter = null;
    this.maps = null;
    this.slots.clear();
    if (failure) throw failure;
  }
}
