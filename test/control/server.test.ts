/**
 * Control server over a real Unix socket (in a private temp directory, never /run), driven by raw sockets and by
 * ControlClient. The engine is the in-memory stand-in (test/helpers/in-memory-engine.ts); the real engine is in live.test.ts.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigStore } from '../../src/config/config-store.ts';
import { ControlClient } from '../../src/control/client.ts';
import { startControlServer, type ControlServer } from '../../src/control/server.ts';
import { testAddressRules } from '../helpers/address-rules.ts';
import { MAX_LINE_BYTES, MAX_PENDING_REQUESTS } from '../../src/control/protocol.ts';
import { pcapngHeader } from '../../src/capture/pcapng.ts';
import { RetroflectError } from '../../src/errors.ts';
import { InMemoryEngine } from '../helpers/in-memory-engine.ts';

const base = mkdtempSync(join(tmpdir(), 'rft-ctl-'));
let n = 0;
function freshDir(): string {
  const d = join(base, `d${n++}`);
  mkdirSync(d, { mode: 0o700 });
  return d;
}

/** A raw client: write lines, read reply lines as parsed JSON. */
function raw(path: string) {
  const s = net.connect(path);
  const lines: unknown[] = [];
  const waiters: ((v: unknown) => void)[] = [];
  let buf = '';
  s.setEncoding('utf8');
  s.on('data', (d: string) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) !== -1) {
      const msg = JSON.parse(buf.slice(0, i));
      buf = buf.slice(i + 1);
      const w = waiters.shift();
      if (w) w(msg);
      else lines.push(msg);
    }
  });
  s.on('error', () => undefined);
  const closed = new Promise<void>((r) => s.once('close', () => r()));
  return {
    socket: s,
    closed,
    ready: new Promise<void>((r) => s.once('connect', () => r())),
    write: (text: string | Buffer) => s.write(text),
    next: (): Promise<any> => (lines.length ? Promise.resolve(lines.shift()) : new Promise((r) => waiters.push(r))),
  };
}

async function start(opts: Partial<Parameters<typeof startControlServer>[0]> = {}) {
  const dir = freshDir();
  const engine = new InMemoryEngine();
  const configPath = join(dir, 'config.json');
  const store = ConfigStore.open(configPath);
  const server = await startControlServer({ addressRules: testAddressRules, engine, pipeName: join(dir, 'ctl.sock'), configStore: store, ...opts });
  return { dir, engine, store, server, configPath, path: join(dir, 'ctl.sock') };
}

after(() => rmSync(base, { recursive: true, force: true }));

