/**
 * Robustness of the control plane against the real engine (`retroflect run` in a namespace, TUN backend): random
 * bytes, random JSON, malformed and boundary-size messages, half lines, abrupt disconnects and 300 concurrent
 * clients. Afterwards the engine must still answer, still reflect traffic, be alive, and have closed every client
 * socket (its open file descriptors are back to where they were).
 *
 * Deterministic: one seeded PRNG (set RFT_FUZZ_SEED to replay a failure; the seed is printed). Bounded in count,
 * well under 30 s. Mutating methods are never generated with valid arguments and `stop` never at all, so the
 * engine's config stays as started.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { readdirSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { ControlClient } from '../../src/control/client.ts';
import { MAX_LINE_BYTES } from '../../src/control/protocol.ts';
import { ErrorCode } from '../../src/errors.ts';
import { createTopology, JsonLines, waitFor, type Topology } from '../helpers/netns.ts';
import { privateDir, removeDir, startEngine, type EngineHandle } from '../helpers/engine.ts';
import { rng } from '../helpers/rng.ts';

const node = process.execPath;
const PROBE = 'test/fixtures/probe.ts';
const SEED = Number(process.env.RFT_FUZZ_SEED ?? 0x5eed2024);
const KNOWN_CODES = new Set<string>(Object.values(ErrorCode));

const rand = rng(SEED);
const int = (n: number): number => Math.floor(rand() * n);
const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;

/** Methods that read only; the mutating ones are sent with arguments of the wrong type only. */
const READ_METHODS = ['hello', 'status', 'address.list', 'shield.list', 'stats', 'flows', 'config.get', 'address.test', 'unsubscribe'];
const MUTATING = ['address.add', 'address.remove', 'shield.add', 'shield.remove'];

function randomString(max: number): string {
  const alphabet = 'abcXYZ019 .:/[]{}"\\\u00e9\u4e2d\u{1f600}\u0000\t';
  const chars = [...alphabet];
  let s = '';
  for (let i = int(max); i > 0; i--) s += pick(chars);
  return s;
}

function randomValue(depth: number): unknown {
  switch (int(depth > 3 ? 5 : 8)) {
    case 0: return null;
    case 1: return rand() < 0.5;
    case 2: return pick([0, -1, 1.5, 1e308, -0, 2 ** 53 + 1, int(100000)]);
    case 3: return randomString(40);
    case 4: return pick(['192.0.2.1', '2001:db8::1', '', '::', '0.0.0.0', '8080/tcp', 'x'.repeat(200)]);
    case 5: return Array.from({ length: int(5) }, () => randomValue(depth + 1));
    default: {
      const o: Record<string, unknown> = {};
      for (let i = int(5); i > 0; i--) o[pick(['id', 'method', 'params', 'protocol', 'addresses', 'ports', 'limit', 'topic', randomString(8)])] = randomValue(depth + 1);
      return o;
    }
  }
}

/** The id a reply must carry: the request's id when it is an object with a usable id, otherwise null. */
function expectedId(obj: unknown): unknown {
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) return null;
  const id = (obj as Record<string, unknown>).id;
  return (typeof id === 'number' && Number.isFinite(id)) || (typeof id === 'string' && id.length <= 128) ? id : null;
}

/** A random request-like object: mostly shaped like a request, sometimes any JSON value. */
function randomRequest(): unknown {
  if (rand() < 0.15) return randomValue(0);
  const id = pick<unknown>([int(1e6), `r${int(1e6)}`, null, {}, 'x'.repeat(129), 1.25]);
  const method = rand() < 0.7 ? pick(READ_METHODS) : rand() < 0.5 ? randomString(12) : pick(MUTATING);
  let params: unknown = rand() < 0.3 ? undefined : randomValue(1);
  if (MUTATING.includes(method)) params = { addresses: 42, ports: 'x', temporary: 'yes' }; // refused before any change
  const obj: Record<string, unknown> = { id, method };
  if (params !== undefined) obj.params = params;
  if (rand() < 0.05) obj[randomString(5) || 'extra'] = 1;
  return obj;
}

interface RawResult {
  replies: any[];
  closedByServer: boolean;
}

