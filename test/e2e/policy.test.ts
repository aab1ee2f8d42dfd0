/**
 * Managed policy and desired state end to end on Linux: the real `retroflect run` in namespace "a" (test/helpers),
 * reading a policy file given with --policy, driven by the real CLI. A policy address reflects real traffic (with
 * its port map) and a policy shield port drops real packets from "b"; both show with source Policy; removing them
 * through the CLI is refused with E_MANAGED_BY_POLICY (exit 9); editing the file changes the live engine within 5 s
 * (polled); a broken file is reported in `status` and the log, and the rest is still served. `address set` /
 * `shield set` reach exactly the wanted lists from several starting states, and --what-if changes nothing.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createTopology, JsonLines, type NetNs, type Topology } from '../helpers/netns.ts';
import { privateDir, removeDir, startEngine, type EngineHandle } from '../helpers/engine.ts';
import { ControlClient } from '../../src/control/client.ts';
import type { MethodResults } from '../../src/control/protocol.ts';

const node = process.execPath;
const PROBE = 'test/fixtures/probe.ts';
const DEVICE = 'rflct0';
/** Servers in "a": 8081 answers "peer=<address it sees>"; 9000 is the port policy shields. */
const PEER_TCP = 8081;
const SHIELDED_TCP = 9000;
/** The limit the issue sets for a policy edit to reach the running engine. */
const LIVE_WITHIN_MS = 5000;

async function probe(ns: NetNs, host: string, port: number): Promise<{ ok: boolean; reply?: string }> {
  const r = await ns.run(node, ['--import', 'tsx', PROBE, 'tcp', host, String(port), '2000']);
  assert.equal(r.code, 0, r.stderr);
  const { ok, reply } = JSON.parse(r.stdout) as { ok: boolean; reply?: string };
  return reply === undefined ? { ok } : { ok, reply };
}

/** Ask the running engine directly over its socket (fast enough to time; the CLI is checked elsewhere). */
async function ask<M extends 'address.list' | 'status'>(pipe: string, method: M): Promise<MethodResults[M]> {
  const client = await ControlClient.connect({ pipe });
  try {
    return await client.call(method, {});
  } finally {
    client.close();
  }
}

async function liveSources(pipe: string): Promise<string[]> {
  return (await ask(pipe, 'address.list')).addresses.map((a) => `${a.address} ${a.source}`);
}

