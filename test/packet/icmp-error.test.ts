/**
 * ICMP/ICMPv6 errors through reflection. The scenario is the real one: a client's packet L → R is reflected to
 * R → L, the host answers it with an error L → R embedding R → L (built here as the kernel builds it), and the
 * error is reflected in turn. Afterwards the embedded packet must read exactly as the client sent it (L → R), so the
 * client's socket recognises it; every checksum is then recomputed with the independent reference of
 * test/helpers/packet-builders.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ChecksumState, transportChecksumState } from '../../src/packet/checksum.ts';
import { EmbeddedPacket, parseEmbeddedPacket } from '../../src/packet/icmp-error.ts';
import { ParsedPacket, parsePacket } from '../../src/packet/parse.ts';
import { reflectEmbeddedPacket, reflectPacket } from '../../src/packet/reflect.ts';
import { rng } from '../helpers/rng.ts';
import {
  addressBytes, icmpMessage, ipv4, ipv6, pattern, referenceChecksum, referenceTransportValid, tcpSegment, udpDatagram,
  withChecksum, type ExtensionHeader,
} from '../helpers/packet-builders.ts';

const L4 = '192.0.2.10';
const R4 = '203.0.113.7';
const L6 = '2001:db8::10';
const R6 = '2001:db8:ffff::7';

function parsed(bytes: Uint8Array): ParsedPacket {
  const p = new ParsedPacket();
  assert.equal(parsePacket(bytes, 0, bytes.length, p), true, `parse: malformed ${p.malformed}`);
  return p;
}

/** What the client sends: L → R, with a valid transport checksum. */
function clientPacket(
  family: 4 | 6, proto: 6 | 17 | 1 | 58, opts: { ipOptions?: number[]; ext?: ExtensionHeader[]; data?: number[] } = {},
): Uint8Array {
  const [src, dst] = family === 4 ? [L4, R4] : [L6, R6];
  const data = opts.data ?? pattern(40, 5);
  const segment = proto === 6
    ? tcpSegment({ srcPort: 51000, dstPort: 9, flags: 0x02, options: [2, 4, 5, 0xb4] })
    : proto === 17
      ? udpDatagram(50000, 9, data)
      : icmpMessage(proto === 1 ? 8 : 128, 0, 0x77, 1, data);
  const payload = withChecksum(addressBytes(src), addressBytes(dst), proto, segment);
  return family === 4
    ? ipv4({ src, dst, proto, payload, options: opts.ipOptions })
    : ipv6({ src, dst, proto, payload, ext: opts.ext });
}

/** The client's packet as the engine delivers it (reflected: R → L). */
function delivered(client: Uint8Array): Uint8Array {
  const bytes = Uint8Array.from(client);
  reflectPacket(bytes, parsed(bytes));
  return bytes;
}

/**
 * The error the host sends about `offending`: from the address it was sent to, back to its source, carrying its
 * first `keep` bytes (RFC 792 / RFC 4443), with `rest` as the 4 type-specific header bytes (MTU, pointer, unused).
 */
function hostError(
  offending: Uint8Array, type: number, code: number, keep: number, rest = 0, outerOptions?: number[],
): Uint8Array {
  const v4 = offending[0] >> 4 === 4;
  const n = v4 ? 4 : 16;
  const at = v4 ? 12 : 8;
  const src = Array.from(offending.subarray(at + n, at + 2 * n));
  const dst = Array.from(offending.subarray(at, at + n));
  const text = (b: number[]) => (v4
    ? b.join('.')
    : Array.from({ length: 8 }, (_, i) => ((b[2 * i] << 8) | b[2 * i + 1]).toString(16)).join(':'));
  const proto = v4 ? 1 : 58;
  const message = withChecksum(
    src,
    dst,
    proto,
    icmpMessage(type, code, rest >>> 16, rest & 0xffff, Array.from(offending.subarray(0, keep))),
  );
  return v4
    ? ipv4({ src: text(src), dst: text(dst), proto, payload: message, options: outerOptions })
    : ipv6({ src: text(src), dst: text(dst), proto, payload: message });
}

