/**
 * Reading a request's params: every method checks its own with these, so a bad parameter reads the same
 * (E_INVALID_PARAMS naming the field) whatever the method.
 */
import { parseShieldEntry, type ShieldPort } from '../../config/intercept-config.ts';
import { MAX_PORT_MAPS_PER_ADDRESS, parsePortMapRemoval, parsePortMapSpec, type PortMapRemoval, type PortMapSpec } from '../../config/port-maps.ts';
import { invalidParams } from '../../error-messages.ts';
import { ALLOW_ALL, ALLOW_KINDS, MAX_ALLOWED_IDS, MAX_ALLOWED_PORTS, parseAllowList, type AllowChange } from '../../config/allow-lists.ts';
import { lookupAccountId } from '../../platform/linux/accounts.ts';
import { MAX_ADDRESSES_PER_REQUEST, MAX_PORTS_PER_REQUEST } from '../protocol.ts';

export type Params = Record<string, unknown>;

/** Refuse any parameter not in `allowed`. */
export function only(params: Params, allowed: string[]): void {
  for (const key of Object.keys(params)) {
    if (!allowed.includes(key)) throw invalidParams(`Unknown parameter '${key}'${allowed.length ? ` (allowed: ${allowed.join(', ')})` : ''}.`, key);
  }
}

/** A true/false parameter; absent = false. */
export function optionalBool(params: Params, field: string): boolean {
  const v = params[field];
  if (v === undefined) return false;
  if (typeof v !== 'boolean') throw invalidParams(`'${field}' must be true or false.`, field);
  return v;
}

function array(params: Params, field: string, max: number): unknown[] {
  const v = params[field];
  if (!Array.isArray(v) || v.length === 0) throw invalidParams(`'${field}' must be a non-empty array.`, field);
  if (v.length > max) throw invalidParams(`'${field}' has ${v.length} entries; at most ${max} per request.`, field);
  return v;
}

/** `addresses`: 1 to MAX_ADDRESSES_PER_REQUEST strings (canonicalized later, by config-changes.ts). */
export function addressList(params: Params): string[] {
  const raw = array(params, 'addresses', MAX_ADDRESSES_PER_REQUEST);
  raw.forEach((a, i) => {
    if (typeof a !== 'string') throw invalidParams(`'addresses[${i}]' must be a string.`, `addresses[${i}]`);
  });
  return raw as string[];
}

/** `maps` of address.add: "80=8080", "443=8443/tcp" or {port, target, protocol?}; absent = none. */
export function portMapSpecs(params: Params): PortMapSpec[] {
  if (params.maps === undefined) return [];
  const raw = array(params, 'maps', MAX_PORT_MAPS_PER_ADDRESS);
  const out: PortMapSpec[] = [];
  for (const entry of raw) {
    for (const m of parsePortMapSpec(entry)) {
      if (!out.some((x) => x.port === m.port && x.protocol === m.protocol && x.target === m.target)) out.push(m);
    }
  }
  return out;
}

/** `maps` of address.remove: which maps to remove, by mapped port (config/port-maps.ts); absent = null. */
export function portMapRemovals(params: Params): PortMapRemoval[] | null {
  if (params.maps === undefined) return null;
  return array(params, 'maps', MAX_PORT_MAPS_PER_ADDRESS).map((entry, i) => parsePortMapRemoval(entry, `maps[${i}]`));
}

/** `ports` of shield.add/remove: 1 to MAX_PORTS_PER_REQUEST specs, each one or two {port, protocol}. */
export function portList(params: Params): ShieldPort[] {
  const raw = array(params, 'ports', MAX_PORTS_PER_REQUEST);
  return raw.flatMap((entry) => parseShieldEntry(entry));
}

/**
 * The allow lists `address.add` sets (config/allow-lists.ts): each of `ports`, `users`, `groups`, `cgroups`, `apps`
 * is an array that replaces the address's list, or "all" that lifts it; absent leaves it as it is. User and group
 * names are turned into ids here, with the host's account files.
 */
export function allowChange(params: Params): AllowChange {
  const change: AllowChange = {};
  for (const kind of ALLOW_KINDS) {
    const v = params[kind];
    if (v === undefined) continue;
    if (v === ALLOW_ALL) {
      change[kind] = ALLOW_ALL;
      continue;
    }
    const max = kind === 'ports' ? MAX_ALLOWED_PORTS : MAX_ALLOWED_IDS;
    const raw = array(params, kind, max);
    const entries = kind === 'users' || kind === 'groups' ? raw.map((e) => accountId(kind, e)) : raw;
    (change as Record<string, unknown>)[kind] = parseAllowList(kind, entries);
  }
  return change;
}

function accountId(kind: 'users' | 'groups', entry: unknown): unknown {
  if (typeof entry !== 'string' || /^\s*\d+\s*$/.test(entry)) return entry;
  const id = lookupAccountId(kind, entry.trim());
  if (id === null) throw invalidParams(`No ${kind === 'users' ? 'user' : 'group'} named '${entry}' on this host; give its number instead.`, kind);
  return id;
}
