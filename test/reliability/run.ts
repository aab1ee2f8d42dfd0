/**
 * `npm run reliability -- <part> [size]`: the long runs behind docs/reliability.md, kept out of `npm test`'s time.
 *   packet-fuzz [count]   mutated and random packets through the packet core (default 1,000,000 of each)
 *   tun-fuzz [count]      crafted packets onto the engine's TUN end to end (default 200,000)
 *   faults [no-signals]   every stop signal at every phase, SIGKILL mid-change, disk full, read-only, deleted TUN
 *   soak [seconds]        engine under iperf3 TCP+UDP, quiet vs a live change every 2 s (default 180 s in total)
 * Prints one JSON document per part. Needs root for soak (namespaces).
 */
import { fuzzPacketCore } from './packet-fuzz.ts';
import { runSoak } from './soak.ts';
import { runTunFuzz } from './tun-fuzz.ts';
import { runFaults } from './faults.ts';
import { createTopology } from '../helpers/netns.ts';
import { privateDir, removeDir, startEngine } from '../helpers/engine.ts';

const [part = 'all', size] = process.argv.slice(2);
let failed = false;

if (part === 'packet-fuzz' || part === 'all') {
  const count = Number(part === 'packet-fuzz' && size ? size : 1_000_000);
  for (const kind of ['mutated', 'random'] as const) {
    const r = fuzzPacketCore(kind, count);
    console.log(JSON.stringify(r));
    if (r.failures.length) failed = true;
  }
}
if (part === 'tun-fuzz' || part === 'all') {
  const count = Number(part === 'tun-fuzz' && size ? size : 200_000);
  const t = await createTopology('rtunfz');
  const dir = privateDir('rtunfz');
  try {
    const engine = await startEngine(t.a, dir, { config: false, args: ['--reflect', '192.0.2.1', '2001:db8::1', '--shield', '8080/tcp', '--backend', 'tun'] });
    const r = await runTunFuzz(t.a, engine, count, 11);
    console.log(JSON.stringify({ kind: 'tun-fuzz', ...r }));
    if (r.decided !== r.handedToEngine || r.writtenBack !== r.reflected || r.state !== 'running') failed = true;
    engine.child.kill('SIGTERM');
    await engine.exited;
  } finally {
    await t.destroy();
    removeDir(dir);
  }
}
if (part === 'faults' || part === 'all') {
  console.log(JSON.stringify({ kind: 'faults', ...(await runFaults((s) => console.error(s), size !== 'no-signals')) }));
}
if (part === 'soak' || part === 'all') {
  const total = Number(part === 'soak' && size ? size : 180);
  // Each round: a quiet phase and a changing phase, each TCP for phaseSeconds then UDP for half of it.
  const phaseSeconds = 10;
  const rounds = Math.max(1, Math.round(total / (2 * phaseSeconds * 1.5)));
  const r = await runSoak({ phaseSeconds, rounds, changeEveryMs: 2000, log: (s) => console.error(s) });
  console.log(JSON.stringify(r));
  if (r.changeFailures.length || !r.aliveAtEnd || !r.cleanAtEnd || !r.countersConsistent) failed = true;
}
process.exitCode = failed ? 1 : 0;