describe('framing and errors', () => {
  let s: Awaited<ReturnType<typeof start>>;
  before(async () => {
    s = await start();
  });
  after(() => s.server.close());

  it('answers hello with version and capabilities, and methods work without hello (peer-credentials mode)', async () => {
    const c = raw(s.path);
    c.write('{"id":"x","method":"status"}\n');
    const st = await c.next();
    assert.equal(st.id, 'x');
    assert.equal(st.result.state, 'running');
    c.write(JSON.stringify({ id: 1, method: 'hello', params: { protocol: 1, client: 'test/1' } }) + '\n');
    const h = await c.next();
    assert.equal(h.result.protocol, 1);
    assert.equal(h.result.auth, 'peer-credentials');
    assert.ok(h.result.capabilities.includes('address.add'));
    c.socket.destroy();
  });

  it('refuses other protocol versions but keeps the connection', async () => {
    const c = raw(s.path);
    c.write('{"id":1,"method":"hello","params":{"protocol":2}}\n');
    const r = await c.next();
    assert.equal(r.error.code, 'E_UNSUPPORTED_VERSION');
    assert.deepEqual(r.error.details.supported, [1]);
    c.write('{"id":2,"method":"hello","params":{"protocol":1}}\n');
    assert.equal((await c.next()).result.protocol, 1);
    c.socket.destroy();
  });

  it('answers garbage with E_BAD_REQUEST (id null), in order, and keeps serving', async () => {
    const c = raw(s.path);
    c.write('not json\n[1,2]\n{"method":"status"}\n{"id":{},"method":"status"}\n"str"\n{"id":5}\n{"id":6,"method":"status","extra":1}\n');
    for (let i = 0; i < 4; i++) {
      const r = await c.next();
      assert.equal(r.error.code, 'E_BAD_REQUEST', JSON.stringify(r));
      assert.equal(r.id, null);
    }
    assert.equal((await c.next()).error.code, 'E_BAD_REQUEST'); // "str"
    const r5 = await c.next();
    assert.deepEqual([r5.id, r5.error.code], [5, 'E_BAD_REQUEST']);
    const r6 = await c.next();
    assert.deepEqual([r6.id, r6.error.code], [6, 'E_BAD_REQUEST']);
    c.write(Buffer.from([0x7b, 0xff, 0xfe, 0x7d, 0x0a])); // invalid UTF-8
    assert.equal((await c.next()).error.code, 'E_BAD_REQUEST');
    c.write('{"id":7,"method":"nope"}\n{"id":8,"method":"status","params":[1]}\n{"id":9,"method":"status","params":{"x":1}}\n');
    const r7 = await c.next();
    assert.deepEqual([r7.id, r7.error.code, r7.error.details.method], [7, 'E_UNKNOWN_METHOD', 'nope']);
    assert.equal((await c.next()).error.code, 'E_INVALID_PARAMS');
    const r9 = await c.next();
    assert.deepEqual([r9.error.code, r9.error.details.field], ['E_INVALID_PARAMS', 'x']);
    c.write('\r\n\n{"id":10,"method":"status"}\r\n');
    assert.equal((await c.next()).id, 10);
    c.socket.destroy();
  });

  it('handles a line split across many writes, and pipelined requests in order', async () => {
    const c = raw(s.path);
    const line = '{"id":"split","method":"status"}\n';
    for (const ch of line) c.write(ch);
    assert.equal((await c.next()).id, 'split');
    c.write(Array.from({ length: 200 }, (_, i) => `{"id":${i},"method":"address.list"}\n`).join(''));
    for (let i = 0; i < 200; i++) assert.equal((await c.next()).id, i);
    c.socket.destroy();
  });

  it('closes a connection whose line exceeds 64 KiB, after an error reply', async () => {
    const c = raw(s.path);
    await c.ready;
    c.write('{"id":1,"method":"status","params":{"pad":"' + 'a'.repeat(MAX_LINE_BYTES) + '"}}\n');
    const r = await c.next();
    assert.equal(r.error.code, 'E_BAD_REQUEST');
    await c.closed;
    // The server still serves others.
    const ok = await ControlClient.connect({ pipe: s.path });
    assert.equal((await ok.call('status')).state, 'running');
    ok.close();
  });
});

