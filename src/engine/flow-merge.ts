/**
 * One conversation, one flow: the data plane's flows merged with those a kernel data path recorded (ebpf). A
 * conversation's packets can take both paths — a port-mapped flow's SYN, FIN and RST go to the data plane while the
 * kernel rewrites the rest (engine/port-mapper.ts) — and both then hold a record under the same key. Those are added
 * up: packets and bytes summed, first seen the earliest, last seen the latest, closed if either saw the end, the
 * mapped port (and with it which port is the client's) from whichever knows it.
 */
import type { FlowRecord } from './types.ts';

/** The conversation's key: its ports unordered, since a record that saw no SYN only guesses which is the client's. */
function keyOf(f: FlowRecord): string {
  const [low, high] = f.clientPort < f.serverPort ? [f.clientPort, f.serverPort] : [f.serverPort, f.clientPort];
  return `${f.protocol}/${f.reflectAddress}/${f.localAddress}/${low}/${high}`;
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
    if (f.mappedFromPort === null && k.mappedFromPort !== null) {
      // The kernel's record of a mapped flow knows its ports from the mapper's entry.
      f.mappedFromPort = k.mappedFromPort;
      f.clientPort = k.clientPort;
      f.serverPort = k.serverPort;
    }
  }
  return user;
}
