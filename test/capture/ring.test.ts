/**
 * The capture ring and tap without an engine: records written by the worker side come out of the reader side
 * intact and in order across wrap-arounds; a full ring counts drops instead of overwriting; filters select in the
 * tap; and a pcapng file made from the data plane's real verdicts (reflected, passed, shield-dropped, malformed, forged source)
 * reads back in tshark with those verdicts and the original addresses.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { CaptureEncoder } from '../../src/capture/encoder.ts';
import { compileCaptureSpec, parseCaptureFilter, type CaptureFilter } from '../../src/capture/filter.ts';
import { pcapngHeader, pcapngInterface, pcapngPacket } from '../../src/capture/pcapng.ts';
import { decodeRecords, recordBytes, RECORD_HEADER_BYTES } from '../../src/capture/record.ts';
import { createRingBuffer, MIN_RING_BYTES, RingReader, RingWriter } from '../../src/capture/ring.ts';
import { packetComment, summarize } from '../../src/capture/summary.ts';
import { CaptureTaps } from '../../src/capture/tap.ts';
import { EngineCounters } from '../../src/engine/counters.ts';
import { Dataplane } from '../../src/engine/dataplane.ts';
import { Verdict } from '../../src/packet/verdicts.ts';
import { FlowTable } from '../../src/engine/flow-table.ts';
import { isRetroflectError } from '../../src/errors.ts';
import { tshark } from '../helpers/tshark.ts';
import { rng } from '../helpers/rng.ts';
import { icmpMessage, ipv4, ipv6, tcpSegment, udpDatagram } from '../helpers/packet-builders.ts';

const L4 = '198.51.100.2';
const R4 = '192.0.2.1';
const PEER = '203.0.113.9';
const R6 = '2001:db8::1';
const L6 = '2001:db8:1::2';

function writeRecord(w: RingWriter, n: number, tag: number): boolean {
  const at = w.reserve(n);
  if (at < 0) return false;
  w.view.setUint32(at, recordBytes(n), true);
  w.view.setUint32(at + 4, n, true);
  w.view.setUint32(at + 8, n, true);
  w.bytes[at + 12] = 1;
  w.bytes[at + 13] = 1;
  w.bytes[at + 14] = 0;
  w.bytes[at + 15] = 0;
  w.view.setFloat64(at + 16, tag, true);
  for (let i = 0; i < n; i++) w.bytes[at + RECORD_HEADER_BYTES + i] = (tag + i) & 0xff;
  w.commit();
  return true;
}

describe('capture ring', () => {
  it('delivers every record intact and in order across many wrap-arounds (random sizes and read pacing)', () => {
    const buf = createRingBuffer(MIN_RING_BYTES);
    const w = new RingWriter(buf);
    const r = new RingReader(buf);
    const rnd = rng(7);
    let next = 0;
    let expect = 0;
    let dropped = 0;
    for (let round = 0; round < 2000; round++) {
      const burst = 1 + Math.floor(rnd() * 20);
      for (let i = 0; i < burst; i++) {
        if (writeRecord(w, 1 + Math.floor(rnd() * 3000), next)) next++;
        else dropped++;
      }
      const { data, records } = r.read(1 + Math.floor(rnd() * 30), 1 << 20);
      const recs = decodeRecords(data);
      assert.equal(recs.length, records);
      for (const rec of recs) {
        assert.equal(rec.time, expect, 'records arrive in order, none lost or repeated');
        for (let i = 0; i < rec.data.length; i++) assert.equal(rec.data[i], (expect + i) & 0xff);
        expect++;
      }
    }
    const rest = decodeRecords(r.read(1e9, 1e9).data);
    expect += rest.length;
    assert.equal(expect, next);
    assert.equal(r.dropped(), dropped);
    assert.ok(dropped > 0 && next > 10_000, `exercise both paths (written ${next}, dropped ${dropped})`);
  });

  it('a full ring drops and counts new records instead of overwriting unread ones', () => {
    const buf = createRingBuffer(MIN_RING_BYTES);
    const w = new RingWriter(buf);
    const r = new RingReader(buf);
    let written = 0;
    while (writeRecord(w, 1000, written)) written++;
    for (let i = 0; i < 5; i++) assert.equal(writeRecord(w, 1000, 999), false);
    assert.equal(r.dropped(), 6);
    const recs = decodeRecords(r.read(1e9, 1e9).data);
    assert.deepEqual(recs.map((x) => x.time), Array.from({ length: written }, (_, i) => i));
    assert.ok(writeRecord(w, 1000, 1), 'room again once read');
  });
});

describe('capture filters', () => {
  it('refuses bad filters with codes naming the field, before anything starts', () => {
    const cases: [Record<string, unknown>, string, string][] = [
      [{ addresses: ['192.0.2.300'] }, 'E_INVALID_ADDRESS', ''],
      [{ addresses: [] }, 'E_INVALID_PARAMS', 'addresses'],
      [{ ports: [0] }, 'E_INVALID_PORT', 'ports[0]'],
      [{ ports: ['80'] }, 'E_INVALID_PORT', 'ports[0]'],
      [{ verdicts: ['dropped'] }, 'E_INVALID_PARAMS', 'verdicts[0]'],
      [{ protocols: ['sctp'] }, 'E_INVALID_PARAMS', 'protocols[0]'],
      [{ ports: Array.from({ length: 17 }, (_, i) => i + 1) }, 'E_INVALID_PARAMS', 'ports'],
    ];
    for (const [raw, code, field] of cases) {
      assert.throws(() => parseCaptureFilter(raw), (e: unknown) => isRetroflectError(e) && e.code === code && (field === '' || e.details?.field === field), JSON.stringify(raw));
    }
  });
});

/** Interface indexes the tap is told: outbound packets leave through 5, inbound ones arrive on 3. */
const OUT_IF = 5;
const IN_IF = 3;
const ifName = (r: { ifIndex: number }): string => `if${r.ifIndex}`;

