/**
 * Who may use a reflect address, end to end on Linux: users, groups and cgroups enforced by the engine's nft table on
 * the output path, and flows that name the process and user behind them. The real `retroflect run` in a namespace;
 * clients run as other users (`setpriv`) and in other cgroups (a cgroup v2 directory made for the test).
 *
 * `ip netns exec` gives each process a fresh /sys without the cgroup mount, so the engine (whose nft resolves cgroup
 * paths under /sys/fs/cgroup, as on a systemd host) and the clients mount the cgroup v2 hierarchy there first, in
 * their own mount namespace. Both Linux backends run the suite: the rules match on the output hook, before the
 * packet is routed into the TUN device or the ebpf backend's veth. The guard timers of the clients only end a hung
 * client; assertions are on the error kind.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createTopology, JsonLines, type NetNs, type Topology } from '../helpers/netns.ts';
import { privateDir, removeDir, startEngine, type EngineHandle } from '../helpers/engine.ts';
import { backendArgs, LINUX_TEST_BACKENDS } from '../helpers/backends.ts';

const PEERS = 'test/e2e/fixtures/allowed-peers.ts';
const node = process.execPath;
const R4 = '203.0.113.50';
const R6 = '2001:db8:ffff::50';
const GUARD_MS = '5000';
const NOBODY = 65534;
const STRANGER = 4343;
const TEAM_GID = 5151;
const MOUNT_CGROUP2 = 'mount -t cgroup2 cgroup2 /sys/fs/cgroup';

/** Where the host has the cgroup v2 hierarchy (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid host). */
function cgroup2Mount(): string {
  const line = readFileSync('/proc/self/mounts', 'utf8').split('\n').find((l) => l.split(' ')[2] === 'cgroup2');
  assert.ok(line, 'a cgroup v2 hierarchy is mounted');
  return line.split(' ')[1];
}

interface As {
  uid?: number;
  gid?: number;
  cgroup?: string;
}

/** `sh` arguments that run `argv` as uid/gid (no supplementary groups), in `cgroup` (a path below the v2 root). */
function asArgs(who: As, argv: string[]): string[] {
  const setpriv = who.uid === undefined ? [] : ['setpriv', `--reuid=${who.uid}`, `--regid=${who.gid ?? who.uid}`, '--clear-groups'];
  const join = who.cgroup ? ` && echo $$ > /sys/fs/cgroup/${who.cgroup}/cgroup.procs` : '';
  return ['-c', `${MOUNT_CGROUP2}${join} && exec "$@"`, 'sh', ...setpriv, ...argv];
}

/** Run `argv` in the namespace as `who`, to its end. */
function runAs(ns: NetNs, who: As, argv: string[]) {
  return ns.run('sh', asArgs(who, argv));
}

async function curl(ns: NetNs, who: As, url: string): Promise<{ code: number; body: string; stderr: string }> {
  const r = await runAs(ns, who, ['curl', '-sS', '-g', '--max-time', '5', url]);
  return { code: r.code, body: r.stdout, stderr: r.stderr };
}

