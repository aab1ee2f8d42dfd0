/**
 * The running config is made of layers: the managed policy (config/policy.ts), the config file, and temporary
 * entries (changes made with `temporary`). This module answers the two questions layers raise, once: which layer an
 * entry comes from (`EntrySource`), and how the running config moves when one layer is replaced by a new version of
 * itself (a new policy, or a config file edited by hand) while the other layers stay.
 */
import { allowListsFor, allowListsOf, type AddressAllowLists } from './allow-lists.ts';
import { shieldKey, type InterceptConfig, type ShieldPort } from './intercept-config.ts';
import { portMapsFor, portMapsOf, type PortMap } from './port-maps.ts';

/** Where a running entry comes from, strongest first: a policy entry cannot be changed through the pipe. */
export type EntrySource = 'Policy' | 'Config' | 'Temporary';

/** The source of a running address: policy wins over the file; an entry in neither was added temporarily. */
export function addressSource(address: string, policy: InterceptConfig, persisted: InterceptConfig | null): EntrySource {
  if (policy.reflectAddresses.includes(address)) return 'Policy';
  return persisted?.reflectAddresses.includes(address) ? 'Config' : 'Temporary';
}

export function shieldSource(port: ShieldPort, policy: InterceptConfig, persisted: InterceptConfig | null): EntrySource {
  const key = shieldKey(port);
  if (policy.shieldPorts.some((p) => shieldKey(p) === key)) return 'Policy';
  return persisted?.shieldPorts.some((p) => shieldKey(p) === key) ? 'Config' : 'Temporary';
}

/**
 * The running config after layer `from` was replaced by `to`. An entry of `from` that `to` lacks goes, unless another
 * layer (`above` or `below`) holds it; every entry of `to` is there afterwards (appended when new). Port maps: an
 * address `above` holds keeps its running maps (that layer owns them); one `to` holds gets exactly `to`'s maps; one
 * that left `to` but stays through a `below` layer gets that layer's maps; the rest keep theirs. Linear in the sizes.
 */
export function replaceLayer(
  running: InterceptConfig,
  from: InterceptConfig,
  to: InterceptConfig,
  above: InterceptConfig | null,
  below: readonly InterceptConfig[],
): InterceptConfig {
  const others = [...(above ? [above] : []), ...below];
  const keptAddresses = new Set(others.flatMap((c) => c.reflectAddresses));
  const keptPorts = new Set(others.flatMap((c) => c.shieldPorts.map(shieldKey)));
  const fromAddresses = new Set(from.reflectAddresses);
  const toAddresses = new Set(to.reflectAddresses);
  const fromPorts = new Set(from.shieldPorts.map(shieldKey));
  const toPorts = new Set(to.shieldPorts.map(shieldKey));

  const reflectAddresses = running.reflectAddresses.filter((a) => !fromAddresses.has(a) || toAddresses.has(a) || keptAddresses.has(a));
  const present = new Set(reflectAddresses);
  for (const a of to.reflectAddresses) if (!present.has(a)) reflectAddresses.push(a), present.add(a);

  const shieldPorts = running.shieldPorts.filter((p) => !fromPorts.has(shieldKey(p)) || toPorts.has(shieldKey(p)) || keptPorts.has(shieldKey(p))).map((p) => ({ ...p }));
  const presentPorts = new Set(shieldPorts.map(shieldKey));
  for (const p of to.shieldPorts) if (!presentPorts.has(shieldKey(p))) shieldPorts.push({ ...p }), presentPorts.add(shieldKey(p));

  const aboveAddresses = new Set(above?.reflectAddresses ?? []);
  const portMaps: PortMap[] = [];
  // Allow lists belong to an address's layer exactly as its port maps do (running: kept; `to`: taken from it).
  const allow: AddressAllowLists[] = [];
  for (const address of reflectAddresses) {
    let owner: InterceptConfig = running;
    if (aboveAddresses.has(address)) owner = running;
    else if (toAddresses.has(address)) owner = to;
    else if (fromAddresses.has(address)) owner = below.find((c) => c.reflectAddresses.includes(address)) ?? running;
    for (const m of portMapsFor(owner, address)) portMaps.push({ address, ...m });
    const lists = allowListsFor(owner, address);
    if (Object.keys(lists).length) allow.push({ address, ...lists });
  }
  const optional = { ...(portMaps.length ? { portMaps } : {}), ...(allow.length ? { allow } : {}) };
  return { reflectAddresses, shieldPorts, ...optional };
}

/** Whether two configs hold the same entries in the same order (maps included). */
export function sameEntries(a: InterceptConfig, b: InterceptConfig): boolean {
  return (
    JSON.stringify(allowListsOf(a)) === JSON.stringify(allowListsOf(b)) &&
    a.reflectAddresses.length === b.reflectAddresses.length &&
    a.reflectAddresses.every((x, i) => x === b.reflectAddresses[i]) &&
    a.shieldPorts.length === b.shieldPorts.length &&
    a.shieldPorts.every((p, i) => shieldKey(p) === shieldKey(b.shieldPorts[i])) &&
    JSON.stringify(portMapsOf(a)) === JSON.stringify(portMapsOf(b))
  );
}
