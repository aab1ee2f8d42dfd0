/**
 * Linux packet backend: a TUN device plus one host route per reflect address. Everything this host sends to a
 * reflect address is routed into the device, so every packet read from it is outbound. A packet with verdict
 * Reflect (addresses swapped by the data plane) is written back into the device, and the kernel receives it as if
 * it had arrived from the reflect address. Pass and Drop are simply not written: a packet routed into the TUN that
 * is not for a reflect address (router solicitations, MLD reports) has nowhere else to go.
 *
 * Shield ports are enforced by nftables (nftables.ts), which also keeps their drop counters; while a capture runs the
 * worker half hears of each such drop through NFLOG (nflog.ts). The device is device.ts, its routes routes.ts.
 *
 *  - `TunHostBackend` (main thread): device, link, routes, nft table; live changes; cleanup.
 *  - `TunPacketSource` (worker thread): poll/read/write on the device fd, batched, no allocation per packet.
 *
 * The cost of this path (two extra copies per byte, one thread wake-up per direction; why busy-polling is not done)
 * is measured by bench/reflect-path.ts and written up in bench/README.md.
 */
import { addressFamily, type InterceptConfig } from '../../config/intercept-config.ts';
import { ErrorCode, RetroflectError } from '../../errors.ts';
import { runCommand, describeCommand, type HostCommand } from '../../platform/linux/command.ts';
import { EAGAIN, EFD_CLOEXEC, EFD_NONBLOCK, EINTR, libc, POLLERR, POLLFD_SIZE, POLLHUP, POLLIN, POLLNVAL, type Libc } from '../../platform/linux/libc.ts';
import { installShield, NFT_FAMILY, NFT_LOG_PREFIX, NFT_TABLE, nftScriptCommand, readFirewallCounters, removeShield, removeTableScript, shieldTableDevice, shieldTableScript, updateShield } from './nftables.ts';
import { FIRST_LOG_GROUP, FirewallLogReader, openFirewallLog, type LoggedPacketSink } from './nflog.ts';
import {
  checkDeviceName,
  DEFAULT_TUN_NAME,
  enableIpv6,
  ipv6SysctlPath,
  linkUpCommand,
  openTunDevice,
  TUN_VARIANTS,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_LEN,
  type TunVariant,
  type TunVariantName,
} from './device.ts';
import { routeAddCommand, routeDeleteCommand } from './routes.ts';
import { interfaceIndex, interfaceNameOf } from '../../platform/linux/interfaces.ts';
import { allocatePacketBatch, Verdict, type HostBackend, type PacketBatch, type PacketSource, type PacketSourceFactory, type PlanStep, type FirewallCounters, type TunSourceInit, type TunSourceUpdate, FirewallDropCause, type FirewallDropSink } from '../packet-source.ts';

/** The variant measured fastest by bench/reflect-path.ts (numbers in bench/README.md). */
export const DEFAULT_TUN_VARIANT: TunVariantName = 'vnetOffload';

/**
 * Packets per receive() at most. Big enough to amortise the poll, small enough to keep latency low. Under a single
 * TCP stream a receive finds only a few packets, and the C loop measured the same with batches of 1 to 64.
 */
export const TUN_BATCH_CAPACITY = 64;

