/**
 * Linux checks: the TUN device node, the nft program, the engine's nft table and host routes (while it runs, or a
 * leftover when it does not), the device a killed ebpf engine left (ebpf-leftovers.ts), rp_filter, and the netfilter
 * log (NFLOG) that shows shield drops to captures. Both Linux backends (ebpf and tun) keep the same table, routes
 * into their device and NFLOG log, so the checks of a running engine are the same for either.
 */
import { readFileSync, statSync } from 'node:fs';
import { DEFAULT_DEVICE, NFT_FAMILY, NFT_TABLE, probeFirewallLog } from '../packet-sources/host-facts.ts';
import { runCommand } from '../platform/linux/command.ts';
import { lookupRoute } from '../platform/route-lookup.ts';
import { fail, pass, skipped, warning, type Check } from './check.ts';
import { ebpfLeftoverCheck } from './ebpf-leftovers.ts';
import type { DoctorContext } from './context.ts';

const TUN_NODE = '/dev/net/tun';

export function tunDeviceCheck(): Check {
  try {
    if (statSync(TUN_NODE).isCharacterDevice()) return pass('linux.tun', `${TUN_NODE} exists.`, { path: TUN_NODE });
  } catch {
    // reported below
  }
  return fail('linux.tun', `${TUN_NODE} does not exist (or is not a device node): the TUN backend cannot start.`,
    "Load the module: 'modprobe tun' (and add 'tun' to /etc/modules-load.d/); in a container pass the device " +
      "(--device /dev/net/tun).",
    { path: TUN_NODE });
}

export async function nftProgramCheck(): Promise<Check> {
  try {
    const { stdout } = await runCommand({ file: 'nft', args: ['--version'] });
    return pass('linux.nftables', `${stdout.trim()} is installed.`, { version: stdout.trim() });
  } catch (err) {
    return fail('linux.nftables', `The nft program cannot run: ${(err as Error).message}`,
      'Install nftables: apt-get install nftables (the shield and forged-source rules need it).', {});
  }
}

/** The backends that keep the Linux host state (nft table, routes into their device, NFLOG). */
const LINUX_ENGINE_BACKENDS: readonly string[] = ['ebpf', 'tun'];

/** The running engine, when it is one of the Linux backends. */
function linuxEngine(ctx: DoctorContext): NonNullable<DoctorContext['engine']> | null {
  return ctx.engine && LINUX_ENGINE_BACKENDS.includes(ctx.engine.backend) ? ctx.engine : null;
}

/** The engine's device (the TUN device, or the ebpf backend's veth; with no engine, the default backend's). */
function engineDevice(ctx: DoctorContext): string {
  const d = ctx.engine?.backendInfo.device;
  return typeof d === 'string' ? d : DEFAULT_DEVICE.ebpf;
}

/** Is our table there? null when nft could not tell (not root). */
async function tableExists(): Promise<{ exists: boolean; chains: string[] } | null> {
  try {
    const { stdout } = await runCommand({ file: 'nft', args: ['-j', 'list', 'table', NFT_FAMILY, NFT_TABLE] });
    const items = (JSON.parse(stdout) as { nftables?: Record<string, { name?: string }>[] }).nftables ?? [];
    return { exists: true, chains: items.filter((i) => i.chain).map((i) => i.chain.name ?? '') };
  } catch (err) {
    const stderr = String((err as { details?: { stderr?: string } }).details?.stderr ?? '');
    if (/No such file|does not exist/i.test(stderr)) return { exists: false, chains: [] };
    return null;
  }
}

export async function nftTableCheck(ctx: DoctorContext): Promise<Check> {
  const name = 'linux.nft-table';
  const table = `${NFT_FAMILY} ${NFT_TABLE}`;
  if (!ctx.admin) return skipped(name, `Reading the nft table ${table} needs root.`);
  const found = await tableExists();
  if (!found) return skipped(name, `nft could not list the table ${table}.`);
  const evidence = { table, exists: found.exists, chains: found.chains };
  if (!ctx.engine) {
    if (found.exists) {
      return warning(name,
        `The nft table ${table} exists but no engine answers on this pipe: an engine runs on another pipe, or it is ` +
          `a leftover of one that was killed.`,
        `Check the other engine with --pipe; a leftover goes when the engine starts, or now: nft delete table ` +
          `${table}.`, evidence);
    }
    return skipped(name, `No engine runs, so the table ${table} is not expected.`, evidence);
  }
  if (!linuxEngine(ctx)) return skipped(name, `The engine uses the ${ctx.engine.backend} backend.`);
  if (!found.exists) {
    return fail(name,
      `The engine runs but its nft table ${table} is gone: shield ports are open to other hosts and forged reflect ` +
        `sources are not dropped until the engine puts it back (it checks every few seconds).`,
      "Find what deletes it (firewalld reload, 'nft flush ruleset', iptables-restore, a VPN client) and make it keep " +
        "the table; restarting the engine (retroflect stop; retroflect run) recreates it at once.", evidence);
  }
  const repairs = ctx.engine.hostRepairs;
  if (repairs.count > 0 && /nft table/.test(repairs.last?.what ?? '')) {
    return warning(name,
      `The nft table ${table} is in place, but the engine had to put it back (${repairs.count} repair(s), last at ` +
        `${repairs.last?.at}): something on this host removes it.`,
      "Find what deletes it (firewalld reload, 'nft flush ruleset', iptables-restore, a VPN client) and make it keep " +
        "the table.", { ...evidence,
        hostRepairs: repairs });
  }
  return pass(name, `The engine's nft table ${table} is in place.`, evidence);
}

