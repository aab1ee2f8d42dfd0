/**
 * WinDivertPacketSource + WinDivertHostBackend against the ABI-compatible test double, in-process, with the real
 * Dataplane deciding every packet (the loop of src/engine/worker.ts, one turn at a time). Packets are hand-built
 * with checksums from an independent reference implementation (test/helpers/packet-builders.ts).
 */
import assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';
import { buildInterceptConfig } from '../../../src/config/intercept-config.ts';
import { Verdict } from '../../../src/packet/verdicts.ts';
import { WinDivertHostBackend } from '../../../src/packet-sources/windivert/host.ts';
import { createWinDivertPacketSource } from '../../../src/packet-sources/windivert/source.ts';
import { WinDivertParam } from '../../../src/packet-sources/windivert/ffi.ts';
import { doubleLastFilter } from './double-controls.ts';
import { addressBytes, referenceChecksum, referenceTransportValid } from '../../helpers/packet-builders.ts';
import { collectSent, DOUBLE_PATH, inboundAddr, inject, loadDouble, loopOnce, makeDataplane, offer, outboundAddr, packet, packetSeq } from '../../helpers/windivert-double.ts';

const { api, double } = loadDouble();
const R4 = '192.0.2.10';
const R6 = '2001:db8::10';
const LOCAL4 = '198.51.100.2';
const LOCAL6 = '2001:db8:1::2';
const PEER4 = '203.0.113.9';
const cfg = buildInterceptConfig([R4, R6], ['8080/tcp', '53/udp']);

beforeEach(() => double.reset());

async function started(config = cfg, priority = 0) {
  const backend = new WinDivertHostBackend({ dllPath: DOUBLE_PATH, priority });
  const init = await backend.start(config);
  const source = createWinDivertPacketSource(init, config);
  const { dataplane, counters } = makeDataplane(config);
  return { backend, init, source, dataplane, counters };
}

function transportValid(bytes: Buffer): boolean {
  const v4 = bytes[0] >> 4 === 4;
  const ihl = v4 ? (bytes[0] & 0x0f) * 4 : 40;
  const proto = v4 ? bytes[9] : bytes[6];
  const src = [...bytes.subarray(v4 ? 12 : 8, v4 ? 16 : 24)];
  const dst = [...bytes.subarray(v4 ? 16 : 24, v4 ? 20 : 40)];
  return referenceTransportValid(src, dst, proto, bytes.subarray(ihl));
}

test('start opens the capture handle (config filter, priority, queue settings), then the fragment-drop handle', async () => {
  const { backend, init } = await started(cfg, -42);
  assert.equal(double.openHandles(), 2, 'the capture handle, then the fragment-drop handle');
  assert.match(init.filter, /ip\.DstAddr == 192\.0\.2\.10 or ipv6\.DstAddr == 2001:db8::10/);
  assert.equal(doubleLastFilter(double), backend.describe().fragmentDropFilter);
  assert.match(doubleLastFilter(double), /^!loopback and inbound and ipv6 and fragment and /);
  assert.equal(double.lastPriority(), -42);
  assert.equal(double.lastLayer(), 0);
  assert.equal(Number(double.lastFlags()), 0x22, 'WINDIVERT_FLAG_FRAGMENTS | WINDIVERT_FLAG_DROP');
  const v = new BigUint64Array(1);
  assert.ok(api.getParam(init.handle, WinDivertParam.QueueLength, v));
  assert.equal(v[0], 8192n);
  assert.ok(api.getParam(init.handle, WinDivertParam.QueueSize, v));
  assert.equal(v[0], 8n * 1024n * 1024n);
  assert.equal(backend.describe().driverVersion, '2.2');
  assert.deepEqual(backend.plan(cfg).map((s) => s.action), ['load WinDivert', 'open WinDivert handle', 'open WinDivert fragment-drop handle']);
  assert.ok(backend.plan(cfg)[1].detail.endsWith(init.filter));
  await backend.stop();
  assert.equal(double.openHandles(), 0);
  await backend.stop(); // idempotent
});

