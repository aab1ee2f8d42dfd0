/**
 * End to end on a host that forwards IP (a router, a container host): namespace "a" runs the real `retroflect run`
 * with forwarding on (and reverse-path filtering off, as on a router with asymmetric routes); "b" is another host on
 * the link that routes the reflect addresses via a, and sends forged packets through raw sockets
 * (test/fixtures/raw-send.ts). Only packets a itself sends may be reflected: b's are dropped on a's forward hook and
 * counted in the nft counter `forwarded` (reported by `stats` as forwardedDropped); no packet is reflected twice;
 * ::ffff:<R> is as forged as R.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createTopology, JsonLines, waitFor, type NetNs, type Topology } from '../helpers/netns.ts';
import { privateDir, removeDir, retroflect, startEngine, type EngineHandle } from '../helpers/engine.ts';

const node = process.execPath;
const PROBE = 'test/fixtures/probe.ts';
const RAW = 'test/fixtures/raw-send.ts';
const R4 = '192.0.2.1';
const R6 = '2001:db8::1';
/** Shielded (a server listens) and open (a logger listens) UDP ports on a. */
const SHIELDED = 5353;
const OPEN = 5355;

async function rawSend(ns: NetNs, src: string, dst: string, port: number, count: number, ttl = 64, payload = 'forged'): Promise<number> {
  const r = await ns.run(node, ['--import', 'tsx', RAW, src, dst, String(port), String(count), String(ttl), payload], { timeoutMs: 60_000 });
  const last = JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}') as { sent?: number; failed?: number };
  assert.equal(last.failed, 0, r.stdout + r.stderr);
  return last.sent!;
}

/** The packets of a named counter of our nft table in `ns`. */
async function nftCounter(ns: NetNs, name: string): Promise<number> {
  const doc = JSON.parse(await ns.must('nft', ['-j', 'list', 'counter', 'inet', 'retroflect', name])) as { nftables: { counter?: { packets: number } }[] };
  return doc.nftables.find((o) => o.counter)!.counter!.packets;
}

