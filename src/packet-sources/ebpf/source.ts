/**
 * The ebpf backend's worker half: the user-space path. The tc program reflects the common packet in the kernel; every
 * packet it leaves alone arrives here through the peer's packet socket (packet-socket.ts) and is decided by the same
 * data plane as on the TUN backend. Reflect: the frame is written back and enters the engine's device as inbound.
 * While captures run the program copies the packets it reflects that they might want (watchCaptures) into its
 * capture ring, read here (ring-buffer.ts) and reported to the taps as reflected (observeKernelPackets), and NFLOG
 * reports the shield rules' drops as with TUN.
 */
import type { InterceptConfig } from '../../config/intercept-config.ts';
import { ErrorCode, RetroflectError } from '../../errors.ts';
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
import { NFT_LOG_PREFIX } from '../../platform/linux/nftables.ts';
import { FirewallLogReader, type LoggedPacketSink } from '../../platform/linux/nflog.ts';
import type { CaptureInterest } from '../../packet/capture-interest.ts';
import { FirewallDropCause, Verdict } from '../../packet/verdicts.ts';
import {
  allocatePacketBatch,
  type EbpfSourceInit,
  type EbpfSourceUpdate,
  type FirewallDropSink,
  type KernelPacketSink,
  type PacketBatch,
  type PacketSource,
  type PacketSourceFactory,
} from '../packet-source.ts';
import { writeCaptureInterest } from './maps.ts';
import { ETHERNET_HEADER_LEN, PACKET_VNET_HDR_LEN } from './packet-socket.ts';
import { CaptureRingReader } from './ring-buffer.ts';

/** The drop cause of each NFLOG prefix index (the order the log reader is given them below). */
const DROP_BY_PREFIX = [FirewallDropCause.ShieldPort, FirewallDropCause.ForgedSource] as const;
/** Packets per receive() at most (as the TUN backend). */
const BATCH_CAPACITY = 64;
/** NFLOG datagrams read per pass at most, so a flood of logged drops cannot hold the loop (as the TUN backend). */
const LOG_READS_PER_PASS = BATCH_CAPACITY;
/** GSO packets reach 64 KiB whatever the MTU. */
const MAX_FRAME = ETHERNET_HEADER_LEN + 65535;
const HEADER_LEN = PACKET_VNET_HDR_LEN + ETHERNET_HEADER_LEN;
const ETH_P_IP = 0x0800;
const ETH_P_IPV6 = 0x86dd;
/** virtio_net_hdr.flags bit 0: the checksum field holds only the pseudo-header sum. */
const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
/** poll slots: the packet socket, the wake eventfd, the NFLOG socket and the capture ring (-1 while unused). */
const POLL_SOCKET = 0;
const POLL_WAKE = 1;
const POLL_LOG = 2;
const POLL_RING = 3;
const POLL_SLOTS = 4;

export class EbpfPacketSource implements PacketSource<'ebpf'> {
  readonly kind = 'ebpf' as const;
  readonly batch: PacketBatch;
  sendErrors = 0;
  private readonly c: Libc;
  private readonly fd: number;
  private readonly wakeFd: number;
  private readonly captureMapFds: EbpfSourceInit['captureMapFds'];
  private readonly slotSize = HEADER_LEN + MAX_FRAME;
  private readonly slots: Buffer[] = [];
  /** Where sendRefusal builds its frame (its vnet header stays zero: complete checksums, no GSO). */
  private readonly refusalSlot = Buffer.alloc(HEADER_LEN + MAX_FRAME);
  private readonly pollFds = Buffer.alloc(POLL_SLOTS * POLLFD_SIZE);
  private readonly drain = Buffer.alloc(8);
  private readonly logFd: number;
  private ring: CaptureRingReader | null = null;
  private kernelSink: KernelPacketSink | null = null;
  private kernelLost = 0;
  private closed = false;
  private readonly log: FirewallLogReader | null;
  private dropSink: FirewallDropSink | null = null;
  private readonly onLogged: LoggedPacketSink = (buf, off, len, prefix, ifIndex, timeMs) =>
    this.dropSink?.(buf, off, len, prefix === 0 ? DROP_BY_PREFIX[0] : DROP_BY_PREFIX[1], ifIndex, timeMs);

