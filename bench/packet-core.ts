/**
 * Packet-core benchmark: packets per second through `Dataplane.outbound` (parse, reflect-address lookup, flow table,
 * in-place reflection, counters) and `Dataplane.inbound` (the shield check), on one core, over packets laid out in
 * one Buffer the way a PacketBatch holds them. Also checks that the hot path allocates nothing.
 *
 *   node --import tsx bench/packet-core.ts        (or through `npm run bench`)
 *   BENCH_ONLY=ipv6-udp node --import tsx bench/packet-core.ts    (one case)
 *
 * Every case runs in a fresh Node process (this file with `--case <name>`). V8 optimises the data plane for the
 * types and paths it has seen; cases sharing one process would inherit each other's type feedback (and whatever the
 * suites loaded before them left behind), so the numbers would depend on order rather than on the code. A fresh
 * process gives the same JIT state standalone and inside `npm run bench`.
 *
 * Per case: PROCESSES fresh processes, each running WARMUP packets (optimisation settles), then ROUNDS timed rounds
 * of ITERATIONS packets. The reported value is the median over processes of each process's median round; the note
 * gives every process median, because they differ (see PROCESSES).
 *
 * Host reference: after each timed round the process also times a fixed loop that involves none of the data plane
 * (HOST_REFERENCE_*), and the note gives each process's median reference rate. On the shared VM this runs on, the
 * CPU throughput a process gets varies up to 2x between processes (and sometimes within one), for this loop as much
 * as for the data plane: e.g. "outbound mix" processes at ~4.5 Mpps ran the reference near 270 M/s, those at ~9 Mpps
 * near 520 M/s. A low process median with a normal reference is the data plane's own (JIT) variance; a low one with a
 * low reference is the machine.
 *
 * Packet sets: IPv4/IPv6 × TCP/UDP, sizes spread over 64..1500 bytes, 256 distinct port pairs (so the flow table
 * works with many flows), two reflect addresses (one per family). Each packet's source is also its reflect address,
 * so reflecting it (a full swap) leaves it addressed to the reflect address again and every pass takes the reflect
 * path; otherwise the second pass over a buffer would see the already-swapped packets and just pass them. The
 * "engine mix" case is what the engine's worker loop does with real traffic: outbound (reflected) and inbound
 * (forged-source and shield checks) packets interleaved in one batch, dispatched on the batch's `outbound` flag as
 * worker.ts does. The "icmp-error" case is ICMP errors whose embedded packet is reflected as well.
 *
 * The allowed-ports pair is also measured in one process (`--alternate`, measureAlternating): two data planes, one
 * with the port lists and one without, over the same packets in alternating rounds. Both run the same compiled
 * functions, so the ratio is the cost of the lists' path alone, without the 2x JIT and CPU differences between
 * processes that the fresh-process pair carries (see PROCESSES).
 *
 * Allocation check: heap used before/after the timed rounds and the number of garbage collections observed during
 * them (PerformanceObserver 'gc'). An allocating hot path (even one small object per packet) would trigger many
 * scavenges over millions of packets; zero GCs and a heap delta near zero mean no per-packet allocation.
 */
import { execFile } from 'node:child_process';
import { PerformanceObserver } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { Verdict } from '../src/packet/verdicts.ts';
import { EngineCounters } from '../src/engine/counters.ts';
import { Dataplane } from '../src/engine/dataplane.ts';
import { FlowTable } from '../src/engine/flow-table.ts';
import { icmpMessage, ipv4, ipv6, pattern, tcpSegment, udpDatagram, withChecksum, addressBytes } from '../test/helpers/packet-builders.ts';
import type { PortMap } from '../src/config/port-maps.ts';
import type { AllowedPortEntry } from '../src/packet/allowed-ports.ts';
import { IpProto, ParsedPacket, parsePacket } from '../src/packet/parse.ts';
import type { BenchResult } from './types.ts';