/** Run packets through a real Dataplane and a tap, as worker.ts does; returns the records the ring got. */
function capture(filter: CaptureFilter, packets: { bytes: Uint8Array; outbound: boolean }[], snaplen = 256) {
  const dp = new Dataplane(new EngineCounters(), new FlowTable({ capacity: 64 }));
  dp.configure({ reflect: [{ address: R4, slot: 0 }, { address: R6, slot: 1 }], shield: [{ port: 8080, protocol: 'tcp', slot: 0 }] });
  const buffer = createRingBuffer();
  const taps = new CaptureTaps();
  taps.update([compileCaptureSpec(1, buffer, snaplen, parseCaptureFilter(filter as Record<string, unknown>))]);
  let time = Date.UTC(2026, 10, 28, 5, 0, 0);
  const verdicts: number[] = [];
  for (const p of packets) {
    const b = Buffer.from(p.bytes);
    const v = p.outbound ? dp.outbound(b, 0, b.length, time) : dp.inbound(b, 0, b.length, time);
    verdicts.push(v);
    taps.offer(b, 0, b.length, p.outbound, p.outbound ? OUT_IF : IN_IF, v, dp.dropCause, dp.packet, (time += 1.5));
  }
  const data = new RingReader(buffer).read(1e9, 1e9).data;
  return { records: decodeRecords(data), data, verdicts };
}

const TRAFFIC = [
  { bytes: ipv4({ src: L4, dst: R4, proto: 6, payload: tcpSegment({ srcPort: 40000, dstPort: 8081, flags: 0x02 }) }), outbound: true },
  { bytes: ipv4({ src: L4, dst: R4, proto: 17, payload: udpDatagram(40001, 5354, [1, 2, 3]) }), outbound: true },
  { bytes: ipv6({ src: L6, dst: R6, proto: 58, payload: icmpMessage(128, 0, 7, 1, [9, 9]) }), outbound: true },
  { bytes: ipv4({ src: PEER, dst: L4, proto: 6, payload: tcpSegment({ srcPort: 50000, dstPort: 8080, flags: 0x02 }) }), outbound: false },
  { bytes: ipv4({ src: PEER, dst: L4, proto: 6, payload: tcpSegment({ srcPort: 50001, dstPort: 22, flags: 0x02 }) }), outbound: false },
  // UDP length 200 in a 11-byte datagram: badTransportHeader.
  { bytes: (() => { const b = ipv4({ src: L4, dst: R4, proto: 17, payload: udpDatagram(40002, 5354, [1, 2, 3]) }); b[24] = 0; b[25] = 200; return b; })(), outbound: true },
  // Another host claiming to be the reflect address: forged source.
  { bytes: ipv4({ src: R4, dst: L4, proto: 6, payload: tcpSegment({ srcPort: 50002, dstPort: 22, flags: 0x02 }) }), outbound: false },
];