export async function routesCheck(ctx: DoctorContext): Promise<Check> {
  const name = 'linux.routes';
  const engine = linuxEngine(ctx);
  if (!engine) return skipped(name, 'No engine runs here, so no routes into its device are expected.');
  const device = engineDevice(ctx);
  const wrong: { address: string; device: string | null }[] = [];
  for (const address of engine.reflectAddresses) {
    const r = await lookupRoute(address).catch(() => null);
    if (r?.device !== device) wrong.push({ address, device: r?.device ?? null });
  }
  const evidence = { device, addresses: engine.reflectAddresses, wrong };
  if (wrong.length) {
    return fail(name,
      `Traffic to ${wrong.map((w) => `${w.address} (now via ${w.device ?? 'no route'})`).join(', ')} does not go ` +
        `into ${device}, so it is not reflected.`,
      `Something removed or overrode the engine's host routes (a VPN client, a route with a higher priority). The ` +
        `engine restores deleted routes every few seconds; otherwise restart it (retroflect stop; retroflect run) ` +
          `and check 'ip route get <address>'.`, evidence);
  }
  return pass(name, `Every reflect address is routed into ${device}.`, evidence);
}

function readSysctl(path: string): number | null {
  try {
    return Number(readFileSync(path, 'utf8').trim());
  } catch {
    return null;
  }
}

export async function rpFilterCheck(ctx: DoctorContext): Promise<Check> {
  const name = 'linux.rp_filter';
  const all = readSysctl('/proc/sys/net/ipv4/conf/all/rp_filter');
  const device = engineDevice(ctx);
  const dev = ctx.engine ? readSysctl(`/proc/sys/net/ipv4/conf/${device}/rp_filter`) : null;
  // The kernel applies the larger of conf/all and the interface's value.
  const effective = Math.max(all ?? 0, dev ?? 0);
  const evidence = { all, device: ctx.engine ? device : null, deviceValue: dev, effective };
  if (effective !== 1) return pass(name,
    `rp_filter is ${effective === 2 ? 'loose (2)' : 'off (0)'}: reflected packets arriving on ${device} are accepted.`,
    evidence);
  if (!ctx.engine) return pass(name,
    `rp_filter is strict (1); reflected packets pass it because the route back to each reflect address is the ` +
      `engine's device.`,
    evidence);
  const v4 = ctx.engine.reflectAddresses.filter((a) => !a.includes(':'));
  for (const a of v4) {
    const r = await lookupRoute(a).catch(() => null);
    if (r?.device !== device) {
      return warning(name,
        `rp_filter is strict (1) and the route to ${a} does not go into ${device}: the kernel drops its reflected ` +
          `packets as spoofed.`,
        'Put the engine\'s routes back (restart it), or set loose mode: sysctl -w net.ipv4.conf.all.rp_filter=2.',
        evidence);
    }
  }
  return pass(name,
    `rp_filter is strict (1); reflected packets pass it because every reflect address is routed into ${device}.`,
    evidence);
}

export async function nflogCheck(ctx: DoctorContext): Promise<Check> {
  const name = 'linux.nflog';
  const fix = "Load the netfilter log module: 'modprobe nfnetlink_log' (captures then also show packets the shield " +
    "rules drop); reflection itself does not need it.";
  const engine = linuxEngine(ctx);
  if (engine) {
    const log = String(engine.backendInfo.firewallLog ?? '');
    if (log.startsWith('NFLOG group')) return pass(name, `The engine logs shield drops to ${log}.`,
      { firewallLog: log });
    return warning(name, `Captures cannot show the packets the shield rules drop: ${log || 'no firewall log'}.`, fix,
      { firewallLog: log });
  }
  if (!ctx.admin) return skipped(name, 'Opening the netfilter log needs root.');
  try {
    const group = await probeFirewallLog();
    return pass(name, `The netfilter log works (group ${group} is free).`, { group });
  } catch (err) {
    return warning(name, `The netfilter log is not usable: ${(err as Error).message}`, fix, {});
  }
}

export async function linuxChecks(ctx: DoctorContext): Promise<Check[]> {
  return [tunDeviceCheck(), await nftProgramCheck(), await nftTableCheck(ctx), await ebpfLeftoverCheck(ctx),
    await routesCheck(ctx), await rpFilterCheck(ctx), await nflogCheck(ctx)];
}
