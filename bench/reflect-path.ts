/**
 * The cost of the reflect path: a client in a namespace talks to a server on the same host, once to the host's own
 * address (the kernel's loopback path, the baseline), once through a minimal C loop on a TUN device (the design's
 * limit on this machine: bench/tun-c-loop.c), once through a reflect address served by the real
 * `retroflect run --backend tun` (out into the TUN, through the worker loop and the Dataplane, back in), and once
 * through `retroflect run --backend ebpf` (reflected by the tc program in the kernel, no copy), and once through a
 * second ebpf engine with a capture running whose filter matches none of this traffic (`ebpf-capture`: what a capture
 * costs the packets it does not want). One engine runs per host (namespace), so each ebpf engine has a topology of
 * its own; their servers and clients are the same. The TUN and the first ebpf engine also serve an address with port
 * maps (MAPPED_ADDRESS) and one with allow lists (see LISTED_ADDRESS).
 *
 * All paths are live at the same time (each on its own address), so rounds can alternate between them
 * cheaply: this machine is shared and its speed drifts by tens of percent within a minute, so only numbers taken
 * close together are compared. Reported: the median of each path's rounds, and each path's ratio to direct.
 *  - throughput: single-stream TCP (iperf3), `THROUGHPUT_ROUNDS` rounds of every path in turn;
 *  - latency: ping-pong one-way latency (sockperf, UDP and TCP), `LATENCY_ROUNDS` rounds of every path but the C loop.
 * Needs root, iperf3, sockperf and gcc (without gcc the C loop is skipped); everything happens inside namespaces
 * created and removed here. Takes about 3 minutes.
 *
 * What to expect on the shared 2-core VM this was built on (see bench/README.md): the C loop and
 * the engine are both bound by the two extra copies a TUN device costs per byte (read out, write back in), so both
 * sit at roughly 0.4-0.6x of direct, and the engine at roughly 0.85-1.0x of the C loop.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BenchResult } from './types.ts';
import { createTopology, type NetNs } from '../test/helpers/netns.ts';
import { spawnEngine, waitReady } from '../test/e2e/engine-process.ts';
import { ControlClient } from '../src/control/client.ts';

/** Seconds per iperf3 run (the first ~0.3 s is slow start, so shorter runs under-report). */
const IPERF_SECONDS = 2;
const THROUGHPUT_ROUNDS = 3;
/**
 * Seconds per sockperf run: about 20 000 timed round trips. Each run also costs sockperf's fixed ~2 s warm-up, which
 * is why there are only two latency rounds and the C loop is left out of them (it adds one thread wake-up per
 * direction, like the engine; in separate runs 0.84-1.15x of the engine's latency, typically ~0.87x).
 */
const SOCKPERF_SECONDS = 1;
const LATENCY_ROUNDS = 2;
const IPERF_PORT = 5201;
const SOCKPERF_UDP_PORT = 11111;
const SOCKPERF_TCP_PORT = 11112;
/** Reflect address served by the engine, and the one routed into the C loop's device. */
const ENGINE_ADDRESS = '192.0.2.1';
const C_LOOP_ADDRESS = '192.0.2.2';
const C_LOOP_DEVICE = 'rflctc';
const C_LOOP_SOURCE = 'bench/tun-c-loop.c';
const C_LOOP_BINARY = '.tmp/tun-c-loop';

type PathName =
  | 'direct' | 'direct-1500' | 'c-loop' | 'engine' | 'engine-mapped' | 'engine-listed'
  | 'ebpf' | 'ebpf-mapped' | 'ebpf-listed' | 'ebpf-capture';
/** Where a path's client runs and what it connects to. */
type PathTarget = { ns: NetNs; host: string };
/** The ebpf engine's reflect address (in its own topology) and device. */
const EBPF_ADDRESS = '192.0.2.1';
const EBPF_DEVICE = 'rflcte';
/** The MTU of the engines' devices (TUN and veth), and of the direct-1500 path's loopback. */
const REFLECT_DEVICE_MTU = 1500;
/** The ebpf-capture engine's capture: a port none of the benchmark's traffic uses (discard), so it matches nothing. */
const UNMATCHED_CAPTURE = { format: 'summary', ports: [9] };

/**
 * A second reflect address on each engine whose ports are mapped onto the servers' (5202=5201/tcp,
 * 11113=11111/udp, 11114=11112/tcp): every packet of its runs is rewritten in both directions — by the worker's
 * data plane on TUN (engine/port-mapper.ts), by the tc program once the server has answered on ebpf (mapped_flows) —
 * so engine-mapped/engine and ebpf-mapped/ebpf are what port mapping costs each reflect path.
 */
