import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  ChecksumState,
  computeIpv4HeaderChecksum,
  computeTransportChecksum,
  fillIpv4HeaderChecksum,
  fillTransportChecksum,
  isIpv4HeaderChecksumValid,
  transportChecksumOffset,
  transportChecksumState,
} from '../../src/packet/checksum.ts';
import { ParsedPacket, parsePacket } from '../../src/packet/parse.ts';
import { reflectPacket } from '../../src/packet/reflect.ts';
import { corpus, type CorpusPacket } from './corpus.ts';
import { referenceChecksum, referenceTransportValid } from '../helpers/packet-builders.ts';

function parsed(bytes: Uint8Array): ParsedPacket {
  const p = new ParsedPacket();
  assert.equal(parsePacket(bytes, 0, bytes.length, p), true);
  return p;
}

/** Reference check of every checksum of a corpus packet (independent of src/packet/checksum.ts). */
function referenceValid(c: CorpusPacket, bytes: Uint8Array): boolean {
  const p = parsed(bytes);
  if (p.family === 4 && referenceChecksum(bytes.subarray(0, (bytes[0] & 15) * 4)) !== 0) return false;
  if (!c.checksummed) return true;
  const src = Array.from(bytes.subarray(p.srcOffset, p.srcOffset + p.addressLength));
  const dst = Array.from(bytes.subarray(p.dstOffset, p.dstOffset + p.addressLength));
  return referenceTransportValid(src, dst, p.protocol, bytes.subarray(p.transportOffset));
}

describe('reflectPacket', () => {
  for (const c of corpus()) {
    it(`${c.name}: swaps addresses, changes nothing else, keeps checksums valid`, () => {
      const before = Uint8Array.from(c.bytes);
      const bytes = Uint8Array.from(c.bytes);
      const p = parsed(bytes);
      assert.equal(referenceValid(c, bytes), true, 'reference: valid before');
      if (p.family === 4) assert.equal(isIpv4HeaderChecksumValid(bytes, 0), true);
      const stateBefore = transportChecksumState(bytes, p);
      assert.equal(stateBefore, c.checksummed ? ChecksumState.Valid : ChecksumState.NotApplicable);

      reflectPacket(bytes, p);

      const n = p.addressLength;
      assert.deepEqual(bytes.subarray(p.srcOffset, p.srcOffset + n), before.subarray(p.dstOffset, p.dstOffset + n));
      assert.deepEqual(bytes.subarray(p.dstOffset, p.dstOffset + n), before.subarray(p.srcOffset, p.srcOffset + n));
      for (let i = 0; i < bytes.length; i++) {
        const inAddress = (i >= p.srcOffset && i < p.srcOffset + n) || (i >= p.dstOffset && i < p.dstOffset + n);
        if (!inAddress) assert.equal(bytes[i], before[i], `byte ${i} changed`);
      }
      assert.notDeepEqual(bytes, before);

      // Recompute everything after the swap: checksum fields were not touched, yet they are still right.
      const after = parsed(bytes);
      assert.equal(referenceValid(c, bytes), true, 'reference: valid after');
      if (p.family === 4) {
        assert.equal(isIpv4HeaderChecksumValid(bytes, 0), true);
        assert.equal(computeIpv4HeaderChecksum(bytes, 0), (bytes[10] << 8) | bytes[11]);
      }
      assert.equal(transportChecksumState(bytes, after), stateBefore);
      if (c.checksummed) {
        const at = transportChecksumOffset(after);
        assert.equal(computeTransportChecksum(bytes, after), (bytes[at] << 8) | bytes[at + 1]);
      }

      reflectPacket(bytes, after);
      assert.deepEqual(bytes, before, 'reflecting twice restores the packet');
    });
  }
});

