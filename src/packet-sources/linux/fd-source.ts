/**
 * The worker half both Linux backends share (`LinuxFdSource`): poll/read/write on one fd that hands over the packets
 * this host routed to a reflect address (tun: the TUN device; ebpf: the packet socket on the veth peer), batched, no
 * allocation per packet; the wake eventfd; and, while a capture runs, the nft rules' drops read from NFLOG (shield
 * ports, forged sources, who-list refusals) and reported as firewall drops; and a subclass's own fd to wait on
 * (`watchExtraFd`, ebpf: the capture ring). Every packet read is outbound. A packet
 * with verdict Reflect (addresses swapped by the data plane) is written back and the kernel receives it as if it had
 * arrived from the reflect address; Pass and Drop are not written (nothing else is routed there that has anywhere
 * else to go). What differs per backend is the frame layout (`FrameLayout`) and what the subclass adds.
 *
 * The cost of this path (two extra copies per byte, one thread wake-up per direction; why busy-polling is not done)
 * is measured by bench/reflect-path.ts and written up in bench/README.md.
 */
import type { InterceptConfig } from '../../config/intercept-config.ts';
import { ErrorCode, RetroflectError } from '../../errors.ts';
import { FirewallDropCause, Verdict } from '../../packet/verdicts.ts';
import { REFUSAL_MAX_BYTES } from '../../packet/refusal.ts';
import {
  EAGAIN,
  EINTR,
  libc,
  POLLERR,
  POLLFD_SIZE,
  POLLHUP,
  POLLIN,
  POLLNVAL,
  type Libc,
} from '../../platform/linux/libc.ts';
import { FirewallLogReader, type LoggedPacketSink } from '../../platform/linux/nflog.ts';
import { NFT_LOG_PREFIX } from '../../platform/linux/nftables.ts';
import {
  allocatePacketBatch,
  type FirewallDropSink,
  type PacketBatch,
  type PacketSource,
  type SourceUpdate,
} from '../packet-source.ts';

/**
 * Packets per receive() at most. Big enough to amortise the poll, small enough to keep latency low. Under a single
 * TCP stream a receive finds only a few packets, and the C loop measured the same with batches of 1 to 64.
 */
export const LINUX_BATCH_CAPACITY = 64;

/** NFLOG datagrams (one logged drop each: the group is set to send at once) read per receive() at most. */
export const LOG_READS_PER_PASS = LINUX_BATCH_CAPACITY;

/** Largest IP packet (and so the largest GSO packet the kernel hands over with offloads on, whatever the MTU). */
export const MAX_IP_PACKET = 65535;

/**
 * `struct virtio_net_hdr` (linux/virtio_net.h), 10 bytes (no num_buffers field), in front of each packet when vnet
 * headers are on (TUN device, packet socket): flags u8, gso_type u8, hdr_len u16, gso_size u16, csum_start u16,
 * csum_offset u16. We never edit it: swapping the IP addresses keeps both a partial checksum (the pseudo-header sum
 * is order-free) and the GSO fields valid.
 */
export const VIRTIO_NET_HDR_LEN = 10;
/** virtio_net_hdr.flags bit 0: the checksum field holds only the pseudo-header sum. */
const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;

const ETHERNET_HEADER_LEN = 14;
const ETHERTYPE_OFFSET = 12;
const ETH_P_IP = 0x0800;
const ETH_P_IPV6 = 0x86dd;

/** Drop cause of each NFLOG prefix, in the order the log reader is given them. */
const LOGGED_PREFIXES = [NFT_LOG_PREFIX.shield, NFT_LOG_PREFIX.forged, NFT_LOG_PREFIX.notAllowed];
const LOGGED_CAUSES = [
  FirewallDropCause.ShieldPort,
  FirewallDropCause.ForgedSource,
  FirewallDropCause.NotAllowed,
] as const;

/** Poll slots: the packet fd, the wake eventfd, the NFLOG socket, a subclass's extra fd (ebpf: its capture ring). */
const POLL_FD = 0;
const POLL_WAKE = 1;
const POLL_LOG = 2;
const POLL_EXTRA = 3;
const POLL_SLOTS = 4;

/** The fds the host half hands over (fds are process-wide) and the device's interface index. */
export interface LinuxFdInit {
  fd: number;
  wakeFd: number;
  /** The NFLOG socket and group the drop rules log to (-1: NFLOG unusable). */
  logFd: number;
  logGroup: number;
  /** The engine device's interface index (every packet read carries it). */
  ifIndex: number;
}

/** What stands before each packet's IP header, and how the fd is named in errors. */
export interface FrameLayout {
  /** Bytes of virtio_net_hdr (0: none; its NEEDS_CSUM flag then marks partial checksums). */
  vnetHdrLen: number;
  /** An Ethernet header follows the vnet header (packet socket): frames that are not IP are skipped. */
  ethernet: boolean;
  /** Largest IP packet read. */
  maxPacket: number;
  /** "the TUN device", "the ebpf backend's packet socket". */
  what: string;
}

