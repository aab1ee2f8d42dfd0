/**
 * End to end on Linux: the real `retroflect run` (CLI → Engine → worker → Dataplane → TUN backend, nft shield)
 * inside namespaces created here. Namespace "a" runs retroflect (198.51.100.2, 2001:db8:1::2, default routes via
 * "b"); "b" is another host on the link. Checks reflection (TCP, UDP, ping, ICMP errors; IPv4 and IPv6), shielding,
 * dropping forged reflect sources, live changes through the control pipe, and that SIGTERM and SIGKILL + restart
 * leave nothing behind.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createTopology, JsonLines, waitFor, type NetNs, type Topology } from '../helpers/netns.ts';
import { spawnEngine, waitReady, type EngineProcess } from './engine-process.ts';
import { backendArgs, LINUX_TEST_BACKENDS } from '../helpers/backends.ts';
import { engineDevice } from '../helpers/engine.ts';

const PROBE = 'test/fixtures/probe.ts';
const node = process.execPath;
const DEVICE = 'rflct0';

async function probe(ns: NetNs, mode: 'tcp' | 'udp', host: string, port: number, timeoutMs = 3000): Promise<{ ok: boolean; reply?: string; error?: string }> {
  const r = await ns.run(node, ['--import', 'tsx', PROBE, mode, host, String(port), String(timeoutMs)]);
  assert.equal(r.code, 0, r.stderr);
  const { ok, reply, error } = JSON.parse(r.stdout) as { ok: boolean; reply?: string; error?: string };
  return reply === undefined ? { ok, error } : { ok, reply };
}

/** A datagram from a connected UDP socket (the kind that hears ICMP errors): {ok, reply} or {ok:false, error}. */
async function probeConnectedUdp(ns: NetNs, host: string, port: number, timeoutMs = 3000): Promise<{ ok: boolean; reply?: string; error?: string }> {
  const r = await ns.run(node, ['--import', 'tsx', PROBE, 'udp-connected', host, String(port), String(timeoutMs)]);
  assert.equal(r.code, 0, r.stderr);
  const { ok, reply, error } = JSON.parse(r.stdout) as { ok: boolean; reply?: string; error?: string };
  return reply === undefined ? { ok, error } : { ok, reply };
}

/** Run a client command of the CLI against the engine's pipe; returns parsed --json output and the exit code. */
async function cli(ns: NetNs, pipe: string, args: string[]): Promise<{ code: number; json: unknown; stderr: string }> {
  const r = await ns.run(node, ['--import', 'tsx', 'src/cli/main.ts', ...args, '--pipe', pipe, '--json']);
  let json: unknown = null;
  try {
    json = JSON.parse(r.stdout);
  } catch {
    json = r.stdout;
  }
  return { code: r.code, json, stderr: r.stderr };
}

/** Nothing of ours left in the namespace: no device (nor the ebpf veth's peer), no route through it, no nft table. */
async function assertClean(ns: NetNs): Promise<void> {
  const links = await ns.ipJson<{ ifname: string }[]>(['link', 'show']);
  assert.ok(!links.some((l) => l.ifname.startsWith(DEVICE)), `device ${DEVICE} still there`);
  assert.equal((await ns.must('tc', ['qdisc', 'show'])).includes('clsact'), false, 'a clsact qdisc left behind');
  const routes = JSON.stringify(await ns.ipJson(['-4', 'route', 'show'])) + JSON.stringify(await ns.ipJson(['-6', 'route', 'show']));
  assert.doesNotMatch(routes, new RegExp(DEVICE));
  assert.equal((await ns.must('nft', ['list', 'tables'])).trim(), '', 'nft table left behind');
}

