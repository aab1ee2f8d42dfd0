/**
 * Port allow lists on the ebpf backend are decided in the kernel: against the real `retroflect run --backend ebpf` in
 * a namespace, what a restricted address's list allows is reflected by the tc program (the veth peer, where the
 * user-space path reads, sees none of it), and only what the list does not allow takes the user-space path, which
 * refuses it (ECONNREFUSED, counted notAllowed). Live changes of the list under traffic: a removed port is refused
 * and an added one reflected in the kernel as soon as the change returns, and a stream to a port allowed throughout
 * loses nothing. A port map on a restricted address counts as an allowed port, and its packets keep the user-space
 * path. (test/e2e/allowed.test.ts runs the shared allow-list suite on both backends.)
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createTopology, JsonLines, type NetNs, type Topology } from '../../helpers/netns.ts';
import { engineDevice, privateDir, removeDir, startEngine, type EngineHandle } from '../../helpers/engine.ts';
import { counter, peerRxPackets, send } from '../../helpers/udp-stream.ts';

const PEERS = 'test/e2e/fixtures/allowed-peers.ts';
const node = process.execPath;
const R4 = '203.0.113.41';
const R6 = '2001:db8:ffff::41';
const PEER = `${engineDevice('ebpf')}p`;
/** Ends a client that hangs; far longer than a refusal takes. Never the thing measured. */
const GUARD_MS = '5000';
/** Packets the peer may see that are none of the test's (IPv6 neighbour and router messages). */
const NOISE = 5;

/**
 * Datagrams the UDP socket bound to `port` (the counter's: dual stack, so in /proc/net/udp6) dropped because its
 * receive buffer was full: on a loaded machine a receiver that does not get the CPU drops some, which is no packet
 * the engine lost. The kernel counts them per socket (the last column).
 */
async function socketDrops(ns: NetNs, port: number): Promise<number> {
  const r = await ns.run('cat', ['/proc/net/udp6']);
  const local = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  const line = r.stdout.split('\n').find((l) => l.trim().split(/\s+/)[1]?.endsWith(local));
  assert.ok(line, `no UDP socket on port ${port}: ${r.stdout}`);
  return Number(line.trim().split(/\s+/).at(-1));
}

