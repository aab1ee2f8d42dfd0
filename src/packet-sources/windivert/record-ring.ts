/**
 * A ring of byte records in a SharedArrayBuffer for exactly one writer thread and one reader thread (the packet
 * worker and the main thread's app gate pass held packets and flow verdicts through two of them). A record is a
 * 32-bit length and its bytes, padded to 4; a record that does not fit before the end wraps to the start (a length
 * of WRAP marks the jump). `write` fails when the ring is full: the writer decides what that means.
 *
 * Header (Int32): [0] read position, [1] write position, [2] records written (the reader may Atomics.wait on it).
 */
const HEADER_BYTES = 16;
const READ = 0;
const WRITE = 1;
const WRITTEN = 2;
const WRAP = -1;

export class RecordRing {
  readonly buffer: SharedArrayBuffer;
  private readonly head: Int32Array;
  private readonly bytes: Uint8Array;
  private readonly view: DataView;
  private readonly size: number;

  /** A new ring of `capacity` bytes (rounded up to 4), or the ring in an existing buffer. */
  constructor(capacityOrBuffer: number | SharedArrayBuffer) {
    const bytes = (capacity: number): number => HEADER_BYTES + Math.ceil(capacity / 4) * 4;
    this.buffer =
      typeof capacityOrBuffer === 'number' ? new SharedArrayBuffer(bytes(capacityOrBuffer)) : capacityOrBuffer;
    this.head = new Int32Array(this.buffer, 0, 4);
    this.size = this.buffer.byteLength - HEADER_BYTES;
    this.bytes = new Uint8Array(this.buffer, HEADER_BYTES, this.size);
    this.view = new DataView(this.buffer, HEADER_BYTES, this.size);
  }

  /** Records written so far (wrapping at 2^31): what a reader waits on. */
  get written(): number {
    return Atomics.load(this.head, WRITTEN);
  }

  /** The Int32Array and index to Atomics.wait / waitAsync on for new records. */
  get signal(): { array: Int32Array; index: number } {
    return { array: this.head, index: WRITTEN };
  }

  /**
   * Append one record made of `parts` (copied back to back). Returns false, writing nothing, when it does not fit.
   * Writer thread only.
   */
  write(...parts: Uint8Array[]): boolean {
    let len = 0;
    for (const p of parts) len += p.length;
    const need = 4 + Math.ceil(len / 4) * 4;
    const r = Atomics.load(this.head, READ);
    let w = Atomics.load(this.head, WRITE);
    const free = r > w ? r - w - 4 : this.size - w + r - 4;
    if (need > free) return false;
    if (w + need > this.size) {
      // Not enough room before the end: mark the jump and start over, if the start has room.
      if (need >= r) return false; // the new write position must stay below the reader's (equal reads as empty)
      if (w + 4 <= this.size) this.view.setInt32(w, WRAP, true);
      w = 0;
    }
    this.view.setInt32(w, len, true);
    let at = w + 4;
    for (const p of parts) {
      this.bytes.set(p, at);
      at += p.length;
    }
    Atomics.store(this.head, WRITE, (w + need) % this.size);
    Atomics.add(this.head, WRITTEN, 1);
    Atomics.notify(this.head, WRITTEN);
    return true;
  }

  /** Take the oldest record (a copy), or null when the ring is empty. Reader thread only. */
  read(): Uint8Array | null {
    let r = Atomics.load(this.head, READ);
    const w = Atomics.load(this.head, WRITE);
    if (r === w) return null;
    if (r + 4 > this.size || this.view.getInt32(r, true) === WRAP) r = 0;
    const len = this.view.getInt32(r, true);
    const out = this.bytes.slice(r + 4, r + 4 + len);
    Atomics.store(this.head, READ, (r + 4 + Math.ceil(len / 4) * 4) % this.size);
    return out;
  }
}
