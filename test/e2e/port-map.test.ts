/**
 * Port maps end to end on Linux, on each backend: the real `retroflect run` (CLI → control pipe → Engine → worker →
 * Dataplane → TUN with vnet offloads on, or on ebpf the user-space path until the server answers, then the tc program
 * (test/packet-sources/ebpf/mapped-flows.test.ts); TCP arrives with partial checksums)
 * inside a namespace, real servers, real clients (curl for
 * HTTP). R = 203.0.113.30 / 2001:db8:ffff::30 with `--map 80=8080` (TCP and UDP) and `--map 443=8443/tcp`.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createTopology, JsonLines, type NetNs, type Topology } from '../helpers/netns.ts';
import { privateDir, removeDir, startEngine, type EngineHandle } from '../helpers/engine.ts';
import { backendArgs, LINUX_TEST_BACKENDS } from '../helpers/backends.ts';

const PEERS = 'test/e2e/fixtures/port-map-peers.ts';
const node = process.execPath;
// Not 192.0.2.1: an engine started with an empty config picks that one by itself (first run).
const R4 = '203.0.113.30';
const R6 = '2001:db8:ffff::30';

async function curl(ns: NetNs, url: string, extra: string[] = []): Promise<{ code: number; body: string; stderr: string }> {
  const r = await ns.run('curl', ['-sS', '-g', '--max-time', '5', ...extra, url]);
  return { code: r.code, body: r.stdout, stderr: r.stderr };
}

async function peers(ns: NetNs, args: string[]): Promise<Record<string, unknown>> {
  const r = await ns.run(node, ['--import', 'tsx', PEERS, ...args]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

for (const backend of LINUX_TEST_BACKENDS)
describe(`port maps (Linux, real engine, ${backend})`, { timeout: 240_000 }, () => {
  let t: Topology;
  let dir: string;
  let config: string;
  let engine: EngineHandle | undefined;

  before(async () => {
    t = await createTopology('pmap');
    dir = privateDir('pmap');
    config = join(dir, 'config.json');
    const servers = new JsonLines(t.a.spawn(node, ['--import', 'tsx', PEERS, 'serve', '80,8080,8443', '80,8080']));
    await servers.next((o) => o.ready === true);
    engine = await startEngine(t.a, dir, { config, args: backendArgs(backend) });
  });

  after(async () => {
    await engine?.kill();
    await t?.destroy();
    removeDir(dir);
  });

  test('address add with maps: persisted, listed, in status; bad maps are refused and change nothing', async () => {
    const add = await engine!.cli(['address', 'add', R4, R6, '--map', '80=8080', '--map', '443=8443/tcp']);
    assert.equal(add.code, 0, add.stderr);
    assert.deepEqual(add.json.added, [R4, R6]);
    assert.equal(add.json.portMaps.added.length, 6, JSON.stringify(add.json)); // 2 addresses × (80 tcp+udp, 443 tcp)

    const list = await engine!.cli(['address', 'list']);
    const entry = list.json.addresses.find((a: { address: string }) => a.address === R4);
    assert.deepEqual(entry.portMaps, [
      { protocol: 'tcp', port: 80, target: 8080 },
      { protocol: 'udp', port: 80, target: 8080 },
      { protocol: 'tcp', port: 443, target: 8443 },
    ]);
    const status = await engine!.cli(['status']);
    assert.equal(status.json.portMaps.length, 6);
    const file = JSON.parse(readFileSync(config, 'utf8'));
    assert.equal(file.schemaVersion, 2);
    assert.deepEqual(file.reflectAddresses.find((a: { address?: string }) => a.address === R4), { address: R4, portMaps: ['80=8080/tcp', '80=8080/udp', '443=8443/tcp'] });

    const before = readFileSync(config, 'utf8');
    for (const [map, code, pattern] of [
      ['80=9090', 'E_PORT_MAP_CONFLICT', /already mapped to 8080/],
      ['81=8080', 'E_PORT_MAP_CONFLICT', /target of 80=8080/],
      ['8080=9000', 'E_PORT_MAP_CONFLICT', /overlap/],
      ['70000=80', 'E_INVALID_PORT', /out of range/],
      ['90=90', 'E_INVALID_PORT', /to itself/],
    ] as const) {
      const r = await engine!.cli(['address', 'add', R4, '--map', map]);
      assert.equal(r.code, 4, `${map}: ${r.stdout} ${r.stderr}`);
      assert.equal(r.json?.error?.code ?? JSON.parse(r.stderr || '{}').error?.code, code, `${map}: ${r.stdout} ${r.stderr}`);
      assert.match(r.stdout + r.stderr, pattern);
    }
    assert.equal(readFileSync(config, 'utf8'), before, 'refused maps leave the config file as it was');
    assert.equal((await engine!.cli(['status'])).json.portMaps.length, 6, 'and the running engine too');
  });

  test('curl to R:80 reaches the server on 8080, which sees R and the client port; IPv4 and IPv6', async () => {
    for (const [host, localPort] of [[R4, 45080], [`[${R6}]`, 45082]] as const) {
      const r = await curl(t.a, `http://${host}:80/`, ['--local-port', String(localPort)]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.body, `server=8080 peer=${host.replace(/[[\]]/g, '')} peerPort=${localPort}`);
    }
    const tls = await peers(t.a, ['pair', R4, '443', '443', '5000']);
    assert.match(String((tls.a as string[])[0]), /^server=8443 peer=203\.0\.113\.30 /, 'a /tcp map works too');
  });

  test('the server on port 80 itself is not reachable through R while 80 is mapped', async () => {
    for (let i = 0; i < 3; i++) assert.match((await curl(t.a, `http://${R4}:80/`)).body, /^server=8080 /);
    // ... but it is there: on loopback it answers.
    assert.match((await curl(t.a, 'http://127.0.0.1:80/')).body, /^server=80 /);
  });

  test('UDP echo through the map; the connected client only accepts the answer from R:80', async () => {
    for (const host of [R4, R6]) {
      const r = await peers(t.a, ['udp', host, '80', '3000']);
      assert.equal(r.ok, true, JSON.stringify(r));
      assert.equal(r.reply, `server=8080 peer=${host} peerPort=${r.local}`);
    }
  });

  test('a client of R:8080 and a client of R:80 at the same time both work, each seeing its own server port', async () => {
    for (const host of [R4, R6]) {
      const r = await peers(t.a, ['pair', host, '8080', '80', '5000']);
      assert.equal(r.ok, true, JSON.stringify(r));
      const a = r.a as string[];
      const b = r.b as string[];
      assert.deepEqual(a, [`server=8080 peer=${host} peerPort=${r.localA}`, `server=8080 peer=${host} peerPort=${r.localA}`]);
      assert.deepEqual(b, [`server=8080 peer=${host} peerPort=${r.localB}`, `server=8080 peer=${host} peerPort=${r.localB}`]);
    }
  });

  test('flows show the original and the mapped port', async () => {
    await curl(t.a, `http://${R4}:80/`, ['--local-port', '45081']);
    const flows = (await engine!.cli(['flows'])).json.flows as { protocol: string; clientPort: number; serverPort: number; mappedFromPort: number | null }[];
    const f = flows.find((x) => x.protocol === 'tcp' && x.clientPort === 45081);
    assert.ok(f, JSON.stringify(flows));
    assert.deepEqual([f.serverPort, f.mappedFromPort], [8080, 80]);
    const human = await t.a.run('env', ['NO_COLOR=1', node, '--import', 'tsx', 'src/cli/main.ts', 'flows', '--pipe', engine!.pipe]);
    assert.match(human.stdout, /203\.0\.113\.30:80 → :8080/);
  });

  test('ICMP errors carry the mapped port back: UDP to a mapped port with no server fails at once with ECONNREFUSED', async () => {
    const add = await engine!.cli(['address', 'add', R4, R6, '--map', '82=8182/udp', '--temporary']);
    assert.equal(add.code, 0, add.stderr);
    // Nothing listens on 8182: the host answers the mapped datagram (R:c → L:8182) with port unreachable. The client
    // (connected to R:82) recognises it only if the embedded packet reads L:c → R:82 again: addresses reflected,
    // port mapped back.
    for (const host of [R4, R6]) assert.deepEqual(await peers(t.a, ['udp', host, '82', '3000']), { ok: false, error: 'ECONNREFUSED' }, host);
    assert.equal((await engine!.cli(['address', 'remove', R4, R6, '--map', '82', '--temporary'])).code, 0);
  });

  test('maps survive a restart from the config file', async () => {
    engine!.child.kill('SIGTERM');
    assert.equal(await engine!.exited, 0, engine!.output());
    engine = await startEngine(t.a, dir, { config, args: backendArgs(backend) });
    assert.match((await curl(t.a, `http://${R4}:80/`)).body, /^server=8080 peer=203\.0\.113\.30 /);
    assert.equal((await engine.cli(['status'])).json.portMaps.length, 6);
  });

  test('after the map is removed, R:80 reaches the server on 80 (and the address stays)', async () => {
    const rm = await engine!.cli(['address', 'remove', R4, '--map', '80']);
    assert.equal(rm.code, 0, rm.stderr);
    assert.deepEqual(rm.json.portMapsRemoved.map((m: { protocol: string }) => m.protocol).sort(), ['tcp', 'udp']);
    assert.match((await curl(t.a, `http://${R4}:80/`)).body, /^server=80 peer=203\.0\.113\.30 /);
    const udp = await peers(t.a, ['udp', R4, '80', '3000']);
    assert.match(String(udp.reply), /^server=80 /);
    // R6 keeps its map.
    assert.match((await curl(t.a, `http://[${R6}]:80/`)).body, /^server=8080 /);
    const again = await engine!.cli(['address', 'remove', R4, '--map', '80']);
    assert.equal(again.code, 9, 'removing a map that is not there is an error');
    const file = JSON.parse(readFileSync(config, 'utf8'));
    assert.deepEqual(file.reflectAddresses.find((a: { address?: string }) => a.address === R4), { address: R4, portMaps: ['443=8443/tcp'] });
  });
});