const R4 = '203.0.113.7';
const R6 = '2001:db8:ffff::7';
/** Packets per timed round. */
const ITERATIONS = 2_000_000;
/** Packets before timing starts: enough for V8 to optimise the whole path (it does so within ~100k). */
const WARMUP = 1_000_000;
/** Timed rounds per process. */
const ROUNDS = 5;
/**
 * Fresh processes per case. One process can run ~2x faster or slower than the next and stay there: partly the
 * machine (the host reference in the file comment moves with it), partly which functions V8 inlined where. One
 * process per case would report a coin toss. The value is the median of the processes' median rounds; the note gives the spread.
 */
const PROCESSES = 3;
/**
 * The host reference loop: HOST_REFERENCE_STEPS multiply-xor steps over strided reads of a HOST_REFERENCE_WORDS Int32
 * array (1 MiB, about the data plane's working set of packets plus flow table), so it feels memory placement as
 * the data plane does. Fixed code, no calls, no allocation: its rate tracks the machine only.
 */
const HOST_REFERENCE_WORDS = 1 << 18;
const HOST_REFERENCE_STEPS = 5_000_000;
const SIZES = [64, 96, 128, 256, 512, 576, 1024, 1280, 1400, 1500];

/** Packets laid out as in a PacketBatch: one Buffer (the type every backend's batch uses), offsets, lengths, direction. */
interface PacketSet {
  data: Buffer;
  offset: Uint32Array;
  length: Uint32Array;
  /** 1 = this host sent it (Dataplane.outbound), 0 = it arrived (Dataplane.inbound). */
  outbound: Uint8Array;
  count: number;
  averageBytes: number;
  /**
   * Port-map cases only: where each packet's ports word (4 bytes) and transport checksum word start, and their
   * original values. A mapped packet is rewritten in place, so the loop puts these back after each call (the same
   * writes in the mapped and the unmapped case, so their difference is the mapping alone).
   */
  restore?: { portsAt: Uint32Array; ports: Uint32Array; checksumAt: Uint32Array; checksum: Uint16Array };
  /** Port-map cases: the maps to configure, and packets to send once before warm-up (the TCP SYNs opening flows). */
  portMaps?: PortMap[];
  prime?: Uint8Array[];
  /** Allowed-ports cases: the port lists to configure (config/allow-lists.ts). */
  allowedPorts?: AllowedPortEntry[];
}

/**
 * The outbound mix with a port list on both reflect addresses that names every port the mix goes to, so every
 * packet is still reflected: against 'outbound mix' it is what checking the list costs the reflect path.
 */
function allowedPortsSet(): PacketSet {
  const set = layout(outboundPackets(MIX).map((bytes) => ({ bytes, outbound: true })));
  const p = new ParsedPacket();
  const open = new Map<string, { port: number; protocol: 'tcp' | 'udp' }>();
  for (let i = 0; i < set.count; i++) {
    if (!parsePacket(set.data, set.offset[i], set.length[i], p) || !p.hasTransport) continue;
    const protocol = p.protocol === IpProto.Tcp ? 'tcp' : p.protocol === IpProto.Udp ? 'udp' : null;
    if (protocol) open.set(`${p.dstPort}/${protocol}`, { port: p.dstPort, protocol });
  }
  const ports = [...open.values()];
  return { ...set, allowedPorts: [{ slot: 0, open: ports, reply: [] }, { slot: 1, open: ports, reply: [] }] };
}

function layout(packets: { bytes: Uint8Array; outbound: boolean }[]): PacketSet {
  const total = packets.reduce((n, p) => n + p.bytes.length, 0);
  const data = Buffer.alloc(total);
  const offset = new Uint32Array(packets.length);
  const length = new Uint32Array(packets.length);
  const outbound = new Uint8Array(packets.length);
  let at = 0;
  packets.forEach((p, i) => {
    data.set(p.bytes, at);
    offset[i] = at;
    length[i] = p.bytes.length;
    outbound[i] = p.outbound ? 1 : 0;
    at += p.bytes.length;
  });
  return { data, offset, length, outbound, count: packets.length, averageBytes: total / packets.length };
}

type Kind = 'ipv4-tcp' | 'ipv4-udp' | 'ipv6-tcp' | 'ipv6-udp';

