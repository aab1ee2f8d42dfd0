/**
 * One captured packet as the data plane records it: the binary record format between the packet worker, which
 * writes it into a capture ring (capture/ring.ts), and the main thread, which turns it into pcapng blocks or packet
 * summaries (capture/encoder.ts). Internal: clients never see records, only those.
 *
 * Little-endian, each record padded to a multiple of 8 bytes:
 *
 *   0  u32  recordBytes      header + captured bytes + padding
 *   4  u32  originalLength   the packet's length as the backend handed it over
 *   8  u32  capturedLength   bytes that follow the header (≤ snap length)
 *  12  u8   direction        1 = this host sent it (outbound), 0 = it arrived (inbound)
 *  13  u8   verdict          CaptureVerdict (packet/verdicts.ts)
 *  14  u8   malformed        MalformedCode (0 = well-formed)
 *  15  u8   flags            bit 0: the addresses were swapped (reflected); the bytes are the packet as re-injected
 *  16  f64  time             milliseconds since the Unix epoch, microsecond resolution
 *  24  u32  ifIndex          the interface it left through or arrived on (the backend names it); 0 = unknown
 *  28  u32  reserved         0
 *  32  ...  the packet's first capturedLength bytes (raw IP, no link-layer header)
 */
import type { MalformedReason } from '../packet/parse.ts';
import { MALFORMED_REASONS } from '../packet/parse.ts';
import { CAPTURE_VERDICT_NAMES, type CaptureVerdictName } from '../packet/verdicts.ts';

export const RECORD_HEADER_BYTES = 32;

export const RecordFlag = { Reflected: 1 } as const;

/** Record size for a capture of `capturedLength` bytes. */
export function recordBytes(capturedLength: number): number {
  return (RECORD_HEADER_BYTES + capturedLength + 7) & ~7;
}

export interface CaptureRecord {
  time: number;
  outbound: boolean;
  verdict: CaptureVerdictName;
  malformedReason: MalformedReason | null;
  reflected: boolean;
  originalLength: number;
  /** The interface's OS index (0 = unknown); `HostBackend.interfaceName` names it. */
  ifIndex: number;
  /** The captured bytes (a copy, owned by the caller). */
  data: Uint8Array;
}

/** Decode every record in `buf` (a concatenation of records, e.g. one notification's payload). Throws on garbage. */
export function decodeRecords(buf: Uint8Array): CaptureRecord[] {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const out: CaptureRecord[] = [];
  let pos = 0;
  while (pos < buf.length) {
    if (pos + RECORD_HEADER_BYTES > buf.length) throw new RangeError(`capture record truncated at byte ${pos}`);
    const size = view.getUint32(pos, true);
    const captured = view.getUint32(pos + 8, true);
    const verdict = view.getUint8(pos + 13);
    if (size !== recordBytes(captured) || pos + size > buf.length || verdict < 1 || verdict > CAPTURE_VERDICT_NAMES.length) {
      throw new RangeError(`bad capture record at byte ${pos}`);
    }
    const malformed = view.getUint8(pos + 14);
    out.push({
      originalLength: view.getUint32(pos + 4, true),
      outbound: view.getUint8(pos + 12) === 1,
      verdict: CAPTURE_VERDICT_NAMES[verdict - 1],
      malformedReason: malformed === 0 ? null : (MALFORMED_REASONS[malformed - 1] ?? null),
      reflected: (view.getUint8(pos + 15) & RecordFlag.Reflected) !== 0,
      time: view.getFloat64(pos + 16, true),
      ifIndex: view.getUint32(pos + 24, true),
      data: buf.slice(pos + RECORD_HEADER_BYTES, pos + RECORD_HEADER_BYTES + captured),
    });
    pos += size;
  }
  return out;
}
