/**
 * Shield ports and forged reflect sources on Linux (both backends, tun and ebpf), done by the kernel's own firewall
 * rather than the data plane (the engine only sees outbound packets, so inbound drops have to happen in nftables).
 *
 * Everything lives in one table of our own, `inet retroflect`, so we never touch anyone else's rules and a leftover
 * from a killed run is removed with a single `delete table`:
 *
 *   table inet retroflect {
 *     counter forged_source { }                         # packets dropped for a forged reflect source
 *     counter forwarded { }                             # other hosts' packets routed towards the TUN, dropped
 *     set reflect_v4 { type ipv4_addr; }                # the reflect addresses, per family
 *     set reflect_v6 { type ipv6_addr; }                # IPv6 ones, and ::ffff:<a> for each IPv4 one
 *     set shield_tcp { type inet_service; counter; }     # per-element counters = per-port drop counts
 *     set shield_udp { type inet_service; counter; }
 *     chain input {
 *       type filter hook input priority filter - 10; policy accept;
 *       iifname "<tun>" accept                            # reflected traffic arrives on the TUN: never shielded
 *       ip saddr @reflect_v4 counter name "forged_source" log prefix "retroflect forged" group <g> drop
 *       ip6 saddr @reflect_v6 counter name "forged_source" log prefix "retroflect forged" group <g> drop
 *       iif lo accept                                     # loopback to a shielded port still works
 *       meta l4proto tcp tcp dport @shield_tcp log prefix "retroflect shield" group <g> drop
 *       meta l4proto udp udp dport @shield_udp log prefix "retroflect shield" group <g> drop
 *     }
 *     chain forward {
 *       type filter hook forward priority filter - 10; policy accept;
 *       oifname "<tun>" counter name "forwarded" drop     # only packets this host sends are reflected
 *       iifname "<tun>" accept
 *       ip saddr @reflect_v4 counter name "forged_source" log prefix "retroflect forged" group <g> drop
 *       ip6 saddr @reflect_v6 counter name "forged_source" log prefix "retroflect forged" group <g> drop
 *     }
 *     chain output { type filter hook output priority filter - 10; policy accept; }
 *   }
 *
 * The output chain, and the per-address chains it jumps to, enforce who may use a reflect address (users, groups,
 * cgroups): allow-rules.ts.
 *
 * The `log ... group <g>` statements hand each drop to the engine's NFLOG listener (nflog.ts), which binds the group
 * only while a capture runs; without a listener they copy nothing. They are left out when NFLOG is unusable.
 *
 * Forged sources: while an address is reflected, the routes send everything for it into the TUN device, so no
 * other host can ever answer from it; the only genuine packets from a reflect address are the reflected ones, and
 * they arrive on the TUN device. A packet from a reflect address on any other interface (loopback included) is
 * forged, and a server that trusts the reflect address as "the local app" would be fooled by it: dropped, counted.
 *
 * IPv4-mapped sources: a dual-stack socket reads an IPv6 packet from ::ffff:<a> as one from <a>, and this kernel
 * delivers such packets, so ::ffff:<a> is forged exactly when <a> is; reflect_v6 holds it for every IPv4 reflect
 * address (the data plane's own inbound check does the same, packet/address-set.ts).
 *
 * Hosts that forward (routers, container hosts): another host that routes a reflect address via us would have its
 * packets forwarded into the TUN device and reflected — delivered to local servers "from" the reflect address when it
 * forges one of our addresses as source, past the shield; and a packet from R to R would be reflected, forwarded back
 * into the device and reflected again until its TTL ran out. So the forward chain drops everything routed into the
 * device (counted in `forwarded`): only packets this host sends reach the engine, and a reflected packet that the
 * kernel would route back into the device (R1 → R2 from a local raw socket) is dropped there, so no packet is ever
 * reflected twice. Forged reflect sources are not forwarded either: a host that forwards for others must not pass
 * packets claiming to come from an address that only exists inside this host.
 *
 * `accept` in our chain only ends our chain; other tables' chains still see the packet, as they would without us.
 * The priority runs us just before the usual `filter` chains so a shielded port is dropped before they count it.
 */
import {
  addressFamily,
  shieldKey,
  type InterceptConfig,
  type ShieldPort,
  type ShieldProtocol,
} from '../../config/intercept-config.ts';
import { ErrorCode, RetroflectError } from '../../errors.ts';
import { runCommand, type HostCommand } from './command.ts';
import { addressOfCounter, allowCommands, allowUpdateCommands, NFT_OUTPUT_CHAIN } from './allow-rules.ts';

