/**
 * The .NET pipe path the PowerShell module depends on, proved on Linux: test/dotnet/Program.cs connects with
 * NamedPipeClientStream exactly as powershell/Retroflect/Private/PipeClient.ps1 does (rooted pipe name = Unix
 * socket path, hello first, UTF-8 lines) to a real `retroflect run` engine in a network namespace, and its
 * replies are checked here. The build is cached in test/dotnet/bin (git-ignored) and redone only when the source
 * is newer.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTopology, run, waitFor, type Topology } from '../helpers/netns.ts';
import { startControlServer, type ControlServer } from '../../src/control/server.ts';
import { testAddressRules } from '../helpers/address-rules.ts';
import { ConfigStore } from '../../src/config/config-store.ts';
import { InMemoryEngine } from '../helpers/in-memory-engine.ts';

const here = new URL('.', import.meta.url).pathname;
const root = join(here, '..', '..');
const outDir = join(here, 'bin', 'out');
const dll = join(outDir, 'retroflect-pipe-client.dll');
// The engine as shipped: the esbuild bundle from `npm run build` (CI builds before testing). Running src/ through
// tsx is not an option for the engine: its packet worker thread is a separate module graph.
// RETROFLECT_TEST_ENGINE may name another bundle (a local build elsewhere).
const engineBundle = process.env.RETROFLECT_TEST_ENGINE ?? join(root, 'dist', 'retroflect.cjs');

function dotnetMissingReason(): string | null {
  const r = spawnSync('dotnet', ['--version'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) return 'the dotnet SDK is not on PATH, so the .NET pipe client cannot be built';
  return null;
}

function buildIfStale(): void {
  const sources = ['Program.cs', 'PipeClient.csproj'].map((f) => statSync(join(here, f)).mtimeMs);
  if (existsSync(dll) && statSync(dll).mtimeMs >= Math.max(...sources)) return;
  const r = spawnSync('dotnet', ['build', join(here, 'PipeClient.csproj'), '-c', 'Release', '-o', outDir, '--nologo', '-v', 'q'], {
    encoding: 'utf8',
    env: { ...process.env, DOTNET_CLI_TELEMETRY_OPTOUT: '1', DOTNET_NOLOGO: '1' },
  });
  if (r.status !== 0) throw new Error(`dotnet build failed:\n${r.stdout}\n${r.stderr}`);
}

interface Reply {
  id: number | null;
  result?: Record<string, unknown>;
  error?: { code: string; message: string; hint?: string; details?: Record<string, unknown> };
}

/** Run the .NET client; each element of `calls` is a method or a method followed by its params object. */
async function client(pipe: string, calls: (string | Record<string, unknown>)[]): Promise<{ code: number; replies: Reply[]; stderr: string }> {
  const args = [dll, pipe, ...calls.map((c) => (typeof c === 'string' ? c : JSON.stringify(c)))];
  const r = await run('dotnet', args, { timeoutMs: 60_000 });
  const replies = r.stdout.split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as Reply);
  return { code: r.code, replies, stderr: r.stderr };
}

const dotnetMissing = dotnetMissingReason();
const skipReason = dotnetMissing ?? (existsSync(engineBundle) ? null : `${engineBundle} is missing: run 'npm run build' first`);

