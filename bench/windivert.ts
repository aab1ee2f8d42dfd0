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
 *  - the full loop (64 B) to an address with no lists, a port list, an apps list and both, one address per case in
 *    one engine, in many short alternating turns (runAllowLists): with an apps list the flow was decided by the app
 *    gate before (its connect event read), so this is the per-packet cost of the checks (a running flow's allow
 *    decision kept in its flow-table entry; the gate and the port bitsets when that is undecided), not of holding.
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
import { dataplaneConfig } from '../test/helpers/windivert-double.ts';
import type { BenchResult } from './types.ts';
import { parseAllowedPorts } from '../src/config/allow-lists.ts';
import { allowedPortEntries } from '../src/packet/allowed-ports.ts';
import { appGateSlots } from '../src/engine/allowed-ports-config.ts';
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
function measure(double: ReturnType<typeof loadDouble>['double'], total: number, payload: number, turn: () => number,
  destination = '192.0.2.1'): number {
  const p = Buffer.from(packet('198.51.100.2', destination, 6, 40000, 80, 1, payload));
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
/** STAND-IN process lookup (kernel32 cannot run here): every process is APP. */
const benchLookup: ProcessLookup = {
  identify: (pid) => ({ pid, imagePath: APP, processName: 'client.exe', packageFamilyName: null }),
};

/** Which allow lists a reflect address of the lists rounds has. */
export type ListsCase = 'none' | 'ports' | 'apps' | 'ports + apps';
const LISTS_CASES: readonly ListsCase[] = ['none', 'ports', 'apps', 'ports + apps'];
/** One reflect address per case, all in one engine (backend, source, data plane). */
const LISTS_ADDRESS: Record<ListsCase, string> = {
  none: '192.0.2.1',
  ports: '192.0.2.2',
  apps: '192.0.2.3',
  'ports + apps': '192.0.2.4',
};
/**
 * Turns: in each, one queue's worth of packets (injectChunk, about 2-3 ms of loop) to each case's address, the order
 * reversed every other turn. Many short rounds side by side: a neighbour on the machine taking the CPU spoils a few
 * turns, which the median of the turns' ratios leaves out, instead of one case's whole round.
 */
const LISTS_TURNS = 300;
const LISTS_WARMUP_TURNS = 20;

/** The flow C:40000 → address:80 decided by the app gate (allowed): its connect event, then its SYN, held, re-offered. */
async function decideAppFlow(
  double: ReturnType<typeof loadDouble>['double'], handle: number,
  source: ReturnType<typeof createWinDivertPacketSource>,
  dataplane: ReturnType<typeof makeDataplane>['dataplane'], address: string,
): Promise<void> {
  // The gate runs on this thread here (the engine runs the loop in a worker): wait for it without blocking in RecvEx.
  const ends = { localAddress: C, localPort: 40000, remoteAddress: address, remotePort: 80 };
  socketEvent(double, { event: 'connect', processId: 4242, protocol: 6, ...ends });
  const segment = tcpSegment({ srcPort: 40000, dstPort: 80, flags: 0x02 });
  const payload = withChecksum(addressBytes(C), addressBytes(address), 6, segment);
  const syn = ipv4({ src: C, dst: address, proto: 6, payload });
  double.inject(Buffer.from(syn), syn.length, addressBuffer(outboundAddr(false)));
  loopOnce(source, dataplane); // held, handed to the gate
  for (const end = Date.now() + 10_000; double.queued(handle) === 0; ) {
    if (Date.now() > end) throw new Error('the app gate did not re-offer the SYN');
    await new Promise((r) => setTimeout(r, 5));
  }
  loopOnce(source, dataplane); // re-offered with its verdict: reflected
}

function median(xs: number[]): number {
  const s = [...xs].sort((x, y) => x - y);
  return s.length % 2 === 1 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** The `q`th quartile (1 or 3) of `xs` (nearest rank). */
function quartile(xs: number[], q: 1 | 3): number {
  const s = [...xs].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.floor((s.length * q) / 4))];
}

/**
 * The reflect path with no lists, a port list, an apps list and both: one engine (backend, source, data plane) with
 * one reflect address per case, so every case runs the same handles, the same compiled code and the same app gate
 * (whose threads run whenever some address has an apps list), and only the lists of the packets' address differ.
 * With an apps list the flow was decided by the gate before (connect event read, SYN held and re-offered), so this
 * is the per-packet cost of the checks, not of holding. Per case the median rate over turns, and the median over
 * turns of its ratio to the no-lists chunk of the same turn. Throws unless every packet was reflected.
 */
