/**
 * retroflect.exe as the Windows service `Retroflect`, under Wine's service manager (sc.exe create/start/stop/query/
 * delete), on the WinDivert TEST DOUBLE: the service starts, reflects, answers its pipe, reports the controls it
 * accepts (stop, shutdown, pre-shutdown), stops cleanly on `sc stop` (every queued packet decided: the double's wire
 * has them all, reflected), leaves no process behind, writes its log file under the known ProgramData folder and
 * tells the Event Log (Wine prints ReportEventW calls on the stderr of the command that booted the prefix). A start
 * with a bad config ends STOPPED with ERROR_SERVICE_SPECIFIC_ERROR and our exit code 6. Wine never delivers
 * pre-shutdown (docs/windows.md says what only a real host confirms).
 *
 * Skips locally when Wine or a build (npm run build -- --windows; make -C native) is missing; fails on CI.
 */
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileRecord, inboundAddr, outboundAddr, packet, packetSeq } from '../helpers/windivert-double.ts';
import { readFileRecords } from '../helpers/windivert-double.ts';
import { NODE_EXE, ROOT, setupWine, WINE_DIR, wineAvailable, winPath } from './setup.ts';
import { bootServicePrefix, endServicePrefix, ensureServicePrefix } from './service-prefix.ts';
import { reportedEvents, runInServicePrefix } from './service-prefix.ts';
import { sc, scQuery, SERVICE_DIR, SERVICE_PREFIX, waitForState } from './service-prefix.ts';

const ENGINE_EXE = join(ROOT, 'dist', 'retroflect.exe');
const DOUBLE_DIR = join(ROOT, 'native', 'build', 'win64');
const NAME = 'Retroflect';
const PIPE = 'rft-service-test';
const REFLECT = '203.0.113.77';
const LOCAL = '198.51.100.2';
const PEER = '203.0.113.9';
const INJECT = join(SERVICE_DIR, 'inject.bin');
const SENT = join(SERVICE_DIR, 'sent.bin');
const LOG_FILE = join(SERVICE_PREFIX, 'drive_c', 'ProgramData', 'Retroflect', 'logs', 'engine.log');
/** SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN | SERVICE_ACCEPT_PRESHUTDOWN */
const ACCEPTED = 0x1 | 0x4 | 0x100;

const wine = await wineAvailable();
const missing = !wine
  ? 'wine is not installed (apt-get install wine)'
  : !existsSync(ENGINE_EXE)
    ? `${ENGINE_EXE} is missing (npm run build -- --windows)`
    : !existsSync(join(DOUBLE_DIR, 'WinDivert.dll')) ? 'the WinDivert double is missing (make -C native)' : null;
if (missing && process.env.CI) test('the Windows service test can run on CI', () => assert.fail(missing));
const skip = missing ?? false;

before(async () => {
  if (skip) return;
  await setupWine(); // node.exe and koffi for service-query.cjs
  ensureServicePrefix();
}, { timeout: 900_000 });

after(() => {
  if (!skip) endServicePrefix();
});

/** What the SCM holds (controls accepted, config), read with the Windows node.exe: Wine's sc.exe shows neither. */
async function queryService(): Promise<Record<string, any>> {
  const script = join(WINE_DIR, 'service-query.cjs'); // beside .tmp/wine/node_modules: koffi resolves there
  copyFileSync(join(ROOT, 'test', 'wine', 'service-query.cjs'), script);
  const r = await runInServicePrefix([NODE_EXE, winPath(script), NAME], 'query');
  assert.equal(r.code, 0, r.stdout + r.stderr);
  return JSON.parse(r.stdout) as Record<string, any>;
}

function bootErrors(): string {
  return readFileSync(join(SERVICE_DIR, 'boot.err.txt'), 'utf8').slice(-3000);
}

function engineCommand(args: string[]): string {
  return [`"${winPath(ENGINE_EXE)}"`, 'run', '--service', ...args].join(' ');
}

const RUNS = 'the service starts on the double, reflects, answers its pipe, accepts stop/shutdown/pre-shutdown, '
  + 'and `sc stop` stops it cleanly';