test('300 packets arrive as a full batch of 255 and one of 45; every packet is split at its IP length', async () => {
  const { backend, source, dataplane, counters } = await started();
  const sizes: number[] = [];
  for (let i = 0; i < 300; i++) {
    const v6 = i % 3 === 0;
    const p = v6 ? packet(LOCAL6, R6, 17, 40000 + i, 5353, i, 4 + (i % 50)) : packet(LOCAL4, R4, 6, 40000 + i, 80, i, 4 + ((i * 7) % 1400));
    sizes.push(p.length);
    inject(double, p, outboundAddr(v6));
  }
  assert.equal(loopOnce(source, dataplane), 255);
  assert.equal(loopOnce(source, dataplane), 45);
  const sent = collectSent(double);
  assert.equal(sent.length, 300);
  sent.forEach((s, i) => {
    assert.equal(packetSeq(s.bytes), i, 'order kept');
    assert.equal(s.bytes.length, sizes[i]);
    const v6 = i % 3 === 0;
    // Reflected: addresses swapped, now inbound, on the same interface, checksums still valid.
    assert.deepEqual([...s.bytes.subarray(v6 ? 8 : 12, v6 ? 24 : 16)], addressBytes(v6 ? R6 : R4));
    assert.deepEqual([...s.bytes.subarray(v6 ? 24 : 16, v6 ? 40 : 20)], addressBytes(v6 ? LOCAL6 : LOCAL4));
    assert.equal(s.addr.outbound, false);
    assert.equal(s.addr.ifIdx, 7);
    assert.equal(s.addr.subIfIdx, 3);
    assert.equal(s.addr.timestamp, 123456789n);
    assert.equal(s.addr.ipv6, v6);
    assert.ok(transportValid(s.bytes), `checksum of packet ${i}`);
    if (!v6) assert.equal(referenceChecksum([...s.bytes.subarray(0, 20)]), 0, 'IPv4 header checksum');
  });
  assert.equal(counters.snapshot().reflected.packets, 300);
  await backend.stop();
});

test('shield: inbound TCP/UDP to shielded ports from other hosts is dropped; what the filter does not capture passes the driver untouched', async () => {
  const { backend, source, dataplane, counters } = await started();
  const batch = [
    { p: packet(PEER4, LOCAL4, 6, 5555, 8080, 1), a: inboundAddr(false), captured: true }, // shielded tcp: dropped
    { p: packet(PEER4, LOCAL4, 6, 5555, 8081, 2), a: inboundAddr(false), captured: false }, // other port
    { p: packet(LOCAL4, R4, 6, 40000, 80, 3), a: outboundAddr(false), captured: true }, // reflected
    { p: packet(PEER4, LOCAL4, 17, 5555, 53, 4), a: inboundAddr(false), captured: true }, // shielded udp: dropped
    { p: packet(PEER4, LOCAL4, 17, 5555, 8080, 5), a: inboundAddr(false), captured: false }, // 8080 is tcp-only
    { p: packet(LOCAL4, PEER4, 6, 40001, 443, 6), a: outboundAddr(false), captured: false }, // outbound, not a reflect address
  ];
  for (const b of batch) assert.equal(offer(double, b.p, b.a), b.captured ? 1 : 0, `packet ${packetSeq(Buffer.from(b.p))}`);
  assert.equal(loopOnce(source, dataplane), 3);
  const sent = collectSent(double);
  assert.deepEqual(sent.map((s) => [packetSeq(s.bytes), s.origin]), [[2, 'unclaimed'], [5, 'unclaimed'], [6, 'unclaimed'], [3, 'sent']]);
  for (const s of sent.filter((x) => x.origin === 'unclaimed')) {
    const e = batch.find((b) => packetSeq(Buffer.from(b.p)) === packetSeq(s.bytes))!;
    assert.deepEqual(s.bytes, Buffer.from(e.p), 'untouched');
    assert.equal(s.addr.outbound, e.a.outbound === true);
  }
  const snap = counters.snapshot();
  assert.equal(snap.reflected.packets, 1);
  assert.equal(snap.shieldDropped.packets, 2);
  await backend.stop();
});

