/**
 * Port maps rewritten in the kernel (ebpf): once the server has answered, a mapped flow's packets are rewritten by
 * the tc program (mapped_flows, a cache of engine/port-mapper.ts's decisions) and never reach the user-space path,
 * whose packet socket sits on the veth peer — so the peer's receive counter is the honest observable of which path
 * a packet took. Against the real `retroflect run --backend ebpf` in a namespace, real TCP and UDP sockets: data
 * verified both ways by hash, one flow per conversation in `flows`, FIN/RST still ending the flow, ICMP errors about
 * a cached flow still carrying the mapped port, captures getting the kernel's rewritten packets, and a map removed
 * under traffic stopping the rewrite at once.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createTopology, JsonLines, run, waitFor, type NetNs, type Topology } from '../../helpers/netns.ts';
import { engineDevice, privateDir, removeDir, startEngine, type EngineHandle } from '../../helpers/engine.ts';
import { peerRxPackets } from '../../helpers/udp-stream.ts';

const PEERS = 'test/packet-sources/ebpf/fixtures/mapped-peers.ts';
const node = process.execPath;
const R4 = '203.0.113.44';
const R6 = '2001:db8:ffff::44';
const PEER = `${engineDevice('ebpf')}p`;
/** The servers' ports (T) and the ports clients use (P). */
const TCP_T = 5601;
const UDP_T = 5602;
const TCP_P = 6601;
const UDP_P = 6602;
const MAPS = ['--map', `${TCP_P}=${TCP_T}/tcp`, '--map', `${UDP_P}=${UDP_T}/udp`, '--temporary'];