/** Packets and bytes one rule dropped (packet-sources' ShieldCount has this shape). */
export interface NftCount {
  packets: number;
  bytes: number;
}

/**
 * The table's drop counters (packet-sources' FirewallCounters has this shape): per shield port, forged sources, and
 * per reflect address what its allow lists refused.
 */
export interface NftCounters {
  shield: Map<string, NftCount>;
  forgedSource: NftCount;
  /** Other hosts' packets the forward hook dropped on their way into the engine's device. */
  forwarded: NftCount;
  notAllowed?: Map<string, NftCount>;
}

/** Our table's family and name. Fixed, so every run (and every leftover) is found by name. */
export const NFT_FAMILY = 'inet';
export const NFT_TABLE = 'retroflect';
/** Set names per protocol. */
export const NFT_SET: Record<ShieldProtocol, string> = { tcp: 'shield_tcp', udp: 'shield_udp' };
/** Reflect address set names per family, and the named counter of forged-source drops. */
export const NFT_REFLECT_SET: Record<4 | 6, string> = { 4: 'reflect_v4', 6: 'reflect_v6' };
export const NFT_FORGED_COUNTER = 'forged_source';
/** Named counter of other hosts' packets the forward hook dropped on their way into the TUN device. */
export const NFT_FORWARDED_COUNTER = 'forwarded';
/** Log prefixes of the two drop rules; the NFLOG reader tells the verdicts apart by them. */
export const NFT_LOG_PREFIX = { shield: 'retroflect shield', forged: 'retroflect forged', notAllowed: 'retroflect notallowed' } as const;

function ports(cfg: InterceptConfig, protocol: ShieldProtocol): number[] {
  return cfg.shieldPorts.filter((p) => p.protocol === protocol).map((p) => p.port);
}

/** The members of reflect_v4 / reflect_v6: reflect_v6 also holds ::ffff:<a> for each IPv4 reflect address <a>. */
function addresses(list: readonly string[], family: 4 | 6): string[] {
  const own = list.filter((a) => addressFamily(a) === family);
  return family === 4 ? own : [...own, ...list.filter((a) => addressFamily(a) === 4).map((a) => `::ffff:${a}`)];
}

/** The elements each of our sets holds for `cfg`, by set name. */
export function shieldSetMembers(cfg: InterceptConfig): Record<string, (number | string)[]> {
  return {
    [NFT_REFLECT_SET[4]]: addresses(cfg.reflectAddresses, 4),
    [NFT_REFLECT_SET[6]]: addresses(cfg.reflectAddresses, 6),
    [NFT_SET.tcp]: ports(cfg, 'tcp'),
    [NFT_SET.udp]: ports(cfg, 'udp'),
  };
}

function elements(list: readonly (number | string)[]): string {
  return list.length ? ` elements = { ${list.join(', ')} };` : '';
}

/** The log statement of a drop rule ('' when there is no NFLOG group to log to). */
function logTo(prefix: string, logGroup: number | null): string {
  return logGroup === null ? '' : ` log prefix "${prefix}" group ${logGroup}`;
}

/**
 * The script that (re)creates the table. It starts by declaring and deleting the table, which in one nft transaction
 * removes a leftover if there is one and is harmless if there is not. `logGroup`: the NFLOG group the drop rules
 * copy packets to for captures (null: none).
 */
