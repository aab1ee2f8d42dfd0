/**
 * Truncated, corrupted and randomly mutated packets: the parser classifies them, the data plane counts them, and
 * nothing ever throws. Built from the captured fixtures and the hand-built corpus.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Verdict } from '../../src/packet/verdicts.ts';
import { MalformedCode, ParsedPacket, parsePacket } from '../../src/packet/parse.ts';
import { rng } from '../helpers/rng.ts';
import { FIXTURES, loadFixture } from './fixture-files.ts';
import { reflectingDataplane, seedPackets } from './fuzz-seeds.ts';

describe('malformed packets', () => {
  it('every proper prefix of every packet is "truncated", counted, and dropped both ways (inbound fails closed)', () => {
    const packets = seedPackets();
    const { dp, counters } = reflectingDataplane(256);
    const p = new ParsedPacket();
    let prefixes = 0;
    for (const whole of packets) {
      for (let len = 0; len < whole.length; len++) {
        const buf = Uint8Array.from(whole.subarray(0, len));
        assert.equal(parsePacket(buf, 0, len, p), false);
        assert.equal(p.malformed, MalformedCode.Truncated, `len ${len} of ${whole.length}`);
        assert.equal(dp.outbound(buf, 0, len, 0), Verdict.Drop);
        assert.deepEqual(buf, whole.subarray(0, len), 'a dropped packet is left as it was');
        assert.equal(dp.inbound(buf, 0, len, 0), Verdict.Drop);
        prefixes++;
      }
      // The whole packet parses, so "truncated" above was about the length alone.
      assert.equal(parsePacket(whole, 0, whole.length, p), true);
    }
    const snap = counters.snapshot();
    assert.ok(prefixes > 10_000);
    assert.equal(snap.malformed.byReason.truncated, prefixes * 2);
    assert.equal(snap.malformed.total, prefixes * 2);
    assert.equal(snap.reflected.packets, 0);
  });

  it('corrupted fields of real packets are classified by reason and counted', () => {
    const packets = FIXTURES.flatMap((f) => loadFixture(f).map((x) => x.data));
    const { dp, counters } = reflectingDataplane(256);
    const p = new ParsedPacket();
    const expected: Record<string, number> = {};
    const expect = (buf: Uint8Array, code: MalformedCode, what: string) => {
      parsePacket(buf, 0, buf.length, p);
      assert.equal(p.malformed, code, what);
      assert.equal(dp.outbound(buf, 0, buf.length, 0), Verdict.Drop, what);
      const reason = ['', 'truncated', 'badVersion', 'badHeaderLength', 'badTotalLength', 'badExtensionHeader', 'badTransportHeader'][code];
      expected[reason] = (expected[reason] ?? 0) + 1;
    };
    let hbh = 0;
    for (const whole of packets) {
      const v4 = whole[0] >> 4 === 4;
      const copy = () => Uint8Array.from(whole);
      let b = copy();
      b[0] = (b[0] & 0x0f) | 0x70;
      expect(b, MalformedCode.BadVersion, 'version 7');
      if (v4) {
        b = copy();
        b[0] = 0x43;
        expect(b, MalformedCode.BadHeaderLength, 'IHL 3');
        b = copy();
        b[2] = 0;
        b[3] = 12;
        expect(b, MalformedCode.BadTotalLength, 'total length 12');
        b = copy();
        b[2] = 0xff;
        expect(b, MalformedCode.Truncated, 'total length beyond buffer');
      } else {
        b = copy();
        b[4] = 0xff;
        expect(b, MalformedCode.Truncated, 'payload length beyond buffer');
        if (whole[6] === 0) {
          // Hop-by-hop header: claim 255 * 8 more bytes than there are.
          b = copy();
          b[41] = 0xff;
          expect(b, MalformedCode.BadExtensionHeader, 'hop-by-hop length past the payload');
          hbh++;
        }
      }
      const q = new ParsedPacket();
      parsePacket(whole, 0, whole.length, q);
      if (q.protocol === 6 && q.hasTransport) {
        b = copy();
        b[q.transportOffset + 12] = 0x30;
        expect(b, MalformedCode.BadTransportHeader, 'data offset 3');
        b = copy();
        b[q.transportOffset + 12] = 0xf0;
        if (q.transportLength < 60) expect(b, MalformedCode.BadTransportHeader, 'data offset 15 past the segment');
      }
    }
    assert.ok(hbh > 0, 'fixtures include hop-by-hop headers');
    const snap = counters.snapshot();
    for (const [reason, n] of Object.entries(expected)) assert.equal(
      snap.malformed.byReason[reason as keyof typeof snap.malformed.byReason],
      n,
      reason,
    );
    assert.equal(snap.malformed.total, Object.values(expected).reduce((a, n) => a + n, 0));
  });

  it('seeded fuzz: random mutations never throw, parsed fields stay in bounds, counters add up', () => {
    const packets = seedPackets();
    const { dp, counters } = reflectingDataplane(256);
    const random = rng(0x5eed);
    const p = new ParsedPacket();
    const iterations = 30_000;
    let ok = 0;
    let reflected = 0;
    for (let i = 0; i < iterations; i++) {
      const src = packets[Math.floor(random() * packets.length)];
      // Room around the packet so offsets and lengths can be off without leaving the buffer object.
      const buf = new Uint8Array(src.length + 64);
      const off = Math.floor(random() * 32);
      buf.set(src, off);
      let len = src.length;
      const mutations = 1 + Math.floor(random() * 4);
      for (let m = 0; m < mutations; m++) {
        const kind = random();
        const at = off + Math.floor(random() * Math.min(len + 1, 80)); // headers live in the first bytes
        if (kind < 0.5) buf[at] = Math.floor(random() * 256);
        else if (kind < 0.8) buf[at] ^= 1 << Math.floor(random() * 8);
        else if (kind < 0.9) len = Math.floor(random() * (len + 1));
        else len = Math.min(len + Math.floor(random() * 32), buf.length - off);
      }
      const before = Uint8Array.from(buf);
      const parsedOk = parsePacket(buf, off, len, p);
      if (parsedOk) {
        ok++;
        assert.equal(p.malformed, 0);
        assert.ok(p.ipLength <= len && p.ipOffset === off);
        assert.ok(p.srcOffset >= off && p.dstOffset + p.addressLength <= off + p.ipLength);
        assert.ok(p.transportOffset >= off && p.transportOffset + p.transportLength === off + p.ipLength);
      } else {
        assert.ok(p.malformed >= 1 && p.malformed <= 6);
      }
      const verdict = dp.outbound(buf, off, len, i);
      assert.equal(verdict === Verdict.Drop, !parsedOk);
      if (verdict === Verdict.Reflect) {
        reflected++;
        const n = p.addressLength;
        assert.deepEqual(buf.subarray(p.srcOffset, p.srcOffset + n), before.subarray(p.dstOffset, p.dstOffset + n));
      } else {
        assert.deepEqual(buf, before, 'pass/drop leave the packet alone');
      }
      const inbound = dp.inbound(buf, off, len, i);
      assert.ok(inbound === Verdict.Pass || inbound === Verdict.Drop);
    }
    const snap = counters.snapshot();
    // Each packet went through outbound and inbound once: every one is counted exactly once per direction.
    // (A reflected packet comes back to inbound with the reflect address as source: forged.)
    assert.equal(
      snap.reflected.packets + snap.passed.packets + snap.shieldDropped.packets + snap.forgedSourceDropped.packets + snap.malformed.total,
      iterations * 2,
    );
    assert.ok(snap.forgedSourceDropped.packets >= reflected, 'every reflected packet is forged when it comes back in');
    assert.equal(snap.reflected.packets, reflected);
    assert.ok(ok > iterations / 10 && ok < iterations, `a useful mix of good (${ok}) and malformed packets`);
    assert.ok(Object.values(snap.malformed.byReason).filter((n) => n > 0).length >= 5, 'most reasons were hit');
  });
});
