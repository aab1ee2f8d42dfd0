/**
 * What one capture's client receives, made from its records: pcapng (a header first, then blocks — an interface
 * block before the first packet through each new interface, an Enhanced Packet Block per packet, commented with its
 * summary) or packet summaries. How it travels (notifications, base64) is the control plane's.
 */
import { CaptureInterfaceTable } from './interfaces.ts';
import { pcapngHeader, pcapngInterface, pcapngPacket, type CaptureInterface } from './pcapng.ts';
import type { CapturePort } from './port.ts';
import { decodeRecords } from './record.ts';
import { packetComment, summarize, type PacketSummary } from './summary.ts';

export const CAPTURE_FORMATS = ['pcapng', 'summary'] as const;
export type CaptureFormat = (typeof CAPTURE_FORMATS)[number];

/** Records in a capture's format: pcapng blocks (`packets` of them are packets) or one summary per record. */
export type EncodedRecords = { format: 'pcapng'; data: Buffer; packets: number } | { format: 'summary'; packets: PacketSummary[] };

export class CaptureEncoder {
  private readonly table: CaptureInterfaceTable;

  constructor(
    readonly format: CaptureFormat,
    private readonly snaplen: number,
    private readonly port: Pick<CapturePort, 'backend' | 'interfaceName'>,
  ) {
    this.table = new CaptureInterfaceTable(port.backend, port.interfaceName(0));
  }

  /** The interfaces the capture starts with (pcapng interface id = index). */
  get interfaces(): readonly CaptureInterface[] {
    return this.table.initial;
  }

  /** The pcapng section header and the starting interfaces' blocks; null for summaries, which need none. */
  header(): Buffer | null {
    return this.format === 'pcapng' ? pcapngHeader(this.table.initial, this.snaplen) : null;
  }

  /** `records` (capture/record.ts) in this capture's format. */
  encode(records: Buffer): EncodedRecords {
    const recs = decodeRecords(records);
    if (this.format === 'summary') return { format: 'summary', packets: recs.map((r) => summarize(r, this.port.interfaceName(r.ifIndex))) };
    const blocks: Buffer[] = [];
    for (const r of recs) {
      const summary = summarize(r, this.port.interfaceName(r.ifIndex));
      const { id, added } = this.table.idOf(summary.interface, summary.direction);
      if (added !== null) blocks.push(pcapngInterface(added, this.snaplen));
      blocks.push(pcapngPacket(id, r, packetComment(summary)));
    }
    return { format: 'pcapng', data: Buffer.concat(blocks), packets: recs.length };
  }
}