  constructor(init: EbpfSourceInit) {
    this.c = libc();
    this.fd = init.fd;
    this.wakeFd = init.wakeFd;
    this.captureMapFds = init.captureMapFds;
    this.batch = allocatePacketBatch(BATCH_CAPACITY, BATCH_CAPACITY * this.slotSize);
    for (let i = 0; i < BATCH_CAPACITY; i++) {
      this.slots.push(this.batch.data.subarray(i * this.slotSize, (i + 1) * this.slotSize));
      this.batch.offset[i] = i * this.slotSize + HEADER_LEN;
      this.batch.outbound[i] = 1; // everything routed into the device was sent by this host
      this.batch.ifIndex[i] = init.ifIndex;
    }
    for (let slot = 0; slot < POLL_SLOTS; slot++) this.pollFds.writeInt16LE(POLLIN, slot * POLLFD_SIZE + 4);
    this.setPollFd(POLL_SOCKET, this.fd);
    this.setPollFd(POLL_WAKE, this.wakeFd);
    this.setPollFd(POLL_LOG, -1);
    this.setPollFd(POLL_RING, -1);
    this.logFd = init.logFd;
    const prefixes = [NFT_LOG_PREFIX.shield, NFT_LOG_PREFIX.forged];
    this.log = init.logFd >= 0 ? new FirewallLogReader(init.logFd, init.logGroup, prefixes) : null;
  }

  /** poll skips a negative fd: that is how an unused slot stays in the list. */
  private setPollFd(slot: number, fd: number): void {
    this.pollFds.writeInt32LE(fd, slot * POLLFD_SIZE);
  }

  private revents(slot: number): number {
    return this.pollFds.readInt16LE(slot * POLLFD_SIZE + 6);
  }

  get firewallDropsLost(): number {
    return this.log?.lost ?? 0;
  }