describe('changes and persistence', () => {
  let s: Awaited<ReturnType<typeof start>>;
  let client: ControlClient;
  before(async () => {
    s = await start();
    client = await ControlClient.connect({ pipe: s.path });
  });
  after(async () => {
    client.close();
    await s.server.close();
  });

  it('adds idempotently, persists only non-temporary entries, lists which are persisted', async () => {
    const r1 = await client.call('address.add', { addresses: ['192.0.2.1', '2001:DB8::1'] });
    assert.deepEqual(r1.added, ['192.0.2.1', '2001:db8::1']);
    assert.deepEqual(r1.persisted, ['192.0.2.1', '2001:db8::1'], 'the reply says what is saved, so clients need no second request');
    const r2 = await client.call('address.add', { addresses: ['192.0.2.1'] });
    assert.deepEqual([r2.added, r2.existing, r2.persisted], [[], ['192.0.2.1'], ['192.0.2.1']]);
    const r3 = await client.call('address.add', { addresses: ['192.0.2.2'], temporary: true });
    assert.deepEqual(r3.persisted, []);
    const file = JSON.parse(readFileSync(s.configPath, 'utf8'));
    assert.deepEqual(file, { schemaVersion: 1, reflectAddresses: ['192.0.2.1', '2001:db8::1'], shieldPorts: [] });
    const list = await client.call('address.list');
    assert.deepEqual(list.addresses, [
      { address: '192.0.2.1', persisted: true, source: 'Config', portMaps: [], allow: {} },
      { address: '2001:db8::1', persisted: true, source: 'Config', portMaps: [], allow: {} },
      { address: '192.0.2.2', persisted: false, source: 'Temporary', portMaps: [], allow: {} },
    ]);
    const cfg = await client.call('config.get');
    assert.deepEqual(cfg.persisted.reflectAddresses, ['192.0.2.1', '2001:db8::1']);
    assert.deepEqual(cfg.running.reflectAddresses, ['192.0.2.1', '2001:db8::1', '192.0.2.2']);
  });

  it('refuses a bad address in a batch and changes nothing', async () => {
    const before = readFileSync(s.configPath);
    const calls = s.engine.calls.length;
    await assert.rejects(client.call('address.add', { addresses: ['192.0.2.9', 'bogus'] }), (e: RetroflectError) => e.code === 'E_INVALID_ADDRESS' && e.details?.address === 'bogus');
    assert.equal(s.engine.calls.length, calls);
    assert.ok(!s.engine.cfg.reflectAddresses.includes('192.0.2.9'));
    assert.deepEqual(readFileSync(s.configPath), before);
  });

  it('remove of a missing address is E_ADDRESS_NOT_FOUND and removes nothing', async () => {
    const before = readFileSync(s.configPath);
    await assert.rejects(client.call('address.remove', { addresses: ['192.0.2.1', '192.0.2.77'] }), (e: RetroflectError) => e.code === 'E_ADDRESS_NOT_FOUND' && (e.details?.missing as string[])[0] === '192.0.2.77');
    assert.ok(s.engine.cfg.reflectAddresses.includes('192.0.2.1'));
    assert.deepEqual(readFileSync(s.configPath), before);
  });

  it('temporary remove keeps the file; permanent remove updates it', async () => {
    await client.call('address.remove', { addresses: ['192.0.2.1'], temporary: true });
    assert.ok(!s.engine.cfg.reflectAddresses.includes('192.0.2.1'));
    assert.ok(JSON.parse(readFileSync(s.configPath, 'utf8')).reflectAddresses.includes('192.0.2.1'));
    // Not running but persisted: a permanent remove still removes it from the file.
    assert.deepEqual((await client.call('address.remove', { addresses: ['192.0.2.1'] })).removed, ['192.0.2.1']);
    assert.deepEqual(JSON.parse(readFileSync(s.configPath, 'utf8')).reflectAddresses, ['2001:db8::1']);
  });

  it('shield ports accept specs and objects; remove of unshielded is E_PORT_NOT_FOUND', async () => {
    const r = await client.call('shield.add', { ports: ['8080', { port: 53, protocol: 'udp' }, 9000] });
    assert.deepEqual(r.added.map((p) => `${p.port}/${p.protocol}`), ['8080/tcp', '8080/udp', '53/udp', '9000/tcp', '9000/udp']);
    assert.deepEqual(r.persisted, r.added, 'saved in the config file');
    const temp = await client.call('shield.add', { ports: ['7000/tcp', '53/udp'], temporary: true });
    assert.deepEqual(temp.persisted, [{ port: 53, protocol: 'udp' }], 'a temporary new port is not saved; an existing saved one stays saved');
    await client.call('shield.remove', { ports: ['7000/tcp'], temporary: true });
    await assert.rejects(client.call('shield.add', { ports: ['70000'] }), (e: RetroflectError) => e.code === 'E_INVALID_PORT');
    await assert.rejects(client.call('shield.remove', { ports: ['53/tcp'] }), (e: RetroflectError) => e.code === 'E_PORT_NOT_FOUND');
    await client.call('shield.remove', { ports: ['8080/udp'] });
    assert.deepEqual(JSON.parse(readFileSync(s.configPath, 'utf8')).shieldPorts, [
      { port: 8080, protocol: 'tcp' },
      { port: 53, protocol: 'udp' },
      { port: 9000, protocol: 'tcp' },
      { port: 9000, protocol: 'udp' },
    ]);
  });

  it('a failed save undoes the engine change and answers E_CONFIG_WRITE_FAILED', async () => {
    const dir = freshDir();
    const cfgPath = join(dir, 'config.json');
    const engine = new InMemoryEngine();
    let fail = false;
    const store = ConfigStore.open(cfgPath, {
      beforeRename: () => {
        if (fail) throw Object.assign(new Error('injected: disk full'), { code: 'ENOSPC' });
      },
    });
    const server = await startControlServer({ addressRules: testAddressRules, engine, pipeName: join(dir, 's.sock'), configStore: store });
    const c = await ControlClient.connect({ pipe: join(dir, 's.sock') });
    try {
      await c.call('address.add', { addresses: ['192.0.2.1'] });
      const good = readFileSync(cfgPath);
      fail = true;
      await assert.rejects(c.call('address.add', { addresses: ['192.0.2.2'] }), (e: RetroflectError) => e.code === 'E_CONFIG_WRITE_FAILED');
      assert.deepEqual(engine.cfg.reflectAddresses, ['192.0.2.1']);
      await assert.rejects(c.call('address.remove', { addresses: ['192.0.2.1'] }), (e: RetroflectError) => e.code === 'E_CONFIG_WRITE_FAILED');
      assert.deepEqual(engine.cfg.reflectAddresses, ['192.0.2.1']);
      await assert.rejects(c.call('shield.add', { ports: ['80/tcp'] }), (e: RetroflectError) => e.code === 'E_CONFIG_WRITE_FAILED');
      assert.deepEqual(engine.cfg.shieldPorts, []);
      assert.deepEqual(readFileSync(cfgPath), good);
      // Temporary changes never write, so they still work.
      await c.call('address.add', { addresses: ['192.0.2.3'], temporary: true });
      assert.deepEqual(engine.cfg.reflectAddresses, ['192.0.2.1', '192.0.2.3']);
    } finally {
      c.close();
      await server.close();
    }
  });

  it('address.test reports every refusal with rule and hint (real host validation)', async () => {
    const r = await client.call('address.test', { address: '127.0.0.1' });
    assert.equal(r.valid, false);
    assert.equal(r.address, '127.0.0.1');
    assert.ok(r.reasons.some((x) => x.rule === 'loopback' && x.hint), JSON.stringify(r.reasons));
    const bad = await client.call('address.test', { address: 'not-an-ip' });
    assert.deepEqual([bad.address, bad.valid, bad.reasons[0].rule], [null, false, 'syntax']);
    await assert.rejects(client.call('address.test', {}), (e: RetroflectError) => e.code === 'E_INVALID_PARAMS');
  });

  it('subscribe pushes stats notifications until unsubscribe', async () => {
    const c = await ControlClient.connect({ pipe: s.path });
    const got: unknown[] = [];
    c.onNotification((m) => got.push(m));
    assert.deepEqual(await c.call('subscribe', { topic: 'stats', intervalMs: 100 }), { topic: 'stats', intervalMs: 100 });
    await new Promise((r) => setTimeout(r, 450));
    await c.call('unsubscribe', { topic: 'stats' });
    const count = got.length;
    assert.ok(count >= 2, `got ${count} notifications`);
    assert.equal((got[0] as { method: string }).method, 'stats');
    await new Promise((r) => setTimeout(r, 250));
    assert.equal(got.length, count);
    await assert.rejects(c.call('subscribe', { topic: 'stats', intervalMs: 5 }), (e: RetroflectError) => e.code === 'E_INVALID_PARAMS');
    c.close();
  });

  it('capture.start opens a capture through the engine\'s capture port: the pcapng header first, capture.stop ends it', async () => {
    const c = await ControlClient.connect({ pipe: s.path });
    const got: { method: string; params: any }[] = [];
    c.onNotification((m) => got.push(m as { method: string; params: any }));
    await assert.rejects(c.call('capture.start', { format: 'xml' }), (e: RetroflectError) => e.code === 'E_INVALID_PARAMS' && e.details?.field === 'format');
    const r = await c.call('capture.start', { format: 'pcapng', snaplen: 128 });
    assert.deepEqual([r.format, r.snaplen, r.rate, r.linktype], ['pcapng', 128, 20_000, 101]);
    assert.deepEqual(r.interfaces, [
      { name: 'rflct0 outbound', description: 'packets this host sent through rflct0, as tun handed them to retroflect (after reflection)', direction: 'outbound' },
      { name: 'rflct0 inbound', description: 'packets that arrived on rflct0 from other hosts, as retroflect saw them', direction: 'inbound' },
    ]);
    assert.equal(got.length, 1, 'the header arrives before the reply');
    assert.deepEqual({ ...got[0].params, data: undefined }, { id: r.id, format: 'pcapng', data: undefined, packets: 0, dropped: 0 });
    assert.ok(Buffer.from(got[0].params.data, 'base64').equals(pcapngHeader(r.interfaces, 128)));
    await assert.rejects(c.call('capture.start', {}), (e: RetroflectError) => e.code === 'E_INVALID_PARAMS' && /already capturing/.test(e.message));
    const end = { id: r.id, captured: 0, dropped: 0, reason: 'stopped' };
    assert.deepEqual(await c.call('capture.stop'), end);
    assert.deepEqual(got[1], { method: 'capture.end', params: end });
    assert.deepEqual(await c.call('capture.stop'), { id: null, captured: 0, dropped: 0, reason: 'notCapturing' });
    c.close();
  });

  it('stop replies first, then asks the engine to stop', async () => {
    const c = await ControlClient.connect({ pipe: s.path });
    assert.deepEqual(await c.call('stop'), { stopping: true });
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(s.engine.stopCalls, 1);
    c.close();
  });
});