export function shieldTableScript(cfg: InterceptConfig, tunName: string, logGroup: number | null): string {
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(tunName)) {
    throw new RetroflectError(ErrorCode.BACKEND_FAILED, `'${tunName}' is not a valid interface name.`, {
      hint: 'Use 1 to 15 letters, digits, dots, dashes or underscores.',
    });
  }
  const members = shieldSetMembers(cfg);
  // The same two rules on input and on forward: a forged reflect source is neither delivered nor forwarded.
  const forged = `counter name "${NFT_FORGED_COUNTER}"${logTo(NFT_LOG_PREFIX.forged, logGroup)} drop`;
  const forgedDrops = [`    ip saddr @${NFT_REFLECT_SET[4]} ${forged}`, `    ip6 saddr @${NFT_REFLECT_SET[6]} ${forged}`];
  return [
    `table ${NFT_FAMILY} ${NFT_TABLE}`,
    `delete table ${NFT_FAMILY} ${NFT_TABLE}`,
    `table ${NFT_FAMILY} ${NFT_TABLE} {`,
    `  counter ${NFT_FORGED_COUNTER} { }`,
    `  counter ${NFT_FORWARDED_COUNTER} { }`,
    `  set ${NFT_REFLECT_SET[4]} { type ipv4_addr;${elements(members[NFT_REFLECT_SET[4]])} }`,
    `  set ${NFT_REFLECT_SET[6]} { type ipv6_addr;${elements(members[NFT_REFLECT_SET[6]])} }`,
    `  set ${NFT_SET.tcp} { type inet_service; counter;${elements(members[NFT_SET.tcp])} }`,
    `  set ${NFT_SET.udp} { type inet_service; counter;${elements(members[NFT_SET.udp])} }`,
    '  chain input {',
    '    type filter hook input priority filter - 10; policy accept;',
    `    iifname "${tunName}" accept`,
    // The refusals the output chain's reject rules send (allow-rules.ts) come from R over loopback: a reset or
    // destination unreachable, which no unprivileged program can send from R (they need a raw socket), and which
    // can only end a connection, never carry data to a server. Let them reach the refused client.
    `    iif lo ip saddr @${NFT_REFLECT_SET[4]} tcp flags & rst == rst accept`,
    `    iif lo ip6 saddr @${NFT_REFLECT_SET[6]} tcp flags & rst == rst accept`,
    `    iif lo ip saddr @${NFT_REFLECT_SET[4]} icmp type destination-unreachable accept`,
    `    iif lo ip6 saddr @${NFT_REFLECT_SET[6]} icmpv6 type destination-unreachable accept`,
    ...forgedDrops,
    '    iif lo accept',
    `    meta l4proto tcp tcp dport @${NFT_SET.tcp}${logTo(NFT_LOG_PREFIX.shield, logGroup)} drop`,
    `    meta l4proto udp udp dport @${NFT_SET.udp}${logTo(NFT_LOG_PREFIX.shield, logGroup)} drop`,
    '  }',
    '  chain forward {',
    '    type filter hook forward priority filter - 10; policy accept;',
    `    oifname "${tunName}" counter name "${NFT_FORWARDED_COUNTER}" drop`,
    `    iifname "${tunName}" accept`,
    ...forgedDrops,
    '  }',
    `  chain ${NFT_OUTPUT_CHAIN} {`,
    '    type filter hook output priority filter - 10; policy accept;',
    '  }',
    '}',
    ...allowCommands(NFT_FAMILY, NFT_TABLE, cfg, logTo(NFT_LOG_PREFIX.notAllowed, logGroup)),
    '',
  ].join('\n');
}

/** Script that removes a leftover table if there is one (declare-then-delete never fails on a missing table). */
export function removeTableScript(): string {
  return `table ${NFT_FAMILY} ${NFT_TABLE}\ndelete table ${NFT_FAMILY} ${NFT_TABLE}\n`;
}

/**
 * Element additions and removals that turn `prev`'s reflect-address and shield sets into `next`'s, as one nft script
 * ('' = nothing). nft runs a script as one transaction: all of it applies or none.
 */
export function shieldUpdateScript(prev: InterceptConfig, next: InterceptConfig, logGroup: number | null = null): string {
  const lines: string[] = allowUpdateCommands(NFT_FAMILY, NFT_TABLE, prev, next, logTo(NFT_LOG_PREFIX.notAllowed, logGroup));
  for (const family of [4, 6] as const) {
    const had = new Set(addresses(prev.reflectAddresses, family));
    const has = new Set(addresses(next.reflectAddresses, family));
    const del = [...had].filter((a) => !has.has(a));
    const add = [...has].filter((a) => !had.has(a));
    if (del.length) lines.push(`delete element ${NFT_FAMILY} ${NFT_TABLE} ${NFT_REFLECT_SET[family]} { ${del.join(', ')} }`);
    if (add.length) lines.push(`add element ${NFT_FAMILY} ${NFT_TABLE} ${NFT_REFLECT_SET[family]} { ${add.join(', ')} }`);
  }
  const before = new Set(prev.shieldPorts.map(shieldKey));
  const after = new Set(next.shieldPorts.map(shieldKey));
  const group = (list: ShieldPort[], protocol: ShieldProtocol) => list.filter((p) => p.protocol === protocol).map((p) => p.port);
  const removed = prev.shieldPorts.filter((p) => !after.has(shieldKey(p)));
  const added = next.shieldPorts.filter((p) => !before.has(shieldKey(p)));
  for (const protocol of ['tcp', 'udp'] as const) {
    const del = group(removed, protocol);
    const add = group(added, protocol);
    if (del.length) lines.push(`delete element ${NFT_FAMILY} ${NFT_TABLE} ${NFT_SET[protocol]} { ${del.join(', ')} }`);
    if (add.length) lines.push(`add element ${NFT_FAMILY} ${NFT_TABLE} ${NFT_SET[protocol]} { ${add.join(', ')} }`);
  }
  return lines.length ? lines.join('\n') + '\n' : '';
}

