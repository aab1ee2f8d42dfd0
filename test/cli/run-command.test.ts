/**
 * `retroflect` as scripts see it: exit codes and messages of the entry points that need no engine (the engine itself
 * is exercised in test/e2e and test/control). Runs the real CLI, bundled from source (test/helpers/cli.ts), in child
 * processes.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { ExitCode } from '../../src/errors.ts';
import { CLI_ARGV } from '../helpers/cli.ts';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

function retroflect(args: string[], opts: { uid?: number } = {}): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [...CLI_ARGV, ...args], {
    encoding: 'utf8',
    env: { ...process.env, NO_COLOR: '1', HOME: '/tmp' },
    ...(opts.uid === undefined ? {} : { uid: opts.uid, gid: opts.uid }),
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('--version prints the package version and exits 0', () => {
  const r = retroflect(['--version']);
  assert.equal(r.code, ExitCode.OK);
  assert.equal(r.stdout.trim(), pkg.version);
});

test('--help lists run and the client commands and exits 0', () => {
  const r = retroflect(['--help']);
  assert.equal(r.code, ExitCode.OK);
  for (const cmd of ['run', 'status', 'address', 'shield', 'stats', 'flows', 'stop']) assert.match(r.stdout, new RegExp(`^  ${cmd}\\b`, 'm'), cmd);
  const run = retroflect(['run', '--help']);
  assert.equal(run.code, ExitCode.OK);
  assert.match(run.stdout, /--dry-run/);
});

test('an unknown option is a usage error (exit 2)', () => {
  const r = retroflect(['run', '--no-such-option']);
  assert.equal(r.code, ExitCode.USAGE);
  assert.match(r.stderr, /unknown option/);
});

test('run as a non-root user exits 3 and says how to run it', () => {
  // As root, run the CLI as nobody; as any other user (npm run test:unit needs no root), run it as that user.
  const asUser = process.geteuid?.() === 0 ? { uid: 65534 } : {};
  const r = retroflect(['run', '--no-config', '--reflect', '198.51.100.9'], asUser);
  assert.equal(r.code, ExitCode.NOT_ADMIN, r.stdout + r.stderr);
  assert.match(r.stderr, /must run as root \(Linux\) or Administrator \(Windows\)\. \[E_NOT_ADMIN\]/);
  assert.match(r.stderr, /hint: /);
});

test('a malformed reflect address or shield port exits 4 before anything starts, even in a dry run', () => {
  const bad = retroflect(['run', '--dry-run', '--no-config', '--reflect', '192.0.2.300']);
  assert.equal(bad.code, ExitCode.INVALID_ARGUMENT);
  assert.match(bad.stderr, /'192\.0\.2\.300' is not an IP address\. \[E_INVALID_ADDRESS\]/);
  const port = retroflect(['run', '--dry-run', '--no-config', '--shield', '70000']);
  assert.equal(port.code, ExitCode.INVALID_ARGUMENT);
  assert.match(port.stderr, /'70000' is not a shield port\. \[E_INVALID_PORT\]/);
});

test('--device defaults by backend (rflx0 on ebpf, rflct0 on tun), run --help says so, a given name wins', () => {
  const help = retroflect(['run', '--help']);
  assert.equal(help.code, ExitCode.OK);
  const device = /--device <name> +Linux: the engine's device \(default: rflx0 on ebpf, its veth; rflct0 on tun/;
  assert.match(help.stdout.replace(/\s+/g, ' '), device);
  const plan = (args: string[]): string => {
    const r = retroflect(['run', '--dry-run', '--no-config', '--reflect', '198.51.100.9', ...args]);
    assert.equal(r.code, ExitCode.OK, r.stdout + r.stderr);
    return r.stdout;
  };
  const ebpf = plan(['--backend', 'ebpf']);
  assert.match(ebpf, /ip link add dev rflx0 type veth peer name rflx0p/);
  assert.match(ebpf, /198\.51\.100\.9\/32 dev rflx0/);
  assert.doesNotMatch(ebpf, /rflct0/);
  const tun = plan(['--backend', 'tun']);
  assert.match(tun, /198\.51\.100\.9\/32 dev rflct0/);
  assert.doesNotMatch(tun, /rflx0/);
  for (const backend of ['ebpf', 'tun']) {
    const given = plan(['--backend', backend, '--device', 'mine0']);
    assert.match(given, /198\.51\.100\.9\/32 dev mine0/, backend);
    assert.doesNotMatch(given, /rflx0|rflct0/, backend);
  }
});
