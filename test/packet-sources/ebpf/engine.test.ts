/**
 * The ebpf backend's own promises, against the real `retroflect run --backend ebpf` in a namespace (the shared
 * e2e, port-map, capture and hardening suites run on it too, see test/helpers/backends.ts): the common packet is
 * reflected in the kernel (the veth peer, where the user-space path reads, sees none of it) with counters equal to
 * what the client sent, ICMP errors with their embedded packet, a capture fed only what its filter asks for, flows
 * with packets, bytes and ages, live changes under traffic that reflect no datagram for
 * the wrong address and lose none, ebpf as the default where it loads, and the fallback to TUN (`auto`, the default)
 * when the program cannot be loaded.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { existsSync, statSync } from 'node:fs';
import { createTopology, run, waitFor, type Topology } from '../../helpers/netns.ts';
import {
  engineLeftovers,
  engineDevice,
  privateDir,
  removeDir,
  retroflect,
  spawnEngine,
  startEngine,
  type EngineHandle,
} from '../../helpers/engine.ts';
import { counter, peerRxPackets, send } from '../../helpers/udp-stream.ts';

const node = process.execPath;
const R4 = '192.0.2.1';
const R6 = '2001:db8::1';
const R_EXTRA = '192.0.2.2';
const DEVICE = engineDevice('ebpf');
const PEER = `${DEVICE}p`;

/** UDP packets the engine counted as reflected for `address` (kernel and user space together). */
async function udpReflected(engine: EngineHandle, address: string): Promise<number> {
  const stats = (await engine.cli(['stats'])).json;
  return stats.byAddress.find((e: { address: string }) => e.address === address).byProtocol.udp.packets;
}

