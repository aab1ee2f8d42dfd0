/**
 * Memory backend, worker half (`MemoryPacketSource`): takes packets from the host half's "stack" queue and sends
 * them back onto its "wire" queue by verdict, as a driver would:
 *   Reflect → sent back as inbound (this host receives it);
 *   Pass    → sent on unchanged, in its original direction;
 *   Drop    → not sent.
 * No OS device, no privileges: for tests and development (see host.ts).
 */
import type { InterceptConfig } from '../../config/intercept-config.ts';
import { Verdict } from '../../packet/verdicts.ts';
import { allocatePacketBatch, type MemorySourceInit, type MemorySourceUpdate, type PacketBatch, type PacketSource, type PacketSourceFactory } from '../packet-source.ts';
import { PacketQueue } from './queue.ts';

/** Packets per receive() at most. */
export const MEMORY_BATCH_CAPACITY = 64;

export class MemoryPacketSource implements PacketSource<'memory'> {
  readonly kind = 'memory' as const;
  readonly batch: PacketBatch;
  /** Packets that found the wire queue full (lost, as a full driver queue loses them). */
  sendErrors = 0;
  private readonly stack: PacketQueue;
  private readonly wire: PacketQueue;
  private closed = false;

  constructor(init: MemorySourceInit) {
    this.stack = new PacketQueue({ buffer: init.stack, packetBytes: init.packetBytes });
    this.wire = new PacketQueue({ buffer: init.wire, packetBytes: init.packetBytes });
    this.batch = allocatePacketBatch(MEMORY_BATCH_CAPACITY, MEMORY_BATCH_CAPACITY * init.packetBytes);
  }

  receive(timeoutMs: number): number {
    const b = this.batch;
    b.count = 0;
    if (this.closed) return 0;
    if (this.stack.length === 0) this.stack.waitSync(timeoutMs);
    let n = 0;
    while (n < MEMORY_BATCH_CAPACITY) {
      const off = n * this.stack.packetBytes;
      const got = this.stack.shiftInto(b.data, off);
      if (!got) break;
      b.offset[n] = off;
      b.length[n] = got.length;
      b.outbound[n] = got.outbound ? 1 : 0;
      b.ifIndex[n] = got.ifIndex;
      b.partialChecksum[n] = 0; // the queue carries whole packets: no NIC finishes a checksum here
      b.verdict[n] = Verdict.Pass;
      n++;
    }
    b.count = n;
    return n;
  }

  send(): void {
    const b = this.batch;
    for (let i = 0; i < b.count; i++) {
      const verdict = b.verdict[i];
      if (verdict === Verdict.Drop) continue;
      const outbound = verdict === Verdict.Reflect ? false : b.outbound[i] === 1;
      const bytes = b.data.subarray(b.offset[i], b.offset[i] + b.length[i]);
      if (!this.wire.push(bytes, outbound, b.ifIndex[i])) this.sendErrors++;
    }
    b.count = 0;
  }

  sendRefusal(index: number, packet: Uint8Array, length: number): void {
    if (!this.wire.push(packet.subarray(0, length), false, this.batch.ifIndex[index])) this.sendErrors++;
  }

  adopt(_cfg: InterceptConfig, _update: MemorySourceUpdate): void {
    // Nothing to change: the queues stay the same, and the data plane decides every packet by the new config.
  }

  /** The host half owns the queues; the worker just stops using them. */
  close(): void {
    this.closed = true;
  }
}

export const createMemoryPacketSource: PacketSourceFactory<'memory'> = (init) => new MemoryPacketSource(init);