describe('robustness', () => {
  it('serves hundreds of concurrent clients, survives abrupt disconnects and non-reading clients', async () => {
    const s = await start();
    try {
      // A client that floods requests and never reads its replies.
      const hog = raw(s.path);
      await hog.ready;
      hog.socket.pause();
      const flood = '{"id":1,"method":"status"}\n'.repeat(20000);
      hog.write(flood);
      // Clients that vanish mid-request.
      for (let i = 0; i < 50; i++) {
        const v = net.connect(s.path);
        v.on('error', () => undefined);
        v.on('connect', () => {
          v.write('{"id":1,"method":"stats"}\n{"id":2,"method":"sta');
          v.destroy();
        });
      }
      const clients = await Promise.all(Array.from({ length: 300 }, () => ControlClient.connect({ pipe: s.path, timeoutMs: 10_000 })));
      const results = await Promise.all(clients.map((c, i) => c.call('address.add', { addresses: [`192.0.2.${(i % 250) + 1}`], temporary: true })));
      assert.equal(results.length, 300);
      assert.equal(s.engine.cfg.reflectAddresses.length, 250);
      for (const c of clients) c.close();
      // The hog's replies were held back, not buffered without bound, and it still gets them all in order.
      let received = 0;
      hog.socket.resume();
      while (received < 20000) {
        const r = await hog.next();
        assert.equal(r.id, 1);
        received++;
      }
      hog.socket.destroy();
      const after = await ControlClient.connect({ pipe: s.path });
      assert.equal((await after.call('status')).state, 'running');
      after.close();
    } finally {
      await s.server.close();
    }
  });

  it('a pipelined burst is read only MAX_PENDING_REQUESTS ahead; another client is answered meanwhile', async () => {
    // The burst's first request (stats) waits on a gate the test opens, so the server cannot work the burst off.
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    let statusCalls = 0;
    const engine = new (class extends InMemoryEngine {
      override status() {
        statusCalls++;
        return super.status();
      }
      override async stats() {
        await gate;
        return super.stats();
      }
    })();
    const s = await start({ engine });
    try {
      const burst = raw(s.path);
      await burst.ready;
      const BURST = 10_000; // about 300 KB in one write: many reads' worth
      const lines = ['{"id":0,"method":"stats"}'];
      for (let i = 1; i <= BURST; i++) lines.push(`{"id":${i},"method":"status"}`);
      burst.write(lines.join('\n') + '\n');
      // Another client's status is answered (three round trips: the server has read the burst meanwhile).
      const other = await ControlClient.connect({ pipe: s.path });
      const before = statusCalls; // hello reads the status too
      for (let i = 0; i < 3; i++) assert.equal((await other.call('status')).state, 'running');
      assert.equal(statusCalls - before, 3, 'only the other client\'s status requests were handled');
      const pending = s.server.pendingRequests();
      assert.ok(pending > 0 && pending <= MAX_PENDING_REQUESTS + 1, `${pending} requests read ahead of the gated one`);
      // Open the gate: the burst is answered whole and in order, never more than the limit read ahead.
      open();
      let most = 0;
      for (let i = 0; i <= BURST; i++) {
        const r = await burst.next();
        assert.equal(r.id, i);
        most = Math.max(most, s.server.pendingRequests());
      }
      assert.ok(most <= MAX_PENDING_REQUESTS + 1, `at most ${most} requests read ahead`);
      assert.equal(statusCalls - before, 3 + BURST);
      other.close();
      burst.socket.destroy();
    } finally {
      await s.server.close();
    }
  });

  it('a connection working off a backlog takes turns: a request that came in meanwhile does not wait', async () => {
    const order: string[] = [];
    const engine = new (class extends InMemoryEngine {
      override status() {
        order.push('status');
        return super.status();
      }
      override async stats() {
        order.push('stats');
        return super.stats();
      }
    })();
    const s = await start({ engine });
    try {
      const burst = raw(s.path);
      const other = raw(s.path);
      await Promise.all([burst.ready, other.ready]);
      const BURST = 1000; // one read (31 KB), its replies fit the socket buffers: only turn-taking lets 'other' in
      // Both written before the server reads either, the burst first.
      burst.write(`{"id":1,"method":"status"}\n`.repeat(BURST));
      other.write('{"id":"o","method":"stats"}\n');
      assert.equal((await other.next()).id, 'o');
      for (let i = 0; i < BURST; i++) assert.equal((await burst.next()).id, 1);
      const at = order.indexOf('stats');
      assert.ok(at >= 0 && at < BURST, `the other client's request was handled after ${at} of the burst's ${BURST}`);
      burst.socket.destroy();
      other.socket.destroy();
    } finally {
      await s.server.close();
    }
  });

  it('closes a connection that never sends a complete line', async () => {
    const s = await start({ firstRequestTimeoutMs: 200 });
    try {
      const c = raw(s.path);
      await c.ready;
      c.write('{"id":1,');
      const t0 = Date.now();
      await c.closed;
      assert.ok(Date.now() - t0 < 2000);
    } finally {
      await s.server.close();
    }
  });
});

