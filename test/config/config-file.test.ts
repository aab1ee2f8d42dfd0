/** The persisted config file: strict load that never touches the file, and atomic save (old or new, never a mix). */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfigFile, saveConfigFile, serializeConfig } from '../../src/config/config-file.ts';
import { FilePolicySource } from '../../src/config/policy.ts';
import { policyObject } from '../../src/platform/windows/policy-registry.ts';
import { ConfigStore } from '../../src/config/config-store.ts';
import { RetroflectError } from '../../src/errors.ts';
import { bundleScript } from '../helpers/bundle.ts';

const dir = mkdtempSync(join(tmpdir(), 'rft-cfg-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const file = (text?: string): string => {
  const p = join(dir, `c${n++}.json`);
  if (text !== undefined) writeFileSync(p, text);
  return p;
};

function rejectsInvalid(text: string, pattern: RegExp): void {
  const p = file(text);
  const bytes = readFileSync(p);
  assert.throws(() => loadConfigFile(p), (e: RetroflectError) => e.code === 'E_CONFIG_INVALID' && e.exitCode === 6 && e.message.includes(p) && pattern.test(e.message));
  assert.deepEqual(readFileSync(p), bytes, 'file untouched');
}

describe('load', () => {
  it('missing file → empty config', () => {
    const r = loadConfigFile(join(dir, 'absent.json'));
    assert.deepEqual([r.config, r.existed], [{ reflectAddresses: [], shieldPorts: [] }, false]);
  });

  it('normalises addresses and accepts port specs and objects', () => {
    const p = file('\ufeff{"schemaVersion":1,"reflectAddresses":["2001:DB8::1","192.0.2.1","192.0.2.1"],"shieldPorts":["8080",{"port":53,"protocol":"udp"}]}');
    assert.deepEqual(loadConfigFile(p).config, {
      reflectAddresses: ['2001:db8::1', '192.0.2.1'],
      shieldPorts: [{ port: 8080, protocol: 'tcp' }, { port: 8080, protocol: 'udp' }, { port: 53, protocol: 'udp' }],
    });
  });

  it('names the line and column of a JSON error', () => rejectsInvalid('{\n  "schemaVersion": 1,\n  "reflectAddresses": [,]\n}', /line 3, column/));
  it('names an unknown field', () => rejectsInvalid('{"schemaVersion":1,"reflectAddress":[]}', /unknown field 'reflectAddress'/));
  it('names a bad address by index', () => rejectsInvalid('{"schemaVersion":1,"reflectAddresses":["192.0.2.1","192.0.2.300"]}', /reflectAddresses\[1\]/));
  it('names a bad port by index', () => rejectsInvalid('{"schemaVersion":1,"shieldPorts":[{"port":0,"protocol":"tcp"}]}', /shieldPorts\[0\]/));
  it('refuses a newer schema', () => rejectsInvalid('{"schemaVersion":4}', /newer retroflect/));
  it('refuses a non-object', () => rejectsInvalid('[]', /JSON object/));
  it('refuses lockChanges in a config file: only a policy may lock the engine', () =>
    rejectsInvalid('{"schemaVersion":1,"lockChanges":true}', /unknown field 'lockChanges'/));
});

describe('policy lock (lockChanges)', () => {
  const policy = (text: string) => new FilePolicySource(file(text)).read();
  it('a policy file may set it: true locks, false or absent does not', () => {
    assert.equal(policy('{"schemaVersion":1,"lockChanges":true,"reflectAddresses":["192.0.2.1"]}').lockChanges, true);
    assert.equal(policy('{"schemaVersion":1,"lockChanges":false}').lockChanges, undefined);
    assert.equal(policy('{"schemaVersion":1}').lockChanges, undefined);
  });
  it('a policy file with a lockChanges that is not a boolean is invalid, naming the field', () => {
    const p = file('{"schemaVersion":1,"lockChanges":"yes"}');
    assert.throws(() => new FilePolicySource(p).read(),
      (e: RetroflectError) => e.code === 'E_CONFIG_INVALID' && /lockChanges' must be true or false/.test(e.message));
  });
  it('the registry value LockChanges (REG_DWORD) reads as the file field; another value or type is invalid', () => {
    const dword = (data: number | string) => [{ name: 'LockChanges', type: typeof data === 'number' ? 4 : 1, data }];
    assert.equal((policyObject([], [], dword(1)) as { lockChanges?: boolean }).lockChanges, true);
    assert.equal((policyObject([], [], dword(0)) as { lockChanges?: boolean }).lockChanges, false);
    assert.equal('lockChanges' in (policyObject([], []) as object), false);
    for (const bad of [2, '1']) {
      assert.throws(() => policyObject([], [], dword(bad)), /LockChanges' must be a REG_DWORD of 0 or 1/);
    }
  });
});

describe('policy file watch', () => {
  // A change made after the policy was read but before the watch began must still be seen (a watch that compared
  // each poll with the one before took its first look after the change, and never reported it). The guard is far
  // longer than one poll (POLICY_FILE_POLL_MS); it only ends a test that would otherwise hang.
  const changeSeen = (source: FilePolicySource, guardMs = 10_000): Promise<boolean> =>
    new Promise((resolve) => {
      const guard = setTimeout(() => {
        stop();
        resolve(false);
      }, guardMs);
      const stop = source.watch(() => {
        clearTimeout(guard);
        stop();
        resolve(true);
      });
    });
  it('a change between the read and the watch is reported', async () => {
    const p = file('{"schemaVersion":1,"reflectAddresses":["192.0.2.1"]}');
    const source = new FilePolicySource(p);
    source.read();
    writeFileSync(p, '{"schemaVersion":1}');
    assert.equal(await changeSeen(source), true);
  });
  it('a removal between the read and the watch is reported, and a file read as it is reports nothing', async () => {
    const p = file('{"schemaVersion":1}');
    const source = new FilePolicySource(p);
    source.read();
    rmSync(p);
    assert.equal(await changeSeen(source), true);
    source.read(); // now read as missing: no policy
    assert.equal(await changeSeen(source, 3000), false, 'nothing changed since the read');
  });
});

describe('save', () => {
  it('round-trips and leaves no temp files', () => {
    const p = file();
    const cfg = { reflectAddresses: ['192.0.2.1'], shieldPorts: [{ port: 80, protocol: 'tcp' as const }] };
    saveConfigFile(p, cfg);
    assert.deepEqual(loadConfigFile(p).config, cfg);
    assert.deepEqual(readdirSync(dir).filter((f) => f.endsWith('.tmp')), []);
  });

  it('a failure before the rename leaves the old file byte for byte and the store unchanged', () => {
    const p = file();
    let fail = false;
    const store = ConfigStore.open(p, {
      beforeRename: () => {
        if (fail) throw new Error('injected crash before rename');
      },
    });
    store.addAddresses(['192.0.2.1']);
    const old = readFileSync(p);
    fail = true;
    assert.throws(() => store.addAddresses(['192.0.2.2']), (e: RetroflectError) => e.code === 'E_CONFIG_WRITE_FAILED' && e.message.includes(p));
    assert.deepEqual(readFileSync(p), old);
    assert.deepEqual(store.config.reflectAddresses, ['192.0.2.1']);
    assert.deepEqual(readdirSync(dir).filter((f) => f.endsWith('.tmp')), []);
  });

  it('a real write failure (directory is a file) is E_CONFIG_WRITE_FAILED', () => {
    const notDir = file('x');
    assert.throws(() => saveConfigFile(join(notDir, 'config.json'), { reflectAddresses: [], shieldPorts: [] }), (e: RetroflectError) => e.code === 'E_CONFIG_WRITE_FAILED');
  });

  it('a writer killed at random moments leaves either the old or the new content, never a mix', async () => {
    // Two configs of very different sizes, so a torn write would show as neither.
    const a = { reflectAddresses: ['192.0.2.1'], shieldPorts: [] };
    const b = { reflectAddresses: Array.from({ length: 64 }, (_, i) => `2001:db8::${i + 1}`), shieldPorts: Array.from({ length: 500 }, (_, i) => ({ port: i + 1, protocol: 'tcp' as const })) };
    const texts = new Set([serializeConfig(a), serializeConfig(b)]);
    const p = file();
    saveConfigFile(p, a);
    const script = `
      import { saveConfigFile } from ${JSON.stringify(new URL('../../src/config/config-file.ts', import.meta.url).pathname)};
      const a = ${JSON.stringify(a)}, b = ${JSON.stringify(b)};
      process.stdout.write('go\\n');
      for (let i = 0; ; i++) saveConfigFile(${JSON.stringify(p)}, i % 2 ? a : b);
    `;
    const writer = await bundleScript('config-file-writer', script);
    for (let round = 0; round < 15; round++) {
      const child = spawn(process.execPath, [writer], { stdio: ['ignore', 'pipe', 'inherit'] });
      await new Promise((r) => child.stdout!.once('data', r));
      await new Promise((r) => setTimeout(r, 20 + Math.random() * 80));
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      const text = readFileSync(p, 'utf8');
      assert.ok(texts.has(text), `round ${round}: torn file (${text.length} bytes)`);
      loadConfigFile(p);
    }
  });
});
