/**
 * The slots whose packets the data plane hands to a backend's "who" check (appGateSlots), and the wider of two
 * configs' port allow lists, which the engine gives the data plane while it moves from one config to the other. (A
 * config's lists as allowed-port entries: packet/allowed-ports.ts allowedPortEntries, which the data plane and the
 * ebpf backend's kernel bitsets share.) Who may use an address is the host backend's to enforce (Linux nft, the
 * WinDivert app gate), not the data plane's: it only knows which addresses to ask the app gate about.
 */
import { allowListsFor, allowListsOf, cloneAllowLists, type AddressAllowLists } from '../config/allow-lists.ts';
import type { InterceptConfig } from '../config/intercept-config.ts';

/**
 * The slots of the addresses with an `apps` list (Windows): the data plane asks the backend's app gate
 * (Dataplane.gate) only about packets to these; the gate checks the address itself as well.
 */
export function appGateSlots(cfg: InterceptConfig, slotOf: (address: string) => number): number[] {
  return allowListsOf(cfg)
    .filter((a) => a.apps && cfg.reflectAddresses.includes(a.address))
    .map((a) => slotOf(a.address));
}

/**
 * Port lists that allow everything either config allows: an address restricted in both gets the union of its two
 * lists; restricted in only one (or new, or leaving), it is unrestricted for the moment of the change. `apps` lists
 * of either config are kept (the later one where both have one): the app gate takes the new lists only when the
 * change is done (PacketSource.adopt) and checks each address itself, so for the moment of the change the data plane
 * asks it about every address either config gave an apps list (appGateSlots).
 */
export function widerAllowLists(prev: InterceptConfig, next: InterceptConfig): AddressAllowLists[] {
  const out: AddressAllowLists[] = [];
  for (const a of allowListsOf(next)) {
    const earlier = allowListsFor(prev, a.address);
    const before = earlier.ports;
    const entry = cloneAllowLists(a);
    if (a.ports && before) {
      const union = new Map([...before, ...a.ports].map((p) => [`${p.port}/${p.protocol}`, p]));
      entry.ports = [...union.values()];
    } else delete entry.ports;
    if (!entry.apps && earlier.apps) entry.apps = [...earlier.apps];
    out.push(entry);
  }
  for (const a of allowListsOf(prev)) {
    if (a.apps && !out.some((e) => e.address === a.address)) out.push({ address: a.address, apps: [...a.apps] });
  }
  return out;
}
