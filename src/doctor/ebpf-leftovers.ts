/**
 * Linux: what a killed ebpf engine leaves. Unlike a TUN device its veth pair outlives the engine, with the tc program
 * on its egress and the reflect routes into it, so the kernel still reflects the common packet while nothing reads
 * the rest. The device's alias names the engine's pid (packet-sources/ebpf/veth.ts): a device whose engine is gone is
 * a leftover, removed by the next start or by deleting the device (its peer, qdisc, program and routes go with it).
 * The nft table such an engine leaves is linux.nft-table's.
 */
import { deletePairCommand, engineDevices, peerName, processAlive } from '../packet-sources/host-facts.ts';
import { describeCommand, runCommand } from '../platform/linux/command.ts';
import { pass, warning, type Check } from './check.ts';
import type { DoctorContext } from './context.ts';

const NAME = 'linux.ebpf-leftover';

/** The destinations routed into `device` (IPv4 and IPv6, not its own link-local net); [] when ip cannot tell. */
async function routedInto(device: string): Promise<string[]> {
  const out: string[] = [];
  for (const family of ['-4', '-6']) {
    try {
      const { stdout } = await runCommand({ file: 'ip', args: ['-j', family, 'route', 'show', 'dev', device] });
      const routes = JSON.parse(stdout || '[]') as { dst: string }[];
      out.push(...routes.map((r) => r.dst).filter((d) => !d.startsWith('fe80:')));
    } catch {
      // no routes, or no such family: nothing to name
    }
  }
  return out;
}

export async function ebpfLeftoverCheck(ctx: DoctorContext): Promise<Check> {
  const devices = engineDevices();
  const dead = devices.filter((d) => d.pid !== ctx.engine?.pid && !processAlive(d.pid));
  if (dead.length === 0) {
    const evidence = { devices };
    if (devices.length === 0) return pass(NAME, 'No device of an ebpf engine is left on this host.', evidence);
    return pass(NAME, `Every ebpf engine device (${devices.map((d) => d.device).join(', ')}) belongs to a running ` +
      'engine.', evidence);
  }
  const leftovers = await Promise.all(dead.map(async (d) =>
    ({ device: d.device, peer: peerName(d.device), pid: d.pid, routes: await routedInto(d.device) })));
  const described = leftovers.map((l) =>
    `${l.device} (peer ${l.peer}, engine pid ${l.pid}${l.routes.length ? `, routes to ${l.routes.join(', ')}` : ''})`);
  return warning(NAME,
    `An ebpf engine that is gone (killed) left its device: ${described.join('; ')}. Its tc program still reflects ` +
      'the common packet in the kernel, but nothing takes the rest (port maps, allow lists, malformed packets), and ' +
      'nothing counts or captures them.',
    `Start the engine ('sudo retroflect run' or Start-Retroflect: it removes what a killed engine left first), or ` +
      'remove it now: ' +
      `${leftovers.map((l) => describeCommand(deletePairCommand(l.device))).join('; ')} (its peer, program and ` +
      'routes go with it; a leftover nft table: see linux.nft-table).',
    { leftovers });
}