const MAPPED_ADDRESS = '192.0.2.3';
const MAPPED_PORT_OFFSET = 1;
const MAPPED_PATHS: readonly PathName[] = ['engine-mapped', 'ebpf-mapped'];
const mappedPort = (p: PathName, port: number): number => (MAPPED_PATHS.includes(p) ? port + MAPPED_PORT_OFFSET : port);

/**
 * A further reflect address on each engine with allow lists (issue 23): a port list naming the servers' ports and a
 * users list naming root, who runs the clients and servers here (nft `meta skuid` on the output hook). On ebpf the
 * tc program decides the port list in the kernel; on TUN the data plane does. engine-listed/engine and
 * ebpf-listed/ebpf are what the lists cost the reflect path (aim: within 5 %).
 */
const LISTED_ADDRESS = '192.0.2.4';
const LISTED_PAIRS = [['engine-listed', 'engine'], ['ebpf-listed', 'ebpf']] as const;
const LISTS = ['--ports', `${IPERF_PORT}/tcp,${SOCKPERF_UDP_PORT}/udp,${SOCKPERF_TCP_PORT}/tcp`, '--users', 'root'];

/**
 * The throughput ratios reported besides each path's ratio to direct: [path, the path it is compared with, what the
 * ratio shows, the aim]. A pair is skipped when either path was not measured (no gcc: no C loop).
 */
const THROUGHPUT_RATIOS: readonly (readonly [PathName, PathName, string, string])[] = [
  ['engine', 'c-loop', '', ''],
  ['ebpf', 'direct-1500', 'both at MTU 1500', 'aim ≥ 0.9'],
  ['ebpf', 'engine', 'kernel path vs TUN', ''],
  ...LISTED_PAIRS.map(([listed, plain]) => [listed, plain, 'ports + users lists cost', 'aim: within 5 %'] as const),
  ['ebpf-capture', 'ebpf', 'a capture matching nothing vs none', 'aim ≥ 0.95'],
  ['engine-mapped', 'engine', 'port map cost', 'aim ≥ 0.9'],
  ['ebpf-mapped', 'ebpf', 'port map cost in the kernel', ''],
];

async function iperf(ns: NetNs, host: string, port = IPERF_PORT): Promise<number> {
  const r = await ns.run(
    'iperf3',
    ['-c', host, '-p', String(port), '-t', String(IPERF_SECONDS), '-J'],
    { timeoutMs: (IPERF_SECONDS + 15) * 1000 },
  );
  const doc = JSON.parse(r.stdout) as { end?: { sum_received?: { bits_per_second: number } }; error?: string };
  if (!doc.end?.sum_received) throw new Error(`iperf3 to ${host} failed: ${doc.error ?? r.stderr}`);
  return doc.end.sum_received.bits_per_second / 1e9;
}

async function sockperf(ns: NetNs, host: string, tcp: boolean, offset = 0): Promise<number> {
  const args = [
    'pp',
    ...(tcp ? ['--tcp'] : []),
    '-i',
    host,
    '-p',
    String((tcp ? SOCKPERF_TCP_PORT : SOCKPERF_UDP_PORT) + offset),
    '-t',
    String(SOCKPERF_SECONDS),
  ];
  const r = await ns.run('sockperf', args, { timeoutMs: (SOCKPERF_SECONDS + 15) * 1000 });
  // sockperf reports one-way latency (half the round trip), in microseconds.
  const m = /Summary: Latency is ([\d.]+) usec/.exec(r.stdout + r.stderr);
  if (!m) throw new Error(`sockperf to ${host} failed: ${r.stdout.slice(-500)} ${r.stderr.slice(-500)}`);
  return Number(m[1]);
}

/** Compile the C loop into .tmp/ (argument array, no shell). Returns false when gcc is missing or fails. */
function buildCLoop(): boolean {
  if (spawnSync('which', ['gcc']).status !== 0) return false;
  mkdirSync('.tmp', { recursive: true });
  return spawnSync('gcc', ['-O2', '-Wall', '-o', C_LOOP_BINARY, C_LOOP_SOURCE], { stdio: 'inherit' }).status === 0;
}

/** Start the C loop in `ns` with the engine's default device setup (vnet header + offloads, MTU 1500). */
async function startCLoop(ns: NetNs): Promise<void> {
  const child = ns.spawn(C_LOOP_BINARY, [C_LOOP_DEVICE, 'vnet']);
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready')) resolve();
    });
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    child.once('exit', (code) => reject(new Error(`C loop exited (${code}): ${out}`)));
  });
  await ns.must('ip', ['link', 'set', 'dev', C_LOOP_DEVICE, 'mtu', '1500', 'up']);
  await ns.must('ip', ['route', 'replace', `${C_LOOP_ADDRESS}/32`, 'dev', C_LOOP_DEVICE]);
}