describe('ebpf backend (real engine, kernel data path)', { timeout: 900_000 }, () => {
  let t: Topology;
  let dir: string;
  let engine: EngineHandle | undefined;

  before(async () => {
    t = await createTopology('ebpf');
    dir = privateDir('ebpf');
    engine = await startEngine(t.a, dir, { config: false, args: ['--reflect', R4, R6, '--backend', 'ebpf'] });
    assert.equal((await engine.cli(['status'])).json.backend, 'ebpf');
  });

  after(async () => {
    await engine?.kill();
    await t?.destroy();
    removeDir(dir);
  });

  test('counters equal what the client sent, and the kernel reflected it all (user space saw none)', async () => {
    const sink = await counter(t.a, 5400);
    const rxBefore = await peerRxPackets(t.a, PEER);
    await send(t.a, [R4], 5400, 200, 100);
    await send(t.a, [R6], 5400, 100, 300);
    assert.deepEqual(await sink.result(), { received: 300, wrong: [] });
    const stats = (await engine!.cli(['stats'])).json;
    const by = (a: string) => stats.byAddress.find((e: { address: string }) => e.address === a).byProtocol.udp;
    assert.deepEqual(by(R4), { packets: 200, bytes: 200 * (20 + 8 + 100) });
    assert.deepEqual(by(R6), { packets: 100, bytes: 100 * (40 + 8 + 300) });
    assert.ok(stats.reflected.packets >= 300, JSON.stringify(stats.reflected));
    assert.equal(stats.malformed.total, 0);
    // Every datagram went kernel → kernel: the peer, where the user-space path reads, received none of them.
    assert.ok((await peerRxPackets(t.a, PEER)) - rxBefore < 5, 'datagrams took the user-space path');
  });

  test('flows: one per conversation, with its packets, bytes, ports and ages', async () => {
    const sink = await counter(t.a, 5402);
    await send(t.a, [R4], 5402, 20, 50);
    await sink.result();
    await new Promise((r) => setTimeout(r, 1200));
    const now = Date.now();
    type Flow = { protocol: string; reflectAddress: string; serverPort: number; clientPort: number; packets: number;
      bytes: number; firstSeen: string; lastSeen: string; state: string };
    const flows = (await engine!.cli(['flows'])).json.flows as Flow[];
    const f = flows.find((x) => x.reflectAddress === R4 && x.serverPort === 5402);
    assert.ok(f, JSON.stringify(flows));
    assert.equal(f.protocol, 'udp');
    assert.equal(f.state, 'active');
    assert.equal(f.packets, 20);
    assert.equal(f.bytes, 20 * (20 + 8 + 50));
    assert.ok(f.clientPort > 1024 && f.clientPort !== 5402, String(f.clientPort));
    const idle = now - Date.parse(f.lastSeen);
    assert.ok(idle >= 1000 && idle < 10_000, `idle ${idle} ms`);
    assert.ok(Date.parse(f.firstSeen) <= Date.parse(f.lastSeen));
  });

  test('ICMP errors are reflected in the kernel with their embedded packet: a closed port refuses', async () => {
    const icmp = async () => (await engine!.cli(['stats'])).json.byProtocol.icmp.packets as number;
    const before = await icmp();
    const rxBefore = await peerRxPackets(t.a, PEER);
    for (const host of [R4, R6]) {
      // Nothing listens on port 9: the host's port unreachable (L → R, carrying R → L) must reach the client's
      // connected socket as R → L carrying L → R, the datagram it sent.
      const r = await t.a.run(node, ['--import', 'tsx', 'test/fixtures/probe.ts', 'udp-connected', host, '9', '3000']);
      assert.deepEqual(JSON.parse(r.stdout), { ok: false, error: 'ECONNREFUSED' }, host + r.stderr);
    }
    assert.equal((await icmp()) - before, 2);
    assert.ok((await peerRxPackets(t.a, PEER)) - rxBefore < 2, 'the errors took the user-space path');
  });

  test('a capture gets what its filter asks for from the kernel ring, read by tshark; all in the kernel', async () => {
    const file = join(dir, 'port.pcapng');
    const args = ['capture', '-w', file, '--pipe', engine!.pipe, '--port', '5403', '--snaplen', '64'];
    args.push('--duration', '60s');
    const env = { ...process.env, NO_COLOR: '1' };
    const capture = t.a.spawn(node, ['--import', 'tsx', 'src/cli/main.ts', ...args], { env });
    let captureErr = '';
    capture.stderr!.on('data', (d: Buffer) => (captureErr += d.toString()));
    const exited = new Promise<number | null>((resolve) => capture.once('exit', (code) => resolve(code)));
    await waitFor('the pcapng header', () => existsSync(file) && statSync(file).size > 0, 20_000);
    const sink = await counter(t.a, 5403);
    const other = await counter(t.a, 5404);
    const rxBefore = await peerRxPackets(t.a, PEER);
    const kernelBefore = await udpReflected(engine!, R4);
    await send(t.a, [R4], 5403, 50, 40);
    await send(t.a, [R4], 5404, 200, 40);
    assert.deepEqual(await sink.result(), { received: 50, wrong: [] });
    assert.deepEqual(await other.result(), { received: 200, wrong: [] });
    // The kernel reflected every datagram, the captured ones too: the user-space path (the peer) got none.
    const rx = (await peerRxPackets(t.a, PEER)) - rxBefore;
    assert.ok(rx < 5, `the user-space path got ${rx} packets`);
    assert.equal((await udpReflected(engine!, R4)) - kernelBefore, 250);
    await new Promise((r) => setTimeout(r, 300));
    capture.kill('SIGINT');
    assert.equal(await exited, 0, captureErr);
    const fields = ['udp.dstport', 'ip.src', 'ip.dst', 'frame.len', 'frame.cap_len', 'frame.comment'];
    const r = await run('tshark', ['-r', file, '-T', 'fields', ...fields.flatMap((f) => ['-e', f])]);
    assert.equal(r.code, 0, r.stderr);
    const rows = r.stdout.trim().split('\n');
    assert.equal(rows.length, 50, r.stdout);
    // As reflected (from R to the local address), cut at the snap length, with the whole length and the verdict.
    const expected = new RegExp(`^5403\t${R4.replace(/\./g, '\\.')}\t\\S+\t68\t64\t.*reflected`);
    for (const row of rows) assert.match(row, expected);
  });

  test('an address with port maps: mapped ports and ICMP errors via user space, others in the kernel', async () => {
    const maps = ['--map', '6000=5420/udp', '--map', '6001=5422/udp'];
    assert.equal((await engine!.cli(['address', 'add', R4, ...maps, '--temporary'])).code, 0);
    try {
      const countedBefore = await udpReflected(engine!, R4);
      const mapped = await counter(t.a, 5420);
      let rxBefore = await peerRxPackets(t.a, PEER);
      await send(t.a, [R4], 6000, 100, 30);
      assert.deepEqual(await mapped.result(), { received: 100, wrong: [] });
      assert.ok((await peerRxPackets(t.a, PEER)) - rxBefore >= 100, 'the mapped port did not take the user-space path');
      const direct = await counter(t.a, 5421);
      rxBefore = await peerRxPackets(t.a, PEER);
      await send(t.a, [R4], 5421, 100, 30);
      assert.deepEqual(await direct.result(), { received: 100, wrong: [] });
      assert.ok((await peerRxPackets(t.a, PEER)) - rxBefore < 5, 'a port no map names left the kernel');
      const counted = (await udpReflected(engine!, R4)) - countedBefore;
      assert.equal(counted, 200, 'kernel and user-space counters add up to what was sent');
      // Nothing listens on 5422: the port unreachable quotes R4:C → L:5422; the client, connected to R4:6001, must
      // get it quoting its own datagram (port 6001) to see the refusal.
      const r = await t.a.run(node, ['--import', 'tsx', 'test/fixtures/probe.ts', 'udp-connected', R4, '6001', '3000']);
      assert.deepEqual(JSON.parse(r.stdout), { ok: false, error: 'ECONNREFUSED' }, r.stderr);
    } finally {
      const unmap = ['--map', '6000', '--map', '6001', '--temporary'];
      assert.equal((await engine!.cli(['address', 'remove', R4, ...unmap])).code, 0);
    }
  });

  test('a removed qdisc or filter, or a device set down, is put back by the host check and counted', async () => {
    type Repairs = { count: number; last: { what: string } | null };
    const repairs = async () => (await engine!.cli(['status'])).json.hostRepairs as Repairs;
    const egress = () => t.a.must('tc', ['filter', 'show', 'dev', DEVICE, 'egress']);
    const reflectedInKernel = async (port: number) => {
      const sink = await counter(t.a, port);
      const rxBefore = await peerRxPackets(t.a, PEER);
      await send(t.a, [R4], port, 50, 20);
      assert.deepEqual(await sink.result(), { received: 50, wrong: [] });
      return (await peerRxPackets(t.a, PEER)) - rxBefore < 5;
    };
    const what = new RegExp(`tc program on the egress of ${DEVICE} .*attached it again`);
    const edits: [string, string[]][] = [
      ['qdisc', ['qdisc', 'del', 'dev', DEVICE, 'clsact']],
      ['filter', ['filter', 'del', 'dev', DEVICE, 'egress']],
    ];
    let port = 5410;
    for (const [name, args] of edits) {
      const before = (await repairs()).count;
      await t.a.must('tc', args);
      // The periodic host check may put it back before `tc show` looks: then the repair count has moved already.
      const removed = !/reflect/.test(await egress()) || (await repairs()).count > before;
      assert.ok(removed, `${name}: the edit removed nothing`);
      await waitFor(`${name} repaired`, async () => (await repairs()).count > before, 20_000);
      const after = await repairs();
      assert.equal(after.count, before + 1, JSON.stringify(after));
      assert.match(after.last!.what, what);
      assert.match(await egress(), /reflect/);
      assert.equal(await reflectedInKernel(port++), true, `${name}: not reflected in the kernel after the repair`);
    }
    // Down takes the device's routes with it: both come back.
    const before = (await repairs()).count;
    await t.a.must('ip', ['link', 'set', 'dev', DEVICE, 'down']);
    await waitFor('device repaired', async () => (await repairs()).count >= before + 2, 20_000);
    assert.match(await t.a.must('ip', ['route', 'show', 'dev', DEVICE]), new RegExp(R4.replace(/\./g, '\\.')));
    assert.match(await t.a.must('ip', ['-6', 'route', 'show', 'dev', DEVICE]), /2001:db8::1/);
    assert.equal(await reflectedInKernel(port++), true, 'not reflected in the kernel after the device came back');
  });

  test('live changes under traffic update maps: no datagram reflected for the wrong address, none lost', async () => {
    const sink = await counter(t.a, 5401);
    const sending = send(t.a, [R4, R6], 5401, 4000, 64, 3);
    let changes = 0;
    let done = false;
    void sending.finally(() => (done = true));
    while (!done) {
      // An address comes and goes, and a port map on R4 switches its packets between the kernel and user space.
      assert.equal((await engine!.cli(['address', 'add', R_EXTRA, '--temporary'])).code, 0);
      assert.equal((await engine!.cli(['address', 'add', R4, '--map', '7=9/udp', '--temporary'])).code, 0);
      assert.equal((await engine!.cli(['address', 'remove', R_EXTRA, '--temporary'])).code, 0);
      assert.equal((await engine!.cli(['address', 'remove', R4, '--map', '7', '--temporary'])).code, 0);
      changes++;
    }
    await sending;
    assert.ok(changes >= 2, `only ${changes} rounds of changes happened during the traffic`);
    const got = await sink.result();
    const stats = (await engine!.cli(['stats'])).json;
    const snmp = (await t.a.must('grep', ['-A1', '^Udp', '/proc/net/snmp'])).replace(/\n/g, ' / ');
    const why = `${changes} changes; snmp: ${snmp} peer rx ${await peerRxPackets(t.a, PEER)} stats ` +
      `${JSON.stringify(stats.byAddress)} errors ${JSON.stringify(stats.errors)}`;
    assert.deepEqual(got, { received: 4000, wrong: [] }, why);
    assert.deepEqual((await engine!.cli(['status'])).json.reflectAddresses, [R4, R6]);
  });
});

