/**
 * Desired state (`address.set`, `shield.set`): the plan that makes the lists exactly the ones wanted, policy entries
 * aside. Pure: it compares the running config, the config file and the policy with what is wanted, and returns the
 * next running and persisted configs with what changes. An entry is "in place" when it is both running and in the
 * file; a wanted entry that is not is added, an entry running or in the file that is not wanted is removed, so
 * running a plan's result again changes nothing (idempotent). Policy entries are never added, removed or re-mapped.
 */
import { cloneInterceptConfig, shieldKey, type InterceptConfig, type ShieldPort } from '../config/intercept-config.ts';
import { portMapKey, portMapsFor, portMapsOf, type PortMap, type PortMapSpec } from '../config/port-maps.ts';

/** One wanted address with exactly these port maps. */
export interface WantedAddress {
  address: string;
  maps: PortMapSpec[];
}

export interface AddressPlan {
  running: InterceptConfig;
  persisted: InterceptConfig;
  added: string[];
  removed: string[];
  unchanged: string[];
  policy: string[];
  portMapsAdded: PortMap[];
  portMapsRemoved: PortMap[];
}

export interface ShieldPlan {
  running: InterceptConfig;
  persisted: InterceptConfig;
  added: ShieldPort[];
  removed: ShieldPort[];
  unchanged: ShieldPort[];
  policy: ShieldPort[];
}

/** Keep `have`'s entries that `keep` accepts, in order, then append the wanted ones not there yet. */
function exactly<T>(have: readonly T[], wanted: readonly T[], key: (x: T) => string, keep: (x: T) => boolean): T[] {
  const out = have.filter(keep);
  const present = new Set(out.map(key));
  for (const w of wanted) if (!present.has(key(w))) out.push(w), present.add(key(w));
  return out;
}

/** Maps of `addresses` in `cfg`, keyed. */
function mapsOf(cfg: InterceptConfig, keep: (address: string) => boolean): Map<string, PortMap> {
  return new Map(portMapsOf(cfg).filter((m) => keep(m.address)).map((m) => [portMapKey(m), m]));
}

export function planAddressSet(running: InterceptConfig, persisted: InterceptConfig, policy: InterceptConfig, wanted: readonly WantedAddress[]): AddressPlan {
  const byPolicy = new Set(policy.reflectAddresses);
  const mine = wanted.filter((w) => !byPolicy.has(w.address));
  const wantedSet = new Set(mine.map((w) => w.address));
  const keep = (a: string) => byPolicy.has(a) || wantedSet.has(a);
  const wantedMaps: PortMap[] = mine.flatMap((w) => w.maps.map((m) => ({ address: w.address, ...m })));

  const build = (have: InterceptConfig): InterceptConfig => {
    const next = cloneInterceptConfig(have);
    next.reflectAddresses = exactly(have.reflectAddresses, mine.map((w) => w.address), (a) => a, keep);
    const maps = [
      ...portMapsOf(have).filter((m) => byPolicy.has(m.address) && next.reflectAddresses.includes(m.address)),
      ...wantedMaps,
    ];
    if (maps.length) next.portMaps = maps.map((m) => ({ ...m }));
    else delete next.portMaps;
    return next;
  };

  const inRunning = new Set(running.reflectAddresses);
  const inFile = new Set(persisted.reflectAddresses);
  const added = mine.filter((w) => !inRunning.has(w.address) || !inFile.has(w.address)).map((w) => w.address);
  const unchanged = mine.filter((w) => inRunning.has(w.address) && inFile.has(w.address)).map((w) => w.address);
  const removed = [...new Set([...running.reflectAddresses, ...persisted.reflectAddresses])].filter((a) => !keep(a));

  const notPolicy = (a: string) => !byPolicy.has(a);
  const runningMaps = mapsOf(running, notPolicy);
  const fileMaps = mapsOf(persisted, notPolicy);
  const wantedKeys = new Map(wantedMaps.map((m) => [portMapKey(m), m]));
  const same = (a: PortMap | undefined, b: PortMap) => a !== undefined && a.target === b.target;
  const portMapsAdded = wantedMaps.filter((m) => !same(runningMaps.get(portMapKey(m)), m) || !same(fileMaps.get(portMapKey(m)), m));
  const portMapsRemoved: PortMap[] = [];
  const seen = new Set<string>();
  for (const m of [...runningMaps.values(), ...fileMaps.values()]) {
    const k = `${portMapKey(m)}=${m.target}`;
    if (seen.has(k)) continue;
    seen.add(k);
    if (!same(wantedKeys.get(portMapKey(m)), m)) portMapsRemoved.push({ ...m });
  }
  return {
    running: build(running),
    persisted: build(persisted),
    added,
    removed,
    unchanged,
    policy: wanted.filter((w) => byPolicy.has(w.address)).map((w) => w.address),
    portMapsAdded,
    portMapsRemoved,
  };
}

export function planShieldSet(running: InterceptConfig, persisted: InterceptConfig, policy: InterceptConfig, wanted: readonly ShieldPort[]): ShieldPlan {
  const byPolicy = new Set(policy.shieldPorts.map(shieldKey));
  const mine = wanted.filter((p) => !byPolicy.has(shieldKey(p)));
  const wantedSet = new Set(mine.map(shieldKey));
  const keep = (p: ShieldPort) => byPolicy.has(shieldKey(p)) || wantedSet.has(shieldKey(p));
  const build = (have: InterceptConfig): InterceptConfig => ({
    ...cloneInterceptConfig(have),
    shieldPorts: exactly(have.shieldPorts, mine, shieldKey, keep).map((p) => ({ port: p.port, protocol: p.protocol })),
  });
  const inRunning = new Set(running.shieldPorts.map(shieldKey));
  const inFile = new Set(persisted.shieldPorts.map(shieldKey));
  const placed = (p: ShieldPort) => inRunning.has(shieldKey(p)) && inFile.has(shieldKey(p));
  const seen = new Set<string>();
  const removed: ShieldPort[] = [];
  for (const p of [...running.shieldPorts, ...persisted.shieldPorts]) {
    if (seen.has(shieldKey(p)) || keep(p)) continue;
    seen.add(shieldKey(p));
    removed.push({ port: p.port, protocol: p.protocol });
  }
  return {
    running: build(running),
    persisted: build(persisted),
    added: mine.filter((p) => !placed(p)),
    removed,
    unchanged: mine.filter(placed),
    policy: wanted.filter((p) => byPolicy.has(shieldKey(p))),
  };
}

/** The port maps a wanted address has in `cfg` (for tests and messages). */
export function wantedFrom(cfg: InterceptConfig): WantedAddress[] {
  return cfg.reflectAddresses.map((address) => ({ address, maps: portMapsFor(cfg, address) }));
}
