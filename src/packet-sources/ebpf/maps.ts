/**
 * The tc program's maps as the engine sees them: the byte layouts of native/reflect_tc.bpf.c (change both together),
 * encoding of keys and values, and reading the kernel's counters and flows. Main thread only.
 */
import { endianness } from 'node:os';
import ipaddr from 'ipaddr.js';
import { libbpf, BPF_ANY } from './libbpf.ts';
import type { CaptureInterest } from '../../packet/capture-interest.ts';
import { SLOT_BYTES } from '../../packet/allowed-ports.ts';

/** Map names in the object. */
export const MAP = {
  reflect: 'reflect_addrs',
  counts: 'addr_counts',
  flows: 'flows',
  settings: 'settings',
  captureAddresses: 'capture_addrs',
  capturePorts: 'capture_ports',
  captureRing: 'capture_ring',
  captureScratch: 'capture_scratch',
  captureLost: 'capture_lost',
  portRoles: 'port_roles',
  allowedPorts: 'allowed_ports',
  mappedFlows: 'mapped_flows',
} as const;

/** Entries of capture_addrs and capture_ports: beyond that many the program takes any address (or port) as wanted. */
export const KERNEL_CAPTURE_ENTRIES = 256;

/** Stats protocols in the program's order (engine/counters.ts StatsProto): tcp, udp, icmp, other. */
export const KERNEL_STATS_PROTOCOLS = ['tcp', 'udp', 'icmp', 'other'] as const;
export type KernelStatsProtocol = (typeof KERNEL_STATS_PROTOCOLS)[number];

/** reflect_value.flags: the address has a port allow list (allowed_ports); the TCP/UDP packets it does not allow
 *  take the user-space path, which refuses them. */
export const REFLECT_PORT_LIST = 1;
/** reflect_value.flags: the address has port maps; packets with a port in port_roles take the user-space path
 *  (engine/port-mapper.ts) unless their flow is in mapped_flows (mapped-flows.ts), and so do ICMP errors; the rest
 *  stays in the kernel. */
export const REFLECT_PORT_MAPS = 2;

/** port_roles index of a port: TCP ports first, then UDP (as the program computes it). */
export function portRoleIndex(protocol: 'tcp' | 'udp', port: number): number {
  return (protocol === 'tcp' ? 0 : 65536) + port;
}

/** allowed_ports: u64 words per reflect slot (its four 65536-bit sets, packet/allowed-ports.ts SLOT_BYTES), and
 *  entries in all (the loader sizes the map). */
export const ALLOWED_WORDS_PER_SLOT = SLOT_BYTES / 8;
export function allowedPortsEntries(slots: number): number {
  return slots * ALLOWED_WORDS_PER_SLOT;
}

/** Bytes of a packet the program copies into the capture ring at most (MAX_CAPTURE - 1 in the program: the
 *  longest snap length, capture/filter.ts MAX_SNAPLEN). */
export const KERNEL_MAX_SNAPLEN = 65535;
/** The capture ring's size (a power of two, as the kernel requires): 4 MiB, room for 64 packets at the longest
 *  snap length or about 14,000 at the default one. */
export const KERNEL_CAPTURE_RING_BYTES = 1 << 22;

/** Flow entries the kernel keeps at most (LRU: the least recently used is evicted when full). */
export const DEFAULT_KERNEL_FLOWS = 4096;

const REFLECT_KEY = 16;
const REFLECT_VALUE = 8;
const COUNTS_VALUE = 16;
const FLOW_KEY = 40;
const FLOW_VALUE = 40;
const SETTINGS_VALUE = 20;

/** A reflect address as the program keys it: 16 bytes, IPv4 as IPv4-mapped IPv6. */
export function reflectKey(address: string): Buffer {
  const a = ipaddr.parse(address);
  const bytes = a.kind() === 'ipv4' ? (a as ipaddr.IPv4).toIPv4MappedAddress().toByteArray() : a.toByteArray();
  return Buffer.from(bytes);
}

export interface FlowEntry {
  family: 4 | 6;
  protocol: number;
  reflectAddress: string;
  localAddress: string;
  clientPort: number;
  serverPort: number;
  packets: number;
  bytes: number;
  /** CLOCK_MONOTONIC nanoseconds at tick resolution (bpf_ktime_get_coarse_ns). */
  firstNs: bigint;
  lastNs: bigint;
  /** 0 active, 1 open, 2 closed (engine/flow-table.ts). */
  state: number;
  /** A port-mapped flow the kernel rewrote packets of: the port its client used (0: none; mapped-flows.ts). */
  mappedPort: number;
}

const FLOW_CLOSED = 2;

/**
 * One flow from its per-CPU copies (see flow_value in the program): first seen the earliest, last seen the latest,
 * packets and bytes summed, ports from a copy that saw the SYN or a mapped flow's entry (else any), closed if any
 * copy saw the end after the latest SYN. Copies with no packets are CPUs that never handled the flow. Null when no
 * copy has any.
 */
type FlowCounts = Omit<FlowEntry, 'family' | 'protocol' | 'reflectAddress' | 'localAddress'>;

