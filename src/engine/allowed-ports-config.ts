/**
 * From a config's allow lists to the data plane's allowed-port entries (packet/allowed-ports.ts), and the wider of
 * two configs' lists that the engine uses while it moves from one to the other. Ports only: who may use an address
 * is the host backend's to enforce (Linux nft), not the data plane's.
 */
import {
  allowListsFor, allowListsOf, cloneAllowLists, type AddressAllowLists, type AllowedPort,
} from '../config/allow-lists.ts';
import type { InterceptConfig } from '../config/intercept-config.ts';
import { portMapsOf } from '../config/port-maps.ts';
import type { AllowedPortEntry } from '../packet/allowed-ports.ts';

/**
 * One entry per address with a port list: clients may open its listed ports and its port maps' ports (a map is an
 * allowed port of its address); the server may answer from those and from the maps' targets.
 */
export function allowedPortEntries(cfg: InterceptConfig, slotOf: (address: string) => number): AllowedPortEntry[] {
  const out: AllowedPortEntry[] = [];
  for (const a of allowListsOf(cfg)) {
    if (!a.ports || !cfg.reflectAddresses.includes(a.address)) continue;
    const maps = portMapsOf(cfg).filter((m) => m.address === a.address);
    const mapped = maps.map((m) => ({ port: m.port, protocol: m.protocol }));
    const open: AllowedPort[] = [...a.ports.map((p) => ({ ...p })), ...mapped];
    const reply: AllowedPort[] = maps.map((m) => ({ port: m.target, protocol: m.protocol }));
    out.push({ slot: slotOf(a.address), open, reply });
  }
  return out;
}

/**
 * Port lists that allow everything either config allows: an address restricted in both gets the union of its two
 * lists; restricted in only one (or new, or leaving), it is unrestricted for the moment of the change.
 */
export function widerAllowLists(prev: InterceptConfig, next: InterceptConfig): AddressAllowLists[] {
  const out: AddressAllowLists[] = [];
  for (const a of allowListsOf(next)) {
    const before = allowListsFor(prev, a.address).ports;
    const entry = cloneAllowLists(a);
    if (a.ports && before) {
      const union = new Map([...before, ...a.ports].map((p) => [`${p.port}/${p.protocol}`, p]));
      entry.ports = [...union.values()];
    } else delete entry.ports;
    out.push(entry);
  }
  return out;
}
