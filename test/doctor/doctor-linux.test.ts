/**
 * `retroflect doctor` on Linux, for real: the CLI from source inside network namespaces (a host behind a router:
 * createTopology), with a real engine, real servers (node's net module) and the real kernel tables. A healthy host
 * passes; each broken condition makes its own check fail or warn with the right fix, and the exit code says so.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ControlClient } from '../../src/control/client.ts';
import { ExitCode } from '../../src/errors.ts';
import type { Check, DoctorReport } from '../../src/doctor/check.ts';
import { createTopology, type NetNs, type Topology } from '../helpers/netns.ts';
import { engineDevice, engineLeftovers, privateDir, removeDir, retroflect, startEngine, type EngineHandle }
  from '../helpers/engine.ts';

const R4 = '203.0.113.40';
const R6 = '2001:db8:ffff::40';
/** On the veth subnet of namespace a (198.51.100.0/24): refused as a reflect address. */
const ON_SUBNET = '198.51.100.50';

function writeConfig(path: string, addresses: (string | { address: string; portMaps: string[] })[],
  shield: { port: number; protocol: 'tcp' | 'udp' }[]): void {
  writeFileSync(path, JSON.stringify({ schemaVersion: 2, reflectAddresses: addresses, shieldPorts: shield }, null, 2));
}

/** A TCP server in `ns` on host:port; resolves once it listens. Killed with the namespace. */
async function serve(ns: NetNs, host: string, port: number): Promise<() => void> {
  const child = ns.spawn(process.execPath, ['-e',
    `require('net').createServer(c => c.end()).listen({ host: ${JSON.stringify(host)}, port: ${port} }, () => ` +
      `console.log('ready'))`]);
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`server ${host}:${port} exited (${code})`)));
  });
  return () => child.kill('SIGKILL');
}

