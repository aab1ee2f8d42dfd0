/**
 * Packet-core fuzz, sized by the caller: `npm test` runs a short version (test/hardening/packet-fuzz.test.ts);
 * `npm run reliability -- packet-fuzz [count]` runs millions (docs/reliability.md has the figures).
 *
 * Two kinds of input, both through the real Dataplane (outbound, then inbound, as the backends call it):
 *  - mutated: a packet from the captured fixtures and the hand-made corpus with 1-4 byte writes, bit flips,
 *    truncations or extensions in its first 80 bytes (where the headers are);
 *  - random: random bytes of random length (0-1500), with the first nibble set to 4 or 6 half of the time so some
 *    get past the version check.
 * Checked for every packet: no exception; the verdict agrees with the parser (Drop exactly when malformed); a
 * reflected packet differs from the input only by its swapped addresses (and, for an ICMP error, inside the ICMP message, whose embedded packet is reflected too); pass/drop leave it untouched; nothing is
 * written outside the packet. Checked at the end: every packet counted exactly once per direction.
 */
import { Verdict } from '../../src/packet/verdicts.ts';
import { EmbeddedPacket, parseEmbeddedPacket } from '../../src/packet/icmp-error.ts';
import { ParsedPacket, parsePacket } from '../../src/packet/parse.ts';
import { rng } from '../helpers/rng.ts';
import { reflectingDataplane, seedPackets } from '../packet/fuzz-seeds.ts';

export interface PacketFuzzResult {
  kind: 'mutated' | 'random';
  packets: number;
  seconds: number;
  reflected: number;
  passed: number;
  dropped: number;
  /** Inbound packets whose source is a reflect address (every reflected packet, seen inbound again, is one). */
  forged: number;
  malformed: number;
  reasonsHit: number;
  failures: string[];
}

const GUARD = 64;
const GUARD_BYTE = 0xa5;

export function fuzzPacketCore(kind: 'mutated' | 'random', count: number, seed = 0x5eed11): PacketFuzzResult {
  const seeds = seedPackets();
  const random = rng(seed);
  const { dp, counters } = reflectingDataplane(4096);
  const parsed = new ParsedPacket();
  const embedded = new EmbeddedPacket();
  const buf = new Uint8Array(1500 + 2 * GUARD + 64);
  const before = new Uint8Array(buf.length);
  const failures: string[] = [];
  let reflected = 0;
  const fail = (i: number, what: string): void => {
    if (failures.length < 10) failures.push(`packet ${i}: ${what}`);
  };
  const t0 = performance.now();
  for (let i = 0; i < count; i++) {
    buf.fill(GUARD_BYTE);
    const off = GUARD + Math.floor(random() * 32);
    let len: number;
    if (kind === 'mutated') {
      const src = seeds[Math.floor(random() * seeds.length)]!;
      len = Math.min(src.length, 1500);
      buf.set(src.subarray(0, len), off);
      const mutations = 1 + Math.floor(random() * 4);
      for (let m = 0; m < mutations; m++) {
        const r = random();
        const at = off + Math.floor(random() * Math.min(len + 1, 80));
        if (r < 0.5) buf[at] = Math.floor(random() * 256);
        else if (r < 0.8) buf[at] ^= 1 << Math.floor(random() * 8);
        else if (r < 0.9) len = Math.floor(random() * (len + 1));
        else len = Math.min(len + Math.floor(random() * 32), 1500);
      }
    } else {
      len = Math.floor(random() * 1501);
      for (let j = 0; j < len; j++) buf[off + j] = Math.floor(random() * 256);
      if (len > 0 && random() < 0.5) buf[off] = (random() < 0.5 ? 0x45 : 0x60) | (buf[off]! & 0x0f & (random() < 0.5 ? 0 : 0x0f));
    }
    before.set(buf);
    let verdict: number;
    let ok: boolean;
    try {
      ok = parsePacket(buf, off, len, parsed);
      embedded.present = false;
      if (ok) parseEmbeddedPacket(buf, parsed, embedded);
      verdict = dp.outbound(buf, off, len, i);
      dp.inbound(buf, off, len, i);
    } catch (err) {
      fail(i, `threw ${(err as Error).message}`);
      continue;
    }
    if ((verdict === Verdict.Drop) !== !ok) fail(i, `verdict ${verdict} but parser said ${ok}`);
    for (let j = 0; j < buf.length; j++) {
      if (j >= off && j < off + len) continue;
      if (buf[j] !== before[j]) {
        fail(i, `byte ${j - off} outside the packet was written`);
        break;
      }
    }
    if (verdict === Verdict.Reflect) {
      reflected++;
      const n = parsed.addressLength;
      for (let j = 0; j < n; j++) {
        if (buf[parsed.srcOffset + j] !== before[parsed.dstOffset + j] || buf[parsed.dstOffset + j] !== before[parsed.srcOffset + j]) {
          fail(i, 'reflected packet: addresses not swapped');
          break;
        }
      }
      // Swap back and compare: nothing but the addresses changed.
      for (let j = 0; j < n; j++) {
        const t = buf[parsed.srcOffset + j]!;
        buf[parsed.srcOffset + j] = buf[parsed.dstOffset + j]!;
        buf[parsed.dstOffset + j] = t;
      }
    }
    // A reflected ICMP error has its embedded packet reflected too (addresses, ports, checksums): only the ICMP
    // message may differ beyond the outer addresses then.
    const end = verdict === Verdict.Reflect && embedded.present ? parsed.transportOffset : off + len;
    for (let j = off; j < end; j++) {
      if (buf[j] !== before[j]) {
        fail(i, `byte ${j - off} changed (verdict ${verdict})`);
        break;
      }
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  const snap = counters.snapshot();
  const total = snap.reflected.packets + snap.passed.packets + snap.shieldDropped.packets + snap.forgedSourceDropped.packets + snap.malformed.total;
  if (total !== count * 2) failures.push(`counters: ${total} counted for ${count * 2} decisions`);
  if (snap.reflected.packets !== reflected) failures.push(`counters: ${snap.reflected.packets} reflected, saw ${reflected}`);
  return {
    kind,
    packets: count,
    seconds,
    reflected,
    passed: snap.passed.packets,
    dropped: snap.shieldDropped.packets,
    forged: snap.forgedSourceDropped.packets,
    malformed: snap.malformed.total,
    reasonsHit: Object.values(snap.malformed.byReason).filter((n) => n > 0).length,
    failures,
  };
}
