/**
 * The ebpf backend's main-thread half: the veth pair (veth.ts), the tc program on its egress (program.ts) and its
 * maps (maps.ts), one host route per reflect address into the device, the user-space path's packet socket on the
 * peer (packet-socket.ts). The routes, the nft table (shield ports, forged sources, and who may use each address,
 * matched on the output hook before a packet is routed into the device) and its NFLOG log are the Linux host state
 * both backends share (linux/host-state.ts). Live changes update maps, routes and rules; the program is never
 * reloaded.
 */
import { MAX_REFLECT_ADDRESSES, type InterceptConfig } from '../../config/intercept-config.ts';
import { portMapsFor, portMapsOf } from '../../config/port-maps.ts';
import { ErrorCode, RetroflectError } from '../../errors.ts';
import { describeCommand, runCommand, type HostCommand } from '../../platform/linux/command.ts';
import { libc } from '../../platform/linux/libc.ts';
import { interfaceIndex } from '../../platform/linux/interfaces.ts';
import { nftScriptCommand, shieldTableScript } from '../../platform/linux/nftables.ts';
import { FIRST_LOG_GROUP } from '../../platform/linux/nflog.ts';
import { routeAddCommand } from '../../platform/linux/routes.ts';
import type { SocketOwner, SocketQuery } from '../../platform/linux/socket-owners.ts';
import { DEFAULT_DEVICE } from '../default-device.ts';
import { LinuxHostState } from '../linux/host-state.ts';
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
import { AllowedPortSet, allowedPortEntries } from '../../packet/allowed-ports.ts';
import {
  KernelMaps, MAP, portRoleIndex, reflectKey, REFLECT_PORT_LIST, REFLECT_PORT_MAPS, type FlowEntry,
} from './maps.ts';
import { forgetUnmapped } from './mapped-flows.ts';
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
  deletePairCommand,
  deviceExists,
  deviceUp,
  deviceUpCommand,
  engineDevices,
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

function mappedFlowName(reflect: Buffer, protocol: number, port: number, target: number): string {
  return `${reflect.toString('hex')}/${protocol}/${port}/${target}`;
}

