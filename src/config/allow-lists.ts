/**
 * Allow lists of reflect addresses: which ports a client may reach through an address (`--ports 8080,3128/tcp`),
 * and who may use it at all (Linux: `--users`, `--groups`, `--cgroups`; Windows: `--apps`). Syntax, limits and the
 * one rule for changing them live here (no host facts: user names are resolved by the control plane before they get
 * here), so the CLI, the config file, the control plane and the engine judge a list the same way.
 *
 * A kind of list that is absent restricts nothing: an address without `ports` reflects every port, one without
 * users/groups/cgroups/apps serves every program. With several "who" lists, a socket is allowed when it matches any
 * one of them (its user, or its group, or its cgroup). How each list is enforced: docs/security.md.
 */
import { invalidParams } from '../error-messages.ts';
import { ErrorCode, RetroflectError } from '../errors.ts';

export type AllowProtocol = 'tcp' | 'udp';

export interface AllowedPort {
  port: number;
  protocol: AllowProtocol;
}

/** The "who" kinds: the first three are enforced on Linux (nft), `apps` on Windows. */
export const ALLOW_WHO_KINDS = ['users', 'groups', 'cgroups', 'apps'] as const;
export type AllowWhoKind = (typeof ALLOW_WHO_KINDS)[number];
/** Every kind of list, as the CLI options, protocol params and config fields name them. */
export const ALLOW_KINDS = ['ports', ...ALLOW_WHO_KINDS] as const;
export type AllowKind = (typeof ALLOW_KINDS)[number];

/** The lists of one address; a list that is absent restricts nothing. */
export interface AllowLists {
  ports?: AllowedPort[];
  /** Numeric user ids (Linux). */
  users?: number[];
  /** Numeric group ids (Linux). */
  groups?: number[];
  /** cgroup v2 paths below the cgroup root, e.g. `system.slice/squid.service` (Linux). */
  cgroups?: string[];
  /** Executables (full path) and AppContainer package family names (Windows). */
  apps?: string[];
}

/** One address's lists, as InterceptConfig.allow keeps them. */
export interface AddressAllowLists extends AllowLists {
  address: string;
}

/** What a request asks for one kind: replace the list, or lift it (`all`). Absent = leave as it is. */
export type AllowChange = { [K in AllowKind]?: NonNullable<AllowLists[K]> | 'all' };

/** Entries per list and address. */
export const MAX_ALLOWED_PORTS = 256;
export const MAX_ALLOWED_IDS = 64;
/** Longest cgroup path or app entry (Windows MAX_PATH-ish; a cgroup path is far shorter). */
export const MAX_ALLOW_ENTRY_CHARS = 260;
/** Largest user or group id (uid_t is 32 bits; 2^32 - 1 is "no id"). */
export const MAX_POSIX_ID = 0xfffffffe;

/** The word that lifts a list (`--ports all`). */
export const ALLOW_ALL = 'all';

const PORT_HINT = 'Write ports from 1 to 65535, each optionally /tcp or /udp, comma-separated (8080,3128/tcp,53/udp), or all.';

function invalidAllowedPort(spec: unknown): RetroflectError {
  return new RetroflectError(ErrorCode.INVALID_PORT, `'${typeof spec === 'string' ? spec : JSON.stringify(spec)}' is not an allowed port.`, {
    hint: PORT_HINT,
    details: { port: spec, rule: 'syntax' },
  });
}