function makePacket(kind: Kind, i: number, dst4: string, dst6: string, src4 = R4, src6 = R6): Uint8Array {
  const size = SIZES[i % SIZES.length];
  const v4 = kind.startsWith('ipv4');
  const tcp = kind.endsWith('tcp');
  const header = (v4 ? 20 : 40) + (tcp ? 20 : 8);
  const data = pattern(Math.max(0, size - header), i);
  const srcPort = 40000 + (i % 256);
  const dstPort = tcp ? 8080 : 5353;
  const proto = tcp ? 6 : 17;
  const segment = tcp ? tcpSegment({ srcPort, dstPort, flags: 0x18, data }) : udpDatagram(srcPort, dstPort, data);
  if (v4) return ipv4({ src: src4, dst: dst4, proto, payload: withChecksum(addressBytes(src4), addressBytes(dst4), proto, segment) });
  return ipv6({ src: src6, dst: dst6, proto, payload: withChecksum(addressBytes(src6), addressBytes(dst6), proto, segment) });
}

/** Outbound packets to the reflect addresses (every one is reflected). */
function outboundPackets(kinds: Kind[]): Uint8Array[] {
  const packets: Uint8Array[] = [];
  for (let i = 0; i < 1024; i++) packets.push(makePacket(kinds[i % kinds.length], i, R4, R6));
  // A few ICMP echoes in the mix too.
  if (kinds.length > 1) for (let i = 0; i < 32; i++) packets.push(ipv4({ src: R4, dst: R4, proto: 1, payload: icmpMessage(8, 0, i, i, pattern(56)) }));
  return packets;
}

/** Inbound from another host: half to shielded ports, half not. */
function inboundPackets(): Uint8Array[] {
  const packets: Uint8Array[] = [];
  const kinds: Kind[] = ['ipv4-tcp', 'ipv4-udp', 'ipv6-tcp', 'ipv6-udp'];
  for (let i = 0; i < 1024; i++) {
    const p = makePacket(kinds[i % 4], i, '192.0.2.10', '2001:db8::10', '198.51.100.1', '2001:db8:1::1');
    if (i % 2) {
      // Point it at an unshielded port (destination port field at transport offset + 2).
      const t = p[0] >> 4 === 4 ? 20 : 40;
      p[t + 2] = 0x1f;
      p[t + 3] = 0x91; // 8081
    }
    packets.push(p);
  }
  return packets;
}

const MIX: Kind[] = ['ipv4-tcp', 'ipv6-tcp', 'ipv4-udp', 'ipv6-udp', 'ipv4-tcp', 'ipv4-tcp'];

/**
 * Port-unreachable errors to the reflect addresses, as the host sends them about reflected UDP datagrams (carrying
 * up to 576 / 1280 bytes in all), so the embedded packet is reflected too. Outer source = reflect address, as above.
 */
function icmpErrorPackets(): Uint8Array[] {
  const packets: Uint8Array[] = [];
  for (let i = 0; i < 256; i++) {
    const v4 = i % 2 === 0;
    const inner = makePacket(v4 ? 'ipv4-udp' : 'ipv6-udp', i, '192.0.2.10', '2001:db8::10');
    const body = Array.from(inner.subarray(0, Math.min(inner.length, v4 ? 576 - 28 : 1280 - 48)));
    packets.push(
      v4
        ? ipv4({ src: R4, dst: R4, proto: 1, payload: withChecksum([], [], 1, icmpMessage(3, 3, 0, 0, body)) })
        : ipv6({ src: R6, dst: R6, proto: 58, payload: withChecksum(addressBytes(R6), addressBytes(R6), 58, icmpMessage(1, 4, 0, 0, body)) }),
    );
  }
  return packets;
}

/** Port-map cases: the map P=T on both reflect addresses for TCP (8080=9080) and UDP (5353=6353). */
const MAPPED = { tcp: [8080, 9080], udp: [5353, 6353] } as const;

/**
 * Requests and replies of 512 conversations through a mapped port (MIX of kinds and sizes): the client's L:c → R:P
 * and the server's L:T → R:c. `mapped`: configure the maps (else the same packets are plain reflections).
 */
