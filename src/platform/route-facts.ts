/** What a route lookup (route-lookup.ts and its per-platform modules) reports about the route to an address. */
export interface RouteFacts {
  /** Route type ('unicast', 'local', ...). */
  type: string;
  device: string | null;
  gateway: string | null;
  /** The source address the host would use. */
  source: string | null;
}
