/**
 * The worker's reader of the tc program's capture ring (capture_ring in native/reflect_tc.bpf.c): the packets the
 * program reflected in the kernel that a running capture might want, each as a capture_record (layout below) and
 * the first bytes of the IP packet as reflected. Each record goes to a KernelPacketSink with a ParsedPacket filled
 * from the record's header: the program copies only packets it parsed whole, so a copy cut short by the snap length
 * still says its family, protocol and ports. libbpf's ring_buffer reads the ring (shared memory: no system call per
 * record) and calls back into this thread from within drain().
 */
import koffi from 'koffi';
import { libbpf, type RingBufferHandle } from './libbpf.ts';
import { KERNEL_MAX_SNAPLEN } from './maps.ts';
import { IPV4_DST, IPV4_SRC, IPV6_DST, IPV6_SRC, ParsedPacket } from '../../packet/parse.ts';
import { packetView } from '../../packet/view.ts';
import type { KernelPacketSink } from '../packet-source.ts';

/** struct capture_record: u64 time_ns, u32 wire_len, u32 cap_len, u16 src_port, u16 dst_port, u8 family,
 *  u8 protocol, u16 pad. */
export const CAPTURE_RECORD_BYTES = 24;
const TCP = 6;
const UDP = 17;

export class CaptureRingReader {
  private readonly ring: RingBufferHandle;
  private readonly buf = Buffer.alloc(CAPTURE_RECORD_BYTES + KERNEL_MAX_SNAPLEN);
  private readonly parsed = new ParsedPacket();
  private readonly lostValue: Buffer;
  private readonly zeroKey = Buffer.alloc(4);
  private readonly cpus: number;
  /** Epoch milliseconds at CLOCK_MONOTONIC zero (bpf_ktime_get_ns and process.hrtime share that clock). */
  private readonly epochAtZeroMs = Date.now() - Number(process.hrtime.bigint()) / 1e6;
  private sink: KernelPacketSink | null = null;

  constructor(
    ringFd: number,
    private readonly lostFd: number,
    private readonly ifIndex: number,
  ) {
    const b = libbpf();
    this.cpus = b.possibleCpus();
    this.lostValue = Buffer.alloc(8 * this.cpus);
    this.parsed.view = packetView(this.buf);
    this.ring = b.openRingBuffer(ringFd, (data, size) => this.onRecord(data, size));
  }

  /** Readable (poll) while records wait. */
  get epollFd(): number {
    return this.ring.epollFd;
  }

  /** Hand every waiting record to `sink`; returns how many there were. */
  drain(sink: KernelPacketSink): number {
    this.sink = sink;
    try {
      return this.ring.consume();
    } finally {
      this.sink = null;
    }
  }

  /** Records the program could not queue so far, the ring being full (cumulative, all CPUs). */
  lost(): number {
    if (!libbpf().lookup(this.lostFd, this.zeroKey, this.lostValue)) return 0;
    let n = 0;
    for (let cpu = 0; cpu < this.cpus; cpu++) n += Number(this.lostValue.readBigUInt64LE(cpu * 8));
    return n;
  }

  close(): void {
    this.ring.free();
  }

  private onRecord(data: bigint, size: number): void {
    const sink = this.sink;
    if (!sink || size < CAPTURE_RECORD_BYTES || size > this.buf.length) return;
    const buf = this.buf;
    buf.set(new Uint8Array(koffi.view(data, size)), 0);
    const capLen = buf.readUInt32LE(12);
    if (CAPTURE_RECORD_BYTES + capLen > size) return;
    const p = this.parsed;
    const family = buf[20];
    const protocol = buf[21];
    const off = CAPTURE_RECORD_BYTES;
    p.malformed = 0;
    p.family = family;
    p.ipOffset = off;
    p.ipLength = buf.readUInt32LE(8);
    p.addressLength = family === 4 ? 4 : 16;
    p.srcOffset = off + (family === 4 ? IPV4_SRC : IPV6_SRC);
    p.dstOffset = off + (family === 4 ? IPV4_DST : IPV6_DST);
    p.protocol = protocol;
    p.fragment = false;
    p.hasTransport = true;
    const ports = protocol === TCP || protocol === UDP;
    p.srcPort = ports ? buf.readUInt16LE(16) : 0;
    p.dstPort = ports ? buf.readUInt16LE(18) : 0;
    const timeMs = this.epochAtZeroMs + Number(buf.readBigUInt64LE(0)) / 1e6;
    sink(buf, off, capLen, p.ipLength, this.ifIndex, p, timeMs);
  }
}