function mergeFlowCopies(v: Buffer, cpus: number): FlowCounts | null {
  let out: FlowCounts | null = null;
  let portsFromSyn = false;
  for (let cpu = 0; cpu < cpus; cpu++) {
    const at = cpu * FLOW_VALUE;
    const packets = Number(v.readBigUInt64LE(at + 16));
    if (packets === 0) continue;
    const firstNs = v.readBigUInt64LE(at);
    const lastNs = v.readBigUInt64LE(at + 8);
    const state = v[at + 36];
    const syn = v[at + 37] === 1;
    if (!out) {
      out = { firstNs, lastNs, packets: 0, bytes: 0, clientPort: 0, serverPort: 0, state, mappedPort: 0 };
    }
    out.packets += packets;
    out.bytes += Number(v.readBigUInt64LE(at + 24));
    if (firstNs < out.firstNs) out.firstNs = firstNs;
    if (lastNs > out.lastNs) out.lastNs = lastNs;
    if (state === FLOW_CLOSED) out.state = FLOW_CLOSED;
    if (syn || (!portsFromSyn && out.clientPort === 0)) {
      out.clientPort = v.readUInt16LE(at + 32);
      out.serverPort = v.readUInt16LE(at + 34);
      out.mappedPort = v.readUInt16LE(at + 38);
      portsFromSyn ||= syn;
    }
  }
  return out;
}

function addressOf(family: number, buf: Buffer, at: number): string {
  return ipaddr.fromByteArray([...buf.subarray(at, at + (family === 4 ? 4 : 16))]).toString();
}

/** The program's maps, by file descriptor (the fds belong to the loaded object; see program.ts). */
export class KernelMaps {
  private readonly cpus: number;
  constructor(private readonly fds: Record<keyof typeof MAP, number>) {
    this.cpus = libbpf().possibleCpus();
  }

  /** Add (or re-flag) a reflect address with its counter slot; a new slot's counters start at zero. */
  setReflect(address: string, slot: number, flags: number, freshSlot: boolean): void {
    const b = libbpf();
    if (freshSlot) {
      const zero = Buffer.alloc(COUNTS_VALUE * this.cpus);
      const first = slot * KERNEL_STATS_PROTOCOLS.length;
      for (let p = 0; p < KERNEL_STATS_PROTOCOLS.length; p++) b.update(this.fds.counts, u32(first + p), zero, BPF_ANY);
    }
    const v = Buffer.alloc(REFLECT_VALUE);
    v.writeUInt32LE(slot, 0);
    v.writeUInt32LE(flags, 4);
    b.update(this.fds.reflect, reflectKey(address), v, BPF_ANY);
  }

  removeReflect(address: string): void {
    libbpf().remove(this.fds.reflect, reflectKey(address));
  }

  /** port_roles indexes set now. */
  private readonly roles = new Set<number>();

  /** Mark these ports (portRoleIndex) as named by some map; the others stay as they are. */
  addPortRoles(indexes: Iterable<number>): void {
    const b = libbpf();
    for (const i of indexes) {
      if (this.roles.has(i)) continue;
      b.update(this.fds.portRoles, u32(i), Buffer.from([1]), BPF_ANY);
      this.roles.add(i);
    }
  }

  /** Clear every port role not in `keep`. */
  keepPortRoles(keep: ReadonlySet<number>): void {
    const b = libbpf();
    for (const i of [...this.roles]) {
      if (keep.has(i)) continue;
      b.update(this.fds.portRoles, u32(i), Buffer.from([0]), BPF_ANY);
      this.roles.delete(i);
    }
  }

  /** What allowed_ports holds per slot (absent: all zero), so a change writes only the words that differ. */
  private readonly allowed = new Map<number, Uint8Array>();

  /**
   * Make a slot's allowed-port sets in the kernel equal `bits` (AllowedPortSet.slotBits; null: all clear). Only the
   * words that differ are written, each in one update, so a packet meanwhile sees every word old or new.
   */
  writeAllowedPorts(slot: number, bits: Uint8Array | null): void {
    const had = this.allowed.get(slot);
    if (!had && !bits) return;
    const b = libbpf();
    const bytes = (u: Uint8Array | null | undefined): Buffer =>
      u ? Buffer.from(u.buffer, u.byteOffset, u.byteLength) : Buffer.alloc(SLOT_BYTES);
    const now = bytes(had);
    const want = bytes(bits);
    const word = Buffer.alloc(8);
    for (let w = 0; w < ALLOWED_WORDS_PER_SLOT; w++) {
      // The sets are little-endian words (bit p % 64 of word p / 64); the map holds them in host order.
      const v = want.readBigUInt64LE(w * 8);
      if (v === now.readBigUInt64LE(w * 8)) continue;
      if (endianness() === 'LE') word.writeBigUInt64LE(v);
      else word.writeBigUInt64BE(v);
      b.update(this.fds.allowedPorts, u32(slot * ALLOWED_WORDS_PER_SLOT + w), word, BPF_ANY);
    }
    if (bits) this.allowed.set(slot, Uint8Array.from(bits));
    else this.allowed.delete(slot);
  }