describe('socket path safety', () => {
  it('refuses a directory that is not private, a symlinked directory, and a non-socket at the path', async () => {
    const open = freshDir();
    chmodSync(open, 0o755);
    await assert.rejects(startControlServer({ addressRules: testAddressRules, engine: new InMemoryEngine(), pipeName: join(open, 's.sock') }), (e: RetroflectError) => e.code === 'E_ACCESS_DENIED');
    const real = freshDir();
    const link = join(base, `link${n++}`);
    symlinkSync(real, link);
    await assert.rejects(startControlServer({ addressRules: testAddressRules, engine: new InMemoryEngine(), pipeName: join(link, 's.sock') }), (e: RetroflectError) => e.code === 'E_ACCESS_DENIED');
    const d = freshDir();
    writeFileSync(join(d, 's.sock'), 'precious');
    await assert.rejects(startControlServer({ addressRules: testAddressRules, engine: new InMemoryEngine(), pipeName: join(d, 's.sock') }), (e: RetroflectError) => e.code === 'E_ACCESS_DENIED');
    assert.equal(readFileSync(join(d, 's.sock'), 'utf8'), 'precious');
  });

  it('creates a missing directory 0700 and the socket 0600; removes the socket on close', async () => {
    const parent = freshDir();
    const p = join(parent, 'sub', 's.sock');
    const server = await startControlServer({ addressRules: testAddressRules, engine: new InMemoryEngine(), pipeName: p });
    assert.equal(statSync(join(parent, 'sub')).mode & 0o777, 0o700);
    assert.equal(lstatSync(p).mode & 0o777, 0o600);
    await server.close();
    assert.equal(existsSync(p), false);
  });

  it('a second server on the same path gets E_ALREADY_RUNNING; a stale socket is replaced', async () => {
    const s = await start();
    await assert.rejects(startControlServer({ addressRules: testAddressRules, engine: new InMemoryEngine(), pipeName: s.path }), (e: RetroflectError) => e.code === 'E_ALREADY_RUNNING');
    await s.server.close();
    // A stale socket: a process that listened there and was killed (no cleanup).
    const d = freshDir();
    const p = join(d, 'stale.sock');
    const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(p)}, () => console.log('up'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise((r) => child.stdout!.once('data', r));
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    assert.ok(lstatSync(p).isSocket());
    const server = await startControlServer({ addressRules: testAddressRules, engine: new InMemoryEngine(), pipeName: p });
    const c = await ControlClient.connect({ pipe: p });
    assert.equal((await c.call('status')).state, 'running');
    c.close();
    await server.close();
  });

  it('token mode: nothing but hello before a valid token; a wrong token closes the connection', async () => {
    const s = await start({ auth: 'token' });
    try {
      const tokenPath = `${s.path}.token`;
      assert.equal(statSync(tokenPath).mode & 0o777, 0o600);
      const c = raw(s.path);
      c.write('{"id":1,"method":"status"}\n');
      assert.equal((await c.next()).error.code, 'E_ACCESS_DENIED');
      c.write('{"id":2,"method":"hello","params":{"protocol":1,"token":"wrong"}}\n');
      assert.equal((await c.next()).error.code, 'E_ACCESS_DENIED');
      await c.closed;
      const ok = await ControlClient.connect({ pipe: s.path }); // reads the token file
      assert.equal(ok.hello?.auth, 'token');
      assert.equal((await ok.call('status')).state, 'running');
      ok.close();
      await assert.rejects(ControlClient.connect({ pipe: s.path, tokenPath: join(s.dir, 'nonexistent') }), (e: RetroflectError) => e.code === 'E_ACCESS_DENIED');
    } finally {
      await s.server.close();
    }
    assert.equal(existsSync(`${s.path}.token`), false);
  });

  it('no server → E_ENGINE_NOT_RUNNING with a hint', async () => {
    await assert.rejects(ControlClient.connect({ pipe: join(freshDir(), 'none.sock') }), (e: RetroflectError) => e.code === 'E_ENGINE_NOT_RUNNING' && e.exitCode === 7 && /retroflect run/.test(e.hint ?? ''));
  });
});