/**
 * Open a raw connection, write `data` (chunks written as given, so lines may be split), then collect reply lines
 * until `expect` replies with an id arrived (or the reply with id `expect`, when it is a string), the server
 * closed, or `waitMs` passed; then close our side.
 */
function rawExchange(path: string, data: (string | Buffer)[], expect: number | string, waitMs = 5000): Promise<RawResult> {
  return new Promise((resolve, reject) => {
    const s = net.connect(path);
    const replies: any[] = [];
    let buf = '';
    let closedByServer = false;
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve({ replies, closedByServer });
    };
    const timer = setTimeout(finish, waitMs);
    s.setEncoding('utf8');
    s.on('error', () => undefined);
    s.on('connect', () => {
      for (const d of data) s.write(d);
    });
    s.on('data', (d: string) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) !== -1) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          replies.push(JSON.parse(line));
        } catch (err) {
          reject(new Error(`server sent a line that is not JSON: ${line.slice(0, 200)} (${(err as Error).message})`));
        }
      }
      if (typeof expect === 'string' ? replies.some((r) => r.id === expect) : replies.filter((r) => 'id' in r).length >= expect) finish();
    });
    s.on('end', () => {
      closedByServer = true;
      finish();
    });
  });
}

function assertWellFormedReply(r: any): void {
  assert.ok(typeof r === 'object' && r !== null, JSON.stringify(r));
  if ('error' in r) {
    assert.ok(KNOWN_CODES.has(r.error.code), `unknown error code: ${JSON.stringify(r)}`);
    assert.equal(typeof r.error.message, 'string');
    assert.notEqual(r.error.code, ErrorCode.INTERNAL, `internal error: ${JSON.stringify(r)}`);
  } else {
    assert.ok('result' in r, JSON.stringify(r));
  }
}

function openFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

