/**
 * The app gate's memo of the flows it answered last from their verdicts (app-check.ts): a packet of such a flow is
 * recognised by comparing its protocol, ports and addresses (as words, read through the parse's DataView, as the
 * flow table does) — no key written, nothing hashed, nothing
 * allocated — so the common packet costs one short comparison instead of building a 37-byte key and looking it up.
 * A batch holds runs of one connection's packets, and a connection's two directions (the client's packets and the
 * local server's answers, both sent to the reflect address) are two flows, hence FLOW_MEMO_ENTRIES. The owner
 * forgets the whole memo whenever the verdicts it was derived from change, so it never answers differently.
 */
import type { ParsedPacket } from '../../packet/parse.ts';

/** Flows remembered: one connection's two directions. */
export const FLOW_MEMO_ENTRIES = 2;
/** Int32 words per entry: source then destination address, 4 words each (IPv4 uses the first of each, the rest 0). */
const ENTRY_WORDS = 8;

export class FlowMemo {
  /** IP protocol per entry; -1: empty. */
  private readonly protocol = new Int16Array(FLOW_MEMO_ENTRIES).fill(-1);
  private readonly family = new Uint8Array(FLOW_MEMO_ENTRIES);
  /** Source port << 16 | destination port. */
  private readonly ports = new Int32Array(FLOW_MEMO_ENTRIES);
  /** The addresses as big-endian words (as the packet's DataView reads them). */
  private readonly words = new Int32Array(FLOW_MEMO_ENTRIES * ENTRY_WORDS);
  private readonly answer = new Uint8Array(FLOW_MEMO_ENTRIES);
  /** The entry the next `remember` replaces. */
  private next = 0;

  /** The answer remembered for the TCP/UDP packet parsed into `p` (with its transport header), or -1. */
  find(_buf: Uint8Array, p: ParsedPacket): number {
    const ports = (p.srcPort << 16) | p.dstPort;
    const v = p.view; // the DataView parsePacket made over the packet's buffer
    const s = p.srcOffset;
    const d = p.dstOffset;
    const s0 = v.getInt32(s);
    const d0 = v.getInt32(d);
    let s1 = 0, s2 = 0, s3 = 0, d1 = 0, d2 = 0, d3 = 0;
    if (p.family === 6) {
      s1 = v.getInt32(s + 4);
      s2 = v.getInt32(s + 8);
      s3 = v.getInt32(s + 12);
      d1 = v.getInt32(d + 4);
      d2 = v.getInt32(d + 8);
      d3 = v.getInt32(d + 12);
    }
    const w = this.words;
    for (let e = 0; e < FLOW_MEMO_ENTRIES; e++) {
      if (this.protocol[e] !== p.protocol || this.ports[e] !== ports || this.family[e] !== p.family) continue;
      const at = e * ENTRY_WORDS;
      if (w[at] !== s0 || w[at + 4] !== d0 || w[at + 1] !== s1 || w[at + 5] !== d1) continue;
      if (w[at + 2] !== s2 || w[at + 6] !== d2 || w[at + 3] !== s3 || w[at + 7] !== d3) continue;
      return this.answer[e];
    }
    return -1;
  }

  /** Remember `answer` (0-255) for the flow of the packet parsed into `p`, replacing the older entry. */
  remember(_buf: Uint8Array, p: ParsedPacket, answer: number): void {
    const e = this.next;
    this.next = (e + 1) % FLOW_MEMO_ENTRIES;
    const v = p.view;
    const n = p.family === 4 ? 1 : 4;
    const at = e * ENTRY_WORDS;
    for (let i = 0; i < 4; i++) {
      this.words[at + i] = i < n ? v.getInt32(p.srcOffset + 4 * i) : 0;
      this.words[at + 4 + i] = i < n ? v.getInt32(p.dstOffset + 4 * i) : 0;
    }
    this.protocol[e] = p.protocol;
    this.family[e] = p.family;
    this.ports[e] = (p.srcPort << 16) | p.dstPort;
    this.answer[e] = answer;
  }

  forget(): void {
    this.protocol.fill(-1);
  }
}
