/**
 * Builds the WinDivert filter string for an intercept config.
 *
 *  reflection: outbound and !loopback and (ip.DstAddr == A or ipv6.DstAddr == B ...) and (tcp or udp or icmp or icmpv6)
 *  shielding:  inbound and !loopback and ((tcp.DstPort == P ...) or (udp.DstPort == Q ...))
 *  both:       (reflection) or (shielding)
 *  nothing:    false
 *
 * WinDivert compiles a filter into at most 256 tests (WINDIVERT_FILTER_MAXLEN) from at most 5 * 256 tokens, while a
 * config may hold 64 addresses and 1024 shield ports. Ports are therefore written as ranges (`tcp.DstPort >= a and
 * tcp.DstPort <= b` for runs of consecutive ports), and when that is still too long the closest ranges are merged.
 * A merged range captures a few ports that are not shielded; that only costs a round trip through the worker, since
 * the data plane decides every packet exactly (not shielded → Pass, resent unchanged). Addresses are never merged:
 * 64 addresses fit.
 */
import type { InterceptConfig, ShieldProtocol } from '../../config/intercept-config.ts';
import { addressFamily } from '../../config/intercept-config.ts';

/** A filter that matches no packet (a valid WinDivert filter constant). */
export const MATCH_NOTHING = 'false';

/**
 * Budget of port tests per protocol. Reflection with 64 addresses uses about 70 tests, so two protocols at this
 * budget stay under WinDivert's 256 with room to spare, and the token count stays under its 1280.
 */
export const PORT_TEST_BUDGET = 80;

export interface PortRange {
  from: number;
  to: number;
}

export function reflectionFilter(addresses: readonly string[]): string | null {
  if (addresses.length === 0) return null;
  const matches = addresses.map((a) => (addressFamily(a) === 4 ? `ip.DstAddr == ${a}` : `ipv6.DstAddr == ${a}`));
  return `outbound and !loopback and (${matches.join(' or ')}) and (tcp or udp or icmp or icmpv6)`;
}

export function shieldFilter(ports: InterceptConfig['shieldPorts']): string | null {
  const groups: string[] = [];
  for (const protocol of ['tcp', 'udp'] as const satisfies readonly ShieldProtocol[]) {
    const list = ports.filter((p) => p.protocol === protocol).map((p) => p.port);
    if (list.length === 0) continue;
    const tests = portRanges(list, PORT_TEST_BUDGET).map((r) =>
      r.from === r.to ? `${protocol}.DstPort == ${r.from}` : `(${protocol}.DstPort >= ${r.from} and ${protocol}.DstPort <= ${r.to})`,
    );
    groups.push(`(${tests.join(' or ')})`);
  }
  if (groups.length === 0) return null;
  return `inbound and !loopback and (${groups.join(' or ')})`;
}

/** The whole filter for `cfg`; `MATCH_NOTHING` for an empty config. */
export function buildWinDivertFilter(cfg: InterceptConfig): string {
  const parts = [reflectionFilter(cfg.reflectAddresses), shieldFilter(cfg.shieldPorts)].filter((p): p is string => p !== null);
  if (parts.length === 0) return MATCH_NOTHING;
  if (parts.length === 1) return parts[0];
  return parts.map((p) => `(${p})`).join(' or ');
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