/** Reference check of every checksum in an ICMP error and its embedded packet (as far as it is present). */
function assertChecksumsValid(bytes: Uint8Array, embeddedComplete: boolean): void {
  const p = parsed(bytes);
  const n = p.addressLength;
  const src = Array.from(bytes.subarray(p.srcOffset, p.srcOffset + n));
  const dst = Array.from(bytes.subarray(p.dstOffset, p.dstOffset + n));
  if (p.family === 4) {
    assert.equal(
      referenceChecksum(bytes.subarray(0, (bytes[0] & 15) * 4)),
      0,
      'outer IPv4 header checksum',
    );
  }
  const message = bytes.subarray(p.transportOffset, p.ipLength);
  assert.equal(
    referenceTransportValid(src, dst, p.protocol, message),
    true,
    p.family === 4 ? 'ICMP checksum' : 'ICMPv6 checksum (pseudo-header)',
  );
  assert.equal(transportChecksumState(bytes, p), ChecksumState.Valid, 'src/packet/checksum.ts agrees');
  const inner = message.subarray(8);
  if (p.family === 4) {
    assert.equal(
      referenceChecksum(inner.subarray(0, (inner[0] & 15) * 4)),
      0,
      'embedded IPv4 header checksum',
    );
  }
  if (embeddedComplete) {
    const e = parsed(Uint8Array.from(inner));
    const es = Array.from(inner.subarray(e.srcOffset, e.srcOffset + n));
    const ed = Array.from(inner.subarray(e.dstOffset, e.dstOffset + n));
    assert.equal(
      referenceTransportValid(es, ed, e.protocol, inner.subarray(e.transportOffset, e.ipLength)),
      true,
      'embedded transport checksum',
    );
  }
}

/** Reflect the error and check the whole contract; returns the reflected bytes. */
function reflectError(client: Uint8Array, error: Uint8Array, keep: number): Uint8Array {
  const before = Uint8Array.from(error);
  const bytes = Uint8Array.from(error);
  const p = parsed(bytes);
  assert.equal(p.icmpError, true);
  const complete = keep >= client.length;
  assertChecksumsValid(bytes, complete);

  reflectPacket(bytes, p);

  const n = p.addressLength;
  // Outer: swapped.
  assert.deepEqual(bytes.subarray(p.srcOffset, p.srcOffset + n), before.subarray(p.dstOffset, p.dstOffset + n));
  assert.deepEqual(bytes.subarray(p.dstOffset, p.dstOffset + n), before.subarray(p.srcOffset, p.srcOffset + n));
  // Embedded: exactly what the client sent, as far as it is carried.
  const inner = p.transportOffset + 8;
  assert.deepEqual(
    bytes.subarray(inner, inner + keep),
    client.subarray(0, keep),
    'embedded packet reads as the client sent it',
  );
  // Nothing but the four address fields changed.
  const es = inner + (n === 4 ? 12 : 8);
  const changed = [p.srcOffset, p.dstOffset, es, es + n];
  for (let i = 0; i < bytes.length; i++) {
    if (changed.some((a) => i >= a && i < a + n)) continue;
    assert.equal(bytes[i], before[i], `byte ${i} changed`);
  }
  // Checksum fields were not touched, yet every checksum is still right.
  assertChecksumsValid(bytes, complete);
  const again = Uint8Array.from(bytes);
  reflectPacket(again, parsed(again));
  assert.deepEqual(again, before, 'reflecting twice restores the packet');
  return bytes;
}

