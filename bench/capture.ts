/**
 * What capture costs the TUN reflect path: single-stream TCP throughput (iperf3) through the real `retroflect run --backend tun`
 * with capture off, with a capture whose filter matches nothing (the data plane's share alone), with a capture of
 * every packet at the default snap length (256 bytes), and with a capture of whole packets. The capture client runs
 * here and reads pcapng notifications as `retroflect capture` does (decoding base64, then discarding). Rounds
 * alternate between the three cases (this machine's speed drifts), medians and ratios to "off" are reported with
 * what each capture got and dropped. Needs root and iperf3; everything happens in namespaces created and removed
 * here. Takes about 30 s.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BenchResult } from './types.ts';
import { ControlClient } from '../src/control/client.ts';
import { createTopology, type NetNs } from '../test/helpers/netns.ts';
import { spawnEngine, waitReady } from '../test/e2e/engine-process.ts';

const IPERF_SECONDS = 2;
const ROUNDS = 3;
const IPERF_PORT = 5201;
const ADDRESS = '192.0.2.1';

/**
 * 'none match': a capture whose filter (port 1) matches no packet. The packet worker still runs its tap over every
 * packet, but no record is made, so nothing reaches the main thread or the client: this isolates the data plane's
 * own share of what a capture costs from the main thread's (records → pcapng → socket) and the client's.
 */
type Case = 'off' | 'none match' | 'snap 256' | 'full';
const CASES: Case[] = ['off', 'none match', 'snap 256', 'full'];

async function iperf(ns: NetNs): Promise<number> {
  const r = await ns.run(
    'iperf3',
    ['-c', ADDRESS, '-p', String(IPERF_PORT), '-t', String(IPERF_SECONDS), '-J'],
    { timeoutMs: (IPERF_SECONDS + 15) * 1000 },
  );
  const doc = JSON.parse(r.stdout) as { end?: { sum_received?: { bits_per_second: number } }; error?: string };
  if (!doc.end?.sum_received) throw new Error(`iperf3 failed: ${doc.error ?? r.stderr}`);
  return doc.end.sum_received.bits_per_second / 1e9;
}

const median = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
const round = (v: number): number => Math.round(v * 1000) / 1000;

/** CPU time (ms) the engine's threads used so far: its main thread (tid = pid) and all others (the packet worker). */
function engineCpu(pid: number): { main: number; others: number } {
  const tick = 1000 / 100; // USER_HZ
  let main = 0;
  let others = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    // utime and stime are fields 14 and 15; the command name (field 2) may hold spaces, so count after its ')'.
    const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ms = (Number(f[11]) + Number(f[12])) * tick;
    if (Number(tid) === pid) main += ms;
    else others += ms;
  }
  return { main, others };
}

interface Measured {
  gbps: number;
  captured: number;
  dropped: number;
  /** CPU per second of the run, in % of one core: engine main thread, engine's other threads, the capture client. */
  cpu: { main: number; others: number; client: number };
}

/** One iperf3 run with the given capture running (or none): Gbit/s, what the capture got and lost, CPU used. */
async function measure(ns: NetNs, pipe: string, pid: number, c: Case): Promise<Measured> {
  const before = engineCpu(pid);
  const clientBefore = process.cpuUsage();
  const started = performance.now();
  const cpu = (): Measured['cpu'] => {
    const after = engineCpu(pid);
    const client = process.cpuUsage(clientBefore);
    const pct = (ms: number) => (100 * ms) / (performance.now() - started);
    return {
      main: pct(after.main - before.main),
      others: pct(after.others - before.others),
      client: pct((client.user + client.system) / 1000),
    };
  };
  if (c === 'off') {
    const gbps = await iperf(ns);
    return { gbps, captured: 0, dropped: 0, cpu: cpu() };
  }
  const client = await ControlClient.connect({ pipe });
  let bytes = 0;
  client.onNotification((n) => {
    if (n.method === 'capture') bytes += Buffer.from(String((n.params as { data: string }).data), 'base64').length;
  });
  try {
    await client.call(
      'capture.start',
      { format: 'pcapng', snaplen: c === 'full' ? 65535 : 256, ...(c === 'none match' ? { ports: [1] } : {}) },
    );
    const gbps = await iperf(ns);
    const end = await client.call('capture.stop', {});
    return { gbps, captured: end.captured, dropped: end.dropped, cpu: cpu() };
  } finally {
    client.close();
  }
}

export async function run(): Promise<BenchResult[]> {
  if (process.geteuid?.() !== 0 || spawnSync('which', ['iperf3']).status !== 0) {
    return [{ name: 'capture', value: 0, unit: 'skipped', note: 'needs root and iperf3' }];
  }
  const t = await createTopology('bcap');
  const dir = mkdtempSync(join(tmpdir(), 'rft-bcap-'));
  const pipe = join(dir, 'retroflect.sock');
  const engine = spawnEngine(t.a, ['--no-config', '--reflect', ADDRESS, '--pipe', pipe, '--device', 'rflctb', '--backend', 'tun']);
  try {
    t.a.spawn('iperf3', ['-s', '-p', String(IPERF_PORT)]);
    await waitReady(engine);
    const got: Record<Case, Measured[]> = { off: [], 'none match': [], 'snap 256': [], full: [] };
    const pid = engine.child.pid!; // `ip netns exec` execs the engine: same process
    for (let r = 0; r < ROUNDS; r++) for (const c of CASES) got[c].push(await measure(t.a, pipe, pid, c));
    const tput = Object.fromEntries(CASES.map((c) => [c, median(got[c].map((x) => x.gbps))])) as Record<Case, number>;
    const out: BenchResult[] = [];
    for (const c of CASES) {
      const captured = got[c].reduce((s, x) => s + x.captured, 0);
      const dropped = got[c].reduce((s, x) => s + x.dropped, 0);
      const cpu = (k: keyof Measured['cpu']) => median(got[c].map((x) => x.cpu[k])).toFixed(0);
      out.push({
        name: `capture ${c}: reflect-path TCP throughput (iperf3, 1 stream, median)`,
        value: round(tput[c]),
        unit: 'Gbit/s',
        note:
          `rounds: ${got[c].map((x) => x.gbps.toFixed(2)).join(', ')}` +
          `${c === 'off' ? '' : `; packets captured ${captured}, dropped ${dropped}`}; ` +
          `CPU % of a core (median): engine main ${cpu('main')}, engine worker+others ${cpu('others')}, ` +
          `capture client ${cpu('client')}`,
      });
    }
    for (const c of CASES.slice(1)) out.push({
      name: `capture ${c}/off: throughput ratio`,
      value: round(tput[c] / tput.off),
      unit: 'x',
    });
    return out;
  } finally {
    engine.child.kill('SIGTERM');
    await engine.exited;
    await t.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

// Run directly: node --import tsx bench/capture.ts
if (import.meta.url === `file://${process.argv[1]}`) {
  for (const r of await run()) {
    console.log(`${r.name.padEnd(70)} ${String(r.value).padStart(10)} ${r.unit}${r.note ? `  (${r.note})` : ''}`);
  }
}
