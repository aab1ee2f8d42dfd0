/**
 * The cost of the reflect path: a client in a namespace talks to a server on the same host, once to the host's own
 * address (the kernel's loopback path, the baseline) and once through a reflect address (out into the TUN, through
 * the packet loop, back in). Measures single-stream TCP throughput (iperf3) and ping-pong latency (sockperf, UDP and
 * TCP), and reports each as an absolute value and as a ratio to the baseline, all from one run.
 *
 * Paths measured:
 *  - `direct`: to 198.51.100.2 (the host's own address).
 *  - `tun-<variant>`: through TunHostBackend + TunPacketSource + Dataplane in the test fixture's loop, for each
 *    device variant (MTU 1500, MTU 65535, vnet header + offloads) — this is how the default variant was chosen.
 *  - `engine`: through the real `retroflect run` (Dataplane, counters, flow table), default variant.
 * Needs root, iperf3 and sockperf; everything happens inside namespaces created and removed here.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BenchResult } from './types.ts';
import { createTopology, JsonLines, type NetNs } from '../test/helpers/netns.ts';
import { spawnEngine, waitReady } from '../test/e2e/engine-process.ts';
import { TUN_VARIANTS, type TunVariantName } from '../src/platform/linux/tun-device.ts';

/** Seconds per measurement: short enough that the whole bench stays under about a minute. */
const IPERF_SECONDS = 3;
const SOCKPERF_SECONDS = 2;
const IPERF_PORT = 5201;
const SOCKPERF_UDP_PORT = 11111;
const SOCKPERF_TCP_PORT = 11112;
const REFLECT = '192.0.2.1';

interface PathNumbers {
  tcpGbps: number;
  udpLatencyUs: number;
  tcpLatencyUs: number;
}

async function iperf(ns: NetNs, host: string): Promise<number> {
  const r = await ns.run('iperf3', ['-c', host, '-p', String(IPERF_PORT), '-t', String(IPERF_SECONDS), '-J'], { timeoutMs: (IPERF_SECONDS + 15) * 1000 });
  const doc = JSON.parse(r.stdout) as { end?: { sum_received?: { bits_per_second: number } }; error?: string };
  if (!doc.end?.sum_received) throw new Error(`iperf3 to ${host} failed: ${doc.error ?? r.stderr}`);
  return doc.end.sum_received.bits_per_second / 1e9;
}

async function sockperf(ns: NetNs, host: string, tcp: boolean): Promise<number> {
  const args = ['pp', ...(tcp ? ['--tcp'] : []), '-i', host, '-p', String(tcp ? SOCKPERF_TCP_PORT : SOCKPERF_UDP_PORT), '-t', String(SOCKPERF_SECONDS)];
  const r = await ns.run('sockperf', args, { timeoutMs: (SOCKPERF_SECONDS + 15) * 1000 });
  // sockperf reports one-way latency (half the round trip), in microseconds.
  const m = /Summary: Latency is ([\d.]+) usec/.exec(r.stdout + r.stderr);
  if (!m) throw new Error(`sockperf to ${host} failed: ${r.stdout.slice(-500)} ${r.stderr.slice(-500)}`);
  return Number(m[1]);
}

async function measure(ns: NetNs, host: string): Promise<PathNumbers> {
  return { tcpGbps: await iperf(ns, host), udpLatencyUs: await sockperf(ns, host, false), tcpLatencyUs: await sockperf(ns, host, true) };
}

