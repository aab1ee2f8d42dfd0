/**
 * A small pcapng writer (draft-ietf-opsawg-pcapng): one Section Header Block, one Interface Description Block per
 * interface and direction (the backend's own two first, others as packets name them), and one Enhanced Packet Block per captured packet whose comment (opt_comment) carries
 * the engine's verdict and the packet's addresses before reflection, and whose epb_flags carry the direction.
 * Little-endian, raw IP link type, microsecond timestamps (the default if_tsresol).
 */
import { VERSION } from '../version.ts';
import type { CaptureRecord } from './record.ts';

/** LINKTYPE_RAW: the packet starts with an IPv4 or IPv6 header. */
export const LINKTYPE_RAW = 101;

export interface CaptureInterface {
  /** pcapng if_name, e.g. "rflct0 outbound". */
  name: string;
  description: string;
  direction: 'outbound' | 'inbound';
}

const BT_SHB = 0x0a0d0d0a;
const BT_IDB = 0x00000001;
/** Enhanced Packet Block type (also how a reader of the stream tells packets from other blocks). */
export const BT_EPB = 0x00000006;
const OPT_COMMENT = 1;
const SHB_USERAPPL = 4;
const IF_NAME = 2;
const IF_DESCRIPTION = 3;
const EPB_FLAGS = 2;
/** epb_flags bits 0-1: 1 = inbound, 2 = outbound. */
const EPB_INBOUND = 1;
const EPB_OUTBOUND = 2;

const pad4 = (n: number): number => (n + 3) & ~3;

function option(code: number, value: Buffer): Buffer {
  const out = Buffer.alloc(4 + pad4(value.length));
  out.writeUInt16LE(code, 0);
  out.writeUInt16LE(value.length, 2);
  value.copy(out, 4);
  return out;
}

function options(list: Buffer[]): Buffer {
  if (list.length === 0) return Buffer.alloc(0);
  return Buffer.concat([...list, Buffer.alloc(4) /* opt_endofopt */]);
}

function block(type: number, body: Buffer): Buffer {
  const total = 12 + body.length;
  const out = Buffer.alloc(total);
  out.writeUInt32LE(type, 0);
  out.writeUInt32LE(total, 4);
  body.copy(out, 8);
  out.writeUInt32LE(total, total - 4);
  return out;
}

/**
 * One Interface Description Block. pcapng lets one appear anywhere before the first packet that names it (ids count
 * the interface blocks of the section in order), so an interface seen later gets its block then.
 */
export function pcapngInterface(itf: CaptureInterface, snaplen: number): Buffer {
  const idb = Buffer.alloc(8);
  idb.writeUInt16LE(LINKTYPE_RAW, 0);
  idb.writeUInt32LE(snaplen, 4);
  return block(BT_IDB, Buffer.concat([idb, options([option(IF_NAME, Buffer.from(itf.name)), option(IF_DESCRIPTION, Buffer.from(itf.description))])]));
}

/** Section header plus one interface block per entry of `interfaces` (interface id = index). */
export function pcapngHeader(interfaces: readonly CaptureInterface[], snaplen: number): Buffer {
  const shb = Buffer.alloc(16);
  shb.writeUInt32LE(0x1a2b3c4d, 0);
  shb.writeUInt16LE(1, 4);
  shb.writeUInt16LE(0, 6);
  shb.writeBigInt64LE(-1n, 8); // section length unknown (we stream)
  const parts = [block(BT_SHB, Buffer.concat([shb, options([option(SHB_USERAPPL, Buffer.from(`retroflect ${VERSION}`))])]))];
  for (const itf of interfaces) parts.push(pcapngInterface(itf, snaplen));
  return Buffer.concat(parts);
}

/**
 * One Enhanced Packet Block, written straight into one buffer (a capture makes thousands a second):
 *   block type, total length | interface id, timestamp high, low (µs), captured length, original length |
 *   packet bytes, padded to 4 | opt_comment | epb_flags | opt_endofopt | total length.
 * `interfaceId` indexes the interface blocks written so far.
 */
export function pcapngPacket(interfaceId: number, rec: CaptureRecord, comment: string): Buffer {
  const commentBytes = Buffer.byteLength(comment);
  const dataBytes = pad4(rec.data.length);
  const total = 8 + 20 + dataBytes + (4 + pad4(commentBytes)) + (4 + 4) + 4 + 4;
  const out = Buffer.alloc(total);
  out.writeUInt32LE(BT_EPB, 0);
  out.writeUInt32LE(total, 4);
  const micros = Math.round(rec.time * 1000); // < 2^53 for any date we meet: exact in a double
  out.writeUInt32LE(interfaceId, 8);
  out.writeUInt32LE(Math.floor(micros / 2 ** 32), 12);
  out.writeUInt32LE(micros % 2 ** 32, 16);
  out.writeUInt32LE(rec.data.length, 20);
  out.writeUInt32LE(rec.originalLength, 24);
  out.set(rec.data, 28);
  let at = 28 + dataBytes;
  out.writeUInt16LE(OPT_COMMENT, at);
  out.writeUInt16LE(commentBytes, at + 2);
  out.write(comment, at + 4);
  at += 4 + pad4(commentBytes);
  out.writeUInt16LE(EPB_FLAGS, at);
  out.writeUInt16LE(4, at + 2);
  out.writeUInt32LE(rec.outbound ? EPB_OUTBOUND : EPB_INBOUND, at + 4);
  at += 8 + 4; // and opt_endofopt: four zero bytes
  out.writeUInt32LE(total, at);
  return out;
}