for (const backend of LINUX_TEST_BACKENDS)
describe(`retroflect run (Linux, real engine, ${backend})`, { timeout: 180_000 }, () => {
  let t: Topology;
  let engine: EngineProcess | undefined;
  // The control socket must live in a root-owned 0700 directory (mkdtemp makes one).
  const pipeDir = mkdtempSync(join(tmpdir(), 'rft-e2e-'));
  const pipe = join(pipeDir, 'retroflect.sock');
  const args = ['--no-config', '--reflect', '192.0.2.1', '2001:db8::1', '--shield', '8080/tcp', '5353/udp', '--pipe', pipe,
    '--device', DEVICE, ...backendArgs(backend)];

  before(async () => {
    t = await createTopology('e2e');
    const servers = new JsonLines(t.a.spawn(node, ['--import', 'tsx', PROBE, 'serve', '8080,8081', '5353,5354']));
    await servers.next((o) => o.ready === true);
    engine = spawnEngine(t.a, args);
    await waitReady(engine);
  });

  after(async () => {
    engine?.child.kill('SIGKILL');
    await t?.destroy();
    rmSync(pipeDir, { recursive: true, force: true });
  });

  test('TCP and UDP to the reflect addresses reach wildcard servers, which see the reflect address as peer', async () => {
    assert.deepEqual(await probe(t.a, 'tcp', '192.0.2.1', 8081), { ok: true, reply: 'peer=192.0.2.1' });
    assert.deepEqual(await probe(t.a, 'tcp', '2001:db8::1', 8081), { ok: true, reply: 'peer=2001:db8::1' });
    assert.deepEqual(await probe(t.a, 'udp', '192.0.2.1', 5354), { ok: true, reply: 'peer=192.0.2.1' });
    assert.deepEqual(await probe(t.a, 'udp', '2001:db8::1', 5354), { ok: true, reply: 'peer=2001:db8::1' });
  });

  test('ping gets replies from the reflect addresses', async () => {
    const p4 = await t.a.run('ping', ['-c', '3', '-i', '0.2', '-W', '2', '192.0.2.1']);
    assert.match(p4.stdout, /3 packets transmitted, 3 received/, p4.stdout + p4.stderr);
    const p6 = await t.a.run('ping', ['-6', '-c', '3', '-i', '0.2', '-W', '2', '2001:db8::1']);
    assert.match(p6.stdout, /3 packets transmitted, 3 received/, p6.stdout + p6.stderr);
  });

  test('shield: other hosts are dropped at shielded ports; loopback and reflected traffic pass; counts are reported', async () => {
    assert.deepEqual(await probe(t.b, 'tcp', t.a4, 8080, 1500), { ok: false, error: 'timeout' });
    assert.deepEqual(await probe(t.b, 'udp', t.a6, 5353, 1000), { ok: false, error: 'timeout' });
    assert.deepEqual(await probe(t.b, 'tcp', t.a4, 8081), { ok: true, reply: `peer=${t.b4}` });
    assert.deepEqual(await probe(t.a, 'tcp', '127.0.0.1', 8080), { ok: true, reply: 'peer=127.0.0.1' });
    assert.deepEqual(await probe(t.a, 'tcp', '192.0.2.1', 8080), { ok: true, reply: 'peer=192.0.2.1' });
    assert.deepEqual(await probe(t.a, 'udp', '2001:db8::1', 5353), { ok: true, reply: 'peer=2001:db8::1' });

    const stats = await cli(t.a, pipe, ['stats']);
    assert.equal(stats.code, 0, stats.stderr);
    const s = stats.json as { reflected: { packets: number }; byShieldPort: { port: number; protocol: string; packets: number }[] };
    assert.ok(s.reflected.packets > 0);
    const tcp8080 = s.byShieldPort.find((p) => p.port === 8080 && p.protocol === 'tcp');
    const udp5353 = s.byShieldPort.find((p) => p.port === 5353 && p.protocol === 'udp');
    assert.ok(tcp8080 && tcp8080.packets >= 1, JSON.stringify(s.byShieldPort));
    assert.ok(udp5353 && udp5353.packets === 1, JSON.stringify(s.byShieldPort));
  });

  test('UDP to a closed port through a reflect address fails at once with ECONNREFUSED, as it does directly (IPv4, IPv6)', async () => {
    // Nothing listens on port 9: the host answers the reflected datagram with port unreachable, which goes back
    // through the engine. The client's socket only recognises it when the embedded packet is reflected too.
    for (const host of [t.a4, t.a6, '192.0.2.1', '2001:db8::1']) {
      assert.deepEqual(await probeConnectedUdp(t.a, host, 9), { ok: false, error: 'ECONNREFUSED' }, host);
    }
    // And a datagram to an open port through the same socket type still gets its answer.
    assert.deepEqual(await probeConnectedUdp(t.a, '2001:db8::1', 5354), { ok: true, reply: 'peer=2001:db8::1' });
  });

  test('forged reflect sources: another host sending from a reflect address is dropped and counted; reflection still works', async () => {
    const log = new JsonLines(t.a.spawn(node, ['--import', 'tsx', PROBE, 'udp-log', '5355']));
    await log.next((o) => o.ready === true);
    const forgedCount = async () => ((await cli(t.a, pipe, ['stats'])).json as { forgedSourceDropped: { packets: number } }).forgedSourceDropped.packets;
    const before = await forgedCount();
    // b claims the reflect addresses as its own and sends from them. Its neighbour entries for a are pinned, so
    // neighbour discovery from those addresses adds nothing to the count.
    const aMac = (await t.a.ipJson<{ address: string }[]>(['link', 'show', 'dev', t.aIf]))[0].address;
    await t.b.must('ip', ['addr', 'add', '192.0.2.1/32', 'dev', t.bIf]);
    await t.b.must('ip', ['addr', 'add', '2001:db8::1/128', 'dev', t.bIf, 'nodad']);
    for (const addr of [t.a4, t.a6]) await t.b.must('ip', ['neigh', 'replace', addr, 'lladdr', aMac, 'dev', t.bIf, 'nud', 'permanent']);
    try {
      const send = async (src: string, dst: string, count: number) => {
        const r = await t.b.run(node, ['--import', 'tsx', PROBE, 'udp-from', src, dst, '5355', String(count)]);
        assert.deepEqual(JSON.parse(r.stdout), { sent: count }, r.stderr);
      };
      await send('192.0.2.1', t.a4, 3);
      await send('2001:db8::1', t.a6, 2);
      // The same path from b's own addresses reaches the server, after the forged datagrams.
      await send(t.b4, t.a4, 1);
      await send(t.b6, t.a6, 1);
      await log.next((o) => o.from === t.b4);
      await log.next((o) => o.from === t.b6);
      await assert.rejects(log.next((o) => o.from === '192.0.2.1' || o.from === '2001:db8::1', 300), /no matching line/, 'a forged datagram reached the server');
      await waitFor('forged drops counted in stats', async () => (await forgedCount()) >= before + 5);
      const human = await t.a.run(node, ['--import', 'tsx', 'src/cli/main.ts', 'stats', '--pipe', pipe]);
      assert.match(human.stdout, /forged source dropped:?\s+([5-9]|\d\d+) packets/, human.stdout + human.stderr);
    } finally {
      log.child.kill();
      await t.b.run('ip', ['addr', 'del', '192.0.2.1/32', 'dev', t.bIf]);
      await t.b.run('ip', ['addr', 'del', '2001:db8::1/128', 'dev', t.bIf]);
      for (const addr of [t.a4, t.a6]) await t.b.run('ip', ['neigh', 'del', addr, 'dev', t.bIf]);
    }
    assert.deepEqual(await probe(t.a, 'udp', '192.0.2.1', 5354), { ok: true, reply: 'peer=192.0.2.1' });
    assert.deepEqual(await probe(t.a, 'tcp', '2001:db8::1', 8081), { ok: true, reply: 'peer=2001:db8::1' });
  });

  test('live changes through the pipe: add/remove an address and a shield port', async () => {
    assert.equal((await cli(t.a, pipe, ['address', 'add', '203.0.113.7', '--temporary'])).code, 0);
    assert.deepEqual(await probe(t.a, 'tcp', '203.0.113.7', 8081), { ok: true, reply: 'peer=203.0.113.7' });
    assert.equal((await cli(t.a, pipe, ['address', 'remove', '192.0.2.1', '--temporary'])).code, 0);
    const r4 = await t.a.ipJson<{ dst: string }[]>(['-4', 'route', 'show', 'dev', DEVICE]);
    assert.deepEqual(r4.map((r) => r.dst), ['203.0.113.7']);

    assert.equal((await cli(t.a, pipe, ['shield', 'add', '8081/tcp', '--temporary'])).code, 0);
    assert.deepEqual(await probe(t.b, 'tcp', t.a4, 8081, 1000), { ok: false, error: 'timeout' });
    assert.equal((await cli(t.a, pipe, ['shield', 'remove', '8080/tcp', '--temporary'])).code, 0);
    assert.deepEqual(await probe(t.b, 'tcp', t.a4, 8080), { ok: true, reply: `peer=${t.b4}` });
  });

  test('SIGTERM: clean exit, no device, route or nft table left', async () => {
    engine!.child.kill('SIGTERM');
    assert.equal(await engine!.exited, 0, engine!.output());
    await assertClean(t.a);
  });

  test('SIGKILL leaves the nft table (and the ebpf veth); a restart removes them, reflects again, and stops cleanly', async () => {
    const killed = spawnEngine(t.a, args);
    await waitReady(killed);
    killed.child.kill('SIGKILL');
    await killed.exited;
    assert.match(await t.a.must('nft', ['list', 'tables']), /inet retroflect/);
    // A TUN device dies with its process; the veth outlives it, naming the dead engine in its alias.
    const left = (await t.a.ipJson<{ ifname: string }[]>(['link', 'show'])).map((l) => l.ifname);
    assert.equal(left.includes(DEVICE), backend === 'ebpf', left.join(' '));
    // A stray element tells a recreated table from a reused one.
    await t.a.must('nft', ['add', 'element', 'inet', 'retroflect', 'shield_tcp', '{ 9999 }']);

    engine = spawnEngine(t.a, args);
    await waitReady(engine);
    const set = await t.a.must('nft', ['list', 'set', 'inet', 'retroflect', 'shield_tcp']);
    assert.doesNotMatch(set, /9999/);
    assert.deepEqual(await probe(t.a, 'tcp', '192.0.2.1', 8081), { ok: true, reply: 'peer=192.0.2.1' });
    assert.deepEqual(await probe(t.b, 'tcp', t.a4, 8080, 1500), { ok: false, error: 'timeout' });

    engine.child.kill('SIGTERM');
    assert.equal(await engine.exited, 0, engine.output());
    await assertClean(t.a);
  });
});

