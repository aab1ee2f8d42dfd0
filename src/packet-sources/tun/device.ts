/**
 * The TUN device (its routes: routes.ts). The device is opened non-persistent: it exists exactly as long as our file
 * descriptor, so a killed run leaves no device behind, and the kernel drops every route through it when it goes.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { ErrorCode, RetroflectError } from '../../errors.ts';
import type { HostCommand } from '../../platform/linux/command.ts';
import { libc, O_CLOEXEC, O_NONBLOCK, O_RDWR } from '../../platform/linux/libc.ts';

export const TUN_CLONE_PATH = '/dev/net/tun';

/** ioctl requests from linux/if_tun.h: _IOW('T', 202, int), _IOW('T', 208, unsigned int). */
export const TUNSETIFF = 0x400454ca;
export const TUNSETOFFLOAD = 0x400454d0;

/** TUNSETIFF flags: layer-3 device, no 4-byte packet-info prefix, a virtio_net_hdr before every packet. */
export const IFF_TUN = 0x0001;
export const IFF_NO_PI = 0x1000;
export const IFF_VNET_HDR = 0x4000;

/** TUNSETOFFLOAD flags: we accept partial checksums and TCP segmentation offload (IPv4 and IPv6) packets. */
export const TUN_F_CSUM = 0x01;
export const TUN_F_TSO4 = 0x02;
export const TUN_F_TSO6 = 0x04;

/** `struct ifreq` (net/if.h) is 40 bytes on 64-bit Linux: char ifr_name[16], then a union whose first use here is
 *  `short ifr_flags` at offset 16. */
const IFREQ_SIZE = 40;
const IFNAMSIZ = 16;
const IFREQ_FLAGS_OFFSET = 16;

/**
 * How the device is set up. The variants below were measured against each other (and the ones tried and not adopted
 * are listed) in bench/README.md; `vnetOffload` is the default.
 */
export interface TunVariant {
  mtu: number;
  /** Use IFF_VNET_HDR + TUNSETOFFLOAD(CSUM|TSO4|TSO6): packets up to 64 KiB with partial checksums. */
  vnetHdr: boolean;
}

export const TUN_VARIANTS = {
  mtu1500: { mtu: 1500, vnetHdr: false },
  mtu65535: { mtu: 65535, vnetHdr: false },
  vnetOffload: { mtu: 1500, vnetHdr: true },
} as const satisfies Record<string, TunVariant>;
export type TunVariantName = keyof typeof TUN_VARIANTS;

/** The variant measured fastest by bench/reflect-path.ts (numbers in bench/README.md). */
export const DEFAULT_TUN_VARIANT: TunVariantName = 'vnetOffload';

export function checkDeviceName(name: string): void {
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(name)) {
    throw new RetroflectError(ErrorCode.BACKEND_FAILED, `'${name}' is not a valid TUN device name.`, {
      hint: 'Use 1 to 15 letters, digits, dots, dashes or underscores, such as rflct0.',
      details: { device: name },
    });
  }
}

/** Open /dev/net/tun and attach a new non-persistent TUN device. Returns the (non-blocking) fd. */
export function openTunDevice(name: string, variant: TunVariant): number {
  checkDeviceName(name);
  if (!existsSync(TUN_CLONE_PATH)) {
    throw new RetroflectError(ErrorCode.BACKEND_UNAVAILABLE, `${TUN_CLONE_PATH} does not exist, so no TUN device can be made.`, {
      hint: 'Load the tun module (modprobe tun) or, in a container, pass the device in (--device /dev/net/tun).',
    });
  }
  const c = libc();
  const fd = c.open(TUN_CLONE_PATH, O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    const errno = c.errno();
    throw new RetroflectError(ErrorCode.BACKEND_UNAVAILABLE, `Cannot open ${TUN_CLONE_PATH}: ${c.strerror(errno)}.`, {
      hint: 'Run as root (or with CAP_NET_ADMIN).',
      details: { errno },
    });
  }
  const ifr = Buffer.alloc(IFREQ_SIZE);
  ifr.write(name, 0, IFNAMSIZ - 1, 'latin1');
  ifr.writeUInt16LE(IFF_TUN | IFF_NO_PI | (variant.vnetHdr ? IFF_VNET_HDR : 0), IFREQ_FLAGS_OFFSET);
  if (c.ioctlPtr(fd, TUNSETIFF, ifr) < 0) {
    const errno = c.errno();
    c.close(fd);
    const busy = errno === 16; // EBUSY: a device of that name is attached to another process
    throw new RetroflectError(
      ErrorCode.BACKEND_FAILED,
      busy ? `TUN device '${name}' is already in use by another process.` : `Cannot create TUN device '${name}': ${c.strerror(errno)}.`,
      {
        hint: busy ? 'Stop the other retroflect engine, or choose another device name.' : 'Run as root (or with CAP_NET_ADMIN).',
        details: { errno, device: name },
      },
    );
  }
  if (variant.vnetHdr && c.ioctlInt(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) < 0) {
    const errno = c.errno();
    c.close(fd);
    throw new RetroflectError(ErrorCode.BACKEND_FAILED, `Cannot enable offloads on '${name}': ${c.strerror(errno)}.`, {
      details: { errno, device: name },
    });
  }
  return fd;
}

export function linkUpCommand(name: string, mtu: number): HostCommand {
  return { file: 'ip', args: ['link', 'set', 'dev', name, 'mtu', String(mtu), 'up'] };
}

export function ipv6SysctlPath(device: string): string {
  return `/proc/sys/net/ipv6/conf/${device}/disable_ipv6`;
}

/**
 * Make sure the device has IPv6 on (a host with `disable_ipv6` as default would give it none, and IPv6 routes
 * into it would then fail). Returns false when the kernel has no IPv6 at all.
 */
export function enableIpv6(device: string): boolean {
  const path = ipv6SysctlPath(device);
  if (!existsSync(path)) return false;
  writeFileSync(path, '0');
  return true;
}
