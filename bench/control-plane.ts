/**
 * Control-plane latency: `status` round trips over the real Unix socket through ControlServer and ControlClient.
 * The engine behind it is the in-memory stand-in from test/control/in-memory-engine.ts, because `retroflect run`
 * could not yet run from source when this was written — so this measures the control plane alone, WITHOUT data
 * plane load. TODO once the engine runs: start it in a namespace and push iperf3 through a reflect address meanwhile.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigStore } from '../src/config/config-file.ts';
import { ControlClient } from '../src/control/client.ts';
import { startControlServer } from '../src/control/server.ts';
import { InMemoryEngine } from '../test/control/in-memory-engine.ts';
import type { BenchResult } from './types.ts';

/** Sequential calls measured (after WARMUP unmeasured ones). */
const CALLS = 5000;
const WARMUP = 500;

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export async function run(): Promise<BenchResult[]> {
  const dir = mkdtempSync(join(tmpdir(), 'rft-bench-ctl-'));
  const server = await startControlServer({ engine: new InMemoryEngine(), pipeName: join(dir, 'b.sock'), configStore: ConfigStore.inMemory() });
  const client = await ControlClient.connect({ pipe: join(dir, 'b.sock') });
  try {
    for (let i = 0; i < WARMUP; i++) await client.call('status');
    const lat: number[] = [];
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < CALLS; i++) {
      const s = process.hrtime.bigint();
      await client.call('status');
      lat.push(Number(process.hrtime.bigint() - s) / 1e6);
    }
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    lat.sort((a, b) => a - b);
    const note = 'status over Unix socket, in-memory engine, no data-plane load';
    return [
      { name: 'control status round trips', value: Math.round(CALLS / seconds), unit: 'calls/s', note },
      { name: 'control status p50', value: Number(percentile(lat, 50).toFixed(3)), unit: 'ms', note },
      { name: 'control status p99', value: Number(percentile(lat, 99).toFixed(3)), unit: 'ms', note },
    ];
  } finally {
    client.close();
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