for (const backend of LINUX_TEST_BACKENDS)
describe(`retroflect run: dry run and refusals change nothing (${backend})`, { timeout: 60_000 }, () => {
  let t: Topology;
  let pipeDir: string;
  before(async () => {
    t = await createTopology('e2d');
    pipeDir = mkdtempSync(join(tmpdir(), 'rft-e2d-'));
  });
  after(async () => {
    await t?.destroy();
    rmSync(pipeDir, { recursive: true, force: true });
  });

  test('a second engine on another device is refused (exit 8) and leaves the first one\'s shield table alone', async () => {
    const first = spawnEngine(t.a, ['--no-config', '--reflect', '192.0.2.1', '--shield', '8080/tcp', '--pipe',
      join(pipeDir, 'first.sock'), '--device', DEVICE, ...backendArgs(backend)]);
    try {
      await waitReady(first);
      const second = spawnEngine(t.a, ['--no-config', '--reflect', '192.0.2.2', '--pipe', join(pipeDir, 'second.sock'),
        '--device', 'rflct9', ...backendArgs(backend)]);
      assert.equal(await second.exited, 8, second.output());
      assert.match(second.output(), /Another retroflect engine \(device rflct0\) is running on this host/);
      const table = await t.a.must('nft', ['list', 'table', 'inet', 'retroflect']);
      assert.match(table, /iifname "rflct0" accept/);
      assert.match(table, /elements = \{ 8080 /);
      const links = await t.a.ipJson<{ ifname: string }[]>(['link', 'show']);
      assert.ok(!links.some((l) => l.ifname === 'rflct9'), 'the refused engine left its device');
      const ping = await t.a.run('ping', ['-c', '1', '-W', '2', '192.0.2.1']);
      assert.match(ping.stdout, /1 received/, 'the first engine still reflects');
    } finally {
      first.child.kill('SIGTERM');
      await first.exited;
    }
    await assertClean(t.a);
  });

  test('--dry-run prints the routes and nft rules it would install, exits 0, creates nothing', async () => {
    const r = await t.a.run(node, ['--import', 'tsx', 'src/cli/main.ts', 'run', '--dry-run', '--no-config', '--reflect',
      '192.0.2.1', '--shield', '8080/tcp', '--pipe', join(pipeDir, 's.sock'), ...backendArgs(backend)], {});
    assert.equal(r.code, 0, r.stdout + r.stderr);
    // No --device: the backend's default device.
    assert.match(r.stdout, new RegExp(`ip -4 route replace 192\\.0\\.2\\.1/32 dev ${engineDevice(backend)}\\b`));
    assert.match(r.stdout, /elements = \{ 8080 \}/);
    assert.match(r.stdout, /WinDivert filter \(Windows\): +!loopback and \(\(outbound and \(ip\.DstAddr == 192\.0\.2\.1\)\) or \(inbound and \(ip\.SrcAddr == 192\.0\.2\.1 or ip\.Protocol == 51 or tcp\.DstPort == 8080\)\)\)/);
    await assertClean(t.a);
  });

  test('an address on a local subnet is refused with exit code 4 and the rule named; nothing is created', async () => {
    const r = await t.a.run(node, ['--import', 'tsx', 'src/cli/main.ts', 'run', '--no-config', '--reflect', '198.51.100.77',
      '--pipe', join(pipeDir, 's.sock'), ...backendArgs(backend)]);
    assert.equal(r.code, 4, r.stdout + r.stderr);
    assert.match(r.stderr, /198\.51\.100\.77 is inside 198\.51\.100\.0\/24, a subnet of interface veth-a/);
    assert.match(r.stderr, /E_INVALID_ADDRESS/);
    await assertClean(t.a);
  });
});
