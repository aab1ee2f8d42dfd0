/**
 * `capture.start` / `capture.stop` for one control connection (docs/protocol.md, "Capture"): checks the
 * parameters, opens a capture on the engine and turns its records into `capture` notifications — pcapng bytes
 * (base64) or packet summaries. The connection owns the socket; this owns the capture.
 *
 * Slow and stalled clients: while more than MAX_UNSENT_CAPTURE_BYTES wait to be sent to a client, nothing more is
 * taken from its ring, so the ring fills and the packet worker counts drops — a slow reader loses records, nothing
 * else. A client that has read nothing for CAPTURE_STALL_MS while that much was waiting has stopped reading: its
 * capture ends and its connection is closed. Neither the data plane nor other clients are affected either way.
 */
import { invalidParams } from '../error-messages.ts';
import type { CaptureOptions, CaptureSession } from '../capture/hub.ts';
import { DEFAULT_CAPTURE_RATE, MAX_CAPTURE_RATE } from '../capture/hub.ts';
import { DEFAULT_SNAPLEN, MAX_SNAPLEN, MIN_SNAPLEN, parseCaptureFilter } from '../capture/filter.ts';
import { LINKTYPE_RAW, pcapngHeader, pcapngInterface, pcapngPacket, type CaptureInterface } from '../capture/pcapng.ts';
import { decodeRecords } from '../capture/record.ts';
import { packetComment, summarize } from '../capture/summary.ts';
import type { CaptureStartResult } from './protocol.ts';

/** Unsent bytes on a capturing connection above which no more records are taken from its ring. */
export const MAX_UNSENT_CAPTURE_BYTES = 1024 * 1024;
/** How long a client may stay above that without reading anything before it is disconnected. */
export const CAPTURE_STALL_MS = 5000;

export const CAPTURE_FORMATS = ['pcapng', 'summary'] as const;
export type CaptureFormat = (typeof CAPTURE_FORMATS)[number];

/** What the control plane needs from the engine to capture. */
export interface CaptureEngine {
  openCapture(opts: CaptureOptions): CaptureSession;
  status(): { backend: string; backendInfo: Record<string, string | number> };
  /** The name captures give interface `ifIndex` (0: the backend's own, e.g. its TUN device). */
  interfaceName(ifIndex: number): string;
}

export type CaptureEndReason = 'stopped' | 'engineStopping' | 'slowClient';

export interface CaptureSink {
  /** Write one notification line. */
  notify(method: string, params: unknown): void;
  /** Bytes written to the connection but not yet taken by the client. */
  unsent(): number;
  /** The client is too slow: close its connection. */
  abandon(): void;
}


/** The pcapng name of interface `name` in one direction: "rflct0 outbound". */
function interfaceLabel(name: string, direction: 'outbound' | 'inbound'): string {
  return `${name} ${direction}`;
}

/** A capture's pcapng interface for packets through `name` in one direction. */
function captureInterface(name: string, direction: 'outbound' | 'inbound', backend: string): CaptureInterface {
  return direction === 'outbound'
    ? { name: interfaceLabel(name, direction), description: `packets this host sent through ${name}, as ${backend} handed them to retroflect (after reflection)`, direction }
    : { name: interfaceLabel(name, direction), description: `packets that arrived on ${name} from other hosts, as retroflect saw them`, direction };
}

/**
 * The interfaces every capture of this engine starts with (pcapng interface id = index): the backend's own, outbound
 * and inbound. Packets through other interfaces (TUN: shielded packets arriving on eth0; WinDivert: each IfIdx) add
 * theirs as they come.
 */
export function captureInterfaces(engine: CaptureEngine): CaptureInterface[] {
  const backend = engine.status().backend;
  const own = engine.interfaceName(0);
  return [captureInterface(own, 'outbound', backend), captureInterface(own, 'inbound', backend)];
}

export class CaptureSubscription {
  private session: CaptureSession | null = null;
  private ended = false;
  /** Since when the client has been too far behind, and how much was unsent then (null: keeping up). */
  private behind: { since: number; unsent: number } | null = null;

  /** pcapng interface id by interface name ("rflct0 outbound"); grows as packets name new interfaces. */
  private readonly interfaceIds = new Map<string, number>();

  private constructor(
    readonly format: CaptureFormat,
    private readonly sink: CaptureSink,
    private readonly engine: CaptureEngine,
    private readonly snaplen: number,
  ) {}

  static start(engine: CaptureEngine, params: Record<string, unknown>, sink: CaptureSink): { sub: CaptureSubscription; result: CaptureStartResult } {
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
    const sub = new CaptureSubscription(format as CaptureFormat, sink, engine, snaplen);
    const interfaces = captureInterfaces(engine);
    interfaces.forEach((itf, id) => sub.interfaceIds.set(itf.name, id));
    sub.session = engine.openCapture({
      filter,
      snaplen,
      rate,
      onRecords: (records, _count, dropped) => sub.deliver(records, dropped),
      onEnd: () => sub.end('engineStopping'),
      ready: () => sub.ready(),
    });
    const id = sub.session.id;
    if (sub.format === 'pcapng') {
      // The file starts with its header: concatenating every notification's data gives a valid pcapng stream.
      sub.notifyChecked({ id, format: 'pcapng', data: pcapngHeader(interfaces, snaplen).toString('base64'), packets: 0, dropped: 0 });
    }
    return {
      sub,
      result: { id, format: sub.format, snaplen, rate, linktype: LINKTYPE_RAW, interfaces, filter },
    };
  }

  private deliver(records: Buffer, dropped: number): void {
    if (this.ended || !this.session) return;
    const id = this.session.id;
    const recs = decodeRecords(records);
    if (this.format === 'pcapng') {
      const blocks: Buffer[] = [];
      for (const r of recs) {
        const summary = summarize(r, this.engine.interfaceName(r.ifIndex));
        blocks.push(pcapngPacket(this.interfaceId(summary.interface, summary.direction, blocks), r, packetComment(summary)));
      }
      this.notifyChecked({ id, format: 'pcapng', data: Buffer.concat(blocks).toString('base64'), packets: recs.length, dropped });
    } else {
      this.notifyChecked({ id, format: 'summary', packets: recs.map((r) => summarize(r, this.engine.interfaceName(r.ifIndex))), dropped });
    }
  }

  /** The pcapng id of interface `name` in `direction`; a new one gets its block appended to `blocks` first. */
  private interfaceId(name: string, direction: 'outbound' | 'inbound', blocks: Buffer[]): number {
    let id = this.interfaceIds.get(interfaceLabel(name, direction)); // per packet: one map lookup, nothing more
    if (id === undefined) {
      const itf = captureInterface(name, direction, this.engine.status().backend);
      id = this.interfaceIds.size;
      this.interfaceIds.set(itf.name, id);
      blocks.push(pcapngInterface(itf, this.snaplen));
    }
    return id;
  }

  private notifyChecked(params: Record<string, unknown>): void {
    this.sink.notify('capture', params);
  }

  /** May more records be sent now? Also notices a client that stopped reading and disconnects it. */
  private ready(): boolean {
    if (this.ended) return false;
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
    const counts = session.close();
    this.ended = true;
    const summary = { id: session.id, captured: counts.captured, dropped: counts.dropped, reason };
    if (reason !== 'slowClient') this.sink.notify('capture.end', summary);
    return summary;
  }
}
