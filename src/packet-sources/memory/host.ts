/**
 * Memory backend, main-thread half (`MemoryHostBackend`): a packet backend with no OS behind it, for tests and
 * development (like wireguard-go's tun/tuntest). It never runs in a shipped engine: registry.ts creates its worker
 * half when an engine is started with it, but no platform picks it. Two queues in shared memory stand in for the
 * network stack: `inject()` hands the worker a packet as a driver would (outbound: this host sent it; inbound: it
 * arrived), and `sent()`/`nextSent()` read what the worker sent back (source.ts). So the whole engine — main
 * thread, packet worker, data plane — runs without root, devices, Wine or a driver.
 */
import type { InterceptConfig } from '../../config/intercept-config.ts';
import type { HostBackend, MemorySourceInit, MemorySourceUpdate, PlanStep } from '../packet-source.ts';
import { MEMORY_PACKET_BYTES, MEMORY_QUEUE_SLOTS, PacketQueue, type QueuedPacket } from './queue.ts';

/** The interface index every injected packet carries unless told otherwise. */
export const MEMORY_IF_INDEX = 1;

export interface MemoryHostOptions {
  /** Slots per queue (MEMORY_QUEUE_SLOTS). */
  slots?: number;
  /** Largest packet (MEMORY_PACKET_BYTES). */
  packetBytes?: number;
}

export class MemoryHostBackend implements HostBackend<'memory'> {
  readonly kind = 'memory' as const;
  /** Packets the "stack" hands the backend (the worker reads them). */
  private readonly stack: PacketQueue;
  /** Packets the backend sent back (the worker writes them). */
  private readonly wire: PacketQueue;
  private started = false;
  /** Every config start() and apply() were given, in order (what the host would have been set up for). */
  readonly applied: InterceptConfig[] = [];

  constructor(opts: MemoryHostOptions = {}) {
    const shape = { slots: opts.slots ?? MEMORY_QUEUE_SLOTS.DEFAULT, packetBytes: opts.packetBytes ?? MEMORY_PACKET_BYTES.DEFAULT };
    this.stack = new PacketQueue(shape);
    this.wire = new PacketQueue(shape);
  }

  plan(): PlanStep[] {
    return [{ action: 'create in-memory queues', detail: `${this.stack.slots} slots of ${this.stack.packetBytes} bytes each way (test backend: no host change)` }];
  }

  async start(cfg: InterceptConfig): Promise<MemorySourceInit> {
    this.started = true;
    this.applied.push(cfg);
    return { kind: 'memory', stack: this.stack.buffer, wire: this.wire.buffer, packetBytes: this.stack.packetBytes };
  }

  async apply(_prev: InterceptConfig, next: InterceptConfig): Promise<MemorySourceUpdate> {
    this.applied.push(next);
    return { kind: 'memory' };
  }

  /** Hand the worker a packet as a driver would; false when the queue is full (the packet is lost). */
  inject(packet: Uint8Array, opts: { outbound: boolean; ifIndex?: number }): boolean {
    return this.stack.push(packet, opts.outbound, opts.ifIndex ?? MEMORY_IF_INDEX);
  }

  /** Packets the worker has sent back so far, oldest first (each taken once). */
  sent(): QueuedPacket[] {
    const out: QueuedPacket[] = [];
    for (let p = this.wire.shift(); p; p = this.wire.shift()) out.push(p);
    return out;
  }

  /** The next packet the worker sends back, or null if none comes within `timeoutMs`. */
  async nextSent(timeoutMs: number): Promise<QueuedPacket | null> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const p = this.wire.shift();
      if (p) return p;
      const left = end - Date.now();
      if (left <= 0) return null;
      await this.wire.wait(left);
    }
  }

  /** Packets injected and not yet taken by the worker. */
  get pending(): number {
    return this.stack.length;
  }

  describe(): Record<string, string | number> {
    return { queues: `${this.stack.slots} x ${this.stack.packetBytes} bytes`, started: this.started ? 'yes' : 'no' };
  }

  interfaceName(ifIndex: number): string {
    return `mem${ifIndex}`;
  }

  wake(): void {
    this.stack.wake();
  }

  async stop(): Promise<void> {
    this.started = false;
    this.stack.wake();
  }
}