function portMapSet(mapped: boolean): PacketSet {
  const packets: { bytes: Uint8Array; outbound: boolean }[] = [];
  const prime: Uint8Array[] = [];
  for (let i = 0; i < 512; i++) {
    const kind = MIX[i % MIX.length];
    const [port, target] = kind.endsWith('tcp') ? MAPPED.tcp : MAPPED.udp;
    const request = makePacket(kind, i, R4, R6);
    const reply = makePacket(kind, i + 1, R4, R6);
    const t = (p: Uint8Array) => (p[0] >> 4 === 4 ? 20 : 40);
    const setPorts = (p: Uint8Array, src: number, dst: number) => {
      // makePacket's checksum is for its own ports: adjust it the plain way (recompute) so the packet is valid.
      const v = new DataView(p.buffer, p.byteOffset);
      v.setUint16(t(p), src);
      v.setUint16(t(p) + 2, dst);
    };
    const client = 40000 + i;
    setPorts(request, client, port);
    setPorts(reply, target, client);
    for (const p of [request, reply]) fixChecksum(p);
    packets.push({ bytes: request, outbound: true }, { bytes: reply, outbound: true });
    if (kind.endsWith('tcp')) {
      const syn = Uint8Array.from(request);
      syn[t(syn) + 13] = 0x02;
      fixChecksum(syn);
      prime.push(syn);
    }
  }
  const set = layout(packets);
  const portsAt = new Uint32Array(set.count);
  const ports = new Uint32Array(set.count);
  const checksumAt = new Uint32Array(set.count);
  const checksum = new Uint16Array(set.count);
  for (let j = 0; j < set.count; j++) {
    const off = set.offset[j];
    const t = off + (set.data[off] >> 4 === 4 ? 20 : 40);
    const tcp = set.data[off] >> 4 === 4 ? set.data[off + 9] === 6 : set.data[off + 6] === 6;
    portsAt[j] = t;
    ports[j] = set.data.readUInt32BE(t);
    checksumAt[j] = t + (tcp ? 16 : 6);
    checksum[j] = set.data.readUInt16BE(t + (tcp ? 16 : 6));
  }
  const maps: PortMap[] = mapped
    ? [R4, R6].flatMap((address) => [
        { address, protocol: 'tcp' as const, port: MAPPED.tcp[0], target: MAPPED.tcp[1] },
        { address, protocol: 'udp' as const, port: MAPPED.udp[0], target: MAPPED.udp[1] },
      ])
    : [];
  return { ...set, restore: { portsAt, ports, checksumAt, checksum }, portMaps: maps, prime: mapped ? prime : [] };
}

/** Recompute a test packet's transport checksum (reference implementation from test/helpers/packet-builders.ts). */
function fixChecksum(p: Uint8Array): void {
  const v4 = p[0] >> 4 === 4;
  const t = v4 ? 20 : 40;
  const proto = v4 ? p[9] : p[6];
  const src = Array.from(p.subarray(v4 ? 12 : 8, v4 ? 16 : 24));
  const dst = Array.from(p.subarray(v4 ? 16 : 24, v4 ? 20 : 40));
  const seg = withChecksum(src, dst, proto, Array.from(p.subarray(t)));
  p.set(seg, t);
}

