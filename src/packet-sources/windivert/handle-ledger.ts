/**
 * WinDivert handle ledger, shared by both threads: a small table in shared memory of the handles the main thread
 * (host.ts) opened and nobody has closed yet, so whichever thread gets to a handle last closes it exactly once,
 * even when the worker (source.ts) died.
 */
import { ErrorCode, RetroflectError } from '../../errors.ts';

/** Ledger slot states. */
const SlotState = { Free: 0, Open: 1, Closed: 2, Writing: 3 } as const;
/** Handles open at once are few (current + one being drained); 64 leaves room for fast successive changes. */
const LEDGER_SLOTS = 64;
/**
 * A live change waits while this many handles are still open (the worker drains and closes old ones on its own
 * thread), so a burst of changes faster than the worker can drain slows down instead of running out of slots.
 */
export const MAX_OPEN_BEFORE_SWITCH = LEDGER_SLOTS / 2;

/**
 * Shared record of the handles the main thread opened and nobody has closed yet. A handle is closed by whoever
 * moves its slot from Open to Closed (an atomic compare-exchange), so a handle value is never closed twice — which
 * matters on Windows, where a closed handle's number may be reused by an unrelated object.
 */
export class HandleLedger {
  readonly buffer: SharedArrayBuffer;
  private readonly states: Int32Array;
  private readonly handles: BigInt64Array;

  constructor(buffer?: SharedArrayBuffer) {
    this.buffer = buffer ?? new SharedArrayBuffer(LEDGER_SLOTS * (4 + 8));
    this.handles = new BigInt64Array(this.buffer, 0, LEDGER_SLOTS);
    this.states = new Int32Array(this.buffer, LEDGER_SLOTS * 8, LEDGER_SLOTS);
  }

  add(handle: number): void {
    for (let i = 0; i < LEDGER_SLOTS; i++) {
      const s = Atomics.load(this.states, i);
      if (s !== SlotState.Free && s !== SlotState.Closed) continue;
      if (Atomics.compareExchange(this.states, i, s, SlotState.Writing) !== s) continue;
      Atomics.store(this.handles, i, BigInt(handle));
      Atomics.store(this.states, i, SlotState.Open);
      return;
    }
    throw new RetroflectError(ErrorCode.INTERNAL, 'Too many WinDivert handles are open at once.', {
      hint: 'Wait for earlier config changes to finish, then retry.',
    });
  }

  /** True when the caller now owns closing `handle` (it was open and nobody claimed it before). */
  claim(handle: number): boolean {
    const h = BigInt(handle);
    for (let i = 0; i < LEDGER_SLOTS; i++) {
      if (Atomics.load(this.states, i) !== SlotState.Open || Atomics.load(this.handles, i) !== h) continue;
      if (Atomics.compareExchange(this.states, i, SlotState.Open, SlotState.Closed) === SlotState.Open) return true;
    }
    return false;
  }

  /** Handles still open. */
  open(): number[] {
    const out: number[] = [];
    for (let i = 0; i < LEDGER_SLOTS; i++) {
      if (Atomics.load(this.states, i) === SlotState.Open) out.push(Number(Atomics.load(this.handles, i)));
    }
    return out;
  }
}
