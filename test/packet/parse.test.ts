import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MalformedCode, ParsedPacket, parsePacket } from '../../src/packet/parse.ts';
import { corpus } from './corpus.ts';
import { ipv4, ipv6, pattern, tcpSegment, udpDatagram, icmpMessage } from '../helpers/packet-builders.ts';

function parse(bytes: Uint8Array, off = 0, len = bytes.length - off): ParsedPacket {
  const p = new ParsedPacket();
  parsePacket(bytes, off, len, p);
  return p;
}

describe('parsePacket on hand-built packets', () => {
  for (const c of corpus()) {
    it(c.name, () => {
      const p = parse(c.bytes);
      assert.equal(p.malformed, MalformedCode.None);
      assert.equal(p.family, c.family);
      assert.equal(p.protocol, c.protocol);
      assert.equal(p.hasTransport, c.hasTransport);
      assert.equal(p.fragment, c.fragment);
      assert.equal(p.transportOffset, c.transportAt);
      assert.equal(p.ipLength, c.bytes.length);
      assert.equal(p.transportOffset + p.transportLength, c.bytes.length);
      assert.equal(p.srcPort, c.srcPort ?? 0);
      assert.equal(p.dstPort, c.dstPort ?? 0);
      assert.equal(p.tcpFlags, c.tcpFlags ?? 0);
      assert.equal(p.icmpType, c.icmpType ?? 0);
      assert.equal(p.icmpId, c.icmpId ?? 0);
      assert.equal(p.addressLength, c.family === 4 ? 4 : 16);
    });
  }

  it('parses a packet at a non-zero offset inside a larger buffer, ignoring trailing bytes', () => {
    for (const c of corpus()) {
      const buf = new Uint8Array(c.bytes.length + 37);
      buf.set(c.bytes, 13);
      const p = parse(buf, 13, c.bytes.length + 24); // 24 trailing bytes that are not part of the packet
      assert.equal(p.malformed, 0, c.name);
      assert.equal(p.ipOffset, 13);
      assert.equal(p.ipLength, c.bytes.length, c.name);
      assert.equal(p.transportOffset, 13 + c.transportAt, c.name);
      assert.equal(p.srcOffset, 13 + (c.family === 4 ? 12 : 8));
      assert.equal(p.dstOffset, 13 + (c.family === 4 ? 16 : 24));
    }
  });

  it('one ParsedPacket reused: fields of an earlier packet do not leak into the next', () => {
    const p = new ParsedPacket();
    const [tcp] = corpus();
    const later = corpus().find((c) => c.name === 'ipv4 udp later fragment')!;
    assert.equal(parsePacket(tcp.bytes, 0, tcp.bytes.length, p), true);
    assert.equal(p.srcPort, 51000);
    assert.equal(parsePacket(later.bytes, 0, later.bytes.length, p), true);
    assert.equal(p.srcPort, 0);
    assert.equal(p.tcpFlags, 0);
    assert.equal(p.hasTransport, false);
  });
});