/** The cases, by name: how to build the packet set, and which verdicts a correct data plane gives per pass over it. */
const CASES: Record<string, () => PacketSet> = {
  'outbound ipv4-tcp': () => layout(outboundPackets(['ipv4-tcp']).map((bytes) => ({ bytes, outbound: true }))),
  'outbound ipv4-udp': () => layout(outboundPackets(['ipv4-udp']).map((bytes) => ({ bytes, outbound: true }))),
  'outbound ipv6-tcp': () => layout(outboundPackets(['ipv6-tcp']).map((bytes) => ({ bytes, outbound: true }))),
  'outbound ipv6-udp': () => layout(outboundPackets(['ipv6-udp']).map((bytes) => ({ bytes, outbound: true }))),
  'outbound mix': () => layout(outboundPackets(MIX).map((bytes) => ({ bytes, outbound: true }))),
  'outbound icmp-error': () => layout(icmpErrorPackets().map((bytes) => ({ bytes, outbound: true }))),
  'shield (inbound)': () => layout(inboundPackets().map((bytes) => ({ bytes, outbound: false }))),
  'engine mix (out + in)': () => {
    // Three outbound packets for every inbound one, interleaved as they come off a TUN device or WinDivert.
    const out = outboundPackets(MIX);
    const inb = inboundPackets();
    const packets: { bytes: Uint8Array; outbound: boolean }[] = [];
    for (let i = 0, j = 0; i < out.length; i++) {
      packets.push({ bytes: out[i], outbound: true });
      if (i % 3 === 2) packets.push({ bytes: inb[j++ % inb.length], outbound: false });
    }
    return layout(packets);
  },
  // The same requests and replies with and without port maps: their ratio is what mapping costs the reflect path.
  'port-map off (same packets)': () => portMapSet(false),
  'port-map on (requests + replies)': () => portMapSet(true),
  // The outbound mix again, with every address's port list set (all its ports allowed): the cost of the lists.
  'allowed ports on (outbound mix)': allowedPortsSet,
};

/**
 * The timed loop: the worker's per-batch loop (src/engine/worker.ts), over the packet set as one endless batch. It
 * calls the Dataplane methods directly, as the worker does; a call through a per-case closure would measure V8's
 * call dispatch instead of the data plane.
 */
function loop(dp: Dataplane, set: PacketSet, n: number, verdicts: Int32Array): void {
  const { data, offset, length, outbound, count } = set;
  const now = Date.now();
  let j = 0;
  for (let i = 0; i < n; i++) {
    const v = outbound[j] === 1 ? dp.outbound(data, offset[j], length[j], now) : dp.inbound(data, offset[j], length[j], now);
    verdicts[v]++;
    if (++j === count) j = 0;
  }
}

/** The loop for the port-map cases: as `loop`, plus putting each packet's ports and checksum back (see PacketSet). */
function loopRestoring(dp: Dataplane, set: PacketSet, n: number, verdicts: Int32Array): void {
  const { data, offset, length, count } = set;
  const { portsAt, ports, checksumAt, checksum } = set.restore!;
  const now = Date.now();
  let j = 0;
  for (let i = 0; i < n; i++) {
    verdicts[dp.outbound(data, offset[j], length[j], now)]++;
    data.writeUInt32BE(ports[j], portsAt[j]);
    data.writeUInt16BE(checksum[j], checksumAt[j]);
    if (++j === count) j = 0;
  }
}

function dataplane(set: PacketSet): Dataplane {
  const dp = new Dataplane(new EngineCounters(), new FlowTable());
  dp.configure({
    portMaps: set.portMaps ?? [],
    allowedPorts: set.allowedPorts ?? [],
    reflect: [
      { address: R4, slot: 0 },
      { address: R6, slot: 1 },
    ],
    shield: Array.from({ length: 16 }, (_, i) => ({ port: i === 0 ? 8080 : i === 1 ? 5353 : 9000 + i, protocol: i % 2 ? ('udp' as const) : ('tcp' as const), slot: i })),
  });
  return dp;
}

const hostReferenceData = new Int32Array(HOST_REFERENCE_WORDS).map((_, i) => Math.imul(i, 0x9e3779b1));