describe('reflecting ICMP errors swaps the embedded packet too', () => {
  /** One row a case: the client's packet, the error's type and code, then how many bytes of the client's packet it
   *  carries (default all), its 4 type-specific bytes (MTU, pointer) and options on its outer IPv4 header. */
  type Case = [name: string, client: () => Uint8Array, type: number, code: number, keep?: number, rest?: number,
    outerOptions?: number[]];
  const cases: Case[] = [
    ['ipv4 port unreachable, whole udp datagram embedded (Linux)', () => clientPacket(4, 17), 3, 3],
    ['ipv4 port unreachable, ip header + 8 bytes (RFC 792 minimum)', () => clientPacket(4, 17), 3, 3, 28],
    ['ipv4 port unreachable, embedded udp header cut after the ports', () => clientPacket(4, 17), 3, 3, 24],
    ['ipv4 port unreachable, embedded ip header only', () => clientPacket(4, 17), 3, 3, 20],
    ['ipv4 fragmentation needed (mtu in the header), tcp with ip options',
      () => clientPacket(4, 6, { ipOptions: [1, 1, 1, 0] }), 3, 4, undefined, 1280],
    ['ipv4 time exceeded, tcp cut inside its header', () => clientPacket(4, 6), 11, 0, 30],
    ['ipv4 parameter problem (pointer), icmp echo embedded', () => clientPacket(4, 1), 12, 0, undefined, 0x09000000],
    ['ipv4 error with ip options on the outer header', () => clientPacket(4, 17), 3, 3, undefined, undefined,
      [1, 1, 1, 1, 1, 1, 1, 0]],
    ['ipv6 port unreachable, whole udp datagram embedded', () => clientPacket(6, 17), 1, 4],
    ['ipv6 packet too big (mtu), tcp cut short', () => clientPacket(6, 6, { data: pattern(200) }), 2, 0, 70, 1280],
    ['ipv6 time exceeded, embedded ip header only', () => clientPacket(6, 17), 3, 0, 40],
    ['ipv6 parameter problem, embedded dstopts + ah + udp',
      () => clientPacket(6, 17, { ext: [{ type: 60 }, { type: 51 }] }), 4, 1, undefined, 40],
    ['ipv6 port unreachable, embedded icmpv6 echo', () => clientPacket(6, 58), 1, 4],
  ];
  for (const [name, makeClient, type, code, keepAtMost, rest, outerOptions] of cases) {
    it(name, () => {
      const client = makeClient();
      const keep = Math.min(keepAtMost ?? client.length, client.length);
      const error = hostError(delivered(client), type, code, keep, rest, outerOptions);
      reflectError(client, error, keep);
    });
  }

  it('messages that are not errors keep their body as it is, even when it looks like a packet', () => {
    const inside = Array.from(delivered(clientPacket(4, 17)));
    const inside6 = Array.from(delivered(clientPacket(6, 17)));
    const v4 = (type: number) =>
      ipv4({ src: L4, dst: R4, proto: 1, payload: withChecksum([], [], 1, icmpMessage(type, 0, 1, 1, inside)) });
    const v6 = (type: number) => ipv6({
      src: L6, dst: R6, proto: 58,
      payload: withChecksum(addressBytes(L6), addressBytes(R6), 58, icmpMessage(type, 0, 1, 1, inside6)),
    });
    // Echo request/reply, redirect (5: only routers send it), source quench (4, deprecated), router advertisement,
    // ICMPv6 echo, neighbour solicitation, an unassigned error-range type (100).
    for (const bytes of [v4(8), v4(0), v4(5), v4(4), v4(9), v6(128), v6(129), v6(135), v6(100)]) {
      const before = Uint8Array.from(bytes);
      const p = parsed(bytes);
      assert.equal(p.icmpError, false, `type ${bytes[p.transportOffset]}`);
      reflectPacket(bytes, p);
      assert.deepEqual(
        bytes.subarray(p.transportOffset),
        before.subarray(p.transportOffset),
        `type ${before[p.transportOffset]}: body untouched`,
      );
    }
  });
});

