/**
 * What capture costs the reflect path: single-stream TCP throughput (iperf3) through the real `retroflect run`
 * with capture off, with a capture of every packet at the default snap length (256 bytes), and with a capture of
 * whole packets. The capture client runs here and reads pcapng notifications as `retroflect capture` does (decoding
 * base64, then discarding). Rounds alternate between the three cases (this machine's speed drifts), medians and
 * ratios to "off" are reported with what each capture got and dropped. Needs root and iperf3; everything happens in
 * namespaces created and removed here. Takes about 30 s.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
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

type Case = 'off' | 'snap 256' | 'full';
const CASES: Case[] = ['off', 'snap 256', 'full'];

async function iperf(ns: NetNs): Promise<number> {
  const r = await ns.run('iperf3', ['-c', ADDRESS, '-p', String(IPERF_PORT), '-t', String(IPERF_SECONDS), '-J'], { timeoutMs: (IPERF_SECONDS + 15) * 1000 });
  const doc = JSON.parse(r.stdout) as { end?: { sum_received?: { bits_per_second: number } }; error?: string };
  if (!doc.end?.sum_received) throw new Error(`iperf3 failed: ${doc.error ?? r.stderr}`);
  return doc.end.sum_received.bits_per_second / 1e9;
}

const median = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
const round = (v: number): number => Math.round(v * 1000) / 1000;

/** One iperf3 run with the given capture running (or none); returns Gbit/s and what the capture got and lost. */
async function measure(ns: NetNs, pipe: string, c: Case): Promise<{ gbps: number; captured: number; dropped: number }> {
  if (c === 'off') return { gbps: await iperf(ns), captured: 0, dropped: 0 };
  const client = await ControlClient.connect({ pipe });
  let bytes = 0;
  client.onNotification((n) => {
    if (n.method === 'capture') bytes += Buffer.from(String((n.params as { data: string }).data), 'base64').length;
  });
  try {
    await client.call('capture.start', { format: 'pcapng', snaplen: c === 'full' ? 65535 : 256 });
    const gbps = await iperf(ns);
    const end = await client.call('capture.stop', {});
    return { gbps, captured: end.captured, dropped: end.dropped };
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
  const engine = spawnEngine(t.a, ['--no-config', '--reflect', ADDRESS, '--pipe', pipe, '--device', 'rflctb']);
  try {
    t.a.spawn('iperf3', ['-s', '-p', String(IPERF_PORT)]);
    await waitReady(engine);
    const got: Record<Case, { gbps: number; captured: number; dropped: number }[]> = { off: [], 'snap 256': [], full: [] };
    for (let r = 0; r < ROUNDS; r++) for (const c of CASES) got[c].push(await measure(t.a, pipe, c));
    const tput = Object.fromEntries(CASES.map((c) => [c, median(got[c].map((x) => x.gbps))])) as Record<Case, number>;
    const out: BenchResult[] = [];
    for (const c of CASES) {
      const captured = got[c].reduce((s, x) => s + x.captured, 0);
      const dropped = got[c].reduce((s, x) => s + x.dropped, 0);
      out.push({
        name: `capture ${c}: reflect-path TCP throughput (iperf3, 1 stream, median)`,
        value: round(tput[c]),
        unit: 'Gbit/s',
        note: `rounds: ${got[c].map((x) => x.gbps.toFixed(2)).join(', ')}${c === 'off' ? '' : `; packets captured ${captured}, dropped ${dropped}`}`,
      });
    }
    for (const c of CASES.slice(1)) out.push({ name: `capture ${c}/off: throughput ratio`, value: round(tput[c] / tput.off), unit: 'x' });
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
  for (const r of await run()) console.log(`${r.name.padEnd(70)} ${String(r.value).padStart(10)} ${r.unit}${r.note ? `  (${r.note})` : ''}`);
}