test('defect 1: an inbound packet another driver injected (Impostor) to a shielded port is dropped like any other', async () => {
  const { backend, source, dataplane, counters } = await started();
  // A VPN or another filtering tool injected these: WinDivert marks them Impostor. They come from the network all the
  // same, so the shield applies. (Our own reflected packets never reach our handles: see the live-change tests.)
  inject(double, packet(PEER4, LOCAL4, 6, 5555, 8080, 1), inboundAddr(false, { impostor: true }));
  inject(double, packet(PEER4, LOCAL4, 17, 5555, 53, 2), inboundAddr(false, { impostor: true }));
  assert.equal(loopOnce(source, dataplane), 2);
  assert.deepEqual(collectSent(double), [], 'nothing delivered');
  assert.equal(counters.snapshot().shieldDropped.packets, 2);
  await backend.stop();
});

test('offloaded checksums (flags 0) are computed for the reflected packet and flagged valid', async () => {
  const { backend, source, dataplane } = await started();
  const tcp = Buffer.from(packet(LOCAL4, R4, 6, 40000, 80, 11, 100));
  const udp6 = Buffer.from(packet(LOCAL6, R6, 17, 40000, 53, 12, 33));
  // What the stack hands WinDivert with offload: IPv4 header checksum 0, transport field = pseudo-header sum only.
  tcp.writeUInt16BE(0, 10);
  tcp.writeUInt16BE(0xbeef, 20 + 16);
  udp6.writeUInt16BE(0x1234, 40 + 6);
  inject(double, tcp, outboundAddr(false, { ipChecksum: false, tcpChecksum: false }));
  inject(double, udp6, outboundAddr(true, { udpChecksum: false }));
  assert.equal(loopOnce(source, dataplane), 2);
  const [a, b] = collectSent(double);
  assert.equal(referenceChecksum([...a.bytes.subarray(0, 20)]), 0, 'IPv4 header checksum computed');
  assert.ok(transportValid(a.bytes), 'TCP checksum computed');
  assert.ok(a.addr.ipChecksum && a.addr.tcpChecksum);
  assert.ok(transportValid(b.bytes), 'UDP/IPv6 checksum computed');
  assert.ok(b.addr.udpChecksum);
  assert.equal(a.addr.outbound || b.addr.outbound, false);
  await backend.stop();
});

test('valid-flagged packets are not rewritten beyond the swap (a wrong checksum with flag 1 stays wrong)', async () => {
  const { backend, source, dataplane } = await started();
  const p = Buffer.from(packet(LOCAL4, R4, 6, 40000, 80, 13));
  p.writeUInt16BE(0x0bad, 20 + 16);
  inject(double, p, outboundAddr(false));
  loopOnce(source, dataplane);
  const [s] = collectSent(double);
  assert.equal(s.bytes.readUInt16BE(36), 0x0bad);
  assert.equal(s.addr.tcpChecksum, true);
  await backend.stop();
});

test('drops in the middle of a batch: survivors are compacted with their own addresses, one SendEx', async () => {
  const { backend, source } = await started();
  for (let i = 0; i < 6; i++) inject(double, packet(LOCAL4, R4, 6, 1000 + i, 80, i, 4 + i * 10), outboundAddr(false, { ifIdx: 100 + i }));
  const n = source.receive(50);
  assert.equal(n, 6);
  const verdicts = [Verdict.Drop, Verdict.Pass, Verdict.Drop, Verdict.Drop, Verdict.Pass, Verdict.Pass];
  verdicts.forEach((v, i) => (source.batch.verdict[i] = v));
  source.send();
  const sent = collectSent(double);
  assert.deepEqual(sent.map((s) => [packetSeq(s.bytes), s.addr.ifIdx]), [[1, 101], [4, 104], [5, 105]]);
  assert.equal(new Set(sent.map((s) => s.handle)).size, 1);
  await backend.stop();
});

