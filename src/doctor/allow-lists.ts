/**
 * The doctor's allow-list checks: one per reflect address, a warning when the address has no lists, since it then
 * opens every wildcard-bound local port to every program and web page on the host (docs/security.md).
 */
import { allowListsFor, formatAllowedPorts } from '../config/allow-lists.ts';
import { pass, warning, type Check } from './check.ts';
import type { DoctorContext } from './context.ts';

export function allowListChecks(ctx: DoctorContext): Check[] {
  return ctx.config.reflectAddresses.map((address) => {
    const lists = allowListsFor(ctx.config, address);
    const name = `allow.${address}`;
    if (!lists.ports && !lists.users && !lists.groups && !lists.cgroups && !lists.apps) {
      return warning(
        name,
        `${address} has no allow lists: every local port bound to the wildcard address is open through it, to every program and web page on this host.`,
        `Name what it may reach: retroflect address add ${address} --ports PORTS (and on Linux --users, --groups or --cgroups, on Windows --apps). See docs/security.md.`,
        { address, lists },
      );
    }
    const ports = lists.ports ? `ports ${formatAllowedPorts(lists.ports)}` : 'every port';
    return pass(name, `${address} allows ${ports}${lists.users || lists.groups || lists.cgroups || lists.apps ? ', to the listed programs only' : ''}.`, {
      address,
      lists,
    });
  });
}
