/**
 * The whole engine on Windows, under Wine: `retroflect run` (the lead's bundle dist/retroflect.cjs, run by the
 * Windows node.exe) with the mingw test double as WinDivert.dll, serving its named pipe \\.\pipe\<name> to CLI
 * clients in a second node.exe process. The double is driven by files (native/windivert_double.c):
 * WINDIVERT_DOUBLE_INJECT_FILE is queued to the first handle the engine opens, every packet the engine sends back
 * is appended to WINDIVERT_DOUBLE_SENT_FILE.
 *
 * Skips locally when wine or dist/retroflect.cjs (npm run build) is missing; fails on CI instead.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, copyFileSync, existsSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { addressBuffer, decodeAddress, WINDIVERT_ADDRESS_SIZE, type WinDivertAddress } from '../../src/divert/windivert-address.ts';
import { inboundAddr, outboundAddr, packet, packetSeq } from '../windivert/double.ts';
import { NODE_EXE, ROOT, runWine, setupWine, WINE_DIR, wineAvailable, wineEnv, winPath } from './setup.ts';

const wine = await wineAvailable();
const bundlePath = join(ROOT, 'dist', 'retroflect.cjs');
const missing = !wine ? 'wine is not installed (apt-get install wine)' : !existsSync(bundlePath) ? 'dist/retroflect.cjs is missing (npm run build)' : null;
if (missing && process.env.CI) test('the Windows engine test can run on CI', () => assert.fail(missing));
const skip = missing ?? false;

const REFLECT = '203.0.113.77'; // documentation range, routed through the default gateway, on no local subnet
const LOCAL = '198.51.100.2';
const PEER = '203.0.113.9';
const PIPE = `rft-wine-${process.pid}`;
const tag = `engine-${process.pid}`;
const injectFile = join(WINE_DIR, `${tag}.inject.bin`);
const sentFile = join(WINE_DIR, `${tag}.sent.bin`);
const script = join(WINE_DIR, `${tag}.retroflect.cjs`); // beside .tmp/wine/node_modules, so koffi resolves to the Windows prebuilt
let engine: ChildProcess | null = null;
let engineExit: Promise<number | null> = Promise.resolve(null);

function record(p: Uint8Array, a: Partial<WinDivertAddress>): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32LE(p.length);
  return Buffer.concat([len, addressBuffer(a), Buffer.from(p)]);
}

function readRecords(path: string): { bytes: Buffer; addr: WinDivertAddress }[] {
  if (!existsSync(path)) return [];
  const f = readFileSync(path);
  const out = [];
  for (let off = 0; off + 4 + WINDIVERT_ADDRESS_SIZE <= f.length; ) {
    const len = f.readUInt32LE(off);
    const addr = decodeAddress(f, off + 4);
    out.push({ addr, bytes: f.subarray(off + 4 + WINDIVERT_ADDRESS_SIZE, off + 4 + WINDIVERT_ADDRESS_SIZE + len) });
    off += 4 + WINDIVERT_ADDRESS_SIZE + len;
  }
  return out;
}

async function cli(args: string[]): Promise<{ code: number | null; json: unknown; stdout: string }> {
  const r = await runWine([NODE_EXE, script, ...args, '--pipe', PIPE, '--json'], { tag: `${tag}-cli`, timeoutMs: 60_000 });
  let json: unknown = null;
  try {
    json = JSON.parse(r.stdout);
  } catch {
    // left null; the assertion that uses it shows stdout
  }
  return { code: r.code, json, stdout: r.stdout + r.stderr };
}

before(async () => {
  if (skip) return;
  await setupWine();
  copyFileSync(bundlePath, script);
  rmSync(sentFile, { force: true });
  const records: Buffer[] = [];
  for (let i = 0; i < 100; i++) records.push(record(packet(LOCAL, REFLECT, 6, 40000, 80, i), outboundAddr(false)));
  for (let i = 100; i < 120; i++) records.push(record(packet(PEER, LOCAL, 6, 5555, 8080, i), inboundAddr(false)));
  for (let i = 120; i < 130; i++) records.push(record(packet(PEER, LOCAL, 6, 5555, 8081, i), inboundAddr(false)));
  writeFileSync(injectFile, Buffer.concat(records));
  const out = openSync(join(WINE_DIR, `${tag}.run.out.txt`), 'w');
  const err = openSync(join(WINE_DIR, `${tag}.run.err.txt`), 'w');
  const nul = openSync('/dev/null', 'r');
  engine = spawn('wine', [NODE_EXE, script, 'run', '--no-config', '-r', REFLECT, '-s', '8080/tcp', '--windivert-dir', winPath(join(ROOT, 'native', 'build', 'win64')), '--pipe', PIPE], {
    cwd: WINE_DIR,
    env: wineEnv({ WINDIVERT_DOUBLE_INJECT_FILE: winPath(injectFile), WINDIVERT_DOUBLE_SENT_FILE: winPath(sentFile) }),
    stdio: [nul, out, err],
  });
  engineExit = new Promise((resolve) => engine!.once('exit', (code) => resolve(code)));
  for (const fd of [out, err, nul]) closeSync(fd);
}, { timeout: 600_000 });

after(async () => {
  if (engine && engine.exitCode === null) engine.kill('SIGKILL');
  for (const f of [script, injectFile]) rmSync(f, { force: true });
});

test('retroflect run under Wine reflects and shields, and CLI clients in another node.exe talk to it over its named pipe', { skip, timeout: 300_000 }, async () => {
  const outPath = join(WINE_DIR, `${tag}.run.out.txt`);
  const deadline = Date.now() + 120_000;
  while (!readFileSync(outPath, 'utf8').includes('Ready.') && Date.now() < deadline && engine!.exitCode === null) await sleep(200);
  assert.match(readFileSync(outPath, 'utf8'), /Ready\./, `engine did not start:\n${readFileSync(join(WINE_DIR, `${tag}.run.err.txt`), 'utf8')}`);
  assert.match(readFileSync(outPath, 'utf8'), /windivert/);

  while (readRecords(sentFile).length < 110 && Date.now() < deadline) await sleep(200);
  const sent = readRecords(sentFile);
  assert.equal(sent.length, 110, '100 reflected + 10 passed; the 20 to the shielded port are dropped');
  const reflected = sent.filter((s) => packetSeq(s.bytes) < 100);
  assert.equal(reflected.length, 100);
  for (const s of reflected) {
    assert.equal(s.bytes.subarray(12, 16).join('.'), REFLECT);
    assert.equal(s.bytes.subarray(16, 20).join('.'), LOCAL);
    assert.equal(s.addr.outbound, false);
    assert.equal(s.addr.ifIdx, 7);
  }
  assert.deepEqual(sent.filter((s) => packetSeq(s.bytes) >= 100).map((s) => packetSeq(s.bytes)), Array.from({ length: 10 }, (_, i) => 120 + i));

  const status = await cli(['status']);
  assert.equal(status.code, 0, status.stdout);
  const st = status.json as { state: string; backend: string; reflectAddresses: string[] };
  assert.equal(st.state, 'running');
  assert.equal(st.backend, 'windivert');
  assert.deepEqual(st.reflectAddresses, [REFLECT]);

  const stats = await cli(['stats']);
  assert.equal(stats.code, 0, stats.stdout);
  const s = stats.json as { reflected: { packets: number }; shieldDropped: { packets: number } };
  assert.equal(s.reflected.packets, 100);
  assert.equal(s.shieldDropped.packets, 20);

  const add = await cli(['address', 'add', '203.0.113.78']); // a live change: new WinDivert handle under Wine
  assert.equal(add.code, 0, add.stdout);
  const again = await cli(['status']);
  assert.deepEqual((again.json as { reflectAddresses: string[] }).reflectAddresses, [REFLECT, '203.0.113.78']);

  const stop = await cli(['stop']);
  assert.equal(stop.code, 0, stop.stdout);
  const code = await Promise.race([engineExit, sleep(60_000).then(() => 'timeout' as const)]);
  assert.equal(code, 0, 'engine exits cleanly after `stop`');
});