describe('checksum helpers', () => {
  it('an altered byte makes the transport checksum invalid (the check can fail)', () => {
    for (const c of corpus().filter((x) => x.checksummed)) {
      const bytes = Uint8Array.from(c.bytes);
      const p = parsed(bytes);
      bytes[bytes.length - 1] ^= 0x01;
      assert.equal(transportChecksumState(bytes, p), ChecksumState.Invalid, c.name);
      assert.equal(referenceValid(c, bytes), false, c.name);
    }
  });

  it('a changed address without reflection breaks the checksum (so swapping is what keeps it valid)', () => {
    for (const c of corpus().filter((x) => x.checksummed && x.protocol !== 1)) {
      const bytes = Uint8Array.from(c.bytes);
      const p = parsed(bytes);
      bytes[p.dstOffset + p.addressLength - 1] ^= 0x10;
      assert.equal(transportChecksumState(bytes, p), ChecksumState.Invalid, c.name);
    }
  });

  it('fillIpv4HeaderChecksum and fillTransportChecksum restore zeroed and garbage checksums', () => {
    for (const c of corpus()) {
      const bytes = Uint8Array.from(c.bytes);
      const p = parsed(bytes);
      if (p.family === 4) {
        bytes[10] = 0xab;
        bytes[11] = 0xcd;
        assert.equal(isIpv4HeaderChecksumValid(bytes, 0), false);
        fillIpv4HeaderChecksum(bytes, 0);
        assert.equal(isIpv4HeaderChecksumValid(bytes, 0), true);
      }
      const at = transportChecksumOffset(p);
      if (c.checksummed) {
        bytes[at] = 0x12;
        bytes[at + 1] = 0x34;
        assert.equal(fillTransportChecksum(bytes, p), true);
      } else {
        assert.equal(fillTransportChecksum(bytes, p), false, `${c.name}: fragments/other protocols are not filled`);
      }
      assert.deepEqual(bytes, c.bytes, c.name);
    }
  });

  it('IPv4 UDP with checksum 0 is reported absent, not invalid', () => {
    const c = corpus().find((x) => x.name === 'ipv4 udp')!;
    const bytes = Uint8Array.from(c.bytes);
    const p = parsed(bytes);
    bytes[p.transportOffset + 6] = 0;
    bytes[p.transportOffset + 7] = 0;
    assert.equal(transportChecksumState(bytes, p), ChecksumState.Absent);
  });
});

describe('buffers that are views into larger memory', () => {
  it('reflects correctly in a pooled Buffer slice and a subarray (non-zero byteOffset), alternating buffers', () => {
    const packets = corpus();
    // Buffer.from(array) of small sizes comes from Node's shared pool: byteOffset is usually non-zero.
    const pooled = packets.map((c) => Buffer.from(c.bytes));
    const big = new Uint8Array(70_000);
    const views = packets.map((c, i) => {
      const v = big.subarray(1000 * i + 3, 1000 * i + 3 + Math.max(c.bytes.length, 1));
      v.set(c.bytes);
      return v;
    });
    assert.ok(pooled.some((b) => b.byteOffset !== 0) && views.every((v) => v.byteOffset !== 0));
    for (let i = 0; i < packets.length; i++) {
      for (const buf of [pooled[i], views[i]]) {
        const p = new ParsedPacket();
        assert.equal(parsePacket(buf, 0, packets[i].bytes.length, p), true);
        reflectPacket(buf, p);
        const n = p.addressLength;
        const orig = packets[i].bytes;
        assert.deepEqual(
          Array.from(buf.subarray(p.srcOffset, p.srcOffset + n)),
          Array.from(orig.subarray(p.dstOffset, p.dstOffset + n)),
        );
        assert.deepEqual(
          Array.from(buf.subarray(p.dstOffset, p.dstOffset + n)),
          Array.from(orig.subarray(p.srcOffset, p.srcOffset + n)),
        );
      }
    }
    // Neighbouring memory was not touched by the swaps.
    for (let i = 0; i < packets.length; i++) {
      const end = 1000 * i + 3 + packets[i].bytes.length;
      assert.ok(big.subarray(end, 1000 * (i + 1) + 3).every((b) => b === 0), `after packet ${i}`);
    }
  });
});
