/**
 * The release archives admins deploy (scripts/package.mjs), used as an admin would:
 *   Linux: unpacked into an empty folder, Install.ps1 under a test root inside a namespace, Import-Module Retroflect
 *   by name, the engine reflecting (curl through the reflect address it picked), Detect.ps1, an upgrade to a second
 *   build of another version keeping the config, a failed upgrade rolled back, Uninstall.ps1 leaving only the config,
 *   and a second uninstall changing nothing.
 *   Windows: the zip's files, checksums and version resource, and retroflect.exe --version run from the unpacked
 *   folder under Wine.
 * Needs the executables of `npm run build -- --windows` (CI builds them first); skips locally when they or pwsh are
 * missing, fails on CI.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as ResEdit from 'resedit';
import { createTopology, JsonLines, run, type Topology } from '../helpers/netns.ts';
import { privateDir, removeDir } from '../helpers/engine.ts';
import { pwshTestGate, type Pwsh } from '../helpers/pwsh.ts';
import { runWine, setupWine, wineAvailable } from '../wine/setup.ts';
import { DEFAULT_DEVICE } from '../../src/packet-sources/default-device.ts';

const ROOT = new URL('../..', import.meta.url).pathname;
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const [MAJOR, MINOR, PATCH] = VERSION.split(/[.+-]/).map(Number);
/** A later version for the upgrade (a build of today's code labelled so), and one more for a broken release. */
const UPGRADE = `${MAJOR}.${MINOR}.${PATCH + 1}`;
const BROKEN = `${MAJOR}.${MINOR}.${PATCH + 2}`;
const MODULE_VERSION = VERSION.replace(/[-+].*$/, '');
const linuxExe = join(ROOT, 'dist', 'retroflect');
const windowsExe = join(ROOT, 'dist', 'retroflect.exe');

function gate(what: string, need: string[]): string | false {
  const missing = need.filter((f) => !existsSync(f));
  if (!missing.length) return false;
  const reason = `${missing.join(', ')} missing (npm run build -- --windows): ${what} cannot be tested`;
  if (process.env.CI) test(`${what} can run on CI`, () => assert.fail(reason));
  return reason;
}

async function packageInto(out: string, extra: string[]): Promise<void> {
  const r = await run(process.execPath, [join(ROOT, 'scripts', 'package.mjs'), '--out-dir', out, ...extra], { timeoutMs: 300_000 });
  assert.equal(r.code, 0, `package.mjs ${extra.join(' ')} failed:\n${r.stdout}\n${r.stderr}`);
}

function listFiles(dir: string): string[] {
  return readdirSync(dir).sort().flatMap((n) => (statSync(join(dir, n)).isDirectory() ? listFiles(join(dir, n)) : [join(dir, n)]));
}

/** Every file of an unpacked archive is in its SHA256SUMS with the right checksum, and nothing else is. */
function assertChecksums(dir: string): void {
  const listed = new Map(readFileSync(join(dir, 'SHA256SUMS'), 'utf8').trim().split('\n').map((l) => [l.slice(66), l.slice(0, 64)] as const));
  const present = listFiles(dir).map((f) => relative(dir, f)).filter((f) => f !== 'SHA256SUMS');
  assert.deepEqual([...listed.keys()].sort(), present.sort());
  for (const f of present) assert.equal(createHash('sha256').update(readFileSync(join(dir, f))).digest('hex'), listed.get(f), f);
}

function rewriteChecksums(dir: string): void {
  const lines = listFiles(dir).map((f) => relative(dir, f)).filter((f) => f !== 'SHA256SUMS')
    .map((f) => `${createHash('sha256').update(readFileSync(join(dir, f))).digest('hex')}  ${f}`);
  writeFileSync(join(dir, 'SHA256SUMS'), lines.join('\n') + '\n');
}

const pwshOrReason = pwshTestGate('the release scripts');
const linuxSkip = typeof pwshOrReason === 'string' ? pwshOrReason : gate('the Linux release archive', [linuxExe]);

