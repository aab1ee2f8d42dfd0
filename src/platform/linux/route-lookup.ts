/**
 * The kernel's answer to "how would this host send a packet to X?", from `ip -j route get` (argument array, no
 * shell). Used by reflect-address validation; the Windows backend supplies its own lookup.
 */
import { execFile } from 'node:child_process';
import type { RouteFacts } from '../validate-address.ts';

/** Route types that mean "no usable route" (rtnetlink RTN_*), as `ip -j` prints them. */
const NOT_ROUTED = new Set(['unreachable', 'blackhole', 'prohibit', 'throw']);

export function linuxRouteLookup(address: string): Promise<RouteFacts | null> {
  const family = address.includes(':') ? '-6' : '-4';
  return new Promise((resolve, reject) => {
    execFile('ip', ['-j', family, 'route', 'get', address], { encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) {
        // "RTNETLINK answers: Network is unreachable" (or host/prohibited): the kernel has no route.
        if (/unreachable|prohibit|No route/i.test(stderr)) resolve(null);
        else reject(new Error(`ip route get ${address} failed: ${stderr.trim() || err.message}`));
        return;
      }
      const [route] = JSON.parse(stdout || '[]') as { type?: string; dev?: string; gateway?: string; prefsrc?: string }[];
      if (!route || NOT_ROUTED.has(route.type ?? '')) resolve(null);
      else resolve({ type: route.type ?? 'unicast', device: route.dev ?? null, gateway: route.gateway ?? null, source: route.prefsrc ?? null });
    });
  });
}
