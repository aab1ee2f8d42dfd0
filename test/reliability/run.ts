/**
 * `npm run reliability -- <part> [size]`: the long runs behind docs/reliability.md, kept out of `npm test`'s time.
 *   packet-fuzz [count]   mutated and random packets through the packet core (default 1,000,000 of each)
 *   soak [seconds]        engine under iperf3 TCP+UDP, quiet vs a live change every 2 s (default 180 s in total)
 * Prints one JSON document per part. Needs root for soak (namespaces).
 */
import { fuzzPacketCore } from './packet-fuzz.ts';
import { runSoak } from './soak.ts';

const [part = 'all', size] = process.argv.slice(2);
let failed = false;

if (part === 'packet-fuzz' || part === 'all') {
  const count = Number(size ?? 1_000_000);
  for (const kind of ['mutated', 'random'] as const) {
    const r = fuzzPacketCore(kind, count);
    console.log(JSON.stringify(r));
    if (r.failures.length) failed = true;
  }
}
if (part === 'soak' || part === 'all') {
  const total = Number(size ?? 180);
  // Each round: a quiet phase and a changing phase, each TCP for phaseSeconds then UDP for half of it.
  const phaseSeconds = 10;
  const rounds = Math.max(1, Math.round(total / (2 * phaseSeconds * 1.5)));
  const r = await runSoak({ phaseSeconds, rounds, changeEveryMs: 2000, log: (s) => console.error(s) });
  console.log(JSON.stringify(r));
  if (r.changeFailures.length || !r.aliveAtEnd || !r.cleanAtEnd) failed = true;
}
process.exitCode = failed ? 1 : 0;
