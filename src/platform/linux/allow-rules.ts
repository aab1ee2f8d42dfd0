/**
 * Who may use a reflect address on Linux: its users, groups and cgroups (config/allow-lists.ts), enforced in our
 * nft table (nftables.ts) on the output path, where the kernel still knows the sending socket. The TUN device, and
 * so the data plane, only ever sees packets: no owner, no cgroup. The kernel also builds the refusal itself there
 * (`reject`: a TCP reset, or ICMP/ICMPv6 port unreachable), exactly as the data plane does for a port that is not
 * allowed, so a refused client fails at once in both cases; a named counter per address counts the refusals for
 * `stats`, and the NFLOG log statement shows them to captures as `notAllowed`.
 *
 *   chain output {
 *     type filter hook output priority filter - 10; policy accept;
 *     ip daddr 203.0.113.40 ct state new jump allow_203_0_113_40     # one rule per address with a "who" list
 *   }
 *   chain allow_203_0_113_40 {
 *     meta skuid { 1000 } return                     # any one match allows
 *     meta skgid { 100 } return
 *     socket cgroupv2 level 2 "system.slice/squid.service" return
 *     counter name "na_203_0_113_40" log prefix "retroflect notallowed" group <g>
 *     meta l4proto tcp reject with tcp reset
 *     reject with icmpx type port-unreachable
 *   }
 *
 * Only the first packet of a connection (`ct state new`) is judged: the local server's answers to R belong to the
 * reflected connection (conntrack sees them as replies), so they are never refused, whoever runs the server.
 *
 * cgroups: nft resolves a path to the cgroup's id when the rule is loaded, under /sys/fs/cgroup (the cgroup v2
 * hierarchy of a systemd host). A cgroup that does not exist then is left out of the rules (its programs are refused,
 * the safe side) and named in `status`; a change that names one is refused.
 */
import { existsSync } from 'node:fs';
import { addressFamily, type InterceptConfig } from '../../config/intercept-config.ts';
import { allowListsOf } from '../../config/allow-lists.ts';

/** Where nft looks up cgroup v2 paths (nftables: SYSFS_CGROUPSV2_PATH). */
export const CGROUP_V2_ROOT = '/sys/fs/cgroup';
/** The base chain that sends new connections to a restricted address into that address's chain. */
export const NFT_OUTPUT_CHAIN = 'output';
/** Prefix of the per-address named counters of refusals. */
export const NFT_NOT_ALLOWED_COUNTER_PREFIX = 'na_';

interface WhoEntry {
  address: string;
  users?: number[];
  groups?: number[];
  cgroups?: string[];
}

/** The addresses with a Linux "who" list, in config order. */
export function whoLists(cfg: InterceptConfig): WhoEntry[] {
  return allowListsOf(cfg)
    .filter((a) => cfg.reflectAddresses.includes(a.address) && (a.users || a.groups || a.cgroups))
    .map((a) => ({ address: a.address, users: a.users, groups: a.groups, cgroups: a.cgroups }));
}

/** An address as part of an nft object name: '.' → '_', ':' → 'x' (reversible: canonical IPv6 has no 'x'). */
function nameOf(address: string): string {
  return address.replace(/\./g, '_').replace(/:/g, 'x');
}

export function allowChainName(address: string): string {
  return `allow_${nameOf(address)}`;
}

export function notAllowedCounterName(address: string): string {
  return `${NFT_NOT_ALLOWED_COUNTER_PREFIX}${nameOf(address)}`;
}

/** The address a not-allowed counter counts for, or null for another counter. */
export function addressOfCounter(name: string): string | null {
  if (!name.startsWith(NFT_NOT_ALLOWED_COUNTER_PREFIX)) return null;
  return name.slice(NFT_NOT_ALLOWED_COUNTER_PREFIX.length).replace(/_/g, '.').replace(/x/g, ':');
}

/** The cgroups of `cfg` that do not exist (left out of the rules). */
export function missingCgroups(cfg: InterceptConfig, exists: (path: string) => boolean = cgroupExists): string[] {
  return [...new Set(whoLists(cfg).flatMap((w) => w.cgroups ?? []))].filter((c) => !exists(c));
}

export function cgroupExists(path: string): boolean {
  return existsSync(`${CGROUP_V2_ROOT}/${path}`);
}

/**
 * nft commands (one per line, `add ...`) that create the counters, chains and rules of `cfg`'s "who" lists, given
 * that the table and its empty `output` base chain exist. `logTo` is the log statement ('' for none).
 */
export function allowCommands(family: string, table: string, cfg: InterceptConfig, logTo: string, exists: (path: string) => boolean = cgroupExists): string[] {
  const lines: string[] = [];
  for (const w of whoLists(cfg)) {
    const chain = allowChainName(w.address);
    const counter = notAllowedCounterName(w.address);
    const rule = (text: string) => lines.push(`add rule ${family} ${table} ${chain} ${text}`);
    lines.push(`add counter ${family} ${table} ${counter}`);
    lines.push(`add chain ${family} ${table} ${chain}`);
    if (w.users?.length) rule(`meta skuid { ${w.users.join(', ')} } return`);
    if (w.groups?.length) rule(`meta skgid { ${w.groups.join(', ')} } return`);
    for (const c of w.cgroups ?? []) if (exists(c)) rule(`socket cgroupv2 level ${c.split('/').length} "${c}" return`);
    rule(`counter name "${counter}"${logTo}`);
    rule('meta l4proto tcp reject with tcp reset');
    rule('reject with icmpx type port-unreachable');
    const match = addressFamily(w.address) === 4 ? 'ip daddr' : 'ip6 daddr';
    lines.push(`add rule ${family} ${table} ${NFT_OUTPUT_CHAIN} ${match} ${w.address} ct state new jump ${chain}`);
  }
  return lines;
}

/**
 * Commands that turn `prev`'s "who" rules into `next`'s, in one transaction with the rest of the update ([] when
 * they are the same): the output chain is emptied, the old per-address chains go, counters of addresses that stay
 * restricted are kept (their counts go on), the others are deleted, and `next`'s are added.
 */
export function allowUpdateCommands(family: string, table: string, prev: InterceptConfig, next: InterceptConfig, logTo: string): string[] {
  const before = whoLists(prev);
  const after = whoLists(next);
  if (JSON.stringify(before) === JSON.stringify(after)) return [];
  const lines = [`flush chain ${family} ${table} ${NFT_OUTPUT_CHAIN}`];
  for (const w of before) {
    lines.push(`flush chain ${family} ${table} ${allowChainName(w.address)}`);
    lines.push(`delete chain ${family} ${table} ${allowChainName(w.address)}`);
    if (!after.some((x) => x.address === w.address)) lines.push(`delete counter ${family} ${table} ${notAllowedCounterName(w.address)}`);
  }
  return [...lines, ...allowCommands(family, table, next, logTo)];
}