describe('parseEmbeddedPacket', () => {
  const fields = (bytes: Uint8Array) => {
    const p = parsed(bytes);
    const e = new EmbeddedPacket();
    parseEmbeddedPacket(bytes, p, e);
    const base = p.transportOffset + 8;
    return {
      present: e.present,
      at: e.ipOffset - base,
      protocol: e.protocol,
      fragment: e.fragment,
      hasTransport: e.hasTransport,
      transportAt: e.transportOffset - base,
      transportLength: e.transportLength,
      ports: e.hasPorts ? [e.srcPort, e.dstPort] : null,
      checksumAt: e.checksumOffset < 0 ? -1 : e.checksumOffset - base,
    };
  };
  const error = (client: Uint8Array, keep = client.length, type?: number) => hostError(
    delivered(client),
    type ?? (client[0] >> 4 === 4 ? 3 : 1),
    3,
    Math.min(keep, client.length),
  );

  it('reports the embedded ports and where the embedded checksum is, as far as the bytes are present', () => {
    const udp4 = clientPacket(4, 17);
    const tcp4 = clientPacket(4, 6, { ipOptions: [1, 1, 1, 0] });
    const udp6 = clientPacket(6, 17, { ext: [{ type: 0 }, { type: 51 }] });
    const whole = { present: true, at: 0, fragment: false, hasTransport: true };
    // One row a case: what is embedded (the client's packet, cut to `keep` bytes), then the fields expected of it.
    const rows: [what: string, client: Uint8Array, keep: number, expected: Partial<ReturnType<typeof fields>>][] = [
      ['whole udp/ipv4', udp4, udp4.length, {
        ...whole, protocol: 17, transportAt: 20, transportLength: udp4.length - 20, ports: [50000, 9], checksumAt: 26,
      }],
      ['udp/ipv4 up to its checksum', udp4, 28, { checksumAt: 26 }],
      ['udp/ipv4 cut inside its checksum', udp4, 27,
        { ...whole, protocol: 17, transportAt: 20, transportLength: 7, ports: [50000, 9], checksumAt: -1 }],
      ['udp/ipv4 with three bytes of header: cannot hold both ports', udp4, 23, { ports: null }],
      ['tcp/ipv4 with ip options, up to its checksum', tcp4, 24 + 18,
        { ...whole, protocol: 6, transportAt: 24, transportLength: 18, ports: [51000, 9], checksumAt: 24 + 16 }],
      ['tcp/ipv4 cut inside its checksum: not reported', tcp4, 24 + 17, { checksumAt: -1 }],
      ['whole udp/ipv6 behind extension headers', udp6, udp6.length, {
        ...whole, protocol: 17, transportAt: 64, transportLength: udp6.length - 64, ports: [50000, 9], checksumAt: 70,
      }],
      // Extension headers cut off: the addresses are there, the transport is unknown.
      ['udp/ipv6 cut inside its extension headers', udp6, 50,
        { present: true, protocol: 51, hasTransport: false, ports: null, checksumAt: -1 }],
      ['whole icmpv6 echo', clientPacket(6, 58), Infinity, { checksumAt: 42 }],
    ];
    for (const [what, client, keep, expected] of rows) {
      const actual = fields(error(client, keep));
      const picked = Object.fromEntries(Object.keys(expected).map((k) => [k, actual[k as keyof typeof actual]]));
      assert.deepEqual(picked, expected, what);
    }
  });

  it('fragments: a first fragment has its header, a later one has none', () => {
    const firstBytes = udpDatagram(50000, 9, pattern(100)).slice(0, 48);
    const first4 = ipv4({ src: L4, dst: R4, proto: 17, moreFragments: true, payload: firstBytes });
    assert.deepEqual([fields(error(first4)).fragment, fields(error(first4)).ports], [true, [50000, 9]]);
    const later4 = ipv4({ src: L4, dst: R4, proto: 17, fragmentOffset: 48, payload: pattern(60) });
    assert.deepEqual(
      [fields(error(later4)).present, fields(error(later4)).fragment, fields(error(later4)).hasTransport],
      [true, true, false],
    );
    const later6 = ipv6({ src: L6, dst: R6, proto: 17, ext: [{ type: 44, fragmentOffset: 48 }], payload: pattern(60) });
    assert.deepEqual(
      [fields(error(later6)).protocol, fields(error(later6)).fragment, fields(error(later6)).hasTransport],
      [17, true, false],
    );
    const first6 = ipv6({ src: L6, dst: R6, proto: 17, ext: [{ type: 44, moreFragments: true }], payload: firstBytes });
    assert.deepEqual(fields(error(first6)).ports, [50000, 9]);
  });

  it('reflectEmbeddedPacket swaps only the embedded addresses and reports what it found', () => {
    const client = clientPacket(4, 17);
    const bytes = hostError(delivered(client), 3, 3, client.length);
    const p = parsed(bytes);
    const e = new EmbeddedPacket();
    assert.equal(reflectEmbeddedPacket(bytes, p, e), true);
    assert.deepEqual(bytes.subarray(e.ipOffset, e.ipOffset + client.length), client, 'embedded: as the client sent it');
    assert.deepEqual(Array.from(bytes.subarray(p.srcOffset, p.srcOffset + 4)), addressBytes(L4), 'outer: untouched');
    assert.deepEqual([e.srcPort, e.dstPort], [50000, 9]);
    const echo = parsed(Uint8Array.from(clientPacket(4, 1)));
    assert.equal(reflectEmbeddedPacket(clientPacket(4, 1), echo, e), false);
    assert.equal(e.present, false);
  });
});

