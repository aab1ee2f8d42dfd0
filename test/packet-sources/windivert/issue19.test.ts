/**
 * Issue 19, Windows path (items 18–24): each fix, end to end on the ABI-compatible test double (the driver cannot run
 * here), with the real backend and data plane deciding every packet. Runs on Linux and, bundled, under Wine
 * (test/wine/backend.test.ts).
 */
import assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';
import { buildInterceptConfig } from '../../../src/config/intercept-config.ts';
import { WinDivertHostBackend } from '../../../src/packet-sources/windivert/host.ts';
import { createWinDivertPacketSource, type WinDivertPacketSource } from '../../../src/packet-sources/windivert/source.ts';
import { ipv4, ipv6, tcpSegment, udpDatagram, withChecksum, addressBytes } from '../../helpers/packet-builders.ts';
import { collectSent, dataplaneConfig as dataplaneConfigOf, DOUBLE_PATH, inboundAddr, inject, loadDouble, loopOnce, makeDataplane, offer, outboundAddr, packet } from '../../helpers/windivert-double.ts';

const { double } = loadDouble();
const R4 = '192.0.2.10';
const R6 = '2001:db8::10';
const LOCAL4 = '198.51.100.2';
const LOCAL6 = '2001:db8:1::2';
const PEER4 = '203.0.113.9';
const PEER6 = '2001:db8:9::9';
const cfg = buildInterceptConfig([R4, R6], ['8080/tcp', '53/udp']);

beforeEach(() => double.reset());

async function started(config = cfg) {
  const backend = new WinDivertHostBackend({ dllPath: DOUBLE_PATH });
  const init = await backend.start(config);
  const source = createWinDivertPacketSource(init, config);
  const { dataplane, counters } = makeDataplane(config);
  return { backend, init, source, dataplane, counters };
}

/** Run the loop until every handle is idle (at most `turns` batches). */
function drain(source: Parameters<typeof loopOnce>[0], dataplane: Parameters<typeof loopOnce>[1], turns = 8): void {
  for (let i = 0; i < turns; i++) {
    let queued = 0;
    for (const h of openHandles(source)) queued += double.queued(h);
    if (queued === 0) return;
    loopOnce(source, dataplane);
  }
}

/** The handles the source still reads (its private state: the draining ones and the current one). */
function openHandles(source: unknown): number[] {
  const s = source as { current: number | null; draining: number[] };
  return [...s.draining, s.current].filter((h): h is number => h !== null);
}

test('item 20: our reflected packet re-injected by another driver (Impostor) reaches the server; the same packet from the network is dropped as forged', async () => {
  const { backend, source, dataplane, counters } = await started();
  // What a third-party driver re-injects after taking one of our reflected packets: inbound, from R, to a shielded port.
  const reinjected = packet(R4, LOCAL4, 6, 40000, 8080, 1);
  inject(double, reinjected, inboundAddr(false, { impostor: true }));
  const forged = packet(R6, LOCAL6, 17, 40000, 53, 2);
  inject(double, forged, inboundAddr(true));
  drain(source, dataplane);
  const sent = collectSent(double);
  assert.equal(sent.length, 1, 'only the re-injected packet reaches the stack');
  assert.deepEqual([...sent[0].bytes.subarray(12, 20)], [...addressBytes(R4), ...addressBytes(LOCAL4)]);
  assert.equal(sent[0].bytes[8], 63, 'sent back as an impostor: WinDivert took one hop off');
  const snap = counters.snapshot();
  assert.equal(snap.forgedSourceDropped.packets, 1);
  assert.equal(snap.passed.packets, 1);
  await backend.stop();
});

test('item 21: malformed inbound packets to a shielded port are dropped and counted, not left to the stack', async () => {
  const { backend, source, dataplane, counters } = await started();
  const tcp = tcpSegment({ srcPort: 5555, dstPort: 8080, flags: 2, data: [1, 2, 3, 4] });
  const offsetPastEnd = withChecksum(addressBytes(PEER4), addressBytes(LOCAL4), 6, tcp);
  offsetPastEnd[12] = 0xf0; // data offset 60 bytes: past the segment (the driver still reads the ports)
  const udpBadLength = withChecksum(addressBytes(PEER4), addressBytes(LOCAL4), 17, udpDatagram(5555, 53, [1, 2, 3]));
  udpBadLength[4] = 0x7f; // UDP length beyond the IP payload (the driver does not check it)
  const variants = [
    ipv4({ src: PEER4, dst: LOCAL4, proto: 6, payload: offsetPastEnd }),
    ipv4({ src: PEER4, dst: LOCAL4, proto: 17, payload: udpBadLength }),
    // Hop-by-hop after destination options: refused by RFC 8200, walked by the driver.
    ipv6({ src: PEER6, dst: LOCAL6, proto: 6, ext: [{ type: 60 }, { type: 0 }], payload: withChecksum(addressBytes(PEER6), addressBytes(LOCAL6), 6, tcp) }),
  ];
  for (const v of variants) inject(double, v, inboundAddr(v[0] >> 4 === 6));
  drain(source, dataplane);
  assert.deepEqual(collectSent(double), [], 'none reaches the stack');
  const snap = counters.snapshot();
  assert.equal(snap.malformed.total, variants.length);
  assert.equal(snap.passed.packets, 0);
  await backend.stop();
});