describe('remove with skipMissing: per item what went and what was not there', () => {
  let s: Awaited<ReturnType<typeof start>>;
  let client: ControlClient;
  before(async () => {
    s = await start();
    client = await ControlClient.connect({ pipe: s.path });
  });
  after(async () => {
    client?.close();
    await s?.server.close();
  });

  it('addresses: running and config-only ones go, missing ones are listed; without it a missing one still refuses all', async () => {
    await client.call('address.add', { addresses: ['192.0.2.41', '192.0.2.42', '192.0.2.43'], maps: ['80=8080/tcp'] });
    await client.call('address.remove', { addresses: ['192.0.2.42'], temporary: true });
    await assert.rejects(client.call('address.remove', { addresses: ['192.0.2.41', '192.0.2.49'] }), (e: RetroflectError) => e.code === 'E_ADDRESS_NOT_FOUND');
    assert.ok(s.engine.cfg.reflectAddresses.includes('192.0.2.41'), 'refused as a whole');
    const r = await client.call('address.remove', { addresses: ['192.0.2.41', '192.0.2.42', '192.0.2.49', '2001:DB8::49'], skipMissing: true });
    assert.deepEqual(r.removed, ['192.0.2.41', '192.0.2.42']);
    assert.deepEqual(r.missing, ['192.0.2.49', '2001:db8::49'], 'canonical, one per address');
    assert.deepEqual(r.portMapsRemoved.map((m) => `${m.address} ${m.port}/${m.protocol}`), ['192.0.2.41 80/tcp', '192.0.2.42 80/tcp']);
    assert.deepEqual(s.engine.cfg.reflectAddresses, ['192.0.2.43']);
    assert.deepEqual(JSON.parse(readFileSync(s.configPath, 'utf8')).reflectAddresses, [{ address: '192.0.2.43', portMaps: ['80=8080/tcp'] }]);
    // Temporary: only running addresses count; 192.0.2.43 is running, nothing else is there.
    const t = await client.call('address.remove', { addresses: ['192.0.2.49'], temporary: true, skipMissing: true });
    assert.deepEqual([t.removed, t.missing], [[], ['192.0.2.49']]);
  });

  it('port maps: those there go (the address stays), each missing one is listed with its protocol or both', async () => {
    const before = s.engine.calls.length;
    const r = await client.call('address.remove', { addresses: ['192.0.2.43'], maps: ['80', '443/udp'], skipMissing: true });
    assert.deepEqual(r.removed, []);
    assert.deepEqual(r.portMapsRemoved, [{ address: '192.0.2.43', protocol: 'tcp', port: 80, target: 8080 }]);
    assert.deepEqual(r.portMapsMissing, [{ address: '192.0.2.43', port: 443, protocol: 'udp' }]);
    assert.ok(s.engine.cfg.reflectAddresses.includes('192.0.2.43'));
    assert.equal(s.engine.calls.length, before + 1);
    const none = await client.call('address.remove', { addresses: ['192.0.2.43'], maps: [80], skipMissing: true });
    assert.deepEqual(none.portMapsMissing, [{ address: '192.0.2.43', port: 80, protocol: 'both' }]);
    assert.equal(s.engine.calls.length, before + 1, 'nothing there: the engine is not touched');
    await assert.rejects(client.call('address.remove', { addresses: ['192.0.2.43'], maps: [80] }), (e: RetroflectError) => e.code === 'E_PORT_NOT_FOUND');
  });

  it('shield ports: a spec for both protocols removes the one there and lists the other; a config-only port counts', async () => {
    await client.call('shield.add', { ports: ['8081/tcp', '8082/udp'] });
    await client.call('shield.remove', { ports: ['8082/udp'], temporary: true });
    const r = await client.call('shield.remove', { ports: ['8081', '8082/udp'], skipMissing: true });
    assert.deepEqual(r.removed, [{ port: 8081, protocol: 'tcp' }, { port: 8082, protocol: 'udp' }]);
    assert.deepEqual(r.missing, [{ port: 8081, protocol: 'udp' }]);
    assert.deepEqual(JSON.parse(readFileSync(s.configPath, 'utf8')).shieldPorts, []);
    await assert.rejects(client.call('shield.remove', { ports: ['8081/tcp'] }), (e: RetroflectError) => e.code === 'E_PORT_NOT_FOUND');
    await assert.rejects(client.call('shield.remove', { ports: ['8081/tcp'], skipMissing: 'yes' }), (e: RetroflectError) => e.code === 'E_INVALID_PARAMS');
  });
});

