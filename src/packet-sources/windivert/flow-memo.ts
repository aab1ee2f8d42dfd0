/**
 * The app gate's memo of the flows it answered last from their verdicts (app-check.ts): a packet of such a flow is
 * recognised by comparing its protocol, ports and addresses in place — no key written, nothing hashed, nothing
 * allocated — so the common packet costs one short comparison instead of building a 37-byte key and looking it up.
 * A batch holds runs of one connection's packets, and a connection's two directions (the client's packets and the
 * local server's answers, both sent to the reflect address) are two flows, hence FLOW_MEMO_ENTRIES. The owner
 * forgets the whole memo whenever the verdicts it was derived from change, so it never answers differently.
 */
import type { ParsedPacket } from '../../packet/parse.ts';

/** Flows remembered: one connection's two directions. */
export const FLOW_MEMO_ENTRIES = 2;
/** Bytes per entry: source then destination address, 16 each (IPv4 uses the first 4 of each). */
const ENTRY_ADDRESS_BYTES = 32;

export class FlowMemo {
  /** IP protocol per entry; -1: empty. */
  private readonly protocol = new Int16Array(FLOW_MEMO_ENTRIES).fill(-1);
  private readonly family = new Uint8Array(FLOW_MEMO_ENTRIES);
  /** Source port << 16 | destination port. */
  private readonly ports = new Int32Array(FLOW_MEMO_ENTRIES);
  private readonly addresses = new Uint8Array(FLOW_MEMO_ENTRIES * ENTRY_ADDRESS_BYTES);
  private readonly answer = new Uint8Array(FLOW_MEMO_ENTRIES);
  /** The entry the next `remember` replaces. */
  private next = 0;

  /** The answer remembered for the TCP/UDP packet parsed into `p` (with its transport header), or -1. */
  find(buf: Uint8Array, p: ParsedPacket): number {
    const ports = (p.srcPort << 16) | p.dstPort;
    const n = p.family === 4 ? 4 : 16;
    for (let e = 0; e < FLOW_MEMO_ENTRIES; e++) {
      if (this.protocol[e] !== p.protocol || this.ports[e] !== ports || this.family[e] !== p.family) continue;
      const at = e * ENTRY_ADDRESS_BYTES;
      const src = p.srcOffset;
      const dst = p.dstOffset;
      let i = 0;
      while (i < n && buf[src + i] === this.addresses[at + i] && buf[dst + i] === this.addresses[at + 16 + i]) i++;
      if (i === n) return this.answer[e];
    }
    return -1;
  }

  /** Remember `answer` (0-255) for the flow of the packet parsed into `p`, replacing the older entry. */
  remember(buf: Uint8Array, p: ParsedPacket, answer: number): void {
    const e = this.next;
    this.next = (e + 1) % FLOW_MEMO_ENTRIES;
    const n = p.family === 4 ? 4 : 16;
    const at = e * ENTRY_ADDRESS_BYTES;
    for (let i = 0; i < n; i++) {
      this.addresses[at + i] = buf[p.srcOffset + i];
      this.addresses[at + 16 + i] = buf[p.dstOffset + i];
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
