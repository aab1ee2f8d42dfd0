/**
 * Builds the two WinDivert filter strings for an intercept config. The capture filter (one receiving handle):
 *
 *   !loopback and ((outbound and (ip.DstAddr == A or ipv6.DstAddr == B ...))
 *                  or (inbound and (ip.SrcAddr == A or ipv6.SrcAddr == B ... or ip.Protocol == 51
 *                                   or tcp.DstPort == P ... or udp.DstPort == Q ...)))
 *
 *  - outbound to a reflect address: EVERY such packet, whatever its protocol and whether or not it is a fragment.
 *    WinDivert sees outbound fragments one by one, and a fragment at a non-zero offset has no transport header, so a
 *    protocol test (`tcp or udp ...`) would let it go out to the network unreflected; the data plane reflects every
 *    IP protocol. Outbound packets larger than the MTU are captured whole, before the stack fragments them.
 *  - inbound from a reflect address: forged when it came from the network; captured so the data plane drops and
 *    counts it (a copy another driver injected is ours, re-injected, and passes: Impostor, dataplane.ts). Our own
 *    reflected packets also arrive from a reflect address, but a handle skips what was injected at its own or a
 *    lower internal priority, and the worker sends everything through its newest handle, so our handles never
 *    see them (source.ts, sendHandle()).
 *  - inbound to a shield port: dropped by the data plane. Inbound fragments reach this handle reassembled (it is
 *    opened without WINDIVERT_FLAG_FRAGMENTS), so the port test sees every datagram's transport header.
 *  - inbound IPv4 with an Authentication Header (protocol 51), when ports are shielded: the driver does not walk
 *    IPv4 AH (it does IPv6's), so a port test cannot see through it; the data plane can (packet/parse.ts). ESP is
 *    encrypted: ports behind it are unreadable at this layer and not shielded (docs/windows.md).
 *  - an empty config: `false`.
 *
 * The fragment-drop filter (a second handle, opened with WINDIVERT_FLAG_FRAGMENTS | WINDIVERT_FLAG_DROP):
 *
 *   !loopback and inbound and ipv6 and fragment and ((!impostor and (ipv6.SrcAddr == B ...)) or tcp.DstPort == P ...)
 *
 * The driver counts ANY IPv6 packet with a Fragment header as a fragment, including an atomic fragment (offset 0,
 * M=0, RFC 6946), and never shows inbound fragments to a handle without WINDIVERT_FLAG_FRAGMENTS. Whether Windows
 * then indicates a "reassembled" copy of an atomic fragment to the capture handle is not knowable here, so such a
 * packet to a shield port or forged from a reflect address could reach the stack unseen. This handle drops those
 * fragments in the driver: the driver reads the transport header of a fragment at offset 0, so the port tests see
 * atomic and first fragments (a first fragment dropped means its datagram never completes). It needs no receiving
 * thread (WinDivertRecvEx cannot wait on two handles without overlapped I/O); the price: these drops are not counted
 * in `stats`, and a merged port range (below) also drops fragments to the unshielded ports inside it. IPv4 has no
 * atomic fragments; its fragments reach the capture handle reassembled.
 *
 * Limits (limits.ts): at most WINDIVERT_FILTER_MAX_TESTS tests after compilation and WINDIVERT_FILTER_MAX_TOKENS
 * tokens, while a config may hold 64 addresses and 1024 shield ports. The fixed part of a filter (everything but
 * the port tests) is measured, and the ports get what is left of both budgets: runs of consecutive ports are
 * written as ranges (`tcp.DstPort >= a and tcp.DstPort <= b`), and when that is still too long the closest ranges
 * are merged. A merged range captures a few ports that are not shielded; in the capture filter that only costs a
 * round trip through the worker, since the data plane decides every packet exactly (not shielded → Pass, resent
 * unchanged). Addresses are never merged: 64 addresses fit.
 */
import type { InterceptConfig, ShieldProtocol } from '../../config/intercept-config.ts';
import { addressFamily } from '../../config/intercept-config.ts';
import { WINDIVERT_FILTER_MAX_TESTS, WINDIVERT_FILTER_MAX_TOKENS } from './limits.ts';

/** A filter that matches no packet (a valid WinDivert filter constant). */
export const MATCH_NOTHING = 'false';

/** Kept free under the limits, so a small miscount can never make WinDivertOpen refuse our filter. */
const TEST_MARGIN = 4;
const TOKEN_MARGIN = 16;

/** What a filter (or a part of one) costs against WinDivert's limits. */
export interface FilterCost {
  tests: number;
  tokens: number;
}

/** Cost of one port item, its `or` connector included: `tcp.DstPort == p` and `(tcp.DstPort >= a and tcp.DstPort <= b)`. */
const SINGLE_PORT_COST: FilterCost = { tests: 1, tokens: 4 };
const PORT_RANGE_COST: FilterCost = { tests: 2, tokens: 10 };

export interface PortRange {
  from: number;
  to: number;
}

/** IP protocol number of the IPv4 Authentication Header (RFC 4302). */
const IPV4_AH = 51;

function addressTests(addresses: readonly string[], side: 'Dst' | 'Src'): string[] {
  return addresses.map((a) => (addressFamily(a) === 4 ? `ip.${side}Addr == ${a}` : `ipv6.${side}Addr == ${a}`));
}

/** Tokens of a filter as WinDivert's tokenizer splits ours: parentheses, operators, and words (fields, values, and/or). */
export function filterTokenCount(filter: string): number {
  return filter.match(/[()]|[=!<>]=|[!<>=]|[A-Za-z0-9.:_]+/g)?.length ?? 0;
}