describe('parsePacket classifies malformed packets', () => {
  const tcp4 = ipv4({ src: '192.0.2.1', dst: '203.0.113.1', proto: 6, payload: tcpSegment({ srcPort: 1, dstPort: 2, flags: 2 }) });
  const tcp6 = ipv6({ src: '2001:db8::1', dst: '2001:db8::2', proto: 6, payload: tcpSegment({ srcPort: 1, dstPort: 2, flags: 2 }) });
  const mutate = (b: Uint8Array, f: (x: Uint8Array) => void): Uint8Array => {
    const c = Uint8Array.from(b);
    f(c);
    return c;
  };
  const cases: [string, Uint8Array, number, MalformedCode][] = [
    ['empty buffer', new Uint8Array(0), 0, MalformedCode.Truncated],
    ['ipv4 shorter than 20 bytes', tcp4.subarray(0, 19), 19, MalformedCode.Truncated],
    ['ipv6 shorter than 40 bytes', tcp6.subarray(0, 39), 39, MalformedCode.Truncated],
    ['version 5', mutate(tcp4, (x) => (x[0] = 0x55)), tcp4.length, MalformedCode.BadVersion],
    ['version 0', mutate(tcp4, (x) => (x[0] = 0x05)), tcp4.length, MalformedCode.BadVersion],
    ['IHL 4', mutate(tcp4, (x) => (x[0] = 0x44)), tcp4.length, MalformedCode.BadHeaderLength],
    [
      'IHL 15 beyond total length',
      mutate(tcp4, (x) => ((x[0] = 0x4f), (x[2] = 0), (x[3] = 40))),
      tcp4.length,
      MalformedCode.BadHeaderLength,
    ],
    [
      'total length above buffer',
      mutate(tcp4, (x) => ((x[2] = 0), (x[3] = tcp4.length + 1))),
      tcp4.length,
      MalformedCode.Truncated,
    ],
    ['total length 19', mutate(tcp4, (x) => ((x[2] = 0), (x[3] = 19))), tcp4.length, MalformedCode.BadTotalLength],
    ['ipv6 payload length above buffer', mutate(tcp6, (x) => (x[5] += 1)), tcp6.length, MalformedCode.Truncated],
    ['tcp data offset 4', mutate(tcp4, (x) => (x[20 + 12] = 0x40)), tcp4.length, MalformedCode.BadTransportHeader],
    [
      'tcp data offset past payload',
      mutate(tcp4, (x) => (x[20 + 12] = 0xf0)),
      tcp4.length,
      MalformedCode.BadTransportHeader,
    ],
    ['ipv6 tcp data offset 0', mutate(tcp6, (x) => (x[40 + 12] = 0x00)), tcp6.length, MalformedCode.BadTransportHeader],
    [
      'tcp header cut by total length',
      mutate(tcp4, (x) => ((x[2] = 0), (x[3] = 30))),
      tcp4.length,
      MalformedCode.BadTransportHeader,
    ],
  ];
  for (const [name, bytes, len, code] of cases) {
    it(name, () => {
      const p = new ParsedPacket();
      assert.equal(parsePacket(bytes, 0, len, p), false);
      assert.equal(p.malformed, code);
    });
  }

  it('udp length field larger than the payload, or below 8', () => {
    const udp = ipv4({ src: '192.0.2.1', dst: '203.0.113.1', proto: 17, payload: udpDatagram(1, 2, pattern(10)) });
    assert.equal(parse(mutate(udp, (x) => (x[25] += 1))).malformed, MalformedCode.BadTransportHeader);
    assert.equal(parse(mutate(udp, (x) => ((x[24] = 0), (x[25] = 7)))).malformed, MalformedCode.BadTransportHeader);
    // A UDP length shorter than the IP payload is tolerated (the rest is padding): only "too long" is an error.
    assert.equal(parse(mutate(udp, (x) => ((x[24] = 0), (x[25] = 8)))).malformed, MalformedCode.None);
  });

  it('icmp shorter than 8 bytes', () => {
    const icmp = ipv4({ src: '192.0.2.1', dst: '203.0.113.1', proto: 1, payload: icmpMessage(8, 0, 1, 1, []).slice(0, 7) });
    assert.equal(parse(icmp).malformed, MalformedCode.BadTransportHeader);
  });

  it('ipv6 extension header running off the end of the payload', () => {
    const p = ipv6({ src: '2001:db8::1', dst: '2001:db8::2', proto: 59, ext: [{ type: 60, body: [1, 4, 0, 0, 0, 0] }], payload: [] });
    assert.equal(parse(p).malformed, MalformedCode.None);
    const longer = mutate(p, (x) => (x[41] = 1)); // claims 16 bytes, 8 present
    assert.equal(parse(longer).malformed, MalformedCode.BadExtensionHeader);
    const chainOnly = ipv6({ src: '2001:db8::1', dst: '2001:db8::2', proto: 6, ext: [{ type: 0, body: [] }], payload: [] });
    const cut = mutate(chainOnly, (x) => ((x[4] = 0), (x[5] = 1))); // payload length 1: not even next-header + length
    assert.equal(parse(cut, 0, cut.length).malformed, MalformedCode.BadExtensionHeader);
    const frag = ipv6({ src: '2001:db8::1', dst: '2001:db8::2', proto: 17, ext: [{ type: 44, fragmentOffset: 8 }], payload: [] });
    const fragCut = mutate(frag, (x) => (x[5] = 6)); // fragment header needs 8 bytes
    assert.equal(parse(fragCut).malformed, MalformedCode.BadExtensionHeader);
  });

  it('an authentication header running off the end of the payload (its length counts 4-byte units)', () => {
    const p = ipv6({ src: '2001:db8::1', dst: '2001:db8::2', proto: 17, ext: [{ type: 51 }], payload: udpDatagram(1, 2, []) });
    assert.equal(parse(p).malformed, MalformedCode.None);
    assert.equal(parse(p).transportOffset, 56);
    const longer = mutate(p, (x) => (x[41] = 5)); // (5 + 2) * 4 = 28 bytes claimed, 16 + 8 present
    assert.equal(parse(longer).malformed, MalformedCode.BadExtensionHeader);
  });

  it('IPv4: the ports behind an authentication header are read (issue 19), and an AH running off the end is refused', () => {
    // AH (RFC 4302): next header, length (4-byte units - 2), reserved, SPI, sequence, 12-byte ICV = 24 bytes.
    const ah = (next: number, lengthByte = 4): number[] => [next, lengthByte, 0, 0, 0, 0, 0x10, 1, 0, 0, 0, 7, ...new Array(12).fill(0xab)];
    const tcp = tcpSegment({ srcPort: 40000, dstPort: 8080, flags: 0x02 });
    const p = parse(ipv4({ src: '192.0.2.1', dst: '203.0.113.1', proto: 51, payload: [...ah(6), ...tcp] }));
    assert.equal(p.malformed, MalformedCode.None);
    assert.equal(p.protocol, 6);
    assert.equal(p.hasTransport, true);
    assert.equal(p.transportOffset, 44);
    assert.equal(p.dstPort, 8080);
    const twice = parse(ipv4({ src: '192.0.2.1', dst: '203.0.113.1', proto: 51, payload: [...ah(51), ...ah(17), ...udpDatagram(5, 53, [1, 2])] }));
    assert.equal(twice.malformed, MalformedCode.None);
    assert.equal(twice.dstPort, 53);
    const longer = parse(ipv4({ src: '192.0.2.1', dst: '203.0.113.1', proto: 51, payload: [...ah(6, 40), ...tcp] }));
    assert.equal(longer.malformed, MalformedCode.BadExtensionHeader);
    const esp = parse(ipv4({ src: '192.0.2.1', dst: '203.0.113.1', proto: 50, payload: pattern(40) }));
    assert.equal(esp.malformed, MalformedCode.None);
    assert.equal(esp.hasTransport, false, 'ESP is encrypted: no ports behind it');
  });

  it('hop-by-hop anywhere but first is refused', () => {
    const p = ipv6({ src: '2001:db8::1', dst: '2001:db8::2', proto: 59, ext: [{ type: 60 }, { type: 0 }], payload: [] });
    assert.equal(parse(p).malformed, MalformedCode.BadExtensionHeader);
  });

  it('a transport header that does not fit in the first fragment', () => {
    const p = ipv4({ src: '192.0.2.1', dst: '203.0.113.1', proto: 6, moreFragments: true, payload: pattern(16) });
    assert.equal(parse(p).malformed, MalformedCode.BadTransportHeader);
  });
});
