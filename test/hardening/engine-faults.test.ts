/**
 * Issue 11 against the real `retroflect run` in a namespace (veth topology, documentation addresses only):
 * output errors never fatal (defect 1), signals at every phase with full cleanup (2), a second engine refused with
 * exit 8 before it touches anything (4), hung helpers killed and the change undone (6), orphan temp files removed at
 * start (7), a deleted nft table noticed and restored (10), an empty --config refused (11).
 */
import assert from 'node:assert/strict';
import { chmodSync, closeSync, existsSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { spawnSync } from 'node:child_process';
import { createTopology, waitFor, type NetNs, type Topology } from '../helpers/netns.ts';
import { engineDevice, engineLeftovers, privateDir, removeDir, retroflect, spawnEngine, startEngine, type EngineHandle, type StartOptions } from '../helpers/engine.ts';
import { backendArgs, LINUX_TEST_BACKENDS } from '../helpers/backends.ts';


async function tableExists(ns: NetNs): Promise<boolean> {
  return (await ns.run('nft', ['list', 'table', 'inet', 'retroflect'])).code === 0;
}

/** Wait until the engine answers on its pipe (for engines whose stdout we cannot read). */
async function waitServing(e: EngineHandle, timeoutMs = 30_000): Promise<void> {
  await waitFor('engine answering', async () => {
    if (!e.alive()) throw new Error(`engine exited (${await e.exited}): ${e.output()}`);
    return (await e.cli(['status'])).code === 0;
  }, timeoutMs);
}

for (const backend of LINUX_TEST_BACKENDS)
describe(`hardening: the real engine under faults (${backend})`, { timeout: 600_000 }, () => {
  let t: Topology;
  let dir: string;
  const engines: EngineHandle[] = [];
  let n = 0;
  // Every engine here runs on `backend`, whatever other arguments a test gives it.
  const withBackend = (opts: Partial<StartOptions>): Partial<StartOptions> => ({ ...opts, args: [...(opts.args ?? ['--reflect', '192.0.2.1', '--shield', '8080/tcp']), ...backendArgs(backend)] });
  const start = async (opts: Partial<StartOptions> = {}) => {
    const e = await startEngine(t.a, dir, { config: false, pipe: join(dir, `e${n++}.sock`), ...withBackend(opts) });
    engines.push(e);
    return e;
  };
  const spawn = (opts: Partial<StartOptions> = {}) => {
    const e = spawnEngine(t.a, dir, { config: false, pipe: join(dir, `e${n++}.sock`), ...withBackend(opts) });
    engines.push(e);
    return e;
  };
  const assertClean = async (e: EngineHandle) => assert.deepEqual(await engineLeftovers(t.a, e.pipe), [], e.output());

  before(async () => {
    t = await createTopology('hard');
    dir = privateDir('hard');
  });
  after(async () => {
    for (const e of engines) await e.kill();
    await t?.destroy();
    removeDir(dir);
  });

  describe('defect 1: output errors are never fatal', () => {
    test('stdout and stderr on /dev/full: the engine starts, serves, changes, and stops cleanly', async () => {
      const full = openSync('/dev/full', 'w');
      try {
        const e = spawn({ stdout: full, stderr: full });
        await waitServing(e);
        assert.equal((await e.cli(['shield', 'add', '9090/tcp'])).code, 0);
        e.child.kill('SIGTERM');
        assert.equal(await e.exited, 0);
        await assertClean(e);
      } finally {
        closeSync(full);
      }
    });

    test('stdout closed after the first line (run | head -1): still serving, and it stops cleanly', async () => {
      const e = spawn();
      await new Promise<void>((resolve) => e.child.stdout!.once('data', () => resolve()));
      e.child.stdout!.destroy();
      await waitServing(e);
      assert.equal((await e.cli(['address', 'add', '203.0.113.7', '--temporary'])).code, 0);
      e.child.kill('SIGINT'); // "Stopping (SIGINT)..." goes to the closed pipe
      assert.equal(await e.exited, 0);
      await assertClean(e);
    });
  });

  describe('defect 2: every stop signal, at every phase, ends in a full cleanup', () => {
    test('SIGTERM during start-up (the device exists, Ready not yet printed)', async () => {
      const e = spawn();
      await waitFor('device created', async () => (await t.a.run('ip', ['link', 'show', 'dev', engineDevice(backend)])).code === 0, 30_000);
      assert.doesNotMatch(e.output(), /^Ready\./m, 'too late: the engine was already ready');
      e.child.kill('SIGTERM');
      assert.equal(await e.exited, 0, e.output());
      await assertClean(e);
    });

    for (const sig of ['SIGQUIT', 'SIGHUP', 'SIGUSR2'] as const) {
      test(`${sig} while running`, async () => {
        const e = await start();
        e.child.kill(sig);
        assert.equal(await e.exited, 0, e.output());
        assert.match(e.output(), new RegExp(`Stopping \\(${sig}\\)`));
        await assertClean(e);
      });
    }

    test('a second SIGINT 5 ms after the first does not cut the cleanup short', async () => {
      const e = await start();
      e.child.kill('SIGINT');
      await new Promise((r) => setTimeout(r, 5));
      e.child.kill('SIGINT');
      assert.equal(await e.exited, 0, e.output());
      await assertClean(e);
    });

    test('signals every 5 ms during cleanup are ignored until it is done', async () => {
      const e = await start();
      e.child.kill('SIGTERM');
      const storm = setInterval(() => {
        for (const s of ['SIGTERM', 'SIGINT', 'SIGQUIT', 'SIGHUP'] as const) if (e.alive()) e.child.kill(s);
      }, 5);
      try {
        assert.equal(await e.exited, 0, e.output());
      } finally {
        clearInterval(storm);
      }
      await assertClean(e);
    });
  });

  test('defect 4: a second engine exits 8 before touching anything; the first keeps serving and shielding', async () => {
    const first = await start();
    for (const pipe of [join(dir, 'second.sock'), first.pipe]) {
      const second = spawn({ pipe });
      assert.equal(await second.exited, 8, second.output());
      assert.match(second.output(), /E_ALREADY_RUNNING/);
    }
    const status = await first.cli(['status']);
    assert.equal(status.code, 0);
    assert.deepEqual(status.json.shieldPorts, [{ port: 8080, protocol: 'tcp' }]);
    assert.ok(await tableExists(t.a));
    first.child.kill('SIGTERM');
    assert.equal(await first.exited, 0);
    await assertClean(first);
  });

  test('defect 6: a hung ip/nft is killed after the timeout, that change fails cleanly, later changes work', async () => {
    const bin = privateDir('bin');
    const hang = join(bin, 'hang');
    // Wrappers that hang (exec: the sleep itself is the helper, as a real hung helper would be) while `hang` exists.
    const realIp = spawnSync('sh', ['-c', 'command -v ip']).stdout.toString().trim();
    const realNft = spawnSync('sh', ['-c', 'command -v nft']).stdout.toString().trim();
    writeFileSync(join(bin, 'ip'), `#!/bin/sh\ncase "$*" in *203.0.113.99*) [ -e ${hang} ] && exec sleep 600;; esac\nexec ${realIp} "$@"\n`);
    writeFileSync(join(bin, 'nft'), `#!/bin/sh\ncase "$*" in -f*) [ -e ${hang}-nft ] && exec sleep 600;; esac\nexec ${realNft} "$@"\n`);
    chmodSync(join(bin, 'ip'), 0o755);
    chmodSync(join(bin, 'nft'), 0o755);
    try {
      const e = await start({ env: { PATH: `${bin}:${process.env.PATH}`, RETROFLECT_HELPER_TIMEOUT_MS: '1500' } });
      writeFileSync(hang, '');
      // Two addresses: the first route goes in, the second hangs → the first must be taken out again.
      const add = await e.cli(['address', 'add', '203.0.113.5', '203.0.113.99', '--temporary']);
      assert.equal(add.code, 5, JSON.stringify(add.json));
      assert.match(add.json.error.message, /did not finish within 1500 ms and was killed/);
      const routes = JSON.stringify(await t.a.ipJson(['route', 'show', 'dev', engineDevice(backend)]));
      assert.doesNotMatch(routes, /203\.0\.113\.5"/, 'route of the failed change left behind');
      assert.deepEqual((await e.cli(['status'])).json.reflectAddresses, ['192.0.2.1']);
      // nft hangs: the shield change fails, the set is as before, the engine still answers and changes.
      writeFileSync(`${hang}-nft`, '');
      const shield = await e.cli(['shield', 'add', '9000/tcp', '--temporary']);
      assert.equal(shield.code, 5, JSON.stringify(shield.json));
      rmSync(`${hang}-nft`);
      assert.doesNotMatch(await t.a.must('nft', ['list', 'set', 'inet', 'retroflect', 'shield_tcp']), /9000/);
      assert.equal((await e.cli(['shield', 'add', '9001/tcp', '--temporary'])).code, 0);
      rmSync(hang);
      assert.equal((await e.cli(['address', 'add', '203.0.113.99', '--temporary'])).code, 0);
      // A helper hung at stop delays the exit by one timeout, not for ever; the next start cleans what it left.
      writeFileSync(`${hang}-nft`, '');
      const t0 = Date.now();
      e.child.kill('SIGTERM');
      await e.exited;
      assert.ok(Date.now() - t0 < 15_000, `stop took ${Date.now() - t0} ms`);
      rmSync(`${hang}-nft`);
      const next = await start();
      next.child.kill('SIGTERM');
      assert.equal(await next.exited, 0);
      await assertClean(next);
    } finally {
      removeDir(bin);
    }
  });

  test('defects 7 and 10: orphan temp files go at start; a deleted nft table is noticed, restored and reported', async () => {
    const cfg = join(dir, 'config.json');
    writeFileSync(cfg, JSON.stringify({ schemaVersion: 1, reflectAddresses: ['192.0.2.1'], shieldPorts: [{ port: 8080, protocol: 'tcp' }] }));
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString();
    const orphan = join(dir, `.config.json.${dead}.deadbeef.tmp`);
    writeFileSync(orphan, '{"half');
    const e = await start({ config: cfg, args: [] });
    assert.ok(!existsSync(orphan), 'orphan temp file still there');
    // at a stats read
    await t.a.must('nft', ['delete', 'table', 'inet', 'retroflect']);
    const stats = await e.cli(['stats']);
    assert.equal(stats.code, 0);
    assert.ok(await tableExists(t.a), 'not restored at the stats read');
    const status = (await e.cli(['status'])).json;
    assert.equal(status.state, 'running');
    assert.equal(status.hostRepairs.count, 1);
    assert.match(status.hostRepairs.last.what, /table inet retroflect was deleted/);
    // at a change
    await t.a.must('nft', ['delete', 'table', 'inet', 'retroflect']);
    assert.equal((await e.cli(['shield', 'add', '8443/tcp'])).code, 0);
    const set = await t.a.must('nft', ['list', 'set', 'inet', 'retroflect', 'shield_tcp']);
    assert.match(set, /8080/);
    assert.match(set, /8443/);
    // by the periodic check, with no client asking; a deleted route too
    await t.a.must('nft', ['delete', 'table', 'inet', 'retroflect']);
    await t.a.must('ip', ['route', 'del', '192.0.2.1/32', 'dev', engineDevice(backend)]);
    await waitFor('periodic repair', async () => (await tableExists(t.a)) && JSON.stringify(await t.a.ipJson(['route', 'show', 'dev', engineDevice(backend)])).includes('192.0.2.1'), 15_000);
    assert.equal((await e.cli(['status'])).json.hostRepairs.count, 4);
    e.child.kill('SIGTERM');
    assert.equal(await e.exited, 0);
    await assertClean(e);
  });

  test('defect 11: --config "" and an empty RETROFLECT_CONFIG are refused (exit 2), not read as "no config"', async () => {
    const r1 = await retroflect(t.a, ['run', '--config', '', '--reflect', '192.0.2.1', '--pipe', join(dir, 'x.sock')]);
    assert.equal(r1.code, 2, r1.stderr);
    assert.match(r1.stderr, /names no config file.*E_USAGE/);
    const r2 = await t.a.run('env', ['RETROFLECT_CONFIG=', 'NO_COLOR=1', process.execPath, '--import', 'tsx', 'src/cli/main.ts', 'run', '--reflect', '192.0.2.1', '--pipe', join(dir, 'y.sock')]);
    assert.equal(r2.code, 2, r2.stderr);
    assert.match(r2.stderr, /RETROFLECT_CONFIG is set but empty/);
    assert.deepEqual(await engineLeftovers(t.a, join(dir, 'y.sock')), []);
  });
});
