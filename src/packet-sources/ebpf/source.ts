/**
 * The ebpf backend's worker half: the user-space path. The tc program reflects the common packet in the kernel; every
 * packet it leaves alone arrives here through the peer's packet socket (packet-socket.ts: Ethernet frames behind a
 * virtio_net_hdr) and is decided by the shared Linux worker half (linux/fd-source.ts), the same data plane as on the
 * TUN backend. Reflect: the frame is written back and enters the engine's device as inbound. While captures run the
 * program copies the packets it reflects that they might want (watchCaptures) into its capture ring, read here
 * (ring-buffer.ts, waited on beside the packet socket) and reported to the taps as reflected (observeKernelPackets);
 * NFLOG reports the nft rules' drops as with TUN. The port mapper hands answered mapped flows to the program through
 * mappedFlowCache (mapped-flows.ts), so their packets stay in the kernel.
 */
import type { CaptureInterest } from '../../packet/capture-interest.ts';
import { LinuxFdSource, MAX_IP_PACKET, VIRTIO_NET_HDR_LEN } from '../linux/fd-source.ts';
import type { EbpfSourceInit, KernelPacketSink, PacketSourceFactory } from '../packet-source.ts';
import { writeCaptureInterest } from './maps.ts';
import { KernelMappedFlowCache } from './mapped-flows.ts';
import { CaptureRingReader } from './ring-buffer.ts';

export class EbpfPacketSource extends LinuxFdSource<'ebpf'> {
  readonly kind = 'ebpf' as const;
  private readonly captureMapFds: EbpfSourceInit['captureMapFds'];
  private ring: CaptureRingReader | null = null;
  private kernelSink: KernelPacketSink | null = null;
  private kernelLost = 0;
  /** Answered mapped flows go to the program's mapped_flows map, which rewrites their packets in the kernel. */
  readonly mappedFlowCache: KernelMappedFlowCache;

  constructor(init: EbpfSourceInit) {
    // GSO packets reach 64 KiB whatever the MTU.
    super(init, {
      vnetHdrLen: VIRTIO_NET_HDR_LEN,
      ethernet: true,
      maxPacket: MAX_IP_PACKET,
      what: 'the ebpf backend\'s packet socket',
    });
    this.captureMapFds = init.captureMapFds;
    this.mappedFlowCache = new KernelMappedFlowCache(init.mappedFlowFds);
  }

  /** Tell the program what the captures might want: it copies those packets into its capture ring. A capture's
   *  kernel setting is left as is on close: the device goes with the host half's stop(). */
  watchCaptures(interest: CaptureInterest | null): void {
    writeCaptureInterest(this.captureMapFds, interest);
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
    this.watchExtraFd(sink ? this.ring!.epollFd : -1);
    if (sink) this.kernelLost = this.ring!.lost();
  }

  flushKernelPackets(): void {
    this.drainExtra();
  }

  protected override drainExtra(): void {
    if (!this.kernelSink) return;
    this.ring!.drain(this.kernelSink);
    this.kernelLost = this.ring!.lost();
  }

  override close(): void {
    super.close();
    this.ring?.close();
    this.ring = null;
    this.kernelSink = null;
  }
}

export const createEbpfPacketSource: PacketSourceFactory<'ebpf'> = (init) => new EbpfPacketSource(init);
