/**
 * Real packets, captured with tcpdump from curl / ping / dig traffic between two network namespaces
 * (test/fixtures/capture.ts regenerates them). Every one must parse, and reflect with every checksum still right.
 * Captured TCP/UDP checksums are offloaded ("partial": only the pseudo-header sum, left for the NIC) because veth
 * offloads them; ICMP ones are complete. Both kinds must survive reflection unchanged in kind.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ChecksumState, fillTransportChecksum, isIpv4HeaderChecksumValid, transportChecksumState } from '../../src/packet/checksum.ts';
import { IpProto, ParsedPacket, parsePacket } from '../../src/packet/parse.ts';
import { reflectPacket } from '../../src/packet/reflect.ts';
import { FIXTURES, loadFixture } from './fixture-files.ts';
import { pseudoHeader, referenceChecksum } from '../helpers/packet-builders.ts';


function parsed(bytes: Uint8Array): ParsedPacket {
  const p = new ParsedPacket();
  assert.equal(parsePacket(bytes, 0, bytes.length, p), true, `malformed code ${p.malformed}`);
  return p;
}

function check(name: string, bytes: Uint8Array): { p: ParsedPacket; state: ChecksumState } {
  const p = parsed(bytes);
  if (p.family === 4) assert.equal(isIpv4HeaderChecksumValid(bytes, 0), true, `${name}: ipv4 header checksum`);
  return { p, state: transportChecksumState(bytes, p) };
}

describe('captured fixtures', () => {
  it('contain the traffic they were captured for', () => {
    const summary = (file: string) => {
      const kinds = new Set<string>();
      for (const { data } of loadFixture(file)) {
        const p = parsed(data);
        kinds.add(`${p.family}/${p.protocol}${p.fragment ? (p.hasTransport ? '/first-fragment' : '/later-fragment') : ''}`);
        if (p.protocol === IpProto.Tcp && (p.tcpFlags & 0x12) === 0x02) kinds.add(`${p.family}/syn->${p.dstPort}`);
        if (p.family === 6 && data[6] === IpProto.HopByHop) kinds.add(`6/hop-by-hop->${p.protocol}`);
        if (p.protocol === IpProto.Udp) kinds.add(`${p.family}/udp-port-${Math.min(p.srcPort, p.dstPort)}`);
      }
      return kinds;
    };
    const tcp = summary('tcp.pcap');
    for (const k of ['4/6', '6/6', '4/syn->8080', '6/syn->8080']) assert.ok(tcp.has(k), `tcp.pcap has ${k}`);
    const icmp = summary('icmp.pcap');
    for (const k of ['4/1', '6/58', '4/1/first-fragment', '4/1/later-fragment', '6/58/first-fragment', '6/58/later-fragment']) {
      assert.ok(icmp.has(k), `icmp.pcap has ${k}`);
    }
    // MLD reports carry a hop-by-hop header; it is walked, so they show as ICMPv6, never as protocol 0.
    assert.ok(icmp.has('6/hop-by-hop->58'), 'hop-by-hop header was walked to ICMPv6');
    const udp = summary('udp.pcap');
    for (const k of ['4/udp-port-5353', '6/udp-port-5353']) assert.ok(udp.has(k), `udp.pcap has ${k}`);
  });

  for (const file of FIXTURES) {
    it(`${file}: every packet reflects with addresses swapped, nothing else changed, checksums still right`, () => {
      const packets = loadFixture(file);
      assert.ok(packets.length >= 4);
      const seen = new Set<ChecksumState>();
      for (const { data, index } of packets) {
        const name = `${file}#${index}`;
        const before = Uint8Array.from(data);
        const { p, state } = check(name, data);
        seen.add(state);
        if (p.fragment) assert.equal(state, ChecksumState.NotApplicable, name);
        else if (p.protocol === IpProto.Icmp || p.protocol === IpProto.Icmpv6) {
          assert.equal(state, ChecksumState.Valid, `${name}: icmp checksums are complete`);
        } else assert.ok(state === ChecksumState.Valid || state === ChecksumState.Partial, `${name}: state ${state}`);

        reflectPacket(data, p);
        const n = p.addressLength;
        assert.deepEqual(
          data.subarray(p.srcOffset, p.srcOffset + n),
          before.subarray(p.dstOffset, p.dstOffset + n),
          name,
        );
        assert.deepEqual(
          data.subarray(p.dstOffset, p.dstOffset + n),
          before.subarray(p.srcOffset, p.srcOffset + n),
          name,
        );
        for (let i = 0; i < data.length; i++) {
          if ((i >= p.srcOffset && i < p.srcOffset + n) || (i >= p.dstOffset && i < p.dstOffset + n)) continue;
          assert.equal(data[i], before[i], `${name}: byte ${i}`);
        }
        assert.equal(check(name, data).state, state, `${name}: checksum state after reflection`);

        if (state === ChecksumState.Partial) {
          // Finishing an offloaded checksum (what a backend does when it must) gives a valid one, before or after.
          const finished = Uint8Array.from(before);
          const q = parsed(finished);
          fillTransportChecksum(finished, q);
          assert.equal(transportChecksumState(finished, q), ChecksumState.Valid, name);
          reflectPacket(finished, q);
          assert.equal(
            transportChecksumState(finished, parsed(finished)),
            ChecksumState.Valid,
            `${name}: finished + reflected`,
          );
        }
      }
      if (file !== 'icmp.pcap') assert.ok(seen.has(ChecksumState.Partial), 'captures hold offloaded checksums');
    });
  }

  it('icmp.pcap: fragmented echoes, reflected fragment by fragment, reassemble to a valid ICMP/ICMPv6 message', () => {
    // Reassembly by (family, id): upper-layer bytes placed at their fragment offset.
    const groups = new Map<string, { family: number; src: number[]; dst: number[]; proto: number; parts: [number, Uint8Array][] }>();
    for (const { data } of loadFixture('icmp.pcap')) {
      const p = parsed(data);
      if (!p.fragment) continue;
      reflectPacket(data, p);
      let id: number;
      let offset: number;
      if (p.family === 4) {
        id = (data[4] << 8) | data[5];
        offset = (((data[6] << 8) | data[7]) & 0x1fff) * 8;
      } else {
        assert.equal(data[6], IpProto.Fragment, 'captured v6 fragments carry only a fragment header');
        id = ((data[44] << 24) | (data[45] << 16) | (data[46] << 8) | data[47]) >>> 0;
        offset = ((data[42] << 8) | data[43]) & 0xfff8;
      }
      const key = `${p.family}/${id}`;
      const g = groups.get(key) ?? { family: p.family, src: [], dst: [], proto: p.protocol, parts: [] };
      g.src = Array.from(data.subarray(p.srcOffset, p.srcOffset + p.addressLength));
      g.dst = Array.from(data.subarray(p.dstOffset, p.dstOffset + p.addressLength));
      g.parts.push([offset, data.subarray(p.transportOffset, p.transportOffset + p.transportLength)]);
      groups.set(key, g);
    }
    assert.ok(groups.size >= 4, 'a request and a reply per family');
    for (const [key, g] of groups) {
      const length = Math.max(...g.parts.map(([o, b]) => o + b.length));
      const whole = new Uint8Array(length);
      for (const [o, b] of g.parts) whole.set(b, o);
      assert.ok(length > 2000, key);
      const pseudo = g.family === 4 ? [] : pseudoHeader(g.src, g.dst, g.proto, length);
      assert.equal(referenceChecksum([...pseudo, ...whole]), 0, `${key}: reassembled checksum`);
    }
  });
});
