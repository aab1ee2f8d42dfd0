/**
 * `capture.start` / `capture.stop` for one control connection (docs/protocol.md, "Capture"): checks the
 * parameters, opens a capture on the engine's capture port (capture/port.ts) and sends what capture/encoder.ts makes
 * of its records as `capture` notifications — pcapng bytes (base64) or packet summaries. The connection owns the
 * socket; capture/ owns what a capture contains; this owns the subscription's life and pace.
 *
 * Slow and stalled clients: while more than MAX_UNSENT_CAPTURE_BYTES wait to be sent to a client, nothing more is
 * taken from its ring, so the ring fills and the packet worker counts drops — a slow reader loses records, nothing
 * else. A client that has read nothing for CAPTURE_STALL_MS while that much was waiting has stopped reading: its
 * capture ends and its connection is closed. Neither the data plane nor other clients are affected either way.
 */
import { invalidParams } from '../error-messages.ts';
import { CAPTURE_FORMATS, CaptureEncoder, type CaptureFormat } from '../capture/encoder.ts';
import { DEFAULT_SNAPLEN, MAX_SNAPLEN, MIN_SNAPLEN, parseCaptureFilter } from '../capture/filter.ts';
import type { CaptureSession } from '../capture/hub.ts';
import { DEFAULT_CAPTURE_RATE, MAX_CAPTURE_RATE } from '../capture/hub.ts';
import { LINKTYPE_RAW } from '../capture/pcapng.ts';
import type { CapturePort } from '../capture/port.ts';
import type { CaptureStartResult } from './protocol.ts';

/** Unsent bytes on a capturing connection above which no more records are taken from its ring. */
export const MAX_UNSENT_CAPTURE_BYTES = 1024 * 1024;
/** How long a client may stay above that without reading anything before it is disconnected. */
export const CAPTURE_STALL_MS = 5000;

export type CaptureEndReason = 'stopped' | 'engineStopping' | 'slowClient';

export interface CaptureSink {
  /** Write one notification line. */
  notify(method: string, params: unknown): void;
  /** Bytes written to the connection but not yet taken by the client. */
  unsent(): number;
  /** The client is too slow: close its connection. */
  abandon(): void;
}

export class CaptureSubscription {
  private session: CaptureSession | null = null;
  private ended = false;
  private headerSent = false;
  /** Since when the client has been too far behind, and how much was unsent then (null: keeping up). */
  private behind: { since: number; unsent: number } | null = null;

  private constructor(
    private readonly encoder: CaptureEncoder,
    private readonly sink: CaptureSink,
  ) {}

  /**
   * Open the capture. `started` settles once the engine applies it (the packet worker and, on ebpf, the kernel's
   * capture maps: CaptureSession.taken), with the header sent first: a packet sent after the answer is in the capture.
   */
  static start(capture: CapturePort, params: Record<string, unknown>, sink: CaptureSink): { sub: CaptureSubscription; started: Promise<CaptureStartResult> } {
    for (const key of Object.keys(params)) {
      if (!['format', 'snaplen', 'rate', 'addresses', 'ports', 'verdicts', 'protocols'].includes(key)) {
        throw invalidParams(`Unknown parameter '${key}' (allowed: format, snaplen, rate, addresses, ports, verdicts, protocols).`, key);
      }
    }
    const format = params.format ?? 'summary';
    if (typeof format !== 'string' || !(CAPTURE_FORMATS as readonly string[]).includes(format)) throw invalidParams(`'format' must be one of ${CAPTURE_FORMATS.join(', ')}.`, 'format');
    const snaplen = params.snaplen ?? DEFAULT_SNAPLEN;
    if (typeof snaplen !== 'number' || !Number.isInteger(snaplen) || snaplen < MIN_SNAPLEN || snaplen > MAX_SNAPLEN) {
      throw invalidParams(`'snaplen' must be an integer from ${MIN_SNAPLEN} to ${MAX_SNAPLEN} (${MAX_SNAPLEN} = whole packets).`, 'snaplen');
    }
    const rate = params.rate ?? DEFAULT_CAPTURE_RATE;
    if (typeof rate !== 'number' || !Number.isInteger(rate) || rate < 1 || rate > MAX_CAPTURE_RATE) {
      throw invalidParams(`'rate' must be an integer from 1 to ${MAX_CAPTURE_RATE} (packets per second).`, 'rate');
    }
    const filter = parseCaptureFilter(params);
    const sub = new CaptureSubscription(new CaptureEncoder(format as CaptureFormat, snaplen, capture), sink);
    sub.session = capture.open({
      filter,
      snaplen,
      rate,
      onRecords: (records, _count, dropped) => sub.deliver(records, dropped),
      onEnd: () => sub.end('engineStopping'),
      ready: () => sub.ready(),
    });
    const id = sub.session.id;
    const result: CaptureStartResult = { id, format: format as CaptureFormat, snaplen, rate, linktype: LINKTYPE_RAW, interfaces: [...sub.encoder.interfaces], filter };
    return { sub, started: sub.session.taken.then(() => { sub.sendHeader(); return result; }) };
  }

  /** The file starts with its header (once, before any record): every notification's data joined is valid pcapng. */
  private sendHeader(): void {
    if (this.headerSent || this.ended || !this.session) return;
    this.headerSent = true;
    const header = this.encoder.header();
    if (header !== null) this.notifyChecked({ id: this.session.id, format: 'pcapng', data: header.toString('base64'), packets: 0, dropped: 0 });
  }

  private deliver(records: Buffer, dropped: number): void {
    if (this.ended || !this.session) return;
    this.sendHeader(); // a capture ended before it was taken up hands over its ring at once
    const id = this.session.id;
    const out = this.encoder.encode(records);
    if (out.format === 'pcapng') this.notifyChecked({ id, format: 'pcapng', data: out.data.toString('base64'), packets: out.packets, dropped });
    else this.notifyChecked({ id, format: 'summary', packets: out.packets, dropped });
  }

  private notifyChecked(params: Record<string, unknown>): void {
    this.sink.notify('capture', params);
  }

  /** May more records be sent now? Also notices a client that stopped reading and disconnects it. */
  private ready(): boolean {
    if (this.ended || !this.headerSent) return false; // records wait for the header (sent once the capture is taken)
    const unsent = this.sink.unsent();
    if (unsent <= MAX_UNSENT_CAPTURE_BYTES) {
      this.behind = null;
      return true;
    }
    const now = Date.now();
    if (this.behind === null || unsent < this.behind.unsent) {
      this.behind = { since: now, unsent }; // behind, but it read something since the last look
    } else if (now - this.behind.since >= CAPTURE_STALL_MS) {
      this.end('slowClient');
      this.sink.abandon();
    }
    return false;
  }

  /** End the capture (idempotent); tells the client why and what it got. */
  end(reason: CaptureEndReason): { id: number; captured: number; dropped: number; reason: CaptureEndReason } | null {
    if (this.ended || !this.session) return null;
    const session = this.session;
    // A slow client gets nothing more; otherwise what is still in the ring is delivered before the end notice.
    if (reason === 'slowClient') this.ended = true;
    else this.sendHeader();
    const counts = session.close();
    this.ended = true;
    const summary = { id: session.id, captured: counts.captured, dropped: counts.dropped, reason };
    if (reason !== 'slowClient') this.sink.notify('capture.end', summary);
    return summary;
  }
}
