/**
 * Shield ports for the hot path: one Int16Array(65536) per protocol mapping port → counter slot (-1 = not shielded).
 * 128 KiB each buys a single indexed load per packet. Slots fit Int16 because MAX_SHIELD_PORTS is 1024.
 */
import { MAX_SHIELD_PORTS, type ShieldProtocol } from '../config/intercept-config.ts';
import { invalidShieldPort, tooManyShieldPorts } from '../error-messages.ts';
import { ErrorCode, RetroflectError } from '../errors.ts';

export interface ShieldPortEntry {
  port: number;
  protocol: ShieldProtocol;
  /** Counter slot, 0 .. MAX_SHIELD_PORTS - 1. */
  slot: number;
}

export class ShieldPortSet {
  readonly tcp = new Int16Array(65536).fill(-1);
  readonly udp = new Int16Array(65536).fill(-1);
  private entries: ShieldPortEntry[] = [];

  get size(): number {
    return this.entries.length;
  }

  /** Replace the contents. Validates everything first (throws RetroflectError, changing nothing). */
  replace(entries: readonly ShieldPortEntry[]): void {
    if (entries.length > MAX_SHIELD_PORTS) {
      throw tooManyShieldPorts(MAX_SHIELD_PORTS);
    }
    for (const e of entries) {
      if (!Number.isInteger(e.port) || e.port < 1 || e.port > 65535 || (e.protocol !== 'tcp' && e.protocol !== 'udp')) {
        throw invalidShieldPort({ port: e.port, protocol: e.protocol });
      }
      if (!Number.isInteger(e.slot) || e.slot < 0 || e.slot >= MAX_SHIELD_PORTS) {
        throw new RetroflectError(ErrorCode.INTERNAL, `Shield port slot ${e.slot} is out of range.`, {
          details: { port: e.port, protocol: e.protocol, slot: e.slot },
        });
      }
    }
    // Clear only what was set, instead of refilling 2 × 64 Ki entries.
    for (const e of this.entries) (e.protocol === 'tcp' ? this.tcp : this.udp)[e.port] = -1;
    for (const e of entries) (e.protocol === 'tcp' ? this.tcp : this.udp)[e.port] = e.slot;
    this.entries = entries.map((e) => ({ port: e.port, protocol: e.protocol, slot: e.slot }));
  }
}
