/**
 * The route this host would use to send to an address, from the platform's own lookup (Linux: `ip route get`;
 * Windows: GetBestInterfaceEx/GetIpForwardTable2). Each lookup module is imported only on its platform.
 */
import type { RouteFacts } from './route-facts.ts';

/** The route to `address`, or null when the host has none. */
export async function lookupRoute(address: string): Promise<RouteFacts | null> {
  if (process.platform === 'linux') return (await import('./linux/route-lookup.ts')).linuxRouteLookup(address);
  if (process.platform === 'win32') return (await import('./windows/route-lookup.ts')).windowsRouteLookup(address);
  // No route lookup for this platform: do not refuse what we cannot check.
  return { type: 'unicast', device: null, gateway: null, source: null };
}