function protocolNumber(p: 'tcp' | 'udp'): number {
  return p === 'tcp' ? 6 : 17;
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
  private ownsDevice = false;
  /** Routes, nft table, NFLOG socket and wake eventfd (shared with the TUN backend). */
  private readonly host: LinuxHostState;
  /** Counter slot per reflect address in the kernel's counters (stable while the address stays). */
  private readonly slots = new Map<string, number>();

  constructor(private readonly opts: EbpfHostOptions = {}) {
    this.device = opts.deviceName ?? DEFAULT_DEVICE.ebpf;
    checkEbpfDeviceName(this.device);
    this.host = new LinuxHostState(this.device);
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
        detail: `delete ${this.device}, and any device, if the engine its alias names is gone (with its qdisc, ` +
          'program and routes)',
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
      ...this.host.describe(),
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
      this.host.openFds();
      this.syncMaps(cfg);
      await this.host.claimShieldTable();
      await this.host.install(cfg);
    } catch (err) {
      await this.stop().catch(() => undefined);
      throw err;
    }
    return {
      kind: 'ebpf',
      fd: this.socketFd,
      wakeFd: this.host.wakeFd,
      logFd: this.host.log?.fd ?? -1,
      logGroup: this.host.log?.group ?? -1,
      ifIndex: this.ifIndex,
      captureMapFds: {
        settings: this.program.mapFds.settings,
        addresses: this.program.mapFds.captureAddresses,
        ports: this.program.mapFds.capturePorts,
        ring: this.program.mapFds.captureRing,
        lost: this.program.mapFds.captureLost,
      },
      mappedFlowFds: { mappedFlows: this.program.mapFds.mappedFlows, flows: this.program.mapFds.flows },
    };
  }

  /**
   * A device of ours whose engine is gone is removed (with its qdisc, program, maps and routes), whatever its name (an
   * earlier run may have had another --device: its nft table, naming it, would read as a running engine's); ours
   * whose engine runs is refused. The shield table is one per host: one naming a device that exists belongs to a
   * running engine.
   */
  private async removeLeftovers(): Promise<void> {
    for (const { device, pid } of engineDevices()) {
      if (device !== this.device && pid !== process.pid && !processAlive(pid)) {
        await runCommand(deletePairCommand(device));
      }
    }
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
    await this.host.refuseIfAnotherEngineRuns();
  }

  /**
   * Make the reflect map match `cfg`: new addresses get a fresh counter slot. An address with a port allow list has
   * its allowed-port sets in allowed_ports (the data plane's own, packet/allowed-ports.ts); the packets they do not
   * allow take the user-space path, which refuses them. One with port maps takes that path for the ports those maps
   * name (port_roles). What a flag makes the program read is written before the flag and cleared after it.
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
    const fresh = new Set<string>();
    for (const address of cfg.reflectAddresses) {
      if (this.slots.has(address)) continue;
      fresh.add(address);
      let slot = 0;
      while (used.has(slot)) slot++;
      used.add(slot);
      this.slots.set(address, slot);
    }
    const allowed = new AllowedPortSet();
    allowed.replace(allowedPortEntries(cfg, (address) => this.slots.get(address)!));
    for (const slot of this.slots.values()) {
      const bits = allowed.slotBits(slot);
      if (bits) maps.writeAllowedPorts(slot, bits);
    }
    for (const address of cfg.reflectAddresses) {
      const slot = this.slots.get(address)!;
      // Mapped flows are the data plane's (engine/port-mapper.ts, which hands answered ones to the program:
      // mapped-flows.ts).
      const flags =
        (allowed.restricted[slot] === 1 ? REFLECT_PORT_LIST : 0) |
        (portMapsFor(cfg, address).length > 0 ? REFLECT_PORT_MAPS : 0);
      maps.setReflect(address, slot, flags, fresh.has(address));
    }
    for (let slot = 0; slot < MAX_REFLECT_ADDRESSES; slot++) {
      if (allowed.restricted[slot] === 0) maps.writeAllowedPorts(slot, null);
    }
    maps.keepPortRoles(roles);
  }

  /**
   * Live change, all or nothing on the host (linux/host-state.ts). Map entries of added addresses go in before their
   * routes (a routed packet always finds its entry); removed ones leave after their routes are gone.
   */
  async apply(prev: InterceptConfig, next: InterceptConfig): Promise<EbpfSourceUpdate> {
    if (!this.program) throw new RetroflectError(ErrorCode.INTERNAL, 'The ebpf backend is not started.');
    this.host.checkChange(prev, next);
    const prevSet = new Set(prev.reflectAddresses);
    const added = next.reflectAddresses.filter((a) => !prevSet.has(a));
    const nextSet = new Set(next.reflectAddresses);
    // Both configs' addresses meanwhile; leaving ones keep their maps (as the engine's data plane does).
    const leavingMaps = portMapsOf(prev).filter((m) => !nextSet.has(m.address));
    const portMaps = [...portMapsOf(next), ...leavingMaps];
    this.syncMaps({ ...next, reflectAddresses: [...prev.reflectAddresses, ...added], portMaps } as InterceptConfig);
    await this.host.apply(prev, next, [async () => this.syncMaps(prev)]);
    this.syncMaps(next);
    this.forgetUnmappedFlows(next);
    return { kind: 'ebpf' };
  }

  /**
   * Flows the worker's port mapper cached in the kernel whose map (or address) `cfg` no longer has stop being
   * rewritten now; the mapper forgets them too when its config arrives (engine/port-mapper.ts configure).
   */
  private forgetUnmappedFlows(cfg: InterceptConfig): void {
    const live = new Set(
      portMapsOf(cfg).map((m) => mappedFlowName(reflectKey(m.address), protocolNumber(m.protocol), m.port, m.target)),
    );
    const mapped = (r: Buffer, proto: number, port: number, target: number): boolean =>
      live.has(mappedFlowName(r, proto, port, target));
    forgetUnmapped(this.program!.mapFds.mappedFlows, mapped);
  }

  /**
   * The shared checks (the nft table whole; for 'all', the routes), and for 'all' first the device pair and the
   * program on its egress: the routes need the device up. A deleted device is not repaired here: the worker's packet
   * socket fails with it and the engine stops cleanly.
   */
  async verify(cfg: InterceptConfig, scope: 'firewall' | 'all'): Promise<string[]> {
    if (!this.program) return [];
    if (scope === 'firewall' || !deviceExists(this.device)) return this.host.verify(cfg, 'firewall');
    const device = await this.repairDevice();
    return [...device, ...(await this.host.verify(cfg, scope))];
  }

  socketOwners(queries: readonly SocketQuery[]): (SocketOwner | null)[] {
    return this.host.socketOwners(queries);
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
    return this.host.firewallCounters();
  }

  interfaceName(ifIndex: number): string {
    return this.host.interfaceName(ifIndex, this.ifIndex);
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
      mappedFromPort: e.mappedPort || null,
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
    this.host.wake();
  }

  /** Undo everything: the shield table, then the device (its qdisc, program and routes go with it), then our fds. */
  async stop(): Promise<void> {
    await this.host.stop(async () => {
      try {
        if (this.ownsDevice && deviceExists(this.device)) await runCommand(deletePairCommand(this.device));
        this.ownsDevice = false;
      } finally {
        if (this.socketFd >= 0) libc().close(this.socketFd);
        this.socketFd = -1;
        if (this.program) closeProgram(this.program);
        this.program = null;
        this.filter = null;
        this.maps = null;
        this.slots.clear();
      }
    });
  }
}