describe('capture tap (real Dataplane verdicts)', () => {
  it('records every verdict with direction, reason and the original addresses', () => {
    const { records, verdicts } = capture({}, TRAFFIC);
    assert.deepEqual(verdicts, [Verdict.Reflect, Verdict.Reflect, Verdict.Reflect, Verdict.Drop, Verdict.Pass, Verdict.Drop, Verdict.Drop]);
    assert.deepEqual(records.map((r) => r.ifIndex), [OUT_IF, OUT_IF, OUT_IF, IN_IF, IN_IF, OUT_IF, IN_IF]);
    const s = records.map((r) => summarize(r, ifName(r)));
    assert.deepEqual(s.map((x) => x.verdict), ['reflected', 'reflected', 'reflected', 'shieldDropped', 'passed', 'malformed', 'forgedSourceDropped']);
    assert.deepEqual(s.map((x) => x.interface), ['if5', 'if5', 'if5', 'if3', 'if3', 'if5', 'if3']);
    assert.equal(packetComment(s[6]), `verdict=forgedSourceDropped original=${R4}:50002 > ${L4}:22`);
    assert.deepEqual(s[0].before, { source: L4, sourcePort: 40000, destination: R4, destinationPort: 8081 });
    assert.deepEqual(s[0].after, { source: R4, sourcePort: 40000, destination: L4, destinationPort: 8081 });
    assert.equal(s[0].tcpFlags, 'SYN');
    assert.equal(s[2].before.destination, R6);
    assert.equal(s[2].protocol, 'icmpv6');
    assert.equal(s[3].direction, 'inbound');
    assert.deepEqual(s[3].after, { source: null, sourcePort: null, destination: null, destinationPort: null });
    assert.equal(s[5].malformedReason, 'badTransportHeader');
    assert.equal(packetComment(s[5]), `verdict=malformed reason=badTransportHeader original=${L4} > ${R4}`);
  });

  it('filters in the tap: address, port, verdict, protocol; malformed only when asked for or unfiltered', () => {
    const v = (f: CaptureFilter) => capture(f, TRAFFIC).records.map((r) => summarize(r, ifName(r)).verdict);
    assert.deepEqual(v({ addresses: [R6] }), ['reflected']);
    assert.deepEqual(v({ addresses: [PEER] }), ['shieldDropped', 'passed']);
    assert.deepEqual(v({ ports: [8080] }), ['shieldDropped']);
    assert.deepEqual(v({ ports: [5354] }), ['reflected']);
    assert.deepEqual(v({ verdicts: ['shieldDropped', 'malformed'] }), ['shieldDropped', 'malformed']);
    assert.deepEqual(v({ verdicts: ['forgedSourceDropped'] }), ['forgedSourceDropped']);
    assert.deepEqual(v({ protocols: ['udp'] }), ['reflected']);
    assert.deepEqual(v({ protocols: ['icmp'] }), ['reflected']);
    assert.deepEqual(v({ addresses: [R4], protocols: ['tcp'], ports: [8081] }), ['reflected']);
  });

  it('cuts packets at the snap length and keeps their original length', () => {
    const big = ipv4({ src: L4, dst: R4, proto: 17, payload: udpDatagram(1, 2, new Array(1400).fill(7)) });
    const [short] = capture({}, [{ bytes: big, outbound: true }], 64).records;
    assert.equal(short.data.length, 64);
    assert.equal(short.originalLength, big.length);
    const [full] = capture({}, [{ bytes: big, outbound: true }], 65535).records;
    assert.equal(full.data.length, big.length);
    assert.equal(summarize(short, 'x').before.destinationPort, 2, 'headers still decode from a cut packet');
  });

  it('the encoder: a pcapng interface block before the first packet through each new interface, once; summaries alike', () => {
    const { records, data } = capture({}, TRAFFIC);
    // The backend's own interface (index 0) is the one outbound packets leave through; inbound ones arrive on if3.
    const port = { backend: 'tun', interfaceName: (i: number) => (i === 0 || i === OUT_IF ? 'tun0' : `if${i}`) };
    const enc = new CaptureEncoder('pcapng', 256, port);
    assert.deepEqual(enc.interfaces.map((x) => x.name), ['tun0 outbound', 'tun0 inbound']);
    assert.equal(enc.interfaces[0].description, 'packets this host sent through tun0, as tun handed them to retroflect (after reflection)');
    assert.ok(enc.header()!.equals(pcapngHeader(enc.interfaces, 256)));
    const late = { name: 'if3 inbound', description: 'packets that arrived on if3 from other hosts, as retroflect saw them', direction: 'inbound' as const };
    const ids = [0, 0, 0, 2, 2, 0, 2];
    const epb = records.map((r, i) => pcapngPacket(ids[i], r, packetComment(summarize(r, port.interfaceName(r.ifIndex)))));
    const first = enc.encode(data);
    assert.equal(first.format, 'pcapng');
    assert.ok(first.format === 'pcapng' && first.packets === 7 && first.data.equals(Buffer.concat([...epb.slice(0, 3), pcapngInterface(late, 256), ...epb.slice(3)])));
    const again = enc.encode(data);
    assert.ok(again.format === 'pcapng' && again.data.equals(Buffer.concat(epb)), 'a known interface gets no second block');
    const summaries = new CaptureEncoder('summary', 256, port);
    assert.equal(summaries.header(), null);
    assert.deepEqual(summaries.encode(data), { format: 'summary', packets: records.map((r) => summarize(r, port.interfaceName(r.ifIndex))) });
  });

  it('a pcapng file of these packets reads back in tshark with verdict comments, directions and interfaces', async () => {
    const { records } = capture({}, TRAFFIC);
    const ifs = [
      { name: 'tun0 outbound', description: 'sent', direction: 'outbound' as const },
      { name: 'tun0 inbound', description: 'arrived', direction: 'inbound' as const },
    ];
    // A third interface block after the first packets, as the capture encoder adds one for a new interface.
    const late = { name: 'eth0 inbound', description: 'arrived on eth0', direction: 'inbound' as const };
    const packets = records.map((r, i) => pcapngPacket(i === 6 ? 2 : r.outbound ? 0 : 1, r, packetComment(summarize(r, ifName(r)))));
    const file = Buffer.concat([pcapngHeader(ifs, 256), ...packets.slice(0, 6), pcapngInterface(late, 256), packets[6]]);
    const dir = mkdtempSync(join(tmpdir(), 'rft-pcapng-'));
    try {
      writeFileSync(join(dir, 'x.pcapng'), file);
      const r = await tshark(['-r', join(dir, 'x.pcapng'), '-T', 'fields', '-E', 'separator=|', '-e', 'frame.interface_name', '-e', 'frame.packet_flags_direction', '-e', 'ip.src', '-e', 'ipv6.src', '-e', 'frame.comment', '-e', 'frame.len', '-e', 'frame.time_epoch']);
      assert.equal(r.code, 0, r.stderr);
      const rows = r.stdout.trim().split('\n').map((l) => l.split('|'));
      assert.equal(rows.length, 7);
      assert.deepEqual(rows.map((x) => x[0]), ['tun0 outbound', 'tun0 outbound', 'tun0 outbound', 'tun0 inbound', 'tun0 inbound', 'tun0 outbound', 'eth0 inbound']);
      assert.deepEqual(rows.map((x) => Number(x[1])), [2, 2, 2, 1, 1, 2, 1], 'epb_flags direction: 2 outbound, 1 inbound');
      assert.deepEqual(rows.map((x) => x[2] || x[3]), [R4, R4, R6, PEER, PEER, L4, R4]);
      assert.deepEqual(rows.map((x) => x[4].split(' ')[0]), ['verdict=reflected', 'verdict=reflected', 'verdict=reflected', 'verdict=shieldDropped', 'verdict=passed', 'verdict=malformed', 'verdict=forgedSourceDropped']);
      assert.equal(rows[0][4], `verdict=reflected original=${L4}:40000 > ${R4}:8081`);
      assert.equal(Number(rows[0][5]), TRAFFIC[0].bytes.length);
      assert.equal(Number(rows[0][6]).toFixed(4), (Date.UTC(2026, 10, 28, 5, 0, 0) / 1000 + 0.0015).toFixed(4));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