describe('ebpf backend: fallback to TUN when the program cannot load', { timeout: 120_000 }, () => {
  let t: Topology;
  let dir: string;
  // A libbpf that cannot be loaded: what a host without libbpf1 looks like.
  const env = { RETROFLECT_LIBBPF: '/nonexistent/libbpf.so.1' };

  before(async () => {
    t = await createTopology('ebpffb');
    dir = privateDir('ebpffb');
  });
  after(async () => {
    await t?.destroy();
    removeDir(dir);
  });

  test('without --backend the engine runs ebpf where its program loads', async () => {
    const e = await startEngine(t.a, dir, { config: false, pipe: join(dir, 'fb0.sock'), args: ['--reflect', R4] });
    try {
      const status = (await e.cli(['status'])).json;
      assert.equal(status.backend, 'ebpf');
      assert.equal(status.backendInfo.device, 'rflx0', 'the ebpf default device');
      assert.equal(status.backendInfo.ebpfUnavailable, undefined);
      assert.doesNotMatch(e.output(), /cannot run here/);
    } finally {
      e.child.kill('SIGTERM');
      assert.equal(await e.exited, 0, e.output());
    }
  });

  // The default is auto: both fall back alike.
  for (const asked of [['--backend', 'auto'], []])
  test(`${asked.join(' ') || 'the default (no --backend)'} falls back to tun, says why, reflects`, async () => {
    const args = ['--reflect', R4, ...asked];
    const e = await startEngine(t.a, dir, { config: false, pipe: join(dir, 'fb.sock'), args, env });
    try {
      const expected = /The ebpf backend cannot run here, so the engine uses tun: The libbpf library \(\/nonexistent\//;
      assert.match(e.output(), expected);
      const status = (await e.cli(['status'])).json;
      assert.equal(status.backend, 'tun');
      assert.equal(status.backendInfo.device, 'rflct0', 'the tun default: decided by the backend the engine runs');
      assert.match(status.backendInfo.ebpfUnavailable, /libbpf/);
      const ping = await t.a.run('ping', ['-c', '1', '-W', '2', R4]);
      assert.match(ping.stdout, /1 received/);
    } finally {
      e.child.kill('SIGTERM');
      assert.equal(await e.exited, 0, e.output());
    }
    assert.deepEqual(await engineLeftovers(t.a, join(dir, 'fb.sock')), []);
  });

  test('--backend ebpf does not fall back: exit 5 with the reason, nothing created', async () => {
    const args = ['--reflect', R4, '--backend', 'ebpf'];
    const e = spawnEngine(t.a, dir, { config: false, pipe: join(dir, 'fb2.sock'), args, env });
    assert.equal(await e.exited, 5, e.output());
    assert.match(e.output(), /E_BACKEND_UNAVAILABLE/);
    assert.deepEqual(await engineLeftovers(t.a, join(dir, 'fb2.sock')), []);
  });

  test('a --backend that does not exist is a usage error', async () => {
    const args = ['run', '--no-config', '--reflect', R4, '--backend', 'xdp', '--pipe', join(dir, 'fb3.sock')];
    const r = await retroflect(t.a, args);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--backend must be one of tun, ebpf, auto/);
  });
});
