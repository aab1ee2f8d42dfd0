/**
 * The control plane with a managed policy and a config file edited by hand, over the real server and client (the
 * engine is the in-memory stand-in; test/e2e/policy.test.ts runs the real one): policy entries merged and shown
 * with their source, refused through the pipe, replaced live; address.set / shield.set from several starting
 * states; and issue 19 item 6, a hand edit of config.json while the engine runs is read back, not lost.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ConfigStore } from '../../src/config/config-store.ts';
import { FilePolicySource } from '../../src/config/policy.ts';
import { ControlClient } from '../../src/control/client.ts';
import { startControlServer } from '../../src/control/server.ts';
import { RetroflectError } from '../../src/errors.ts';
import { testAddressRules } from '../helpers/address-rules.ts';
import { InMemoryEngine } from '../helpers/in-memory-engine.ts';

const base = mkdtempSync(join(tmpdir(), 'rft-pol-'));
after(() => rmSync(base, { recursive: true, force: true }));
let n = 0;

async function setUp(policy: object | null, config: object | null) {
  const dir = join(base, `d${n++}`);
  mkdirSync(dir, { mode: 0o700 });
  const policyPath = join(dir, 'policy.json');
  const configPath = join(dir, 'config.json');
  if (policy) writeFileSync(policyPath, JSON.stringify(policy));
  if (config) writeFileSync(configPath, JSON.stringify(config));
  const store = ConfigStore.open(configPath);
  const engine = new InMemoryEngine(store.config);
  const logs: string[] = [];
  const server = await startControlServer({
    engine,
    pipeName: join(dir, 'ctl.sock'),
    configStore: store,
    addressRules: testAddressRules,
    policy: new FilePolicySource(policyPath),
    log: (m) => logs.push(m),
  });
  const client = await ControlClient.connect({ pipe: join(dir, 'ctl.sock') });
  const close = async () => {
    client.close();
    await server.close();
  };
  return { engine, client, close, logs, policyPath, configPath, saved: () => JSON.parse(readFileSync(configPath, 'utf8')) };
}

async function refusal(p: Promise<unknown>): Promise<RetroflectError> {
  try {
    await p;
  } catch (err) {
    return err as RetroflectError;
  }
  assert.fail('expected a refusal');
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) assert.fail(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('managed policy in the control plane', () => {
  it('merges policy entries, shows their source, refuses to remove or re-map them, and follows the file live', async () => {
    const s = await setUp(
      { schemaVersion: 2, reflectAddresses: [{ address: '198.51.100.7', portMaps: ['80=8080/tcp'] }], shieldPorts: [{ port: 9000, protocol: 'tcp' }] },
      { schemaVersion: 1, reflectAddresses: ['192.0.2.1'], shieldPorts: [] },
    );
    try {
      const list = await s.client.call('address.list', {});
      assert.deepEqual(list.addresses.map((a) => [a.address, a.source]), [['192.0.2.1', 'Config'], ['198.51.100.7', 'Policy']]);
      assert.deepEqual(list.addresses[1]!.portMaps, [{ protocol: 'tcp', port: 80, target: 8080 }]);
      const status = await s.client.call('status', {});
      assert.equal(status.policy.state, 'applied');
      assert.deepEqual(status.shieldSources, [{ port: 9000, protocol: 'tcp', source: 'Policy' }]);

      for (const [method, params] of [
        ['address.remove', { addresses: ['198.51.100.7'] }],
        ['address.remove', { addresses: ['198.51.100.7'], maps: ['80'] }],
        ['address.add', { addresses: ['198.51.100.7'], maps: ['81=8081'] }],
        ['shield.remove', { ports: ['9000/tcp'], skipMissing: true }],
      ] as const) {
        const err = await refusal(s.client.call(method, params as never));
        assert.equal(err.code, 'E_MANAGED_BY_POLICY', `${method} ${JSON.stringify(params)}`);
        assert.match(err.message, /set by managed policy/);
      }
      assert.deepEqual(s.engine.cfg.reflectAddresses, ['192.0.2.1', '198.51.100.7'], 'nothing changed');
      // Adding a policy address without maps is idempotent, not an error.
      assert.deepEqual((await s.client.call('address.add', { addresses: ['198.51.100.7'], temporary: true })).existing, ['198.51.100.7']);

      writeFileSync(s.policyPath, JSON.stringify({ schemaVersion: 1, reflectAddresses: ['198.51.100.8'], shieldPorts: ['53/udp'] }));
      await until('the new policy in force', async () => (await s.client.call('address.list', {})).addresses.some((a) => a.address === '198.51.100.8'));
      assert.deepEqual(s.engine.cfg.reflectAddresses, ['192.0.2.1', '198.51.100.8']);
      assert.deepEqual(s.engine.cfg.shieldPorts, [{ port: 53, protocol: 'udp' }]);
      assert.equal(s.engine.cfg.portMaps, undefined, 'the old policy address took its maps with it');

      writeFileSync(s.policyPath, '{ "schemaVersion": 1, "reflectAddresses": [');
      await until('the broken policy reported', async () => (await s.client.call('status', {})).policy.state === 'invalid');
      const broken = await s.client.call('status', {});
      assert.match(broken.policy.problems[0]!.message, /Policy file .* is invalid/);
      assert.deepEqual(broken.reflectAddresses, ['192.0.2.1', '198.51.100.8'], 'the last valid policy stays in force');
      assert.ok(s.logs.some((l) => /policy: .*is invalid/.test(l)), s.logs.join('\n'));
      assert.deepEqual((await s.client.call('address.add', { addresses: ['192.0.2.2'] })).added, ['192.0.2.2'], 'the engine still serves');

      rmSync(s.policyPath);
      await until('no policy', async () => (await s.client.call('status', {})).policy.state === 'none');
      assert.deepEqual(s.engine.cfg.reflectAddresses, ['192.0.2.1', '192.0.2.2']);
    } finally {
      await s.close();
    }
  });

  it('a policy entry also in the config file stays when policy drops it (it is the file\'s again)', async () => {
    const s = await setUp({ schemaVersion: 1, reflectAddresses: ['192.0.2.1'] }, { schemaVersion: 1, reflectAddresses: ['192.0.2.1'], shieldPorts: [] });
    try {
      assert.equal((await s.client.call('address.list', {})).addresses[0]!.source, 'Policy');
      writeFileSync(s.policyPath, JSON.stringify({ schemaVersion: 1 }));
      await until('policy gone', async () => (await s.client.call('address.list', {})).addresses[0]?.source === 'Config');
      assert.deepEqual(s.engine.cfg.reflectAddresses, ['192.0.2.1']);
    } finally {
      await s.close();
    }
  });
});

describe('address.set and shield.set', () => {
  it('reach exactly the wanted lists from several starting states, policy aside; whatIf changes nothing; idempotent', async () => {
    const s = await setUp(
      { schemaVersion: 1, reflectAddresses: ['198.51.100.7'], shieldPorts: ['9000/tcp'] },
      { schemaVersion: 2, reflectAddresses: ['192.0.2.1', { address: '192.0.2.2', portMaps: ['80=8080/tcp'] }], shieldPorts: [{ port: 7000, protocol: 'udp' }] },
    );
    try {
      await s.client.call('address.add', { addresses: ['192.0.2.9'], temporary: true });
      await s.client.call('address.remove', { addresses: ['192.0.2.1'], temporary: true });
      const wanted = { addresses: ['192.0.2.1', { address: '192.0.2.2', portMaps: ['81=8081/tcp'] }, '198.51.100.7', '192.0.2.3'] };
      const plan = await s.client.call('address.set', { ...wanted, whatIf: true });
      assert.equal(plan.whatIf, true);
      assert.deepEqual(plan.added, ['192.0.2.1', '192.0.2.3']);
      assert.deepEqual(plan.removed, ['192.0.2.9']);
      assert.deepEqual(plan.unchanged, ['192.0.2.2']);
      assert.deepEqual(plan.policy, ['198.51.100.7']);
      assert.deepEqual(plan.portMapsAdded, [{ address: '192.0.2.2', protocol: 'tcp', port: 81, target: 8081 }]);
      assert.deepEqual(plan.portMapsRemoved, [{ address: '192.0.2.2', protocol: 'tcp', port: 80, target: 8080 }]);
      assert.deepEqual(s.engine.cfg.reflectAddresses, ['192.0.2.2', '198.51.100.7', '192.0.2.9'], 'whatIf changed nothing');

      const done = await s.client.call('address.set', wanted);
      assert.deepEqual({ ...done, whatIf: true }, plan, 'the change is what whatIf said');
      assert.deepEqual([...s.engine.cfg.reflectAddresses].sort(), ['192.0.2.1', '192.0.2.2', '192.0.2.3', '198.51.100.7']);
      assert.deepEqual(s.saved().reflectAddresses, ['192.0.2.1', { address: '192.0.2.2', portMaps: ['81=8081/tcp'] }, '192.0.2.3']);
      const again = await s.client.call('address.set', wanted);
      assert.deepEqual([again.added, again.removed, again.portMapsAdded, again.portMapsRemoved], [[], [], [], []], 'idempotent');

      const none = await s.client.call('address.set', { addresses: [] });
      assert.deepEqual(none.removed.sort(), ['192.0.2.1', '192.0.2.2', '192.0.2.3']);
      assert.deepEqual(s.engine.cfg.reflectAddresses, ['198.51.100.7'], 'policy entries aside');

      const ports = await s.client.call('shield.set', { ports: ['8080', '9000/tcp'] });
      assert.deepEqual(ports.added, [{ port: 8080, protocol: 'tcp' }, { port: 8080, protocol: 'udp' }]);
      assert.deepEqual(ports.removed, [{ port: 7000, protocol: 'udp' }]);
      assert.deepEqual(ports.policy, [{ port: 9000, protocol: 'tcp' }]);
      assert.deepEqual(s.saved().shieldPorts, [{ port: 8080, protocol: 'tcp' }, { port: 8080, protocol: 'udp' }]);
      assert.deepEqual((await s.client.call('shield.set', { ports: ['8080'] })).added, []);
      const bad = await refusal(s.client.call('address.set', { addresses: ['192.0.2.1', '192.0.2.1'] }));
      assert.equal(bad.code, 'E_INVALID_PARAMS');
    } finally {
      await s.close();
    }
  });
});

describe('config.json edited by hand while the engine runs (issue 19 item 6)', () => {
  it('is read back and applied before the next change, which then lands on top of it; the log says so', async () => {
    const s = await setUp(null, { schemaVersion: 1, reflectAddresses: ['192.0.2.1'], shieldPorts: [] });
    try {
      writeFileSync(s.configPath, JSON.stringify({ schemaVersion: 1, reflectAddresses: ['192.0.2.1', '192.0.2.50'], shieldPorts: ['8443/tcp'] }));
      await s.client.call('address.add', { addresses: ['192.0.2.2'] });
      assert.deepEqual(s.saved().reflectAddresses, ['192.0.2.1', '192.0.2.50', '192.0.2.2'], 'the hand edit is kept in the file');
      assert.deepEqual(s.saved().shieldPorts, [{ port: 8443, protocol: 'tcp' }]);
      assert.deepEqual(s.engine.cfg.reflectAddresses, ['192.0.2.1', '192.0.2.50', '192.0.2.2'], 'and applied to the running engine');
      assert.ok(s.logs.some((l) => /changed outside retroflect/.test(l)), s.logs.join('\n'));

      // A hand edit that removes an entry removes it from the engine too.
      writeFileSync(s.configPath, JSON.stringify({ schemaVersion: 1, reflectAddresses: ['192.0.2.2'] }));
      await s.client.call('shield.add', { ports: ['9000/tcp'] });
      assert.deepEqual(s.engine.cfg.reflectAddresses, ['192.0.2.2']);
      assert.deepEqual(s.saved(), { schemaVersion: 1, reflectAddresses: ['192.0.2.2'], shieldPorts: [{ port: 9000, protocol: 'tcp' }] });

      // A broken hand edit refuses the change and leaves the file as the user left it.
      writeFileSync(s.configPath, '{ "schemaVersion": 1, ');
      const err = await refusal(s.client.call('address.add', { addresses: ['192.0.2.3'] }));
      assert.equal(err.code, 'E_CONFIG_INVALID');
      assert.equal(readFileSync(s.configPath, 'utf8'), '{ "schemaVersion": 1, ');
      assert.deepEqual(s.engine.cfg.reflectAddresses, ['192.0.2.2'], 'nothing changed');
    } finally {
      await s.close();
    }
  });
});
