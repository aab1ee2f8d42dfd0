/**
 * The ebpf backend's own device: a veth pair. The reflect routes point into the engine side (`rflx0`), whose tc egress
 * program reflects packets in the kernel; the peer (`rflx0p`) only exists to give the user-space path a place to read
 * from and write to (source.ts). The engine side is NOARP, so every frame routed into it carries its own MAC as
 * destination: redirected to its ingress it reads as addressed to this host, and on the peer it reads as meant for
 * another host (so the peer's stack drops it and never forwards it). No neighbour entries are needed.
 *
 * Unlike a TUN device a veth outlives a killed engine, so the engine writes its pid into the device's alias: the next
 * start removes a pair whose engine is gone, and refuses one whose engine still runs.
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { ErrorCode, RetroflectError } from '../../errors.ts';
import type { HostCommand } from '../../platform/linux/command.ts';

/** The peer is the device's name plus this suffix (so the device name may have 14 characters at most). */
export const PEER_SUFFIX = 'p';
/** The alias a device of ours carries: this prefix and the engine's pid. */
export const ALIAS_PREFIX = 'retroflect engine pid ';

export function checkEbpfDeviceName(name: string): void {
  if (!/^[A-Za-z0-9_.-]{1,14}$/.test(name)) {
    throw new RetroflectError(ErrorCode.BACKEND_FAILED, `'${name}' is not a valid device name for the ebpf backend.`, {
      hint: 'Use 1 to 14 letters, digits, dots, dashes or underscores, such as rflx0 (its peer adds a "p").',
      details: { device: name },
    });
  }
}

export function peerName(device: string): string {
  return device + PEER_SUFFIX;
}

export function createPairCommand(device: string): HostCommand {
  return { file: 'ip', args: ['link', 'add', 'dev', device, 'type', 'veth', 'peer', 'name', peerName(device)] };
}

export function deletePairCommand(device: string): HostCommand {
  return { file: 'ip', args: ['link', 'del', 'dev', device] };
}

export function deviceUpCommand(device: string, pid: number): HostCommand {
  return { file: 'ip', args: ['link', 'set', 'dev', device, 'arp', 'off', 'alias', `${ALIAS_PREFIX}${pid}`, 'up'] };
}

export function peerUpCommand(device: string): HostCommand {
  return { file: 'ip', args: ['link', 'set', 'dev', peerName(device), 'arp', 'off', 'up'] };
}

export function deviceExists(device: string): boolean {
  return existsSync(`/sys/class/net/${device}`);
}

/** Whether a device is administratively up (IFF_UP in its flags); false when it does not exist. */
export function deviceUp(device: string): boolean {
  try {
    return (Number.parseInt(readFileSync(`/sys/class/net/${device}/flags`, 'utf8'), 16) & IFF_UP) !== 0;
  } catch {
    return false;
  }
}

/** linux/if.h */
const IFF_UP = 1;

/** The pid in a device's alias, or null (no device, or not ours). */
export function ownerPid(device: string): number | null {
  try {
    const alias = readFileSync(`/sys/class/net/${device}/ifalias`, 'utf8').trim();
    if (!alias.startsWith(ALIAS_PREFIX)) return null;
    const pid = Number(alias.slice(ALIAS_PREFIX.length));
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

/** Every device whose alias names a retroflect engine (the ebpf backend's), with that engine's pid. */
export function engineDevices(): { device: string; pid: number }[] {
  let names: string[];
  try {
    names = readdirSync('/sys/class/net');
  } catch {
    return [];
  }
  return names.flatMap((device) => {
    const pid = ownerPid(device);
    return pid === null ? [] : [{ device, pid }];
  });
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** IPv6 on or off for a device; false when the kernel has no IPv6. The peer gets it off: it must send nothing. */
export function setIpv6(device: string, on: boolean): boolean {
  const path = `/proc/sys/net/ipv6/conf/${device}/disable_ipv6`;
  if (!existsSync(path)) return false;
  writeFileSync(path, on ? '0' : '1');
  return true;
}