async function doctor(ns: NetNs, args: string[]): Promise<{ code: number; report: DoctorReport; stderr: string }> {
  const r = await retroflect(ns, ['doctor', '--json', ...args], 60_000);
  assert.ok(r.json, `doctor printed no JSON (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
  return { code: r.code, report: r.json as DoctorReport, stderr: r.stderr };
}

function check(report: DoctorReport, name: string): Check {
  const c = report.checks.find((x) => x.name === name);
  assert.ok(c, `no check ${name} in ${report.checks.map((x) => x.name).join(', ')}`);
  return c;
}

describe('retroflect doctor (Linux, real namespaces)', { timeout: 300_000 }, () => {
  let t: Topology;
  let dir: string;
  let config: string;
  let engine: EngineHandle | undefined;
  let stopServer: (() => void) | undefined;

  before(async () => {
    t = await createTopology('doc');
    dir = privateDir('doc');
    config = join(dir, 'config.json');
    writeConfig(config, [{ address: R4, portMaps: ['80=8080/tcp'] }, R6], [{ port: 8080, protocol: 'tcp' }]);
    stopServer = await serve(t.a, '::', 8080);
    // Generous: `npm test -- doctor` runs this beside the Wine and pwsh suites on a shared machine.
    engine = await startEngine(t.a, dir, { config, timeoutMs: 90_000 });
  });

  after(async () => {
    await engine?.kill();
    await t?.destroy();
    removeDir(dir);
  });

  test('a healthy host with a running engine passes every check (exit 0), and the JSON has the documented shape',
    async () => {
    const { code, report } = await doctor(t.a, ['--pipe', engine!.pipe]);
    // An address without allow lists is a warning by design (it opens every port to every program: docs/security.md).
    const notPassed = report.checks.filter((c) => c.status !== 'pass' && !(c.name.startsWith('allow.') && c.status === 'warning'));
    assert.deepEqual(notPassed, [], JSON.stringify(notPassed, null, 2));
    assert.ok(report.checks.some((c) => c.name.startsWith('allow.') && c.status === 'warning'), 'the open addresses are named');
    assert.equal(code, ExitCode.OK);
    assert.equal(report.engineRunning, true);
    assert.deepEqual(Object.keys(report).sort(), ['checks', 'engineRunning', 'platform', 'repairs', 'summary',
      'version']);
    for (const c of report.checks) assert.deepEqual(Object.keys(c).sort(), ['detail', 'evidence', 'fix', 'name',
      'status']);
    for (const name of ['privileges', 'config', 'linux.tun', 'linux.nftables', 'linux.nft-table', 'linux.routes',
      'linux.rp_filter', 'linux.nflog', `address.${R4}`, `address.${R6}`, 'port.8080/tcp', 'engine']) {
      check(report, name);
    }
    assert.equal(check(report, `address.${R4}`).evidence.route && (check(report,
      `address.${R4}`).evidence.route as { device: string }).device, engineDevice());
    assert.deepEqual(check(report, 'port.8080/tcp').evidence.boundTo, ['::']);
  });

  test('a server bound to 127.0.0.1 fails its port check with the bind-to-wildcard fix (exit 12)', async () => {
    stopServer!();
    stopServer = await serve(t.a, '127.0.0.1', 8080);
    const { code, report } = await doctor(t.a, ['--pipe', engine!.pipe]);
    const c = check(report, 'port.8080/tcp');
    assert.equal(c.status, 'fail', JSON.stringify(c));
    assert.match(c.detail, /127\.0\.0\.1 only/);
    assert.match(c.fix!, /wildcard address \(0\.0\.0\.0 or ::/);
    assert.equal(code, ExitCode.CHECK_FAILED);
    stopServer();
    stopServer = await serve(t.a, '::', 8080);
  });

  test('a mapped port with no listener fails with "start the server"', async () => {
    const add = await engine!.cli(['address', 'add', R4, '--map', '81=9090/tcp', '--temporary']);
    assert.equal(add.code, 0, add.stderr);
    const { code, report } = await doctor(t.a, ['--pipe', engine!.pipe]);
    const c = check(report, 'port.9090/tcp');
    assert.equal(c.status, 'fail', JSON.stringify(c));
    assert.match(c.detail, /No server listens on 9090\/tcp/);
    assert.match(c.fix!, /Start the server on port 9090/);
    assert.equal(code, ExitCode.CHECK_FAILED);
    assert.equal(check(report, 'port.8080/tcp').status, 'pass');
    const rm = await engine!.cli(['address', 'remove', R4, '--map', '81/tcp', '--temporary']);
    assert.equal(rm.code, 0, rm.stderr);
  });

  test('a deleted nft table is reported with what to do about whatever deletes it', async () => {
    // The engine puts its table back every few seconds: delete it right after one of its checks (seen as a repair
    // in status), so the doctor looks within the window before the next.
    const client = await ControlClient.connect({ pipe: engine!.pipe });
    try {
      await t.a.must('nft', ['delete', 'table', 'inet', 'retroflect']);
      const before = (await client.call('status', {})).hostRepairs.count;
      for (let i = 0; i < 200 && (await client.call('status',
        {})).hostRepairs.count === before; i++) await new Promise((r) => setTimeout(r, 50));
      await t.a.must('nft', ['delete', 'table', 'inet', 'retroflect']);
    } finally {
      client.close();
    }
    const { report } = await doctor(t.a, ['--pipe', engine!.pipe]);
    const c = check(report, 'linux.nft-table');
    // 'fail' when the doctor looked before the engine's next repair, 'warning' (with the repair it saw) after it.
    assert.ok(c.status === 'fail' || c.status === 'warning', JSON.stringify(c));
    assert.match(c.fix!, /Find what deletes it/);
    if (c.status === 'fail') assert.match(c.detail, /is gone: shield ports are open/);
    else assert.match(c.detail, /had to put it back/);
    assert.equal(check(report, 'engine').status, 'warning', 'the engine check reports the repairs');
  });

  test('with no engine: the engine check warns with how to start one, live checks are skipped, the config file is ' +
    'checked',
    async () => {
    // Stopped, not killed: a killed ebpf engine leaves its veth and routes until the next start (docs/architecture.md),
    // and the later address checks are about this host's own routes.
    engine!.child.kill('SIGTERM');
    assert.equal(await engine!.exited, 0, engine!.output());
    engine = undefined;
    const { code, report } = await doctor(t.a, ['--pipe', join(dir, 'none.sock'), '--config', config]);
    const e = check(report, 'engine');
    assert.equal(e.status, 'warning');
    assert.match(e.fix!, /Start it: 'sudo retroflect run'/);
    assert.equal(check(report, 'linux.nft-table').status, 'skipped');
    assert.equal(check(report, 'linux.routes').status, 'skipped');
    assert.equal(check(report, `address.${R4}`).status, 'pass');
    assert.equal(check(report, 'config').evidence.source, 'file');
    assert.equal(report.engineRunning, false);
    assert.equal(code, ExitCode.OK, 'warnings alone do not fail the run');
  });

  test('an address on a local subnet fails with the rule and a usable suggestion', async () => {
    const cfg = join(dir, 'subnet.json');
    writeConfig(cfg, [ON_SUBNET], []);
    const { code, report } = await doctor(t.a, ['--pipe', join(dir, 'none.sock'), '--config', cfg]);
    const c = check(report, `address.${ON_SUBNET}`);
    assert.equal(c.status, 'fail');
    assert.deepEqual(c.evidence.rules, ['local-subnet']);
    assert.match(c.detail, /inside 198\.51\.100\.0\/24, a subnet of interface veth-a/);
    assert.match(c.fix!, /Or use 192\.0\.2\.1 instead/);
    assert.equal(code, ExitCode.CHECK_FAILED);
  });

  test('without an engine, `address test` checks on this host: exit 4, the rule, a suggestion; a usable one exits 0',
    async () => {
    const bad = await retroflect(t.a, ['address', 'test', ON_SUBNET, '--json', '--pipe', join(dir, 'none.sock')]);
    assert.equal(bad.code, ExitCode.INVALID_ARGUMENT, bad.stderr);
    assert.match(bad.stderr, /No engine is running: tested on this host/);
    assert.equal(bad.json[0].valid, false);
    assert.deepEqual(bad.json[0].reasons.map((r: { rule: string }) => r.rule), ['local-subnet']);
    assert.equal(bad.json[0].suggestion.address, '192.0.2.1');
    const good = await retroflect(t.a, ['address', 'test', R4, '--json', '--pipe', join(dir, 'none.sock')]);
    assert.equal(good.code, ExitCode.OK, good.stderr);
    assert.equal(good.json[0].valid, true);
  });

  test('no default route for a family fails that family\'s address with "add a default route"', async () => {
    await t.a.must('ip', ['-6', 'route', 'del', 'default']);
    try {
      const { code, report } = await doctor(t.a, ['--pipe', join(dir, 'none.sock'), '--config', config]);
      const v6 = check(report, `address.${R6}`);
      assert.equal(v6.status, 'fail');
      assert.deepEqual(v6.evidence.rules, ['no-route']);
      assert.match(v6.fix!, /Add a default route for IPv6/);
      assert.equal(check(report, `address.${R4}`).status, 'pass', 'IPv4 still has its default route');
      assert.equal(code, ExitCode.CHECK_FAILED);
    } finally {
      await t.a.must('ip', ['-6', 'route', 'add', 'default', 'via', t.b6]);
    }
  });
});

describe('retroflect doctor after a killed ebpf engine (Linux, real namespaces)', { timeout: 300_000 }, () => {
  let t: Topology;
  let dir: string;
  let engine: EngineHandle | undefined;
  const R = '203.0.113.41';
  const start = () => startEngine(t.a, dir, { config: false, args: ['--reflect', R, '--backend', 'ebpf'],
    timeoutMs: 90_000 });

  before(async () => {
    t = await createTopology('docx');
    dir = privateDir('docx');
  });

  after(async () => {
    await engine?.kill();
    await t?.destroy();
    removeDir(dir);
  });

  test('SIGKILL leaves the veth, its program and routes, and the nft table: the doctor names them and the fix; the ' +
    'next start removes them; after a clean stop nothing is reported', async () => {
    engine = await start();
    const running = await doctor(t.a, ['--pipe', engine.pipe]);
    assert.equal(check(running.report, 'linux.ebpf-leftover').status, 'pass');
    const pid = (await engine.cli(['status'])).json.pid as number;

    await engine.kill(); // SIGKILL
    const device = engineDevice('ebpf');
    assert.deepEqual(await engineLeftovers(t.a, join(dir, 'none.sock')), ['device', 'qdisc', 'nft table'],
      'what a killed ebpf engine leaves');
    assert.match(await t.a.must('ip', ['route', 'show', 'dev', device]), /203\.0\.113\.41/);
    const killed = await doctor(t.a, ['--pipe', engine.pipe]);
    const c = check(killed.report, 'linux.ebpf-leftover');
    assert.equal(c.status, 'warning', JSON.stringify(c));
    assert.deepEqual(c.evidence.leftovers, [{ device, peer: `${device}p`, pid, routes: [R] }]);
    assert.match(c.detail, new RegExp(`engine that is gone \\(killed\\) left its device: ${device} ` +
      `\\(peer ${device}p, engine pid ${pid}, routes to 203\\.0\\.113\\.41\\)`));
    assert.match(c.fix!, /Start the engine \('sudo retroflect run' or Start-Retroflect/);
    assert.match(c.fix!, new RegExp(`ip link del dev ${device}`));
    assert.equal(check(killed.report, 'linux.nft-table').status, 'warning', 'the table it left, too');
    assert.equal(killed.code, ExitCode.OK, 'warnings alone do not fail the run');

    engine = await start(); // removes the killed engine's device and table before it makes its own
    const restarted = await doctor(t.a, ['--pipe', engine.pipe]);
    const r = check(restarted.report, 'linux.ebpf-leftover');
    assert.equal(r.status, 'pass', JSON.stringify(r));
    assert.deepEqual((r.evidence.devices as { device: string }[]).map((d) => d.device), [device]);
    engine.child.kill('SIGTERM');
    assert.equal(await engine.exited, 0, engine.output());
    engine = undefined;
    assert.deepEqual(await engineLeftovers(t.a, join(dir, 'none.sock')), []);
    const clean = await doctor(t.a, ['--pipe', join(dir, 'none.sock')]);
    const none = check(clean.report, 'linux.ebpf-leftover');
    assert.equal(none.detail, 'No device of an ebpf engine is left on this host.');
    assert.equal(check(clean.report, 'linux.nft-table').status, 'skipped');
  });

  test('a killed engine\'s veth of another name (another --device, an older default) is reported, and the next ' +
    'start removes it too instead of taking its nft table for a running engine\'s', async () => {
    const old = 'rflxold';
    engine = await startEngine(t.a, dir, { config: false, args: ['--reflect', R, '--backend', 'ebpf', '--device', old],
      timeoutMs: 90_000 });
    await engine.kill(); // SIGKILL
    const killed = await doctor(t.a, ['--pipe', engine.pipe]);
    const c = check(killed.report, 'linux.ebpf-leftover');
    assert.equal(c.status, 'warning', JSON.stringify(c));
    assert.deepEqual((c.evidence.leftovers as { device: string }[]).map((l) => l.device), [old]);
    engine = await start(); // the default device
    const links = await t.a.ipJson<{ ifname: string }[]>(['link', 'show']);
    assert.ok(!links.some((l) => l.ifname.startsWith(old)), 'the old veth is gone');
    assert.match(await t.a.must('ip', ['route', 'get', R]), new RegExp(`dev ${engineDevice('ebpf')}`));
    engine.child.kill('SIGTERM');
    assert.equal(await engine.exited, 0, engine.output());
    engine = undefined;
    assert.deepEqual(await engineLeftovers(t.a, join(dir, 'none.sock')), []);
  });
});