test(RUNS, { skip, timeout: 600_000 }, async () => {
  rmSync(SENT, { force: true });
  rmSync(LOG_FILE, { force: true });
  const records: Buffer[] = [];
  for (let i = 0; i < 100; i++) records.push(fileRecord(packet(LOCAL, REFLECT, 6, 40000, 80, i), outboundAddr(false)));
  for (let i = 100; i < 120; i++) records.push(fileRecord(packet(PEER, LOCAL, 6, 5555, 8080, i), inboundAddr(false)));
  for (let i = 120; i < 130; i++) records.push(fileRecord(packet(PEER, LOCAL, 6, 5555, 8081, i), inboundAddr(false)));
  writeFileSync(INJECT, Buffer.concat(records));
  bootServicePrefix({ WINDIVERT_DOUBLE_INJECT_FILE: winPath(INJECT), WINDIVERT_DOUBLE_SENT_FILE: winPath(SENT) });
  await sc(['delete', NAME]); // left by an interrupted run

  const windivertDir = `"${winPath(DOUBLE_DIR)}"`;
  const bin = engineCommand(['--no-config', '-r', REFLECT, '-s', '8080/tcp', '--windivert-dir', windivertDir]);
  const binWithPipe = `${bin} --pipe ${PIPE}`;
  const created = await sc(['create', NAME, 'binPath=', binWithPipe, 'start=', 'demand']);
  assert.equal(created.code, 0, created.stdout + created.stderr);
  const started = await sc(['start', NAME]);
  assert.equal(started.code, 0, started.stdout + started.stderr);
  const running = await waitForState(NAME, 'RUNNING');
  assert.equal(running?.state, 'RUNNING', `${JSON.stringify(running)}\n${bootErrors()}`);

  const scm = await queryService();
  assert.equal(scm.status.controlsAccepted, ACCEPTED, 'stop, shutdown and pre-shutdown are accepted while running');

  const status = await runInServicePrefix([ENGINE_EXE, 'status', '--pipe', PIPE, '--json'], 'status');
  assert.equal(status.code, 0, status.stdout + status.stderr);
  const st = JSON.parse(status.stdout) as { state: string; backend: string; reflectAddresses: string[] };
  assert.deepEqual([st.state, st.backend, st.reflectAddresses], ['running', 'windivert', [REFLECT]]);

  const deadline = Date.now() + 60_000;
  while (readFileRecords(SENT).length < 110 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));

  const stopped = await sc(['stop', NAME]);
  assert.equal(stopped.code, 0, stopped.stdout + stopped.stderr);
  const end = await waitForState(NAME, 'STOPPED');
  assert.deepEqual(end, { state: 'STOPPED', win32ExitCode: 0, serviceExitCode: 0 });

  // The wire: every packet decided (100 reflected, 10 passed, 20 to the shielded port dropped), none released as is.
  const sent = readFileRecords(SENT);
  assert.equal(sent.length, 110);
  const reflected = sent.filter((s) => packetSeq(s.bytes) < 100);
  assert.equal(reflected.length, 100);
  for (const s of reflected) assert.equal(s.bytes.subarray(12, 16).join('.'), REFLECT);
  const passed = sent.filter((s) => packetSeq(s.bytes) >= 100).map((s) => packetSeq(s.bytes));
  assert.deepEqual(passed, Array.from({ length: 10 }, (_, i) => 120 + i));

  // Nothing left: no engine process, the pipe gone.
  const after = await runInServicePrefix([ENGINE_EXE, 'status', '--pipe', PIPE, '--json'], 'status-after');
  assert.equal(after.code, 7, 'no engine answers any more');
  const ps = await runInServicePrefix(['tasklist'], 'tasklist');
  assert.doesNotMatch(ps.stdout, /retroflect\.exe/i, ps.stdout);

  // The log file under the known ProgramData folder, and the Event Log calls.
  const log = readFileSync(LOG_FILE, 'utf8');
  assert.match(log, /INFO    1000 retroflect \S+ started/);
  assert.match(log, /INFO {4}1001 retroflect stopped: the service was stopped through the Service Control Manager\./);
  assert.match(log, /Control Manager\. Exit code 0\./);
  const events = reportedEvents();
  assert.deepEqual(events.map((e) => [e.id, e.type]), [[1000, 4], [1001, 4]], bootErrors());
  assert.match(events[0].text, /^retroflect \S+ started/);
  assert.match(events[1].text, /the service was stopped through the Service Control Manager/);

  const deleted = await sc(['delete', NAME]);
  assert.equal(deleted.code, 0, deleted.stdout + deleted.stderr);
  assert.equal(await scQuery(NAME), null, 'the service is gone');
});

const BAD = 'a start with a bad config ends STOPPED with ERROR_SERVICE_SPECIFIC_ERROR (1066) and exit code 6, '
  + 'and says why in the Event Log';

test(BAD, { skip, timeout: 600_000 }, async () => {
  const bad = join(SERVICE_DIR, 'bad-config.json');
  writeFileSync(bad, '{"reflectAddresses": [');
  bootServicePrefix({ WINDIVERT_DOUBLE_INJECT_FILE: '', WINDIVERT_DOUBLE_SENT_FILE: '' });
  await sc(['delete', NAME]);
  const bin = engineCommand(['--config', `"${winPath(bad)}"`, '--pipe', PIPE]);
  const created = await sc(['create', NAME, 'binPath=', bin]);
  assert.equal(created.code, 0, created.stdout + created.stderr);
  await sc(['start', NAME]);
  const end = await waitForState(NAME, 'STOPPED');
  assert.deepEqual(end, { state: 'STOPPED', win32ExitCode: 1066, serviceExitCode: 6 });
  const events = reportedEvents();
  assert.deepEqual(events.map((e) => [e.id, e.type]), [[3000, 1], [1001, 4]]);
  assert.match(events[0].text, /Config file .* is invalid/);
  assert.match(events[1].text, /could not start\. Exit code 6\./);
  assert.equal(readFileSync(bad, 'utf8'), '{"reflectAddresses": [', 'the bad file is left as it was');
  await sc(['delete', NAME]);
  assert.equal(await scQuery(NAME), null);
});

test('`run --service` outside the service manager is refused (exit code 2)', { skip, timeout: 120_000 }, async () => {
  const r = await runInServicePrefix([ENGINE_EXE, 'run', '--service', '--no-config'], 'console');
  assert.equal(r.code, 2, r.stdout + r.stderr);
  assert.match(r.stderr, /--service is for the Service Control Manager/);
});
