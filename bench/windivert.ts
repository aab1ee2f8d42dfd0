/**
 * WinDivert backend throughput against the ABI-compatible TEST DOUBLE (Linux, in-process; no driver, no network):
 *  - full loop: RecvEx batch → Dataplane decides (reflect) → SendEx batch, packets pre-injected, the double's sent
 *    log switched to counting only;
 *  - FFI cost per batch: RecvEx + SendEx of one 255-packet batch with no per-packet work (verdict Pass);
 *  - the same loop with 1-packet batches, i.e. what the per-call overhead costs when traffic is sparse.
 * What the double does per packet stands in for the driver's own work: at capture, parse the headers, evaluate the
 * handle's filter, a malloc'd queue entry and a copy; at SendEx, parse and evaluate again (a re-injected packet is
 * offered to lower priorities, as the driver does; here there are none) and count it on the wire without a copy.
 * Since the double models the driver (filters, priorities), its share of these numbers grew: on the 2-core test
 * machine, 64 B packets ran at 0.56–0.79 M/s through the old queue-only double and 0.46–0.68 M/s through the model,
 * 1200 B packets at about 0.3 M/s with either (measured alternately, noisy; compare within one run).
 *  - the full loop (64 B) with no lists, a port list, an apps list and both on the address, in alternating rounds in
 *    one run: with an apps list the flow was decided by the app gate before (its connect event read), so this is the
 *    per-packet cost of the checks (the gate asked by the data plane with its parse, its flow memo; the data plane's
 *    allowed-port bitset), not of holding.
 * Packets are injected one queue's worth at a time (injectChunk): the double, as the driver, drops the oldest when
 * its queue is full.
 */
import { buildInterceptConfig } from '../src/config/intercept-config.ts';
import { Verdict } from '../src/packet/verdicts.ts';
import { WinDivertHostBackend } from '../src/packet-sources/windivert/host.ts';
import { createWinDivertPacketSource } from '../src/packet-sources/windivert/source.ts';
import { addressBuffer } from '../src/packet-sources/windivert/address.ts';
import { WINDIVERT_QUEUE_LENGTH, WINDIVERT_QUEUE_SIZE_BYTES } from '../src/packet-sources/windivert/limits.ts';
import { DOUBLE_PATH, loadDouble, loopOnce, makeDataplane, outboundAddr, packet } from '../test/helpers/windivert-double.ts';
import type { BenchResult } from './types.ts';
import { parseAllowedPorts } from '../src/config/allow-lists.ts';
import { allowedPortEntries, appGateSlots } from '../src/engine/allowed-ports-config.ts';
import { socketEvent } from '../test/helpers/windivert-double.ts';
import { tcpSegment, withChecksum, addressBytes, ipv4 } from '../test/helpers/packet-builders.ts';
import type { ProcessLookup } from '../src/platform/windows/process-identity.ts';

const cfg = buildInterceptConfig(['192.0.2.1', '2001:db8::1'], ['8080/tcp']);

async function setup() {
  const { double } = loadDouble();
  double.reset();
  double.setKeepSent(0);
  const backend = new WinDivertHostBackend({ dllPath: DOUBLE_PATH });
  const init = await backend.start(cfg);
  const source = createWinDivertPacketSource(init, cfg);
  return { double, backend, source };
}

/**
 * At most one queue's worth per injection: the double's queue holds WINDIVERT_QUEUE_LENGTH.DEFAULT packets and
 * WINDIVERT_QUEUE_SIZE_BYTES.DEFAULT bytes and, as the driver, drops its oldest packets when full, so injecting more
 * at once would leave `turn` waiting for packets that were dropped (the loop would never finish).
 */
function injectChunk(packetBytes: number): number {
  return Math.min(WINDIVERT_QUEUE_LENGTH.DEFAULT, Math.floor(WINDIVERT_QUEUE_SIZE_BYTES.DEFAULT / packetBytes));
}

/**
 * Packets per second through `turn` (which returns packets handled) over `total` packets, injected one queue's
 * worth at a time (injectChunk); only the loop is timed, not the injections.
 */
