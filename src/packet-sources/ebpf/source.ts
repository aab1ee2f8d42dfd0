/**
 * The ebpf backend's worker half: the user-space path. The tc program reflects the common packet in the kernel; every
 * packet it leaves alone arrives here through the peer's packet socket (packet-socket.ts: Ethernet frames behind a
 * virtio_net_hdr) and is decided by the shared Linux worker half (linux/fd-source.ts), the same data plane as on the
 * TUN backend. Reflect: the frame is written back and enters the engine's device as inbound. While captures run the
 * program hands what they might want here (watchCaptures), so the taps see each packet with its verdict, and NFLOG
 * reports the nft rules' drops as with TUN.
 */
import type { CaptureInterest } from '../../packet/capture-interest.ts';
import { LinuxFdSource, MAX_IP_PACKET, VIRTIO_NET_HDR_LEN } from '../linux/fd-source.ts';
import type { EbpfSourceInit, PacketSourceFactory } from '../packet-source.ts';
import { writeCaptureInterest } from './maps.ts';

export class EbpfPacketSource extends LinuxFdSource<'ebpf'> {
  readonly kind = 'ebpf' as const;
  private readonly captureMapFds: EbpfSourceInit['captureMapFds'];

  constructor(init: EbpfSourceInit) {
    // GSO packets reach 64 KiB whatever the MTU.
    super(init, {
      vnetHdrLen: VIRTIO_NET_HDR_LEN,
      ethernet: true,
      maxPacket: MAX_IP_PACKET,
      what: 'the ebpf backend\'s packet socket',
    });
    this.captureMapFds = init.captureMapFds;
  }

  /** The program hands what the captures might want to this path, where the taps see it with its verdict. A
   *  capture's kernel setting is left as is on close: the device goes with the host half's stop(). */
  watchCaptures(interest: CaptureInterest | null): void {
    writeCaptureInterest(this.captureMapFds, interest);
  }
}

export const createEbpfPacketSource: PacketSourceFactory<'ebpf'> = (init) => new EbpfPacketSource(init);
