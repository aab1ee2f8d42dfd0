/**
 * `retroflect run` as systemd runs it (INVOCATION_ID set, stdout/stderr to the journal), for real in a namespace:
 * every event line carries its syslog priority prefix and event ID (journald stores <3>/<4>/<6> as PRIORITY), and
 * `--log-file` gets the same events with timestamps: started, configuration changed through the pipe, an address
 * refused, capture started/stopped, stopped (why). A start that is refused says so in both places and ends with its
 * exit code. Without INVOCATION_ID/JOURNAL_STREAM the console lines have no prefix.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createTopology, waitFor, type Topology } from '../helpers/netns.ts';
import { underSystemd } from '../../src/platform/journal.ts';

const node = process.execPath;

interface Run {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  exited: Promise<number | string>;
}

function startRun(t: Topology, args: string[], env: Record<string, string>): Run {
  const { INVOCATION_ID: _i, JOURNAL_STREAM: _j, ...base } = process.env;
  const argv = ['--import', 'tsx', 'src/cli/main.ts', 'run', ...args];
  const child = t.a.spawn(node, argv, { env: { ...base, NO_COLOR: '1', ...env } });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => resolve(code ?? signal ?? -1));
  });
  return { child, stdout: () => out, stderr: () => err, exited };
}

describe('run under systemd: journald priorities and --log-file', { timeout: 120_000 }, () => {
  let t: Topology;
  const dir = mkdtempSync(join(tmpdir(), 'rft-journal-'));
  const pipe = join(dir, 'retroflect.sock');

  before(async () => {
    t = await createTopology('svcjournal');
  });
  after(async () => {
    await t?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  const cli = async (args: string[]): Promise<{ code: number; stdout: string; stderr: string }> =>
    t.a.run(node, ['--import', 'tsx', 'src/cli/main.ts', ...args, '--pipe', pipe, '--json']);

  test('systemd detection: JOURNAL_STREAM or INVOCATION_ID, on Linux only', () => {
    assert.equal(underSystemd({ JOURNAL_STREAM: '8:12345' }, 'linux'), true);
    assert.equal(underSystemd({ INVOCATION_ID: 'abc' }, 'linux'), true);
    assert.equal(underSystemd({}, 'linux'), false);
    assert.equal(underSystemd({ INVOCATION_ID: 'abc' }, 'win32'), false);
  });

  test('events with priorities on stdout/stderr, with timestamps in the log file, start to SIGTERM', async () => {
    const logFile = join(dir, 'logs', 'engine.log');
    const args = ['--no-config', '--reflect', '192.0.2.1', '--shield', '8080/tcp', '--pipe', pipe];
    args.push('--device', 'rflctj0');
    const run = startRun(t, [...args, '--log-file', logFile], { INVOCATION_ID: '0123456789abcdef' });
    await waitFor('Ready.', () => run.stdout().includes('Ready.') || run.child.exitCode !== null, 30_000);
    const started =
      /^<6>\[1000\] retroflect \S+ started \(pid \d+\)\. Backend: (ebpf|tun) .*Reflect addresses: 192\.0\.2\.1/m;
    assert.match(run.stdout(), started, run.stdout() + run.stderr());
    assert.match(run.stdout(), /^<6>\[1000\] .*Shield ports: 8080\/tcp\./m);

    // The client is named from the kernel's word on the socket's peer (SO_PEERCRED): this CLI process, as root.
    const addArgs = ['address', 'add', '192.0.2.5', '--pipe', pipe, '--json'];
    const adder = t.a.spawn(node, ['--import', 'tsx', 'src/cli/main.ts', ...addArgs]);
    const adderPid = adder.pid!; // `ip netns exec` execs the program: the same process
    assert.equal(await new Promise((resolve) => adder.once('exit', resolve)), 0);
    const refused = await cli(['address', 'add', t.a4]); // this host's own address: refused by the host check
    assert.equal(refused.code, 4, refused.stdout + refused.stderr);
    const shield = await cli(['shield', 'remove', '8080/tcp']);
    assert.equal(shield.code, 0, shield.stdout + shield.stderr);
    const capture = await cli(['capture', '-w', join(dir, 'c.pcapng'), '--duration', '1s']);
    assert.equal(capture.code, 0, capture.stdout + capture.stderr);
    await waitFor('capture stopped event', () => run.stdout().includes('[1201]'));

    run.child.kill('SIGTERM');
    assert.equal(await run.exited, 0, run.stdout() + run.stderr());
    const out = run.stdout();
    const err = run.stderr();
    const changed = '<6>\\[1100\\] Configuration changed through the control pipe by client';
    const byAdder = `pid ${adderPid} \\(node\\), uid 0 \\(root\\)`;
    assert.match(out, new RegExp(`^${changed} ${byAdder}: added reflect address 192\\.0\\.2\\.5\\.$`, 'm'));
    const byRemover = 'pid \\d+ \\(node\\), uid 0 \\(root\\)';
    assert.match(out, new RegExp(`^${changed} ${byRemover}: removed shield port 8080/tcp\\.$`, 'm'));
    assert.doesNotMatch(out, new RegExp(`${byAdder}: removed`), 'each change names its own client');
    const own = t.a4.replace(/\./g, '\\.');
    assert.match(err, new RegExp(`^<4>\\[2100\\] Refused: .*${own}.*\\[E_INVALID_ADDRESS\\]$`, 'm'));
    assert.match(out, /^<6>\[1200\] Capture 1 started \(every packet; snaplen \d+\)\.$/m);
    assert.match(out, /^<6>\[1201\] Capture 1 stopped: 0 packets delivered, 0 dropped\.$/m);
    assert.match(out, /^<6>\[1001\] retroflect stopped: signal SIGTERM\. Exit code 0\.$/m);

    const lines = readFileSync(logFile, 'utf8').trim().split('\n');
    const stamped = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARNING|ERROR) +(\d{4}) /;
    const ids = lines.map((l) => stamped.exec(l)).filter((m) => m !== null).map((m) => `${m![1]} ${m![2]}`);
    const expected = ['INFO 1000', 'INFO 1100', 'WARNING 2100', 'INFO 1100', 'INFO 1200', 'INFO 1201', 'INFO 1001'];
    assert.deepEqual(ids, expected, lines.join('\n'));
    const addedLine = `INFO +1100 Configuration changed through the control pipe by client ${byAdder}: added`;
    assert.match(lines[1], new RegExp(addedLine));
    assert.match(lines.at(-1)!, /retroflect stopped: signal SIGTERM\. Exit code 0\.$/);
  });

  test('a refused start: the reason as a warning, then stopped with its code; no prefix off systemd', async () => {
    const logFile = join(dir, 'refused.log');
    const refusedArgs = ['--no-config', '--reflect', t.a4, '--pipe', pipe, '--device', 'rflctj1'];
    const journal = startRun(t, [...refusedArgs, '--log-file', logFile], { JOURNAL_STREAM: '8:4242' });
    assert.equal(await journal.exited, 4, journal.stdout() + journal.stderr());
    assert.match(journal.stderr(), /^<4>\[2100\] Start refused: .*\[E_INVALID_ADDRESS\]$/m);
    assert.match(journal.stdout(), /^<6>\[1001\] retroflect stopped: it could not start\. Exit code 4\.$/m);
    const refusedThenStopped = [
      /WARNING 2100 Start refused: [^\n]*\n/,
      /[^\n]*INFO {4}1001 retroflect stopped: it could not start\. Exit code 4\.\n$/,
    ];
    assert.match(readFileSync(logFile, 'utf8'), new RegExp(refusedThenStopped.map((r) => r.source).join('')));

    const console = startRun(t, ['--no-config', '--reflect', t.a4, '--pipe', pipe, '--device', 'rflctj1'], {});
    assert.equal(await console.exited, 4);
    assert.match(console.stdout(), /^\[1001\] retroflect stopped: it could not start\. Exit code 4\.$/m);
    assert.doesNotMatch(console.stdout() + console.stderr(), /^<\d>/m);
    assert.match(console.stderr(), /^error: /m, 'the error itself is printed once, as before');
  });
});