/** Millions of host-reference steps per second (see HOST_REFERENCE_WORDS). */
function hostReference(): number {
  const a = hostReferenceData;
  const t0 = process.hrtime.bigint();
  let h = 0;
  let j = 0;
  for (let i = 0; i < HOST_REFERENCE_STEPS; i++) {
    h = Math.imul(h ^ a[j], 0x01000193);
    j = (j + 977) & (HOST_REFERENCE_WORDS - 1); // 977 is odd: visits every word
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (h === 0.5) throw new Error('unreachable'); // keeps h live, so the loop cannot be dropped
  return HOST_REFERENCE_STEPS / seconds / 1e6;
}

/** What one case's process reports. */
interface CaseReport {
  /** Mpps of each timed round, in order. */
  rounds: number[];
  /** Host reference rate (M steps/s) measured right after each round. */
  reference: number[];
  gcs: number;
  heapDelta: number;
  averageBytes: number;
}

/** Run one case in this process (the child side). Throws if the verdicts are not what a correct data plane gives. */
async function measureCase(name: string): Promise<CaseReport> {
  const build = CASES[name];
  if (!build) throw new Error(`unknown case ${name}`);
  const set = build();
  // Verdicts one pass over the set must give: every outbound packet reflected, odd-numbered inbound ones passed.
  const expected = new Int32Array(4);
  let inboundSeen = 0;
  for (let j = 0; j < set.count; j++) expected[set.outbound[j] === 1 ? Verdict.Reflect : inboundSeen++ % 2 === 0 ? Verdict.Drop : Verdict.Pass]++;
  const dp = dataplane(set);
  // Buffers, like the batch: a Uint8Array here would give the data plane's code a second receiver type.
  for (const p of set.prime ?? []) dp.outbound(Buffer.from(p), 0, p.length, Date.now());
  const run = set.restore ? loopRestoring : loop;
  if (set.portMaps?.length) {
    // The mapped case must map: a request's destination port becomes the target, a reply's source port the mapped port.
    const req = Buffer.from(set.data.subarray(set.offset[0], set.offset[0] + set.length[0]));
    const rep = Buffer.from(set.data.subarray(set.offset[1], set.offset[1] + set.length[1]));
    dp.outbound(req, 0, req.length, Date.now());
    dp.outbound(rep, 0, rep.length, Date.now());
    const t = req[0] >> 4 === 4 ? 20 : 40;
    if ((req[t + 2] << 8 | req[t + 3]) !== MAPPED.tcp[1] || (rep[t] << 8 | rep[t + 1]) !== MAPPED.tcp[0]) throw new Error(`${name}: packets were not mapped`);
  }
  const verdicts = new Int32Array(4);
  let gcCount = 0;
  const gcObserver = new PerformanceObserver((list) => {
    gcCount += list.getEntries().length;
  });
  gcObserver.observe({ entryTypes: ['gc'] });
  run(dp, set, WARMUP, verdicts);
  hostReference(); // its first run compiles it: before the heap and GC baselines
  // GC entries reach the observer asynchronously: let those of the setup and warm-up arrive before counting.
  await new Promise((r) => setTimeout(r, 100));
  const gcBefore = gcCount;
  const heapBefore = process.memoryUsage().heapUsed;
  const rounds: number[] = [];
  const reference: number[] = [];
  // Whole passes only, so the verdict totals are exact.
  const n = Math.round(ITERATIONS / set.count) * set.count;
  for (let round = 0; round < ROUNDS; round++) {
    verdicts.fill(0);
    const t0 = process.hrtime.bigint();
    run(dp, set, n, verdicts);
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    rounds.push(n / seconds / 1e6);
    reference.push(hostReference());
    for (const v of [Verdict.Reflect, Verdict.Pass, Verdict.Drop]) {
      if (verdicts[v] !== (expected[v] * n) / set.count) throw new Error(`${name}: verdicts ${Array.from(verdicts)}, expected ${Array.from(expected).map((x) => (x * n) / set.count)}`);
    }
  }
  const heapDelta = process.memoryUsage().heapUsed - heapBefore;
  await new Promise((r) => setTimeout(r, 100)); // let the observer deliver the rounds' GC entries
  gcObserver.disconnect();
  return { rounds, reference, gcs: gcCount - gcBefore, heapDelta, averageBytes: set.averageBytes };
}

/**
 * The one-process allowed-ports pair: pairs of rounds per process, and packets per round. Short rounds (about 10 ms)
 * and many of them: a neighbour taking the CPU for a while spoils a few pairs, whose ratios the median leaves out,
 * instead of one side of a long round.
 */
const ALTERNATE_PAIRS = 150;
const ALTERNATE_PACKETS = 65_536;
/** The name BENCH_ONLY matches for it. */
const ALTERNATE_NAME = 'allowed ports on/off (one process, alternating)';

/** What the `--alternate` process reports: Mpps of each round without and with the lists, pair by pair. */
interface AlternatingReport {
  without: number[];
  with: number[];
  gcs: number;
}

/**
 * The outbound mix through a data plane without port lists and one with them (every port listed, so every packet is
 * still reflected), each warmed with WARMUP packets, then ALTERNATE_PAIRS pairs of rounds; the order within a pair
 * alternates, so a drift of the machine within a pair weighs on each side equally often. Throws on a wrong verdict.
 */
async function measureAlternating(): Promise<AlternatingReport> {
  const plain = CASES['outbound mix']();
  const listed = allowedPortsSet();
  const sides = [{ set: plain, dp: dataplane(plain) }, { set: listed, dp: dataplane(listed) }];
  const verdicts = new Int32Array(4);
  for (const side of sides) loop(side.dp, side.set, WARMUP, verdicts);
  let gcCount = 0;
  const gcObserver = new PerformanceObserver((list) => {
    gcCount += list.getEntries().length;
  });
  gcObserver.observe({ entryTypes: ['gc'] });
  await new Promise((r) => setTimeout(r, 100));
  const gcBefore = gcCount;
  const rates: number[][] = [[], []];
  for (let pair = 0; pair < ALTERNATE_PAIRS; pair++) {
    for (const s of pair % 2 === 0 ? [0, 1] : [1, 0]) {
      const { set, dp } = sides[s];
      const n = Math.round(ALTERNATE_PACKETS / set.count) * set.count;
      verdicts.fill(0);
      const t0 = process.hrtime.bigint();
      loop(dp, set, n, verdicts);
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      if (verdicts[Verdict.Reflect] !== n) {
        throw new Error(`alternate: verdicts ${Array.from(verdicts)}, expected ${n} reflected`);
      }
      rates[s].push(n / seconds / 1e6);
    }
  }
  await new Promise((r) => setTimeout(r, 100));
  gcObserver.disconnect();
  return { without: rates[0], with: rates[1], gcs: gcCount - gcBefore };
}

/** The `q`th quartile (1 or 3) of sorted values (nearest rank). */
function quartile(sorted: number[], q: 1 | 3): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * q) / 4))];
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

