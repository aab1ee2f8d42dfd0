/**
 * Loading the tc program: open the object (object.ts) from memory, size its maps, load it (the kernel's verifier runs
 * here), and attach it to the egress hook of the engine's device. Nothing is pinned: the program and its maps live
 * as long as the device's clsact qdisc holds the program and this process holds the object, so deleting the device
 * (veth.ts) removes everything a killed engine left.
 */
import { MAX_REFLECT_ADDRESSES } from '../../config/intercept-config.ts';
import { libbpf, BPF_TC_EGRESS, type TcFilter } from './libbpf.ts';
import {
  allowedPortsEntries,
  DEFAULT_KERNEL_FLOWS,
  KERNEL_CAPTURE_ENTRIES,
  KERNEL_CAPTURE_RING_BYTES,
  KERNEL_STATS_PROTOCOLS,
  MAP,
} from './maps.ts';
import { KERNEL_MAPPED_FLOW_ENTRIES } from './mapped-flows.ts';
import { BPF_OBJECT_NAME, readBpfObject } from './object.ts';

/** The program's function name in native/reflect_tc.bpf.c. */
export const PROGRAM_NAME = 'reflect';

export interface LoadedProgram {
  /** libbpf's object handle; closing it releases our references (the attached program stays until its qdisc goes). */
  object: unknown;
  programFd: number;
  mapFds: Record<keyof typeof MAP, number>;
}

/** Open and load the program (the verifier runs), without attaching it. Throws RetroflectError. */
export function loadProgram(): LoadedProgram {
  const b = libbpf();
  const object = b.openObject(readBpfObject(), BPF_OBJECT_NAME);
  try {
    b.setMaxEntries(object, MAP.reflect, MAX_REFLECT_ADDRESSES);
    b.setMaxEntries(object, MAP.counts, MAX_REFLECT_ADDRESSES * KERNEL_STATS_PROTOCOLS.length);
    b.setMaxEntries(object, MAP.flows, DEFAULT_KERNEL_FLOWS);
    b.setMaxEntries(object, MAP.allowedPorts, allowedPortsEntries(MAX_REFLECT_ADDRESSES));
    b.setMaxEntries(object, MAP.mappedFlows, KERNEL_MAPPED_FLOW_ENTRIES);
    b.setMaxEntries(object, MAP.captureAddresses, KERNEL_CAPTURE_ENTRIES);
    b.setMaxEntries(object, MAP.capturePorts, KERNEL_CAPTURE_ENTRIES);
    b.setMaxEntries(object, MAP.captureRing, KERNEL_CAPTURE_RING_BYTES);
    // One scratch record per CPU, indexed by the CPU number (bpf_get_smp_processor_id).
    b.setMaxEntries(object, MAP.captureScratch, b.possibleCpus());
    b.loadObject(object);
    return {
      object,
      programFd: b.programFd(object, PROGRAM_NAME),
      mapFds: {
        reflect: b.mapFd(object, MAP.reflect),
        counts: b.mapFd(object, MAP.counts),
        flows: b.mapFd(object, MAP.flows),
        settings: b.mapFd(object, MAP.settings),
        captureAddresses: b.mapFd(object, MAP.captureAddresses),
        capturePorts: b.mapFd(object, MAP.capturePorts),
        captureRing: b.mapFd(object, MAP.captureRing),
        captureScratch: b.mapFd(object, MAP.captureScratch),
        captureLost: b.mapFd(object, MAP.captureLost),
        portRoles: b.mapFd(object, MAP.portRoles),
        allowedPorts: b.mapFd(object, MAP.allowedPorts),
        mappedFlows: b.mapFd(object, MAP.mappedFlows),
      },
    };
  } catch (err) {
    b.closeObject(object);
    throw err;
  }
}

/** Attach the loaded program to the egress of `ifindex` (creating its clsact qdisc). Returns the filter it became. */
export function attachProgram(p: LoadedProgram, ifindex: number): TcFilter {
  return libbpf().attachTc(ifindex, BPF_TC_EGRESS, p.programFd);
}

/** Whether `filter` still holds our program on the egress of `ifindex` (a deleted qdisc or filter: false). */
export function programAttached(filter: TcFilter, ifindex: number): boolean {
  return libbpf().queryTc(ifindex, BPF_TC_EGRESS, filter.handle, filter.priority) === filter.programId;
}

export function closeProgram(p: LoadedProgram): void {
  libbpf().closeObject(p.object);
}

/** Whether the program can be loaded here (kernel, privileges, library, this build's object); the reason if not. */
export function probeProgram(): { ok: true } | { ok: false; reason: string } {
  try {
    closeProgram(loadProgram());
    return { ok: true };
  } catch (err) {
    return { ok: false, reason: err instanceof Error ? err.message : String(err) };
  }
}
