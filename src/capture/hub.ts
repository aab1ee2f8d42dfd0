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
/**
 * A session's rate is a token bucket: `rate` tokens a second, fractional, so 5/s means one record every 200 ms and not
 * one per poll. The bucket holds at most this long's worth (and at least one record), so an idle spell buys no burst.
 */
const RATE_BURST_MS = 100;
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
  /**
   * Settles once this capture is in force for every packet sent from then on: at once where every packet passes the
   * worker (it takes a new capture before it decides its next packet), on ebpf once the worker wrote the kernel's
   * capture maps. Never rejects (the engine stopping settles it too).
   */
  taken: Promise<void> = Promise.resolve();
  private closed = false;
  /** Records this session may still be handed now (fractional; see RATE_BURST_MS). */
  private tokens: number;
  constructor(
    readonly id: number,
    readonly spec: CaptureSpec,
    readonly reader: RingReader,
    readonly opts: CaptureOptions,
    private readonly hub: CaptureHub,
  ) {
    this.tokens = this.burst();
  }

  private burst(): number {
    return Math.max(1, (this.opts.rate * RATE_BURST_MS) / 1000);
  }

  /** Add the tokens `elapsedMs` earns and move as many whole records as the bucket holds; returns how many. */
  drainAtRate(elapsedMs: number): number {
    this.tokens = Math.min(this.burst(), this.tokens + (this.opts.rate * elapsedMs) / 1000);
    if (this.tokens < 1) return 0;
    const moved = this.drain(Math.floor(this.tokens));
    this.tokens -= moved;
    return moved;
  }

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

  /** `publish` hands the worker the active capture list (empty = capture off); what it returns settles when the
   *  worker applies it (nothing: at once). */
  constructor(private readonly publish: (captures: CaptureSpec[]) => Promise<void> | void) {}

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
    session.taken = this.sync();
    return session;
  }

  remove(session: CaptureSession): void {
    if (!this.sessions.delete(session.id)) return;
    this.sync();
    // Hand over everything still in the ring (a drain moves at most MAX_BYTES_PER_DRAIN at a time).
    while (session.drain(Number.MAX_SAFE_INTEGER) > 0);
  }

  /**
   * Hand the worker the same capture list again; settles once it has taken it (see `taken`). A worker that reads a
   * kernel's capture ring (ebpf) first moves what the kernel queued into the captures' rings.
   */
  flush(): Promise<void> {
    return this.sessions.size > 0 ? this.sync() : Promise.resolve();
  }

  /** The engine stops: end every capture (each gets what is still in its ring, then its end notice). */
  closeAll(): void {
    for (const s of [...this.sessions.values()]) {
      s.close();
      s.opts.onEnd?.();
    }
  }

  private sync(): Promise<void> {
    const taken = Promise.resolve(this.publish([...this.sessions.values()].map((s) => s.spec)));
    if (this.sessions.size > 0 && this.timer === null) {
      this.lastPoll = Date.now();
      this.timer = setInterval(() => this.poll(), POLL_MS);
      this.timer.unref();
    } else if (this.sessions.size === 0 && this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
    }
    return taken;
  }

  private poll(): void {
    const now = Date.now();
    const elapsed = Math.max(0, now - this.lastPoll);
    this.lastPoll = now;
    for (const s of this.sessions.values()) {
      try {
        if (s.opts.ready && !s.opts.ready()) continue;
        s.drainAtRate(elapsed);
      } catch {
        // A sink that throws (its connection vanished) must not stop the others; its connection closes it.
      }
    }
  }
}