  /** Packets and bytes the program reflected for a slot, per protocol, summed over CPUs. */
  slotCounts(slot: number): Record<KernelStatsProtocol, { packets: number; bytes: number }> {
    const b = libbpf();
    const value = Buffer.alloc(COUNTS_VALUE * this.cpus);
    const out = {} as Record<KernelStatsProtocol, { packets: number; bytes: number }>;
    KERNEL_STATS_PROTOCOLS.forEach((name, p) => {
      let packets = 0;
      let bytes = 0;
      if (b.lookup(this.fds.counts, u32(slot * KERNEL_STATS_PROTOCOLS.length + p), value)) {
        for (let cpu = 0; cpu < this.cpus; cpu++) {
          packets += Number(value.readBigUInt64LE(cpu * COUNTS_VALUE));
          bytes += Number(value.readBigUInt64LE(cpu * COUNTS_VALUE + 8));
        }
      }
      out[name] = { packets, bytes };
    });
    return out;
  }

  /** Every flow in the kernel's table; `forget` entries are deleted on the way (idle past their limit). */
  readFlows(forget: (e: FlowEntry) => boolean): FlowEntry[] {
    const b = libbpf();
    const out: FlowEntry[] = [];
    const keys: Buffer[] = [];
    let key: Buffer | null = null;
    for (;;) {
      const next = Buffer.alloc(FLOW_KEY);
      if (!b.nextKey(this.fds.flows, key, next)) break;
      keys.push(next);
      key = next;
    }
    const v = Buffer.alloc(FLOW_VALUE * this.cpus);
    for (const k of keys) {
      if (!b.lookup(this.fds.flows, k, v)) continue;
      const merged = mergeFlowCopies(v, this.cpus);
      if (!merged) continue;
      const family = k[0] === 6 ? 6 : 4;
      const e: FlowEntry = {
        family,
        protocol: k[1],
        reflectAddress: addressOf(family, k, 8),
        localAddress: addressOf(family, k, 24),
        ...merged,
      };
      if (forget(e)) b.remove(this.fds.flows, k);
      else out.push(e);
    }
    return out;
  }
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n, 0);
  return b;
}

/**
 * Tell the program what the running captures might want (null: none). While the address and port maps are
 * rewritten the settings say "every address and port", so a running capture never misses a packet meanwhile.
 */
export function writeCaptureInterest(
  fds: { settings: number; addresses: number; ports: number },
  interest: CaptureInterest | null,
): void {
  const b = libbpf();
  const settings = Buffer.alloc(SETTINGS_VALUE);
  const off = !interest || !interest.reflected;
  if (off) {
    b.update(fds.settings, u32(0), settings, BPF_ANY);
    return;
  }
  settings.writeUInt32LE(1, 0);
  settings.writeUInt32LE(KERNEL_PROTOCOL_BITS, 4);
  settings.writeUInt32LE(1, 8);
  settings.writeUInt32LE(1, 12);
  settings.writeUInt32LE(Math.min(interest.snaplen, KERNEL_MAX_SNAPLEN), 16);
  b.update(fds.settings, u32(0), settings, BPF_ANY);
  clearMap(fds.addresses, REFLECT_KEY);
  clearMap(fds.ports, 2);
  const one = Buffer.from([1]);
  const fits = <T>(list: T[] | null): T[] | null => (list && list.length <= KERNEL_CAPTURE_ENTRIES ? list : null);
  const addresses = fits(interest.addresses);
  const ports = fits(interest.ports);
  for (const a of addresses ?? []) b.update(fds.addresses, addressKey(a), one, BPF_ANY);
  for (const p of ports ?? []) {
    const k = Buffer.alloc(2);
    k.writeUInt16LE(p, 0); // the program compares host-order ports
    b.update(fds.ports, k, one, BPF_ANY);
  }
  settings.writeUInt32LE(1, 0);
  settings.writeUInt32LE(interest.protocols & KERNEL_PROTOCOL_BITS, 4);
  settings.writeUInt32LE(addresses ? 0 : 1, 8);
  settings.writeUInt32LE(ports ? 0 : 1, 12);
  settings.writeUInt32LE(Math.min(interest.snaplen, KERNEL_MAX_SNAPLEN), 16);
  b.update(fds.settings, u32(0), settings, BPF_ANY);
}

/** The protocol bits the program handles (tcp, udp, icmp); "other" packets always take the user-space path. */
const KERNEL_PROTOCOL_BITS = 7;

function addressKey(raw: Uint8Array): Buffer {
  if (raw.length === 16) return Buffer.from(raw);
  const k = Buffer.alloc(REFLECT_KEY);
  k[10] = 0xff;
  k[11] = 0xff;
  k.set(raw, 12);
  return k;
}

function clearMap(fd: number, keySize: number): void {
  const b = libbpf();
  const key = Buffer.alloc(keySize);
  while (b.nextKey(fd, null, key)) b.remove(fd, key);
}
