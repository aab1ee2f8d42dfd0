/**
 * The control plane against the real engine: `retroflect run` (from source) in namespace "a" of a veth topology,
 * its control socket in a private 0700 directory, driven by the real CLI with --json. Real packets cross the real
 * TUN device: live address and shield changes, counters and flows checked against traffic of known size, the
 * persisted config across a CLI `stop` and a restart, refusal of a corrupt config file, and exit codes.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createTopology, JsonLines, type NetNs, type Topology } from '../helpers/netns.ts';
import { privateDir, removeDir, retroflect, startEngine, type EngineHandle } from '../helpers/engine.ts';

const node = process.execPath;
const PROBE = 'test/fixtures/probe.ts';
const DEVICE = 'rflct0';

/** Ports the probe fixture serves in "a": TCP and UDP servers answering "peer=<address they see>". */
const PEER_TCP = 8081;
const PEER_UDP = 5354;
/** Ports of the traffic peer below, in "a". */
const ECHO_TCP = 7000;
const SINK_UDP = 7001;
const SINK_TCP = 7002;

/**
 * Traffic peer, run with `node --input-type=module -e` (plain JS, no tsx: it starts fast). One JSON line per event.
 *   serve <echoTcp> <sinkUdp> <sinkTcp>  — TCP echo; UDP sink printing {udp: size, peer, port} per datagram; TCP sink
 *                                          printing {tcp: bytes, peer, port} at end of stream and answering the count.
 *   stream <host> <port> <intervalMs>    — long-lived TCP connection: a 16-byte message every interval, each echoed.
 *                                          On "report" on stdin: stops, waits for outstanding echoes, prints
 *                                          {sent, echoed, maxGapMs, error}.
 *   udp-send <host> <port> <count> <size> — send count datagrams of size bytes from one socket; {sent, localPort}.
 *   tcp-send <host> <port> <bytes>        — send bytes, half-close, read the answer; {ok, reply, localPort}.
 */
const TRAFFIC_PEER = `
import net from 'node:net';
import dgram from 'node:dgram';
const [mode, ...a] = process.argv.slice(1);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const plain = (s) => (s ?? '').replace(/^::ffff:/, '');
const listen = (srv, port) => new Promise((r) => srv.listen({ port, host: '::', ipv6Only: false }, r));
if (mode === 'serve') {
  const echo = net.createServer((c) => { c.on('error', () => {}); c.pipe(c); });
  const sink = net.createServer((c) => {
    let n = 0;
    c.on('error', () => {});
    c.on('data', (d) => (n += d.length));
    c.on('end', () => { out({ tcp: n, peer: plain(c.remoteAddress), port: c.remotePort }); c.end(String(n)); });
  });
  const udp = dgram.createSocket({ type: 'udp6', ipv6Only: false });
  udp.on('message', (m, r) => out({ udp: m.length, peer: plain(r.address), port: r.port }));
  await Promise.all([listen(echo, +a[0]), new Promise((r) => udp.bind(+a[1], '::', r)), listen(sink, +a[2])]);
  out({ ready: true });
} else if (mode === 'stream') {
  const c = net.connect({ host: a[0], port: +a[1] });
  let sent = 0, got = 0, last = 0, maxGapMs = 0, error = null, timer;
  c.on('connect', () => {
    last = Date.now();
    out({ connected: true, localPort: c.localPort });
    timer = setInterval(() => { c.write(String(sent++).padEnd(15, '.') + '\\n'); }, +a[2]);
  });
  c.on('data', (d) => {
    got += d.length;
    const now = Date.now();
    maxGapMs = Math.max(maxGapMs, now - last);
    last = now;
  });
  c.on('error', (e) => (error = e.code ?? String(e)));
  c.on('close', () => (error ??= 'closed'));
  process.stdin.on('data', async () => {
    clearInterval(timer);
    for (let i = 0; i < 100 && got < sent * 16 && !error; i++) await new Promise((r) => setTimeout(r, 20));
    out({ sent, echoed: Math.floor(got / 16), maxGapMs, error });
    process.exit(0);
  });
} else if (mode === 'udp-send') {
  const s = dgram.createSocket(a[0].includes(':') ? 'udp6' : 'udp4');
  await new Promise((r) => s.bind(0, r));
  const payload = Buffer.alloc(+a[3], 0x61);
  for (let i = 0; i < +a[2]; i++) {
    await new Promise((r) => s.send(payload, +a[1], a[0], r));
    await new Promise((r) => setTimeout(r, 2));
  }
  out({ sent: +a[2], localPort: s.address().port });
  s.close();
} else if (mode === 'tcp-send') {
  const c = net.connect({ host: a[0], port: +a[1] }, () => c.end(Buffer.alloc(+a[2], 0x5a)));
  let reply = '';
  const timer = setTimeout(() => { out({ ok: false, error: 'timeout' }); process.exit(0); }, 10000);
  c.on('data', (d) => (reply += d));
  c.on('error', (e) => { out({ ok: false, error: e.code }); process.exit(0); });
  c.on('end', () => { clearTimeout(timer); out({ ok: true, reply, localPort: c.localPort }); process.exit(0); });
}
`;

