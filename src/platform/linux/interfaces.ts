/**
 * Network interface indexes and names on Linux, from sysfs (/sys/class/net/<name>/ifindex). Indexes are per network
 * namespace, and sysfs shows the namespace of the process that reads it, which is the engine's.
 */
import { readdirSync, readFileSync } from 'node:fs';

const SYS_NET = '/sys/class/net';

/** The index of interface `name`, or 0 when there is none. */
export function interfaceIndex(name: string): number {
  try {
    return Number(readFileSync(`${SYS_NET}/${name}/ifindex`, 'utf8').trim()) || 0;
  } catch {
    return 0;
  }
}

let names = new Map<number, string>();
let scannedAt = 0;
/** A miss rescans at most this often, so a flood of packets from an unknown index cannot turn into a flood of scans. */
const RESCAN_MS = 1000;

/** The name of the interface with this index, or null (no such interface, or gone). */
export function interfaceNameOf(index: number): string | null {
  const hit = names.get(index);
  if (hit !== undefined) return hit;
  const now = Date.now();
  if (now - scannedAt < RESCAN_MS) return null;
  scannedAt = now;
  const next = new Map<number, string>();
  try {
    for (const name of readdirSync(SYS_NET)) {
      const i = interfaceIndex(name);
      if (i > 0) next.set(i, name);
    }
  } catch {
    // No sysfs (a container without it): no names; captures show indexes.
  }
  names = next;
  return names.get(index) ?? null;
}