test('item 23: a live change right after the driver\'s per-open counter wraps loses no reflected packet (all are sent through the newest handle)', async () => {
  double.setPriorityCounter(0xfffe); // our first open takes 0xffff; the next one wraps to 0 and ranks BELOW it
  const { backend, source, dataplane, counters } = await started();
  for (let i = 0; i < 20; i++) inject(double, packet(LOCAL4, R4, 6, 40000, 8080, i), outboundAddr(false));
  const next = buildInterceptConfig([R4, R6], ['8080/tcp', '53/udp', '9000/tcp']);
  source.adopt(next, await backend.apply(cfg, next));
  dataplane.configure(dataplaneConfigOf(next));
  drain(source, dataplane);
  const sent = collectSent(double);
  assert.equal(sent.length, 20, 'every packet the old handle held comes out reflected');
  for (const s of sent) assert.deepEqual([...s.bytes.subarray(12, 16)], addressBytes(R4));
  assert.equal(counters.snapshot().forgedSourceDropped.packets, 0, 'none of our own packets taken for forged');
  await backend.stop();
});

test('item 23: a send after SHUTDOWN_SEND fails with 232 and counts as an unexpected failure, never as an ICMP refusal', async () => {
  const { backend, init, source, dataplane } = await started();
  const { api } = loadDouble();
  inject(double, ipv4({ src: LOCAL4, dst: R4, proto: 1, payload: [8, 0, 0xf7, 0xfe, 0, 1, 0, 0] }), outboundAddr(false));
  api.shutdown(init.handle, 2);
  loopOnce(source, dataplane);
  const ws = source as WinDivertPacketSource;
  assert.equal(ws.expectedSendFailures.icmpRefused, 0);
  assert.equal(ws.sendErrors, 1);
  assert.equal(ws.lastSendError, 232);
  await backend.stop();
});

test('item 18: IPv6 atomic fragments to a shield port or forged from a reflect address never reach the stack; our reflected fragments and other fragments do', async () => {
  const { backend, source, dataplane } = await started();
  const atomic = (src: string, proto: 6 | 17, port: number, seq: number): Uint8Array => {
    const whole = packet(src, LOCAL6, proto, 5555, port, seq);
    return ipv6({ src, dst: LOCAL6, proto, ext: [{ type: 44 }], payload: [...whole.subarray(40)] }); // offset 0, M=0
  };
  // The driver treats each as a fragment: no handle without WINDIVERT_FLAG_FRAGMENTS sees it, and the double (like
  // the worst case of Windows) never indicates a reassembled copy.
  assert.equal(offer(double, atomic(PEER6, 6, 8080, 1), inboundAddr(true)), 3, 'to a shielded port: blocked in the driver');
  assert.equal(offer(double, atomic(PEER6, 17, 53, 2), inboundAddr(true)), 3);
  assert.equal(offer(double, atomic(R6, 6, 9999, 3), inboundAddr(true)), 3, 'forged from a reflect address: blocked');
  assert.equal(offer(double, atomic(R6, 6, 9999, 4), inboundAddr(true, { impostor: true })), 0, 'another driver\'s re-injection of ours: delivered');
  assert.equal(offer(double, atomic(PEER6, 6, 9999, 5), inboundAddr(true)), 0, 'to an unshielded port: delivered');
  // Our own reflected fragments: outbound pieces to R6 are reflected (inbound from R6); the fragment-drop handle,
  // opened after the capture handle, ranks above it and skips what it injects.
  const big = packet(LOCAL6, R6, 17, 40000, 7000, 6, 64);
  const upper = [...big.subarray(40)];
  const pieces = [
    ipv6({ src: LOCAL6, dst: R6, proto: 17, ext: [{ type: 44, moreFragments: true }], payload: upper.slice(0, 32) }),
    ipv6({ src: LOCAL6, dst: R6, proto: 17, ext: [{ type: 44, fragmentOffset: 32 }], payload: upper.slice(32) }),
  ];
  for (const p of pieces) inject(double, p, outboundAddr(true));
  drain(source, dataplane);
  const sent = collectSent(double);
  assert.equal(sent.filter((s) => s.origin === 'unclaimed').length, 2, 'the two atomic fragments that must pass');
  const reflected = sent.filter((s) => s.origin === 'sent');
  assert.equal(reflected.length, 1, 'both reflected fragments reached the stack, which reassembled them');
  assert.equal(reflected[0].bytes.length, big.length);
  for (const s of reflected) assert.deepEqual([...s.bytes.subarray(8, 24)], addressBytes(R6));
  await backend.stop();
});
