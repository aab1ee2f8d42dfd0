/**
 * The capture ring: one bounded single-producer / single-consumer byte ring in a SharedArrayBuffer per capture
 * client. The packet worker writes records (capture/record.ts) and never waits: a record that does not fit is
 * counted as dropped. The main thread reads on a timer.
 *
 * Layout: a 64-byte header of Int32 cells, then `capacity` data bytes (a power of two).
 *   cell 0 write position, cell 1 read position (both count bytes modulo 2^32; offset = position & (capacity - 1)),
 *   cell 2 records dropped because the ring was full, cell 3 records written.
 * A record never wraps: when it does not fit before the end, the writer marks the tail as padding (its size word
 * with the top bit set; the tail may be as short as 8 bytes) and starts at offset 0. Positions are published with Atomics.store after the bytes are written, so the
 * reader never sees a half-written record.
 */
import { recordBytes } from './record.ts';

const HEADER_BYTES = 64;
const W = 0;
const R = 1;
const DROPPED = 2;
const WRITTEN = 3;
/** Top bit of a size word: skip this many bytes, no record here. */
const PADDING = 0x80000000;

/** Default and bounds of one client's ring. */
export const DEFAULT_RING_BYTES = 4 * 1024 * 1024;
export const MIN_RING_BYTES = 64 * 1024;

export function createRingBuffer(capacity = DEFAULT_RING_BYTES): SharedArrayBuffer {
  if (capacity < MIN_RING_BYTES || (capacity & (capacity - 1)) !== 0 || capacity > 1 << 30) {
    throw new RangeError(`capture ring capacity must be a power of two from ${MIN_RING_BYTES} to 2^30, got ${capacity}`);
  }
  return new SharedArrayBuffer(HEADER_BYTES + capacity);
}

class RingViews {
  readonly cells: Int32Array;
  readonly bytes: Uint8Array;
  readonly view: DataView;
  readonly capacity: number;
  readonly mask: number;
  constructor(buffer: SharedArrayBuffer) {
    this.capacity = buffer.byteLength - HEADER_BYTES;
    this.mask = this.capacity - 1;
    this.cells = new Int32Array(buffer, 0, HEADER_BYTES / 4);
    this.bytes = new Uint8Array(buffer, HEADER_BYTES, this.capacity);
    this.view = new DataView(buffer, HEADER_BYTES, this.capacity);
  }
}

/** Worker side. Hot path: `reserve` + byte writes + `commit`, no allocation. */
export class RingWriter extends RingViews {
  /** Where the record being written starts in `bytes` (valid between reserve and commit). */
  private pending = 0;
  private pendingSize = 0;
  private w: number;

  constructor(buffer: SharedArrayBuffer) {
    super(buffer);
    this.w = Atomics.load(this.cells, W) >>> 0;
  }

  /** Room for a record with `captured` bytes: its offset in `bytes`, or -1 (counted as dropped) when full. */
  reserve(captured: number): number {
    const size = recordBytes(captured);
    if (size > this.capacity / 2) return this.drop();
    const r = Atomics.load(this.cells, R) >>> 0;
    let w = this.w;
    const used = (w - r) >>> 0;
    let off = w & this.mask;
    const tail = this.capacity - off;
    if (size > tail) {
      // Pad to the end and start over at 0, if both the padding and the record fit.
      if (used + tail + size > this.capacity) return this.drop();
      this.view.setUint32(off, (tail | PADDING) >>> 0, true);
      w = (w + tail) >>> 0;
      this.w = w;
      Atomics.store(this.cells, W, w | 0);
      off = 0;
    } else if (used + size > this.capacity) {
      return this.drop();
    }
    this.pending = off;
    this.pendingSize = size;
    return off;
  }

  commit(): void {
    this.w = (this.w + this.pendingSize) >>> 0;
    Atomics.store(this.cells, W, this.w | 0);
    Atomics.store(this.cells, WRITTEN, (Atomics.load(this.cells, WRITTEN) + 1) | 0);
  }

  /** Count `n` records lost before they reached this ring (they show as dropped, like those the ring had no room for). */
  countDropped(n: number): void {
    Atomics.add(this.cells, DROPPED, n | 0);
  }

  private drop(): number {
    Atomics.store(this.cells, DROPPED, (Atomics.load(this.cells, DROPPED) + 1) | 0);
    return -1;
  }
}

/** Main-thread side. */
export class RingReader extends RingViews {
  /**
   * Copy out whole records, at most `maxRecords` and about `maxBytes` (at least one record), and free their space.
   * Returns the concatenated records (possibly empty) and how many there are.
   */
  read(maxRecords: number, maxBytes: number): { data: Buffer; records: number } {
    let r = Atomics.load(this.cells, R) >>> 0;
    const w = Atomics.load(this.cells, W) >>> 0;
    const parts: Uint8Array[] = [];
    let bytes = 0;
    let records = 0;
    while (r !== w && records < maxRecords) {
      const off = r & this.mask;
      const word = this.view.getUint32(off, true);
      const size = word & ~PADDING;
      if ((word & PADDING) === 0) {
        if (records > 0 && bytes + size > maxBytes) break;
        parts.push(this.bytes.slice(off, off + size));
        bytes += size;
        records++;
      }
      r = (r + size) >>> 0;
    }
    Atomics.store(this.cells, R, r | 0);
    return { data: Buffer.concat(parts, bytes), records };
  }

  /** Records the worker dropped because this ring was full (cumulative). */
  dropped(): number {
    return Atomics.load(this.cells, DROPPED) >>> 0;
  }

  written(): number {
    return Atomics.load(this.cells, WRITTEN) >>> 0;
  }
}