async function peers(ns: NetNs, args: string[]): Promise<Record<string, unknown>> {
  const r = await ns.run(node, ['--import', 'tsx', PEERS, ...args], { timeoutMs: 120_000 });
  assert.equal(r.code, 0, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
}

/** Packets of `protocol` the engine counted as reflected for `address` (kernel and user space together). */
async function reflected(engine: EngineHandle, address: string, protocol: 'tcp' | 'udp'): Promise<number> {
  const stats = (await engine.cli(['stats'])).json;
  return stats.byAddress.find((e: { address: string }) => e.address === address).byProtocol[protocol].packets;
}

type Flow = { protocol: string; reflectAddress: string; clientPort: number; serverPort: number;
  mappedFromPort: number | null; packets: number; bytes: number; state: string };

describe('ebpf backend: port-mapped flows rewritten in the kernel', { timeout: 600_000 }, () => {
  let t: Topology;
  let dir: string;
  let engine: EngineHandle | undefined;
  let servers: JsonLines;

  before(async () => {
    t = await createTopology('kmap');
    dir = privateDir('kmap');
    servers = new JsonLines(t.a.spawn(node, ['--import', 'tsx', PEERS, 'serve', String(TCP_T), String(UDP_T)]));
    await servers.next((o) => o.ready === true);
    engine = await startEngine(t.a, dir, { config: false, args: ['--reflect', R4, R6, '--backend', 'ebpf'] });
    assert.equal((await engine.cli(['address', 'add', R4, R6, ...MAPS])).code, 0);
  });

  after(async () => {
    await engine?.kill();
    servers?.child.kill('SIGTERM');
    await t?.destroy();
    removeDir(dir);
  });

  test('a mapped TCP transfer runs in the kernel: intact both ways, the user-space path sees a handful', async () => {
    const up = 8 << 20;
    const down = 8 << 20;
    for (const host of [R4, R6]) {
      const rxBefore = await peerRxPackets(t.a, PEER);
      const countedBefore = await reflected(engine!, host, 'tcp');
      const r = await peers(t.a, ['bulk', host, String(TCP_P), String(up), String(down)]);
      assert.equal(r.ok, true, JSON.stringify(r));
      const server = r.server as { peer: string; peerPort: number; received: number; sha256: string };
      assert.deepEqual(server, { peer: host, peerPort: r.local, received: up, sha256: r.sentSha256 }, host);
      assert.equal(r.downloaded, down);
      assert.equal(r.downloadOk, true, 'the download arrived byte for byte');
      // One flow for the conversation, with the ports the server saw, the port the client used, every byte, closed
      // (asked first: a closed flow shows for 10 s, and a CLI call takes seconds on a loaded machine).
      const flows = ((await engine!.cli(['flows'])).json.flows as Flow[]).filter(
        (f) => f.protocol === 'tcp' && f.reflectAddress === host && f.clientPort === r.local,
      );
      assert.equal(flows.length, 1, JSON.stringify(flows));
      const [f] = flows;
      assert.deepEqual([f.serverPort, f.mappedFromPort, f.state], [TCP_T, TCP_P, 'closed'], JSON.stringify(f));
      assert.ok(f.bytes >= up + down && f.bytes < (up + down) * 1.1, JSON.stringify(f));
      const userPath = (await peerRxPackets(t.a, PEER)) - rxBefore;
      const counted = (await reflected(engine!, host, 'tcp')) - countedBefore;
      // 16 MiB are hundreds of segments (GSO: up to 64 KiB each) and their ACKs; the user-space path gets the SYN,
      // the SYN-ACK, the FINs and the ACKs that follow them.
      assert.ok(counted >= 200, `${host}: only ${counted} packets counted`);
      assert.ok(userPath <= 12, `${host}: ${userPath} of ${counted} packets took the user-space path`);
      assert.ok(f.packets >= counted - 2 && f.packets <= counted, `flow ${f.packets} packets, counted ${counted}`);
    }
  });

  test('a mapped UDP flow goes to the kernel after its first reply; ICMP errors about it map back', async () => {
    for (const host of [R4, R6]) {
      const rxBefore = await peerRxPackets(t.a, PEER);
      const countedBefore = await reflected(engine!, host, 'udp');
      const r = await peers(t.a, ['udp', host, String(UDP_P), '300']);
      // Each echo reached the connected socket, so it came from R:P; "again" went to a closed socket: the port
      // unreachable (user-space path) quotes the client's datagram with its own port again.
      await new Promise((res) => setTimeout(res, 1600)); // the server is back (see the fixture)
      assert.deepEqual(
        { replies: r.replies, allEchoed: r.allEchoed, servers: r.servers, bye: r.bye, refused: r.refused },
        { replies: 300, allEchoed: true, servers: [`server=${UDP_T}`], bye: `server=${UDP_T} bye`, refused: true },
        host,
      );
      const counted = (await reflected(engine!, host, 'udp')) - countedBefore;
      assert.equal(counted, 2 * 301 + 1, `${host}: 300 datagrams, "bye", their echoes and "again"`);
      const userPath = (await peerRxPackets(t.a, PEER)) - rxBefore;
      // The first datagram and its echo, then the ICMP error; nothing else.
      assert.ok(userPath <= 5, `${host}: ${userPath} packets took the user-space path`);
    }
  });

  test('an RST ends a cached flow (closed in flows); a new connection on the same ports is mapped afresh', async () => {
    const local = 47123;
    const reset = await peers(t.a, ['reset', R4, String(TCP_P), String(local)]);
    assert.equal(reset.ok, true, JSON.stringify(reset));
    await servers.next((o) => o.tick === 'reset-me' && o.peerPort === local);
    const flowsOf = async () => ((await engine!.cli(['flows'])).json.flows as Flow[]).filter(
      (f) => f.protocol === 'tcp' && f.reflectAddress === R4 && f.clientPort === local,
    );
    const ended = await flowsOf();
    assert.deepEqual(ended.map((f) => [f.serverPort, f.mappedFromPort, f.state]), [[TCP_T, TCP_P, 'closed']]);
    // The same four-tuple again: the SYN on a finished flow starts a new mapped flow, handed to the kernel anew.
    const rxBefore = await peerRxPackets(t.a, PEER);
    const r = await peers(t.a, ['bulk', R4, String(TCP_P), String(4 << 20), String(4 << 20), String(local)]);
    assert.equal(r.downloadOk, true, JSON.stringify(r));
    assert.equal((r.server as { sha256: string }).sha256, r.sentSha256);
    assert.ok((await peerRxPackets(t.a, PEER)) - rxBefore <= 12, 'the new connection was not handed to the kernel');
    const again = await flowsOf();
    assert.equal(again.length, 1, JSON.stringify(again));
    assert.ok(again[0].bytes >= 8 << 20 && again[0].bytes < (8 << 20) * 1.1, JSON.stringify(again));
  });

  test('a capture of the target port gets the kernel-rewritten packets of a mapped flow, as reflected', async () => {
    const file = join(dir, 'mapped.pcapng');
    const args = ['capture', '-w', file, '--pipe', engine!.pipe, '--port', String(TCP_T), '--duration', '60s'];
    const capture = t.a.spawn(node, ['--import', 'tsx', 'src/cli/main.ts', ...args]);
    let captureErr = '';
    capture.stderr!.on('data', (d: Buffer) => (captureErr += d.toString()));
    const exited = new Promise<number | null>((resolve) => capture.once('exit', (code) => resolve(code)));
    await waitFor('the pcapng header', () => existsSync(file) && statSync(file).size > 0, 20_000);
    await new Promise((res) => setTimeout(res, 500)); // the kernel takes the capture up just after the header
    const rxBefore = await peerRxPackets(t.a, PEER);
    const r = await peers(t.a, ['bulk', R4, String(TCP_P), String(1 << 20), String(1 << 20)]);
    assert.equal(r.downloadOk, true, JSON.stringify(r));
    assert.ok((await peerRxPackets(t.a, PEER)) - rxBefore <= 12, 'the transfer was not handed to the kernel');
    await new Promise((res) => setTimeout(res, 300));
    capture.kill('SIGINT');
    assert.equal(await exited, 0, captureErr);
    const fields = ['ip.src', 'tcp.srcport', 'ip.dst', 'tcp.dstport', 'tcp.flags.syn', 'frame.comment'];
    const shark = await run('tshark', ['-r', file, '-T', 'fields', ...fields.flatMap((f) => ['-e', f])]);
    assert.equal(shark.code, 0, shark.stderr);
    const rows = shark.stdout.trim().split('\n').map((line) => line.split('\t'));
    // As reflected: the client's packets arrive from R:c at the server's L:T, the server's from R:P at L:c.
    const toServer = rows.filter((x) => x[0] === R4 && x[1] === String(r.local) && x[3] === String(TCP_T));
    const toClient = rows.filter((x) => x[0] === R4 && x[1] === String(TCP_P) && x[3] === String(r.local));
    assert.equal(toServer.length + toClient.length, rows.length, shark.stdout.slice(0, 2000));
    // Most of them came from the kernel's ring (the SYNs from the user-space path), all marked reflected.
    assert.ok(toServer.length >= 10 && toClient.length >= 10, `${toServer.length} / ${toClient.length}`);
    assert.ok(rows.every((x) => /reflected/.test(x[5])), shark.stdout.slice(0, 2000));
  });

  test('removing the map under traffic: no segment sent after the removal reaches the mapped server', async () => {
    const args = ['--import', 'tsx', PEERS, 'ticks', R4, String(TCP_P), '40', '150'];
    const ticks = t.a.run(node, args, { timeoutMs: 60_000 });
    let seen = 0;
    while (seen < 20) {
      await servers.next((o) => typeof o.tick === 'string');
      seen++;
    }
    const rxBefore = await peerRxPackets(t.a, PEER);
    await new Promise((r) => setTimeout(r, 400));
    const rxTicks = (await peerRxPackets(t.a, PEER)) - rxBefore;
    assert.ok(rxTicks <= 2, 'the ticks took the user-space path before the removal');
    const rm = await engine!.cli(['address', 'remove', R4, '--map', String(TCP_P), '--temporary']);
    assert.equal(rm.code, 0, rm.stderr);
    const removedAt = Date.now();
    const r = await ticks;
    const client = JSON.parse(r.stdout.trim()) as { sent: number; error: string | null };
    // The connection's next segment went to R:6601 itself (nothing listens there): reset.
    assert.notEqual(client.error, null, JSON.stringify(client));
    await new Promise((res) => setTimeout(res, 300));
    const late: string[] = [];
    for (;;) {
      const line = await servers.next((o) => typeof o.tick === 'string', 200).catch(() => null);
      if (!line) break;
      const sentAt = Number(String(line.tick).split(' ')[1]);
      if (sentAt > removedAt) late.push(String(line.tick));
    }
    assert.deepEqual(late, [], 'ticks sent after the removal reached the server on the target');
    // R6 keeps its map, and R4 still maps UDP.
    const v6 = await peers(t.a, ['bulk', R6, String(TCP_P), '1000', '1000']);
    assert.equal((v6.server as { received: number }).received, 1000);
    assert.equal((await engine!.cli(['address', 'add', R4, '--map', `${TCP_P}=${TCP_T}/tcp`, '--temporary'])).code, 0);
  });
});
