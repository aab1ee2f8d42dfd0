/**
 * Capture under load (Linux, real engine): iperf3 through the reflect path while captures run. A capture of whole
 * packets cannot keep up and counts its drops instead of slowing the data plane; a client that stops reading is
 * disconnected, while another capture client and the data plane carry on. No timing asserts (bench/reflect-path.ts
 * measures the cost): only that traffic flows, drops are counted and the right connection is closed.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ControlClient } from '../../src/control/client.ts';
import { createTopology, JsonLines, run, waitFor, type Topology } from '../helpers/netns.ts';
import { spawnEngine, waitReady, type EngineProcess } from '../e2e/engine-process.ts';

const node = process.execPath;
const PROBE = 'test/fixtures/probe.ts';
const R4 = '192.0.2.1';
const IPERF_PORT = 5201;

describe('capture under load (Linux, real engine, iperf3)', { timeout: 180_000 }, () => {
  let t: Topology;
  let engine: EngineProcess | undefined;
  const dir = mkdtempSync(join(tmpdir(), 'rft-capload-'));
  const pipe = join(dir, 'retroflect.sock');

  before(async () => {
    t = await createTopology('capload');
    t.a.spawn('iperf3', ['-s', '-p', String(IPERF_PORT)]);
    const servers = new JsonLines(t.a.spawn(node, ['--import', 'tsx', PROBE, 'serve', '8081', '']));
    await servers.next((o) => o.ready === true);
    engine = spawnEngine(t.a, ['--no-config', '--reflect', R4, '--pipe', pipe, '--device', 'rflct0']);
    await waitReady(engine);
  });

  after(async () => {
    engine?.child.kill('SIGKILL');
    await t?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  async function iperf(seconds: number): Promise<number> {
    const r = await t.a.run('iperf3', ['-c', R4, '-p', String(IPERF_PORT), '-t', String(seconds), '-J'], { timeoutMs: (seconds + 20) * 1000 });
    const doc = JSON.parse(r.stdout) as { end?: { sum_received?: { bits_per_second: number } }; error?: string };
    assert.ok(doc.end?.sum_received, `iperf3 failed: ${doc.error ?? r.stderr}`);
    return doc.end.sum_received.bits_per_second;
  }

  test('a full-packet capture under iperf3 load counts its drops; the traffic still flows', async () => {
    const file = join(dir, 'load.pcapng');
    const cap = t.a.spawn('env', ['NO_COLOR=1', node, '--import', 'tsx', 'src/cli/main.ts', 'capture', '-w', file, '--snaplen', 'full', '--json', '--pipe', pipe]);
    let out = '';
    cap.stdout!.setEncoding('utf8');
    cap.stdout!.on('data', (d: string) => (out += d));
    const exited = new Promise<number | null>((r) => cap.once('exit', (c) => r(c)));
    await waitFor('the capture to start', () => existsSync(file) && statSync(file).size > 0, 20_000);
    const bps = await iperf(3);
    assert.ok(bps > 0);
    cap.kill('SIGINT');
    assert.equal(await exited, 0);
    console.log(`iperf3 ${(bps / 1e9).toFixed(2)} Gbit/s with a full capture: ${out.trim()}`);
    const summary = JSON.parse(out) as { packets: number; dropped: number };
    assert.ok(summary.packets > 0, out);
    assert.ok(summary.dropped > 0, `expected drops under load with whole packets: ${out}`);
    // What was kept is a well-formed file with exactly that many packets.
    const r = await run('tshark', ['-r', file, '-T', 'fields', '-e', 'frame.number']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim().split('\n').length, summary.packets);
  });

  test('a client that stops reading is disconnected; another capture and the data plane carry on', async () => {
    // The stalled client: hello, capture.start of whole packets, then it never reads again.
    const stalled = net.connect(pipe);
    await new Promise<void>((resolve, reject) => stalled.once('connect', resolve).once('error', reject));
    stalled.write(JSON.stringify({ id: 1, method: 'hello', params: { protocol: 1 } }) + '\n');
    stalled.write(JSON.stringify({ id: 2, method: 'capture.start', params: { format: 'pcapng', snaplen: 65535, rate: 100000 } }) + '\n');
    await new Promise((r) => setTimeout(r, 500));
    stalled.pause();
    const stalledClosed = new Promise<void>((r) => stalled.once('close', () => r()));

    // A well-behaved capture client on its own connection.
    const good = await ControlClient.connect({ pipe });
    let goodPackets = 0;
    let goodEnd: unknown = null;
    good.onNotification((n) => {
      if (n.method === 'capture') goodPackets += (n.params as { packets: unknown[] }).packets.length;
      if (n.method === 'capture.end') goodEnd = n.params;
    });
    await good.call('capture.start', { format: 'summary', snaplen: 128, protocols: ['tcp'] });

    const bps = await iperf(4);
    assert.ok(bps > 0);
    console.log(`iperf3 ${(bps / 1e9).toFixed(2)} Gbit/s with a stalled and a good capture client; good got ${goodPackets}`);
    // A paused socket does not see the end of the connection; read again: what was sent, then the close.
    await new Promise((r) => setTimeout(r, 6000));
    stalled.on('data', () => undefined);
    stalled.resume();
    await Promise.race([stalledClosed, new Promise((_, reject) => setTimeout(() => reject(new Error('the stalled client was not disconnected')), 20_000))]);

    // The good client still gets packets, and the engine still reflects and answers.
    const before = goodPackets;
    assert.ok(before > 0);
    const probe = await t.a.run(node, ['--import', 'tsx', PROBE, 'tcp', R4, '8081', '3000']);
    assert.match(probe.stdout, /peer=192\.0\.2\.1/);
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(goodPackets > before, 'the good client kept receiving');
    const stop = await good.call('capture.stop', {});
    assert.equal(stop.reason, 'stopped');
    assert.equal(goodEnd !== null, true);
    const status = await good.call('status', {});
    assert.equal(status.state, 'running');
    good.close();
  });
});