export function nftScriptCommand(script: string): HostCommand {
  return { file: 'nft', args: ['-f', '-'], input: script };
}

export async function installShield(cfg: InterceptConfig, tunName: string, logGroup: number | null): Promise<void> {
  await runCommand(nftScriptCommand(shieldTableScript(cfg, tunName, logGroup)));
}

export async function updateShield(prev: InterceptConfig, next: InterceptConfig, logGroup: number | null): Promise<void> {
  const script = shieldUpdateScript(prev, next, logGroup);
  if (script) await runCommand(nftScriptCommand(script));
}

export async function removeShield(): Promise<void> {
  await runCommand(nftScriptCommand(removeTableScript()));
}

/**
 * The TUN device named by an existing table's accept rule, or null when there is no table. A table whose device still
 * exists belongs to a running engine; one whose device is gone is a leftover of a killed run (the device dies with
 * the process that held it).
 */
export async function shieldTableDevice(): Promise<string | null> {
  let stdout: string;
  try {
    // The chain alone: it names the device, and unlike the whole table it does not list every shield port (the
    // engine asks before each change, so this must not grow with the number of ports).
    ({ stdout } = await runCommand({ file: 'nft', args: ['list', 'chain', NFT_FAMILY, NFT_TABLE, 'input'] }));
  } catch (err) {
    if (err instanceof RetroflectError && /No such file or directory/i.test(String(err.details?.stderr ?? ''))) return null;
    throw err;
  }
  return /iifname "([^"]+)" accept/.exec(stdout)?.[1] ?? null;
}

interface NftSetElem {
  elem?: { val: number; counter?: { packets: number; bytes: number } };
}

interface NftObject {
  set?: { name: string; elem?: (NftSetElem | number)[] };
  counter?: { name: string; packets: number; bytes: number };
}

/**
 * The table's counters, from one `nft` run: per-port shield drops from the sets' per-element counters, keyed like
 * `shieldKey` ("8080/tcp"), and the forged-source and forwarded drops from their named counters.
 */
export async function readFirewallCounters(): Promise<NftCounters> {
  const { stdout } = await runCommand({ file: 'nft', args: ['-j', 'list', 'table', NFT_FAMILY, NFT_TABLE] });
  const doc = JSON.parse(stdout) as { nftables: NftObject[] };
  const shield = new Map<string, NftCount>();
  let forgedSource: NftCount = { packets: 0, bytes: 0 };
  let forwarded: NftCount = { packets: 0, bytes: 0 };
  const notAllowed = new Map<string, NftCount>();
  for (const obj of doc.nftables) {
    if (obj.counter?.name === NFT_FORGED_COUNTER) forgedSource = { packets: obj.counter.packets, bytes: obj.counter.bytes };
    if (obj.counter?.name === NFT_FORWARDED_COUNTER) {
      forwarded = { packets: obj.counter.packets, bytes: obj.counter.bytes };
    }
    const refusedFor = obj.counter ? addressOfCounter(obj.counter.name) : null;
    if (obj.counter && refusedFor !== null) notAllowed.set(refusedFor, { packets: obj.counter.packets, bytes: obj.counter.bytes });
    const set = obj.set;
    if (!set) continue;
    const protocol = (Object.keys(NFT_SET) as ShieldProtocol[]).find((p) => NFT_SET[p] === set.name);
    if (!protocol) continue;
    for (const e of set.elem ?? []) {
      // An element without a counter is printed as a bare number; with one, as { elem: { val, counter } }.
      if (typeof e === 'number') shield.set(`${e}/${protocol}`, { packets: 0, bytes: 0 });
      else if (e.elem) shield.set(`${e.elem.val}/${protocol}`, { packets: e.elem.counter?.packets ?? 0, bytes: e.elem.counter?.bytes ?? 0 });
    }
  }
  return { shield, forgedSource, forwarded, notAllowed };
}