describe('malformed embedded packets', () => {
  /** An error whose ICMP body is `body` (checksummed), outer L → R. */
  const v4Error = (body: number[]) =>
    ipv4({ src: L4, dst: R4, proto: 1, payload: withChecksum([], [], 1, icmpMessage(3, 3, 0, 0, body)) });
  const v6Error = (body: number[]) => ipv6({
    src: L6, dst: R6, proto: 58,
    payload: withChecksum(addressBytes(L6), addressBytes(R6), 58, icmpMessage(1, 4, 0, 0, body)),
  });
  const inner4 = Array.from(delivered(clientPacket(4, 17)));
  const inner6 = Array.from(delivered(clientPacket(6, 17)));
  const edit = (b: number[], f: (x: number[]) => void) => {
    const c = [...b];
    f(c);
    return c;
  };

  const cases: [string, Uint8Array][] = [
    ['ipv4: empty body', v4Error([])],
    ['ipv4: 19 bytes of header', v4Error(inner4.slice(0, 19))],
    ['ipv4: an IPv6 packet inside', v4Error(inner6)],
    ['ipv4: version 5', v4Error(edit(inner4, (x) => (x[0] = 0x55)))],
    ['ipv4: IHL 4', v4Error(edit(inner4, (x) => (x[0] = 0x44)))],
    ['ipv4: IHL 15, longer than the body', v4Error(edit(inner4, (x) => (x[0] = 0x4f)).slice(0, 40))],
    ['ipv4: total length below the header', v4Error(edit(inner4, (x) => ((x[2] = 0), (x[3] = 19))))],
    ['ipv6: 39 bytes of header', v6Error(inner6.slice(0, 39))],
    ['ipv6: an IPv4 packet inside', v6Error(inner4.concat(pattern(40)))],
  ];
  for (const [name, bytes] of cases) {
    it(`${name}: the outer packet is reflected, the body is left alone`, () => {
      const before = Uint8Array.from(bytes);
      const p = parsed(bytes);
      assert.equal(p.icmpError, true);
      const e = new EmbeddedPacket();
      assert.equal(parseEmbeddedPacket(bytes, p, e), false);
      reflectPacket(bytes, p);
      const n = p.addressLength;
      assert.deepEqual(bytes.subarray(p.srcOffset, p.srcOffset + n), before.subarray(p.dstOffset, p.dstOffset + n));
      assert.deepEqual(bytes.subarray(p.transportOffset), before.subarray(p.transportOffset));
    });
  }

  it('embedded lengths that lie (bigger than the bytes present, zero, extension header lengths past the end) ' +
    'stay inside the message', () => {
    const withExtensions = Array.from(delivered(clientPacket(6, 17, { ext: [{ type: 60 }, { type: 51 }] })));
    const lies = [
      v4Error(edit(inner4, (x) => ((x[2] = 0xff), (x[3] = 0xff)))),
      v6Error(edit(inner6, (x) => ((x[4] = 0xff), (x[5] = 0xff)))),
      v6Error(edit(inner6, (x) => ((x[4] = 0), (x[5] = 0)))),
      v6Error(edit(withExtensions, (x) => (x[41] = 0xff))),
      v6Error(edit(withExtensions, (x) => (x[49] = 0xff))),
    ];
    for (const bytes of lies) {
      const p = parsed(bytes);
      const e = new EmbeddedPacket();
      assert.equal(parseEmbeddedPacket(bytes, p, e), true);
      const end = p.transportOffset + p.transportLength;
      assert.ok(e.transportOffset + e.transportLength <= end || !e.hasTransport);
      assert.ok(e.checksumOffset + 2 <= end);
    }
  });

  it('seeded fuzz: cut and mutated embedded packets never throw, stay in bounds, and reflect twice to the original',
    () => {
    const random = rng(0x1c4e);
    const clients = [
      clientPacket(4, 17),
      clientPacket(4, 6, { ipOptions: [1, 1, 1, 0] }),
      clientPacket(6, 17, { ext: [{ type: 0 }, { type: 51 }, { type: 44, moreFragments: true }] }),
      clientPacket(6, 6),
      clientPacket(6, 58),
    ];
    const p = new ParsedPacket();
    const e = new EmbeddedPacket();
    let reflectedEmbedded = 0;
    for (let round = 0; round < 4000; round++) {
      const client = clients[round % clients.length];
      const inner = Array.from(delivered(client)).slice(0, Math.floor(random() * (client.length + 1)));
      for (let k = Math.floor(random() * 4); k > 0; k--) {
        if (inner.length) inner[Math.floor(random() * inner.length)] = Math.floor(random() * 256);
      }
      const bytes = client[0] >> 4 === 4 ? v4Error(inner) : v6Error(inner);
      assert.equal(parsePacket(bytes, 0, bytes.length, p), true);
      const end = p.transportOffset + p.transportLength;
      if (parseEmbeddedPacket(bytes, p, e)) {
        reflectedEmbedded++;
        assert.ok(e.dstOffset + e.addressLength <= end && e.srcOffset >= p.transportOffset + 8);
        if (e.hasTransport) assert.ok(e.transportOffset >= e.ipOffset && e.transportOffset + e.transportLength <= end);
        if (e.hasPorts) assert.ok(e.transportOffset + 4 <= end);
        if (e.checksumOffset >= 0) assert.ok(e.checksumOffset + 2 <= end);
      }
      const before = Uint8Array.from(bytes);
      reflectPacket(bytes, p);
      assert.equal(
        transportChecksumState(bytes, p),
        ChecksumState.Valid,
        'the ICMP checksum survives whatever the body holds',
      );
      assert.equal(parsePacket(bytes, 0, bytes.length, p), true);
      reflectPacket(bytes, p);
      assert.deepEqual(bytes, before);
    }
    assert.ok(
      reflectedEmbedded > 1000,
      `only ${reflectedEmbedded} rounds had an embedded packet: the fuzz would prove little`,
    );
  });
});
