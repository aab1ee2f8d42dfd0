/**
 * The kernel half of port maps on the ebpf backend: the tc program's mapped_flows map (native/reflect_tc.bpf.c; the
 * layouts below mirror it), a cache of the port mapper's decisions. The worker's mapper hands it answered mapped flows
 * and takes them back (KernelMappedFlowCache, its MappedFlowCache); the main thread, after a live change, deletes
 * every entry whose map or address is gone (forgetUnmapped), so a removed map stops rewriting in the kernel as soon as
 * the change is made, whichever thread gets there first.
 */
import { MAX_MAPPED_FLOWS } from '../../config/port-maps.ts';
import type { MappedFlowCache, MappedFlowRef } from '../packet-source.ts';
import { BPF_ANY, BPF_EXIST, libbpf } from './libbpf.ts';

/** Entries of mapped_flows: two per mapped flow (one per direction), for every flow the mapper can hold. */
export const KERNEL_MAPPED_FLOW_ENTRIES = 2 * MAX_MAPPED_FLOWS;

/** struct mapped_key: u8 family, u8 protocol, u16 src_port, u16 dst_port, u16 pad, u8 reflect[16], u8 local[16]. */
const KEY_BYTES = 40;
/** struct mapped_value: u16 src_port, dst_port, client_port, server_port, mapped_port, pad; u32 pad; u64 last_ns. */
const VALUE_BYTES = 24;
const VALUE_LAST_NS = 16;

/** The key of the packet L:src → R:dst of flow `f` (ports in host order, as the program compares them). */
function keyOf(f: MappedFlowRef, src: number, dst: number): Buffer {
  const k = Buffer.alloc(KEY_BYTES);
  k[0] = f.family;
  k[1] = f.protocol;
  k.writeUInt16LE(src, 2);
  k.writeUInt16LE(dst, 4);
  const words = f.family === 6 ? 4 : 1;
  for (let i = 0; i < words; i++) {
    k.writeInt32BE(f.words[f.addressAt + i], 8 + 4 * i);
    k.writeInt32BE(f.words[f.addressAt + 4 + i], 24 + 4 * i);
  }
  return k;
}

/** The key of the flow's record in the program's flows map (the server side's ports, low then high). */
function flowKeyOf(f: MappedFlowRef): Buffer {
  return keyOf(f, Math.min(f.clientPort, f.serverPort), Math.max(f.clientPort, f.serverPort));
}

function valueOf(f: MappedFlowRef, src: number, dst: number): Buffer {
  const v = Buffer.alloc(VALUE_BYTES);
  v.writeUInt16LE(src, 0);
  v.writeUInt16LE(dst, 2);
  v.writeUInt16LE(f.clientPort, 4);
  v.writeUInt16LE(f.serverPort, 6);
  v.writeUInt16LE(f.mappedPort, 8);
  return v;
}

/** The flow's two entries: the client's packet L:c → R:P leaves as L:c → R:T, the server's L:T → R:c as L:P → R:c. */
function entriesOf(f: MappedFlowRef): [Buffer, Buffer][] {
  const c = f.clientPort;
  return [
    [keyOf(f, c, f.mappedPort), valueOf(f, c, f.serverPort)],
    [keyOf(f, f.serverPort, c), valueOf(f, f.mappedPort, c)],
  ];
}

/** struct flow_key (the same layout as mapped_key, its ports low then high) and flow_value (maps.ts; one per CPU). */
const FLOW_VALUE_BYTES = 40;
const FLOW_VALUE_PACKETS = 16;
const FLOW_VALUE_STATE = 36;
const FLOW_CLOSED = 2;

/** The worker's handle on mapped_flows (the fds are the main thread's loaded object's, valid in every thread). */
export class KernelMappedFlowCache implements MappedFlowCache {
  private readonly value = Buffer.alloc(VALUE_BYTES);
  /** Epoch milliseconds at CLOCK_MONOTONIC zero (bpf_ktime_get_coarse_ns and process.hrtime share that clock). */
  private readonly epochAtZeroMs = Date.now() - Number(process.hrtime.bigint()) / 1e6;
  private readonly fd: number;
  private readonly flowsFd: number;