function peer(ns: NetNs, args: string[]): JsonLines {
  return new JsonLines(ns.spawn(node, ['--input-type=module', '-e', TRAFFIC_PEER, ...args]));
}

/** The namespace's count of retransmitted TCP segments (Tcp RetransSegs in /proc/net/snmp). */
async function tcpRetransmits(ns: NetNs): Promise<number> {
  const lines = (await ns.must('cat', ['/proc/net/snmp'])).split('\n').filter((l) => l.startsWith('Tcp:'));
  const [names, values] = lines.map((l) => l.trim().split(/\s+/));
  return Number(values![names!.indexOf('RetransSegs')]);
}

async function peerOnce(ns: NetNs, args: string[]): Promise<Record<string, any>> {
  const r = await ns.run(node, ['--input-type=module', '-e', TRAFFIC_PEER, ...args], { timeoutMs: 20_000 });
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, any>;
}

async function probe(ns: NetNs, mode: 'tcp' | 'udp', host: string, port: number, timeoutMs = 3000): Promise<{ ok: boolean; reply?: string; error?: string }> {
  const r = await ns.run(node, ['--import', 'tsx', PROBE, mode, host, String(port), String(timeoutMs)]);
  assert.equal(r.code, 0, r.stderr);
  const { ok, reply, error } = JSON.parse(r.stdout) as { ok: boolean; reply?: string; error?: string };
  return reply === undefined ? { ok, error } : { ok, reply };
}

/** Nothing of ours in the namespace: no TUN device, no nft table. */
async function assertNoHostChanges(ns: NetNs): Promise<void> {
  const links = await ns.ipJson<{ ifname: string }[]>(['link', 'show']);
  assert.ok(!links.some((l) => l.ifname === DEVICE), `device ${DEVICE} exists`);
  assert.equal((await ns.must('nft', ['list', 'tables'])).trim(), '', 'an nft table exists');
}

