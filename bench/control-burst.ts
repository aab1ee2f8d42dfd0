/**
 * Pipelined control bursts against the real engine (`retroflect run`, TUN backend, in a network namespace): N
 * clients each write one 64 KiB burst of 2-byte requests ("x\n", 32,768 of them, each answered with E_BAD_REQUEST)
 * and read their replies; meanwhile another client asks `status`. Measured: how long that `status` takes, how long
 * until every burst is answered, and the engine's resident memory before and at its peak (VmHWM). Issue 19 item 8:
 * before the per-request limit and turn-taking, 100 such clients kept `status` waiting 13 s and RSS went 89 → 486 MB.
 * `BURST_CLIENTS=100,300 BENCH=control-burst npm run bench` picks the client counts.
 */
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { ControlClient } from '../src/control/client.ts';
import { createTopology, type Topology } from '../test/helpers/netns.ts';
import { privateDir, removeDir, startEngine, type EngineHandle } from '../test/helpers/engine.ts';
import type { BenchResult } from './types.ts';

const REFLECT = '192.0.2.1';
/** One burst: 64 KiB of 2-byte requests. */
const BURST = Buffer.from('x\n'.repeat(32 * 1024));
const REQUESTS_PER_BURST = 32 * 1024;
const DEFAULT_CLIENTS = [100];
/** Give up on a round after this long (the bench must never hang). */
const ROUND_LIMIT_MS = 180_000;

/** kB → MB of a /proc/<pid>/status field (VmRSS now, VmHWM the peak). */
function memoryMb(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** A client that writes one burst and counts reply lines until it has them all. */
function burstClient(path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = net.connect(path);
    let lines = 0;
    s.on('connect', () => s.write(BURST));
    s.on('data', (d: Buffer) => {
      for (let i = d.indexOf(0x0a); i !== -1; i = d.indexOf(0x0a, i + 1)) lines++;
      if (lines >= REQUESTS_PER_BURST) {
        s.destroy();
        resolve();
      }
    });
    s.on('error', (err) => reject(new Error(`after ${lines} replies: ${err.message}`)));
    s.on('close', () => (lines < REQUESTS_PER_BURST ? reject(new Error(`closed after ${lines} replies`)) : resolve()));
  });
}

async function round(engine: EngineHandle, pid: number, clients: number): Promise<BenchResult[]> {
  const rssBefore = memoryMb(pid, 'VmRSS');
  const t0 = Date.now();
  const bursts = Promise.all(Array.from({ length: clients }, () => burstClient(engine.pipe)));
  const limit = new Promise<never>((_, reject) => {
    setTimeout(() => reject(new Error('round limit')), ROUND_LIMIT_MS).unref();
  });
  // Let the bursts arrive, then ask status from another connection.
  await new Promise((r) => setTimeout(r, 200));
  const s0 = Date.now();
  let statusMs: number;
  let statusNote = 'one status (connect, hello, status) from another connection, 200 ms into the bursts';
  try {
    const c = await ControlClient.connect({ pipe: engine.pipe, clientName: 'bench', timeoutMs: ROUND_LIMIT_MS });
    await c.call('status');
    c.close();
    statusMs = Date.now() - s0;
  } catch (err) {
    statusMs = Date.now() - s0;
    statusNote = `not answered: ${(err as Error).message} after ${statusMs} ms`;
  }
  let burstsNote = 'every reply read';
  await Promise.race([bursts, limit]).catch((err: Error) => (burstsNote = `not all answered: ${err.message}`));
  const allMs = Date.now() - t0;
  const peak = memoryMb(pid, 'VmHWM');
  const label = `${clients} bursting clients (${clients * REQUESTS_PER_BURST} requests)`;
  return [
    { name: `control status during ${label}`, value: statusMs, unit: 'ms', note: statusNote },
    { name: `control bursts answered, ${label}`, value: allMs, unit: 'ms', note: burstsNote },
    {
      name: `engine RSS before / peak, ${label}`,
      value: Number(peak.toFixed(0)),
      unit: 'MB peak',
      note: `${rssBefore.toFixed(0)} MB before (VmRSS); peak is VmHWM since start`,
    },
  ];
}

export async function run(): Promise<BenchResult[]> {
  let t: Topology | undefined;
  let engine: EngineHandle | undefined;
  const dir = privateDir('bcb');
  const counts = process.env.BURST_CLIENTS ? process.env.BURST_CLIENTS.split(',').map(Number) : DEFAULT_CLIENTS;
  try {
    t = await createTopology('bcb');
    engine = await startEngine(t.a, dir, { config: false, args: ['--reflect', REFLECT] });
    const probe = await ControlClient.connect({ pipe: engine.pipe });
    const pid = (await probe.call('status')).pid;
    probe.close();
    const results: BenchResult[] = [];
    for (const n of counts) results.push(...(await round(engine, pid, n)));
    return results;
  } finally {
    await engine?.kill();
    await t?.destroy();
    removeDir(dir);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  for (const r of await run()) console.log(`${r.name}: ${r.value} ${r.unit}${r.note ? ` (${r.note})` : ''}`);
}
