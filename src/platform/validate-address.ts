/**
 * Is this address usable as a reflect address on this host? The rules come from the original retroflect README:
 * it must not be one of this host's addresses, must not be in one of this host's subnets (the host would try
 * ARP / neighbour discovery for it and fail), and there must be a route to it. Addresses that can never be a
 * unicast destination (unspecified, loopback, multicast, broadcast, link-local) are refused too. A public address
 * is allowed with a warning: while it is reflected, the real host at that address is unreachable from here.
 *
 * Platform-neutral: the host's interfaces and routes come in through `HostFacts`, so unit tests inject them, Linux
 * uses os.networkInterfaces() + `ip route get`, and the Windows backend can supply its own lookup.
 */
import { networkInterfaces } from 'node:os';
import ipaddr from 'ipaddr.js';
import { canonicalAddress } from '../config/intercept-config.ts';
import { ErrorCode, RetroflectError } from '../errors.ts';
import type { RouteFacts } from './route-facts.ts';
import { lookupRoute } from './route-lookup.ts';

/** Names of the rules, as they appear in `details.rule` (stable: scripts and the PowerShell module match on them). */
export const AddressRule = {
  SYNTAX: 'syntax',
  UNSPECIFIED: 'unspecified',
  LOOPBACK: 'loopback',
  MULTICAST: 'multicast',
  BROADCAST: 'broadcast',
  LINK_LOCAL: 'link-local',
  LOCAL_ADDRESS: 'local-address',
  LOCAL_SUBNET: 'local-subnet',
  NO_ROUTE: 'no-route',
} as const;
export type AddressRule = (typeof AddressRule)[keyof typeof AddressRule];

/** One address of one interface, with its prefix (as os.networkInterfaces() gives it in `cidr`). */
export interface InterfaceAddress {
  interface: string;
  address: string;
  prefixLength: number;
}

/** What validation needs to know about the host. */
export interface HostFacts {
  interfaces(): InterfaceAddress[];
  /** The route the host would use to send to `address`, or null when it has none. */
  route(address: string): Promise<RouteFacts | null>;
}

export interface AddressValidationResult {
  address: string;
  warnings: string[];
  route: RouteFacts | null;
}

/**
 * Interfaces from os.networkInterfaces() (it lists only interfaces that are up; a down interface has no subnet route
 * either, so it cannot swallow the address); the route lookup is the platform's.
 */
export function systemHostFacts(): HostFacts {
  return {
    interfaces: () => {
      const out: InterfaceAddress[] = [];
      for (const [name, list] of Object.entries(networkInterfaces())) {
        for (const info of list ?? []) {
          if (!info.cidr) continue;
          out.push({ interface: name, address: info.address.replace(/%.*$/, ''), prefixLength: Number(info.cidr.split('/')[1]) });
        }
      }
      return out;
    },
    route: lookupRoute,
  };
}

function refusal(address: string, rule: AddressRule, message: string, hint: string, extra: Record<string, unknown> = {}): RetroflectError {
  return new RetroflectError(ErrorCode.INVALID_ADDRESS, message, { hint, details: { address, rule, ...extra } });
}

const PICK_ANOTHER = 'Pick an unused address routed through your default gateway, such as one from 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24 or 2001:db8::/32 (Test-ReflectAddress suggests one).';

/** Rules that need no host facts: the kind of address it is. */
function kindRefusal(address: string): RetroflectError | null {
  const range = ipaddr.parse(address).range();
  switch (range) {
    case 'unspecified':
      return refusal(address, AddressRule.UNSPECIFIED, `${address} is the unspecified address; nothing can be sent to it.`, PICK_ANOTHER);
    case 'loopback':
      return refusal(address, AddressRule.LOOPBACK, `${address} is a loopback address; traffic to it never leaves this host, so it cannot be reflected.`, PICK_ANOTHER);
    case 'multicast':
      return refusal(address, AddressRule.MULTICAST, `${address} is a multicast address; a reflect address must be a single (unicast) host.`, PICK_ANOTHER);
    case 'broadcast':
      return refusal(address, AddressRule.BROADCAST, `${address} is the broadcast address; a reflect address must be a single (unicast) host.`, PICK_ANOTHER);
    case 'linkLocal':
      return refusal(address, AddressRule.LINK_LOCAL, `${address} is link-local; it is only reachable on one link, so the host would look for it there instead of routing it.`, PICK_ANOTHER);
    default:
      return null;
  }
}

/** Rules about this host's own addresses and subnets. */
function hostRefusal(address: string, interfaces: InterfaceAddress[]): RetroflectError | null {
  const parsed = ipaddr.parse(address);
  for (const i of interfaces) {
    if (!ipaddr.isValid(i.address)) continue;
    const own = ipaddr.parse(i.address);
    if (own.kind() !== parsed.kind()) continue;
    if (own.toString() === address) {
      return refusal(address, AddressRule.LOCAL_ADDRESS, `${address} is an address of this host (interface ${i.interface}); traffic to it is loopback and is never reflected.`, PICK_ANOTHER, { interface: i.interface });
    }
  }
  for (const i of interfaces) {
    if (!ipaddr.isValid(i.address)) continue;
    const own = ipaddr.parse(i.address);
    if (own.kind() !== parsed.kind()) continue;
    // A host route (/32, /128) has no neighbours; anything shorter is a subnet the host reaches directly.
    if (i.prefixLength >= (own.kind() === 'ipv4' ? 32 : 128)) continue;
    if (parsed.match(own, i.prefixLength)) {
      const subnet = `${networkOf(own, i.prefixLength)}/${i.prefixLength}`;
      return refusal(
        address,
        AddressRule.LOCAL_SUBNET,
        `${address} is inside ${subnet}, a subnet of interface ${i.interface}; the host would look for it with ARP/neighbour discovery and fail instead of routing it.`,
        PICK_ANOTHER,
        { interface: i.interface, subnet },
      );
    }
  }
  return null;
}

