/**
 * The NFLOG reader (src/platform/linux/nflog.ts): its netlink messages checked field by field against
 * linux/netfilter/nfnetlink_log.h, its parser fed hand-built kernel messages (and garbage), and in a namespace the
 * real kernel: the engine skips a log group another program holds, and dying frees its own.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ackResult, bindCommand, configMessage, deliveryOptions, FIRST_LOG_GROUP, forEachLoggedPacket, unbindCommand } from '../../../src/platform/linux/nflog.ts';
import { createTopology, JsonLines, waitFor, type NetNs, type Topology } from '../../helpers/netns.ts';
import { spawnEngine, waitReady, type EngineProcess } from '../../e2e/engine-process.ts';

/** One netlink attribute as the kernel lays it out: u16 length (header included), u16 type, payload, pad to 4. */
function attr(type: number, payload: Buffer): Buffer {
  const out = Buffer.alloc((4 + payload.length + 3) & ~3);
  out.writeUInt16LE(4 + payload.length, 0);
  out.writeUInt16LE(type, 2);
  payload.copy(out, 4);
  return out;
}

/** An NFULNL_MSG_PACKET (type 0x0400) for group 21062 with the given attributes. */
function packetMessage(attrs: Buffer[]): Buffer {
  const body = Buffer.concat(attrs);
  const msg = Buffer.alloc(20 + body.length);
  msg.writeUInt32LE(msg.length, 0);
  msg.writeUInt16LE(0x0400, 4);
  msg.writeUInt8(2, 16); // AF_INET
  msg.writeUInt16BE(21062, 18);
  body.copy(msg, 20);
  return msg;
}

const NFULA_PACKET_HDR = 1;
const NFULA_TIMESTAMP = 3;
const NFULA_IFINDEX_INDEV = 4;
const NFULA_PAYLOAD = 9;
const NFULA_PREFIX = 10;
const PREFIXES = [Buffer.from('retroflect shield'), Buffer.from('retroflect forged')];

const cstr = (s: string): Buffer => Buffer.from(`${s}\0`);
const be32 = (v: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v);
  return b;
};
function timestamp(sec: number, usec: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeBigUInt64BE(BigInt(sec), 0);
  b.writeBigUInt64BE(BigInt(usec), 8);
  return b;
}

