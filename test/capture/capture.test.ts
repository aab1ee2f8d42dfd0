/**
 * Capture end to end on Linux: the real `retroflect run` in namespace "a" (reflecting 192.0.2.1 and 2001:db8::1,
 * shielding 8080/tcp), the real `retroflect capture` / `retroflect trace` clients, and tshark reading what they
 * wrote. Traffic: curl (HTTP/0.9 against the probe server), UDP, ping (IPv4 and IPv6), a malformed UDP packet sent
 * through a raw socket, and from the second namespace "b" a shielded port tried and a datagram forged from the
 * reflect address. Those two never reach the TUN device (nft drops them); the engine sees them through NFLOG.
 */
import assert from 'node:assert/strict';
import { type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createTopology, JsonLines, run, waitFor, type NetNs, type Topology } from '../helpers/netns.ts';
import { spawnEngine, waitReady, type EngineProcess } from '../e2e/engine-process.ts';
import { backendArgs, LINUX_TEST_BACKENDS } from '../helpers/backends.ts';
import { ControlClient } from '../../src/control/client.ts';

const PROBE = 'test/fixtures/probe.ts';
const node = process.execPath;
const CLI = ['--import', 'tsx', 'src/cli/main.ts'];
const R4 = '192.0.2.1';
const R6 = '2001:db8::1';

/** tshark's view of a pcapng file: one object per packet with the fields we check. */
async function tsharkRead(file: string): Promise<{ src: string; dst: string; sport: string; dport: string; proto: string; comment: string; iface: string }[]> {
  const fields = ['ip.src', 'ipv6.src', 'ip.dst', 'ipv6.dst', 'tcp.srcport', 'udp.srcport', 'tcp.dstport', 'udp.dstport', 'frame.protocols', 'frame.comment', 'frame.interface_name'];
  const r = await run('tshark', ['-r', file, '-T', 'fields', '-E', 'separator=|', ...fields.flatMap((f) => ['-e', f])]);
  assert.equal(r.code, 0, `tshark failed: ${r.stderr}`);
  return r.stdout
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [s4, s6, d4, d6, ts, us, td, ud, proto, comment, iface] = line.split('|');
      return { src: s4 || s6, dst: d4 || d6, sport: ts || us, dport: td || ud, proto, comment, iface };
    });
}

/** Start `retroflect capture`/`trace` in `ns`; resolves once the engine has started the capture. */
function startClient(ns: NetNs, args: string[]): { child: ChildProcess; stdout: () => Buffer; stderr: () => string; exited: Promise<number | null> } {
  const child = ns.spawn('env', ['NO_COLOR=1', node, ...CLI, ...args]);
  const out: Buffer[] = [];
  let err = '';
  child.stdout!.on('data', (d: Buffer) => out.push(d));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, stdout: () => Buffer.concat(out), stderr: () => err, exited };
}

/** tshark's view of a capture streamed as pcapng notifications (their data joined is the file). */
async function pcapFromChunks(chunks: Buffer[]): ReturnType<typeof tsharkRead> {
  const file = join(mkdtempSync(join(tmpdir(), 'rft-chunks-')), 'c.pcapng');
  writeFileSync(file, Buffer.concat(chunks));
  try {
    return await tsharkRead(file);
  } finally {
    rmSync(dirname(file), { recursive: true, force: true });
  }
}

const escape = (s: string): string => s.replace(/[.]/g, '\\.');

/** Whether a listener is bound to an NFLOG group in `ns` (/proc/net/netfilter/nfnetlink_log lists them). */
async function nflogBound(ns: NetNs): Promise<boolean> {
  const r = await ns.run('cat', ['/proc/net/netfilter/nfnetlink_log']);
  return r.stdout.trim().length > 0;
}