function measure(double: ReturnType<typeof loadDouble>['double'], total: number, payload: number, turn: () => number): number {
  const p = Buffer.from(packet('198.51.100.2', '192.0.2.1', 6, 40000, 80, 1, payload));
  const a = addressBuffer(outboundAddr(false));
  const most = injectChunk(p.length);
  let ns = 0;
  for (let left = total; left > 0; ) {
    const chunk = Math.min(left, most);
    if (double.injectRepeat(p, p.length, a, chunk) !== chunk) throw new Error('inject failed');
    let done = 0;
    const t0 = process.hrtime.bigint();
    while (done < chunk) done += turn();
    ns += Number(process.hrtime.bigint() - t0);
    left -= chunk;
  }
  return (total / ns) * 1e9;
}

export async function run(): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  const { double, backend, source } = await setup();
  const { dataplane } = makeDataplane(cfg);
  try {
    for (const payload of [64, 1200]) {
      measure(double, 50_000, payload, () => loopOnce(source, dataplane)); // warm-up
      const pps = measure(double, 500_000, payload, () => loopOnce(source, dataplane));
      results.push({ name: `full loop, 255-packet batches, TCP ${payload} B payload`, value: Math.round(pps), unit: 'packets/s', note: 'RecvEx → Dataplane.outbound (reflect) → SendEx' });
    }
    const passTurn = (): number => {
      const n = source.receive(50);
      source.batch.verdict.fill(Verdict.Pass, 0, n);
      source.send();
      return n;
    };
    measure(double, 255 * 200, 64, passTurn); // warm-up
    const pps = measure(double, 255 * 2000, 64, passTurn);
    results.push({ name: 'FFI + double per full batch (RecvEx + SendEx, no work)', value: Math.round((255 / pps) * 1e7) / 10, unit: 'µs/batch', note: `${Math.round(pps)} packets/s` });
    // Sparse traffic: one packet per RecvEx (the queue holds one packet at a time).
    const p = Buffer.from(packet('198.51.100.2', '192.0.2.1', 6, 40000, 80, 1, 64));
    const a = addressBuffer(outboundAddr(false));
    const n1 = 100_000;
    const t1 = process.hrtime.bigint();
    for (let i = 0; i < n1; i++) {
      double.inject(p, p.length, a);
      loopOnce(source, dataplane);
    }
    const ns1 = Number(process.hrtime.bigint() - t1);
    results.push({ name: 'full loop, 1-packet batches (incl. one inject call)', value: Math.round((n1 / ns1) * 1e9), unit: 'packets/s' });
  } finally {
    source.close();
    await backend.stop();
    double.setKeepSent(1);
  }
  results.push(...(await runAllowLists()));
  return results;
}

const APP = 'C:\\Bench\\client.exe';
const C = '198.51.100.2';
const R = '192.0.2.1';
/** STAND-IN process lookup (kernel32 cannot run here): every process is APP. */
const benchLookup: ProcessLookup = {
  identify: (pid) => ({ pid, imagePath: APP, processName: 'client.exe', packageFamilyName: null }),
};

/** Which allow lists 192.0.2.1 has in a lists round. */
export type ListsCase = 'none' | 'ports' | 'apps' | 'ports + apps';
const LISTS_CASES: readonly ListsCase[] = ['none', 'ports', 'apps', 'ports + apps'];
/** Packets per timed round (about a second on the 2-core test machine). */
const LISTS_ROUND_PACKETS = 1_000_000;
/** Rounds per case, alternating (each round in a fresh backend and source, same process). */
const LISTS_ROUNDS = 5;