describe('control plane against the real engine (Linux TUN, namespaces)', { timeout: 240_000 }, () => {
  let t: Topology;
  let dir: string;
  let configPath: string;
  let engine: EngineHandle | undefined;
  let traffic: JsonLines;
  const runArgs = ['--device', DEVICE, '--reflect', '192.0.2.1'];

  before(async () => {
    t = await createTopology('ctl');
    dir = privateDir('ctl');
    configPath = join(dir, 'config.json');
    const probeServers = new JsonLines(t.a.spawn(node, ['--import', 'tsx', PROBE, 'serve', String(PEER_TCP), String(PEER_UDP)]));
    traffic = peer(t.a, ['serve', String(ECHO_TCP), String(SINK_UDP), String(SINK_TCP)]);
    await Promise.all([probeServers.next((o) => o.ready === true), traffic.next((o) => o.ready === true)]);
    engine = await startEngine(t.a, dir, { config: configPath, args: runArgs });
  });

  after(async () => {
    await engine?.kill();
    await t?.destroy();
    removeDir(dir);
  });

  test('--json status and address list: stable shapes that parse; a missing engine is exit 7', async () => {
    const status = await engine!.cli(['status']);
    assert.equal(status.code, 0, status.stderr);
    assert.deepEqual(Object.keys(status.json).sort(), [
      'backend', 'backendInfo', 'configPath', 'hostRepairs', 'pid', 'pipeName', 'portMaps', 'reflectAddresses', 'runsAs', 'shieldPorts', 'startedAt', 'state', 'uptimeSeconds', 'version',
    ]);
    assert.equal(status.json.state, 'running');
    assert.equal(status.json.backend, 'tun');
    assert.equal(status.json.pid, engine!.child.pid, '`ip netns exec` execs the engine, so the pids are the same');
    assert.equal(status.json.configPath, configPath);
    assert.equal(status.json.pipeName, engine!.pipe);
    assert.deepEqual(status.json.reflectAddresses, ['192.0.2.1']);
    assert.ok(!Number.isNaN(Date.parse(status.json.startedAt)));

    const list = await engine!.cli(['address', 'list']);
    assert.equal(list.code, 0, list.stderr);
    // Given on the command line, not in the config file: running but not persisted.
    assert.deepEqual(list.json, { addresses: [{ address: '192.0.2.1', persisted: false, portMaps: [] }] });

    const none = await retroflect(t.a, ['status', '--json', '--pipe', join(dir, 'nobody.sock')]);
    assert.equal(none.code, 7, none.stdout + none.stderr);
    assert.equal(none.json.error.code, 'E_ENGINE_NOT_RUNNING');
    assert.match(none.json.error.hint, /retroflect run/);
  });

  test('address add/remove at run time; another address and a long-lived TCP connection keep working', async (ctx) => {
    const stream = peer(t.a, ['stream', '192.0.2.1', String(ECHO_TCP), '20']);
    await stream.next((o) => o.connected === true);

    for (const [addr, other] of [['203.0.113.5', '192.0.2.1'], ['2001:db8::5', '192.0.2.1']] as const) {
      const add = await engine!.cli(['address', 'add', addr]);
      assert.equal(add.code, 0, add.stdout + add.stderr);
      assert.deepEqual(add.json, { added: [addr], existing: [], warnings: [], portMaps: { added: [], existing: [] }, allow: [{ address: addr }], persisted: [addr] });
      const again = await engine!.cli(['address', 'add', addr]);
      assert.deepEqual(again.json, { added: [], existing: [addr], warnings: [], portMaps: { added: [], existing: [] }, allow: [{ address: addr }], persisted: [addr] }, 'adding twice is idempotent');
      assert.deepEqual(await probe(t.a, 'tcp', addr, PEER_TCP), { ok: true, reply: `peer=${addr}` });

      const rm = await engine!.cli(['address', 'remove', addr]);
      assert.equal(rm.code, 0, rm.stdout + rm.stderr);
      assert.deepEqual(rm.json, { removed: [addr], missing: [], portMapsRemoved: [], portMapsMissing: [] });
      const gone = await probe(t.a, 'tcp', addr, PEER_TCP, 1500);
      assert.equal(gone.ok, false, `still reflected after remove: ${JSON.stringify(gone)}`);
      ctx.diagnostic(`${addr} after remove: ${gone.error}`);
      assert.deepEqual(await probe(t.a, 'tcp', other, PEER_TCP), { ok: true, reply: `peer=${other}` });

      const missing = await engine!.cli(['address', 'remove', addr]);
      assert.equal(missing.code, 9);
      assert.equal(missing.json.error.code, 'E_ADDRESS_NOT_FOUND');
    }

    stream.send('report');
    const report = await stream.next((o) => 'sent' in o);
    ctx.diagnostic(`long-lived connection across 4 changes: ${JSON.stringify(report)}`);
    assert.equal(report.error, null, JSON.stringify(report));
    assert.ok((report.sent as number) > 50, JSON.stringify(report));
    assert.equal(report.echoed, report.sent, JSON.stringify(report));
    // A dropped segment would show as a retransmission gap (min RTO 200 ms, and more after backoff).
    assert.ok((report.maxGapMs as number) < 1000, JSON.stringify(report));
  });

  test('shield add/remove at run time: another host is dropped, then passes again', async () => {
    assert.deepEqual(await probe(t.b, 'tcp', t.a4, PEER_TCP), { ok: true, reply: `peer=${t.b4}` });
    const add = await engine!.cli(['shield', 'add', `${PEER_TCP}/tcp`, '--temporary']);
    assert.equal(add.code, 0, add.stdout + add.stderr);
    assert.deepEqual(add.json, { added: [{ port: PEER_TCP, protocol: 'tcp' }], existing: [], persisted: [] });
    assert.deepEqual(await probe(t.b, 'tcp', t.a4, PEER_TCP, 1500), { ok: false, error: 'timeout' });
    assert.deepEqual(await probe(t.a, 'tcp', '192.0.2.1', PEER_TCP), { ok: true, reply: 'peer=192.0.2.1' }, 'reflected traffic passes a shield');
    const rm = await engine!.cli(['shield', 'remove', `${PEER_TCP}/tcp`, '--temporary']);
    assert.deepEqual(rm.json, { removed: [{ port: PEER_TCP, protocol: 'tcp' }], missing: [] });
    assert.deepEqual(await probe(t.b, 'tcp', t.a4, PEER_TCP), { ok: true, reply: `peer=${t.b4}` });
  });

  test('stats and flows match the traffic sent: N UDP datagrams and a TCP transfer of known size', async () => {
    const addr = '203.0.113.50'; // fresh: its counter slot starts at zero
    assert.equal((await engine!.cli(['address', 'add', addr, '--temporary'])).code, 0);
    const N = 25;
    const SIZE = 100;
    const udp = await peerOnce(t.a, ['udp-send', addr, String(SINK_UDP), String(N), String(SIZE)]);
    for (let i = 0; i < N; i++) {
      const d = await traffic.next((o) => o.udp !== undefined);
      assert.deepEqual(d, { udp: SIZE, peer: addr, port: udp.localPort });
    }
    const BYTES = 300_000;
    const retransmitsBefore = await tcpRetransmits(t.a);
    const tcp = await peerOnce(t.a, ['tcp-send', addr, String(SINK_TCP), String(BYTES)]);
    assert.deepEqual(tcp, { ok: true, reply: String(BYTES), localPort: tcp.localPort });
    assert.deepEqual(await traffic.next((o) => o.tcp !== undefined), { tcp: BYTES, peer: addr, port: tcp.localPort });
    await new Promise((r) => setTimeout(r, 200)); // the last ACK of the close
    const retransmitted = (await tcpRetransmits(t.a)) - retransmitsBefore;

    // Both at once: a closed TCP flow stays listed for 10 s, and each CLI call takes seconds on a loaded machine.
    const [stats, flows] = await Promise.all([engine!.cli(['stats']), engine!.cli(['flows'])]);
    assert.equal(stats.code, 0, stats.stderr);
    const a = (stats.json.byAddress as any[]).find((x) => x.address === addr);
    assert.ok(a, JSON.stringify(stats.json.byAddress));
    // UDP: exactly what was sent (the sink never answers): 20 IPv4 + 8 UDP header bytes per datagram.
    assert.deepEqual(a.byProtocol.udp, { packets: N, bytes: N * (20 + 8 + SIZE) });
    assert.deepEqual(a.byProtocol.icmp, { packets: 0, bytes: 0 });
    // TCP, both directions (the server answers the reflect address, so its packets are reflected too): the payload
    // plus one IPv4+TCP header of 40..60 bytes per packet (offloaded segments count as one packet, one header).
    const payload = BYTES + String(BYTES).length;
    const tcpc = a.byProtocol.tcp as { packets: number; bytes: number };
    assert.ok(tcpc.packets >= 6, JSON.stringify(tcpc)); // at least handshake + data + FINs
    assert.ok(tcpc.bytes >= payload + 40 * tcpc.packets, JSON.stringify(tcpc));
    // A retransmitted segment carries its payload again, so the upper bound holds for a transfer without any
    // (the kernel's own counter says which this was; a loaded machine sometimes retransmits).
    if (retransmitted === 0) assert.ok(tcpc.bytes <= payload + 60 * tcpc.packets, JSON.stringify(tcpc));
    assert.equal(a.packets, N + tcpc.packets);
    assert.equal(a.bytes, N * (28 + SIZE) + tcpc.bytes);

    assert.equal(flows.code, 0, flows.stderr);
    const mine = (flows.json.flows as any[]).filter((f) => f.reflectAddress === addr);
    const uflow = mine.find((f) => f.protocol === 'udp');
    assert.ok(uflow, JSON.stringify(mine));
    assert.deepEqual(
      { local: uflow.localAddress, client: uflow.clientPort, server: uflow.serverPort, packets: uflow.packets, bytes: uflow.bytes, state: uflow.state },
      { local: t.a4, client: udp.localPort, server: SINK_UDP, packets: N, bytes: N * (28 + SIZE), state: 'active' },
    );
    // The server's answers carry the same 5-tuple the other way round; the engine keys both to one flow.
    const tflows = mine.filter((f) => f.protocol === 'tcp');
    assert.equal(tflows.length, 1, JSON.stringify(tflows));
    assert.deepEqual(
      { local: tflows[0].localAddress, client: tflows[0].clientPort, server: tflows[0].serverPort, packets: tflows[0].packets, bytes: tflows[0].bytes, state: tflows[0].state },
      { local: t.a4, client: tcp.localPort, server: SINK_TCP, packets: tcpc.packets, bytes: tcpc.bytes, state: 'closed' },
    );
    assert.equal((await engine!.cli(['address', 'remove', addr, '--temporary'])).code, 0);
  });

  test('persisted config: a CLI stop writes nothing temporary; a restart brings back exactly the persisted entries', async () => {
    assert.equal((await engine!.cli(['address', 'add', '192.0.2.10'])).code, 0);
    assert.equal((await engine!.cli(['shield', 'add', '9000/tcp'])).code, 0);
    assert.equal((await engine!.cli(['address', 'add', '192.0.2.11', '--temporary'])).code, 0);
    assert.equal((await engine!.cli(['shield', 'add', '9001/udp', '--temporary'])).code, 0);
    const list = await engine!.cli(['address', 'list']);
    assert.deepEqual(list.json.addresses, [
      { address: '192.0.2.1', persisted: false, portMaps: [] },
      { address: '192.0.2.10', persisted: true, portMaps: [] },
      { address: '192.0.2.11', persisted: false, portMaps: [] },
    ]);

    const stop = await engine!.cli(['stop']);
    assert.equal(stop.code, 0, stop.stdout + stop.stderr);
    assert.deepEqual(stop.json, { stopping: true });
    assert.equal(await engine!.exited, 0, engine!.output());
    assert.ok(!existsSync(engine!.pipe), 'socket removed at stop');
    await assertNoHostChanges(t.a);
    assert.deepEqual(JSON.parse(readFileSync(configPath, 'utf8')), {
      schemaVersion: 1,
      reflectAddresses: ['192.0.2.10'],
      shieldPorts: [{ port: 9000, protocol: 'tcp' }],
    });
    const gone = await engine!.cli(['status']);
    assert.equal(gone.code, 7, 'no engine after stop');

    engine = await startEngine(t.a, dir, { config: configPath, args: ['--device', DEVICE] });
    const status = await engine.cli(['status']);
    assert.deepEqual(status.json.reflectAddresses, ['192.0.2.10']);
    assert.deepEqual(status.json.shieldPorts, [{ port: 9000, protocol: 'tcp' }]);
    assert.deepEqual((await engine.cli(['shield', 'list'])).json, { ports: [{ port: 9000, protocol: 'tcp', persisted: true }] });
    assert.deepEqual(await probe(t.a, 'tcp', '192.0.2.10', PEER_TCP), { ok: true, reply: 'peer=192.0.2.10' });
    assert.equal((await probe(t.a, 'tcp', '192.0.2.11', PEER_TCP, 1000)).ok, false, 'the temporary address came back');
  });

  test('a corrupt config file: run exits 6 naming the file, leaves it byte for byte, changes nothing', async () => {
    assert.equal((await engine!.cli(['stop'])).code, 0);
    assert.equal(await engine!.exited, 0, engine!.output());
    await assertNoHostChanges(t.a);
    const cases: [string, Buffer][] = [
      ['invalid JSON', Buffer.from('{"schemaVersion": 1, "reflectAddresses": ["192.0.2.1",]\n')],
      ['a bad address', Buffer.from(JSON.stringify({ schemaVersion: 1, reflectAddresses: ['192.0.2.300'], shieldPorts: [] }, null, 2))],
    ];
    for (const [what, bytes] of cases) {
      const path = join(dir, `corrupt-${what.replace(/\W+/g, '-')}.json`);
      writeFileSync(path, bytes);
      const r = await retroflect(t.a, ['run', '--config', path, '--pipe', join(dir, 'corrupt.sock'), '--device', DEVICE], 20_000);
      assert.equal(r.code, 6, `${what}: ${r.stdout}${r.stderr}`);
      assert.ok(r.stderr.includes(path), `${what}: the message names the file: ${r.stderr}`);
      assert.match(r.stderr, /E_CONFIG_INVALID/);
      assert.ok(readFileSync(path).equals(bytes), `${what}: the file was changed`);
      assert.ok(!existsSync(join(dir, 'corrupt.sock')), `${what}: a socket was created`);
      await assertNoHostChanges(t.a);
    }
  });
});