/** Tests of a filter as WinDivert compiles ours: every comparison, and every bare field (`!loopback`, `inbound` ...). */
export function filterTestCount(filter: string): number {
  return filter.match(/[=<>]=|\b(?:loopback|outbound|inbound|ipv6|fragment|impostor)\b(?!\.)/g)?.length ?? 0;
}

/** Both costs of a filter string. */
export function filterCost(filter: string): FilterCost {
  return { tests: filterTestCount(filter), tokens: filterTokenCount(filter) };
}

type PortsByProtocol = { protocol: ShieldProtocol; list: number[] }[];

function portsByProtocol(ports: InterceptConfig['shieldPorts']): PortsByProtocol {
  return (['tcp', 'udp'] as const satisfies readonly ShieldProtocol[])
    .map((protocol) => ({ protocol, list: ports.filter((p) => p.protocol === protocol).map((p) => p.port) }))
    .filter((g) => g.list.length > 0);
}

function rangeTest(protocol: ShieldProtocol, r: PortRange): string {
  return r.from === r.to ? `${protocol}.DstPort == ${r.from}` : `(${protocol}.DstPort >= ${r.from} and ${protocol}.DstPort <= ${r.to})`;
}

/**
 * Port tests for `groups` inside the filter `assemble` builds around them: the fixed part is measured with one
 * single-port item per protocol (then those items' cost is taken off), and each protocol gets an equal share of
 * what is left of both limits.
 */
function budgetedPorts(groups: PortsByProtocol, assemble: (portTests: string[]) => string): string {
  if (groups.length === 0) return assemble([]);
  const probe = filterCost(assemble(groups.map((g) => rangeTest(g.protocol, { from: g.list[0], to: g.list[0] }))));
  const fixed = { tests: probe.tests - groups.length * SINGLE_PORT_COST.tests, tokens: probe.tokens - groups.length * SINGLE_PORT_COST.tokens };
  const budget = portBudget(fixed, groups.length);
  return assemble(groups.flatMap(({ protocol, list }) => portRanges(list, budget).map((r) => rangeTest(protocol, r))));
}

/** What each of `protocols` port lists may cost, when the rest of the filter costs `fixed`: an equal share of what
 *  both limits (less their margins) leave. */
export function portBudget(fixed: FilterCost, protocols: number): FilterCost {
  const share = (limit: number, margin: number, used: number): number => Math.floor((limit - margin - used) / Math.max(protocols, 1));
  return {
    tests: share(WINDIVERT_FILTER_MAX_TESTS, TEST_MARGIN, fixed.tests),
    tokens: share(WINDIVERT_FILTER_MAX_TOKENS, TOKEN_MARGIN, fixed.tokens),
  };
}

/** The capture filter for `cfg`; `MATCH_NOTHING` for an empty config. */
export function buildWinDivertFilter(cfg: InterceptConfig): string {
  const outbound = addressTests(cfg.reflectAddresses, 'Dst');
  const groups = portsByProtocol(cfg.shieldPorts);
  const ah = groups.length > 0 ? [`ip.Protocol == ${IPV4_AH}`] : [];
  return budgetedPorts(groups, (portTests) => {
    const inbound = [...addressTests(cfg.reflectAddresses, 'Src'), ...ah, ...portTests];
    const sides: string[] = [];
    if (outbound.length > 0) sides.push(`(outbound and (${outbound.join(' or ')}))`);
    if (inbound.length > 0) sides.push(`(inbound and (${inbound.join(' or ')}))`);
    return sides.length === 0 ? MATCH_NOTHING : `!loopback and (${sides.join(' or ')})`;
  });
}

/** The fragment-drop filter for `cfg` (see the top of this file); `MATCH_NOTHING` when nothing needs it. */
export function buildFragmentDropFilter(cfg: InterceptConfig): string {
  const forged = addressTests(cfg.reflectAddresses.filter((a) => addressFamily(a) === 6), 'Src');
  return budgetedPorts(portsByProtocol(cfg.shieldPorts), (portTests) => {
    const clauses = [...(forged.length > 0 ? [`(!impostor and (${forged.join(' or ')}))`] : []), ...portTests];
    return clauses.length === 0 ? MATCH_NOTHING : `!loopback and inbound and ipv6 and fragment and (${clauses.join(' or ')})`;
  });
}

/**
 * Sorted, coalesced ranges covering `ports`, merged until they cost at most `budget` (tests and tokens; a single
 * port and a range cost SINGLE_PORT_COST and PORT_RANGE_COST). Merging always joins the two neighbours with the
 * smallest gap, so the fewest extra ports are captured.
 */
export function portRanges(ports: readonly number[], budget: FilterCost): PortRange[] {
  const sorted = [...new Set(ports)].sort((a, b) => a - b);
  const ranges: PortRange[] = [];
  for (const p of sorted) {
    const last = ranges[ranges.length - 1];
    if (last && p === last.to + 1) last.to = p;
    else ranges.push({ from: p, to: p });
  }
  const cost = (r: PortRange): FilterCost => (r.from === r.to ? SINGLE_PORT_COST : PORT_RANGE_COST);
  const total = { tests: 0, tokens: 0 };
  for (const r of ranges) {
    total.tests += cost(r).tests;
    total.tokens += cost(r).tokens;
  }
  while ((total.tests > budget.tests || total.tokens > budget.tokens) && ranges.length > 1) {
    let best = 0;
    for (let i = 1; i < ranges.length - 1; i++) {
      if (ranges[i + 1].from - ranges[i].to < ranges[best + 1].from - ranges[best].to) best = i;
    }
    const merged = { from: ranges[best].from, to: ranges[best + 1].to };
    for (const key of ['tests', 'tokens'] as const) {
      total[key] += cost(merged)[key] - cost(ranges[best])[key] - cost(ranges[best + 1])[key];
    }
    ranges.splice(best, 2, merged);
  }
  return ranges;
}
