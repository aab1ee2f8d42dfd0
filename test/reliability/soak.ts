/**
 * Bounded soak: the real `retroflect run` in a namespace (veth topology, documentation addresses only), iperf3 TCP
 * and UDP through a reflect address, alternately quiet and with a live change every `changeEveryMs` (address and
 * shield add/remove, persisted to a config file, over the control socket). Reported per phase: throughput, TCP
 * retransmits, UDP loss; for the run: engine RSS samples, change count and latency, counter consistency.
 *
 * Used by `npm run reliability -- soak [seconds]` (minutes) and, with short phases, by bench/live-change.ts (the
 * throughput cost of a live change). Everything happens in namespaces created and removed here.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ControlClient } from '../../src/control/client.ts';
import { createTopology, type NetNs, type Topology } from '../helpers/netns.ts';
import { privateDir, removeDir, startEngine, type EngineHandle } from '../helpers/engine.ts';

const REFLECT = '192.0.2.1';
const IPERF_PORT = 5201;
const UDP_RATE = '100M';

export interface PhaseResult {
  changes: boolean;
  tcpGbps: number;
  tcpRetransmits: number;
  udpSent: number;
  udpLost: number;
}

export interface SoakResult {
  phases: PhaseResult[];
  changes: number;
  changeFailures: string[];
  changeMsMedian: number;
  changeMsMax: number;
  rssMb: number[];
  /** UDP datagrams iperf3 sent / the engine reflected / the server received, over the whole run. */
  udp: { sent: number; reflected: number; received: number };
  /** received <= reflected <= sent: the engine counted no more than was sent and no less than arrived. */
  countersConsistent: boolean;
  engineErrors: { receive: number; send: number };
  aliveAtEnd: boolean;
  cleanAtEnd: boolean;
}

async function iperfJson(ns: NetNs, args: string[], seconds: number): Promise<any> {
  const r = await ns.run('iperf3', ['-c', REFLECT, '-p', String(IPERF_PORT), '-t', String(seconds), '-J', ...args], { timeoutMs: (seconds + 20) * 1000 });
  const doc = JSON.parse(r.stdout);
  if (!doc.end) throw new Error(`iperf3 failed: ${doc.error ?? r.stderr}`);
  return doc;
}

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** Live changes until `stop()`: each one a different kind, all persisted (the config file is rewritten each time). */
function changeLoop(client: ControlClient, everyMs: number): { stop(): Promise<void>; count(): number; failures: string[]; ms: number[] } {
  const failures: string[] = [];
  const ms: number[] = [];
  let i = 0;
  let running = true;
  const steps: [string, Record<string, unknown>][] = [
    ['address.add', { addresses: ['203.0.113.77'] }],
    ['shield.add', { ports: ['9077/tcp'] }],
    ['address.remove', { addresses: ['203.0.113.77'] }],
    ['shield.remove', { ports: ['9077/tcp'] }],
  ];
  const loop = (async () => {
    while (running) {
      const [method, params] = steps[i % steps.length]!;
      const t0 = performance.now();
      try {
        await client.call(method as 'status', params);
      } catch (err) {
        failures.push(`${method}: ${(err as Error).message}`);
      }
      ms.push(performance.now() - t0);
      i++;
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
    },
    count: () => i,
    failures,
    ms,
  };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

export async function runSoak(opts: { phaseSeconds: number; rounds: number; changeEveryMs: number; log?: (s: string) => void }): Promise<SoakResult> {
  const log = opts.log ?? (() => undefined);
  const t: Topology = await createTopology('soak');
  const dir = privateDir('soak');
  let engine: EngineHandle | undefined;
  let client: ControlClient | undefined;
  try {
    const config = join(dir, 'config.json');
    engine = await startEngine(t.a, dir, { config, args: ['--reflect', REFLECT, '--shield', '8080/tcp'] });
    t.a.spawn('iperf3', ['-s', '-p', String(IPERF_PORT)]);
    await new Promise((r) => setTimeout(r, 500));
    client = await ControlClient.connect({ pipe: engine.pipe });
    const pid = engine.child.pid!;
    const rss: number[] = [rssMb(pid)];
    const rssTimer = setInterval(() => rss.push(rssMb(pid)), 5000);
    const phases: PhaseResult[] = [];
    const allMs: number[] = [];
    const failures: string[] = [];
    let changes = 0;
    const udp = { sent: 0, reflected: 0, received: 0 };
    const before = await client.call('stats', {});
    const udpBefore = before.byAddress.find((a) => a.address === REFLECT)?.byProtocol.udp.packets ?? 0;
    try {
      for (let r = 0; r < opts.rounds; r++) {
        for (const withChanges of [false, true]) {
          const loop = withChanges ? changeLoop(client, opts.changeEveryMs) : null;
          const tcp = await iperfJson(t.a, [], opts.phaseSeconds);
          const u = await iperfJson(t.a, ['-u', '-b', UDP_RATE, '-l', '1200'], Math.max(1, Math.round(opts.phaseSeconds / 2)));
          if (loop) {
            await loop.stop();
            changes += loop.count();
            allMs.push(...loop.ms);
            failures.push(...loop.failures);
          }
          const phase: PhaseResult = {
            changes: withChanges,
            tcpGbps: tcp.end.sum_received.bits_per_second / 1e9,
            tcpRetransmits: tcp.end.sum_sent.retransmits,
            udpSent: u.end.sum.packets,
            udpLost: u.end.sum.lost_packets,
          };
          udp.sent += u.end.sum.packets;
          udp.received += u.end.sum.packets - u.end.sum.lost_packets;
          phases.push(phase);
          log(`round ${r + 1} ${withChanges ? 'changes' : 'quiet  '}: ${phase.tcpGbps.toFixed(2)} Gbit/s, ${phase.tcpRetransmits} retransmits, UDP ${phase.udpLost}/${phase.udpSent} lost, RSS ${rss.at(-1)?.toFixed(1)} MB`);
        }
      }
    } finally {
      clearInterval(rssTimer);
    }
    rss.push(rssMb(pid));
    const after = await client.call('stats', {});
    udp.reflected = (after.byAddress.find((a) => a.address === REFLECT)?.byProtocol.udp.packets ?? 0) - udpBefore;
    const alive = (await client.call('status', {})).state === 'running';
    client.close();
    client = undefined;
    engine.child.kill('SIGTERM');
    const code = await engine.exited;
    const tables = await t.a.must('nft', ['list', 'tables']);
    return {
      phases,
      changes,
      changeFailures: failures,
      changeMsMedian: median(allMs),
      changeMsMax: Math.max(...allMs),
      rssMb: rss,
      udp,
      countersConsistent: udp.received <= udp.reflected && udp.reflected <= udp.sent,
      engineErrors: { receive: after.errors.receive, send: after.errors.send },
      aliveAtEnd: alive,
      cleanAtEnd: code === 0 && !tables.includes('retroflect'),
    };
  } finally {
    client?.close();
    await engine?.kill();
    await t.destroy();
    removeDir(dir);
  }
}