describe('against the real control server with an in-test engine stand-in (no packet path)', () => {
  // The real src/control/server.ts on a real Unix socket; only the engine behind it is the in-memory stand-in
  // from test/control (it keeps the config in memory with the engine's semantics). Needs no root network setup.
  let dir = '';
  let server: ControlServer | undefined;
  let path = '';
  before(async () => {
    if (dotnetMissing) return;
    buildIfStale();
    dir = mkdtempSync(join(tmpdir(), 'rft-dnc-mem-'));
    path = join(dir, 'ctl.sock');
    server = await startControlServer({ addressRules: testAddressRules, engine: new InMemoryEngine(), pipeName: path, configStore: ConfigStore.open(join(dir, 'config.json')) });
  });
  after(async () => {
    await server?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('hello, status, add (idempotent), list, remove and error codes reach .NET intact', { skip: dotnetMissing ?? false }, async () => {
    const a = { addresses: ['192.0.2.1'] };
    const r = await client(path, ['status', 'address.add', a, 'address.add', a, 'address.list', 'address.remove', a,
      'address.remove', a, 'address.add', { addresses: ['not-an-ip'] }]);
    assert.equal(r.code, 0, r.stderr);
    const [hello, status, add1, add2, list, remove, missing, bad] = r.replies;
    assert.equal(hello.result?.protocol, 1);
    assert.equal(status.result?.state, 'running');
    assert.deepEqual(add1.result?.added, ['192.0.2.1']);
    assert.deepEqual(add2.result?.existing, ['192.0.2.1']);
    assert.deepEqual(list.result?.addresses, [{ address: '192.0.2.1', persisted: true, source: 'Config', portMaps: [], allow: {} }]);
    assert.deepEqual(remove.result?.removed, ['192.0.2.1']);
    assert.equal(missing.error?.code, 'E_ADDRESS_NOT_FOUND');
    assert.equal(bad.error?.code, 'E_INVALID_ADDRESS');
    assert.deepEqual(r.replies.map((x) => x.id), [1, 2, 3, 4, 5, 6, 7, 8]);
  });

  test('.NET client: no engine on the socket path gives exit 7 quickly', { skip: dotnetMissing ?? false }, async () => {
    const r = await client(join(dir, 'nobody.sock'), ['status']);
    assert.equal(r.code, 7, r.stderr);
    assert.match(r.stderr, /E_ENGINE_NOT_RUNNING/);
    assert.deepEqual(r.replies, []);
  });
});

describe('against a real engine (retroflect run) in a network namespace', () => {
  let topo: Topology | undefined;
  let engine: ChildProcess | undefined;
  let engineOut = '';
  let sockDir = '';
  let sock = '';

  before(async () => {
    if (skipReason) return;
    buildIfStale();
    topo = await createTopology('dnc');
    // A private 0700 directory owned by root, as the engine requires for its socket (docs/protocol.md, Access).
    sockDir = mkdtempSync(join(tmpdir(), 'rft-dnc-'));
    sock = join(sockDir, 'engine.sock');
    engine = topo.a.spawn(process.execPath, [engineBundle, 'run', '--no-config', '--pipe', sock], { cwd: root });
    engine.stdout!.setEncoding('utf8');
    engine.stderr!.setEncoding('utf8');
    engine.stdout!.on('data', (d: string) => (engineOut += d));
    engine.stderr!.on('data', (d: string) => (engineOut += d));
    await waitFor(`engine ready (output so far: ${engineOut})`, () => /^Ready\./m.test(engineOut) || engine!.exitCode !== null, 30_000);
    assert.equal(engine.exitCode, null, `engine exited during start-up:\n${engineOut}`);
  });

  after(async () => {
    if (engine && engine.exitCode === null) {
      engine.kill('SIGTERM');
      await waitFor('engine exit', () => engine!.exitCode !== null || engine!.signalCode !== null, 15_000).catch(() => undefined);
    }
    await topo?.destroy();
    if (sockDir) rmSync(sockDir, { recursive: true, force: true });
  });

  test('.NET NamedPipeClientStream: hello and status through the engine socket', { skip: skipReason ?? false }, async () => {
    const r = await client(sock, ['status']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.replies.length, 2);
    const [hello, status] = r.replies;
    assert.equal(hello.id, 1);
    assert.equal(hello.result?.protocol, 1);
    assert.equal(hello.result?.auth, 'peer-credentials');
    assert.ok((hello.result?.capabilities as string[]).includes('address.add'));
    assert.equal(status.id, 2);
    assert.equal(status.result?.state, 'running');
    // The default Linux backend: ebpf where its program loads, else tun (the client is the point, not the backend).
    assert.ok(['ebpf', 'tun'].includes(status.result?.backend as string), String(status.result?.backend));
    assert.equal(status.result?.pid, hello.result?.pid);
    assert.deepEqual(status.result?.reflectAddresses, []);
  });

  test('.NET client: address add (idempotent), list, remove, list', { skip: skipReason ?? false }, async () => {
    const addr = { addresses: ['203.0.113.7'] };
    const r = await client(sock, ['address.add', addr, 'address.add', addr, 'address.list', 'address.remove', addr, 'address.list']);
    assert.equal(r.code, 0, r.stderr);
    const [, add1, add2, list1, remove, list2] = r.replies;
    assert.deepEqual(add1.result?.added, ['203.0.113.7']);
    assert.deepEqual(add1.result?.existing, []);
    assert.deepEqual(add2.result?.added, []);
    assert.deepEqual(add2.result?.existing, ['203.0.113.7']);
    assert.deepEqual(list1.result?.addresses, [{ address: '203.0.113.7', persisted: false, source: 'Temporary', portMaps: [], allow: {} }]);
    assert.deepEqual(remove.result?.removed, ['203.0.113.7']);
    assert.deepEqual(list2.result?.addresses, []);
    // The route the engine added for the address is there while configured and gone after remove is the
    // engine's own business (tested with the engine); here the point is that the replies reach .NET intact.
  });

  test('.NET client: error replies carry the protocol codes the module maps to error ids', { skip: skipReason ?? false }, async () => {
    const r = await client(sock, [
      'address.add', { addresses: ['127.0.0.1'] },
      'address.remove', { addresses: ['203.0.113.99'] },
      'address.test', { address: '127.0.0.1' },
      'no.such.method',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const [, bad, missing, test1, unknown] = r.replies;
    assert.equal(bad.error?.code, 'E_INVALID_ADDRESS');
    assert.equal(bad.error?.details?.address, '127.0.0.1');
    assert.ok(bad.error?.hint, 'an invalid address comes with a hint');
    assert.equal(missing.error?.code, 'E_ADDRESS_NOT_FOUND');
    assert.equal(test1.result?.valid, false);
    assert.equal(test1.result?.address, '127.0.0.1');
    assert.ok((test1.result?.reasons as unknown[]).length > 0);
    assert.equal(unknown.error?.code, 'E_UNKNOWN_METHOD');
  });


});
