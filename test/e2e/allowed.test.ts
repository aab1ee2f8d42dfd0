/**
 * Allow lists end to end on Linux, over both backends: the real `retroflect run` (CLI → control pipe → Engine → worker
 * → Dataplane, through the TUN device or the ebpf backend's user-space path) in a namespace, real servers and
 * clients. R = 203.0.113.40 / 2001:db8:ffff::40 with `--ports 8080,53/udp`; servers listen on 8080 and 8081 (TCP)
 * and 53 and 54 (UDP), so a refusal is retroflect's, not a closed port.
 *
 * Timing: a refused client must fail with "connection refused" (the reset / ICMP error the engine injects), never by
 * waiting. The clients' guard timers only end a hung client; the assertions are on the error kind.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createTopology, JsonLines, type NetNs, type Topology } from '../helpers/netns.ts';
import { privateDir, removeDir, startEngine, type EngineHandle } from '../helpers/engine.ts';
import { backendArgs, LINUX_TEST_BACKENDS } from '../helpers/backends.ts';

const PEERS = 'test/e2e/fixtures/allowed-peers.ts';
const node = process.execPath;
const R4 = '203.0.113.40';
const R6 = '2001:db8:ffff::40';
/** Ends a client that hangs; far longer than a refusal takes. Never the thing measured. */
const GUARD_MS = '5000';