describe('a host that forwards IP reflects only its own packets', { timeout: 240_000 }, () => {
  let t: Topology;
  let dir: string;
  let engine: EngineHandle | undefined;
  const loggers: JsonLines[] = [];
  const reflected = async () => ((await engine!.cli(['stats'])).json as { reflected: { packets: number } }).reflected.packets;
  const reflectedUdp = async () => ((await engine!.cli(['stats'])).json as { byProtocol: { udp: { packets: number } } }).byProtocol.udp.packets;
  const forged = async () => ((await engine!.cli(['stats'])).json as { forgedSourceDropped: { packets: number } }).forgedSourceDropped.packets;

  async function logger(port: number): Promise<JsonLines> {
    const l = new JsonLines(t.a.spawn(node, ['--import', 'tsx', PROBE, 'udp-log', String(port)]));
    await l.next((o) => o.ready === true);
    loggers.push(l);
    return l;
  }

  before(async () => {
    t = await createTopology('fwd');
    dir = privateDir('fwd');
    await t.a.must('sysctl', ['-qw', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1', 'net.ipv4.conf.all.rp_filter=0', `net.ipv4.conf.${t.aIf}.rp_filter=0`]);
    await t.b.must('ip', ['-4', 'route', 'add', `${R4}/32`, 'via', t.a4]);
    await t.b.must('ip', ['-6', 'route', 'add', `${R6}/128`, 'via', t.a6]);
    engine = await startEngine(t.a, dir, { config: false, args: ['--reflect', R4, R6, '--shield', `${SHIELDED}/udp`] });
  });

  after(async () => {
    for (const l of loggers) l.child.kill();
    await engine?.kill();
    await t?.destroy();
    removeDir(dir);
  });

  test("another host's datagrams to a reflect address routed via us are dropped on the forward hook, not reflected back (IPv4, IPv6)", async () => {
    const r0 = await reflected();
    const f0 = await nftCounter(t.a, 'forwarded');
    for (const host of [R4, R6]) {
      const r = await t.b.run(node, ['--import', 'tsx', PROBE, 'udp', host, '5354', '1000']);
      // Reflected, the datagram would come back to b from the reflect address with its own payload.
      assert.deepEqual(JSON.parse(r.stdout), { ok: false, error: 'timeout' }, `${host}: ${r.stdout}`);
    }
    const f1 = await nftCounter(t.a, 'forwarded');
    assert.ok(f1 >= f0 + 2);
    assert.equal(await reflected(), r0, 'the engine reflected a packet of another host');
    // `stats` reports the forward hook's drops (one nft reading serves a second of requests: wait for a fresh one).
    type Count = { packets: number; bytes: number };
    let viaStats: Count = { packets: 0, bytes: 0 };
    await waitFor('stats to report the forwarded drops', async () => {
      viaStats = ((await engine!.cli(['stats'])).json as { forwardedDropped: Count }).forwardedDropped;
      return viaStats.packets >= f1;
    });
    const nftNow = await nftCounter(t.a, 'forwarded');
    assert.ok(viaStats.packets <= nftNow && viaStats.bytes >= viaStats.packets * 28, JSON.stringify(viaStats));
    const text = await retroflect(t.a, ['stats', '--pipe', engine!.pipe]);
    assert.match(text.stdout, /^forwarded dropped: +(\d+) packets, /m, text.stdout);
    assert.ok(Number(/^forwarded dropped: +(\d+) packets/m.exec(text.stdout)![1]) >= f1);
    // a's own traffic to the reflect addresses is reflected as before.
    assert.equal((await t.a.run('ping', ['-c', '2', '-i', '0.2', '-W', '2', R4])).code, 0);
    assert.equal((await t.a.run('ping', ['-6', '-c', '2', '-i', '0.2', '-W', '2', R6])).code, 0);
  });

  test("another host forging our address as source cannot reach a shielded server through the reflect address (IPv6)", async () => {
    const log = await logger(SHIELDED);
    // IPv6 takes a packet from one of our own addresses off the wire (IPv4 drops it as a martian).
    await rawSend(t.b, t.a6, R6, SHIELDED, 3);
    // The same datagram from a itself reaches the server through the reflect address: the path is there.
    await t.a.must(node, ['--import', 'tsx', PROBE, 'udp-from', t.a6, R6, String(SHIELDED), '1']);
    const got = await log.next((o) => o.from === R6);
    assert.equal(got.data, '0', 'the forged datagram reached the shielded server');
    await assert.rejects(log.next((o) => o.data === 'forged', 300), /no matching line/, 'a forged datagram reached the shielded server');
  });

  test('::ffff:<R> from another host is as forged as R: dropped and counted; the genuine source still arrives', async () => {
    const log = await logger(OPEN);
    const before = await forged();
    await rawSend(t.b, `::ffff:${R4}`, t.a6, OPEN, 3);
    await rawSend(t.b, t.b6, t.a6, OPEN, 1, 64, 'genuine');
    await log.next((o) => o.data === 'genuine');
    await assert.rejects(log.next((o) => o.data === 'forged', 300), /no matching line/, 'a datagram from ::ffff:R reached the server');
    assert.equal((await forged()) - before, 3);
  });

  test('R → R from another host (TTL 255) is never reflected: dropped on the way in and counted (IPv4, IPv6)', async () => {
    const r0 = await reflected();
    const f0 = await nftCounter(t.a, 'forwarded');
    const g0 = await nftCounter(t.a, 'forged_source');
    const sent = (await rawSend(t.b, R4, R4, OPEN, 10, 255)) + (await rawSend(t.b, R6, R6, OPEN, 10, 255));
    // Dropped before the device (forwarded), or as a forged source: either way once, and never reflected.
    const dropped = (await nftCounter(t.a, 'forwarded')) - f0 + (await nftCounter(t.a, 'forged_source')) - g0;
    assert.equal(dropped, sent);
    assert.equal(await reflected(), r0);
  });

  test('a packet this host sends from R to R (TTL 255) is reflected exactly once, then dropped (IPv4, IPv6)', async () => {
    const r0 = await reflectedUdp();
    const f0 = await nftCounter(t.a, 'forwarded');
    const sent = (await rawSend(t.a, R4, R4, OPEN, 10, 255)) + (await rawSend(t.a, R6, R6, OPEN, 10, 255));
    assert.equal(sent, 20);
    // Reflected, it is still R → R: the kernel routes it back towards the device, and the forward hook drops it.
    assert.equal((await nftCounter(t.a, 'forwarded')) - f0, sent);
    // UDP only: the kernel answers a packet forwarded out of the device it came in on with an ICMP redirect to its
    // source, R, which is a packet of its own and reflected once too.
    assert.equal((await reflectedUdp()) - r0, sent);
  });

  test('a flood of forged R → R from another host leaves ping through R untouched; the drops are counted', async (ctx) => {
    const r0 = await reflected();
    const f0 = await nftCounter(t.a, 'forwarded');
    const flood = new JsonLines(t.b.spawn(node, ['--import', 'tsx', RAW, R4, R4, String(OPEN), '200000', '255']));
    await flood.next((o) => o.started === true);
    const ping = await t.a.run('ping', ['-c', '20', '-i', '0.02', '-W', '1', R4]);
    const done = await flood.next((o) => typeof o.sent === 'number', 120_000);
    assert.match(ping.stdout, /20 packets transmitted, 20 received/, ping.stdout);
    const dropped = (await nftCounter(t.a, 'forwarded')) - f0;
    ctx.diagnostic(JSON.stringify({ sent: done.sent, droppedForwarded: dropped, ping: /\d+ packets transmitted.*|rtt .*/g.exec(ping.stdout)?.[0] ?? '', rtt: /rtt .*/.exec(ping.stdout)?.[0] ?? '' }));
    // A veth may drop some of a flood before a sees it (its backlog), never more.
    assert.ok(dropped > 0.5 * (done.sent as number) && dropped <= (done.sent as number), `${dropped} of ${done.sent}`);
    // Only the 20 echo requests were reflected.
    assert.equal((await reflected()) - r0, 40); // each echo request, and the reply to it
  });
});
