/**
 * Costs that must stay linear (issue 11, defect 5): loading (and refusing) config files of growing size, and a live
 * `shield.add` + `shield.remove` (persisted) against an engine that already shields 10 vs 1000 ports. The engine
 * part runs the real `retroflect run` in a namespace; about 30 s.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfigFile } from '../src/config/config-file.ts';
import { ControlClient } from '../src/control/client.ts';
import type { BenchResult } from './types.ts';
import { createTopology } from '../test/helpers/netns.ts';
import { privateDir, removeDir, startEngine } from '../test/helpers/engine.ts';

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const round = (v: number): number => Math.round(v * 100) / 100;

function portsConfig(n: number): string {
  return JSON.stringify({
    schemaVersion: 1,
    shieldPorts: Array.from({ length: n }, (_, i) => ({ port: (i % 65535) + 1, protocol: i % 2 ? 'udp' : 'tcp' })),
  });
}

function configLoad(): BenchResult[] {
  const dir = mkdtempSync(join(tmpdir(), 'rft-bench-cfg-'));
  const out: BenchResult[] = [];
  try {
    for (const n of [1000, 5000, 20000, 60000]) {
      const p = join(dir, `c${n}.json`);
      writeFileSync(p, portsConfig(n));
      const ms: number[] = [];
      for (let i = 0; i < 5; i++) {
        const t0 = performance.now();
        try {
          loadConfigFile(p);
        } catch {
          /* over the limit: refused, which is what is timed */
        }
        ms.push(performance.now() - t0);
      }
      out.push({
        name: `config load, ${n} shield entries${n > 1024 ? ' (refused)' : ''}`,
        value: round(median(ms)),
        unit: 'ms',
        note: `file ${(portsConfig(n).length / 1024).toFixed(0)} KiB, median of 5`,
      });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return out;
}

async function shieldChange(): Promise<BenchResult[]> {
  const out: BenchResult[] = [];
  const t = await createTopology('bhard');
  const dir = privateDir('bhard');
  try {
    for (const n of [10, 1000]) {
      const config = join(dir, `c${n}.json`);
      writeFileSync(config, JSON.stringify({
        schemaVersion: 1,
        shieldPorts: Array.from({ length: n }, (_, i) => `${20000 + i}/tcp`),
      }));
      const e = await startEngine(
        t.a,
        dir,
        { config, pipe: join(dir, `e${n}.sock`), args: ['--reflect', '192.0.2.1'] },
      );
      const client = await ControlClient.connect({ pipe: e.pipe });
      const ms: number[] = [];
      try {
        for (let i = 0; i < 10; i++) {
          const t0 = performance.now();
          await client.call('shield.add', { ports: ['9999/tcp'] });
          await client.call('shield.remove', { ports: ['9999/tcp'] });
          ms.push((performance.now() - t0) / 2);
        }
      } finally {
        client.close();
        e.child.kill('SIGTERM');
        await e.exited;
      }
      out.push({
        name: `shield add/remove (persisted) with ${n} ports shielded`,
        value: round(median(ms)),
        unit: 'ms',
        note: `median of 10 pairs, max ${Math.max(...ms).toFixed(1)} ms`,
      });
    }
  } finally {
    await t.destroy();
    removeDir(dir);
  }
  return out;
}

export async function run(): Promise<BenchResult[]> {
  const out = configLoad();
  const missing = ['ip', 'nft'].filter((tool) => spawnSync('which', [tool]).status !== 0);
  if (process.geteuid?.() !== 0 || missing.length) out.push({
    name: 'shield change',
    value: 0,
    unit: 'skipped',
    note: 'needs root, ip and nft',
  });
  else out.push(...(await shieldChange()));
  return out;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  for (const r of await run()) {
    console.log(`${r.name.padEnd(70)} ${String(r.value).padStart(10)} ${r.unit}${r.note ? `  (${r.note})` : ''}`);
  }
}