const execFileAsync = promisify(execFile);
const thisFile = fileURLToPath(import.meta.url);
const repoRoot = fileURLToPath(new URL('..', import.meta.url));

/** The one-process allowed-ports pair in PROCESSES fresh processes: the median of every pair's ratio. */
async function alternatingResult(): Promise<BenchResult> {
  const ratios: number[] = [];
  const perProcess: string[] = [];
  const without: number[] = [];
  let gcs = 0;
  for (let i = 0; i < PROCESSES; i++) {
    const args = ['--import', 'tsx', thisFile, '--alternate'];
    const { stdout } = await execFileAsync(process.execPath, args, { cwd: repoRoot, maxBuffer: 1 << 20 });
    const r = JSON.parse(stdout) as AlternatingReport;
    const mine = r.with.map((w, k) => w / r.without[k]);
    ratios.push(...mine);
    without.push(...r.without);
    perProcess.push(median(mine).toFixed(3));
    gcs += r.gcs;
  }
  const sorted = [...ratios].sort((a, b) => a - b);
  return {
    name: `packet-core ${ALTERNATE_NAME}: throughput ratio`,
    value: Number(median(ratios).toFixed(3)),
    unit: 'x',
    note: `median of ${ratios.length} pairs' ratios (${PROCESSES} processes × ${ALTERNATE_PAIRS} pairs of ` +
      `${ALTERNATE_PACKETS}-packet rounds, outbound mix, every port listed); per process ${perProcess.join(', ')}; ` +
      `middle half of the pairs ${quartile(sorted, 1).toFixed(2)}-${quartile(sorted, 3).toFixed(2)}; ` +
      `no lists ${median(without).toFixed(2)} Mpps; ` +
      `${gcs} GCs; aim ≥ 0.95`,
  };
}

