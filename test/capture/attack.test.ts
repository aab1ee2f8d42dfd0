/**
 * Capture and its clients under attack (issue 19, items 4 and 9-15), on Linux with the real engine in namespace "a"
 * (reflecting 192.0.2.1, shielding 8080/tcp) and another host in "b": NFLOG bound only when a capture could match a
 * drop, a flood of firewall drops that never runs dry (the TUN backend's own halves in a namespace of their own,
 * test/fixtures/nflog-flood.ts), a trace whose reader went away, a rate below one record per poll, a full disk (a
 * tmpfs in a mount namespace of the test's own), a FIFO nobody reads, symbolic links and other files that are not
 * the capture's to write, an NFLOG group another program took, and a stop signal to the engine while a capture runs.
 * Every assertion counts packets or drops, or reads exit codes and files; none times anything.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ControlClient } from '../../src/control/client.ts';
import { createTopology, JsonLines, NetNs, run, waitFor, type Topology } from '../helpers/netns.ts';
import { LOG_READS_PER_PASS } from '../../src/packet-sources/linux/fd-source.ts';
import { spawnEngine, waitReady, type EngineProcess } from '../e2e/engine-process.ts';

const PROBE = 'test/fixtures/probe.ts';
const node = process.execPath;
const CLI = ['--import', 'tsx', 'src/cli/main.ts'];
const R4 = '192.0.2.1';

/** Whether a listener is bound to an NFLOG group in `ns` (/proc/net/netfilter/nfnetlink_log lists them). */
async function nflogBound(ns: NetNs): Promise<boolean> {
  const r = await ns.run('cat', ['/proc/net/netfilter/nfnetlink_log']);
  return r.stdout.trim().length > 0;
}

/** Clients started on the host (outside the namespaces): killed in `after` if a test left one running. */
const hostChildren = new Set<ChildProcess>();

/** Start a CLI command in `ns` (or on the host when ns is null), collecting its output. */
interface CliRun {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<number | null>;
}

function startCli(ns: NetNs | null, args: string[], prefix: string[] = []): CliRun {
  const argv = [...prefix, 'env', 'NO_COLOR=1', node, ...CLI, ...args];
  const child = ns
    ? ns.spawn(argv[0], argv.slice(1))
    : spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout?.setEncoding('utf8');
  child.stdout?.on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => (err += d));
  if (!ns) hostChildren.add(child);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, stdout: () => out, stderr: () => err, exited };
}

/** Binds NFLOG group `group` from another program (nfnetlink_log config: CMD bind) and holds it until killed. */
const bindGroupScript = (group: number): string => `
import socket, struct, sys, time
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
s.bind((0, 0))
attr = struct.pack('=HHB3x', 5, 1, 1)
body = struct.pack('=BBH', 0, 0, socket.htons(${group})) + attr
msg = struct.pack('=IHHII', 16 + len(body), (4 << 8) | 1, 1 | 4, 1, 0) + body
s.send(msg)
ack = s.recv(4096)
err = struct.unpack('=i', ack[16:20])[0]
print('bound' if err == 0 else 'error %d' % err, flush=True)
time.sleep(600)
`;