/** Largest IP packet (and so the largest GSO packet the kernel hands a TUN with TSO on). */
const MAX_IP_PACKET = 65535;

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
  private readonly wakeValue = Buffer.from([1, 0, 0, 0, 0, 0, 0, 0]);

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
      firewallLog: this.log ? `NFLOG group ${this.log.group}` : `unavailable: ${this.logProblem ?? 'not started'}`,
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
      await installShield(cfg, this.device, this.log?.group ?? null);
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
      await updateShield(prev, next); // one nft transaction: applied whole or not at all (a killed nft commits nothing)
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
    const holder = await shieldTableDevice();
    if (holder !== this.device) {
      await installShield(cfg, this.device, this.log?.group ?? null);
      repairs.push(`The nft table ${NFT_FAMILY} ${NFT_TABLE} was ${holder === null ? 'deleted' : 'replaced'} by something else; restored it (shielding was off meanwhile).`);
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

/** Worker half: reads outbound packets from the TUN fd and writes reflected ones back. */
export class TunPacketSource implements PacketSource<'tun'> {
  readonly kind = 'tun' as const;
  readonly batch: PacketBatch;
  /** Writes the kernel refused (counted, not fatal: one bad packet must not stop the engine). */
  sendErrors = 0;
  private readonly c: Libc;
  private readonly fd: number;
  private readonly wakeFd: number;
  /** Bytes before the IP header in each slot (the virtio_net_hdr when vnet headers are on). */
  private readonly headerLen: number;
  private readonly slotSize: number;
  /** One view per slot, made once, so read/write never allocate. */
  private readonly slots: Buffer[];
  /** Poll entries: the device, the wake eventfd, and the firewall log while drops are observed. */
  private readonly pollFds = Buffer.alloc(3 * POLLFD_SIZE);
  private pollCount = 2;
  private readonly drain = Buffer.alloc(8);
  private closed = false;
  /** Packets the nft rules drop, read from NFLOG while a capture runs (null: NFLOG unusable). */
  private readonly log: FirewallLogReader | null;
  private dropSink: FirewallDropSink | null = null;
  /** Made once: the log reader's prefix index (the order given to it below) becomes the drop cause. */
  private readonly onLogged: LoggedPacketSink = (buf, off, len, prefix, ifIndex, timeMs) =>
    this.dropSink?.(buf, off, len, prefix === 0 ? FirewallDropCause.ShieldPort : FirewallDropCause.ForgedSource, ifIndex, timeMs);

  constructor(init: TunSourceInit) {
    this.c = libc();
    this.fd = init.fd;
    this.wakeFd = init.wakeFd;
    this.headerLen = init.vnetHdr ? VIRTIO_NET_HDR_LEN : 0;
    // With offloads the kernel hands us GSO packets up to 64 KiB whatever the MTU.
    const maxPacket = init.vnetHdr ? MAX_IP_PACKET : Math.min(init.mtu, MAX_IP_PACKET);
    this.slotSize = this.headerLen + maxPacket;
    this.batch = allocatePacketBatch(TUN_BATCH_CAPACITY, TUN_BATCH_CAPACITY * this.slotSize);
    this.slots = [];
    for (let i = 0; i < TUN_BATCH_CAPACITY; i++) {
      this.slots.push(this.batch.data.subarray(i * this.slotSize, (i + 1) * this.slotSize));
      this.batch.offset[i] = i * this.slotSize + this.headerLen;
      this.batch.outbound[i] = 1; // everything routed into the TUN was sent by this host
      this.batch.ifIndex[i] = init.ifIndex;
    }
    this.pollFds.writeInt32LE(this.fd, 0);
    this.pollFds.writeInt16LE(POLLIN, 4);
    this.pollFds.writeInt32LE(this.wakeFd, POLLFD_SIZE);
    this.pollFds.writeInt16LE(POLLIN, POLLFD_SIZE + 4);
    this.log = init.logFd >= 0 ? new FirewallLogReader(init.logFd, init.logGroup, [NFT_LOG_PREFIX.shield, NFT_LOG_PREFIX.forged]) : null;
    if (this.log) {
      this.pollFds.writeInt32LE(init.logFd, 2 * POLLFD_SIZE);
      this.pollFds.writeInt16LE(POLLIN, 2 * POLLFD_SIZE + 4);
    }
  }

  get firewallDropsLost(): number {
    return this.log?.lost ?? 0;
  }

  observeFirewallDrops(sink: FirewallDropSink | null): void {
    if (!this.log) return; // NFLOG is unusable here; `status` says so
    if (sink) {
      this.log.start();
      this.dropSink = sink;
      this.pollCount = 3;
    } else {
      this.dropSink = null;
      this.pollCount = 2;
      this.log.stop();
    }
  }

  receive(timeoutMs: number): number {
    this.batch.count = 0;
    if (this.closed) return 0;
    // While observed, firewall drops are taken first on every call: under load the device may never be polled.
    if (this.dropSink) this.log!.drain(this.onLogged);
    // Under load the device is usually readable already: try first, poll only when it is empty.
    let n = this.readAvailable();
    if (n > 0) return n;
    this.pollFds.writeInt16LE(0, 6);
    this.pollFds.writeInt16LE(0, POLLFD_SIZE + 6);
    this.pollFds.writeInt16LE(0, 2 * POLLFD_SIZE + 6);
    const ready = this.c.poll(this.pollFds, this.pollCount, Math.max(0, Math.floor(timeoutMs)));
    if (ready < 0) {
      const errno = this.c.errno();
      if (errno === EINTR) return 0;
      throw new RetroflectError(ErrorCode.BACKEND_FAILED, `poll on the TUN device failed: ${this.c.strerror(errno)}.`, { details: { errno } });
    }
    if (ready === 0) return 0;
    if (this.pollFds.readInt16LE(POLLFD_SIZE + 6) & POLLIN) this.c.read(this.wakeFd, this.drain, 8);
    if (this.dropSink && this.pollFds.readInt16LE(2 * POLLFD_SIZE + 6) & POLLIN) this.log!.drain(this.onLogged);
    const revents = this.pollFds.readInt16LE(6);
    if (revents & (POLLERR | POLLHUP | POLLNVAL)) {
      throw new RetroflectError(ErrorCode.BACKEND_FAILED, 'The TUN device was closed or failed.', {
        hint: 'Something removed the device; restart the engine.',
        details: { revents },
      });
    }
    if (revents & POLLIN) n = this.readAvailable();
    return n;
  }

  /** Read packets until the device is empty or the batch is full. */
  private readAvailable(): number {
    const b = this.batch;
    let n = 0;
    while (n < TUN_BATCH_CAPACITY) {
      const got = this.c.read(this.fd, this.slots[n], this.slotSize);
      if (got < 0) {
        const errno = this.c.errno();
        if (errno === EAGAIN || errno === EINTR) break;
        throw new RetroflectError(ErrorCode.BACKEND_FAILED, `Reading the TUN device failed: ${this.c.strerror(errno)}.`, { details: { errno } });
      }
      if (got <= this.headerLen) continue; // nothing after the header: not a packet
      b.length[n] = got - this.headerLen;
      b.verdict[n] = Verdict.Pass;
      // virtio_net_hdr.flags bit 0 = VIRTIO_NET_HDR_F_NEEDS_CSUM: the checksum field holds the pseudo-header sum only.
      b.partialChecksum[n] = this.headerLen !== 0 ? this.slots[n][0] & VIRTIO_NET_HDR_F_NEEDS_CSUM : 0;
      n++;
    }
    b.count = n;
    return n;
  }

  send(): void {
    const b = this.batch;
    for (let i = 0; i < b.count; i++) {
      if (b.verdict[i] !== Verdict.Reflect) continue;
      // Written back with its vnet header unchanged: the swap keeps partial checksums and GSO fields valid, and a
      // port map leaves a partial checksum field as it was (packet/port-rewrite.ts).
      if (this.c.write(this.fd, this.slots[i], this.headerLen + b.length[i]) < 0) this.sendErrors++;
    }
  }

  adopt(_cfg: InterceptConfig, _update: TunSourceUpdate): void {
    // Routes and shield rules are host state, changed by TunHostBackend.apply; the fd stays the same.
  }

  /** The host half owns and closes the fds; the worker just stops using them. */
  close(): void {
    this.closed = true;
  }
}

export const createTunPacketSource: PacketSourceFactory<'tun'> = (init) => new TunPacketSource(init);
