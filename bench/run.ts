/**
 * `npm run bench`: every benchmark in one run, printed as one table (ratios are only meaningful within one run on
 * these shared machines). `BENCH=packet-core,windivert npm run bench` picks some; results also go to
 * bench/results.json when BENCH_OUT is set.
 */
import { writeFileSync } from 'node:fs';
import { table } from 'table';
import type { BenchResult } from './types.ts';

const suites: Record<string, () => Promise<{ run(): Promise<BenchResult[]> }>> = {
  'packet-core': () => import('./packet-core.ts'),
  windivert: () => import('./windivert.ts'),
  'control-plane': () => import('./control-plane.ts'),
  'control-burst': () => import('./control-burst.ts'),
  'reflect-path': () => import('./reflect-path.ts'),
  'ebpf-program': () => import('./ebpf-program.ts'),
  capture: () => import('./capture.ts'),
  release: () => import('./release.ts'),
  'live-change': () => import('./live-change.ts'),
  hardening: () => import('./hardening.ts'),
};

const wanted = process.env.BENCH ? process.env.BENCH.split(',') : Object.keys(suites);
const rows: string[][] = [['suite', 'measure', 'value', 'unit', 'note']];
const all: Record<string, BenchResult[]> = {};
let failed = false;
for (const name of wanted) {
  const load = suites[name];
  if (!load) {
    console.error(`unknown benchmark ${name}; known: ${Object.keys(suites).join(', ')}`);
    process.exit(2);
  }
  console.error(`# ${name}...`);
  try {
    const results = await (await load()).run();
    all[name] = results;
    for (const r of results) rows.push([name, r.name, formatValue(r.value), r.unit, r.note ?? '']);
  } catch (err) {
    failed = true;
    rows.push([name, 'FAILED', '', '', (err as Error).message.slice(0, 200)]);
  }
}
console.log(table(rows, { columns: { 4: { width: 50, wrapWord: true } } }));
if (process.env.BENCH_OUT) writeFileSync(process.env.BENCH_OUT, JSON.stringify(all, null, 2));
process.exitCode = failed ? 1 : 0;

function formatValue(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toPrecision(3);
}