/** Run `step` again and again until `done` settles (a client ending on --count), for at most a minute. */
async function repeatUntil(done: Promise<unknown>, step: () => Promise<unknown>): Promise<void> {
  let finished = false;
  void done.then(() => (finished = true));
  const end = Date.now() + 60_000;
  while (!finished && Date.now() < end) {
    await step();
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** A UDP/IPv4 packet to R4:5354 whose UDP length field (200) says more than the packet holds: badTransportHeader. */
const MALFORMED_SENDER = `
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
payload = b'xx'
udp = struct.pack('!HHHH', 40000, 5354, 200, 0) + payload
ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, socket.inet_aton('198.51.100.2'), socket.inet_aton('${R4}'))
s.sendto(ip + udp, ('${R4}', 0))
`;

/** From b: a UDP/IPv4 datagram to a's port 5354 whose source is the reflect address R4 (forged), through a raw socket. */
const forgedSender = (dst: string): string => `
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
payload = b'forged'
udp = struct.pack('!HHHH', 40001, 5354, 8 + len(payload), 0) + payload
ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 2, 0, 64, 17, 0, socket.inet_aton('${R4}'), socket.inet_aton('${dst}'))
s.sendto(ip + udp, ('${dst}', 0))
`;

/** On each line on stdin: send `count` UDP datagrams to R4:`port` at once, then say so (one JSON line). */
const burstSender = (count: number, port: number): string => `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for line in sys.stdin:
    for i in range(${count}):
        s.sendto(b'burst %d' % i, ('${R4}', ${port}))
    print('{"sent": true}', flush=True)
`;

for (const backend of LINUX_TEST_BACKENDS)
describe(`retroflect capture and trace (Linux, real engine, tshark, ${backend})`, { timeout: 240_000 }, () => {
  let t: Topology;
  let engine: EngineProcess | undefined;
  const dir = mkdtempSync(join(tmpdir(), 'rft-capture-'));
  const pipe = join(dir, 'retroflect.sock');

  before(async () => {
    t = await createTopology('cap');
    const servers = new JsonLines(t.a.spawn(node, ['--import', 'tsx', PROBE, 'serve', '8080,8081', '5354']));
    await servers.next((o) => o.ready === true);
    engine = spawnEngine(t.a, ['--no-config', '--reflect', R4, R6, '--shield', '8080/tcp', '--pipe', pipe, '--device', 'rflct0', ...backendArgs(backend)]);
    await waitReady(engine);
  });

  after(async () => {
    engine?.child.kill('SIGKILL');
    await t?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  async function traffic(): Promise<void> {
    const curl = await t.a.run('curl', ['--http0.9', '-s', '-m', '5', `http://${R4}:8081/`]);
    assert.match(curl.stdout, /peer=192\.0\.2\.1/, curl.stderr);
    const udp = await t.a.run(node, ['--import', 'tsx', PROBE, 'udp', R4, '5354', '3000']);
    assert.match(udp.stdout, /"ok":true/);
    const p4 = await t.a.run('ping', ['-c', '2', '-i', '0.2', '-W', '2', R4]);
    assert.match(p4.stdout, /2 received/);
    const p6 = await t.a.run('ping', ['-6', '-c', '1', '-W', '2', R6]);
    assert.match(p6.stdout, /1 received/);
    const bad = await t.a.run('python3', ['-c', MALFORMED_SENDER]);
    assert.equal(bad.code, 0, bad.stderr);
    // Another host tries the shielded port: dropped by the host firewall (Linux) before the data plane sees it.
    const shielded = await t.b.run(node, ['--import', 'tsx', PROBE, 'tcp', t.a4, '8080', '1500']);
    assert.match(shielded.stdout, /"ok":false/);
    // And sends a datagram from the reflect address: dropped as forged.
    const forged = await t.b.run('python3', ['-c', forgedSender(t.a4)]);
    assert.equal(forged.code, 0, forged.stderr);
  }

  test('capture -w file: tshark reads every packet with its addresses, ports and verdict comment', async () => {
    const file = join(dir, 'all.pcapng');
    const c = startClient(t.a, ['capture', '-w', file, '--pipe', pipe, '--duration', '60s']);
    await waitFor('the pcapng header', () => existsSync(file) && statSync(file).size > 0, 20_000);
    await traffic();
    await new Promise((r) => setTimeout(r, 300));
    c.child.kill('SIGINT');
    assert.equal(await c.exited, 0, c.stderr());
    const pkts = await tsharkRead(file);
    const ifaces = new Set(pkts.map((p) => p.iface));
    assert.ok(ifaces.has('rflct0 outbound'), [...ifaces].join());

    // TCP (curl): every segment reflected; the bytes are the packet as re-injected, the comment has the original.
    const tcp = pkts.filter((p) => p.proto.includes('tcp') && p.src !== t.b4); // b's shielded attempts: below
    assert.ok(tcp.length >= 6, `expected a whole TCP connection, got ${tcp.length} packets`);
    const syn = tcp.find((p) => p.dport === '8081');
    assert.ok(syn, 'no packet to port 8081');
    assert.equal(syn.src, R4, 'after reflection the packet comes from the reflect address');
    assert.equal(syn.dst, t.a4);
    assert.match(syn.comment, new RegExp(`^verdict=reflected original=198\\.51\\.100\\.2:\\d+ > 192\\.0\\.2\\.1:8081$`));
    const fromServer = tcp.filter((p) => p.sport === '8081');
    assert.ok(fromServer.length >= 2, 'the server side of the connection is captured too');
    for (const p of tcp) assert.match(p.comment, /^verdict=reflected /);

    // UDP both ways, ping IPv4 (2 requests + 2 replies) and IPv6.
    const udp = pkts.filter((p) => p.proto.includes('udp') && (p.dport === '5354' || p.sport === '5354') && /verdict=reflected/.test(p.comment));
    assert.equal(udp.length, 2, JSON.stringify(udp));
    const icmp4 = pkts.filter((p) => p.proto.startsWith('raw:ip:icmp') && /verdict=reflected/.test(p.comment));
    assert.equal(icmp4.length, 4, JSON.stringify(pkts));
    const icmp6 = pkts.filter((p) => p.proto.startsWith('raw:ipv6:icmpv6') && /verdict=reflected/.test(p.comment));
    assert.equal(icmp6.length, 2, JSON.stringify(icmp6));
    assert.deepEqual(icmp6.map((p) => p.src), [R6, R6]);

    // The malformed datagram: captured with its reason, original addresses as sent.
    const bad = pkts.filter((p) => p.comment.startsWith('verdict=malformed'));
    assert.equal(bad.length, 1, JSON.stringify(pkts.map((p) => p.comment)));
    assert.equal(bad[0].comment, `verdict=malformed reason=badTransportHeader original=198.51.100.2 > ${R4}`);

    // b's attempts on the shielded port: dropped by nft before the TUN device, captured through NFLOG, inbound, as sent.
    const shielded = pkts.filter((p) => p.src === t.b4);
    assert.ok(shielded.length >= 1, 'the shielded SYN is in the capture');
    for (const p of shielded) {
      assert.equal(p.dst, t.a4);
      assert.equal(p.dport, '8080');
      assert.equal(p.iface, `${t.aIf} inbound`, 'named after the interface it arrived on');
      assert.match(p.comment, new RegExp(`^verdict=shieldDropped original=${escape(t.b4)}:\\d+ > ${escape(t.a4)}:8080$`));
    }
    // The datagram forged from the reflect address: exactly one, with its verdict.
    const forged = pkts.filter((p) => p.comment.startsWith('verdict=forgedSourceDropped'));
    assert.equal(forged.length, 1, JSON.stringify(pkts.map((p) => p.comment)));
    assert.deepEqual([forged[0].src, forged[0].dst, forged[0].sport, forged[0].dport, forged[0].iface], [R4, t.a4, '40001', '5354', `${t.aIf} inbound`]);
    // Nothing else from b: its packets are only these.
    assert.ok(!pkts.some((p) => p.dst === t.b4));
  });

  test('capture.start answers once the capture is taken up: packets sent right after are all in the file', async () => {
    // On ebpf the kernel reflects these datagrams itself and copies them for captures only once the worker wrote the
    // capture maps; an answer before that lost the first packets after the header. Several rounds, each a new capture,
    // the last ones as summaries (what `trace` asks for).
    const N = 20;
    const ROUNDS = 7;
    const PCAPNG_ROUNDS = 5;
    const PORT = 5999; // nobody listens: one reflected datagram each (the port unreachable answers are ICMP)
    const sender = new JsonLines(t.a.spawn('python3', ['-c', burstSender(N, PORT)]));
    const client = await ControlClient.connect({ pipe });
    try {
      for (let round = 0; round < ROUNDS; round++) {
        const format = round < PCAPNG_ROUNDS ? 'pcapng' : 'summary';
        const chunks: Buffer[] = [];
        const summaries: unknown[] = [];
        let packets = 0;
        const stop = client.onNotification((n) => {
          const p = n.params as { format?: string; data?: string; packets?: number | typeof summaries };
          if (n.method !== 'capture' || p.format !== format) return;
          if (Array.isArray(p.packets)) summaries.push(...p.packets);
          else if (p.data) chunks.push(Buffer.from(p.data, 'base64'));
          packets += Array.isArray(p.packets) ? p.packets.length : p.packets ?? 0;
        });
        await client.call('capture.start', { format, protocols: ['udp'], ports: [PORT] });
        sender.send('go');
        await sender.next((o) => o.sent === true);
        // Give the records time to reach us (a missed packet never comes: the wait ends at N or after 3 s).
        await waitFor(`${N} packets captured`, () => packets >= N, 3000).catch(() => undefined);
        const end = await client.call('capture.stop', {});
        stop();
        if (format === 'summary') {
          assert.equal(summaries.length, N, `round ${round} (summaries): ${summaries.length} of ${N}`);
          continue;
        }
        const pkts = await pcapFromChunks(chunks);
        const what = `round ${round}: ${pkts.length} of ${N} datagrams in the file (${JSON.stringify(end)})`;
        assert.equal(pkts.length, N, what);
        for (const p of pkts) assert.ok(p.sport === String(PORT) || p.dport === String(PORT), JSON.stringify(p));
      }
    } finally {
      client.close();
      sender.child.kill('SIGKILL');
    }
  });

  test('filters: --address, --port and --verdict select packets in the engine', async () => {
    const file = join(dir, 'udp.pcapng');
    const c = startClient(t.a, ['capture', '-w', file, '--pipe', pipe, '--port', '5354', '--verdict', 'reflected', '--duration', '60s']);
    await waitFor('the pcapng header', () => existsSync(file) && statSync(file).size > 0, 20_000);
    await traffic();
    await new Promise((r) => setTimeout(r, 300));
    c.child.kill('SIGINT');
    assert.equal(await c.exited, 0, c.stderr());
    const pkts = await tsharkRead(file);
    assert.equal(pkts.length, 2, JSON.stringify(pkts));
    for (const p of pkts) assert.ok(p.dport === '5354' || p.sport === '5354');
  });

  test('bad filters are refused with a clear error and exit code', async () => {
    const r = await t.a.run(node, [...CLI, 'capture', '-w', join(dir, 'x.pcapng'), '--pipe', pipe, '--address', '999.1.1.1', '--json', '--count', '1']);
    assert.equal(r.code, 4, r.stdout + r.stderr);
    assert.equal(JSON.parse(r.stdout).error.code, 'E_INVALID_ADDRESS');
    const u = await t.a.run(node, [...CLI, 'capture', '-w', join(dir, 'x.pcapng'), '--pipe', pipe, '--verdict', 'maybe']);
    assert.equal(u.code, 2, u.stderr);
  });

  test('capture -w - | tshark -r - works live, and --count ends the capture', async () => {
    // The pipe exactly as a user types it. The script text is fixed; the command comes in as "$@" (an argument
    // array), so nothing is interpolated into shell code. (Node's own 'pipe' stdio is a socketpair, which tshark
    // refuses to read as "-".)
    const script = '"$@" | tshark -r - -l -T fields -e ip.src -e frame.comment';
    const child = t.a.spawn('sh', ['-c', script, 'sh', 'env', 'NO_COLOR=1', node, ...CLI, 'capture', '-w', '-', '--pipe', pipe, '--count', '4', '--protocol', 'icmp']);
    let lines = '';
    let err = '';
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (d: string) => (lines += d));
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const done = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    // The client takes a moment to start (tsx): ping until --count ends the capture.
    await repeatUntil(done, () => t.a.run('ping', ['-c', '1', '-W', '1', R4]));
    assert.equal(await done, 0, err);
    const rows = lines.trim().split('\n');
    assert.equal(rows.length, 4, lines + err);
    for (const row of rows) assert.match(row, /^192\.0\.2\.1\tverdict=reflected original=198\.51\.100\.2 > 192\.0\.2\.1$|^192\.0\.2\.1\tverdict=reflected original=192\.0\.2\.1 > 198\.51\.100\.2$/);
    assert.match(err, /4 packets captured/);
  });

  test('trace prints one line per packet; --json one object with before and after', async () => {
    const c = startClient(t.a, ['trace', '--pipe', pipe, '--json', '--count', '2', '--protocol', 'udp']);
    await repeatUntil(c.exited, () => t.a.run(node, ['--import', 'tsx', PROBE, 'udp', R4, '5354', '3000']));
    assert.equal(await c.exited, 0, c.stderr());
    const objs = c.stdout().toString().trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(objs.length, 2);
    for (const o of objs) {
      assert.equal(o.verdict, 'reflected');
      assert.equal(o.protocol, 'udp');
      assert.ok(!Number.isNaN(Date.parse(o.time)));
      // Reflection swaps the addresses and keeps the ports.
      assert.deepEqual([o.after.source, o.after.destination], [o.before.destination, o.before.source]);
      assert.deepEqual([o.after.sourcePort, o.after.destinationPort], [o.before.sourcePort, o.before.destinationPort]);
      const request = o.before.destinationPort === 5354;
      // Request and answer both left this host for the reflect address (the server answers the peer it sees: R4).
      assert.deepEqual([o.before.source, o.before.destination], [t.a4, R4]);
      if (!request) assert.equal(o.before.sourcePort, 5354);
    }

    const human = startClient(t.a, ['trace', '--pipe', pipe, '--count', '2', '--protocol', 'tcp']);
    await repeatUntil(human.exited, () => t.a.run('curl', ['--http0.9', '-s', '-m', '5', `http://${R4}:8081/`]));
    assert.equal(await human.exited, 0, human.stderr());
    const lines = human.stdout().toString().trim().split('\n');
    assert.equal(lines.length, 2);
    for (const line of lines) {
      assert.match(line, /^\d\d:\d\d:\d\d\.\d{6} out rflct0 reflected +tcp +198\.51\.100\.2:\d+ > 192\.0\.2\.1:\d+ → 192\.0\.2\.1:\d+ > 198\.51\.100\.2:\d+ \d+ B \[[A-Z,]+\]$/);
    }
    const syn = lines.find((l) => l.endsWith('[SYN]'));
    if (syn) assert.match(syn, /:8081 → .* 60 B \[SYN\]$/);
  });

  test('trace --verdict shieldDropped shows another host trying a shielded port, live; stopping the last capture stops the log', async () => {
    const c = startClient(t.a, ['trace', '--pipe', pipe, '--json', '--count', '1', '--verdict', 'shieldDropped']);
    await repeatUntil(c.exited, () => t.b.run(node, ['--import', 'tsx', PROBE, 'tcp', t.a4, '8080', '300']));
    assert.equal(await c.exited, 0, c.stderr());
    const [o] = c.stdout().toString().trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(o.verdict, 'shieldDropped');
    assert.equal(o.direction, 'inbound');
    assert.equal(o.interface, t.aIf);
    assert.deepEqual([o.before.source, o.before.destination, o.before.destinationPort], [t.b4, t.a4, 8080]);
    // With no capture left, nobody listens on the engine's NFLOG group (the kernel lists bound groups per namespace).
    await waitFor('the NFLOG group unbound', async () => !(await nflogBound(t.a)), 5_000);
    const again = startClient(t.a, ['trace', '--pipe', pipe, '--json', '--duration', '60s', '--verdict', 'forgedSourceDropped']);
    await waitFor('the NFLOG group bound while a capture runs', () => nflogBound(t.a), 20_000);
    again.child.kill('SIGINT');
    assert.equal(await again.exited, 0, again.stderr());
    await waitFor('the NFLOG group unbound again', async () => !(await nflogBound(t.a)), 5_000);
  });

});