  /** The shield rules' drops, reported while a capture runs (as on TUN). */
  observeFirewallDrops(sink: FirewallDropSink | null): void {
    if (!this.log) return;
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

  get kernelPacketsLost(): number {
    return this.kernelLost;
  }

  /** The packets the program reflected for the captures, from its ring (opened on first use, in this thread). */
  observeKernelPackets(sink: KernelPacketSink | null): void {
    if (sink && !this.ring) {
      const fds = this.captureMapFds;
      this.ring = new CaptureRingReader(fds.ring, fds.lost, this.batch.ifIndex[0]);
    }
    this.kernelSink = sink;
    this.setPollFd(POLL_RING, sink ? this.ring!.epollFd : -1);
    if (sink) this.kernelLost = this.ring!.lost();
  }

  private drainRing(): void {
    this.ring!.drain(this.kernelSink!);
    this.kernelLost = this.ring!.lost();
  }

  /** Tell the program what the captures might want: it copies those packets into its capture ring. */
  watchCaptures(interest: CaptureInterest | null): void {
    writeCaptureInterest(this.captureMapFds, interest);
  }

  receive(timeoutMs: number): number {
    this.batch.count = 0;
    if (this.closed) return 0;
    if (this.dropSink) this.log!.drain(this.onLogged, LOG_READS_PER_PASS);
    if (this.kernelSink) this.drainRing();
    let n = this.readAvailable();
    if (n > 0) return n;
    for (let slot = 0; slot < POLL_SLOTS; slot++) this.pollFds.writeInt16LE(0, slot * POLLFD_SIZE + 6);
    const ready = this.c.poll(this.pollFds, POLL_SLOTS, Math.max(0, Math.floor(timeoutMs)));
    if (ready < 0) {
      const errno = this.c.errno();
      if (errno === EINTR) return 0;
      const why = `poll on the packet socket failed: ${this.c.strerror(errno)}.`;
      throw new RetroflectError(ErrorCode.BACKEND_FAILED, why, { details: { errno } });
    }
    if (ready === 0) return 0;
    if (this.revents(POLL_WAKE) & POLLIN) this.c.read(this.wakeFd, this.drain, 8);
    if (this.dropSink && this.revents(POLL_LOG) & POLLIN) this.log!.drain(this.onLogged, LOG_READS_PER_PASS);
    if (this.kernelSink && this.revents(POLL_RING) & POLLIN) this.drainRing();
    const revents = this.revents(POLL_SOCKET);
    if (revents & (POLLERR | POLLHUP | POLLNVAL)) {
      throw new RetroflectError(ErrorCode.BACKEND_FAILED, 'The ebpf backend\'s packet socket was closed or failed.', {
        hint: 'Something removed the device; restart the engine.',
        details: { revents },
      });
    }
    if (revents & POLLIN) n = this.readAvailable();
    return n;
  }

  /** Read frames until the socket is empty or the batch is full; frames that are not IP are skipped. */
  private readAvailable(): number {
    const b = this.batch;
    let n = 0;
    while (n < BATCH_CAPACITY) {
      const slot = this.slots[n];
      const got = this.c.read(this.fd, slot, this.slotSize);
      if (got < 0) {
        const errno = this.c.errno();
        if (errno === EAGAIN || errno === EINTR) break;
        const why = `Reading the packet socket failed: ${this.c.strerror(errno)}.`;
        throw new RetroflectError(ErrorCode.BACKEND_FAILED, why, { details: { errno } });
      }
      if (got <= HEADER_LEN) continue;
      const type = slot.readUInt16BE(PACKET_VNET_HDR_LEN + 12);
      if (type !== ETH_P_IP && type !== ETH_P_IPV6) continue;
      b.length[n] = got - HEADER_LEN;
      b.verdict[n] = Verdict.Pass;
      b.partialChecksum[n] = slot[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM;
      n++;
    }
    b.count = n;
    return n;
  }

  /** Reflected frames go back out of the peer, unchanged but for the data plane's edits: their destination MAC is
   *  already the engine device's own (NOARP), so it takes them as addressed to this host. */
  send(): void {
    const b = this.batch;
    for (let i = 0; i < b.count; i++) {
      if (b.verdict[i] !== Verdict.Reflect) continue;
      if (this.c.write(this.fd, this.slots[i], HEADER_LEN + b.length[i]) < 0) this.sendErrors++;
    }
  }

  /** A refusal (TCP reset, ICMP unreachable) goes in through the peer like a reflected packet, with the refused
   *  packet's own Ethernet header (the engine device's address as destination). */
  sendRefusal(index: number, packet: Uint8Array, length: number): void {
    const slot = this.refusalSlot;
    this.slots[index].copy(slot, PACKET_VNET_HDR_LEN, PACKET_VNET_HDR_LEN, HEADER_LEN);
    for (let i = 0; i < length; i++) slot[HEADER_LEN + i] = packet[i];
    if (this.c.write(this.fd, slot, HEADER_LEN + length) < 0) this.sendErrors++;
  }

  adopt(_cfg: InterceptConfig, _update: EbpfSourceUpdate): void {
    // Maps, routes and shield rules are host state, changed by EbpfHostBackend.apply.
  }

  /** The host half owns and closes the fds. A capture's kernel setting is left as is: the device goes with stop(). */
  close(): void {
    this.closed = true;
    this.ring?.close();
    this.ring = null;
    this.kernelSink = null;
  }
}

export const createEbpfPacketSource: PacketSourceFactory<'ebpf'> = (init) => new EbpfPacketSource(init);
