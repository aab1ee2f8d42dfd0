/**
 * `retroflect doctor` and `retroflect driver release` on Windows, under Wine: the CLI bundled for the Windows node.exe,
 * the mingw WinDivert test double as WinDivert.dll (it models the REFLECT layer: native/windivert_double.c) and a
 * PE stand-in for WinDivert64.sys with a version resource (native/fake_driver.c). The test sets up what it needs:
 * the files (made "signed" by appending a WIN_CERTIFICATE entry: the doctor checks presence only), the `WinDivert`
 * service entry (sc.exe) and a second WinDivert user — a real second Windows process holding a handle
 * (fixtures/hold-windivert-handle.ts), seen through WINDIVERT_DOUBLE_DRIVER_DIR.
 * Without wine these tests skip locally and FAIL when process.env.CI is set.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Check, DoctorReport } from '../../src/doctor/check.ts';
import { ExitCode } from '../../src/errors.ts';
import { withSignatureEntry } from './pe-samples.ts';
import { bundle, NODE_EXE, ROOT, runWine, wineEnv, WINE_DIR, wineTestGate, winPath } from '../wine/setup.ts';

const skip = await wineTestGate('the Windows doctor');
const BUILD = join(ROOT, 'native', 'build', 'win64');
const work = join(WINE_DIR, `doctor-${process.pid}`);
const files = join(work, 'windivert');
const driverDir = join(work, 'driver');
const config = join(work, 'config.json');
const held: ChildProcess[] = [];
let cli = '';
let holderScript = '';

/** The same PE with another FileVersion in its VS_FIXEDFILEINFO. */
function withVersion(pe: Buffer, major: number, minor: number): Buffer {
  const out = Buffer.from(pe);
  for (let i = 0; i + 16 <= out.length; i += 4) {
    if (out.readUInt32LE(i) === 0xfeef04bd) {
      out.writeUInt32LE(((major << 16) | minor) >>> 0, i + 8);
      return out;
    }
  }
  throw new Error('no VS_FIXEDFILEINFO');
}

async function wine(args: string[], tag: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return runWine(args, { tag: `doctor-${process.pid}-${tag}`, env: { WINDIVERT_DOUBLE_DRIVER_DIR: winPath(driverDir) },
    timeoutMs: 180_000 });
}