function median(values: number[]): number {
  const s = [...values].sort((x, y) => x - y);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

function round(v: number): number {
  return Math.round(v * 1000) / 1000;
}

const range = (values: number[]): string => `rounds: ${values.map((v) => v.toFixed(1)).join(', ')}`;

/** Measure with every path already running; `hosts` maps each path to the address its client connects to. */
async function measure(hosts: Partial<Record<PathName, PathTarget>>): Promise<BenchResult[]> {
  const paths = Object.keys(hosts) as PathName[];
  const out: BenchResult[] = [];
  const gbps: Partial<Record<PathName, number[]>> = {};
  for (let r = 0; r < THROUGHPUT_ROUNDS; r++) {
    for (const p of paths) (gbps[p] ??= []).push(await iperf(hosts[p]!.ns, hosts[p]!.host, mappedPort(p, IPERF_PORT)));
  }
  const tput = Object.fromEntries(paths.map((p) => [p, median(gbps[p]!)])) as Record<PathName, number>;
  for (const p of paths) {
    out.push({
      name: `reflect-path ${p}: TCP throughput (iperf3, 1 stream, median)`,
      value: round(tput[p]),
      unit: 'Gbit/s',
      note: range(gbps[p]!),
    });
  }
  for (const p of paths.filter((q) => q !== 'direct')) {
    out.push({
      name: `reflect-path ${p}/direct: TCP throughput ratio`,
      value: round(tput[p] / tput.direct),
      unit: 'x',
    });
  }
  for (const [over, under, what, aim] of THROUGHPUT_RATIOS) {
    if (!tput[over] || !tput[under]) continue;
    out.push({
      name: `reflect-path ${over}/${under}: TCP throughput ratio${what ? ` (${what})` : ''}`,
      value: round(tput[over] / tput[under]),
      unit: 'x',
      ...(aim ? { note: aim } : {}),
    });
  }

  const latencyPaths = paths.filter((p) => p !== 'c-loop');
  for (const tcp of [false, true]) {
    const proto = tcp ? 'TCP' : 'UDP';
    const us: Partial<Record<PathName, number[]>> = {};
    for (let r = 0; r < LATENCY_ROUNDS; r++) {
      for (const p of latencyPaths) (us[p] ??= []).push(await sockperf(hosts[p]!.ns, hosts[p]!.host, tcp, mappedPort(p, 0)));
    }
    const lat = Object.fromEntries(latencyPaths.map((p) => [p, median(us[p]!)])) as Record<PathName, number>;
    for (const p of latencyPaths) {
      out.push({
        name: `reflect-path ${p}: ${proto} ping-pong latency (sockperf, one-way, median)`,
        value: round(lat[p]),
        unit: 'us',
        note: range(us[p]!),
      });
    }
    for (const p of latencyPaths.filter((q) => q !== 'direct')) {
      out.push({
        name: `reflect-path ${p}/direct: ${proto} latency ratio`,
        value: round(lat[p] / lat.direct),
        unit: 'x',
      });
    }
    for (const [listed, plain] of LISTED_PAIRS) {
      if (!lat[listed] || !lat[plain]) continue;
      out.push({
        name: `reflect-path ${listed}/${plain}: ${proto} latency ratio (lists cost)`,
        value: round(lat[listed] / lat[plain]),
        unit: 'x',
      });
    }
  }
  return out;
}

export async function run(): Promise<BenchResult[]> {
  const missing = ['iperf3', 'sockperf', 'ip', 'nft'].filter((tool) => spawnSync('which', [tool]).status !== 0);
  if (process.geteuid?.() !== 0 || missing.length) {
    const note = missing.length ? `missing: ${missing.join(', ')}` : 'needs root';
    return [{ name: 'reflect-path', value: 0, unit: 'skipped', note }];
  }
  const out: BenchResult[] = [];
  const haveCLoop = buildCLoop();
  if (!haveCLoop) out.push({ name: 'reflect-path c-loop', value: 0, unit: 'skipped', note: 'gcc missing or failed' });
  const t = await createTopology('bench');
  // The control socket must live in a root-owned 0700 directory (mkdtemp makes one).
  const pipeDir = mkdtempSync(join(tmpdir(), 'rft-bench-'));
  const pipe = join(pipeDir, 'retroflect.sock');
  const engine = spawnEngine(t.a, ['--no-config', '--reflect', ENGINE_ADDRESS, '--pipe', pipe, '--device', 'rflcte', '--backend', 'tun']);
  const t2 = await createTopology('benche');
  const ebpfPipe = join(pipeDir, 'ebpf.sock');
  const ebpf = spawnEngine(t2.a, ['--no-config', '--reflect', EBPF_ADDRESS, '--pipe', ebpfPipe, '--device', EBPF_DEVICE, '--backend', 'ebpf']);
  const t3 = await createTopology('benchc');
  // direct-1500: the direct path at the MTU the reflect devices use (veth and TUN, 1500), on the capture engine's
  // namespace, whose own loopback nothing else here uses. Plain `direct` runs at loopback's 65536.
  const lo = await t3.a.run('ip', ['link', 'set', 'dev', 'lo', 'mtu', String(REFLECT_DEVICE_MTU)]);
  if (lo.code !== 0) throw new Error(`setting loopback's MTU failed: ${lo.stderr}`);
  const capturePipe = join(pipeDir, 'ebpf-capture.sock');
  const ebpfCapture = spawnEngine(t3.a,
    ['--no-config', '--reflect', EBPF_ADDRESS, '--pipe', capturePipe, '--device', EBPF_DEVICE, '--backend', 'ebpf']);
  let captureClient: ControlClient | null = null;
  try {
    for (const ns of [t.a, t2.a, t3.a]) {
      ns.spawn('iperf3', ['-s', '-p', String(IPERF_PORT)]);
      ns.spawn('sockperf', ['sr', '-i', '0.0.0.0', '-p', String(SOCKPERF_UDP_PORT)]);
      ns.spawn('sockperf', ['sr', '--tcp', '-i', '0.0.0.0', '-p', String(SOCKPERF_TCP_PORT)]);
    }
    if (haveCLoop) await startCLoop(t.a);
    await waitReady(engine);
    await waitReady(ebpf);
    await waitReady(ebpfCapture);
    captureClient = await ControlClient.connect({ pipe: capturePipe });
    await captureClient.call('capture.start', UNMATCHED_CAPTURE);
    const maps = [
      `${IPERF_PORT + MAPPED_PORT_OFFSET}=${IPERF_PORT}/tcp`,
      `${SOCKPERF_UDP_PORT + MAPPED_PORT_OFFSET}=${SOCKPERF_UDP_PORT}/udp`,
      `${SOCKPERF_TCP_PORT + MAPPED_PORT_OFFSET}=${SOCKPERF_TCP_PORT}/tcp`,
    ];
    const addAddress = async (ns: NetNs, on: string, args: string[], what: string): Promise<void> => {
      const cli = ['--import', 'tsx', 'src/cli/main.ts', 'address', 'add', ...args, '--temporary', '--pipe', on];
      const add = await ns.run(process.execPath, cli);
      if (add.code !== 0) throw new Error(`adding the ${what} failed: ${add.stderr}`);
    };
    const mapArgs = [MAPPED_ADDRESS, ...maps.flatMap((m) => ['--map', m])];
    await addAddress(t.a, pipe, mapArgs, 'mapped address (tun)');
    await addAddress(t2.a, ebpfPipe, mapArgs, 'mapped address (ebpf)');
    await addAddress(t.a, pipe, [LISTED_ADDRESS, ...LISTS], 'listed address (tun)');
    await addAddress(t2.a, ebpfPipe, [LISTED_ADDRESS, ...LISTS], 'listed address (ebpf)');
    const at = (host: string): PathTarget => ({ ns: t.a, host });
    out.push(
      ...(await measure({
        direct: at(t.a4),
        'direct-1500': { ns: t3.a, host: t3.a4 },
        ...(haveCLoop ? { 'c-loop': at(C_LOOP_ADDRESS) } : {}),
        engine: at(ENGINE_ADDRESS),
        'engine-mapped': at(MAPPED_ADDRESS),
        'engine-listed': at(LISTED_ADDRESS),
        ebpf: { ns: t2.a, host: EBPF_ADDRESS },
        'ebpf-listed': { ns: t2.a, host: LISTED_ADDRESS },
        'ebpf-mapped': { ns: t2.a, host: MAPPED_ADDRESS },
        'ebpf-capture': { ns: t3.a, host: EBPF_ADDRESS },
      })),
    );
    const stopped = await captureClient.call('capture.stop', {});
    if (stopped.captured !== 0) throw new Error(`the unmatched capture recorded ${stopped.captured} packets`);
  } finally {
    captureClient?.close();
    for (const e of [engine, ebpf, ebpfCapture]) e.child.kill('SIGTERM');
    for (const e of [engine, ebpf, ebpfCapture]) await e.exited;
    await t.destroy();
    await t2.destroy();
    await t3.destroy();
    rmSync(pipeDir, { recursive: true, force: true });
  }
  return out;
}

// Run directly: node --import tsx bench/reflect-path.ts
if (import.meta.url === `file://${process.argv[1]}`) {
  for (const r of await run()) {
    console.log(`${r.name.padEnd(70)} ${String(r.value).padStart(10)} ${r.unit}${r.note ? `  (${r.note})` : ''}`);
  }
}
