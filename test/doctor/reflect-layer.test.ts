/**
 * The REFLECT layer of the WinDivert test double (native/windivert_double.c) and our reader of it
 * (src/packet-sources/windivert/reflect.ts), on Linux with the gcc build: handles this process and ANOTHER process
 * hold are reported with their pid, layer, priority, flags and filter, as WinDivert documents; a handle closed, or
 * held by a process that died, is not. The other process is a real one (fixtures/hold-windivert-handle.ts); the
 * double sees it through WINDIVERT_DOUBLE_DRIVER_DIR, its stand-in for the one driver all processes share.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { INVALID_HANDLE, WinDivertLayer } from '../../src/packet-sources/windivert/ffi.ts';
import { doubleLastOpenReason } from '../packet-sources/windivert/double-controls.ts';
import { listWinDivertHandles } from '../../src/packet-sources/windivert/reflect.ts';
import { DOUBLE_PATH, loadDouble } from '../helpers/windivert-double.ts';

const dir = mkdtempSync(join(tmpdir(), 'rft-reflect-'));
const children: ChildProcess[] = [];

before(() => {
  process.env.WINDIVERT_DOUBLE_DRIVER_DIR = dir;
});
after(() => {
  for (const c of children) c.kill('SIGKILL');
  delete process.env.WINDIVERT_DOUBLE_DRIVER_DIR;
  rmSync(dir, { recursive: true, force: true });
});

async function holder(priority: number,
  filter: string): Promise<{ pid: number; release: () => Promise<void>; child: ChildProcess }> {
  const control = join(dir, `hold-${children.length}`);
  writeFileSync(control, '');
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/doctor/fixtures/hold-windivert-handle.ts',
    DOUBLE_PATH, String(priority), filter, control], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env } });
  children.push(child);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  for (let i = 0; i < 300 && !existsSync(`${control}.ready`); i++) {
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.ok(existsSync(`${control}.ready`), `the holder did not open its handle: ${stderr}`);
  const exited = new Promise((r) => child.once('exit', r));
  return { pid: Number(readFileSync(`${control}.ready`, 'utf8')), child,
    release: async () => { rmSync(control); await exited; } };
}

test('REFLECT: this process\'s and another process\'s handles are reported with pid, layer, priority, flags and filter',
  async () => {
  const { api, double } = loadDouble();
  double.reset();
  assert.deepEqual(listWinDivertHandles(api), [], 'nothing open yet');
  const own = api.open('outbound and ip.DstAddr == 192.0.2.1', WinDivertLayer.Network, 1000, 0n);
  assert.notEqual(own, INVALID_HANDLE, doubleLastOpenReason(double));
  const other = await holder(1000, 'tcp.DstPort == 8080');
  try {
    const handles = listWinDivertHandles(api).map(({ openedAt: _t, ...h }) => h);
    assert.deepEqual(handles.sort((a, b) => a.processId - b.processId), [
      { processId: process.pid, layer: 0, layerName: 'network', priority: 1000, flags: 0,
        filter: 'outbound and ip.DstAddr == 192.0.2.1' },
      { processId: other.pid, layer: 0, layerName: 'network', priority: 1000, flags: 0, filter: 'tcp.DstPort == 8080' },
    ].sort((a, b) => a.processId - b.processId));
    assert.equal(double.lastLayer(), WinDivertLayer.Reflect);
    assert.equal(BigInt(double.lastFlags()), 0x15n, 'SNIFF | RECV_ONLY | NO_INSTALL');
  } finally {
    await other.release();
  }
  assert.deepEqual(listWinDivertHandles(api).map((h) => h.processId), [process.pid],
    'the other process closed its handle');
  api.close(own);
  assert.deepEqual(listWinDivertHandles(api), [], 'our own handle is closed too');
});

test('REFLECT: the handle of a process that died without closing is gone, as the driver closes it', async () => {
  const { api, double } = loadDouble();
  double.reset();
  const other = await holder(0, 'true');
  assert.deepEqual(listWinDivertHandles(api).map((h) => h.processId), [other.pid]);
  other.child.kill('SIGKILL');
  await new Promise((r) => other.child.once('exit', r));
  assert.deepEqual(listWinDivertHandles(api), []);
});

test('REFLECT: what the double does not model is refused with 87 and says why', () => {
  const { api, double } = loadDouble();
  double.reset();
  assert.equal(api.open('true', WinDivertLayer.Reflect, 0, 0n), INVALID_HANDLE);
  assert.equal(api.lastError(), 87);
  assert.match(doubleLastOpenReason(double), /SNIFF \| RECV_ONLY/);
  assert.equal(api.open('processId == 4', WinDivertLayer.Reflect, 0, 0x5n), INVALID_HANDLE);
  assert.match(doubleLastOpenReason(double), /only the filter "true"/);
});

test('WinDivertHelperEvalFilter and FormatFilter as the doctor uses them', () => {
  const { api } = loadDouble();
  const addr = Buffer.alloc(80);
  addr.writeUInt32LE(1 << 17, 8); // Outbound
  const p = Buffer.alloc(40);
  p[0] = 0x45; p.writeUInt16BE(40, 2); p[8] = 64; p[9] = 6;
  Buffer.from([198, 51, 100, 2]).copy(p, 12); Buffer.from([192, 0, 2, 1]).copy(p, 16);
  p.writeUInt16BE(40000, 20); p.writeUInt16BE(80, 22); p[32] = 0x50;
  assert.equal(api.evalFilter('outbound and ip.DstAddr == 192.0.2.1', p, addr), true);
  assert.equal(api.evalFilter('tcp.DstPort == 8080', p, addr), false);
  assert.equal(api.evalFilter('no.such.field == 1', p, addr), null);
  assert.equal(api.formatFilter(Buffer.from('udp and true\0'), 0), 'udp and true');
});