/** One port entry: 8080 (TCP and UDP), "8080", "3128/tcp", or {port, protocol}. */
export function parseAllowedPort(spec: unknown): AllowedPort[] {
  if (typeof spec === 'object' && spec !== null && !Array.isArray(spec)) {
    const o = spec as Record<string, unknown>;
    if (Object.keys(o).every((k) => k === 'port' || k === 'protocol') && typeof o.port === 'number' && (o.protocol === 'tcp' || o.protocol === 'udp')) {
      return parseAllowedPort(`${o.port}/${o.protocol}`);
    }
    throw invalidAllowedPort(spec);
  }
  if (typeof spec !== 'string' && typeof spec !== 'number') throw invalidAllowedPort(spec);
  const m = /^\s*(\d{1,5})\s*(?:\/\s*(tcp|udp|both))?\s*$/i.exec(String(spec));
  const port = m ? Number(m[1]) : NaN;
  if (!m || port < 1 || port > 65535) throw invalidAllowedPort(spec);
  const proto = m[2]?.toLowerCase();
  return proto === 'tcp' || proto === 'udp' ? [{ port, protocol: proto }] : [{ port, protocol: 'tcp' }, { port, protocol: 'udp' }];
}

export function allowedPortKey(p: AllowedPort): string {
  return `${p.port}/${p.protocol}`;
}

/** A list of port entries, each once, in order. */
export function parseAllowedPorts(entries: readonly unknown[]): AllowedPort[] {
  const out = new Map<string, AllowedPort>();
  for (const e of entries) for (const p of parseAllowedPort(e)) out.set(allowedPortKey(p), p);
  return [...out.values()];
}

/** A numeric user or group id (names are resolved before this, by the control plane). */
export function parsePosixId(entry: unknown, kind: 'users' | 'groups'): number {
  const n = typeof entry === 'string' && /^\s*\d{1,10}\s*$/.test(entry) ? Number(entry) : entry;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > MAX_POSIX_ID) {
    throw invalidParams(`'${String(entry)}' is not a ${kind === 'users' ? 'user' : 'group'} id (0 to ${MAX_POSIX_ID}).`, kind);
  }
  return n;
}

/**
 * A cgroup v2 path relative to the cgroup root: `system.slice/squid.service`; a leading `/` or `/sys/fs/cgroup/` is
 * taken off. No `..`, no empty components, printable characters only (it ends up quoted in an nft rule).
 */
export function parseCgroupPath(entry: unknown): string {
  if (typeof entry !== 'string') throw invalidParams(`'${String(entry)}' is not a cgroup path.`, 'cgroups');
  const path = entry.trim().replace(/^\/sys\/fs\/cgroup(?=\/)/, '').replace(/^\/+|\/+$/g, '');
  const parts = path.split('/');
  if (!path || path.length > MAX_ALLOW_ENTRY_CHARS || !/^[A-Za-z0-9_.@:+\-/\\]+$/.test(path) || parts.some((c) => c === '' || c === '.' || c === '..')) {
    throw invalidParams(`'${entry}' is not a cgroup path: write it below the cgroup root, such as system.slice/squid.service.`, 'cgroups');
  }
  return path;
}