export abstract class LinuxFdSource<K extends 'tun' | 'ebpf'> implements PacketSource<K> {
  abstract readonly kind: K;
  readonly batch: PacketBatch;
  /** Writes the kernel refused (counted, not fatal: one bad packet must not stop the engine). */
  sendErrors = 0;
  private readonly c: Libc;
  private readonly fd: number;
  private readonly wakeFd: number;
  private readonly what: string;
  private readonly vnetHdrLen: number;
  private readonly ethernet: boolean;
  /** Bytes before the IP header in each slot. */
  private readonly headerLen: number;
  private readonly slotSize: number;
  /** One view per slot, made once, so read/write never allocate. */
  private readonly slots: Buffer[] = [];
  /** Poll entries (POLL_*): the fd, the wake eventfd, the firewall log while drops are observed, and a subclass's
   *  own fd while it has one (`watchExtraFd`); an unused entry holds -1, which poll skips. */
  private readonly pollFds = Buffer.alloc(POLL_SLOTS * POLLFD_SIZE);
  private readonly logFd: number;
  private extraActive = false;
  private readonly drain = Buffer.alloc(8);
  private closed = false;
  /** A refusal behind a zeroed vnet header (no offload asked: its checksums are complete). Made once. */
  private readonly refusalSlot: Buffer;
  /** Packets the nft rules drop, read from NFLOG while a capture runs (null: NFLOG unusable). */
  private readonly log: FirewallLogReader | null;
  private dropSink: FirewallDropSink | null = null;
  /** Made once: the log reader's prefix index (the order given to it) becomes the drop cause. */
  private readonly onLogged: LoggedPacketSink = (buf, off, len, prefix, ifIndex, timeMs) =>
    this.dropSink?.(buf, off, len, LOGGED_CAUSES[prefix], ifIndex, timeMs);

  constructor(init: LinuxFdInit, layout: FrameLayout) {
    this.c = libc();
    this.fd = init.fd;
    this.wakeFd = init.wakeFd;
    this.what = layout.what;
    this.vnetHdrLen = layout.vnetHdrLen;
    this.ethernet = layout.ethernet;
    this.headerLen = layout.vnetHdrLen + (layout.ethernet ? ETHERNET_HEADER_LEN : 0);
    this.slotSize = this.headerLen + layout.maxPacket;
    this.refusalSlot = Buffer.alloc(this.headerLen + REFUSAL_MAX_BYTES);
    this.batch = allocatePacketBatch(LINUX_BATCH_CAPACITY, LINUX_BATCH_CAPACITY * this.slotSize);
    for (let i = 0; i < LINUX_BATCH_CAPACITY; i++) {
      this.slots.push(this.batch.data.subarray(i * this.slotSize, (i + 1) * this.slotSize));
      this.batch.offset[i] = i * this.slotSize + this.headerLen;
      this.batch.outbound[i] = 1; // everything routed to the engine was sent by this host
      this.batch.ifIndex[i] = init.ifIndex;
    }
    for (let slot = 0; slot < POLL_SLOTS; slot++) this.pollFds.writeInt16LE(POLLIN, slot * POLLFD_SIZE + 4);
    this.setPollFd(POLL_FD, this.fd);
    this.setPollFd(POLL_WAKE, this.wakeFd);
    this.setPollFd(POLL_LOG, -1);
    this.setPollFd(POLL_EXTRA, -1);
    this.logFd = init.logFd;
    this.log = init.logFd >= 0 ? new FirewallLogReader(init.logFd, init.logGroup, LOGGED_PREFIXES) : null;
  }

  private setPollFd(slot: number, fd: number): void {
    this.pollFds.writeInt32LE(fd, slot * POLLFD_SIZE);
  }

  private revents(slot: number): number {
    return this.pollFds.readInt16LE(slot * POLLFD_SIZE + 6);
  }

  /** A subclass's own fd to wait on beside the packet fd (-1: none); `drainExtra` runs when it is readable and at
   *  the start of every receive, so it gets a bounded turn however busy the packet fd is. */
  protected watchExtraFd(fd: number): void {
    this.extraActive = fd >= 0;
    this.setPollFd(POLL_EXTRA, fd);
  }

  /** Read what the extra fd holds (the subclass bounds the work per call). */
  protected drainExtra(): void {}

  get firewallDropsLost(): number {
    return this.log?.lost ?? 0;
  }

  observeFirewallDrops(sink: FirewallDropSink | null): void {
    if (!this.log) return; // NFLOG is unusable here; `status` says so
    if (sink) {
      this.log.start();
      this.dropSink = sink;
      this.setPollFd(POLL_LOG, this.logFd);
    } else {
      this.dropSink = null;
      this.setPollFd(POLL_LOG, -1);
      this.log.stop();
    }
  }