export async function run(): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  const allocation: string[] = [];
  let maxBytesPerPacket = 0;
  const only = process.env.BENCH_ONLY;
  // Each process runs one case (see the file comment); the cases take turns, a process each, so a ratio between two
  // cases compares neighbouring processes, not ones a whole suite apart, on a machine whose speed drifts.
  const names = Object.keys(CASES).filter((name) => !only || name.includes(only));
  const reportsOf = new Map<string, CaseReport[]>(names.map((name) => [name, []]));
  for (let i = 0; i < PROCESSES; i++) {
    for (const name of names) {
      const { stdout } = await execFileAsync(process.execPath, ['--import', 'tsx', thisFile, '--case', name], { cwd: repoRoot, maxBuffer: 1 << 20 });
      reportsOf.get(name)!.push(JSON.parse(stdout) as CaseReport);
    }
  }
  for (const name of names) {
    const reports = reportsOf.get(name)!;
    const medians = reports.map((r) => median(r.rounds));
    const references = reports.map((r) => median(r.reference));
    const gcs = reports.reduce((n, r) => n + r.gcs, 0);
    const heapDelta = Math.max(...reports.map((r) => r.heapDelta));
    maxBytesPerPacket = Math.max(maxBytesPerPacket, Math.max(0, heapDelta) / (ITERATIONS * ROUNDS));
    allocation.push(`${name}: ${gcs} GCs, heap ${heapDelta >= 0 ? '+' : ''}${heapDelta} B`);
    results.push({
      name: `packet-core ${name}`,
      value: Number(median(medians).toFixed(2)),
      unit: 'Mpps',
      note:
        `median of ${PROCESSES} fresh processes, each the median of ${ROUNDS} rounds × ${ITERATIONS / 1e6}M packets after ${WARMUP / 1e6}M ` +
        `warm-up; process medians ${medians.map((m) => m.toFixed(2)).join(', ')}; ` +
        `host reference per process ${references.map((m) => m.toFixed(0)).join(', ')} M steps/s; avg ${Math.round(reports[0].averageBytes)} B; ${gcs} GCs`,
    });
  }
  const off = results.find((r) => r.name === 'packet-core port-map off (same packets)');
  const on = results.find((r) => r.name === 'packet-core port-map on (requests + replies)');
  if (off && on) {
    results.push({ name: 'packet-core port-map on/off: throughput ratio', value: Number((on.value / off.value).toFixed(3)), unit: 'x', note: 'same packets, same loop; aim ≥ 0.9' });
  }
  if (!only || ALTERNATE_NAME.includes(only)) results.push(await alternatingResult());
  const mix = reportsOf.get('outbound mix');
  const listed = reportsOf.get('allowed ports on (outbound mix)');
  if (mix && listed) {
    // Process i of each case ran back to back: their ratio is the fairest on a drifting machine; the median of those.
    const pairs = listed.map((r, i) => median(r.rounds) / median(mix[i].rounds));
    results.push({
      name: 'packet-core allowed ports on/off: throughput ratio',
      value: Number(median(pairs).toFixed(3)),
      unit: 'x',
      note: `median of the ratios of neighbouring processes (${pairs.map((x) => x.toFixed(2)).join(', ')}); ` +
        'same packets, same loop, every port listed; aim ≥ 0.95',
    });
  }
  results.push({
    name: 'packet-core heap growth per packet',
    value: Number(maxBytesPerPacket.toFixed(4)),
    unit: 'B/packet',
    note: allocation.join('; '),
  });
  return results;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const at = process.argv.indexOf('--case');
  if (process.argv.includes('--alternate')) {
    process.stdout.write(JSON.stringify(await measureAlternating()));
  } else if (at >= 0) {
    process.stdout.write(JSON.stringify(await measureCase(process.argv[at + 1])));
  } else {
    for (const r of await run()) console.log(`${r.name.padEnd(40)} ${String(r.value).padStart(10)} ${r.unit.padEnd(9)} ${r.note ?? ''}`);
  }
}