describe('the method table and the injected address rules', () => {
  it('a name the table does not hold (an object prototype member included) is E_UNKNOWN_METHOD', async () => {
    const s = await start();
    const c = await ControlClient.connect({ pipe: s.path });
    try {
      for (const method of ['toString', '__proto__', 'constructor', 'hasOwnProperty']) {
        await assert.rejects(c.call(method), (e: RetroflectError) => e.code === 'E_UNKNOWN_METHOD' && e.details?.method === method, method);
      }
    } finally {
      c.close();
      await s.server.close();
    }
  });

  it('address.add validates with the rules the server was given, address.test reports their check and suggestion', async () => {
    const seen: string[] = [];
    const refusal = new RetroflectError('E_INVALID_ADDRESS', 'refused by the test rules', { hint: 'use another', details: { rule: 'no-route' } });
    const s = await start({
      addressRules: {
        validate: async (address) => {
          seen.push(address);
          if (address === '192.0.2.66') throw refusal;
          return { warnings: address === '192.0.2.67' ? ['doubtful'] : [] };
        },
        check: async (input) => ({ address: input, refusals: input === '192.0.2.66' ? [refusal] : [], warnings: [] }),
        suggest: async (family, exclude) => ({ address: `suggested-${family}`, message: `not ${exclude.join(',')}` }),
      },
    });
    const c = await ControlClient.connect({ pipe: s.path });
    try {
      await assert.rejects(c.call('address.add', { addresses: ['192.0.2.66'] }), (e: RetroflectError) => e.message === 'refused by the test rules');
      const added = await c.call('address.add', { addresses: ['192.0.2.67'] });
      assert.deepEqual(added.warnings, [{ address: '192.0.2.67', message: 'doubtful' }]);
      assert.deepEqual(seen, ['192.0.2.66', '192.0.2.67']);
      const t = await c.call('address.test', { address: '192.0.2.66' });
      assert.deepEqual([t.valid, t.reasons[0].rule, t.suggestion], [false, 'no-route', { address: 'suggested-4', message: 'not 192.0.2.67' }]);
    } finally {
      c.close();
      await s.server.close();
    }
  });
});
