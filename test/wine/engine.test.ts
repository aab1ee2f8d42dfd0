/**
 * The whole engine on Windows, under Wine, twice: as the bundle dist/retroflect.cjs run by the Windows node.exe, and
 * as the packaged single-file executable dist/retroflect.exe (koffi's Windows binary travels inside it). Each time
 * `retroflect run` uses the mingw test double as WinDivert.dll and serves its named pipe \\.\pipe\<name> to CLI
 * clients in a second Windows process. The double is driven by files (native/windivert_double.c):
 * WINDIVERT_DOUBLE_INJECT_FILE is queued to the first handle the engine opens, every packet the engine sends back
 * is appended to WINDIVERT_DOUBLE_SENT_FILE.
 *
 * Skips locally when wine or a build (npm run build; npm run build -- --windows) is missing; fails on CI instead.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, copyFileSync, existsSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileRecord, inboundAddr, outboundAddr, packet, packetSeq, readFileRecords } from '../helpers/windivert-double.ts';
import { NODE_EXE, ROOT, runWine, setupWine, WINE_DIR, wineAvailable, wineEnv, winPath } from './setup.ts';

const wine = await wineAvailable();
const REFLECT = '203.0.113.77'; // documentation range, routed through the default gateway, on no local subnet
const LOCAL = '198.51.100.2';
const PEER = '203.0.113.9';
const running: ChildProcess[] = [];



after(() => {
  for (const p of running) if (p.exitCode === null) p.kill('SIGKILL');
});

interface Flavour {
  name: string;
  /** The build this flavour needs, and how to run it (argv before the retroflect arguments). */
  build: string;
  prepare: (tag: string) => string[];
}

const flavours: Flavour[] = [
  {
    name: 'bundle on node.exe',
    build: join(ROOT, 'dist', 'retroflect.cjs'),
    prepare: (tag) => {
      const script = join(WINE_DIR, `${tag}.retroflect.cjs`); // beside .tmp/wine/node_modules: koffi resolves to the Windows prebuilt
      copyFileSync(join(ROOT, 'dist', 'retroflect.cjs'), script);
      return [NODE_EXE, script];
    },
  },
  {
    name: 'single-file retroflect.exe',
    build: join(ROOT, 'dist', 'retroflect.exe'),
    prepare: () => [join(ROOT, 'dist', 'retroflect.exe')],
  },
];

for (const flavour of flavours) {
  const missing = !wine ? 'wine is not installed (apt-get install wine)' : !existsSync(flavour.build) ? `${flavour.build} is missing (npm run build${flavour.build.endsWith('.exe') ? ' -- --windows' : ''})` : null;
  if (missing && process.env.CI) test(`the Windows engine test (${flavour.name}) can run on CI`, () => assert.fail(missing));

  test(`retroflect run (${flavour.name}) under Wine reflects and shields, and CLI clients in another process talk to it over its named pipe`, { skip: missing ?? false, timeout: 600_000 }, async () => {
    await setupWine();
    const tag = `engine-${process.pid}-${flavours.indexOf(flavour)}`;
    const pipe = `rft-wine-${process.pid}-${flavours.indexOf(flavour)}`;
    const injectFile = join(WINE_DIR, `${tag}.inject.bin`);
    const sentFile = join(WINE_DIR, `${tag}.sent.bin`);
    const argv = flavour.prepare(tag);
    rmSync(sentFile, { force: true });
    const records: Buffer[] = [];
    for (let i = 0; i < 100; i++) records.push(fileRecord(packet(LOCAL, REFLECT, 6, 40000, 80, i), outboundAddr(false)));
    for (let i = 100; i < 120; i++) records.push(fileRecord(packet(PEER, LOCAL, 6, 5555, 8080, i), inboundAddr(false)));
    for (let i = 120; i < 130; i++) records.push(fileRecord(packet(PEER, LOCAL, 6, 5555, 8081, i), inboundAddr(false)));
    writeFileSync(injectFile, Buffer.concat(records));
    const outPath = join(WINE_DIR, `${tag}.run.out.txt`);
    const errPath = join(WINE_DIR, `${tag}.run.err.txt`);
    const out = openSync(outPath, 'w');
    const err = openSync(errPath, 'w');
    const nul = openSync('/dev/null', 'r');
    const engine = spawn('wine', [...argv, 'run', '--no-config', '-r', REFLECT, '-s', '8080/tcp', '--windivert-dir', winPath(join(ROOT, 'native', 'build', 'win64')), '--pipe', pipe], {
      cwd: WINE_DIR,
      env: wineEnv({ WINDIVERT_DOUBLE_INJECT_FILE: winPath(injectFile), WINDIVERT_DOUBLE_SENT_FILE: winPath(sentFile) }),
      stdio: [nul, out, err],
    });
    running.push(engine);
    const engineExit = new Promise<number | null>((resolve) => engine.once('exit', (code) => resolve(code)));
    for (const fd of [out, err, nul]) closeSync(fd);

    const cli = async (args: string[]): Promise<{ code: number | null; json: unknown; stdout: string }> => {
      const r = await runWine([...argv, ...args, '--pipe', pipe, '--json'], { tag: `${tag}-cli`, timeoutMs: 60_000 });
      let json: unknown = null;
      try {
        json = JSON.parse(r.stdout);
      } catch {
        // left null; the assertion that uses it shows stdout
      }
      return { code: r.code, json, stdout: r.stdout + r.stderr };
    };

    try {
      const deadline = Date.now() + 120_000;
      while (!readFileSync(outPath, 'utf8').includes('Ready.') && Date.now() < deadline && engine.exitCode === null) await sleep(200);
      assert.match(readFileSync(outPath, 'utf8'), /Ready\./, `engine did not start:\n${readFileSync(errPath, 'utf8')}`);
      assert.match(readFileSync(outPath, 'utf8'), /windivert/);

      while (readFileRecords(sentFile).length < 110 && Date.now() < deadline) await sleep(200);
      const sent = readFileRecords(sentFile);
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

      // Capture over the Windows named pipe: the double queues its packets before any capture can start, so this
      // shows the stream (pcapng header, end on --duration, closing summary) works on Windows; packets and verdicts
      // through the WinDivert backend are checked in test/capture/windivert.test.ts.
      const pcap = join(WINE_DIR, `${tag}.capture.pcapng`);
      const capture = await cli(['capture', '-w', winPath(pcap), '--duration', '2s']);
      assert.equal(capture.code, 0, capture.stdout);
      assert.deepEqual(capture.json, { file: winPath(pcap), packets: 0, dropped: 0 });
      assert.equal(readFileSync(pcap).readUInt32LE(0), 0x0a0d0d0a, 'the file starts with a pcapng section header');
      rmSync(pcap, { force: true });

      const add = await cli(['address', 'add', '203.0.113.78']); // a live change: new WinDivert handle under Wine
      assert.equal(add.code, 0, add.stdout);
      const again = await cli(['status']);
      assert.deepEqual((again.json as { reflectAddresses: string[] }).reflectAddresses, [REFLECT, '203.0.113.78']);

      const stop = await cli(['stop']);
      assert.equal(stop.code, 0, stop.stdout);
      const code = await Promise.race([engineExit, sleep(60_000).then(() => 'timeout' as const)]);
      assert.equal(code, 0, 'engine exits cleanly after `stop`');
    } finally {
      if (engine.exitCode === null) engine.kill('SIGKILL');
      rmSync(injectFile, { force: true });
    }
  });
}
