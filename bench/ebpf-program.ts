/**
 * What the ebpf backend's tc program (native/reflect_tc.bpf.c) costs per packet by itself, measured in the kernel
 * with BPF_PROG_TEST_RUN (libbpf's bpf_prog_test_run_opts through koffi): the built program is loaded as the engine
 * loads it (src/packet-sources/ebpf/program.ts), both ends of a TCP packet (1400 bytes of payload) are reflect
 * addresses (every repeat runs on the same bytes, which the program swaps in place), and it runs 1,000,000 times per
 * round. Cases: capture off; a capture whose filter matches nothing (the settings lookup and the filter check); a
 * capture of every packet at the default snap length (the copy into the capture ring; fewer repeats, so the ring
 * never fills, drained between rounds); capture off with port allow lists on both addresses that allow the packet
 * (one address's list names the destination port, the other's the source port, so the packet, which alternates
 * between them, is decided by one bitset load and by two in turn, as a flow's two directions are). Rounds alternate
 * between cases (this machine's speed drifts); medians of 5.
 * Not measured here: the redirect itself, the stack's work around it, and cross-CPU effects (one CPU runs every
 * repeat). Needs root and a kernel that loads the program. Takes a few seconds.
 */
import type { BenchResult } from './types.ts';
import { libbpf } from '../src/packet-sources/ebpf/libbpf.ts';
import { closeProgram, loadProgram } from '../src/packet-sources/ebpf/program.ts';
import { KernelMaps, REFLECT_PORT_LIST, writeCaptureInterest } from '../src/packet-sources/ebpf/maps.ts';
import type { CaptureInterest } from '../src/packet/capture-interest.ts';
import { AllowedPortSet } from '../src/packet/allowed-ports.ts';

const ROUNDS = 5;
const REPEAT = 1_000_000;
/** Copies into the 4 MiB ring per round: well below what fills it at the default snap length. */
const REPEAT_COPYING = 5_000;
const PAYLOAD = 1400;
const TC_ACT_REDIRECT = 7;

type Case = 'capture off' | 'capture matching nothing' | 'capture of every packet (snap 256)' | 'port lists (allowed)';
const MATCHING_NOTHING: CaptureInterest = { reflected: true, protocols: 7, addresses: null, ports: [1], snaplen: 256 };
const EVERY_PACKET: CaptureInterest = { reflected: true, protocols: 7, addresses: null, ports: null, snaplen: 256 };
/** Per case: its name, what the captures want, repeats, and whether the addresses have port lists. */
const CASES: [Case, CaptureInterest | null, number, boolean][] = [
  ['capture off', null, REPEAT, false],
  ['capture matching nothing', MATCHING_NOTHING, REPEAT, false],
  ['capture of every packet (snap 256)', EVERY_PACKET, REPEAT_COPYING, false],
  ['port lists (allowed)', null, REPEAT, true],
];

/** Ethernet + IPv4 + TCP (ACK) + payload, from 203.0.113.5:40000 to 192.0.2.1:5201. */
function tcpFrame(): Buffer {
  const f = Buffer.alloc(14 + 20 + 20 + PAYLOAD);
  f.writeUInt16BE(0x0800, 12);
  f[14] = 0x45;
  f.writeUInt16BE(20 + 20 + PAYLOAD, 16);
  f[22] = 64;
  f[23] = 6;
  Buffer.from([203, 0, 113, 5]).copy(f, 26);
  Buffer.from([192, 0, 2, 1]).copy(f, 30);
  f.writeUInt16BE(40000, 34);
  f.writeUInt16BE(5201, 36);
  f[46] = 0x50;
  f[47] = 0x10;
  return f;
}

export async function run(): Promise<BenchResult[]> {
  const b = libbpf();
  const program = loadProgram();
  try {
    const maps = new KernelMaps(program.mapFds);
    maps.setReflect('192.0.2.1', 0, 0, true);
    maps.setReflect('203.0.113.5', 1, 0, true);
    // 192.0.2.1 allows its destination port 5201; 203.0.113.5 (destination port 5201 too) its source port 40000.
    const allowed = new AllowedPortSet();
    allowed.replace([
      { slot: 0, open: [{ port: 5201, protocol: 'tcp' }], reply: [] },
      { slot: 1, open: [{ port: 40000, protocol: 'tcp' }], reply: [] },
    ]);
    maps.writeAllowedPorts(0, allowed.slotBits(0));
    maps.writeAllowedPorts(1, allowed.slotBits(1));
    const lists = (on: boolean): void => {
      maps.setReflect('192.0.2.1', 0, on ? REFLECT_PORT_LIST : 0, false);
      maps.setReflect('203.0.113.5', 1, on ? REFLECT_PORT_LIST : 0, false);
    };
    const capture = { settings: program.mapFds.settings, addresses: program.mapFds.captureAddresses,
      ports: program.mapFds.capturePorts, ring: program.mapFds.captureRing, lost: program.mapFds.captureLost };
    const ring = b.openRingBuffer(program.mapFds.captureRing, () => undefined);
    const frame = tcpFrame();
    const out = Buffer.alloc(frame.length + 64);
    const once = (repeat: number): number => {
      const { verdict, durationNs } = b.testRun(program.programFd, frame, out, repeat);
      if (verdict !== TC_ACT_REDIRECT) throw new Error(`the program did not reflect the packet (verdict ${verdict})`);
      return durationNs;
    };
    const samples = new Map<Case, number[]>(CASES.map(([c]) => [c, []]));
    for (let round = 0; round < ROUNDS; round++) {
      for (const [name, interest, repeat, withLists] of CASES) {
        writeCaptureInterest(capture, interest);
        lists(withLists);
        samples.get(name)!.push(once(repeat));
        ring.consume();
      }
    }
    lists(false);
    writeCaptureInterest(capture, null);
    ring.free();
    const median = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
    const off = median(samples.get('capture off')!);
    const results: BenchResult[] = [];
    for (const [name] of CASES) {
      const ns = median(samples.get(name)!);
      const note = `rounds ${samples.get(name)!.join(', ')}; ${(off / ns).toFixed(2)}x the speed of capture off`;
      results.push({ name: `tc program per packet (TCP, 1400 B): ${name}`, value: ns, unit: 'ns', note });
    }
    return results;
  } finally {
    closeProgram(program);
  }
}