function networkOf(addr: ipaddr.IPv4 | ipaddr.IPv6, prefix: number): string {
  const bytes = addr.toByteArray();
  for (let bit = prefix; bit < bytes.length * 8; bit++) bytes[bit >> 3] &= ~(0x80 >> (bit & 7));
  return ipaddr.fromByteArray(bytes).toString();
}

/**
 * Every rule this address fails (empty = usable), plus warnings. For `Test-ReflectAddress`, which reports all of
 * them; `validateReflectAddress` throws the first.
 */
export async function checkReflectAddress(input: string, host: HostFacts = systemHostFacts()): Promise<{ address: string | null; refusals: RetroflectError[]; warnings: string[]; route: RouteFacts | null }> {
  let address: string;
  try {
    address = canonicalAddress(input);
  } catch (err) {
    return { address: null, refusals: [err as RetroflectError], warnings: [], route: null };
  }
  const refusals: RetroflectError[] = [];
  const kind = kindRefusal(address);
  if (kind) refusals.push(kind);
  const own = hostRefusal(address, host.interfaces());
  if (own) refusals.push(own);
  let route: RouteFacts | null = null;
  if (!kind && !own) {
    route = await host.route(address);
    if (!route) {
      refusals.push(
        refusal(
          address,
          AddressRule.NO_ROUTE,
          `This host has no route to ${address}, so nothing would ever be sent to it.`,
          `Add a default route for IPv${address.includes(':') ? '6' : '4'} (or a route covering ${address}), or pick an address of a family this host routes.`,
        ),
      );
    } else if (route.type === 'local') {
      refusals.push(refusal(address, AddressRule.LOCAL_ADDRESS, `${address} is local to this host (the kernel delivers it locally), so it is never reflected.`, PICK_ANOTHER));
    }
  }
  const warnings: string[] = [];
  if (!refusals.length && ipaddr.parse(address).range() === 'unicast') {
    warnings.push(`${address} is a public Internet address: while it is reflected, this host cannot reach the real host at ${address}.`);
  }
  return { address, refusals, warnings, route };
}

/**
 * Throws RetroflectError(E_INVALID_ADDRESS) with `details.rule` for the first rule the address fails. Where the
 * address is well-formed, the hint names a concrete address of the same family that this host can use
 * (`details.suggestion`, never one of `configured`), so the refusal says what to type instead.
 */
export async function validateReflectAddress(input: string, host: HostFacts = systemHostFacts(), configured: readonly string[] = []): Promise<AddressValidationResult> {
  const r = await checkReflectAddress(input, host);
  if (r.refusals.length) {
    const first = r.refusals[0];
    if (r.address === null) throw first;
    const suggestion = await suggestReflectAddress(r.address.includes(':') ? 6 : 4, host, [r.address, ...configured]);
    if (!suggestion) throw first;
    throw new RetroflectError(first.code, first.message, {
      hint: `Use ${suggestion.address} instead: ${suggestion.message}`,
      details: { ...first.details, suggestion: suggestion.address },
    });
  }
  return { address: r.address!, warnings: r.warnings, route: r.route };
}

/**
 * This host's rules as one value, the shape the control server takes (control/address-rules.ts): `retroflect run`
 * hands it over, so the control layer never imports this module.
 */
export const hostAddressRules = {
  validate: (address: string, configured: readonly string[]): Promise<AddressValidationResult> => validateReflectAddress(address, undefined, configured),
  check: (input: string) => checkReflectAddress(input),
  suggest: (family: 4 | 6, exclude: readonly string[]) => suggestReflectAddress(family, undefined, exclude),
};

/** Documentation ranges (RFC 5737, RFC 3849): never real hosts, so reflecting one hides nothing. In order of use. */
export const SUGGESTION_CANDIDATES: Record<4 | 6, string[]> = {
  4: ['192.0.2.1', '198.51.100.1', '203.0.113.1', '192.0.2.254', '198.51.100.254', '203.0.113.254'],
  6: ['2001:db8::1', '2001:db8:ffff::1', '2001:db8:7e7f::1'],
};

/** The first documentation-range address that passes every rule (and is not in `exclude`), or null. */
export async function suggestReflectAddress(family: 4 | 6 = 4, host: HostFacts = systemHostFacts(), exclude: readonly string[] = []): Promise<{ address: string; message: string } | null> {
  for (const candidate of SUGGESTION_CANDIDATES[family]) {
    if (exclude.includes(candidate)) continue;
    const r = await checkReflectAddress(candidate, host);
    if (!r.refusals.length) {
      return { address: candidate, message: `${candidate} is a documentation address (never a real host) that this host routes${r.route?.device ? ` via ${r.route.device}` : ''} and does not have on any of its subnets.` };
    }
  }
  return null;
}
