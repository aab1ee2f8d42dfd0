/**
 * The throughput cost of live changes: iperf3 through a reflect address served by the real `retroflect run`, quiet
 * vs with a persisted live change (address / shield add / remove, in turn) every 500 ms and every 2 s, alternating
 * rounds so machine drift hits both alike. Reported: median throughput of each, the ratio, retransmits, and the
 * time one change takes as the client sees it. Uses the soak machinery (test/reliability/soak.ts); about 40 s.
 */
import { spawnSync } from 'node:child_process';
import type { BenchResult } from './types.ts';
import { runSoak, type PhaseResult } from '../test/reliability/soak.ts';

const PHASE_SECONDS = 3;
const ROUNDS = 2;

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const round = (v: number): number => Math.round(v * 1000) / 1000;

export async function run(): Promise<BenchResult[]> {
  const missing = ['iperf3', 'ip', 'nft'].filter((tool) => spawnSync('which', [tool]).status !== 0);
  if (process.geteuid?.() !== 0 || missing.length) {
    const note = missing.length ? `missing: ${missing.join(', ')}` : 'needs root';
    return [{ name: 'live-change', value: 0, unit: 'skipped', note }];
  }
  const out: BenchResult[] = [];
  for (const everyMs of [500, 2000]) {
    const r = await runSoak({ phaseSeconds: PHASE_SECONDS, rounds: ROUNDS, changeEveryMs: everyMs });
    const quiet = r.phases.filter((p) => !p.changes);
    const busy = r.phases.filter((p) => p.changes);
    const g = (ps: PhaseResult[]) => median(ps.map((p) => p.tcpGbps));
    const rt = (ps: PhaseResult[]) => ps.reduce((a, p) => a + p.tcpRetransmits, 0);
    out.push(
      {
        name: `live-change every ${everyMs} ms: TCP throughput, quiet (median)`,
        value: round(g(quiet)),
        unit: 'Gbit/s',
        note: quiet.map((p) => p.tcpGbps.toFixed(2)).join(', '),
      },
      {
        name: `live-change every ${everyMs} ms: TCP throughput, changing (median)`,
        value: round(g(busy)),
        unit: 'Gbit/s',
        note: busy.map((p) => p.tcpGbps.toFixed(2)).join(', '),
      },
      {
        name: `live-change every ${everyMs} ms: changing/quiet throughput ratio`,
        value: round(g(busy) / g(quiet)),
        unit: 'x',
      },
      {
        name: `live-change every ${everyMs} ms: TCP retransmits quiet / changing`,
        value: rt(busy),
        unit: 'count',
        note: `quiet ${rt(quiet)}, changing ${rt(busy)}`,
      },
      {
        name: `live-change every ${everyMs} ms: one change, client round trip (median)`,
        value: round(r.changeMsMedian),
        unit: 'ms',
        note: `max ${r.changeMsMax.toFixed(1)} ms over ${r.changes} changes, ${r.changeFailures.length} failed`,
      },
    );
  }
  return out;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  for (const r of await run()) {
    console.log(`${r.name.padEnd(70)} ${String(r.value).padStart(10)} ${r.unit}${r.note ? `  (${r.note})` : ''}`);
  }
}