  receive(timeoutMs: number): number {
    this.batch.count = 0;
    if (this.closed) return 0;
    // While observed, firewall drops and the fd take turns, each a bounded share per call: neither a flood of drops
    // nor a busy device can starve the other (the worker decides and sends between calls).
    if (this.dropSink) this.log!.drain(this.onLogged, LOG_READS_PER_PASS);
    if (this.extraActive) this.drainExtra();
    // Under load the fd is usually readable already: try first, poll only when it is empty.
    let n = this.readAvailable();
    if (n > 0) return n;
    for (let slot = 0; slot < POLL_SLOTS; slot++) this.pollFds.writeInt16LE(0, slot * POLLFD_SIZE + 6);
    const ready = this.c.poll(this.pollFds, POLL_SLOTS, Math.max(0, Math.floor(timeoutMs)));
    if (ready < 0) {
      const errno = this.c.errno();
      if (errno === EINTR) return 0;
      const why = `poll on ${this.what} failed: ${this.c.strerror(errno)}.`;
      throw new RetroflectError(ErrorCode.BACKEND_FAILED, why, { details: { errno } });
    }
    if (ready === 0) return 0;
    if (this.revents(POLL_WAKE) & POLLIN) this.c.read(this.wakeFd, this.drain, 8);
    if (this.dropSink && this.revents(POLL_LOG) & POLLIN) this.log!.drain(this.onLogged, LOG_READS_PER_PASS);
    if (this.extraActive && this.revents(POLL_EXTRA) & POLLIN) this.drainExtra();
    const revents = this.revents(POLL_FD);
    if (revents & (POLLERR | POLLHUP | POLLNVAL)) {
      const what = this.what[0].toUpperCase() + this.what.slice(1);
      throw new RetroflectError(ErrorCode.BACKEND_FAILED, `${what} was closed or failed.`, {
        hint: 'Something removed the device; restart the engine.',
        details: { revents },
      });
    }
    if (revents & POLLIN) n = this.readAvailable();
    return n;
  }

  /** Read packets until the fd is empty or the batch is full; empty frames and frames that are not IP are skipped. */
  private readAvailable(): number {
    const b = this.batch;
    let n = 0;
    while (n < LINUX_BATCH_CAPACITY) {
      const slot = this.slots[n];
      const got = this.c.read(this.fd, slot, this.slotSize);
      if (got < 0) {
        const errno = this.c.errno();
        if (errno === EAGAIN || errno === EINTR) break;
        const why = `Reading ${this.what} failed: ${this.c.strerror(errno)}.`;
        throw new RetroflectError(ErrorCode.BACKEND_FAILED, why, { details: { errno } });
      }
      if (got <= this.headerLen) continue; // nothing after the header: not a packet
      if (this.ethernet) {
        const type = slot.readUInt16BE(this.vnetHdrLen + ETHERTYPE_OFFSET);
        if (type !== ETH_P_IP && type !== ETH_P_IPV6) continue;
      }
      b.length[n] = got - this.headerLen;
      b.verdict[n] = Verdict.Pass;
      b.partialChecksum[n] = this.vnetHdrLen !== 0 ? slot[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM : 0;
      n++;
    }
    b.count = n;
    return n;
  }

  send(): void {
    const b = this.batch;
    for (let i = 0; i < b.count; i++) {
      if (b.verdict[i] !== Verdict.Reflect) continue;
      // Written back with its headers unchanged: the swap keeps partial checksums and GSO fields valid, a port map
      // leaves a partial checksum field as it was (packet/port-rewrite.ts), and an Ethernet frame's destination is
      // already the engine device's own address (NOARP), so the device takes it as addressed to this host.
      if (this.c.write(this.fd, this.slots[i], this.headerLen + b.length[i]) < 0) this.sendErrors++;
    }
  }

  /** A refusal (TCP reset, ICMP unreachable) goes in like a reflected packet, behind the refused packet's own
   *  Ethernet header where there is one. */
  sendRefusal(index: number, packet: Uint8Array, length: number): void {
    const slot = this.refusalSlot;
    this.slots[index].copy(slot, this.vnetHdrLen, this.vnetHdrLen, this.headerLen);
    for (let i = 0; i < length; i++) slot[this.headerLen + i] = packet[i];
    if (this.c.write(this.fd, slot, this.headerLen + length) < 0) this.sendErrors++;
  }

  adopt(_cfg: InterceptConfig, _update: SourceUpdate<K>): void {
    // Routes, maps and nft rules are host state, changed by the host half's apply; the fd stays the same.
  }

  /** The host half owns and closes the fds; the worker just stops using them. */
  close(): void {
    this.closed = true;
  }
}