describe('NFLOG messages', () => {
  test('a config request: nlmsghdr, nfgenmsg with the group big-endian, and the attributes of nfnetlink_log.h', () => {
    const msg = configMessage(21062, 7, [bindCommand(), ...deliveryOptions()]);
    assert.equal(msg.readUInt32LE(0), msg.length);
    assert.equal(msg.readUInt16LE(4), (4 << 8) | 1, 'NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_CONFIG');
    assert.equal(msg.readUInt16LE(6), 0x1 | 0x4, 'NLM_F_REQUEST | NLM_F_ACK');
    assert.equal(msg.readUInt32LE(8), 7);
    assert.deepEqual([msg[16], msg[17], msg.readUInt16BE(18)], [0, 0, 21062]);
    // NFULA_CFG_CMD (1): one byte, NFULNL_CFG_CMD_BIND = 1, padded to 8.
    assert.deepEqual([...msg.subarray(20, 28)], [5, 0, 1, 0, 1, 0, 0, 0]);
    // NFULA_CFG_MODE (2): be32 copy range 0xffff, u8 NFULNL_COPY_PACKET = 2, pad byte.
    assert.deepEqual([...msg.subarray(28, 40)], [10, 0, 2, 0, 0, 0, 0xff, 0xff, 2, 0, 0, 0]);
    // NFULA_CFG_QTHRESH (5) = 1 and NFULA_CFG_TIMEOUT (4) = 1/100 s, both be32.
    assert.deepEqual([...msg.subarray(40, 56)], [8, 0, 5, 0, 0, 0, 0, 1, 8, 0, 4, 0, 0, 0, 0, 1]);
    assert.equal(msg.length, 56);
    assert.deepEqual([...unbindCommand()], [5, 0, 1, 0, 2, 0, 0, 0]);
  });

  test('the answer to a request: 0, a positive errno, or null when another message is all there is', () => {
    const error = (seq: number, code: number) => {
      const m = Buffer.alloc(36);
      m.writeUInt32LE(36, 0);
      m.writeUInt16LE(2, 4); // NLMSG_ERROR
      m.writeUInt32LE(seq, 8);
      m.writeInt32LE(code, 16);
      return m;
    };
    const both = Buffer.concat([packetMessage([]), error(9, -1), error(10, 0)]);
    assert.equal(ackResult(both, both.length, 9), 1);
    assert.equal(ackResult(both, both.length, 10), 0);
    assert.equal(ackResult(both, both.length, 11), null);
    assert.equal(ackResult(both, 30, 9), null, 'a truncated read holds no answer');
  });

  test('logged packets: payload, prefix index, arrival interface and the kernel timestamp; other prefixes skipped; garbage ends the walk', () => {
    const ip = Buffer.from('4500001c000100004011000000000000000000000000000000000000', 'hex');
    const shield = packetMessage([
      attr(NFULA_PACKET_HDR, Buffer.from([0x08, 0x00, 1, 0])),
      attr(NFULA_IFINDEX_INDEV, be32(3)),
      attr(NFULA_PREFIX, cstr('retroflect shield')),
      attr(NFULA_TIMESTAMP, timestamp(1_800_000_000, 123_456)),
      attr(NFULA_PAYLOAD, ip),
    ]);
    const foreign = packetMessage([attr(NFULA_PREFIX, cstr('someone else')), attr(NFULA_PAYLOAD, ip)]);
    const unprefixed = packetMessage([attr(NFULA_PAYLOAD, ip)]);
    const forged = packetMessage([attr(NFULA_PAYLOAD, ip.subarray(0, 21)), attr(NFULA_PREFIX | 0x4000, cstr('retroflect forged'))]);
    const seen: { off: number; len: number; prefix: number; ifIndex: number; time: number; first: number }[] = [];
    const buf = Buffer.concat([shield, foreign, unprefixed, forged, Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3])]);
    const n = forEachLoggedPacket(buf, buf.length, PREFIXES, 42, (b, off, len, prefix, ifIndex, time) => seen.push({ off, len, prefix, ifIndex, time, first: b[off] }));
    assert.equal(n, 2);
    assert.deepEqual(seen.map((s) => [s.len, s.prefix, s.ifIndex, s.first]), [[28, 0, 3, 0x45], [21, 1, 0, 0x45]], 'no NFULA_IFINDEX_INDEV: 0');
    assert.equal(seen[0].time, 1_800_000_000_123.456);
    assert.equal(seen[1].time, 42, 'no timestamp: the caller\'s clock');
    assert.ok(buf.subarray(seen[0].off, seen[0].off + 28).equals(ip));
    // A prefix that only starts like ours is not ours; a message cut short is not read past its end.
    const near = packetMessage([attr(NFULA_PREFIX, cstr('retroflect shields')), attr(NFULA_PAYLOAD, ip)]);
    assert.equal(forEachLoggedPacket(near, near.length, PREFIXES, 0, () => assert.fail('matched')), 0);
    assert.equal(forEachLoggedPacket(shield, shield.length - 4, PREFIXES, 0, () => assert.fail('read past the end')), 0);
    const badAttr = packetMessage([attr(NFULA_PREFIX, cstr('retroflect shield')), Buffer.from([2, 0, 9, 0])]);
    assert.equal(forEachLoggedPacket(badAttr, badAttr.length, PREFIXES, 0, () => assert.fail('no payload')), 0);
  });
});

/** Binds NFLOG group argv[1] with hand-packed netlink bytes (a second implementation), then holds it until killed. */
const GROUP_HOLDER = `
import json, socket, struct, sys
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
s.bind((0, 0))
body = struct.pack('!BBH', 0, 0, int(sys.argv[1])) + struct.pack('=HHB3x', 5, 1, 1)
s.send(struct.pack('=IHHII', 16 + len(body), (4 << 8) | 1, 1 | 4, 1, 0) + body)
print(json.dumps({'error': struct.unpack_from('=i', s.recv(4096), 16)[0]}), flush=True)
sys.stdin.read()
`;