let runs = 0;
async function doctor(extra: string[] = []): Promise<{ code: number | null; report: DoctorReport }> {
  const r = await wine([NODE_EXE, cli, 'doctor', '--json', '--windivert-dir', winPath(files), '--config',
    winPath(config), '--pipe', `rft-doctor-none-${process.pid}`, ...extra], `run${runs++}`);
  let report: DoctorReport;
  try {
    report = JSON.parse(r.stdout) as DoctorReport;
  } catch {
    throw new Error(`doctor printed no JSON (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
  }
  return { code: r.code, report };
}

function check(report: DoctorReport, name: string): Check {
  const c = report.checks.find((x) => x.name === name);
  assert.ok(c, `no check ${name} in ${report.checks.map((x) => x.name).join(', ')}`);
  return c;
}

async function sc(args: string[]): Promise<string> {
  return (await wine(['sc', ...args], `sc${runs++}`)).stdout;
}

/** A second Windows process holding a WinDivert handle; resolves with its pid and a release function. */
async function holder(priority: number, filter: string): Promise<{ pid: number; release: () => Promise<void> }> {
  const control = join(work, `hold-${held.length}`);
  writeFileSync(control, '');
  const nul = openSync('/dev/null', 'r');
  const out = openSync(join(work, `hold-${held.length}.log`), 'w');
  const child = spawn('wine', [NODE_EXE, holderScript, winPath(join(files, 'WinDivert.dll')), String(priority), filter,
    winPath(control)], {
    cwd: WINE_DIR,
    env: wineEnv({ WINDIVERT_DOUBLE_DRIVER_DIR: winPath(driverDir) }),
    stdio: [nul, out, out],
  });
  held.push(child);
  const exited = new Promise((r) => child.once('exit', r));
  const ready = (): boolean => existsSync(`${control}.ready`);
  for (let i = 0; i < 1200 && !ready() && child.exitCode === null; i++) await new Promise((r) => setTimeout(r, 100));
  closeSync(nul);
  closeSync(out);
  assert.ok(existsSync(`${control}.ready`),
    `the holder did not open its handle: ${readFileSync(join(work, `hold-${held.length - 1}.log`), 'utf8')}`);
  return { pid: Number(readFileSync(`${control}.ready`, 'utf8')),
    release: async () => { rmSync(control); await exited; } };
}

describe('retroflect doctor under Wine (WinDivert double with the REFLECT layer)', { skip, timeout: 900_000 }, () => {
  before(async () => {
    rmSync(work, { recursive: true, force: true });
    mkdirSync(files, { recursive: true });
    mkdirSync(driverDir, { recursive: true });
    copyFileSync(join(BUILD, 'WinDivert.dll'), join(files, 'WinDivert.dll'));
    writeFileSync(join(files, 'WinDivert64.sys'), withSignatureEntry(readFileSync(join(BUILD, 'WinDivert64.sys'))));
    writeFileSync(config, JSON.stringify({ schemaVersion: 1, reflectAddresses: ['203.0.113.77'],
      shieldPorts: [{ port: 8080, protocol: 'tcp' }] }));
    cli = await bundle(join(ROOT, 'src', 'cli', 'main.ts'), `doctor-cli-${process.pid}`);
    holderScript = await bundle(join(ROOT, 'test', 'doctor', 'fixtures', 'hold-windivert-handle.ts'),
      `doctor-holder-${process.pid}`);
    await sc(['delete', 'WinDivert']);
  });

  after(async () => {
    for (const c of held) if (c.exitCode === null) c.kill('SIGKILL');
    await sc(['delete', 'WinDivert']);
    rmSync(work, { recursive: true, force: true });
  });

  test('files, version and signature presence are read from the PE files; no driver entry and no other WinDivert ' +
    'user pass',
    async () => {
    const { report } = await doctor();
    const f = check(report, 'windows.windivert-files');
    assert.equal(f.status, 'warning', JSON.stringify(f)); // the double's WinDivert.dll carries no signature
    assert.match(f.detail, /WinDivert 2\.2\.2\.0 is present; WinDivert64\.sys is signed but WinDivert\.dll is not/);
    assert.equal((f.evidence.driverFacts as { sha256: string }).sha256.length, 64);
    assert.equal(check(report, 'windows.driver-service').status, 'pass');
    const users = check(report, 'windows.windivert-users');
    assert.equal(users.status, 'pass', JSON.stringify(users));
    assert.match(users.detail, /No other program holds a WinDivert handle/);
    assert.ok(['pass', 'warning', 'fail'].includes(check(report, 'windows.bfe').status));
    for (const name of ['privileges', 'windows.code-integrity', 'windows.firewall', 'windows.private-ranges',
      'port.8080/tcp', 'engine']) check(report, name);
  });

  test('a second WinDivert user at our priority is reported with its pid, layer, priority and filter', async () => {
    const other = await holder(1000, 'tcp.DstPort == 8080');
    try {
      const { report } = await doctor();
      const c = check(report, 'windows.windivert-users');
      assert.equal(c.status, 'warning', JSON.stringify(c));
      assert.match(c.detail,
        new RegExp(`process ${other.pid} \\(network layer, priority 1000, filter "tcp\\.DstPort == 8080"\\) uses our ` +
          `priority 1000: with overlapping filters, the handle opened later normally sees a packet first`));
      assert.match(c.fix!, new RegExp(`Get-Process -Id ${other.pid}.*--priority`));
      const handles = c.evidence.handles as { processId: number; overlaps: boolean }[];
      assert.deepEqual(handles.map((h) => [h.processId, h.overlaps]), [[other.pid, true]],
        'its filter catches our shielded port');
    } finally {
      await other.release();
    }
    const { report } = await doctor();
    assert.equal(check(report, 'windows.windivert-users').status, 'pass', 'gone once it closed its handle');
  });

  test('a user below our priority with a filter that misses our traffic passes; one above that overlaps warns',
    async () => {
    const low = await holder(0, 'udp.DstPort == 53');
    const high = await holder(2000, 'outbound and ip.DstAddr == 203.0.113.77');
    try {
      const { report } = await doctor();
      const c = check(report, 'windows.windivert-users');
      assert.equal(c.status, 'warning', JSON.stringify(c));
      assert.match(c.detail,
        new RegExp(`process ${high.pid} .*priority 2000.* above our priority 1000 with a filter that catches our ` +
          `traffic`));
      assert.doesNotMatch(c.detail, new RegExp(`process ${low.pid}`));
    } finally {
      await low.release();
      await high.release();
    }
  });

  test('a stale driver entry (ImagePath gone) fails with the repair, and --repair removes it', async () => {
    const gone = join(work, 'old-tool', 'WinDivert64.sys');
    await sc(['create', 'WinDivert', 'type=', 'kernel', 'binPath=', winPath(gone)]);
    const { code, report } = await doctor();
    const c = check(report, 'windows.driver-service');
    assert.equal(c.status, 'fail', JSON.stringify(c));
    assert.match(c.detail, /stale: its ImagePath .*old-tool\\WinDivert64\.sys is gone/);
    assert.match(c.fix!, /retroflect doctor --repair/);
    assert.equal(code, ExitCode.CHECK_FAILED);
    assert.match(await sc(['query', 'WinDivert']), /STATE/, 'the doctor alone changes nothing');

    const repaired = await doctor(['--repair']);
    assert.equal(check(repaired.report, 'windows.driver-service').status, 'pass');
    assert.equal(repaired.report.repairs.length, 1);
    assert.match(repaired.report.repairs[0], /Removed the WinDivert driver service entry/);
    assert.doesNotMatch(await sc(['query', 'WinDivert']), /STATE/, 'the entry is gone');
  });

  test('a stale driver entry of another version is reported; --repair leaves it while another program holds a handle',
    async () => {
    const oldDir = join(work, 'other-version');
    mkdirSync(oldDir, { recursive: true });
    writeFileSync(join(oldDir, 'WinDivert64.sys'), withVersion(readFileSync(join(files, 'WinDivert64.sys')), 2, 1));
    await sc(['create', 'WinDivert', 'type=', 'kernel', 'binPath=', winPath(join(oldDir, 'WinDivert64.sys'))]);
    const other = await holder(0, 'true');
    try {
      const { report } = await doctor(['--repair']);
      const c = check(report, 'windows.driver-service');
      assert.equal(c.status, 'fail', JSON.stringify(c));
      assert.match(c.detail, /is version 2\.1\.2\.0, ours is 2\.2\.2\.0/);
      assert.match(c.detail,
        new RegExp(`Left the WinDivert driver service alone: 1 WinDivert handle\\(s\\) are open \\(process ` +
          `${other.pid}\\)`));
      assert.deepEqual(report.repairs, []);
      assert.match(await sc(['query', 'WinDivert']), /STATE/);
    } finally {
      await other.release();
    }
    const { report } = await doctor(['--repair']);
    assert.equal(check(report, 'windows.driver-service').status, 'pass');
    assert.doesNotMatch(await sc(['query', 'WinDivert']), /STATE/);
  });

  test('driver release (what Uninstall runs) leaves our driver entry alone while another handle is open, removes it ' +
    'after',
    async () => {
    await sc(['create', 'WinDivert', 'type=', 'kernel', 'binPath=', winPath(join(files, 'WinDivert64.sys'))]);
    const other = await holder(0, 'true');
    try {
      const r = await wine([NODE_EXE, cli, 'driver', 'release', '--json', '--windivert-dir', winPath(files)],
        `release${runs++}`);
      assert.equal(r.code, 0, r.stderr);
      const out = JSON.parse(r.stdout) as { outcome: string; holders: { processId: number }[] };
      assert.equal(out.outcome, 'in-use');
      assert.deepEqual(out.holders.map((h) => h.processId), [other.pid]);
      assert.match(await sc(['query', 'WinDivert']), /STATE/, 'still there');
    } finally {
      await other.release();
    }
    const r = await wine([NODE_EXE, cli, 'driver', 'release', '--json', '--windivert-dir', winPath(files)],
      `release${runs++}`);
    assert.equal(JSON.parse(r.stdout).outcome, 'removed', r.stdout);
    assert.doesNotMatch(await sc(['query', 'WinDivert']), /STATE/);
  });

  test('the firewall rule and the private ranges come from the registry; a server on 127.0.0.1 fails its port check',
    async () => {
    const port = 18000 + (process.pid % 1000);
    const cfg = join(work, 'ports.json');
    writeFileSync(cfg, JSON.stringify({ schemaVersion: 1, reflectAddresses: ['203.0.113.77'], shieldPorts: [{ port,
      protocol: 'tcp' }] }));
    const rules = 'HKLM\\SYSTEM\\CurrentControlSet\\Services\\SharedAccess\\Parameters\\FirewallPolicy\\FirewallRules';
    const isolation = 'HKLM\\SOFTWARE\\Policies\\Microsoft\\Windows\\NetworkIsolation';
    await wine(['reg', 'add', rules, '/v', 'Retroflect-Reflected-In', '/t', 'REG_SZ', '/d',
      'v2.30|Action=Allow|Active=TRUE|Dir=In|RA4=203.0.113.77|Name=Retroflect: reflected connections|', '/f'],
      `reg${runs++}`);
    await wine(['reg', 'add', isolation, '/v', 'DomainSubnets', '/t', 'REG_SZ', '/d', '10.0.0.0/8,203.0.113.0/24',
      '/f'], `reg${runs++}`);
    const nul = openSync('/dev/null', 'r');
    const out = openSync(join(work, 'server.log'), 'w');
    const server = spawn('wine', [NODE_EXE, '-e',
      `require('net').createServer().listen(${port}, '127.0.0.1', () => require('fs').writeFileSync('server.ready', ` +
        `''))`],
      { cwd: work, env: wineEnv(), stdio: [nul, out, out] });
    held.push(server);
    try {
      for (let i = 0; i < 600 && !existsSync(join(work, 'server.ready')); i++) await new Promise((r) => setTimeout(r,
        100));
      assert.ok(existsSync(join(work, 'server.ready')), readFileSync(join(work, 'server.log'), 'utf8'));
      const r = await wine([NODE_EXE, cli, 'doctor', '--json', '--windivert-dir', winPath(files), '--config',
        winPath(cfg), '--pipe', `rft-doctor-none-${process.pid}`], `run${runs++}`);
      const report = JSON.parse(r.stdout) as DoctorReport;
      const fw = check(report, 'windows.firewall');
      assert.equal(fw.status, 'pass', JSON.stringify(fw));
      assert.deepEqual(fw.evidence.remoteAddresses, ['203.0.113.77']);
      const ranges = check(report, 'windows.private-ranges');
      assert.equal(ranges.status, 'warning', JSON.stringify(ranges));
      assert.match(ranges.detail, /203\.0\.113\.77 is inside the enterprise private range 203\.0\.113\.0\/24/);
      const p = check(report, `port.${port}/tcp`);
      assert.equal(p.status, 'fail', JSON.stringify(p));
      assert.deepEqual(p.evidence.boundTo, ['127.0.0.1']);
      assert.match(p.fix!, /wildcard address/);
      assert.equal(r.code, ExitCode.CHECK_FAILED);
    } finally {
      server.kill('SIGKILL');
      closeSync(nul);
      closeSync(out);
      await wine(['reg', 'delete', rules, '/v', 'Retroflect-Reflected-In', '/f'], `reg${runs++}`);
      await wine(['reg', 'delete', isolation, '/v', 'DomainSubnets', '/f'], `reg${runs++}`);
    }
  });

  test('another tool\'s entry (another folder, same version, not stale) is never removed by driver release',
    async () => {
    const theirs = join(work, 'their-tool');
    mkdirSync(theirs, { recursive: true });
    copyFileSync(join(files, 'WinDivert64.sys'), join(theirs, 'WinDivert64.sys'));
    await sc(['create', 'WinDivert', 'type=', 'kernel', 'binPath=', winPath(join(theirs, 'WinDivert64.sys'))]);
    const r = await wine([NODE_EXE, cli, 'driver', 'release', '--json', '--windivert-dir', winPath(files)],
      `release${runs++}`);
    assert.equal(JSON.parse(r.stdout).outcome, 'not-ours', r.stdout);
    assert.match(await sc(['query', 'WinDivert']), /STATE/);
    await sc(['delete', 'WinDivert']);
  });
});
