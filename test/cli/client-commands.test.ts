/**
 * The CLI client commands as a script sees them: a real `retroflect` process, a real socket, stdout JSON and exit
 * codes. The engine behind the socket is the in-memory stand-in (test/helpers/in-memory-engine.ts).
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigStore } from '../../src/config/config-store.ts';
import { startControlServer, type ControlServer } from '../../src/control/server.ts';
import { testAddressRules } from '../helpers/address-rules.ts';
import { CLI_ARGV } from '../helpers/cli.ts';
import { InMemoryEngine } from '../helpers/in-memory-engine.ts';

const dir = mkdtempSync(join(tmpdir(), 'rft-cli-'));
const sock = join(dir, 'cli.sock');
const configPath = join(dir, 'config.json');
let server: ControlServer;
const engine = new InMemoryEngine();

function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const env = { ...process.env, NO_COLOR: '1' };
    execFile(process.execPath, [...CLI_ARGV, ...args], { env }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

before(async () => {
  server = await startControlServer({ addressRules: testAddressRules, engine, pipeName: sock, configStore: ConfigStore.open(configPath) });
});
after(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

it('address add/list/remove with --json print the protocol result and exit 0', async () => {
  const add = await cli('address', 'add', '192.0.2.1', '2001:DB8::5', '--pipe', sock, '--json');
  assert.equal(add.code, 0, add.stderr);
  assert.deepEqual(JSON.parse(add.stdout), { added: ['192.0.2.1', '2001:db8::5'], existing: [], warnings: [], portMaps: { added: [], existing: [] }, allow: [{ address: '192.0.2.1' }, { address: '2001:db8::5' }], persisted: ['192.0.2.1', '2001:db8::5'] });
  const again = await cli('address', 'add', '192.0.2.1', '--pipe', sock, '--json');
  assert.deepEqual(JSON.parse(again.stdout).existing, ['192.0.2.1']);
  const tmp = await cli('address', 'add', '192.0.2.7', '--temporary', '--pipe', sock);
  assert.equal(tmp.code, 0);
  assert.match(tmp.stdout, /Added 192\.0\.2\.7 \(temporary\)/);
  assert.deepEqual(JSON.parse(readFileSync(configPath, 'utf8')).reflectAddresses, ['192.0.2.1', '2001:db8::5']);
  const list = await cli('address', 'list', '--pipe', sock);
  assert.match(list.stdout, /192\.0\.2\.7\W+Temporary\W+no\b/);
  const rm = await cli('address', 'remove', '2001:db8::5', '--pipe', sock, '--json');
  assert.deepEqual(JSON.parse(rm.stdout), { removed: ['2001:db8::5'], missing: [], portMapsRemoved: [], portMapsMissing: [] });
});

it('errors: not found → 9, invalid address → 4, invalid port → 4, each with a JSON error document', async () => {
  const nf = await cli('address', 'remove', '192.0.2.99', '--pipe', sock, '--json');
  assert.equal(nf.code, 9);
  assert.equal(JSON.parse(nf.stdout).error.code, 'E_ADDRESS_NOT_FOUND');
  const bad = await cli('address', 'add', 'nonsense', '--pipe', sock);
  assert.equal(bad.code, 4);
  assert.match(bad.stderr, /error: .*nonsense.*\[E_INVALID_ADDRESS\]\nhint: /);
  const port = await cli('shield', 'add', '99999', '--pipe', sock, '--json');
  assert.equal(port.code, 4);
  assert.equal(JSON.parse(port.stdout).error.code, 'E_INVALID_PORT');
});

it('shield add/list, status, stats, flows', async () => {
  const add = await cli('shield', 'add', '8080/tcp', '53/udp', '--pipe', sock, '--json');
  assert.deepEqual(JSON.parse(add.stdout).added, [{ port: 8080, protocol: 'tcp' }, { port: 53, protocol: 'udp' }]);
  const status = await cli('status', '--pipe', sock, '--json');
  assert.equal(status.code, 0);
  assert.deepEqual(JSON.parse(status.stdout).shieldPorts, [{ port: 8080, protocol: 'tcp' }, { port: 53, protocol: 'udp' }]);
  const human = await cli('status', '--pipe', sock);
  assert.match(human.stdout, /state:\s+running/);
  assert.equal((await cli('stats', '--pipe', sock, '--json')).code, 0);
  assert.deepEqual(JSON.parse((await cli('flows', '--pipe', sock, '--json')).stdout), { flows: [] });
});

it('no engine → exit 7 and a hint that says how to start one', async () => {
  const r = await cli('status', '--pipe', join(dir, 'nothing.sock'));
  assert.equal(r.code, 7);
  assert.match(r.stderr, /hint: .*retroflect run/);
});

it('address add --map / remove --map: maps persisted and listed; a conflicting map exits 4 and changes nothing', async () => {
  const add = await cli('address', 'add', '203.0.113.20', '--map', '80=8080', '--map', '443=8443/tcp', '--pipe', sock, '--json');
  assert.equal(add.code, 0, add.stderr);
  assert.deepEqual(JSON.parse(add.stdout).portMaps.added.map((m: { port: number; protocol: string }) => `${m.port}/${m.protocol}`), ['80/tcp', '80/udp', '443/tcp']);
  const again = await cli('address', 'add', '203.0.113.20', '--map', '80=8080/tcp', '--pipe', sock, '--json');
  assert.deepEqual([JSON.parse(again.stdout).portMaps.added, JSON.parse(again.stdout).portMaps.existing.length], [[], 1]);
  const list = await cli('address', 'list', '--pipe', sock);
  assert.match(list.stdout, /203\.0\.113\.20\W+Config\W+yes\W+80=8080, 443=8443\/tcp/);
  const before = readFileSync(configPath, 'utf8');
  const conflict = await cli('address', 'add', '203.0.113.20', '--map', '80=9090', '--pipe', sock);
  assert.equal(conflict.code, 4);
  assert.match(conflict.stderr, /already mapped to 8080.*\[E_PORT_MAP_CONFLICT\]/);
  const self = await cli('address', 'add', '203.0.113.21', '--map', '80=80', '--pipe', sock);
  assert.equal(self.code, 4);
  assert.match(self.stderr, /to itself.*\[E_INVALID_PORT\]/);
  assert.ok(!engine.cfg.reflectAddresses.includes('203.0.113.21'), 'a refused map refuses its address too');
  assert.equal(readFileSync(configPath, 'utf8'), before);
  const rm = await cli('address', 'remove', '203.0.113.20', '--map', '80', '--pipe', sock);
  assert.equal(rm.code, 0, rm.stderr);
  assert.match(rm.stdout, /Removed port maps 203\.0\.113\.20 80=8080/);
  assert.deepEqual(JSON.parse(readFileSync(configPath, 'utf8')).reflectAddresses.at(-1), { address: '203.0.113.20', portMaps: ['443=8443/tcp'] });
  const missing = await cli('address', 'remove', '203.0.113.20', '--map', '80', '--pipe', sock);
  assert.equal(missing.code, 9);
});

it('remove --skip-missing: removes what is there (running or only in the config file), lists the rest, exit 0', async () => {
  assert.equal((await cli('address', 'add', '192.0.2.31', '192.0.2.32', '--pipe', sock)).code, 0);
  // 192.0.2.32 leaves the running engine but stays in the config file: still there to remove.
  assert.equal((await cli('address', 'remove', '192.0.2.32', '--temporary', '--pipe', sock)).code, 0);
  const rm = await cli('address', 'remove', '192.0.2.31', '192.0.2.32', '192.0.2.33', '--skip-missing', '--pipe', sock);
  assert.equal(rm.code, 0, rm.stderr);
  assert.match(rm.stdout, /Removed 192\.0\.2\.31, 192\.0\.2\.32\./);
  assert.match(rm.stdout, /Not present: 192\.0\.2\.33/);
  const saved = JSON.parse(readFileSync(configPath, 'utf8')).reflectAddresses as unknown[];
  assert.ok(!saved.includes('192.0.2.31') && !saved.includes('192.0.2.32'), JSON.stringify(saved));
  const none = await cli('address', 'remove', '192.0.2.33', '--skip-missing', '--pipe', sock, '--json');
  assert.deepEqual(JSON.parse(none.stdout), { removed: [], missing: ['192.0.2.33'], portMapsRemoved: [], portMapsMissing: [] });

  assert.equal((await cli('shield', 'add', '7070/tcp', '--pipe', sock)).code, 0);
  const sh = await cli('shield', 'remove', '7070', '--skip-missing', '--pipe', sock, '--json');
  assert.equal(sh.code, 0, sh.stderr);
  assert.deepEqual(JSON.parse(sh.stdout), { removed: [{ port: 7070, protocol: 'tcp' }], missing: [{ port: 7070, protocol: 'udp' }] });
  const strict = await cli('shield', 'remove', '7070/tcp', '--pipe', sock);
  assert.equal(strict.code, 9, 'without --skip-missing a missing port still refuses the request');
});