async function peer(ns: NetNs, args: string[]): Promise<Record<string, unknown>> {
  const r = await ns.run(node, ['--import', 'tsx', PEERS, ...args]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

async function curl(ns: NetNs, url: string): Promise<{ code: number; body: string; stderr: string }> {
  const r = await ns.run('curl', ['-sS', '-g', '--max-time', '5', url]);
  return { code: r.code, body: r.stdout, stderr: r.stderr };
}

for (const backend of LINUX_TEST_BACKENDS)
describe(`allowed ports (Linux, real engine, ${backend})`, { timeout: 600_000 }, () => {
  let t: Topology;
  let dir: string;
  let config: string;
  let engine: EngineHandle | undefined;

  before(async () => {
    t = await createTopology('allow');
    dir = privateDir('allow');
    config = join(dir, 'config.json');
    const servers = new JsonLines(t.a.spawn(node, ['--import', 'tsx', PEERS, 'serve', '8080,8081', '53,54', '0']));
    await servers.next((o) => o.ready === true);
    engine = await startEngine(t.a, dir, { config, timeoutMs: 90_000, args: backendArgs(backend) });
  });

  after(async () => {
    await engine?.kill();
    await t?.destroy();
    removeDir(dir);
  });

  test('address add --ports: applied, persisted (schema 3), shown by address list and status', async () => {
    const add = await engine!.cli(['address', 'add', R4, R6, '--ports', '8080,53/udp']);
    assert.equal(add.code, 0, add.stderr);
    assert.deepEqual(add.json.allow, [
      { address: R4, ports: [{ port: 8080, protocol: 'tcp' }, { port: 8080, protocol: 'udp' }, { port: 53, protocol: 'udp' }] },
      { address: R6, ports: [{ port: 8080, protocol: 'tcp' }, { port: 8080, protocol: 'udp' }, { port: 53, protocol: 'udp' }] },
    ]);
    const list = await engine!.cli(['address', 'list']);
    assert.deepEqual(list.json.addresses.find((a: { address: string }) => a.address === R4).allow.ports.length, 3);
    assert.equal((await engine!.cli(['status'])).json.allow.length, 2);
    const file = JSON.parse(readFileSync(config, 'utf8'));
    assert.equal(file.schemaVersion, 3);
    assert.deepEqual(file.reflectAddresses.find((a: { address?: string }) => a.address === R4), { address: R4, ports: ['8080/tcp', '8080/udp', '53/udp'] });

    const bad = await engine!.cli(['address', 'add', R4, '--ports', '8080,70000']);
    assert.equal(bad.code, 4, bad.stdout + bad.stderr);
    assert.match(bad.stdout + bad.stderr, /E_INVALID_PORT/);
    assert.deepEqual(JSON.parse(readFileSync(config, 'utf8')), file, 'a refused list changes nothing');
  });

  test('TCP: R:8080 works; R:8081 is refused at once with a reset (ECONNREFUSED), IPv4 and IPv6', async () => {
    for (const host of [R4, R6]) {
      const ok = await curl(t.a, `http://${host.includes(':') ? `[${host}]` : host}:8080/`);
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(ok.body, `server=8080 peer=${host}`);
      const refused = await peer(t.a, ['connect', host, '8081', GUARD_MS]);
      assert.equal(refused.error, 'ECONNREFUSED', `${host}: ${JSON.stringify(refused)}`);
    }
    const c = await curl(t.a, `http://${R4}:8081/`);
    assert.equal(c.code, 7, 'curl: failed to connect');
    assert.match(c.stderr, /Connection refused|Couldn't connect to server/, 'refused (this curl words ECONNREFUSED so), not timed out');
    const stats = (await engine!.cli(['stats'])).json;
    assert.ok(stats.notAllowed.packets >= 3, JSON.stringify(stats.notAllowed));
    assert.ok(stats.byAddress.find((a: { address: string }) => a.address === R4).notAllowed.packets >= 2);
  });

  test('UDP: R:53 answers; R:54 gets ICMP port unreachable (ECONNREFUSED), IPv4 and IPv6', async () => {
    for (const host of [R4, R6]) {
      assert.deepEqual(await peer(t.a, ['udp', host, '53', GUARD_MS]).then((r) => [r.ok, r.reply]), [true, `server=53 peer=${host}`]);
      const refused = await peer(t.a, ['udp', host, '54', GUARD_MS]);
      assert.equal(refused.error, 'ECONNREFUSED', `${host}: ${JSON.stringify(refused)}`);
    }
  });

  test('trace shows the refused SYN with the verdict notAllowed', async () => {
    const trace = new JsonLines(t.a.spawn(node, ['--import', 'tsx', 'src/cli/main.ts', 'trace', '--json', '--verdict', 'notAllowed', '--count', '1', '--pipe', engine!.pipe]));
    // The capture opens when the engine has the request, which a loaded machine may take a while to send: refused
    // connects are made until the trace shows one.
    let seen = false;
    const knocking = (async () => {
      while (!seen) await peer(t.a, ['connect', R4, '8081', GUARD_MS]);
    })();
    const line = await trace.next((o) => typeof o.verdict === 'string', 90_000).finally(() => (seen = true));
    await knocking;
    assert.equal(line.verdict, 'notAllowed');
    assert.equal(line.protocol, 'tcp');
  });

  test('a live change under traffic: 8081 allowed, 8080 refused; then --ports all lifts the list', async () => {
    let stop = false;
    let errors = 0;
    const traffic = (async () => {
      while (!stop) {
        const r = await peer(t.a, ['udp', R4, '53', GUARD_MS]);
        if (r.ok !== true) errors++;
      }
    })();
    const change = await engine!.cli(['address', 'add', R4, '--ports', '8081/tcp,53/udp']);
    assert.equal(change.code, 0, change.stderr);
    assert.equal((await peer(t.a, ['connect', R4, '8081', GUARD_MS])).ok, true);
    assert.equal((await peer(t.a, ['connect', R4, '8080', GUARD_MS])).error, 'ECONNREFUSED');
    stop = true;
    await traffic;
    assert.equal(errors, 0, 'UDP to the port allowed throughout kept working during the change');
    const lift = await engine!.cli(['address', 'add', R4, '--ports', 'all']);
    assert.equal(lift.code, 0, lift.stderr);
    assert.equal((await peer(t.a, ['connect', R4, '8080', GUARD_MS])).ok, true);
    assert.equal((await peer(t.a, ['udp', R4, '54', GUARD_MS])).ok, true);
    assert.ok(JSON.parse(readFileSync(config, 'utf8')).reflectAddresses.includes(R4), 'no list left: a plain address in the file');
  });

  test('the lists survive a restart from the config file', async () => {
    engine!.child.kill('SIGTERM');
    assert.equal(await engine!.exited, 0, engine!.output());
    engine = await startEngine(t.a, dir, { config, timeoutMs: 90_000, args: backendArgs(backend) });
    assert.equal((await peer(t.a, ['connect', R6, '8081', GUARD_MS])).error, 'ECONNREFUSED');
    assert.equal((await peer(t.a, ['connect', R6, '8080', GUARD_MS])).ok, true);
  });
});