test('wake() makes a receive return: queued packets first, then 0', async () => {
  const { backend, source, dataplane } = await started();
  inject(double, packet(LOCAL4, R4, 6, 40000, 80, 1), outboundAddr(false));
  backend.wake();
  assert.equal(loopOnce(source, dataplane), 1);
  const t0 = Date.now();
  assert.equal(source.receive(50), 0);
  assert.ok(Date.now() - t0 < 1000);
  source.close();
  assert.equal(double.openHandles(), 1, 'the worker closed its handle (left: the host\'s fragment-drop handle)');
  await backend.stop();
  assert.equal(double.openHandles(), 0);
});

test('live change: new handle first, old one drained then closed; packets of both are all sent', async () => {
  const { backend, init, source, dataplane } = await started(buildInterceptConfig([R4], []));
  for (let i = 0; i < 5; i++) inject(double, packet(LOCAL4, R4, 6, 40000, 80, i), outboundAddr(false));
  const next = buildInterceptConfig([R4, '192.0.2.20'], []);
  const update = await backend.apply(buildInterceptConfig([R4], []), next);
  assert.ok(update.switchTo && update.switchTo.handle !== init.handle);
  assert.equal(double.openHandles(), 2, 'old and new both open');
  assert.match(doubleLastFilter(double), /192\.0\.2\.20/);
  for (let i = 5; i < 10; i++) inject(double, packet(LOCAL4, '192.0.2.20', 6, 40000, 80, i), outboundAddr(false));
  assert.equal(double.queued(update.switchTo.handle), 5, 'new traffic goes to the new handle');
  dataplane.configure({ reflect: [{ address: R4, slot: 0 }, { address: '192.0.2.20', slot: 1 }], shield: [] });
  source.adopt(next, update);
  assert.equal(loopOnce(source, dataplane), 5);
  assert.equal(loopOnce(source, dataplane), 5);
  assert.equal(double.openHandles(), 1, 'old handle closed after draining');
  const sent = collectSent(double);
  assert.deepEqual(sent.map((s) => packetSeq(s.bytes)), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.deepEqual(sent.map((s) => s.handle), Array(10).fill(update.switchTo.handle), 'every batch, drained ones too, goes back through the newest handle (issue 19 item 23)');
  // Unchanged filter: no new handle.
  assert.equal((await backend.apply(next, buildInterceptConfig([R4, '192.0.2.20'], []))).switchTo, null);
  assert.equal(double.openHandles(), 1);
  source.close();
  await backend.stop();
  assert.equal(double.openHandles(), 0);
});

test('a failed open during a live change leaves the running handle untouched', async () => {
  const { backend, init, source, dataplane } = await started();
  double.setOpenError(1275);
  await assert.rejects(backend.apply(cfg, buildInterceptConfig([R4], [])), /blocked/);
  double.setOpenError(0);
  assert.equal(double.openHandles(), 2, 'the running capture and fragment-drop handles');
  inject(double, packet(LOCAL4, R4, 6, 40000, 80, 1), outboundAddr(false));
  assert.equal(loopOnce(source, dataplane), 1);
  assert.equal(collectSent(double)[0].handle, init.handle);
  await backend.stop();
});

test('stop() closes handles the worker never closed (worker died), exactly once', async () => {
  const { backend, source } = await started();
  void source; // the worker "dies" without close()
  await backend.apply(cfg, buildInterceptConfig([R4], []));
  assert.equal(double.openHandles(), 2);
  await backend.stop();
  assert.equal(double.openHandles(), 0);
});
