/**
 * Control-plane latency: sequential `status` round trips over the real Unix socket (ControlClient) to the real
 * engine (`retroflect run` in a network namespace, Linux TUN backend), first idle, then while iperf3 pushes TCP
 * through a reflect address (client and server both in the namespace, so every packet crosses the engine twice:
 * data one way, ACKs the other). The question: does data-plane load (worker thread + kernel, two cores here) slow the
 * control plane's main thread down? Target: p99 < 5 ms under load.
 *
 * `stats` is measured too, because monitoring (stats --watch, PowerShell) polls it and on Linux it also reads the nft
 * shield counters. Each phase is time-boxed; the whole run stays well under 30 s, and the namespaces are removed even
 * on failure.
 */
import { ControlClient } from '../src/control/client.ts';
import { createTopology, waitFor, type Topology } from '../test/helpers/netns.ts';
import { privateDir, removeDir, startEngine, type EngineHandle } from '../test/helpers/engine.ts';
import type { BenchResult } from './types.ts';

const REFLECT = '192.0.2.1';
const IPERF_PORT = 5201;
/** Unmeasured calls before each phase (JIT, socket buffers). */
const WARMUP_CALLS = 300;
/** Measuring time per phase: `status` (the cheap call), then `stats` (reads the nft shield counters too). */
const MEASURE_MS = 3500;
const STATS_MEASURE_MS = 1500;
const STATS_WARMUP_CALLS = 20;
/** iperf3 runs this long; measuring starts LOAD_RAMP_MS after it started, so the load covers the whole phase. */
const IPERF_SECONDS = 7;
const LOAD_RAMP_MS = 700;

interface Phase {
  callsPerSecond: number;
  p50: number;
  p99: number;
  max: number;
  calls: number;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function measure(client: ControlClient, method: 'status' | 'stats', warmup: number, ms: number): Promise<Phase> {
  for (let i = 0; i < warmup; i++) await client.call(method);
  const lat: number[] = [];
  const t0 = process.hrtime.bigint();
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const s = process.hrtime.bigint();
    await client.call(method);
    lat.push(Number(process.hrtime.bigint() - s) / 1e6);
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  lat.sort((a, b) => a - b);
  return {
    callsPerSecond: lat.length / seconds,
    p50: percentile(lat, 50),
    p99: percentile(lat, 99),
    max: lat[lat.length - 1]!,
    calls: lat.length,
  };
}

function rows(phase: Phase, method: string, label: string, note: string): BenchResult[] {
  const ms = (v: number): number => Number(v.toFixed(3));
  return [
    {
      name: `control ${method} round trips, ${label}`,
      value: Math.round(phase.callsPerSecond),
      unit: 'calls/s',
      note: `${phase.calls} calls; ${note}`,
    },
    { name: `control ${method} p50, ${label}`, value: ms(phase.p50), unit: 'ms', note },
    {
      name: `control ${method} p99, ${label}`,
      value: ms(phase.p99),
      unit: 'ms',
      note: `max ${ms(phase.max)} ms${method === 'status' ? '; target < 5 ms' : ''}`,
    },
  ];
}

async function phase(client: ControlClient): Promise<{ status: Phase; stats: Phase }> {
  return {
    status: await measure(client, 'status', WARMUP_CALLS, MEASURE_MS),
    stats: await measure(client, 'stats', STATS_WARMUP_CALLS, STATS_MEASURE_MS),
  };
}

export async function run(): Promise<BenchResult[]> {
  let t: Topology | undefined;
  let engine: EngineHandle | undefined;
  let client: ControlClient | undefined;
  const dir = privateDir('bcp');
  try {
    t = await createTopology('bcp');
    const iperfServer = t.a.spawn('iperf3', ['-s', '-p', String(IPERF_PORT)]);
    // One shield port, so `stats` includes the nft counter read it does on a real host.
    engine = await startEngine(t.a, dir, { config: false, args: ['--reflect', REFLECT, '--shield', '9000/tcp'] });
    client = await ControlClient.connect({ pipe: engine.pipe, clientName: 'bench' });
    // iperf3 buffers its stdout when it is not a terminal, so ask the kernel whether it listens yet.
    const ns = t.a;
    await waitFor(
      'iperf3 -s listening',
      async () =>
        iperfServer.exitCode === null && (await ns.must('ss', ['-Hltn', `sport = :${IPERF_PORT}`])).trim() !== '',
    );

    const idle = await phase(client);

    const before = await client.call('stats');
    const iperf = t.a.spawn('iperf3', ['-c', REFLECT, '-p', String(IPERF_PORT), '-t', String(IPERF_SECONDS), '-J']);
    let iperfJson = '';
    iperf.stdout!.on('data', (d: Buffer) => (iperfJson += d.toString()));
    const iperfDone = new Promise<number | null>((resolve) => iperf.once('exit', resolve));
    const iperfKill = setTimeout(() => iperf.kill('SIGKILL'), (IPERF_SECONDS + 10) * 1000); // never hang the bench
    await new Promise((r) => setTimeout(r, LOAD_RAMP_MS));
    const loaded = await phase(client);
    const after = await client.call('stats');
    const code = await iperfDone;
    clearTimeout(iperfKill);
    type IperfReport = { end?: { sum_received?: { bits_per_second?: number } }; error?: string };
    const report = JSON.parse(iperfJson || '{}') as IperfReport;
    const gbps = (report.end?.sum_received?.bits_per_second ?? 0) / 1e9;
    if (code !== 0 || gbps <= 0) {
      throw new Error(`iperf3 through ${REFLECT} failed (${code}): ${report.error ?? iperfJson.slice(0, 500)}`);
    }
    const reflectedMiB = (after.reflected.bytes - before.reflected.bytes) / 2 ** 20;
    if (reflectedMiB <= 0) throw new Error('the engine reflected nothing during the iperf3 run');

    const load = `iperf3 TCP through ${REFLECT}: ${gbps.toFixed(2)} Gbit/s over ${IPERF_SECONDS} s; ` +
      `engine reflected ${reflectedMiB.toFixed(0)} MiB during the measurement`;
    return [
      ...rows(idle.status, 'status', 'engine idle', 'real engine (TUN) in a netns, Unix socket'),
      ...rows(loaded.status, 'status', 'data plane under load', load),
      ...rows(idle.stats, 'stats', 'engine idle', 'stats runs nft for the shield counters'),
      ...rows(loaded.stats, 'stats', 'data plane under load', 'stats runs nft for the shield counters'),
      {
        name: 'iperf3 TCP through the reflect address during the load phase',
        value: Number(gbps.toFixed(2)),
        unit: 'Gbit/s',
      },
    ];
  } finally {
    client?.close();
    await engine?.kill();
    await t?.destroy();
    removeDir(dir);
  }
}