export async function runAllowLists(): Promise<BenchResult[]> {
  const { double } = loadDouble();
  double.reset();
  double.setKeepSent(0);
  const addresses = LISTS_CASES.map((c) => LISTS_ADDRESS[c]);
  const config = buildInterceptConfig(addresses, ['8080/tcp']);
  config.allow = [
    { address: LISTS_ADDRESS.ports, ports: parseAllowedPorts(['80/tcp']) },
    { address: LISTS_ADDRESS.apps, apps: [APP] },
    { address: LISTS_ADDRESS['ports + apps'], ports: parseAllowedPorts(['80/tcp']), apps: [APP] },
  ];
  const backend = new WinDivertHostBackend({ dllPath: DOUBLE_PATH, processLookup: benchLookup });
  const init = await backend.start(config);
  const source = createWinDivertPacketSource(init, config);
  const { dataplane, counters } = makeDataplane(config);
  const slotOf = (a: string): number => addresses.indexOf(a);
  dataplane.configure({
    ...dataplaneConfig(config),
    allowedPorts: allowedPortEntries(config, slotOf),
    appGateSlots: appGateSlots(config, slotOf),
  });
  const rates = new Map<ListsCase, number[]>(LISTS_CASES.map((c) => [c, []]));
  const ratios = new Map<ListsCase, number[]>(LISTS_CASES.map((c) => [c, []]));
  const chunk = injectChunk(64 + 40);
  try {
    for (const c of ['apps', 'ports + apps'] as const) {
      await decideAppFlow(double, init.handle, source, dataplane, LISTS_ADDRESS[c]);
    }
    if (backend.appCounters()?.allowed !== 2) throw new Error('the app flows were not allowed');
    const before = counters.snapshot().addressSlots.map((a) => a.packets);
    const turn = (): number => loopOnce(source, dataplane);
    for (let t = 0; t < LISTS_WARMUP_TURNS + LISTS_TURNS; t++) {
      const rate = new Map<ListsCase, number>();
      for (const c of t % 2 === 0 ? LISTS_CASES : [...LISTS_CASES].reverse()) {
        rate.set(c, measure(double, chunk, 64, turn, LISTS_ADDRESS[c]));
      }
      if (t < LISTS_WARMUP_TURNS) continue;
      for (const c of LISTS_CASES) {
        rates.get(c)!.push(rate.get(c)!);
        ratios.get(c)!.push(rate.get(c)! / rate.get('none')!);
      }
    }
    const after = counters.snapshot();
    for (const [k, c] of LISTS_CASES.entries()) {
      const reflected = after.addressSlots[k].packets - before[k];
      if (reflected !== chunk * (LISTS_WARMUP_TURNS + LISTS_TURNS) || after.addressSlots[k].notAllowed.packets !== 0) {
        const refused = after.addressSlots[k].notAllowed.packets;
        throw new Error(`lists case ${c}: ${reflected} packets reflected, ${refused} refused`);
      }
    }
  } finally {
    source.close();
    await backend.stop();
    double.setKeepSent(1);
  }
  const turns = `${LISTS_TURNS} alternating turns of ${chunk} packets per case`;
  return LISTS_CASES.map((c) => {
    const r = ratios.get(c)!;
    const pct = (x: number): string => (x * 100).toFixed(1);
    return {
      name: c === 'none'
        ? 'full loop, 64 B, no allow lists'
        : `full loop, 64 B, ${c} list${c === 'ports + apps' ? 's' : ''} set`,
      value: Math.round(median(rates.get(c)!)),
      unit: 'packets/s',
      note: c === 'none'
        ? `median of ${turns}, one engine, one reflect address per case; middle half of the turns ` +
          `${(quartile(rates.get(c)!, 1) / 1e6).toFixed(2)}-${(quartile(rates.get(c)!, 3) / 1e6).toFixed(2)} M`
        : `${pct(median(r))} % of no lists (median over ${LISTS_TURNS} turns of the ratio to the same turn's ` +
          `no-lists chunk; middle half ${pct(quartile(r, 1))}-${pct(quartile(r, 3))} %); aim ≥ 95 %`,
    };
  });
}
