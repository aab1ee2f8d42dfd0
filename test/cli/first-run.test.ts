/**
 * A newcomer's first run, on a host whose own network is 192.0.2.0/24 (as our build machines are), inside a
 * namespace made here: the README's old main command (`run --reflect 192.0.2.1`) is refused, and the refusal names
 * a concrete address that works; plain `retroflect run` picks that address itself, persists it, prints it, and
 * reflects through it; `address test` is the CLI twin of Test-ReflectAddress.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { JsonLines, must, NetNs, waitFor } from '../helpers/netns.ts';
import { privateDir, removeDir, retroflect, startEngine, type EngineHandle } from '../helpers/engine.ts';

const PROBE = 'test/fixtures/probe.ts';
const node = process.execPath;

describe('first run on a host in 192.0.2.0/24', { timeout: 120_000 }, () => {
  let host: NetNs;
  let router: NetNs;
  let dir: string;
  let engine: EngineHandle | undefined;

  before(async () => {
    host = await NetNs.create('1st');
    router = await NetNs.create('1st');
    await must('ip', ['link', 'add', 'eth0', 'netns', host.name, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', router.name]);
    await host.must('ip', ['addr', 'add', '192.0.2.10/24', 'dev', 'eth0']);
    await router.must('ip', ['addr', 'add', '192.0.2.1/24', 'dev', 'eth0']);
    await host.must('ip', ['link', 'set', 'eth0', 'up']);
    await router.must('ip', ['link', 'set', 'eth0', 'up']);
    await waitFor('eth0 up', async () => (await host.ipJson<{ operstate: string }[]>(['link', 'show', 'dev', 'eth0']))[0]?.operstate === 'UP');
    await host.must('ip', ['route', 'add', 'default', 'via', '192.0.2.1']);
    dir = privateDir('1st');
  });

  after(async () => {
    await engine?.kill();
    await host?.destroy();
    await router?.destroy();
    removeDir(dir);
  });

  test('run --reflect 192.0.2.1 is refused (local subnet) and the hint names a usable address', async () => {
    const r = await retroflect(host, ['run', '--no-config', '--reflect', '192.0.2.1', '--pipe', join(dir, 'refused.sock')]);
    assert.equal(r.code, 4, r.stdout + r.stderr);
    assert.match(r.stderr, /192\.0\.2\.0\/24/);
    assert.match(r.stderr, /Use 198\.51\.100\.1 instead/);
  });

  test('plain run picks 198.51.100.1, saves it, prints it, and reflects through it', async () => {
    const config = join(dir, 'config.json');
    const servers = new JsonLines(host.spawn(node, ['--import', 'tsx', PROBE, 'serve', '8080', '']));
    await servers.next((o) => o.ready === true);
    engine = await startEngine(host, dir, { config });
    assert.match(engine.output(), /No reflect address configured: using 198\.51\.100\.1 \(saved to /);
    assert.deepEqual(JSON.parse(readFileSync(config, 'utf8')).reflectAddresses, ['198.51.100.1']);
    const status = await engine.cli(['status']);
    assert.deepEqual(status.json.reflectAddresses, ['198.51.100.1']);
    const p = await host.run(node, ['--import', 'tsx', PROBE, 'tcp', '198.51.100.1', '8080', '3000']);
    const reply = JSON.parse(p.stdout) as { ok: boolean; reply: string };
    assert.equal(reply.ok, true, p.stdout);
    assert.equal(reply.reply, 'peer=198.51.100.1', 'the server sees the client as the reflect address');
  });

  test('address test: exit 4 with a suggestion for an unusable address, exit 0 for the picked one', async () => {
    assert.ok(engine, 'the engine of the previous test runs');
    const bad = await engine.cli(['address', 'test', '192.0.2.1']);
    assert.equal(bad.code, 4, bad.stderr);
    assert.equal(bad.json[0].valid, false);
    assert.equal(bad.json[0].reasons[0].rule, 'local-subnet');
    assert.equal(bad.json[0].suggestion.address, '203.0.113.1', 'the suggestion skips the configured 198.51.100.1');
    const good = await engine.cli(['address', 'test', '198.51.100.1']);
    assert.equal(good.code, 0, good.stderr);
    assert.equal(good.json[0].valid, true);
    assert.equal(good.json[0].configured, true);
    const human = await retroflect(host, ['address', 'test', 'not-an-ip', '--pipe', engine.pipe]);
    assert.equal(human.code, 4);
    assert.match(human.stdout, /not usable/);
  });

  test('--no-config means exactly the command line: nothing is picked', async () => {
    const r = await retroflect(host, ['run', '--no-config', '--shield', '8080', '--dry-run', '--pipe', join(dir, 'dry.sock')]);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout, /No reflect address configured/);
    assert.doesNotMatch(r.stdout, /198\.51\.100\.1/);
  });

  test('a restart uses the persisted address and picks nothing new', async () => {
    assert.ok(engine);
    await engine.cli(['stop']);
    assert.equal(await engine.exited, 0);
    engine = await startEngine(host, dir, { config: join(dir, 'config.json') });
    assert.doesNotMatch(engine.output(), /No reflect address configured/);
    assert.deepEqual((await engine.cli(['status'])).json.reflectAddresses, ['198.51.100.1']);
  });
});
