/**
 * Linux packet backend, worker half (`TunPacketSource`): the shared Linux worker half (linux/fd-source.ts) on the
 * TUN device fd. The device hands over bare IP packets, behind a virtio_net_hdr when offloads are on (device.ts);
 * every packet read is outbound (routed into the device by host.ts), and a reflected one written back is received
 * by the kernel as if it had arrived from the reflect address.
 */
import { LinuxFdSource, MAX_IP_PACKET, VIRTIO_NET_HDR_LEN } from '../linux/fd-source.ts';
import type { PacketSourceFactory, TunSourceInit } from '../packet-source.ts';

/** Worker half: reads outbound packets from the TUN fd and writes reflected ones back. */
export class TunPacketSource extends LinuxFdSource<'tun'> {
  readonly kind = 'tun' as const;

  constructor(init: TunSourceInit) {
    super(init, {
      vnetHdrLen: init.vnetHdr ? VIRTIO_NET_HDR_LEN : 0,
      ethernet: false,
      // With offloads the kernel hands us GSO packets up to 64 KiB whatever the MTU.
      maxPacket: init.vnetHdr ? MAX_IP_PACKET : Math.min(init.mtu, MAX_IP_PACKET),
      what: 'the TUN device',
    });
  }
}

export const createTunPacketSource: PacketSourceFactory<'tun'> = (init) => new TunPacketSource(init);