describe('control plane fuzz against the real engine', { timeout: 120_000 }, () => {
  let t: Topology;
  let dir: string;
  let engine: EngineHandle | undefined;
  let baselineFds = 0;

  before(async () => {
    t = await createTopology('cfz');
    dir = privateDir('cfz');
    const servers = new JsonLines(t.a.spawn(node, ['--import', 'tsx', PROBE, 'serve', '8081', '']));
    await servers.next((o) => o.ready === true);
    engine = await startEngine(t.a, dir, { config: false, args: ['--reflect', '192.0.2.1'] });
    // One finished CLI call first, so lazily opened descriptors (koffi, worker) are in the baseline.
    assert.equal((await engine.cli(['status'])).code, 0);
    baselineFds = openFds(engine.child.pid!);
  });

  after(async () => {
    await engine?.kill();
    await t?.destroy();
    removeDir(dir);
  });

  test(`random bytes (seed ${SEED}): only well-formed replies, and the connection still serves a request after`, async () => {
    for (let i = 0; i < 60; i++) {
      const bytes = Buffer.from(Array.from({ length: 1 + int(2048) }, () => (rand() < 0.05 ? 0x0a : int(256))));
      const r = await rawExchange(engine!.pipe, [bytes, '\n{"id":"end","method":"status"}\n'], 'end');
      const end = r.replies.find((x) => x.id === 'end');
      assert.ok(end && 'result' in end, `no answer after random bytes ${bytes.toString('hex').slice(0, 200)}: ${JSON.stringify(r.replies).slice(0, 300)}`);
      for (const reply of r.replies) {
        assertWellFormedReply(reply);
        if (reply.id !== 'end') assert.equal(reply.error?.code, ErrorCode.BAD_REQUEST, JSON.stringify(reply));
      }
    }
  });

  test('random JSON requests: exactly one reply per line, in order, echoing every usable id', async () => {
    for (let conn = 0; conn < 40; conn++) {
      const reqs = Array.from({ length: 1 + int(20) }, randomRequest);
      // Split the pipelined lines at random points: framing must not depend on write boundaries.
      const text = reqs.map((q) => JSON.stringify(q) + (rand() < 0.2 ? '\r\n' : '\n')).join('');
      const chunks: string[] = [];
      for (let at = 0; at < text.length; ) {
        const n = 1 + int(64);
        chunks.push(text.slice(at, at + n));
        at += n;
      }
      const r = await rawExchange(engine!.pipe, chunks, reqs.length);
      const replies = r.replies.filter((x) => 'id' in x); // notifications (a subscribe) have no id
      assert.equal(replies.length, reqs.length, `requests ${text.slice(0, 500)} → ${JSON.stringify(r.replies).slice(0, 500)}`);
      replies.forEach((reply, i) => {
        assertWellFormedReply(reply);
        assert.deepEqual(reply.id, expectedId(JSON.parse(JSON.stringify(reqs[i]))), `reply ${i} to ${JSON.stringify(reqs[i])}`);
      });
    }
  });

  test('malformed and boundary messages get the documented error codes', async () => {
    const cases: [string | Buffer, string | null][] = [
      ['{', ErrorCode.BAD_REQUEST],
      ['[]', ErrorCode.BAD_REQUEST],
      ['null', ErrorCode.BAD_REQUEST],
      ['"status"', ErrorCode.BAD_REQUEST],
      ['{"method":"status"}', ErrorCode.BAD_REQUEST],
      ['{"id":{},"method":"status"}', ErrorCode.BAD_REQUEST],
      ['{"id":1e400,"method":"status"}', ErrorCode.BAD_REQUEST],
      [`{"id":"${'i'.repeat(129)}","method":"status"}`, ErrorCode.BAD_REQUEST],
      ['{"id":1}', ErrorCode.BAD_REQUEST],
      ['{"id":1,"method":"status","extra":true}', ErrorCode.BAD_REQUEST],
      ['{"id":1,"method":"status","__proto__":{"x":1}}', ErrorCode.BAD_REQUEST],
      ['{"id":1,"method":"status","params":[]}', ErrorCode.INVALID_PARAMS],
      ['{"id":1,"method":"status","params":{"x":1}}', ErrorCode.INVALID_PARAMS],
      ['{"id":1,"method":"hello","params":{"protocol":2}}', ErrorCode.UNSUPPORTED_VERSION],
      ['{"id":1,"method":"address.add","params":{"addresses":["192.0.2.1/24"]}}', ErrorCode.INVALID_ADDRESS],
      ['{"id":1,"method":"address.add","params":{"addresses":[]}}', ErrorCode.INVALID_PARAMS],
      ['{"id":1,"method":"shield.add","params":{"ports":["70000"]}}', ErrorCode.INVALID_PORT],
      ['{"id":1,"method":"flows","params":{"limit":0}}', ErrorCode.INVALID_PARAMS],
      ['{"id":1,"method":"nope"}', ErrorCode.UNKNOWN_METHOD],
      ['{"id":1,"method":"constructor"}', ErrorCode.UNKNOWN_METHOD],
      ['{"id":1,"method":"__proto__"}', ErrorCode.UNKNOWN_METHOD],
      [Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), ErrorCode.BAD_REQUEST], // not UTF-8
      ['[' .repeat(30000) + ']'.repeat(30000), ErrorCode.BAD_REQUEST], // deep nesting, under the line limit
      // A leading BOM is dropped by the UTF-8 decoder (.NET's default UTF8Encoding writes one), so this is served.
      ['\ufeff{"id":1,"method":"status"}', null],
      ['{"id":1,"method":"status"}', null],
    ];
    for (const [line, code] of cases) {
      const r = await rawExchange(engine!.pipe, [line, '\n'], 1);
      assert.equal(r.replies.length, 1, `no reply to ${String(line).slice(0, 80)}`);
      const reply = r.replies[0];
      assertWellFormedReply(reply);
      if (code === null) assert.ok('result' in reply, JSON.stringify(reply));
      else assert.equal(reply.error?.code, code, `${String(line).slice(0, 80)} → ${JSON.stringify(reply).slice(0, 300)}`);
    }
    // Blank lines are ignored: two requests around them get exactly two replies.
    const blank = await rawExchange(engine!.pipe, ['\n\r\n  \n{"id":"a","method":"status"}\n\n{"id":"b","method":"stats"}\n'], 2);
    assert.deepEqual(blank.replies.map((x) => x.id), ['a', 'b']);

    // A line of exactly MAX_LINE_BYTES is served; one byte more is refused with id null and the connection closed.
    const request = '{"id":7,"method":"status"}';
    const fits = request + ' '.repeat(MAX_LINE_BYTES - request.length);
    const ok = await rawExchange(engine!.pipe, [fits, '\n'], 1);
    assert.equal(ok.replies[0]?.id, 7, JSON.stringify(ok.replies).slice(0, 300));
    assert.ok('result' in ok.replies[0]);
    const tooLong = await rawExchange(engine!.pipe, [fits + ' ', '\n{"id":8,"method":"status"}\n'], 2);
    assert.equal(tooLong.replies.length, 1, JSON.stringify(tooLong.replies).slice(0, 300));
    assert.deepEqual([tooLong.replies[0].id, tooLong.replies[0].error.code], [null, ErrorCode.BAD_REQUEST]);
    assert.equal(tooLong.closedByServer, true);
    // Oversized without any newline at all (1 MiB): refused as soon as the limit is passed.
    const endless = await rawExchange(engine!.pipe, [Buffer.alloc(1024 * 1024, 0x20)], Infinity); // until the server closes
    assert.deepEqual([endless.replies[0]?.id, endless.replies[0]?.error.code, endless.closedByServer], [null, ErrorCode.BAD_REQUEST, true]);
  });

  test('half lines then disconnect, and abrupt disconnects mid-request', async () => {
    const all: Promise<unknown>[] = [];
    for (let i = 0; i < 100; i++) {
      all.push(new Promise<void>((resolve) => {
        const s = net.connect(engine!.pipe);
        s.on('error', () => undefined);
        s.on('close', () => resolve());
        s.on('connect', () => {
          const full = JSON.stringify({ id: i, method: pick(['stats', 'flows', 'status', 'config.get', 'address.test']), params: {} }) + '\n';
          switch (i % 4) {
            case 0: s.end(full.slice(0, 1 + int(full.length - 2))); break; // half a line, then FIN
            case 1: s.write(full.slice(0, 1 + int(full.length - 2)), () => s.destroy()); break; // half a line, then reset
            case 2: s.write(full, () => s.destroy()); break; // the whole request, gone before the reply
            default: s.write(full.repeat(100), () => s.destroy()); break; // 100 pipelined, gone before the replies
          }
        });
      }));
    }
    await Promise.all(all);
  });

  test('300 concurrent clients each doing hello, status and stats', async () => {
    const pid = engine!.child.pid;
    const results = await Promise.all(
      Array.from({ length: 300 }, async (_, i) => {
        const c = await ControlClient.connect({ pipe: engine!.pipe, timeoutMs: 10_000, callTimeoutMs: 20_000, clientName: `fuzz-${i}` });
        try {
          const status = await c.call('status');
          const stats = await c.call('stats');
          return { helloPid: c.hello?.pid, statusPid: status.pid, reflected: stats.reflected.packets };
        } finally {
          c.close();
        }
      }),
    );
    assert.equal(results.length, 300);
    for (const r of results) {
      assert.equal(r.helloPid, pid);
      assert.equal(r.statusPid, pid);
      assert.equal(typeof r.reflected, 'number');
    }
  });

  test('afterwards: alive, answering, reflecting, config unchanged, every client socket closed', async () => {
    assert.ok(engine!.alive(), engine!.output());
    const status = await engine!.cli(['status']);
    assert.equal(status.code, 0, status.stderr);
    assert.equal(status.json.state, 'running');
    assert.deepEqual(status.json.reflectAddresses, ['192.0.2.1']);
    assert.deepEqual(status.json.shieldPorts, []);
    const r = await t.a.run(node, ['--import', 'tsx', PROBE, 'tcp', '192.0.2.1', '8081', '3000']);
    assert.deepEqual(JSON.parse(r.stdout), { ok: true, reply: 'peer=192.0.2.1', local: t.a4 });
    // Server-side sockets of every client above are closed: descriptors return to the baseline.
    await waitFor(`engine fds back to ${baselineFds}`, () => openFds(engine!.child.pid!) <= baselineFds, 10_000).catch((err: Error) => {
      throw new Error(`${err.message}: now ${openFds(engine!.child.pid!)}`);
    });
  });
});