/** Packets per second of the 64 B full loop with `lists` on 192.0.2.1, one round of LISTS_ROUND_PACKETS. */
export async function listsLoop(lists: ListsCase): Promise<number> {
  const { double } = loadDouble();
  double.reset();
  double.setKeepSent(0);
  const config = buildInterceptConfig(['192.0.2.1', '2001:db8::1'], ['8080/tcp']);
  const ports = lists === 'ports' || lists === 'ports + apps';
  const apps = lists === 'apps' || lists === 'ports + apps';
  if (lists !== 'none') {
    const chosen = { ...(ports ? { ports: parseAllowedPorts(['80/tcp']) } : {}), ...(apps ? { apps: [APP] } : {}) };
    config.allow = [{ address: R, ...chosen }];
  }
  const backend = new WinDivertHostBackend({ dllPath: DOUBLE_PATH, processLookup: benchLookup });
  const init = await backend.start(config);
  const source = createWinDivertPacketSource(init, config);
  const { dataplane } = makeDataplane(config);
  dataplane.configure({
    reflect: [{ address: R, slot: 0 }, { address: '2001:db8::1', slot: 1 }],
    shield: [{ port: 8080, protocol: 'tcp', slot: 0 }],
    allowedPorts: allowedPortEntries(config, (a) => (a === R ? 0 : 1)),
    appGateSlots: appGateSlots(config, (a) => (a === R ? 0 : 1)),
  });
  try {
    if (apps) {
      // The flow's connect event, then its SYN: the gate decides it (allowed) before the measured packets. The gate
      // runs on this thread here (the engine runs the loop in a worker), so wait for it without blocking in RecvEx.
      const ends = { localAddress: C, localPort: 40000, remoteAddress: R, remotePort: 80 };
      socketEvent(double, { event: 'connect', processId: 4242, protocol: 6, ...ends });
      const segment = tcpSegment({ srcPort: 40000, dstPort: 80, flags: 0x02 });
      const payload = withChecksum(addressBytes(C), addressBytes(R), 6, segment);
      const syn = ipv4({ src: C, dst: R, proto: 6, payload });
      double.inject(Buffer.from(syn), syn.length, addressBuffer(outboundAddr(false)));
      loopOnce(source, dataplane); // held, handed to the gate
      for (const end = Date.now() + 10_000; double.queued(init.handle) === 0; ) {
        if (Date.now() > end) throw new Error('the app gate did not re-offer the SYN');
        await new Promise((r) => setTimeout(r, 5));
      }
      loopOnce(source, dataplane); // re-offered with its verdict: reflected
      if (backend.appCounters()?.allowed !== 1) throw new Error('the flow was not allowed');
    }
    const timed = (packets: number): number => measure(double, packets, 64, () => loopOnce(source, dataplane));
    timed(40_000); // warm-up
    return timed(LISTS_ROUND_PACKETS);
  } finally {
    source.close();
    await backend.stop();
    double.setKeepSent(1);
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((x, y) => x - y);
  return s.length % 2 === 1 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/**
 * The reflect path with no lists, a port list, an apps list and both, in alternating rounds in one run: the median
 * rate of each, and the median over rounds of each case's ratio to the no-lists round just before it (the machine's
 * speed drifts between rounds; a round's ratio compares neighbours).
 */
export async function runAllowLists(): Promise<BenchResult[]> {
  const rates = new Map<ListsCase, number[]>(LISTS_CASES.map((c) => [c, []]));
  const ratios = new Map<ListsCase, number[]>(LISTS_CASES.map((c) => [c, []]));
  for (let i = 0; i < LISTS_ROUNDS; i++) {
    let none = 0;
    for (const c of LISTS_CASES) {
      const pps = await listsLoop(c);
      if (c === 'none') none = pps;
      rates.get(c)!.push(pps);
      ratios.get(c)!.push(pps / none);
    }
  }
  return LISTS_CASES.map((c) => ({
    name: c === 'none'
      ? 'full loop, 64 B, no allow lists'
      : `full loop, 64 B, ${c} list${c === 'ports + apps' ? 's' : ''} set`,
    value: Math.round(median(rates.get(c)!)),
    unit: 'packets/s',
    note: c === 'none'
      ? `median of ${LISTS_ROUNDS} alternating rounds; ` +
        `rounds ${rates.get(c)!.map((r) => (r / 1e6).toFixed(2)).join(', ')} M`
      : `${(median(ratios.get(c)!) * 100).toFixed(1)} % of no lists (median of ${LISTS_ROUNDS} alternating rounds; ` +
        `rounds ${ratios.get(c)!.map((r) => (r * 100).toFixed(0)).join(', ')} %)`,
  }));
}
