/**
 * The user-space path of the ebpf backend: an AF_PACKET socket on the veth peer. Packets the tc program does not
 * reflect itself leave the engine's device unchanged and arrive at the peer, where this socket reads them (whole
 * Ethernet frames, with a virtio_net_hdr in front so offloaded checksums and GSO packets survive, as with the TUN
 * backend's vnet header). A frame written to it leaves the peer and enters the engine's device as inbound.
 */
import { ErrorCode, RetroflectError } from '../../errors.ts';
import { libc, SOCK_CLOEXEC, SOCK_NONBLOCK, SOCK_RAW } from '../../platform/linux/libc.ts';

/** linux/socket.h, linux/if_packet.h, linux/if_ether.h. */
const AF_PACKET = 17;
const SOL_PACKET = 263;
const PACKET_VNET_HDR = 15;
const PACKET_IGNORE_OUTGOING = 23;
const ETH_P_ALL = 0x0003;
/** `struct sockaddr_ll`: 20 bytes. */
const SOCKADDR_LL_SIZE = 20;

/** Open the peer's packet socket: non-blocking, vnet headers on, our own sends not read back. */
export function openPacketSocket(ifindex: number): number {
  const c = libc();
  // Protocol 0 until bind: a socket made with ETH_P_ALL would queue frames of every interface until then.
  const fd = c.socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw socketError('socket(AF_PACKET)', c.errno());
  try {
    const one = Buffer.alloc(4);
    one.writeInt32LE(1, 0);
    if (c.setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, one) < 0) throw socketError('PACKET_VNET_HDR', c.errno());
    if (c.setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, one) < 0) {
      throw socketError('PACKET_IGNORE_OUTGOING', c.errno());
    }
    const sll = Buffer.alloc(SOCKADDR_LL_SIZE);
    sll.writeUInt16LE(AF_PACKET, 0);
    sll.writeUInt16BE(ETH_P_ALL, 2);
    sll.writeInt32LE(ifindex, 4);
    if (c.bind(fd, sll, SOCKADDR_LL_SIZE) < 0) throw socketError('bind to the veth peer', c.errno());
  } catch (err) {
    c.close(fd);
    throw err;
  }
  return fd;
}

function socketError(what: string, errno: number): RetroflectError {
  const why = `The ebpf backend's packet socket failed (${what}): ${libc().strerror(errno)}.`;
  return new RetroflectError(ErrorCode.BACKEND_FAILED, why, { details: { errno } });
}
