/**
 * Linux packet backend, worker half (`TunPacketSource`): poll/read/write on the TUN device fd, batched, no
 * allocation per packet. Every packet read from the device is outbound (routed into it by host.ts). A packet with
 * verdict Reflect (addresses swapped by the data plane) is written back into the device, and the kernel receives it
 * as if it had arrived from the reflect address. Pass and Drop are simply not written: a packet routed into the TUN
 * that is not for a reflect address (router solicitations, MLD reports) has nowhere else to go. While a capture
 * runs, the drops of the nft shield rules are read from NFLOG (nflog.ts) and reported as firewall drops.
 *
 * The cost of this path (two extra copies per byte, one thread wake-up per direction; why busy-polling is not done)
 * is measured by bench/reflect-path.ts and written up in bench/README.md.
 */
import type { InterceptConfig } from '../../config/intercept-config.ts';
import { ErrorCode, RetroflectError } from '../../errors.ts';
import { FirewallDropCause, Verdict } from '../../packet/verdicts.ts';
import { REFUSAL_MAX_BYTES } from '../../packet/refusal.ts';
import { EAGAIN, EINTR, libc, POLLERR, POLLFD_SIZE, POLLHUP, POLLIN, POLLNVAL, type Libc } from '../../platform/linux/libc.ts';
import { allocatePacketBatch, type FirewallDropSink, type PacketBatch, type PacketSource, type PacketSourceFactory, type TunSourceInit, type TunSourceUpdate } from '../packet-source.ts';
import { VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_LEN } from './device.ts';
import { FirewallLogReader, type LoggedPacketSink } from '../../platform/linux/nflog.ts';
import { NFT_LOG_PREFIX } from '../../platform/linux/nftables.ts';

/**
 * Packets per receive() at most. Big enough to amortise the poll, small enough to keep latency low. Under a single
 * TCP stream a receive finds only a few packets, and the C loop measured the same with batches of 1 to 64.
 */
export const TUN_BATCH_CAPACITY = 64;

/** NFLOG datagrams (one logged drop each: the group is set to send at once) read per receive() at most. */
export const LOG_READS_PER_PASS = TUN_BATCH_CAPACITY;

/** Largest IP packet (and so the largest GSO packet the kernel hands a TUN with TSO on). */
const MAX_IP_PACKET = 65535;

/** Drop cause of each NFLOG prefix, in the order the log reader is given them. */
const LOGGED_CAUSES = [FirewallDropCause.ShieldPort, FirewallDropCause.ForgedSource, FirewallDropCause.NotAllowed] as const;

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
  /** A refusal with a zeroed vnet header in front (no offload asked: its checksums are complete). Made once. */
  private readonly refusalSlot: Buffer;
  /** Packets the nft rules drop, read from NFLOG while a capture runs (null: NFLOG unusable). */
  private readonly log: FirewallLogReader | null;
  private dropSink: FirewallDropSink | null = null;
  /** Made once: the log reader's prefix index (the order given to it below) becomes the drop cause. */
  private readonly onLogged: LoggedPacketSink = (buf, off, len, prefix, ifIndex, timeMs) =>
    this.dropSink?.(buf, off, len, LOGGED_CAUSES[prefix], ifIndex, timeMs);

  constructor(init: TunSourceInit) {
    this.c = libc();
    this.fd = init.fd;
    this.wakeFd = init.wakeFd;
    this.headerLen = init.vnetHdr ? VIRTIO_NET_HDR_LEN : 0;
    // With offloads the kernel hands us GSO packets up to 64 KiB whatever the MTU.
    const maxPacket = init.vnetHdr ? MAX_IP_PACKET : Math.min(init.mtu, MAX_IP_PACKET);
    this.slotSize = this.headerLen + maxPacket;
    this.refusalSlot = Buffer.alloc(this.headerLen + REFUSAL_MAX_BYTES);
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
    this.log = init.logFd >= 0 ? new FirewallLogReader(init.logFd, init.logGroup, [NFT_LOG_PREFIX.shield, NFT_LOG_PREFIX.forged, NFT_LOG_PREFIX.notAllowed]) : null;
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
    // While observed, firewall drops and the device take turns, each a bounded share per call: neither a flood of
    // drops nor a busy device can starve the other (the worker decides and sends between calls).
    if (this.dropSink) this.log!.drain(this.onLogged, LOG_READS_PER_PASS);
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
    const logReady = this.pollFds.readInt16LE(2 * POLLFD_SIZE + 6) & POLLIN;
    if (this.dropSink && logReady) this.log!.drain(this.onLogged, LOG_READS_PER_PASS);
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

  sendRefusal(_index: number, packet: Uint8Array, length: number): void {
    const slot = this.refusalSlot;
    for (let i = 0; i < length; i++) slot[this.headerLen + i] = packet[i];
    if (this.c.write(this.fd, slot, this.headerLen + length) < 0) this.sendErrors++;
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

