/**
 * The wider of two configs' port allow lists, which the engine gives the data plane while it moves from one config to
 * the other. (A config's lists as allowed-port entries: packet/allowed-ports.ts allowedPortEntries, which the data
 * plane and the ebpf backend's kernel bitsets share.) Ports only: who may use an address is the host backend's to
 * enforce (Linux nft), not the data plane's.
 */
import { allowListsFor, allowListsOf, cloneAllowLists, type AddressAllowLists } from '../config/allow-lists.ts';
import type { InterceptConfig } from '../config/intercept-config.ts';

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