  constructor(fds: { mappedFlows: number; flows: number }) {
    this.fd = fds.mappedFlows;
    this.flowsFd = fds.flows;
  }

  install(f: MappedFlowRef): boolean {
    const b = libbpf();
    const entries = entriesOf(f);
    try {
      // The kernel's flow record under this key, if any, is of an earlier conversation (this one's packets all took
      // the user-space path so far): a new one on the same ports starts afresh, as in engine/flow-table.ts.
      b.remove(this.flowsFd, flowKeyOf(f));
      for (const [k, v] of entries) b.update(this.fd, k, v, BPF_ANY);
      return true;
    } catch {
      // Full (E2BIG): the flow stays the user-space path's, which is always right.
      for (const [k] of entries) b.remove(this.fd, k);
      return false;
    }
  }

  remove(f: MappedFlowRef, ended: boolean): void {
    const b = libbpf();
    // Deleting a key of a valid map fails only when it is absent (not an error). Were it to fail otherwise, the throw
    // stops the worker and so the engine, which removes the program with its device: never a stale rewrite.
    for (const [k] of entriesOf(f)) b.remove(this.fd, k);
    try {
      if (ended) this.closeFlowRecord(f);
    } catch {
      // Only the flows view's state of a record the kernel could not give back: the record still expires when idle.
    }
  }

  /** The program saw none of the flow's SYN, FIN or RST: mark the copies of its flow record that hold packets closed,
   *  so the flows view (and the record's idle limit) says what it does for a flow the user-space path ended. */
  private closeFlowRecord(f: MappedFlowRef): void {
    const b = libbpf();
    const key = flowKeyOf(f);
    const value = Buffer.alloc(FLOW_VALUE_BYTES * b.possibleCpus());
    if (!b.lookup(this.flowsFd, key, value)) return;
    for (let at = 0; at < value.length; at += FLOW_VALUE_BYTES) {
      if (value.readBigUInt64LE(at + FLOW_VALUE_PACKETS) !== 0n) value[at + FLOW_VALUE_STATE] = FLOW_CLOSED;
    }
    b.update(this.flowsFd, key, value, BPF_EXIST); // throws when the (LRU) record went meanwhile: nothing to mark
  }

  lastSeenMs(f: MappedFlowRef): number {
    const b = libbpf();
    let last = 0n;
    for (const [k] of entriesOf(f)) {
      try {
        if (!b.lookup(this.fd, k, this.value)) continue; // absent: never installed, or deleted by the main thread
      } catch {
        continue; // unreadable: no kernel time, so the flow's own decides (and it is taken back when idle)
      }
      const ns = this.value.readBigUInt64LE(VALUE_LAST_NS);
      if (ns > last) last = ns;
    }
    return last === 0n ? 0 : this.epochAtZeroMs + Number(last) / 1e6;
  }
}

/**
 * Delete every entry of mapped_flows whose map is not `mapped(reflect address, protocol, port, target)` any more
 * (its map or its address removed, or the map now pointing elsewhere). Main thread, after a live change.
 */
export function forgetUnmapped(
  fd: number,
  mapped: (reflectKey: Buffer, protocol: number, port: number, target: number) => boolean,
): number {
  const b = libbpf();
  const stale: Buffer[] = [];
  const value = Buffer.alloc(VALUE_BYTES);
  let key: Buffer | null = null;
  for (;;) {
    const next = Buffer.alloc(KEY_BYTES);
    if (!b.nextKey(fd, key, next)) break;
    key = next;
    if (!b.lookup(fd, next, value)) continue;
    const reflect = Buffer.alloc(16);
    if (next[0] === 4) {
      reflect[10] = 0xff;
      reflect[11] = 0xff;
      next.copy(reflect, 12, 8, 12);
    } else next.copy(reflect, 0, 8, 24);
    if (!mapped(reflect, next[1], value.readUInt16LE(8), value.readUInt16LE(6))) stale.push(next);
  }
  for (const k of stale) b.remove(fd, k);
  return stale.length;
}
