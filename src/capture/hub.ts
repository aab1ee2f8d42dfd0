/**
 * The main thread's side of capture: one `CaptureSession` per capturing client, each with its own ring (so a slow
 * client only ever loses its own records), the list of active captures kept in step with the packet worker, and
 * one timer that moves records from the rings to the sessions while any capture is active.
 */
import { ErrorCode, RetroflectError } from '../errors.ts';
import { compileCaptureSpec, type CaptureFilter, type CaptureSpec } from './filter.ts';
import { createRingBuffer, DEFAULT_RING_BYTES, RingReader } from './ring.ts';

/** Limits (docs/protocol.md). */
export const MAX_CAPTURE_CLIENTS = 8;
/** Records per second one client receives at most; beyond that its ring fills and the worker counts drops. */
export const DEFAULT_CAPTURE_RATE = 20_000;
export const MAX_CAPTURE_RATE = 100_000;
/** How often rings are drained. */
const POLL_MS = 20;
/** Bytes of records handed to a session per drain at most (one notification line stays well under a few MiB). */
const MAX_BYTES_PER_DRAIN = 512 * 1024;

export interface CaptureCounts {
  /** Records delivered to the client. */
  captured: number;
  /** Matching packets the client did not get because its ring was full. */
  dropped: number;
}

export interface CaptureOptions {
  filter: Required<CaptureFilter>;
  snaplen: number;
  /** Records per second at most. */
  rate: number;
  /** Called with whole records (capture/record.ts) and the drop count so far. */
  onRecords: (records: Buffer, count: number, dropped: number) => void;
  /** Called once when the capture ends because the engine stops. */
  onEnd?: () => void;
  /**
   * Whether the client can take more now. While it cannot, its records stay in its ring (which then fills, and the
   * worker counts drops): a slow reader costs only its own records.
   */
  ready?: () => boolean;
}

export class CaptureSession {
  captured = 0;
  private closed = false;
  constructor(
    readonly id: number,
    readonly spec: CaptureSpec,
    readonly reader: RingReader,
    readonly opts: CaptureOptions,
    private readonly hub: CaptureHub,
  ) {}

  counts(): CaptureCounts {
    return { captured: this.captured, dropped: this.reader.dropped() };
  }

  /** Stop capturing (idempotent); records still in the ring are delivered first. */
  close(): CaptureCounts {
    if (!this.closed) {
      this.closed = true;
      this.hub.remove(this);
    }
    return this.counts();
  }

  /** Move up to `budget` records to the client; returns how many. */
  drain(budget: number): number {
    const { data, records } = this.reader.read(budget, MAX_BYTES_PER_DRAIN);
    if (records === 0) return 0;
    this.captured += records;
    this.opts.onRecords(data, records, this.reader.dropped());
    return records;
  }
}

export class CaptureHub {
  private readonly sessions = new Map<number, CaptureSession>();
  private nextId = 1;
  private timer: NodeJS.Timeout | null = null;
  private lastPoll = 0;

  /** `publish` hands the worker the active capture list (empty = capture off). */
  constructor(private readonly publish: (captures: CaptureSpec[]) => void) {}

  get active(): number {
    return this.sessions.size;
  }

  open(opts: CaptureOptions): CaptureSession {
    if (this.sessions.size >= MAX_CAPTURE_CLIENTS) {
      throw new RetroflectError(ErrorCode.LIMIT_REACHED, `${MAX_CAPTURE_CLIENTS} captures are already running; that is the most one engine serves.`, {
        hint: 'Stop another capture (or trace) first.',
        details: { limit: MAX_CAPTURE_CLIENTS },
      });
    }
    const id = this.nextId++;
    const buffer = createRingBuffer(DEFAULT_RING_BYTES);
    const session = new CaptureSession(id, compileCaptureSpec(id, buffer, opts.snaplen, opts.filter), new RingReader(buffer), opts, this);
    this.sessions.set(id, session);
    this.sync();
    return session;
  }

  remove(session: CaptureSession): void {
    if (!this.sessions.delete(session.id)) return;
    this.sync();
    // Hand over everything still in the ring (a drain moves at most MAX_BYTES_PER_DRAIN at a time).
    while (session.drain(Number.MAX_SAFE_INTEGER) > 0);
  }

  /** The engine stops: end every capture. */
  closeAll(): void {
    for (const s of [...this.sessions.values()]) {
      s.close();
      s.opts.onEnd?.();
    }
  }

  private sync(): void {
    this.publish([...this.sessions.values()].map((s) => s.spec));
    if (this.sessions.size > 0 && this.timer === null) {
      this.lastPoll = Date.now();
      this.timer = setInterval(() => this.poll(), POLL_MS);
      this.timer.unref();
    } else if (this.sessions.size === 0 && this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  private poll(): void {
    const now = Date.now();
    const elapsed = Math.min(1000, Math.max(1, now - this.lastPoll));
    this.lastPoll = now;
    for (const s of this.sessions.values()) {
      try {
        if (s.opts.ready && !s.opts.ready()) continue;
        s.drain(Math.max(1, Math.ceil((s.opts.rate * elapsed) / 1000)));
      } catch {
        // A sink that throws (its connection vanished) must not stop the others; its connection closes it.
      }
    }
  }
}