function results(path: string, n: PathNumbers, base: PathNumbers | null, note?: string): BenchResult[] {
  const out: BenchResult[] = [
    { name: `reflect-path ${path}: TCP throughput (iperf3, 1 stream)`, value: round(n.tcpGbps), unit: 'Gbit/s', note },
    { name: `reflect-path ${path}: UDP ping-pong latency (sockperf, one-way)`, value: round(n.udpLatencyUs), unit: 'us' },
    { name: `reflect-path ${path}: TCP ping-pong latency (sockperf, one-way)`, value: round(n.tcpLatencyUs), unit: 'us' },
  ];
  if (base) {
    out.push(
      { name: `reflect-path ${path}/direct: TCP throughput ratio`, value: round(n.tcpGbps / base.tcpGbps), unit: 'x' },
      { name: `reflect-path ${path}/direct: UDP latency ratio`, value: round(n.udpLatencyUs / base.udpLatencyUs), unit: 'x' },
      { name: `reflect-path ${path}/direct: TCP latency ratio`, value: round(n.tcpLatencyUs / base.tcpLatencyUs), unit: 'x' },
    );
  }
  return out;
}

function round(v: number): number {
  return Math.round(v * 1000) / 1000;
}

export async function run(): Promise<BenchResult[]> {
  const missing = ['iperf3', 'sockperf', 'ip', 'nft'].filter((tool) => spawnSync('which', [tool]).status !== 0);
  if (process.geteuid?.() !== 0 || missing.length) {
    return [{ name: 'reflect-path', value: 0, unit: 'skipped', note: missing.length ? `missing: ${missing.join(', ')}` : 'needs root' }];
  }
  const t = await createTopology('bench');
  const out: BenchResult[] = [];
  try {
    t.a.spawn('iperf3', ['-s', '-p', String(IPERF_PORT)]);
    t.a.spawn('sockperf', ['sr', '-i', '0.0.0.0', '-p', String(SOCKPERF_UDP_PORT)]);
    t.a.spawn('sockperf', ['sr', '--tcp', '-i', '0.0.0.0', '-p', String(SOCKPERF_TCP_PORT)]);
    await new Promise((r) => setTimeout(r, 500));

    const base = await measure(t.a, t.a4);
    out.push(...results('direct', base, null, 'client to the host\'s own address (kernel loopback path)'));

    const config = { reflectAddresses: [REFLECT], shieldPorts: [] };
    for (const variant of Object.keys(TUN_VARIANTS) as TunVariantName[]) {
      const loop = new JsonLines(
        t.a.spawn(process.execPath, ['--import', 'tsx', 'test/platform/fixtures/tun-reflector.ts', JSON.stringify({ config, variant, device: 'rflctb' })]),
      );
      const ready = await loop.next((o) => 'ready' in o || 'error' in o);
      if (!ready.ready) throw new Error(`TUN loop (${variant}) did not start: ${JSON.stringify(ready)}`);
      out.push(...results(`tun-${variant}`, await measure(t.a, REFLECT), base, 'TunHostBackend + TunPacketSource + Dataplane (fixture loop)'));
      loop.send({ op: 'stop' });
      await loop.next((o) => 'stopped' in o);
    }

    // The control socket must live in a root-owned 0700 directory (mkdtemp makes one).
    const pipeDir = mkdtempSync(join(tmpdir(), 'rft-bench-'));
    const engine = spawnEngine(t.a, ['--no-config', '--reflect', REFLECT, '--pipe', join(pipeDir, 'retroflect.sock'), '--device', 'rflcte']);
    try {
      await waitReady(engine);
      out.push(...results('engine', await measure(t.a, REFLECT), base, 'retroflect run (Dataplane), default TUN variant'));
    } catch (err) {
      out.push({ name: 'reflect-path engine', value: 0, unit: 'failed', note: String(err).split('\n').slice(0, 3).join(' ') });
    } finally {
      engine.child.kill('SIGTERM');
      await engine.exited;
      rmSync(pipeDir, { recursive: true, force: true });
    }
  } finally {
    await t.destroy();
  }
  return out;
}

// Run directly: node --import tsx bench/reflect-path.ts
if (import.meta.url === `file://${process.argv[1]}`) {
  for (const r of await run()) console.log(`${r.name.padEnd(70)} ${String(r.value).padStart(10)} ${r.unit}${r.note ? `  (${r.note})` : ''}`);
}