/** The NFLOG groups with a listener in `ns`, from /proc/net/netfilter/nfnetlink_log (group number first). */
async function boundGroups(ns: NetNs): Promise<number[]> {
  const r = await ns.run('cat', ['/proc/net/netfilter/nfnetlink_log']);
  return r.stdout.split('\n').filter((l) => l.trim()).map((l) => Number(l.trim().split(/\s+/)[0]));
}

describe('NFLOG on the real kernel (namespace)', { timeout: 120_000 }, () => {
  let t: Topology;
  let engine: EngineProcess | undefined;
  const dir = mkdtempSync(join(tmpdir(), 'rft-nflog-'));
  const pipe = join(dir, 'e.sock');
  const CLI = ['--import', 'tsx', 'src/cli/main.ts'];

  before(async () => {
    t = await createTopology('nflog');
  });

  after(async () => {
    engine?.child.kill('SIGKILL');
    await t?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  test('a group another program holds is skipped; one taken later costs a capture only its drops; killing the engine frees its group', async () => {
    const holder = new JsonLines(t.a.spawn('python3', ['-c', GROUP_HOLDER, String(FIRST_LOG_GROUP)]));
    assert.deepEqual(await holder.next((o) => 'error' in o), { error: 0 });
    assert.deepEqual(await boundGroups(t.a), [FIRST_LOG_GROUP]);

    engine = spawnEngine(t.a, ['--no-config', '--reflect', '192.0.2.1', '--shield', '8080/tcp', '--pipe', pipe, '--device', 'rflct0']);
    await waitReady(engine);
    const next = FIRST_LOG_GROUP + 1;
    assert.match(engine.output(), new RegExp(`firewallLog NFLOG group ${next}\\b`));
    const chain = await t.a.must('nft', ['list', 'chain', 'inet', 'retroflect', 'input']);
    assert.match(chain, new RegExp(`tcp dport @shield_tcp log prefix "retroflect shield" group ${next} drop`));
    // No capture runs: the engine's group has no listener (only the holder's is bound).
    assert.deepEqual(await boundGroups(t.a), [FIRST_LOG_GROUP]);

    // Someone takes the engine's group while no capture runs: a capture then warns and still shows reflected traffic.
    const thief = new JsonLines(t.a.spawn('python3', ['-c', GROUP_HOLDER, String(next)]));
    assert.deepEqual(await thief.next((o) => 'error' in o), { error: 0 });
    // Only the pings' address: the host's own ICMPv6 (neighbour, MLD) also goes out the device, and is passed.
    const traceArgs = ['trace', '--pipe', pipe, '--json', '--count', '1', '--protocol', 'icmp', '--address', '192.0.2.1'];
    const traced = new JsonLines(t.a.spawn(process.execPath, [...CLI, ...traceArgs]));
    const ping = setInterval(() => void t.a.run('ping', ['-c', '1', '-W', '1', '192.0.2.1']), 300);
    try {
      const o = await traced.next((x) => 'verdict' in x, 30_000);
      assert.equal(o.verdict, 'reflected');
    } finally {
      clearInterval(ping);
    }
    // The engine names the group's new holder (item 14 of issue 19: no longer a bare bind failure).
    const taken = /NFLOG group \d+ was taken by another program/;
    await waitFor('the warning in the engine log', () => taken.test(engine!.output()), 5_000);
    assert.match(engine.output(), new RegExp(`NFLOG group ${next} was taken by another program \\(netlink port id \\d+\\)`));
    thief.child.kill();
    await waitFor('the thief gone', async () => !(await boundGroups(t.a)).includes(next), 5_000);

    // A capture binds it; the engine killed while capturing leaves nothing bound behind (the socket dies with it).
    const trace = t.a.spawn(process.execPath, [...CLI, 'trace', '--pipe', pipe, '--duration', '60s']);
    await waitFor('the engine listening while a capture runs', async () => (await boundGroups(t.a)).includes(next), 20_000);
    engine.child.kill('SIGKILL');
    await engine.exited;
    await waitFor('the engine\'s group freed', async () => !(await boundGroups(t.a)).includes(next), 5_000);
    trace.kill();
    holder.child.kill();
    await waitFor('every group free', async () => (await boundGroups(t.a)).length === 0, 5_000);
  });
});