describe('capture under attack (Linux, real engine)', { timeout: 300_000 }, () => {
  let t: Topology;
  let engine: EngineProcess;
  const dir = mkdtempSync(join(tmpdir(), 'rft-capattack-'));
  const pipe = join(dir, 'retroflect.sock');

  before(async () => {
    t = await createTopology('capatk');
    const servers = new JsonLines(t.a.spawn(node, ['--import', 'tsx', PROBE, 'serve', '8080,8081', '5354']));
    await servers.next((o) => o.ready === true);
    const args = ['--no-config', '--reflect', R4, '--shield', '8080/tcp', '--pipe', pipe, '--device', 'rflct0'];
    engine = spawnEngine(t.a, args);
    await waitReady(engine);
  });

  after(async () => {
    for (const c of hostChildren) c.kill('SIGKILL');
    engine?.child.kill('SIGKILL');
    await t?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  async function capture(params: Record<string, unknown>): Promise<{ client: ControlClient; packets: () => number }> {
    const client = await ControlClient.connect({ pipe });
    let packets = 0;
    client.onNotification((n) => {
      if (n.method === 'capture') {
        const p = n.params as { packets: unknown };
        packets += Array.isArray(p.packets) ? p.packets.length : Number(p.packets);
      }
    });
    await client.call('capture.start', params);
    return { client, packets: () => packets };
  }

  test('NFLOG is bound only while some capture could match a firewall drop', async () => {
    const reflectedOnly = await capture({ format: 'summary', verdicts: ['reflected'] });
    const icmpShield = await capture({ format: 'summary', verdicts: ['shieldDropped'], protocols: ['icmp'] });
    // The worker has taken both captures once a reflected packet shows up in the first.
    for (let i = 0; i < 20 && reflectedOnly.packets() === 0; i++) await t.a.run('ping', ['-c', '1', '-W', '1', R4]);
    assert.ok(reflectedOnly.packets() > 0);
    assert.equal(await nflogBound(t.a), false, 'no running capture can match a drop: nobody listens on the group');
    const drops = await capture({ format: 'summary', verdicts: ['forgedSourceDropped'] });
    await waitFor('the NFLOG group bound for a capture of drops', () => nflogBound(t.a), 10_000);
    await drops.client.call('capture.stop', {});
    await waitFor('the NFLOG group unbound while the other captures run', async () => !(await nflogBound(t.a)), 10_000);
    for (const c of [reflectedOnly, icmpShield, drops]) c.client.close();
  });

  test('a drop flood that never runs dry: receive() still reaches the device within one bounded pass', async () => {
    // The real TUN backend in a namespace of its own (one shield table per namespace; "a" has the engine's).
    const ns = await NetNs.create('capflood');
    try {
      await ns.must('ip', ['addr', 'add', '198.51.100.2/32', 'dev', 'lo']);
      const fixture = ['--import', 'tsx', 'test/fixtures/nflog-flood.ts', R4, '198.51.100.2'];
      const r = await ns.run(node, fixture, { timeoutMs: 120_000 });
      assert.equal(r.code, 0, r.stderr);
      type Flood = { handedBeforeDevice: number; maxHandedPerReceive: number; forged: number; logged: number };
      const o = JSON.parse(r.stdout) as Flood;
      console.log(`drop flood: ${JSON.stringify(o)}`);
      assert.ok(o.logged >= 1 && o.forged > 2 * LOG_READS_PER_PASS, `the flood outlasted one pass: ${r.stdout}`);
      // Unbounded, the first receive() drained the whole flood (thousands) before it looked at the device.
      assert.ok(o.handedBeforeDevice >= 0 && o.handedBeforeDevice <= LOG_READS_PER_PASS, r.stdout);
      assert.ok(o.maxHandedPerReceive <= LOG_READS_PER_PASS, r.stdout);
    } finally {
      await ns.destroy();
    }
  });

  test('rate below one record per poll is exact: 5/s gives at most a burst plus 5 a second', async () => {
    const c = await capture({ format: 'summary', rate: 5, protocols: ['udp'], ports: [5354] });
    const sender = `
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(100):
    s.sendto(b'n', ('${R4}', 5354))
`;
    const r = await t.a.run('python3', ['-c', sender]);
    assert.equal(r.code, 0, r.stderr);
    const windowMs = 2000;
    await new Promise((res) => setTimeout(res, windowMs));
    const seen = c.packets();
    const end = await c.client.call('capture.stop', {});
    c.client.close();
    // 100 requests + up to 100 answers are in the ring; at 5/s only 10 (+1 for the first token) may go in 2 s.
    assert.ok(seen >= 1 && seen <= 5 * (windowMs / 1000) + 2, `delivered ${seen} records in ${windowMs} ms at rate 5`);
    assert.ok(end.captured >= 100, 'the rest is delivered on capture.stop');
  });

  test('trace ends with exit 11 when its reader goes away, and gives its capture slot back', async () => {
    const tr = startCli(t.a, ['trace', '--pipe', pipe, '--protocol', 'icmp']);
    tr.child.stdout!.destroy(); // the reader of its stdout is gone (as after `| head -1`)
    let done = false;
    void tr.exited.then(() => (done = true));
    for (let i = 0; i < 100 && !done; i++) await t.a.run('ping', ['-c', '1', '-W', '1', R4]);
    assert.equal(await tr.exited, 11, tr.stderr());
    // Every slot is free again: eight captures open.
    const eight = await Promise.all(
      Array.from({ length: 8 }, () => capture({ format: 'summary', protocols: ['tcp'] })),
    );
    for (const c of eight) c.client.close();
  });

  test('eight traces whose readers went away, with no packet to show, end and give their slots back', async () => {
    const started = (): number => engine.output().match(/\[1200\] Capture \d+ started/g)?.length ?? 0;
    const startedBefore = started();
    // A filter nothing matches: these traces never get a packet to write (the old way of noticing the reader left).
    const traceArgs = ['trace', '--pipe', pipe, '--port', '9', '--protocol', 'udp'];
    const traces = Array.from({ length: 8 }, () => startCli(t.a, traceArgs));
    await waitFor('eight captures started', () => started() === startedBefore + 8, 150_000).catch((e: Error) => {
      const errs = traces.map((tr) => tr.stderr()).join(' | ');
      throw new Error(`${e.message}: ${started() - startedBefore} started; ${errs}\n${engine.output().slice(-2000)}`);
    });
    // Every slot is taken now: a ninth capture is refused.
    const ninth = await ControlClient.connect({ pipe });
    const limitReached = (e: Error & { code?: string }): boolean => e.code === 'E_LIMIT_REACHED';
    await assert.rejects(ninth.call('capture.start', { format: 'summary' }), limitReached);
    ninth.close();
    // Their readers are gone (as after `| head -1`, or a closed terminal).
    for (const tr of traces) tr.child.stdout!.destroy();
    for (const tr of traces) assert.equal(await tr.exited, 11, tr.stderr());
    // No packet was sent, yet every slot is free again: eight captures open.
    const eight = await Promise.all(Array.from({ length: 8 }, () => capture({ format: 'summary' })));
    for (const c of eight) c.client.close();
  });

  test('capture -w on a full disk exits 11 with E_OUTPUT_FAILED', async () => {
    const mnt = join(dir, 'small');
    mkdirSync(mnt);
    // A 64 KiB tmpfs in a mount namespace of its own: the host's mounts never change.
    const mount = 'mount -t tmpfs -o size=64k tmpfs "$1" && shift && exec "$@"';
    const inSmallDisk = ['unshare', '-m', '--propagation', 'private', 'sh', '-c', mount, 'sh', mnt];
    const file = join(mnt, 'x.pcapng');
    const args = ['capture', '-w', file, '--pipe', pipe, '--snaplen', 'full', '--json', '--duration', '120s'];
    const c = startCli(null, args, inSmallDisk);
    let done = false;
    void c.exited.then(() => (done = true));
    const bigPings = ['-c', '5', '-i', '0.01', '-s', '1400', '-W', '1', R4];
    for (let i = 0; i < 100 && !done; i++) await t.a.run('ping', bigPings);
    assert.equal(await c.exited, 11, c.stdout() + c.stderr());
    assert.equal(JSON.parse(c.stdout()).error.code, 'E_OUTPUT_FAILED', c.stdout());
  });

  test('capture -w to a FIFO nobody reads: --duration ends it (exit 11); a stalled reader cannot hold it', async () => {
    const fifo = join(dir, 'fifo');
    await run('mkfifo', [fifo]);
    const noReader = startCli(null, ['capture', '-w', fifo, '--pipe', pipe, '--json', '--duration', '2s']);
    assert.equal(await noReader.exited, 11, noReader.stdout() + noReader.stderr());
    assert.equal(JSON.parse(noReader.stdout()).error.code, 'E_OUTPUT_FAILED');

    // A reader that opens the FIFO and never reads: the capture fills it, then drops and counts; --duration ends it.
    const stalled = t.a.spawn('sh', ['-c', 'exec sleep 120 < "$1"', 'sh', fifo]);
    const c = startCli(null, [
      'capture', '-w', fifo, '--pipe', pipe, '--json',
      '--snaplen', 'full', '--duration', '6s',
    ]);
    let done = false;
    void c.exited.then(() => (done = true));
    while (!done) await t.a.run('ping', ['-c', '20', '-i', '0.01', '-s', '8000', '-W', '1', R4]);
    assert.equal(await c.exited, 11, c.stdout() + c.stderr());
    assert.equal(JSON.parse(c.stdout()).error.code, 'E_OUTPUT_FAILED');
    stalled.kill('SIGKILL');
  });

  test('capture -w refuses symbolic links, devices and files of other users; nothing is written', async () => {
    const shared = join(dir, 'shared');
    mkdirSync(shared);
    chmodSync(shared, 0o1777);
    const secret = join(dir, 'secret');
    writeFileSync(secret, 'secret\n', { mode: 0o600 });
    const link = join(shared, 'capture.pcapng');
    symlinkSync(secret, link);
    const viaLink = await run(node, [...CLI, 'capture', '-w', link, '--pipe', pipe, '--json', '--count', '1']);
    assert.equal(viaLink.code, 2, viaLink.stdout + viaLink.stderr);
    assert.equal(JSON.parse(viaLink.stdout).error.code, 'E_OUTPUT_REFUSED');
    assert.equal(readFileSync(secret, 'utf8'), 'secret\n');

    const device = await run(node, [...CLI, 'capture', '-w', '/dev/null', '--pipe', pipe, '--json', '--count', '1']);
    assert.equal(device.code, 2, device.stdout + device.stderr);
    assert.equal(JSON.parse(device.stdout).error.code, 'E_OUTPUT_REFUSED');

    const planted = join(shared, 'planted.pcapng');
    writeFileSync(planted, '');
    chownSync(planted, 65534, 65534);
    const theirs = await run(node, [...CLI, 'capture', '-w', planted, '--pipe', pipe, '--json', '--count', '1']);
    assert.equal(theirs.code, 2, theirs.stdout + theirs.stderr);
    assert.equal(statSync(planted).size, 0);

    // A new file is made, private to its owner.
    const fresh = join(shared, 'new.pcapng');
    const made = startCli(null, [
      'capture', '-w', fresh, '--pipe', pipe, '--json', '--count', '1', '--protocol', 'icmp',
    ]);
    let done = false;
    void made.exited.then(() => (done = true));
    for (let i = 0; i < 50 && !done; i++) await t.a.run('ping', ['-c', '1', '-W', '1', R4]);
    assert.equal(await made.exited, 0, made.stderr());
    assert.equal(statSync(fresh).mode & 0o777, 0o600);
    assert.equal(JSON.parse(made.stdout()).packets, 1);
  });

  test('an NFLOG group another program took: named in status, warned about when a capture starts', async () => {
    const status = await ControlClient.connect({ pipe });
    const before = (await status.call('status', {})).backendInfo.firewallLog as string;
    const group = Number(/NFLOG group (\d+)/.exec(before)?.[1]);
    assert.ok(group > 0, before);
    const thief = new JsonLines(t.a.spawn('python3', ['-c', bindGroupScript(group)]));
    const out = await new Promise<string>((resolve) => thief.child.stdout!.once('data', (d) => resolve(String(d))));
    assert.match(out, /bound/);
    const taken = (await status.call('status', {})).backendInfo.firewallLog as string;
    assert.match(taken, /taken by another program \(netlink port id \d+\)/);
    const drops = await capture({ format: 'summary', verdicts: ['shieldDropped'] });
    const warning = /packet worker: NFLOG group \d+ was taken by another program/;
    await waitFor('the engine to warn', () => warning.test(engine.output()), 10_000);
    drops.client.close();
    thief.child.kill('SIGKILL');
    await waitFor('the group free again', async () => !(await nflogBound(t.a)), 10_000);
    assert.equal((await status.call('status', {})).backendInfo.firewallLog, before);
    status.close();
  });

  test('SIGTERM to the engine ends a running capture with capture.end: client exit 0, a complete file', async () => {
    const file = join(dir, 'stopped.pcapng');
    const c = startCli(null, ['capture', '-w', file, '--pipe', pipe, '--json', '--protocol', 'icmp']);
    await waitFor('the pcapng header', () => existsSync(file) && statSync(file).size > 0, 20_000);
    // The header comes once the engine has taken the capture up (on ebpf, the kernel's capture maps too): the three
    // pings sent right after it are all recorded.
    const ping = await t.a.run('ping', ['-c', '3', '-i', '0.2', '-W', '2', R4]);
    assert.match(ping.stdout, /3 received/);
    engine.child.kill('SIGTERM');
    assert.equal(await c.exited, 0, c.stdout() + c.stderr());
    assert.equal(await engine.exited, 0, engine.output());
    const summary = JSON.parse(c.stdout()) as { packets: number; dropped: number };
    assert.equal(summary.packets, 6, c.stdout());
    assert.equal(summary.dropped, 0, c.stdout());
    const r = await run('tshark', ['-r', file, '-T', 'fields', '-e', 'frame.comment']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim().split('\n').length, summary.packets, 'the file holds every packet the summary counts');
  });
});