/** A Windows executable path or package family name, kept as written (compared case-insensitively on Windows). */
export function parseAppEntry(entry: unknown): string {
  if (typeof entry !== 'string' || !entry.trim() || entry.length > MAX_ALLOW_ENTRY_CHARS || /[\u0000-\u001f"]/.test(entry)) {
    throw invalidParams(`'${String(entry)}' is not an app: give an executable's full path or a package family name.`, 'apps');
  }
  return entry.trim();
}

function unique<T>(list: T[]): T[] {
  return [...new Set(list)];
}

/** One kind's list parsed and checked against its limit. */
export function parseAllowList<K extends AllowKind>(kind: K, entries: readonly unknown[]): NonNullable<AllowLists[K]> {
  const list =
    kind === 'ports'
      ? parseAllowedPorts(entries)
      : kind === 'users' || kind === 'groups'
        ? unique(entries.map((e) => parsePosixId(e, kind)))
        : kind === 'cgroups'
          ? unique(entries.map(parseCgroupPath))
          : unique(entries.map(parseAppEntry));
  const max = kind === 'ports' ? MAX_ALLOWED_PORTS : MAX_ALLOWED_IDS;
  if (list.length > max) throw new RetroflectError(ErrorCode.LIMIT_REACHED, `At most ${max} ${kind} per reflect address are supported.`, { hint: 'Shorten the list.', details: { kind } });
  if (list.length === 0) throw invalidParams(`'${kind}' must name at least one entry, or be '${ALLOW_ALL}'.`, kind);
  return list as NonNullable<AllowLists[K]>;
}

/** The part of an InterceptConfig these rules read (intercept-config.ts imports this module). */
interface ConfigWithAllow {
  reflectAddresses: readonly string[];
  allow?: AddressAllowLists[];
}

export function allowListsOf(cfg: Pick<ConfigWithAllow, 'allow'>): AddressAllowLists[] {
  return cfg.allow ?? [];
}

/** The lists of one address ({} when it has none). */
export function allowListsFor(cfg: Pick<ConfigWithAllow, 'allow'>, address: string): AllowLists {
  const found = allowListsOf(cfg).find((a) => a.address === address);
  if (!found) return {};
  const { address: _address, ...lists } = found;
  return cloneAllowLists(lists);
}

export function cloneAllowLists<T extends AllowLists>(l: T): T {
  const out = { ...l };
  for (const k of ALLOW_KINDS) {
    const v = l[k];
    if (v === undefined) delete out[k];
    else (out as AllowLists)[k] = (k === 'ports' ? (v as AllowedPort[]).map((p) => ({ ...p })) : [...(v as unknown[])]) as never;
  }
  return out;
}

/** Whether the address restricts who may use it (any "who" list). */
export function restrictsWho(l: AllowLists): boolean {
  return ALLOW_WHO_KINDS.some((k) => l[k] !== undefined);
}

/** `cfg.allow` with `change` applied to each of `addresses` (lists replaced or lifted). Pure; drops empty entries. */
export function applyAllowChange(cfg: ConfigWithAllow, addresses: readonly string[], change: AllowChange): AddressAllowLists[] {
  const out = allowListsOf(cfg).map((a) => cloneAllowLists(a));
  for (const address of addresses) {
    let entry = out.find((a) => a.address === address);
    if (!entry) out.push((entry = { address }));
    for (const k of ALLOW_KINDS) {
      const v = change[k];
      if (v === undefined) continue;
      if (v === ALLOW_ALL) delete entry[k];
      else (entry as AllowLists)[k] = cloneAllowLists({ [k]: v } as AllowLists)[k] as never;
    }
  }
  return out.filter((a) => ALLOW_KINDS.some((k) => a[k] !== undefined));
}

/** Every list belongs to a configured address, at most once per address. Throws the first problem; pure. */
export function checkAllowLists(cfg: ConfigWithAllow): void {
  const seen = new Set<string>();
  for (const a of allowListsOf(cfg)) {
    if (!cfg.reflectAddresses.includes(a.address)) {
      throw new RetroflectError(ErrorCode.ADDRESS_NOT_FOUND, `Allow lists name ${a.address}, which is not a reflect address.`, {
        hint: 'Add the address with its lists: `retroflect address add ADDRESS --ports PORTS`.',
        details: { address: a.address },
      });
    }
    if (seen.has(a.address)) throw invalidParams(`Allow lists of ${a.address} are given twice.`, 'allow');
    seen.add(a.address);
    for (const k of ALLOW_KINDS) if (a[k] !== undefined) parseAllowList(k, a[k] as unknown[]);
  }
}

/** "8080/tcp, 8080/udp" shown as "8080" when both protocols are allowed. */
export function formatAllowedPorts(ports: readonly AllowedPort[]): string {
  const out: string[] = [];
  for (const p of ports) {
    const both = ports.some((q) => q.port === p.port && q.protocol !== p.protocol);
    if (both && p.protocol === 'udp') continue;
    out.push(both ? String(p.port) : allowedPortKey(p));
  }
  return out.join(',');
}
