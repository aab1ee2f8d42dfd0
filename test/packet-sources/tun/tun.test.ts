/**
 * The Linux TUN backend against a real kernel, inside namespaces created here (the host's network is never
 * touched). Namespace "a" is the host running retroflect (198.51.100.2, 2001:db8:1::2, default routes via "b");
 * "b" is another host on the same link. The packet loop is TunHostBackend + TunPacketSource wired by the fixture
 * tun-reflector.ts with the engine's real Dataplane (the whole engine is exercised in test/e2e).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { InterceptConfig } from '../../../src/config/intercept-config.ts';
import { DEFAULT_TUN_VARIANT, TUN_VARIANTS, type TunVariantName } from '../../../src/packet-sources/tun/device.ts';
import { createTopology, JsonLines, waitFor, type NetNs, type Topology } from '../../helpers/netns.ts';

const REFLECTOR = 'test/packet-sources/tun/fixtures/tun-reflector.ts';
const PROBE = 'test/fixtures/probe.ts';
const node = process.execPath;

interface ProbeResult {
  ok: boolean;
  reply?: string;
  error?: string;
}

async function probe(ns: NetNs, mode: 'tcp' | 'udp', host: string, port: number, timeoutMs = 3000): Promise<ProbeResult> {
  const r = await ns.run(node, ['--import', 'tsx', PROBE, mode, host, String(port), String(timeoutMs)]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as ProbeResult;
}

function startReflector(ns: NetNs, config: InterceptConfig, extra: Record<string, unknown> = {}): JsonLines {
  return new JsonLines(ns.spawn(node, ['--import', 'tsx', REFLECTOR, JSON.stringify({ config, ...extra })]));
}

async function nftTables(ns: NetNs): Promise<string> {
  return (await ns.must('nft', ['list', 'tables'])).trim();
}

describe('TUN backend in a namespace', { timeout: 120_000 }, () => {
  let t: Topology;
  let reflector: JsonLines;
  const config: InterceptConfig = {
    reflectAddresses: ['192.0.2.1', '2001:db8::1'],
    shieldPorts: [
      { port: 8080, protocol: 'tcp' },
      { port: 5353, protocol: 'udp' },
    ],
  };

  before(async () => {
    t = await createTopology('tun');
    // Servers on the wildcard address in "a": 8080/tcp + 5353/udp (shielded), 8081/tcp + 5354/udp (not).
    const servers = new JsonLines(t.a.spawn(node, ['--import', 'tsx', PROBE, 'serve', '8080,8081', '5353,5354', '9000']));
    await servers.next((o) => o.ready === true);
    reflector = startReflector(t.a, config);
    const ready = await reflector.next((o) => 'ready' in o || 'error' in o);
    assert.equal(ready.ready, true, JSON.stringify(ready));
  });

  after(async () => {
    await t?.destroy();
  });

  test('device is up with the configured MTU and IPv6 enabled, one host route per reflect address', async () => {
    const [link] = await t.a.ipJson<{ ifname: string; mtu: number; flags: string[] }[]>(['link', 'show', 'dev', 'rflct0']);
    assert.ok(link.flags.includes('UP'));
    assert.equal(link.mtu, TUN_VARIANTS[DEFAULT_TUN_VARIANT].mtu);
    assert.equal((await t.a.must('cat', ['/proc/sys/net/ipv6/conf/rflct0/disable_ipv6'])).trim(), '0');
    const r4 = await t.a.ipJson<{ dst: string; dev: string }[]>(['-4', 'route', 'show', 'dev', 'rflct0']);
    const r6 = await t.a.ipJson<{ dst: string; dev: string }[]>(['-6', 'route', 'show', 'dev', 'rflct0']);
    assert.deepEqual(r4.map((r) => r.dst), ['192.0.2.1']);
    assert.ok(r6.some((r) => r.dst === '2001:db8::1'), JSON.stringify(r6));
  });

  test("the kernel's own IPv6 chatter into the TUN (router solicitation) is passed, never reflected", async () => {
    // IPv6 is on, so the kernel gives the device a link-local address and solicits routers through it (~1 s after
    // link up). Such a packet is not to a reflect address: the data plane passes it and the source drops it.
    type Snapshot = { reflected: { packets: number }; passed: { packets: number }; malformed: { total: number } };
    let snap: Snapshot | undefined;
    await waitFor('a passed packet', async () => {
      reflector.send({ op: 'stats' });
      snap = (await reflector.next((o) => 'stats' in o)).stats as Snapshot;
      return snap.passed.packets > 0;
    });
    assert.equal(snap!.reflected.packets, 0);
    assert.equal(snap!.malformed.total, 0);
  });

  test('TCP to the reflect address reaches the wildcard server, which sees the reflect address as its peer', async () => {
    assert.deepEqual(await probe(t.a, 'tcp', '192.0.2.1', 8081), { ok: true, reply: 'peer=192.0.2.1', local: '198.51.100.2' });
    assert.deepEqual(await probe(t.a, 'tcp', '2001:db8::1', 8081), { ok: true, reply: 'peer=2001:db8::1', local: '2001:db8:1::2' });
  });

  test('UDP both ways over IPv4 and IPv6', async () => {
    assert.deepEqual(await probe(t.a, 'udp', '192.0.2.1', 5354), { ok: true, reply: 'peer=192.0.2.1' });
    assert.deepEqual(await probe(t.a, 'udp', '2001:db8::1', 5354), { ok: true, reply: 'peer=2001:db8::1' });
  });

  test('ping gets replies from the reflect address (IPv4 and IPv6)', async () => {
    const p4 = await t.a.run('ping', ['-c', '3', '-i', '0.2', '-W', '2', '192.0.2.1']);
    assert.equal(p4.code, 0, p4.stdout + p4.stderr);
    assert.match(p4.stdout, /3 packets transmitted, 3 received/);
    assert.match(p4.stdout, /from 192\.0\.2\.1: icmp_seq=1/);
    const p6 = await t.a.run('ping', ['-6', '-c', '3', '-i', '0.2', '-W', '2', '2001:db8::1']);
    assert.equal(p6.code, 0, p6.stdout + p6.stderr);
    assert.match(p6.stdout, /3 packets transmitted, 3 received/);
  });

  test('bulk TCP (segmentation offload, partial checksums) and fragmented UDP arrive intact', async () => {
    for (const host of ['192.0.2.1', '2001:db8::1']) {
      const r = await t.a.run(node, ['--import', 'tsx', PROBE, 'bulk', host, '9000', String(8 * 1024 * 1024), '15000']);
      assert.deepEqual(JSON.parse(r.stdout), { ok: true, match: true }, r.stderr);
    }
    // 8000 bytes do not fit a 1500-byte MTU: the datagram crosses the TUN as IP fragments.
    for (const host of ['192.0.2.1', '2001:db8::1']) {
      const r = await t.a.run(node, ['--import', 'tsx', PROBE, 'udp', host, '5354', '3000', '8000']);
      assert.deepEqual(JSON.parse(r.stdout), { ok: true, reply: `peer=${host}` }, r.stderr);
    }
  });

  test('shield: another host cannot reach a shielded port, can reach an unshielded one; nft counts the drops', async () => {
    reflector.send({ op: 'counters' });
    const before = (await reflector.next((o) => 'counters' in o)).counters as Record<string, { packets: number; bytes: number }>;
    assert.deepEqual(Object.keys(before).sort(), ['5353/udp', '8080/tcp']);

    assert.deepEqual(await probe(t.b, 'tcp', t.a4, 8080, 1500), { ok: false, error: 'timeout' });
    assert.deepEqual(await probe(t.b, 'tcp', t.a6, 8080, 1500), { ok: false, error: 'timeout' });
    assert.deepEqual(await probe(t.b, 'udp', t.a4, 5353, 1000), { ok: false, error: 'timeout' });
    assert.deepEqual(await probe(t.b, 'tcp', t.a4, 8081), { ok: true, reply: `peer=${t.b4}`, local: t.b4 });
    assert.deepEqual(await probe(t.b, 'udp', t.a6, 5354), { ok: true, reply: `peer=${t.b6}` });

    reflector.send({ op: 'counters' });
    const after = (await reflector.next((o) => 'counters' in o)).counters as Record<string, { packets: number; bytes: number }>;
    // At least one SYN per blocked TCP attempt (plus retransmissions) and the one UDP datagram.
    assert.ok(after['8080/tcp'].packets >= before['8080/tcp'].packets + 2, JSON.stringify(after));
    assert.ok(after['8080/tcp'].bytes > before['8080/tcp'].bytes);
    assert.equal(after['5353/udp'].packets, before['5353/udp'].packets + 1);
  });

  test('shield: loopback and reflected connections to a shielded port still work', async () => {
    assert.deepEqual(await probe(t.a, 'tcp', '127.0.0.1', 8080), { ok: true, reply: 'peer=127.0.0.1', local: '127.0.0.1' });
    assert.deepEqual(await probe(t.a, 'tcp', '::1', 8080), { ok: true, reply: 'peer=::1', local: '::1' });
    // This host talking to its own veth address goes over loopback too.
    assert.deepEqual(await probe(t.a, 'tcp', t.a4, 8080), { ok: true, reply: `peer=${t.a4}`, local: t.a4 });
    assert.deepEqual(await probe(t.a, 'tcp', '192.0.2.1', 8080), { ok: true, reply: 'peer=192.0.2.1', local: t.a4 });
    assert.deepEqual(await probe(t.a, 'udp', '2001:db8::1', 5353), { ok: true, reply: 'peer=2001:db8::1' });
  });

  test('live apply: routes and shield elements change without touching what stays', async () => {
    const next: InterceptConfig = {
      reflectAddresses: ['2001:db8::1', '203.0.113.7'],
      shieldPorts: [
        { port: 5353, protocol: 'udp' },
        { port: 8081, protocol: 'tcp' },
      ],
    };
    reflector.send({ op: 'apply', next });
    assert.deepEqual(await reflector.next((o) => 'applied' in o || 'error' in o), { applied: true });

    const r4 = await t.a.ipJson<{ dst: string }[]>(['-4', 'route', 'show', 'dev', 'rflct0']);
    assert.deepEqual(r4.map((r) => r.dst), ['203.0.113.7']);
    assert.deepEqual(await probe(t.a, 'tcp', '203.0.113.7', 8080), { ok: true, reply: 'peer=203.0.113.7', local: t.a4 });
    assert.deepEqual(await probe(t.a, 'tcp', '2001:db8::1', 8080), { ok: true, reply: 'peer=2001:db8::1', local: t.a6 });
    // 192.0.2.1 is no longer reflected: it now follows the default route to "b", where nothing answers.
    assert.equal((await probe(t.a, 'tcp', '192.0.2.1', 8080, 800)).ok, false);

    assert.deepEqual(await probe(t.b, 'tcp', t.a4, 8080), { ok: true, reply: `peer=${t.b4}`, local: t.b4 });
    assert.deepEqual(await probe(t.b, 'tcp', t.a4, 8081, 1000), { ok: false, error: 'timeout' });

    reflector.send({ op: 'counters' });
    const counters = (await reflector.next((o) => 'counters' in o)).counters as Record<string, { packets: number }>;
    assert.deepEqual(Object.keys(counters).sort(), ['5353/udp', '8081/tcp']);
    // 5353/udp stayed: its element (and its counter from the earlier test) was not recreated.
    assert.ok(counters['5353/udp'].packets >= 1);
  });

  test('a second backend on the same device name fails clearly and leaves the running one alone', async () => {
    const second = startReflector(t.a, config);
    const res = await second.next((o) => 'error' in o || 'ready' in o);
    // Found before the device is even opened: the running backend's table names its live device (exit code 8).
    assert.equal(res.code, 'E_ALREADY_RUNNING');
    assert.match(String(res.error), /Another retroflect engine \(device rflct0\) is running/);
    assert.match(await nftTables(t.a), /table inet retroflect/);
    assert.deepEqual(await probe(t.a, 'tcp', '203.0.113.7', 8080), { ok: true, reply: 'peer=203.0.113.7', local: t.a4 });
  });

  test('stop removes the device, its routes and the nft table', async () => {
    reflector.child.kill('SIGTERM');
    await reflector.next((o) => 'stopped' in o);
    const links = await t.a.ipJson<{ ifname: string }[]>(['link', 'show']);
    assert.ok(!links.some((l) => l.ifname === 'rflct0'));
    const routes = JSON.stringify(await t.a.ipJson(['-4', 'route', 'show'])) + JSON.stringify(await t.a.ipJson(['-6', 'route', 'show']));
    assert.doesNotMatch(routes, /203\.0\.113\.7|2001:db8::1"|rflct0/);
    assert.equal(await nftTables(t.a), '');
  });

  // After the main backend stopped: the shield table is one per host, so a second backend's stop would remove it.
  for (const variant of (Object.keys(TUN_VARIANTS) as TunVariantName[]).filter((v) => v !== DEFAULT_TUN_VARIANT)) {
    test(`variant ${variant}: MTU ${TUN_VARIANTS[variant].mtu}, TCP bulk and ping through the reflect address`, async () => {
      const other = startReflector(t.a, { reflectAddresses: ['203.0.113.99'], shieldPorts: [] }, { device: 'rflctv', variant });
      assert.equal((await other.next((o) => 'ready' in o || 'error' in o)).ready, true);
      const [link] = await t.a.ipJson<{ mtu: number }[]>(['link', 'show', 'dev', 'rflctv']);
      assert.equal(link.mtu, TUN_VARIANTS[variant].mtu);
      const r = await t.a.run(node, ['--import', 'tsx', PROBE, 'bulk', '203.0.113.99', '9000', String(4 * 1024 * 1024), '15000']);
      assert.deepEqual(JSON.parse(r.stdout), { ok: true, match: true }, r.stderr);
      assert.match((await t.a.run('ping', ['-c', '2', '-i', '0.2', '-W', '2', '203.0.113.99'])).stdout, /2 received/);
      other.send({ op: 'stop' });
      await other.next((o) => 'stopped' in o);
    });
  }

  test('after SIGKILL the device and routes are gone; the next start removes the leftover table', async () => {
    const killed = startReflector(t.a, config, { device: 'rflct1' });
    assert.equal((await killed.next((o) => 'ready' in o || 'error' in o)).ready, true);
    killed.child.kill('SIGKILL');
    await new Promise((r) => killed.child.once('exit', r));
    const links = await t.a.ipJson<{ ifname: string }[]>(['link', 'show']);
    assert.ok(!links.some((l) => l.ifname === 'rflct1'), 'non-persistent device vanished with its fd');
    assert.match(await nftTables(t.a), /table inet retroflect/, 'the killed run left its table');

    // Add a stray element to the leftover so we can tell the table was recreated, not reused.
    await t.a.must('nft', ['add', 'element', 'inet', 'retroflect', 'shield_tcp', '{ 9999 }']);
    const again = startReflector(t.a, { reflectAddresses: ['192.0.2.1'], shieldPorts: [{ port: 8080, protocol: 'tcp' }] }, { device: 'rflct1' });
    assert.equal((await again.next((o) => 'ready' in o || 'error' in o)).ready, true);
    again.send({ op: 'counters' });
    assert.deepEqual(Object.keys((await again.next((o) => 'counters' in o)).counters as object), ['8080/tcp']);
    assert.deepEqual(await probe(t.a, 'tcp', '192.0.2.1', 8081), { ok: true, reply: 'peer=192.0.2.1', local: t.a4 });
    again.send({ op: 'stop' });
    await again.next((o) => 'stopped' in o);
    assert.equal(await nftTables(t.a), '');
  });
});
