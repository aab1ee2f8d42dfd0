/**
 * One conversation, one flow: the data plane's flows merged with those a kernel data path recorded (ebpf). A
 * conversation's packets can take both paths — a port-mapped flow's SYN, FIN and RST go to the data plane while the
 * kernel rewrites the rest (engine/port-mapper.ts) — and both then hold a record under the same key. Those are added
 * up: packets and bytes summed, first seen the earliest, last seen the latest, closed if either saw the end, the
 * mapped port from whichever knows it.
 */
import type { FlowRecord } from './types.ts';

function keyOf(f: FlowRecord): string {
  return `${f.protocol}/${f.reflectAddress}/${f.localAddress}/${f.clientPort}/${f.serverPort}`;
}

/** `user` with `kernel` folded in (records of the same conversation merged, the rest appended). Mutates `user`. */
export function mergeKernelFlows(user: FlowRecord[], kernel: readonly FlowRecord[]): FlowRecord[] {
  if (kernel.length === 0) return user;
  const byKey = new Map(user.map((f) => [keyOf(f), f]));
  for (const k of kernel) {
    const f = byKey.get(keyOf(k));
    if (!f) {
      user.push(k);
      continue;
    }
    f.packets += k.packets;
    f.bytes += k.bytes;
    if (k.firstSeen < f.firstSeen) f.firstSeen = k.firstSeen;
    if (k.lastSeen > f.lastSeen) f.lastSeen = k.lastSeen;
    if (k.state === 'closed') f.state = 'closed';
    f.mappedFromPort ??= k.mappedFromPort;
  }
  return user;
}