async function peer(ns: NetNs, args: string[]): Promise<Record<string, unknown>> {
  const r = await ns.run(node, ['--import', 'tsx', PEERS, ...args]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

describe('allowed ports on the ebpf backend: decided in the kernel', { timeout: 600_000 }, () => {
  let t: Topology;
  let dir: string;
  let engine: EngineHandle | undefined;

  const notAllowed = async (): Promise<number> => (await engine!.cli(['stats'])).json.notAllowed.packets as number;
  const setPorts = async (ports: string): Promise<void> => {
    const r = await engine!.cli(['address', 'add', R4, R6, '--ports', ports, '--temporary']);
    assert.equal(r.code, 0, r.stderr);
  };

  before(async () => {
    t = await createTopology('alk');
    dir = privateDir('alk');
    // Servers on the ports the tests refuse too, so a refusal is retroflect's, not a closed port.
    const servers = new JsonLines(t.a.spawn(node, ['--import', 'tsx', PEERS, 'serve', '8080,8081', '5401', '0']));
    await servers.next((o) => o.ready === true);
    engine = await startEngine(t.a, dir, { config: false, args: ['--reflect', R4, R6, '--backend', 'ebpf'] });
    assert.equal((await engine.cli(['status'])).json.backend, 'ebpf');
    await setPorts('5400/udp,8080/tcp');
  });

  after(async () => {
    await engine?.kill();
    await t?.destroy();
    removeDir(dir);
  });

  test('what the list allows is reflected in the kernel: the user-space path sees none of it', async () => {
    const sink = await counter(t.a, 5400);
    const refusedBefore = await notAllowed();
    const rxBefore = await peerRxPackets(t.a, PEER);
    await send(t.a, [R4], 5400, 200, 100);
    await send(t.a, [R6], 5400, 100, 300);
    // TCP: the SYN goes to an open port, the server's answers come from it (its reply set), the close both ways.
    for (const host of [R4, R6]) assert.equal((await peer(t.a, ['connect', host, '8080', GUARD_MS])).ok, true, host);
    assert.deepEqual(await sink.result(), { received: 300, wrong: [] });
    const rx = (await peerRxPackets(t.a, PEER)) - rxBefore;
    assert.ok(rx < NOISE, `${rx} packets took the user-space path`);
    const stats = (await engine!.cli(['stats'])).json;
    const udp = (a: string) => stats.byAddress.find((e: { address: string }) => e.address === a).byProtocol.udp;
    assert.deepEqual(udp(R4), { packets: 200, bytes: 200 * (20 + 8 + 100) });
    assert.deepEqual(udp(R6), { packets: 100, bytes: 100 * (40 + 8 + 300) });
    assert.equal((await notAllowed()) - refusedBefore, 0);
  });

  test('what it does not allow takes the user-space path and is refused there, IPv4 and IPv6', async () => {
    const refusedBefore = await notAllowed();
    const rxBefore = await peerRxPackets(t.a, PEER);
    for (const host of [R4, R6]) {
      assert.equal((await peer(t.a, ['connect', host, '8081', GUARD_MS])).error, 'ECONNREFUSED', host);
      assert.equal((await peer(t.a, ['udp', host, '5401', GUARD_MS])).error, 'ECONNREFUSED', host);
    }
    // Each refused SYN and the first datagram of each UDP client reached user space (a second datagram may).
    assert.ok((await peerRxPackets(t.a, PEER)) - rxBefore >= 4, 'the refused packets reached the user-space path');
    assert.ok((await notAllowed()) - refusedBefore >= 4, 'counted notAllowed');
  });

  test('a live change under traffic: a removed port refused, an added one kernel-reflected, at once', async () => {
    const steady = await counter(t.a, 5400);
    const stream = send(t.a, [R4, R6], 5400, 3000, 100, 25);
    // 8080 leaves the list, 8081 and 5401 join it (5400 stays throughout).
    await setPorts('5400/udp,8081/tcp,5401/udp');
    assert.equal((await peer(t.a, ['connect', R4, '8080', GUARD_MS])).error, 'ECONNREFUSED');
    assert.equal((await peer(t.a, ['connect', R6, '8081', GUARD_MS])).ok, true);
    assert.equal((await peer(t.a, ['udp', R4, '5401', GUARD_MS])).reply, `server=5401 peer=${R4}`);
    // The added port is the kernel's: 200 datagrams and their 200 answers, none through the user-space path.
    const rxBefore = await peerRxPackets(t.a, PEER);
    await send(t.a, [R4, R6], 5401, 200, 100);
    const rx = (await peerRxPackets(t.a, PEER)) - rxBefore;
    assert.ok(rx < NOISE, `${rx} packets took the user-space path while the added port was used`);
    // And back: 8081 and 5401 refused again at once (their servers still listen: the refusal is retroflect's).
    await setPorts('5400/udp,8080/tcp');
    assert.equal((await peer(t.a, ['connect', R6, '8081', GUARD_MS])).error, 'ECONNREFUSED');
    assert.equal((await peer(t.a, ['udp', R4, '5401', GUARD_MS])).error, 'ECONNREFUSED');
    assert.equal((await peer(t.a, ['connect', R4, '8080', GUARD_MS])).ok, true);
    await stream;
    await new Promise((r) => setTimeout(r, 300)); // the last datagrams are in flight
    const dropped = await socketDrops(t.a, 5400);
    const got = await steady.result();
    assert.deepEqual(got.wrong, []);
    assert.equal(got.received + dropped, 3000, `the port allowed throughout lost nothing (socket dropped ${dropped})`);
  });

  test('a port map on a restricted address: its port is allowed; its packets take the user-space path', async () => {
    const add = await engine!.cli(['address', 'add', R4, '--map', '6000=5400/udp', '--temporary']);
    assert.equal(add.code, 0, add.stderr);
    const sink = await counter(t.a, 5400);
    const refusedBefore = await notAllowed();
    const rxBefore = await peerRxPackets(t.a, PEER);
    await send(t.a, [R4], 6000, 100, 100);
    assert.deepEqual(await sink.result(), { received: 100, wrong: [] });
    assert.equal((await notAllowed()) - refusedBefore, 0);
    assert.ok((await peerRxPackets(t.a, PEER)) - rxBefore >= 100, 'the mapped datagrams were mapped in user space');
  });
});