async function udp(ns: NetNs, who: As, host: string, port: string): Promise<Record<string, unknown>> {
  const r = await runAs(ns, who, [node, '--import', 'tsx', PEERS, 'udp', host, port, GUARD_MS]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

const CURL_REFUSED = 7; // curl: failed to connect
/** How long the slow server (port 8090) holds a connection before it answers: the flows test looks at the open flow
 *  twice (JSON, then the human table, each a CLI start that takes seconds on a loaded machine) within this time, then
 *  ends its client. */
const SLOW_HOLD_MS = 120_000;

for (const backend of LINUX_TEST_BACKENDS)
describe(`allowed users, groups and cgroups (Linux, real engine, ${backend})`, { timeout: 600_000 }, () => {
  let t: Topology;
  let dir: string;
  let config: string;
  let engine: EngineHandle | undefined;
  const cgroupRoot = cgroup2Mount();
  const allowedCgroup = `retroflect-allow-${backend}-${process.pid}`;
  const otherCgroup = `retroflect-other-${backend}-${process.pid}`;
  const start = () =>
    startEngine(t.a, dir, {
      config,
      timeoutMs: 90_000,
      args: backendArgs(backend),
      prefix: ['sh', '-c', `${MOUNT_CGROUP2} && exec "$@"`, 'sh'],
    });

  before(async () => {
    for (const c of [allowedCgroup, otherCgroup]) mkdirSync(join(cgroupRoot, c));
    t = await createTopology('allwho');
    dir = privateDir('allwho');
    config = join(dir, 'config.json');
    for (const [tcp, udpPorts, slow] of [['8080', '53', '0'], ['8090', '', String(SLOW_HOLD_MS)]]) {
      const servers = new JsonLines(t.a.spawn(node, ['--import', 'tsx', PEERS, 'serve', tcp, udpPorts, slow]));
      await servers.next((o) => o.ready === true);
    }
    engine = await start();
  });

  after(async () => {
    await engine?.kill();
    await t?.destroy();
    removeDir(dir);
    for (const c of [allowedCgroup, otherCgroup]) {
      try {
        rmdirSync(join(cgroupRoot, c));
      } catch {
        // still busy for a moment after its last process: the kernel removes nothing by itself, so say so
        process.stderr.write(`could not remove cgroup ${c}\n`);
      }
    }
  });

  test('--users: the listed user (by name) gets through, another user is refused at once (TCP reset, UDP ICMP)', async () => {
    const add = await engine!.cli(['address', 'add', R4, R6, '--users', 'nobody']);
    assert.equal(add.code, 0, add.stdout + add.stderr);
    assert.deepEqual(add.json.allow[0], { address: R4, users: [NOBODY] }, 'the name is stored as its uid');
    for (const host of [R4, `[${R6}]`]) {
      const ok = await curl(t.a, { uid: NOBODY }, `http://${host}:8080/`);
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(ok.body, `server=8080 peer=${host.replace(/[[\]]/g, '')}`);
      const refused = await curl(t.a, { uid: STRANGER }, `http://${host}:8080/`);
      assert.equal(refused.code, CURL_REFUSED, refused.stderr);
      assert.match(refused.stderr, /Connection refused|Couldn't connect to server/);
    }
    assert.deepEqual(await udp(t.a, { uid: NOBODY }, R4, '53').then((r) => r.reply), `server=53 peer=${R4}`);
    assert.equal((await udp(t.a, { uid: STRANGER }, R4, '53')).error, 'ECONNREFUSED');
    const stats = (await engine!.cli(['stats'])).json;
    assert.equal((await engine!.cli(['status', '--json'])).json.backend, backend, 'the backend asked for runs');
    const r4 = stats.byAddress.find((a: { address: string }) => a.address === R4);
    assert.ok(r4.notAllowed.packets >= 2, JSON.stringify(r4));
    assert.ok(stats.notAllowed.packets >= 3, JSON.stringify(stats.notAllowed));
    const file = JSON.parse(readFileSync(config, 'utf8'));
    assert.deepEqual(file.reflectAddresses.find((a: { address?: string }) => a.address === R4), { address: R4, users: [NOBODY] });
  });

  test('--groups: a member of a listed group gets through (any one list suffices); changed live under traffic', async () => {
    let stop = false;
    let failures = 0;
    const traffic = (async () => {
      while (!stop) if ((await udp(t.a, { uid: NOBODY }, R4, '53')).ok !== true) failures++;
    })();
    const add = await engine!.cli(['address', 'add', R4, '--groups', String(TEAM_GID)]);
    assert.equal(add.code, 0, add.stdout + add.stderr);
    assert.equal((await curl(t.a, { uid: STRANGER, gid: TEAM_GID }, `http://${R4}:8080/`)).code, 0, 'the stranger in the team group');
    assert.equal((await curl(t.a, { uid: STRANGER, gid: STRANGER }, `http://${R4}:8080/`)).code, CURL_REFUSED);
    stop = true;
    await traffic;
    assert.equal(failures, 0, 'the allowed user kept working while the lists changed');
  });

  test('--cgroups: a program in the listed cgroup gets through, one in another cgroup is refused', async () => {
    const add = await engine!.cli(['address', 'add', R4, '--users', 'all', '--groups', 'all', '--cgroups', allowedCgroup]);
    assert.equal(add.code, 0, add.stdout + add.stderr);
    assert.deepEqual(add.json.allow[0], { address: R4, cgroups: [allowedCgroup] });
    assert.equal((await curl(t.a, { cgroup: allowedCgroup }, `http://${R4}:8080/`)).code, 0);
    assert.equal((await curl(t.a, { cgroup: otherCgroup }, `http://${R4}:8080/`)).code, CURL_REFUSED);
    assert.equal((await curl(t.a, {}, `http://${R4}:8080/`)).code, CURL_REFUSED, 'root outside the cgroup too');
  });

  test('refused without a change: a cgroup that does not exist, and --apps (Windows only)', async () => {
    const before = readFileSync(config, 'utf8');
    const missing = await engine!.cli(['address', 'add', R4, '--cgroups', 'no-such-unit.service']);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stdout + missing.stderr, /No cgroup no-such-unit\.service/);
    const apps = await engine!.cli(['address', 'add', R4, '--apps', 'C:\\Program Files\\App\\app.exe']);
    assert.notEqual(apps.code, 0);
    assert.match(apps.stdout + apps.stderr, /E_INVALID_PARAMS[\s\S]*Windows only|Windows only[\s\S]*E_INVALID_PARAMS/);
    assert.equal(readFileSync(config, 'utf8'), before);
  });

  test('flows name the process, its pid and its user', async () => {
    await engine!.cli(['address', 'add', R4, '--cgroups', 'all', '--users', 'nobody']);
    const slow = t.a.spawn('sh', asArgs({ uid: NOBODY }, ['curl', '-sS', `http://${R4}:8090/`]));
    const slowEnded = new Promise((resolve) => slow.once('exit', resolve));
    try {
      let flow: Record<string, unknown> | undefined;
      // The server holds the connection SLOW_HOLD_MS: ask until the flow shows (a loaded machine answers slowly).
      const deadline = Date.now() + 25_000;
      while (!flow?.pid && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 300));
        const flows = (await engine!.cli(['flows'])).json.flows as Record<string, unknown>[];
        flow = flows.find((f) => f.serverPort === 8090 && f.state === 'open');
      }
      assert.ok(flow, 'the flow is listed');
      assert.equal(flow.processName, 'curl');
      assert.equal(flow.uid, NOBODY);
      assert.equal(flow.user, 'nobody');
      assert.equal(typeof flow.pid, 'number');
      assert.equal(flow.packageFamilyName, null);
      const human = await t.a.run('env', ['NO_COLOR=1', node, '--import', 'tsx', 'src/cli/main.ts', 'flows', '--pipe', engine!.pipe]);
      assert.match(human.stdout, new RegExp(`curl \\(${flow.pid}\\)[^\\n]*nobody`), human.stdout);
    } finally {
      slow.kill(); // it only held the connection open
      await slowEnded;
    }
  });

  test('the lists survive a restart from the config file', async () => {
    engine!.child.kill('SIGTERM');
    assert.equal(await engine!.exited, 0, engine!.output());
    engine = await start();
    assert.equal((await curl(t.a, { uid: STRANGER }, `http://${R4}:8080/`)).code, CURL_REFUSED);
    assert.equal((await curl(t.a, { uid: NOBODY }, `http://${R4}:8080/`)).code, 0);
  });
});
