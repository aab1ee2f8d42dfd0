/**
 * WinDivert failures become RetroflectErrors that say what to do. Open errors are produced by the test double
 * (WinDivertDouble_SetOpenError makes WinDivertOpen fail with a given Windows error code, as the driver would) and
 * read back through the real binding's last-error path.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { buildInterceptConfig } from '../../../src/config/intercept-config.ts';
import { WinDivertHostBackend } from '../../../src/packet-sources/windivert/host.ts';
import { ErrorCode, ExitCode, RetroflectError } from '../../../src/errors.ts';
import { locateWinDivert, winDivertCandidates } from '../../../src/packet-sources/windivert/location.ts';
import { doubleLastFilter } from './double-controls.ts';
import { DOUBLE_PATH, loadDouble } from '../../helpers/windivert-double.ts';

const { double } = loadDouble();
const cfg = buildInterceptConfig(['192.0.2.1'], ['8080/tcp']);

const cases: { code: number; error: string; exit: number; message: RegExp; hint: RegExp }[] = [
  { code: 5, error: ErrorCode.NOT_ADMIN, exit: ExitCode.NOT_ADMIN, message: /not running as Administrator/, hint: /elevated/ },
  { code: 2, error: ErrorCode.BACKEND_UNAVAILABLE, exit: ExitCode.BACKEND_UNAVAILABLE, message: /WinDivert64\.sys was not found/, hint: /same folder|--windivert-dir/ },
  { code: 577, error: ErrorCode.BACKEND_UNAVAILABLE, exit: ExitCode.BACKEND_UNAVAILABLE, message: /signature/, hint: /signed/ },
  { code: 1275, error: ErrorCode.BACKEND_UNAVAILABLE, exit: ExitCode.BACKEND_UNAVAILABLE, message: /blocked/, hint: /[Ss]ecurity software/ },
  { code: 87, error: ErrorCode.BACKEND_FAILED, exit: ExitCode.BACKEND_UNAVAILABLE, message: /rejected the packet filter/, hint: /report it/ },
  { code: 1753, error: ErrorCode.BACKEND_UNAVAILABLE, exit: ExitCode.BACKEND_UNAVAILABLE, message: /Base Filtering Engine/, hint: /Start-Service BFE/ },
  { code: 31, error: ErrorCode.BACKEND_FAILED, exit: ExitCode.BACKEND_UNAVAILABLE, message: /Windows error 31/, hint: /net helpmsg 31/ },
];

for (const c of cases) {
  test(`WinDivertOpen error ${c.code} → ${c.error}, nothing left open`, async () => {
    double.reset();
    double.setOpenError(c.code);
    const backend = new WinDivertHostBackend({ dllPath: DOUBLE_PATH, priority: 5 });
    await assert.rejects(backend.start(cfg), (err: unknown) => {
      assert.ok(err instanceof RetroflectError);
      assert.equal(err.code, c.error);
      assert.equal(err.exitCode, c.exit);
      assert.match(err.message, c.message);
      assert.match(err.hint ?? '', c.hint);
      assert.equal(err.details?.windowsError, c.code);
      assert.equal(err.details?.filter, doubleLastFilter(double), 'details carry the filter WinDivertOpen was given');
      assert.equal(double.lastPriority(), 5);
      return true;
    });
    assert.equal(double.openHandles(), 0);
    await backend.stop();
    double.reset();
  });
}

test('the double rejects what WinDivert rejects with 87: unbalanced filter, priority out of range', () => {
  double.reset();
  const { api } = loadDouble();
  assert.equal(api.open('(tcp', 0, 0, 0n), -1);
  assert.equal(api.lastError(), 87);
  assert.equal(api.open('tcp', 0, 30001, 0n), -1, 'priority above 30000');
  assert.equal(api.lastError(), 87);
  assert.equal(double.openHandles(), 0);
});

test('queue settings outside WinDivert ranges and bad priorities are refused before anything opens', () => {
  assert.throws(() => new WinDivertHostBackend({ dllPath: DOUBLE_PATH, priority: 30001 }), (e: RetroflectError) => e.code === ErrorCode.INVALID_PARAMS && /priority/.test(e.message));
  assert.throws(() => new WinDivertHostBackend({ dllPath: DOUBLE_PATH, priority: 1.5 }), RetroflectError);
  assert.throws(() => new WinDivertHostBackend({ dllPath: DOUBLE_PATH, queue: { length: 16 } }), /queue length 16 is outside 32\.\.16384/);
  assert.equal(double.openHandles(), 0);
});

test('missing WinDivert.dll: BACKEND_UNAVAILABLE listing where it looked', async () => {
  const dir = join(DOUBLE_PATH, '..', 'no-such-folder');
  const backend = new WinDivertHostBackend({ windivertDir: dir });
  await assert.rejects(backend.start(cfg), (err: RetroflectError) => {
    assert.equal(err.code, ErrorCode.BACKEND_UNAVAILABLE);
    assert.match(err.message, /WinDivert\.dll was not found/);
    assert.match(err.hint ?? '', /--windivert-dir or RETROFLECT_WINDIVERT_DIR/);
    assert.equal((err.details?.searched as string[])[0], join(dir, 'WinDivert.dll'));
    return true;
  });
  const plan = backend.plan(cfg);
  assert.match(plan[0].detail, /not found/);
  assert.match(plan[1].detail, /filter: !loopback and \(\(outbound and/);
});

test('a DLL that is not WinDivert: BACKEND_UNAVAILABLE with the loader reason', async () => {
  const backend = new WinDivertHostBackend({ dllPath: `${DOUBLE_PATH}.missing` });
  await assert.rejects(backend.start(cfg), (err: RetroflectError) => err.code === ErrorCode.BACKEND_UNAVAILABLE && /could not be loaded/.test(err.message) && typeof err.details?.reason === 'string');
});

test('search order: option, environment, executable folder, Program Files', () => {
  const env = { RETROFLECT_WINDIVERT_DIR: '/env/dir', ProgramFiles: '/pf' };
  const c = winDivertCandidates({ windivertDir: '/opt/dir', env, execPath: '/exe/dir/retroflect' });
  assert.deepEqual(c, [join('/opt/dir', 'WinDivert.dll'), join('/env/dir', 'WinDivert.dll'), join('/exe/dir', 'WinDivert.dll'), join('/pf', 'Retroflect', 'WinDivert.dll')]);
  const found = locateWinDivert({ env, execPath: '/exe/dir/retroflect', exists: (p) => p === join('/exe/dir', 'WinDivert.dll') || p.startsWith(join('/pf')) });
  assert.equal(found.path, join('/exe/dir', 'WinDivert.dll'));
});
