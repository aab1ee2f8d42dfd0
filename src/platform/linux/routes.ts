/**
 * One host route per reflect address into the engine's device (the TUN device, or the ebpf backend's veth), so
 * everything this host sends to a reflect address goes there. Routes go away with the device.
 */
import { addressFamily } from '../../config/intercept-config.ts';
import type { HostCommand } from './command.ts';

function hostPrefix(address: string): string {
  return `${address}/${addressFamily(address) === 4 ? 32 : 128}`;
}

export function routeAddCommand(address: string, device: string): HostCommand {
  // `replace` makes it idempotent: a stale route from an interrupted apply does not fail the next one.
  return { file: 'ip', args: [addressFamily(address) === 4 ? '-4' : '-6', 'route', 'replace', hostPrefix(address), 'dev', device] };
}

export function routeDeleteCommand(address: string, device: string): HostCommand {
  return { file: 'ip', args: [addressFamily(address) === 4 ? '-4' : '-6', 'route', 'del', hostPrefix(address), 'dev', device] };
}