/** Poll `check` until true; returns how long it took, fails when that is over `limitMs` (polled, never a sleep). */
async function within(what: string, limitMs: number, check: () => Promise<boolean>): Promise<number> {
  const start = Date.now();
  while (!(await check())) {
    if (Date.now() - start > limitMs) assert.fail(`${what}: not within ${limitMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const took = Date.now() - start;
  assert.ok(took <= limitMs, `${what}: took ${took} ms, over ${limitMs} ms`);
  return took;
}

describe('managed policy and desired state (Linux, real engine)', { timeout: 600_000 }, () => {
  let t: Topology;
  let dir: string;
  let engine: EngineHandle | undefined;
  let policyPath: string;
  let configPath: string;
  const sources = async (what: 'address' | 'shield'): Promise<string[]> => {
    const r = await engine!.cli([what, 'list']);
    assert.equal(r.code, 0, r.stderr);
    return what === 'address'
      ? r.json.addresses.map((a: { address: string; source: string }) => `${a.address} ${a.source}`)
      : r.json.ports.map((p: { port: number; protocol: string; source: string }) => `${p.port}/${p.protocol} ${p.source}`);
  };

  before(async () => {
    t = await createTopology('pol');
    dir = privateDir('pol');
    policyPath = join(dir, 'policy.json');
    configPath = join(dir, 'config.json');
    writeFileSync(policyPath, JSON.stringify({ schemaVersion: 2, reflectAddresses: [{ address: '192.0.2.60', portMaps: ['80=8081/tcp'] }], shieldPorts: [`${SHIELDED_TCP}/tcp`] }));
    writeFileSync(configPath, JSON.stringify({ schemaVersion: 1, reflectAddresses: ['192.0.2.1'], shieldPorts: [] }));
    const servers = new JsonLines(t.a.spawn(node, ['--import', 'tsx', PROBE, 'serve', `${PEER_TCP},${SHIELDED_TCP}`, '5354']));
    await servers.next((o) => o.ready === true);
    engine = await startEngine(t.a, dir, { config: configPath, args: ['--policy', policyPath, '--device', DEVICE] });
  });

  after(async () => {
    await engine?.kill();
    await t?.destroy();
    removeDir(dir);
  });

  test('policy entries are in force at start, with source Policy, on real packets', async () => {
    assert.deepEqual(await sources('address'), ['192.0.2.1 Config', '192.0.2.60 Policy']);
    assert.deepEqual(await sources('shield'), [`${SHIELDED_TCP}/tcp Policy`]);
    const status = await engine!.cli(['status']);
    assert.equal(status.json.policy.state, 'applied');
    assert.equal(status.json.policy.origin, policyPath);
    // The policy address reflects, through its port map: R:80 reaches the local server on 8081, which sees R.
    assert.deepEqual(await probe(t.a, '192.0.2.60', 80), { ok: true, reply: 'peer=192.0.2.60' });
    // The policy shield port keeps "b" out; the unshielded server next to it answers.
    assert.equal((await probe(t.b, t.a4, SHIELDED_TCP)).ok, false);
    assert.equal((await probe(t.b, t.a4, PEER_TCP)).ok, true);
    const human = await engine!.cli(['status']);
    assert.ok(human.json.addressSources.some((a: { address: string; source: string }) => a.address === '192.0.2.60' && a.source === 'Policy'));
  });

  test('removing or re-mapping policy entries through the CLI is refused with E_MANAGED_BY_POLICY (exit 9), nothing changes', async () => {
    for (const args of [['address', 'remove', '192.0.2.60'], ['address', 'remove', '192.0.2.60', '--map', '80'], ['shield', 'remove', `${SHIELDED_TCP}/tcp`]]) {
      const r = await engine!.cli(args);
      assert.equal(r.code, 9, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
      assert.equal(r.json?.error?.code, 'E_MANAGED_BY_POLICY', r.stdout);
    }
    assert.deepEqual(await sources('address'), ['192.0.2.1 Config', '192.0.2.60 Policy']);
    assert.equal((await probe(t.b, t.a4, SHIELDED_TCP)).ok, false, 'still shielded');
  });

  test('an edited policy file changes the live engine within 5 s; a broken one is reported and the rest still served', async (tt) => {
    writeFileSync(policyPath, JSON.stringify({ schemaVersion: 1, reflectAddresses: ['192.0.2.61'], shieldPorts: ['9001/tcp'] }));
    const ms = await within('the edited policy in force', LIVE_WITHIN_MS, async () => (await liveSources(engine!.pipe)).includes('192.0.2.61 Policy'));
    tt.diagnostic(`policy edit live after ${ms} ms`);
    assert.deepEqual(await sources('address'), ['192.0.2.1 Config', '192.0.2.61 Policy']);
    assert.deepEqual(await sources('shield'), ['9001/tcp Policy']);
    assert.deepEqual(await probe(t.a, '192.0.2.61', PEER_TCP), { ok: true, reply: 'peer=192.0.2.61' });
    assert.equal((await probe(t.b, t.a4, SHIELDED_TCP)).ok, true, 'the old policy port is open again');

    writeFileSync(policyPath, '{ "schemaVersion": 1, "reflectAddresses": ["192.0.2.62" ');
    await within('the broken policy reported', LIVE_WITHIN_MS, async () => (await ask(engine!.pipe, 'status')).policy.state === 'invalid');
    const status = await engine!.cli(['status']);
    assert.match(status.json.policy.problems[0].message, /Policy file .*policy\.json is invalid: .*line 1/);
    assert.match(engine!.output(), /policy: Policy file .* is invalid/);
    assert.deepEqual(status.json.reflectAddresses, ['192.0.2.1', '192.0.2.61'], 'the last valid policy stays in force');
    assert.deepEqual(await probe(t.a, '192.0.2.1', PEER_TCP), { ok: true, reply: 'peer=192.0.2.1' });
    assert.equal((await engine!.cli(['address', 'add', '192.0.2.2'])).code, 0, 'changes still work');
    writeFileSync(policyPath, JSON.stringify({ schemaVersion: 1, reflectAddresses: ['192.0.2.61'], shieldPorts: ['9001/tcp'] }));
    await within('the fixed policy in force', LIVE_WITHIN_MS, async () => (await ask(engine!.pipe, 'status')).policy.state === 'applied');
  });

  test('address set / shield set reach exactly the wanted lists from several starting states; --what-if changes nothing', async () => {
    const mine = async () => (await sources('address')).filter((s) => !s.endsWith('Policy')).map((s) => s.split(' ')[0]).sort();
    const saved = () => JSON.parse(readFileSync(configPath, 'utf8'));
    const starts: [string, string[]][] = [
      ['extra and temporary entries', ['address', 'add', '192.0.2.3', '192.0.2.4']],
      ['a temporary entry', ['address', 'add', '192.0.2.5', '--temporary']],
      ['a persisted entry taken off the engine', ['address', 'remove', '192.0.2.10', '--temporary', '--skip-missing']],
    ];
    for (const [state, change] of starts) {
      const changed = await engine!.cli(change);
      assert.equal(changed.code, 0, `${state}: ${changed.stdout}${changed.stderr}`);
      const before = await mine();
      const whatIf = await engine!.cli(['address', 'set', '192.0.2.10', '192.0.2.11,80=8081/tcp', '192.0.2.61', '--what-if']);
      assert.equal(whatIf.code, 0, whatIf.stderr);
      assert.equal(whatIf.json.whatIf, true);
      assert.deepEqual(await mine(), before, `${state}: --what-if changed nothing`);
      const r = await engine!.cli(['address', 'set', '192.0.2.10', '192.0.2.11,80=8081/tcp', '192.0.2.61']);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual({ ...r.json, whatIf: true }, whatIf.json, `${state}: did what --what-if said`);
      assert.deepEqual(r.json.policy, ['192.0.2.61']);
      assert.deepEqual(await mine(), ['192.0.2.10', '192.0.2.11'], state);
      assert.deepEqual(saved().reflectAddresses, ['192.0.2.10', { address: '192.0.2.11', portMaps: ['80=8081/tcp'] }], state);
      const again = await engine!.cli(['address', 'set', '192.0.2.10', '192.0.2.11,80=8081/tcp', '192.0.2.61']);
      assert.deepEqual([again.json.added, again.json.removed, again.json.portMapsAdded, again.json.portMapsRemoved], [[], [], [], []], `${state}: idempotent`);
    }
    assert.deepEqual(await probe(t.a, '192.0.2.11', 80), { ok: true, reply: 'peer=192.0.2.11' }, 'the wanted map is live');
    assert.equal((await engine!.cli(['address', 'set'])).code, 2, 'an empty list needs --none');
    assert.equal((await engine!.cli(['address', 'set', '--none'])).code, 0);
    assert.deepEqual(await sources('address'), ['192.0.2.61 Policy']);

    assert.equal((await engine!.cli(['shield', 'add', '7000/udp'])).code, 0);
    const ports = await engine!.cli(['shield', 'set', '8080/tcp', '9001/tcp']);
    assert.deepEqual(ports.json.added, [{ port: 8080, protocol: 'tcp' }]);
    assert.deepEqual(ports.json.removed, [{ port: 7000, protocol: 'udp' }]);
    assert.deepEqual(ports.json.policy, [{ port: 9001, protocol: 'tcp' }]);
    assert.deepEqual(await sources('shield'), ['9001/tcp Policy', '8080/tcp Config']);
  });

  test('lockChanges in the policy file refuses every pipe change (E_MANAGED_BY_POLICY, exit 9) within 5 s; ' +
    'lifted, changes work again', async (tt) => {
    const locked = async () => (await ask(engine!.pipe, 'status')).policy.lockChanges;
    assert.equal((await engine!.cli(['address', 'add', '192.0.2.12', '--map', '80=8081/tcp'])).code, 0);
    const unlocked = { schemaVersion: 1, reflectAddresses: ['192.0.2.61'], shieldPorts: ['9001/tcp'] };
    writeFileSync(policyPath, JSON.stringify({ ...unlocked, lockChanges: true }));
    const ms = await within('the lock in force', LIVE_WITHIN_MS, locked);
    tt.diagnostic(`policy lock live after ${ms} ms`);
    const state = async () => [await sources('address'), await sources('shield'), readFileSync(configPath, 'utf8')];
    // A hand edit of the config file made while locked is not applied on the side by a refused request.
    const edited = JSON.parse(readFileSync(configPath, 'utf8'));
    edited.shieldPorts.push('7002/tcp');
    writeFileSync(configPath, JSON.stringify(edited, null, 2));
    const before = await state();
    const refused = [['address', 'add', '192.0.2.20'], ['address', 'add', '192.0.2.20', '--temporary'],
      ['address', 'add', '192.0.2.12', '--map', '81=8081/tcp'], ['address', 'remove', '192.0.2.12', '--map', '80'],
      ['address', 'remove', '192.0.2.12'], ['address', 'set', '--none'], ['shield', 'add', '7001/tcp'],
      ['shield', 'remove', '8080/tcp'], ['shield', 'set', '--none']];
    for (const args of refused) {
      const r = await engine!.cli(args);
      assert.equal(r.code, 9, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
      assert.equal(r.json?.error?.code, 'E_MANAGED_BY_POLICY', r.stdout);
      assert.equal(r.json.error.details.locked, true, r.stdout);
      assert.match(r.json.error.message, /configuration is locked by managed policy/);
    }
    assert.deepEqual(await state(), before, 'nothing changed, running or saved');
    assert.deepEqual(await probe(t.a, '192.0.2.12', 80), { ok: true, reply: 'peer=192.0.2.12' },
      'what was configured is still served');
    const plan = await engine!.cli(['address', 'set', '--none', '--what-if']);
    assert.equal(plan.code, 0, `a what-if plan changes nothing and is still answered: ${plan.stderr}`);
    writeFileSync(policyPath, JSON.stringify(unlocked));
    await within('the lock lifted', LIVE_WITHIN_MS, async () => !(await locked()));
    assert.equal((await engine!.cli(['shield', 'add', '7001/tcp'])).code, 0, 'changes work again');
    assert.deepEqual(await sources('shield'),
      ['9001/tcp Policy', '8080/tcp Config', '7002/tcp Config', '7001/tcp Config'],
      'the hand edit made while locked is applied with the first change after the lock');
  });
});