describe('Linux release archive: install, detect, upgrade, rollback, uninstall', { skip: linuxSkip, timeout: 900_000 }, () => {
  const pwsh = pwshOrReason as Pwsh;
  let topo: Topology;
  let dir: string;
  let root: string;
  let pipe: string;
  const v1 = (): string => join(dir, 'v1');

  /** pwsh inside the namespace (the engine it starts changes routes and devices there only). */
  const ps = (args: string[], cwd?: string) =>
    topo.a.run('env', [`PSModulePath=${join(root, 'usr/local/share/powershell/Modules')}`, pwsh.path, '-NoProfile', '-NonInteractive', ...args], { timeoutMs: 180_000, ...(cwd ? {} : {}) });
  const script = (folder: string, name: string, extra: string[] = []) => ps(['-File', join(folder, name), '-Root', root, ...extra]);

  before(async () => {
    topo = await createTopology('rel');
    dir = privateDir('rel');
    root = join(dir, 'root');
    mkdirSync(root);
    // Where Install.ps1 -Root starts the engine (the scripts take no -Pipe).
    pipe = join(root, 'run/retroflect/retroflect.sock');
    const out1 = join(dir, 'out1');
    await packageInto(out1, ['--no-build', '--only', 'linux']);
    mkdirSync(v1());
    const r = await run('tar', ['-xzf', join(out1, `retroflect-${VERSION}-linux-x64.tar.gz`), '-C', v1()]);
    assert.equal(r.code, 0, r.stderr);
  });

  after(async () => {
    await run('ip', ['netns', 'exec', topo.a.name, join(root, `opt/retroflect/${UPGRADE}/retroflect`), 'stop', '--pipe', pipe]).catch(() => undefined);
    await topo?.destroy();
    removeDir(dir);
  });

  test('the archive holds what an admin needs, and its checksums match', () => {
    const names = readdirSync(v1()).sort();
    for (const f of ['retroflect', 'Install.ps1', 'Uninstall.ps1', 'Detect.ps1', 'FIRST-STEPS.txt', 'LICENSE', 'THIRD-PARTY-NOTICES.txt', 'SHA256SUMS', 'Retroflect']) {
      assert.ok(names.includes(f), `${f} missing from the archive`);
    }
    assert.ok(statSync(join(v1(), 'retroflect')).mode & 0o100, 'the executable keeps its x bit');
    assert.match(readFileSync(join(v1(), `Retroflect/${MODULE_VERSION}/Retroflect.psd1`), 'utf8'), new RegExp(`ModuleVersion\\s*=\\s*'${MODULE_VERSION.replaceAll('.', '\\.')}'`));
    const notices = readFileSync(join(v1(), 'THIRD-PARTY-NOTICES.txt'), 'utf8');
    for (const p of ['Node.js', 'koffi', 'commander', 'chalk', 'ipaddr.js', 'table']) assert.match(notices, new RegExp(`^${p.replace('.', '\\.')} `, 'm'), `${p} notice`);
    assertChecksums(v1());
  });

  test('Install.ps1 installs, starts the engine, and Import-Module Retroflect works by name', async () => {
    const servers = new JsonLines(topo.a.spawn('python3', ['-c', [
      'import http.server, socketserver, sys, json',
      'class H(http.server.BaseHTTPRequestHandler):',
      '  def do_GET(s):',
      '    b = ("peer=" + s.client_address[0]).encode(); s.send_response(200); s.send_header("Content-Length", str(len(b))); s.end_headers(); s.wfile.write(b)',
      '  def log_message(s, *a): pass',
      'class S(socketserver.ThreadingMixIn, http.server.HTTPServer): address_family = __import__("socket").AF_INET',
      'srv = S(("0.0.0.0", 8080), H); print(json.dumps({"ready": True}), flush=True); srv.serve_forever()',
    ].join('\n')]));
    await servers.next((o) => o.ready === true);

    const r = await script(v1(), 'Install.ps1', ['-ShieldPort', '9090/tcp']);
    assert.equal(r.code, 0, `Install.ps1 failed:\n${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, new RegExp(`retroflect ${VERSION.replaceAll('.', '\\.')} installed and running`));
    assert.ok(existsSync(join(root, `opt/retroflect/${VERSION}/retroflect`)));
    assert.ok(existsSync(join(root, `usr/local/share/powershell/Modules/Retroflect/${MODULE_VERSION}/Retroflect.psd1`)));
    const installLogs = readdirSync(join(root, 'var/log/retroflect')).filter((f) => f.startsWith('retroflect-install-'));
    assert.equal(installLogs.length, 1, 'one install log (a day file)');

    const byName = await ps(['-Command', `Import-Module Retroflect -ErrorAction Stop; $s = Get-Retroflect -Pipe '${pipe}' -ErrorAction Stop; '{0}|{1}|{2}' -f (Get-Module Retroflect).Version, $s.Version, ($s.ReflectAddresses -join ',')`]);
    assert.equal(byName.code, 0, byName.stderr);
    const [moduleVersion, engineVersion, reflect] = byName.stdout.trim().split('|');
    assert.equal(moduleVersion, MODULE_VERSION);
    assert.equal(engineVersion, VERSION);
    // The namespace's own network is 198.51.100.0/24: the engine picked the first documentation address it can use.
    assert.equal(reflect, '192.0.2.1');
    const config = JSON.parse(readFileSync(join(root, 'etc/retroflect/config.json'), 'utf8')) as { reflectAddresses: string[]; shieldPorts: unknown[] };
    assert.deepEqual(config.reflectAddresses, ['192.0.2.1']);
    assert.deepEqual(config.shieldPorts, [{ port: 9090, protocol: 'tcp' }]);

    const curl = await topo.a.run('curl', ['-sS', '--max-time', '5', 'http://192.0.2.1:8080/']);
    assert.equal(curl.code, 0, curl.stderr);
    assert.equal(curl.stdout, 'peer=192.0.2.1', 'the local server sees the client as the reflect address');
  });

  test('Detect.ps1: one line and exit 0 while installed and running', async () => {
    const r = await script(v1(), 'Detect.ps1');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim().split('\n').length, 1);
    assert.match(r.stdout, new RegExp(`^retroflect ${VERSION.replaceAll('.', '\\.')} installed and running \\(pid \\d+\\)`));
  });

  test('Install.ps1 again with this version healthy changes nothing: same engine, one log line', async () => {
    const pidOf = async () =>
      (await ps(['-Command', `Import-Module Retroflect; (Get-Retroflect -Pipe '${pipe}').ProcessId`])).stdout.trim();
    const logDir = join(root, 'var/log/retroflect');
    const logFile = join(logDir, readdirSync(logDir).find((f) => f.startsWith('retroflect-install-'))!);
    const configFile = join(root, 'etc/retroflect/config.json');
    const before = {
      pid: await pidOf(),
      lines: readFileSync(logFile, 'utf8').trim().split('\n').length,
      config: readFileSync(configFile, 'utf8'),
    };
    const r = await script(v1(), 'Install.ps1', ['-ShieldPort', '9090/tcp']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(r.stdout.trim(), `retroflect ${VERSION} installed and running (pid ${before.pid}).`);
    assert.equal(await pidOf(), before.pid, 'the engine was not restarted');
    const lines = readFileSync(logFile, 'utf8').trim().split('\n');
    assert.equal(lines.length, before.lines + 1);
    assert.match(lines.at(-1)!, /nothing to do$/);
    assert.equal(readFileSync(configFile, 'utf8'), before.config);
  });

  test('an upgrade to another version keeps the config, runs the new engine and removes the old files', async () => {
    const out2 = join(dir, 'out2');
    await packageInto(out2, ['--only', 'linux', '--version-label', UPGRADE]);
    const v2 = join(dir, 'v2');
    mkdirSync(v2);
    assert.equal((await run('tar', ['-xzf', join(out2, `retroflect-${UPGRADE}-linux-x64.tar.gz`), '-C', v2])).code, 0);
    const r = await script(v2, 'Install.ps1');
    assert.equal(r.code, 0, `upgrade failed:\n${r.stdout}\n${r.stderr}`);
    const s = await ps(['-Command', `Import-Module Retroflect; (Get-Retroflect -Pipe '${pipe}').Version`]);
    assert.equal(s.stdout.trim(), UPGRADE);
    assert.deepEqual(readdirSync(join(root, 'opt/retroflect')), [UPGRADE], 'the old version folder is gone');
    assert.deepEqual(readdirSync(join(root, 'usr/local/share/powershell/Modules/Retroflect')), [UPGRADE]);
    const config = JSON.parse(readFileSync(join(root, 'etc/retroflect/config.json'), 'utf8')) as { reflectAddresses: string[]; shieldPorts: unknown[] };
    assert.deepEqual(config.reflectAddresses, ['192.0.2.1']);
    assert.deepEqual(config.shieldPorts, [{ port: 9090, protocol: 'tcp' }]);
    assert.equal((await script(v2, 'Detect.ps1')).code, 0);
    const old = await script(v1(), 'Detect.ps1');
    assert.equal(old.code, 1, 'the old package is no longer detected');
    assert.equal(old.stdout, '');
  });

  test('a damaged archive changes nothing; a failed upgrade rolls back to the running version', async () => {
    const v2 = join(dir, 'v2');
    // Damaged download: one byte of the module differs from SHA256SUMS.
    const damaged = join(dir, 'damaged');
    await run('cp', ['-a', v2, damaged]);
    writeFileSync(join(damaged, `Retroflect/${UPGRADE}/Retroflect.psm1`), '# tampered\n', { flag: 'a' });
    const d = await script(damaged, 'Install.ps1');
    assert.equal(d.code, 1);
    assert.match(d.stderr, /damaged/);
    // A release whose engine cannot start (the executable exits at once), checksums consistent.
    const broken = join(dir, 'broken');
    const brokenVersion = BROKEN;
    await run('cp', ['-a', v2, broken]);
    renameSync(join(broken, `Retroflect/${UPGRADE}`), join(broken, `Retroflect/${brokenVersion}`));
    for (const f of ['Install.ps1', 'Detect.ps1', `Retroflect/${brokenVersion}/Retroflect.psd1`]) {
      writeFileSync(join(broken, f), readFileSync(join(broken, f), 'utf8').replaceAll(UPGRADE, brokenVersion));
    }
    writeFileSync(join(broken, 'retroflect'), '#!/bin/sh\necho "engine cannot start" >&2\nexit 5\n');
    chmodSync(join(broken, 'retroflect'), 0o755);
    rewriteChecksums(broken);
    const b = await script(broken, 'Install.ps1');
    assert.equal(b.code, 1, b.stdout + b.stderr);
    assert.match(b.stderr, new RegExp(`rolled back to ${UPGRADE.replaceAll('.', '\\.')}`));
    const s = await ps(['-Command', `Import-Module Retroflect; (Get-Retroflect -Pipe '${pipe}').Version`]);
    assert.equal(s.stdout.trim(), UPGRADE, 'the previous version runs again');
    assert.deepEqual(readdirSync(join(root, 'opt/retroflect')), [UPGRADE], 'the failed version left no folder');
    assert.equal((await script(v2, 'Detect.ps1')).code, 0);
  });

  test('Uninstall.ps1 leaves only the config and the deploy logs; a second run changes nothing', async () => {
    const v2 = join(dir, 'v2');
    const r = await script(v2, 'Uninstall.ps1');
    assert.equal(r.code, 0, r.stderr);
    for (const gone of ['opt/retroflect', 'usr/local/share/powershell/Modules/Retroflect', 'var/lib/retroflect', 'etc/systemd/system/retroflect.service']) {
      assert.ok(!existsSync(join(root, gone)), `${gone} left behind`);
    }
    const logs = readdirSync(join(root, 'var/log/retroflect')).sort();
    const kinds = logs.map((f) => f.replace(/-\d{8}\.log$/, ''));
    assert.deepEqual(kinds, ['retroflect-install', 'retroflect-uninstall'], 'only the deploy logs');
    assert.ok(existsSync(join(root, 'etc/retroflect/config.json')), 'the config stays');
    assert.equal((await script(v2, 'Detect.ps1')).code, 1);
    // Nothing of the engine's left in the namespace either: no device (TUN, or the ebpf backend's veth), no nft table.
    assert.equal((await topo.a.must('nft', ['list', 'tables'])).trim(), '');
    const links = await topo.a.ipJson<{ ifname: string }[]>(['link', 'show']);
    assert.ok(!links.some((l) => Object.values(DEFAULT_DEVICE).some((d) => l.ifname.startsWith(d))));
    const again = await script(v2, 'Uninstall.ps1');
    assert.equal(again.code, 0, again.stderr);
    const purge = await script(v2, 'Uninstall.ps1', ['-RemoveConfig']);
    assert.equal(purge.code, 0, purge.stderr);
    assert.ok(!existsSync(join(root, 'etc/retroflect')), '-RemoveConfig removes the config too');
  });
});

const wine = await wineAvailable();
const windowsSkip = !wine ? (process.env.CI ? false : 'wine is not installed') : gate('the Windows release archive', [windowsExe]);

describe('Windows release archive', { skip: windowsSkip, timeout: 600_000 }, () => {
  let dir: string;
  let unpacked: string;
  before(async () => {
    dir = privateDir('relw');
    const out = join(dir, 'out');
    const fakeDriver = join(dir, 'windivert');
    mkdirSync(fakeDriver);
    // Stand-ins with WinDivert's file names: the packaging only copies them (the real driver is not ours to test here).
    for (const f of ['WinDivert.dll', 'WinDivert64.sys', 'LICENSE']) writeFileSync(join(fakeDriver, f), `stand-in ${f}\n`);
    await packageInto(out, ['--no-build', '--only', 'windows', '--windivert', fakeDriver]);
    unpacked = join(dir, 'unpacked');
    const r = await run('python3', ['-m', 'zipfile', '-e', join(out, `retroflect-${VERSION}-win-x64.zip`), unpacked]);
    assert.equal(r.code, 0, r.stderr);
  });
  after(() => removeDir(dir));

  test('holds the executable, the module, the scripts (CRLF), WinDivert with its licence, and matching checksums', () => {
    const names = readdirSync(unpacked).sort();
    for (const f of ['retroflect.exe', 'Install.ps1', 'Uninstall.ps1', 'Detect.ps1', 'Deployment.ps1', 'FIRST-STEPS.txt', 'LICENSE', 'THIRD-PARTY-NOTICES.txt', 'SHA256SUMS', 'WinDivert.dll', 'WinDivert64.sys', 'WinDivert-LICENSE.txt']) {
      assert.ok(names.includes(f), `${f} missing`);
    }
    assert.match(readFileSync(join(unpacked, 'Install.ps1'), 'utf8'), /\r\n/);
    assert.match(readFileSync(join(unpacked, 'FIRST-STEPS.txt'), 'utf8'), /WinDivert\.dll and WinDivert64\.sys/);
    // The Intune Remediations pair and the Group Policy / Intune template travel with the Windows release.
    for (const f of ['remediations/Detect-RetroflectDrift.ps1', 'remediations/Remediate-RetroflectDrift.ps1', 'policy/Retroflect.admx', 'policy/en-US/Retroflect.adml']) {
      assert.ok(existsSync(join(unpacked, f)), `${f} missing`);
    }
    assertChecksums(unpacked);
  });

  test('packaging without WinDivert\'s licence is refused', async () => {
    const noLicence = join(dir, 'nolicence');
    mkdirSync(noLicence);
    for (const f of ['WinDivert.dll', 'WinDivert64.sys']) writeFileSync(join(noLicence, f), 'x');
    const r = await run(process.execPath, [join(ROOT, 'scripts', 'package.mjs'), '--no-build', '--only', 'windows', '--out-dir', join(dir, 'o2'), '--windivert', noLicence]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /licence/);
    assert.ok(!existsSync(join(dir, 'o2', `retroflect-${VERSION}-win-x64.zip`)));
  });

  test('the executable carries file and product version and a description', () => {
    const exe = ResEdit.NtExecutable.from(readFileSync(join(unpacked, 'retroflect.exe')), { ignoreCert: true });
    const [info] = ResEdit.Resource.VersionInfo.fromEntries(ResEdit.NtExecutableResource.from(exe).entries);
    const strings = info.getStringValues(info.getAllLanguagesForStringValues()[0]);
    assert.equal(strings.FileVersion, VERSION);
    assert.equal(strings.ProductVersion, VERSION);
    assert.equal(strings.ProductName, 'retroflect');
    assert.match(strings.FileDescription, /retroflect/);
    const [major, minor, patch] = VERSION.split(/[.+-]/).map(Number);
    assert.equal(info.fixedInfo.fileVersionMS, (major << 16) | minor);
    assert.equal(info.fixedInfo.fileVersionLS >>> 16, patch);
  });

  test('retroflect.exe --version runs from the unpacked folder under Wine', async () => {
    await setupWine();
    const r = await runWine([join(unpacked, 'retroflect.exe'), '--version'], { tag: `relw-${process.pid}`, timeoutMs: 120_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), VERSION);
  });
});
