/**
 * The kernel's answer to "how would this host send a packet to X?", from `ip -j route get` (argument array, no
 * shell). Used by reflect-address validation; the Windows backend supplies its own lookup.
 */
import { RetroflectError } from '../../errors.ts';
import type { RouteFacts } from '../route-facts.ts';
import { runCommand } from './command.ts';

/** Route types that mean "no usable route" (rtnetlink RTN_*), as `ip -j` prints them. */
const NOT_ROUTED = new Set(['unreachable', 'blackhole', 'prohibit', 'throw']);

export async function linuxRouteLookup(address: string): Promise<RouteFacts | null> {
  let stdout: string;
  try {
    ({ stdout } = await runCommand({ file: 'ip', args: ['-j', address.includes(':') ? '-6' : '-4', 'route', 'get', address] }));
  } catch (err) {
    // How the kernel answers `route get` for an address it will not send to: no route at all → "Network is
    // unreachable"; an `unreachable` route → "No route to host"; `prohibit` → "Permission denied"; `blackhole` →
    // "Invalid argument" (the address itself is valid: we canonicalised it before asking).
    if (err instanceof RetroflectError && /unreachable|No route|Permission denied|Invalid argument/i.test(String(err.details?.stderr ?? ''))) return null;
    throw err;
  }
  const [route] = JSON.parse(stdout || '[]') as { type?: string; dev?: string; gateway?: string; prefsrc?: string }[];
  if (!route || NOT_ROUTED.has(route.type ?? '')) return null;
  return { type: route.type ?? 'unicast', device: route.dev ?? null, gateway: route.gateway ?? null, source: route.prefsrc ?? null };
}
