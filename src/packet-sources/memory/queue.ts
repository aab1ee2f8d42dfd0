/**
 * The memory backend's wire: a queue of packets in shared memory with one writer thread and one reader thread
 * (the test or tool on the main thread, the packet worker on the other), so both halves of the backend see the same
 * packets without any OS device. Fixed slots, no allocation per packet; a full queue refuses a packet (the caller
 * counts it), as a full driver queue would.
 *
 * Layout: Int32 head (packets written) and tail (packets read), then `slots` slots of SLOT_HEADER_BYTES + the
 * largest packet: u32 length, u8 outbound, 3 bytes padding, u32 interface index, packet bytes.
 */

/** Slots per queue. */
export const MEMORY_QUEUE_SLOTS = { DEFAULT: 1024, MIN: 1, MAX: 65536 } as const;
/** Largest packet a slot holds; the default fits an Ethernet-MTU packet, the maximum any IP packet. */
export const MEMORY_PACKET_BYTES = { DEFAULT: 2048, MIN: 64, MAX: 65535 } as const;

/** Atomics.waitAsync (Node 16+), which the TypeScript lib of this project (before ES2024) does not declare. */
const waitAsync = (Atomics as unknown as {
  waitAsync(a: Int32Array, index: number, value: number, timeoutMs: number): { value: Promise<string> | string };
}).waitAsync;

const HEAD = 0;
const TAIL = 1;
const CONTROL_BYTES = 8;
const SLOT_HEADER_BYTES = 12;

/** A packet as it stands in a queue: its bytes, direction (true: this host sent it) and interface index. */
export interface QueuedPacket {
  bytes: Buffer;
  outbound: boolean;
  ifIndex: number;
}

export interface PacketQueueShape {
  slots: number;
  packetBytes: number;
}

function checkShape({ slots, packetBytes }: PacketQueueShape): void {
  const ok = (v: number, l: { MIN: number; MAX: number }): boolean => Number.isInteger(v) && v >= l.MIN && v <= l.MAX;
  if (!ok(slots, MEMORY_QUEUE_SLOTS)) throw new RangeError(`memory queue slots ${slots} is outside ${MEMORY_QUEUE_SLOTS.MIN}..${MEMORY_QUEUE_SLOTS.MAX}`);
  if (!ok(packetBytes, MEMORY_PACKET_BYTES)) throw new RangeError(`memory packet size ${packetBytes} is outside ${MEMORY_PACKET_BYTES.MIN}..${MEMORY_PACKET_BYTES.MAX}`);
}

export class PacketQueue {
  readonly buffer: SharedArrayBuffer;
  readonly slots: number;
  readonly packetBytes: number;
  private readonly control: Int32Array;
  private readonly data: Buffer;
  private readonly slotBytes: number;

  /** A new queue of `shape`, or a view of the queue in `buffer` (made by another thread's PacketQueue). */
  constructor(shape: PacketQueueShape | { buffer: SharedArrayBuffer; packetBytes: number }) {
    const packetBytes = shape.packetBytes;
    this.slotBytes = SLOT_HEADER_BYTES + packetBytes;
    if ('buffer' in shape) {
      this.buffer = shape.buffer;
      this.slots = (shape.buffer.byteLength - CONTROL_BYTES) / this.slotBytes;
    } else {
      checkShape(shape);
      this.slots = shape.slots;
      this.buffer = new SharedArrayBuffer(CONTROL_BYTES + this.slots * this.slotBytes);
    }
    this.packetBytes = packetBytes;
    this.control = new Int32Array(this.buffer, 0, 2);
    this.data = Buffer.from(this.buffer, CONTROL_BYTES);
  }

  /** Packets waiting to be read. */
  get length(): number {
    return Atomics.load(this.control, HEAD) - Atomics.load(this.control, TAIL);
  }

  /** Append a packet; false when the queue is full (the packet is not queued). Throws when it cannot fit a slot. */
  push(src: Uint8Array, outbound: boolean, ifIndex: number): boolean {
    if (src.length > this.packetBytes) throw new RangeError(`a ${src.length}-byte packet does not fit this queue's ${this.packetBytes}-byte slots`);
    const head = Atomics.load(this.control, HEAD);
    if (head - Atomics.load(this.control, TAIL) >= this.slots) return false;
    const at = (head % this.slots) * this.slotBytes;
    this.data.writeUInt32LE(src.length, at);
    this.data[at + 4] = outbound ? 1 : 0;
    this.data.writeUInt32LE(ifIndex >>> 0, at + 8);
    this.data.set(src, at + SLOT_HEADER_BYTES);
    Atomics.store(this.control, HEAD, head + 1);
    Atomics.notify(this.control, HEAD);
    return true;
  }

  /**
   * Take the oldest packet: `into` gets its bytes at `off` and the return is its length with its direction and
   * interface, or null when the queue is empty.
   */
  shiftInto(into: Buffer, off: number): { length: number; outbound: boolean; ifIndex: number } | null {
    const tail = Atomics.load(this.control, TAIL);
    if (Atomics.load(this.control, HEAD) === tail) return null;
    const at = (tail % this.slots) * this.slotBytes;
    const length = this.data.readUInt32LE(at);
    const outbound = this.data[at + 4] === 1;
    const ifIndex = this.data.readUInt32LE(at + 8);
    this.data.copy(into, off, at + SLOT_HEADER_BYTES, at + SLOT_HEADER_BYTES + length);
    Atomics.store(this.control, TAIL, tail + 1);
    return { length, outbound, ifIndex };
  }

  /** Take the oldest packet as a copy, or null when the queue is empty. */
  shift(): QueuedPacket | null {
    const into = Buffer.alloc(this.packetBytes);
    const got = this.shiftInto(into, 0);
    return got && { bytes: into.subarray(0, got.length), outbound: got.outbound, ifIndex: got.ifIndex };
  }

  /** Block this thread until a packet is queued, wake() is called, or `timeoutMs` passes (worker threads only). */
  waitSync(timeoutMs: number): void {
    const head = Atomics.load(this.control, HEAD);
    if (head !== Atomics.load(this.control, TAIL)) return;
    Atomics.wait(this.control, HEAD, head, Math.max(0, timeoutMs));
  }

  /** Resolve once a packet is queued or `timeoutMs` passes (for the main thread, which must not block). */
  async wait(timeoutMs: number): Promise<void> {
    const head = Atomics.load(this.control, HEAD);
    if (head !== Atomics.load(this.control, TAIL)) return;
    // A pending waitAsync does not keep Node's event loop alive; the timer does, for as long as we wait.
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, Math.max(0, timeoutMs))));
    await Promise.race([waitAsync(this.control, HEAD, head, Math.max(0, timeoutMs)).value, timeout]);
    clearTimeout(timer);
  }

  /** Make a waitSync() blocked in another thread return now. */
  wake(): void {
    Atomics.notify(this.control, HEAD);
  }
}
