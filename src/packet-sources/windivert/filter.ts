/**
 * Builds the WinDivert filter string for an intercept config:
 *
 *   !loopback and ((outbound and (ip.DstAddr == A or ipv6.DstAddr == B ...))
 *                  or (inbound and (ip.SrcAddr == A or ipv6.SrcAddr == B ... or tcp.DstPort == P ... or udp.DstPort == Q ...)))
 *
 *  - outbound to a reflect address: EVERY such packet, whatever its protocol and whether or not it is a fragment.
 *    WinDivert sees outbound fragments one by one, and a fragment at a non-zero offset has no transport header, so a
 *    protocol test (`tcp or udp ...`) would let it go out to the network unreflected; the data plane reflects every
 *    IP protocol.
 *  - inbound from a reflect address: forged (a reflect address is never reachable from the network while it is
 *    reflected); captured so the data plane drops and counts it. Our own reflected packets also arrive from a
 *    reflect address, but WinDivert never hands a handle the packets a handle of equal or higher priority injected,
 *    so our handles never see them.
 *  - inbound to a shield port: dropped by the data plane. Inbound fragments reach us reassembled (we do not ask for
 *    WINDIVERT_FLAG_FRAGMENTS), so the port test sees every datagram's transport header.
 *  - an empty config: `false`.
 *
 * WinDivert compiles a filter into at most 256 tests (WINDIVERT_FILTER_MAXLEN) from at most 5 * 256 tokens, while a
 * config may hold 64 addresses and 1024 shield ports. Each address costs two tests (destination and source), so the
 * ports get what is left: runs of consecutive ports are written as ranges (`tcp.DstPort >= a and tcp.DstPort <= b`),
 * and when that is still too long the closest ranges are merged. A merged range captures a few ports that are not
 * shielded; that only costs a round trip through the worker, since the data plane decides every packet exactly (not
 * shielded → Pass, resent unchanged). Addresses are never merged: 64 addresses fit.
 */
import type { InterceptConfig, ShieldProtocol } from '../../config/intercept-config.ts';
import { addressFamily } from '../../config/intercept-config.ts';
import { WINDIVERT_FILTER_MAX_TESTS } from './limits.ts';

/** A filter that matches no packet (a valid WinDivert filter constant). */
export const MATCH_NOTHING = 'false';

/** Tests kept free under that limit, so a small miscount can never make WinDivertOpen refuse our filter. */
const TEST_MARGIN = 4;

export interface PortRange {
  from: number;
  to: number;
}

function addressTests(addresses: readonly string[], side: 'Dst' | 'Src'): string[] {
  return addresses.map((a) => (addressFamily(a) === 4 ? `ip.${side}Addr == ${a}` : `ipv6.${side}Addr == ${a}`));
}

/** Port tests each shielded protocol may use, given the tests the addresses and the fixed parts take. */
export function portTestBudget(addressCount: number, protocolsWithPorts: number): number {
  const fixed = 3 + 2 * addressCount; // !loopback, outbound, inbound, and each address twice
  return Math.floor((WINDIVERT_FILTER_MAX_TESTS - TEST_MARGIN - fixed) / Math.max(protocolsWithPorts, 1));
}

function portTests(ports: InterceptConfig['shieldPorts'], addressCount: number): string[] {
  const byProtocol = (['tcp', 'udp'] as const satisfies readonly ShieldProtocol[])
    .map((protocol) => ({ protocol, list: ports.filter((p) => p.protocol === protocol).map((p) => p.port) }))
    .filter((g) => g.list.length > 0);
  const budget = portTestBudget(addressCount, byProtocol.length);
  return byProtocol.flatMap(({ protocol, list }) =>
    portRanges(list, budget).map((r) =>
      r.from === r.to ? `${protocol}.DstPort == ${r.from}` : `(${protocol}.DstPort >= ${r.from} and ${protocol}.DstPort <= ${r.to})`,
    ),
  );
}

/** The whole filter for `cfg`; `MATCH_NOTHING` for an empty config. */
export function buildWinDivertFilter(cfg: InterceptConfig): string {
  const outbound = addressTests(cfg.reflectAddresses, 'Dst');
  const inbound = [...addressTests(cfg.reflectAddresses, 'Src'), ...portTests(cfg.shieldPorts, cfg.reflectAddresses.length)];
  const sides: string[] = [];
  if (outbound.length > 0) sides.push(`(outbound and (${outbound.join(' or ')}))`);
  if (inbound.length > 0) sides.push(`(inbound and (${inbound.join(' or ')}))`);
  if (sides.length === 0) return MATCH_NOTHING;
  return `!loopback and (${sides.join(' or ')})`;
}

/**
 * Sorted, coalesced ranges covering `ports`, merged until they cost at most `budget` tests (a single port costs
 * one test, a range two). Merging always joins the two neighbours with the smallest gap, so the fewest extra
 * ports are captured.
 */
export function portRanges(ports: readonly number[], budget: number): PortRange[] {
  const sorted = [...new Set(ports)].sort((a, b) => a - b);
  const ranges: PortRange[] = [];
  for (const p of sorted) {
    const last = ranges[ranges.length - 1];
    if (last && p === last.to + 1) last.to = p;
    else ranges.push({ from: p, to: p });
  }
  const cost = (r: PortRange): number => (r.from === r.to ? 1 : 2);
  let total = ranges.reduce((s, r) => s + cost(r), 0);
  while (total > budget && ranges.length > 1) {
    let best = 0;
    for (let i = 1; i < ranges.length - 1; i++) {
      if (ranges[i + 1].from - ranges[i].to < ranges[best + 1].from - ranges[best].to) best = i;
    }
    const merged = { from: ranges[best].from, to: ranges[best + 1].to };
    total += cost(merged) - cost(ranges[best]) - cost(ranges[best + 1]);
    ranges.splice(best, 2, merged);
  }
  return ranges;
}
