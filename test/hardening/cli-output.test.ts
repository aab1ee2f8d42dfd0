/**
 * Issue 11 defect 1, client side: a client command whose stdout is a closed pipe (`stats | head -1`) or a full
 * device (`status >/dev/full`) exits quietly with exit code 11 (ExitCode.OUTPUT_FAILED), no stack trace. The engine
 * behind the socket is the in-memory stand-in; the CLI is the real one.
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigStore } from '../../src/config/config-store.ts';
import { startControlServer, type ControlServer } from '../../src/control/server.ts';
import { testAddressRules } from '../helpers/address-rules.ts';
import { ExitCode } from '../../src/errors.ts';
import { CLI_ARGV } from '../helpers/cli.ts';
import { InMemoryEngine } from '../helpers/in-memory-engine.ts';

const dir = mkdtempSync(join(tmpdir(), 'rft-out-'));
const sock = join(dir, 'cli.sock');
let server: ControlServer;

before(async () => {
  const engine = new InMemoryEngine({ reflectAddresses: ['192.0.2.1', '2001:db8::1'], shieldPorts: [{ port: 8080, protocol: 'tcp' }] });
  server = await startControlServer({ addressRules: testAddressRules, engine, pipeName: sock, configStore: ConfigStore.inMemory() });
});
after(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Run the CLI with stdout going to `stdout` ('closed': a pipe whose reader is gone before anything is written). */
function cli(args: string[], stdout: 'closed' | number): Promise<{ code: number | null; signal: string | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...CLI_ARGV, ...args, '--pipe', sock], {
      stdio: ['ignore', stdout === 'closed' ? 'pipe' : stdout, 'pipe'],
      env: { ...process.env, NO_COLOR: '1' },
    });
    if (stdout === 'closed') child.stdout!.destroy();
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('exit', (code, signal) => resolve({ code, signal, stderr }));
  });
}

for (const args of [['stats'], ['status'], ['flows'], ['address', 'list', '--json']]) {
  it(`${args.join(' ')} | (closed pipe) → exit 11, nothing on stderr`, async () => {
    const r = await cli(args, 'closed');
    assert.deepEqual([r.code, r.stderr], [ExitCode.OUTPUT_FAILED, '']);
  });
}

it('status >/dev/full and stats >/dev/full → exit 11, nothing on stderr', async () => {
  const full = openSync('/dev/full', 'w');
  try {
    for (const args of [['status'], ['stats', '--json']]) {
      const r = await cli(args, full);
      assert.deepEqual([r.code, r.stderr], [ExitCode.OUTPUT_FAILED, ''], args.join(' '));
    }
  } finally {
    closeSync(full);
  }
});

it('stats --watch ends when its reader goes away instead of writing forever', async () => {
  const r = await cli(['stats', '--watch', '100'], 'closed');
  assert.deepEqual([r.code, r.stderr], [ExitCode.OUTPUT_FAILED, '']);
});

it('a failing command keeps its own exit code when its error output fails too', async () => {
  const full = openSync('/dev/full', 'w');
  try {
    const args = [...CLI_ARGV, 'address', 'remove', '192.0.2.77', '--pipe', sock];
    const child = spawn(process.execPath, args, { stdio: ['ignore', full, full] });
    const code = await new Promise((resolve) => child.on('exit', resolve));
    assert.equal(code, ExitCode.REQUEST_FAILED);
  } finally {
    closeSync(full);
  }
});
