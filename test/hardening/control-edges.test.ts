/**
 * Issue 11, control plane (defects 3 and 9): the stale-socket check leaves a live foreign socket alone; a full
 * engine says "busy" (E_ENGINE_BUSY, CLI exit 10) instead of "not running"; a request line trickled byte by byte, or
 * blank lines alone, cannot hold a connection slot. Real sockets, the real CLI, the in-memory engine stand-in.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigStore } from '../../src/config/config-store.ts';
import { MAX_CONNECTIONS } from '../../src/control/protocol.ts';
import { startControlServer } from '../../src/control/server.ts';
import { testAddressRules } from '../helpers/address-rules.ts';
import { ExitCode, type RetroflectError } from '../../src/errors.ts';
import { CLI_ARGV } from '../helpers/cli.ts';
import { InMemoryEngine } from '../helpers/in-memory-engine.ts';

const base = mkdtempSync(join(tmpdir(), 'rft-ctl-edges-'));
after(() => rmSync(base, { recursive: true, force: true }));
function privateDir(): string {
  const d = mkdtempSync(join(base, 'p'));
  chmodSync(d, 0o700);
  return d;
}

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const env = { ...process.env, NO_COLOR: '1' };
    execFile(process.execPath, [...CLI_ARGV, ...args], { env }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

function connect(path: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(path);
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

/** Resolves with the time from now until the server closes `s` (or rejects after `limitMs`). */
function closedWithin(s: net.Socket, limitMs: number): Promise<{ ms: number; text: string }> {
  const t0 = Date.now();
  let text = '';
  s.setEncoding('utf8');
  s.on('data', (d: string) => (text += d));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`still open after ${limitMs} ms`)), limitMs);
    s.once('close', () => {
      clearTimeout(timer);
      resolve({ ms: Date.now() - t0, text });
    });
  });
}

describe('defect 3: the stale-socket check', () => {
  it('a live foreign listener that accepts and closes without a word is refused and left untouched', async () => {
    const dir = privateDir();
    const path = join(dir, 'foreign.sock');
    let accepted = 0;
    const foreign = net.createServer((s) => {
      accepted++;
      s.destroy();
    });
    await new Promise<void>((r) => foreign.listen(path, r));
    try {
      await assert.rejects(startControlServer({ addressRules: testAddressRules, engine: new InMemoryEngine(), pipeName: path }), (e: RetroflectError) => e.code === 'E_ACCESS_DENIED');
      assert.ok(existsSync(path), 'the foreign socket was removed');
      const before = accepted;
      (await connect(path)).destroy();
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(accepted, before + 1, 'the foreign server no longer gets connections');
    } finally {
      foreign.close();
    }
  });

  it('a socket nobody listens on (ECONNREFUSED) is stale: replaced', async () => {
    const dir = privateDir();
    const path = join(dir, 'stale.sock');
    const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => console.log('up'))`]);
    await new Promise((r) => child.stdout.once('data', r));
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    assert.ok(existsSync(path));
    const server = await startControlServer({ addressRules: testAddressRules, engine: new InMemoryEngine(), pipeName: path, configStore: ConfigStore.inMemory() });
    await server.close();
  });
});

describe('defect 9: busy, trickling and blank-line clients', () => {
  it(`with ${MAX_CONNECTIONS} connections open, a client gets E_ENGINE_BUSY (exit 10); once they go, it works`, { timeout: 120_000 }, async () => {
    const dir = privateDir();
    const path = join(dir, 'busy.sock');
    const server = await startControlServer({ addressRules: testAddressRules, engine: new InMemoryEngine(), pipeName: path, configStore: ConfigStore.inMemory() });
    const held: net.Socket[] = [];
    try {
      // Each says hello, so the first-request timeout (10 s) does not free slots while this slow test runs.
      for (let i = 0; i < MAX_CONNECTIONS; i++) {
        const s = await connect(path);
        s.write('{"id":1,"method":"hello","params":{"protocol":1}}\n');
        held.push(s);
      }
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(server.connectionCount(), MAX_CONNECTIONS);
      const busy = await cli(['status', '--pipe', path]);
      assert.equal(busy.code, ExitCode.ENGINE_BUSY, busy.stderr);
      assert.match(busy.stderr, /control connections open, its limit.*\[E_ENGINE_BUSY\]/);
      const json = await cli(['status', '--pipe', path, '--json']);
      assert.equal(JSON.parse(json.stdout).error.code, 'E_ENGINE_BUSY');
      for (const s of held.splice(0, 10)) s.destroy();
      await new Promise((r) => setTimeout(r, 200));
      assert.equal((await cli(['status', '--pipe', path])).code, 0);
    } finally {
      for (const s of held) s.destroy();
      await server.close();
    }
  });

  it('a request line trickled one byte at a time is cut off after the line timeout', async () => {
    const dir = privateDir();
    const path = join(dir, 'trickle.sock');
    const server = await startControlServer({ addressRules: testAddressRules, engine: new InMemoryEngine(), pipeName: path, configStore: ConfigStore.inMemory(), lineTimeoutMs: 400, idleTimeoutMs: 60_000 });
    try {
      const s = await connect(path);
      s.write('{"id":1,"method":"hello","params":{"protocol":1}}\n');
      const text = '{"id":2,"method":"status","params":{}}';
      let i = 0;
      const drip = setInterval(() => !s.destroyed && i < text.length && s.write(text[i++]!), 100);
      try {
        const { ms, text: got } = await closedWithin(s, 5000);
        assert.ok(ms < 5000);
        assert.match(got, /not completed within 400 ms/);
      } finally {
        clearInterval(drip);
      }
    } finally {
      await server.close();
    }
  });

  it('blank lines alone are not activity: the idle timeout still closes the connection', async () => {
    const dir = privateDir();
    const path = join(dir, 'blank.sock');
    const server = await startControlServer({ addressRules: testAddressRules, engine: new InMemoryEngine(), pipeName: path, configStore: ConfigStore.inMemory(), idleTimeoutMs: 500 });
    try {
      const s = await connect(path);
      s.write('{"id":1,"method":"hello","params":{"protocol":1}}\n');
      const drip = setInterval(() => !s.destroyed && s.write('\n'), 100);
      try {
        await closedWithin(s, 5000);
      } finally {
        clearInterval(drip);
      }
    } finally {
      await server.close();
    }
  });
});
