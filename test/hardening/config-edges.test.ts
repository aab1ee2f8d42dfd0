/**
 * Issue 11, config and syntax edges (no root needed): over-limit input refused as soon as the limit is passed,
 * symlinked config written through to its target, our orphan temp files removed at start, strict null fields,
 * "is a prefix" only for prefixes, IPv6 endpoints in brackets.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { removeOrphanTempFiles } from '../../src/config/atomic-save.ts';
import { loadConfigFile, saveConfigFile } from '../../src/config/config-file.ts';
import { ConfigStore } from '../../src/config/config-store.ts';
import { canonicalAddress } from '../../src/config/intercept-config.ts';
import { endpoint } from '../../src/cli/client-commands.ts';
import { RetroflectError } from '../../src/errors.ts';

const dir = mkdtempSync(join(tmpdir(), 'rft-edges-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const invalidWith = (pattern: RegExp) => (e: RetroflectError) => e.code === 'E_CONFIG_INVALID' && pattern.test(e.message);

describe('limits (defect 5)', () => {
  it('the 1025th shield port is refused by its index, before a bad entry after it is even looked at', () => {
    const ports = Array.from({ length: 1025 }, (_, i) => `${i + 1}/tcp`);
    const p = join(dir, 'ports.json');
    writeFileSync(p, JSON.stringify({ schemaVersion: 1, shieldPorts: [...ports, 'not-a-port'] }));
    assert.throws(() => loadConfigFile(p), invalidWith(/shieldPorts\[1024\]' is one more than the 1024 shield ports/));
  });

  it('the 65th reflect address is refused by its index; duplicates do not count', () => {
    const addrs = Array.from({ length: 65 }, (_, i) => `198.51.100.${i + 1}`);
    const p = join(dir, 'addrs.json');
    writeFileSync(p, JSON.stringify({ schemaVersion: 1, reflectAddresses: ['198.51.100.1', ...addrs, 'junk'] }));
    assert.throws(() => loadConfigFile(p), invalidWith(/reflectAddresses\[65\]' is one more than the 64 reflect addresses/));
    writeFileSync(p, JSON.stringify({ schemaVersion: 1, reflectAddresses: [...addrs.slice(0, 64), ...addrs.slice(0, 64)] }));
    assert.equal(loadConfigFile(p).config.reflectAddresses.length, 64);
  });

  it('a 1 MB file of 20k shield entries is refused (it used to take a minute; timing is in bench/hardening.ts)', () => {
    const p = join(dir, 'big.json');
    writeFileSync(p, JSON.stringify({ schemaVersion: 1, shieldPorts: Array.from({ length: 20000 }, (_, i) => ({ port: (i % 65535) + 1, protocol: i % 2 ? 'udp' : 'tcp' })) }));
    assert.throws(() => loadConfigFile(p), invalidWith(/one more than the 1024 shield ports/));
  });

  it('a syntax error deep in a large file is still located by line and column', () => {
    const p = join(dir, 'syntax.json');
    const body = JSON.stringify({ schemaVersion: 1, shieldPorts: Array.from({ length: 30000 }, (_, i) => i) }, null, 1);
    writeFileSync(p, body.replace(/29999\n/, '29999,\n'));
    assert.throws(() => loadConfigFile(p), invalidWith(/line \d+, column \d+/));
  });
});

describe('strict null fields (defect 11)', () => {
  for (const field of ['reflectAddresses', 'shieldPorts']) {
    it(`"${field}": null is refused, not read as absent`, () => {
      const p = join(dir, `null-${field}.json`);
      writeFileSync(p, JSON.stringify({ schemaVersion: 1, [field]: null }));
      assert.throws(() => loadConfigFile(p), invalidWith(new RegExp(`field '${field}' must be an array`)));
    });
  }
});

describe('symlinked config (defect 8): written through to the target, atomically there', () => {
  it('the link stays a link and the target gets the change', () => {
    mkdirSync(join(dir, 'real'));
    const target = join(dir, 'real', 'target.json');
    writeFileSync(target, JSON.stringify({ schemaVersion: 1, reflectAddresses: ['192.0.2.1'] }));
    const link = join(dir, 'link.json');
    symlinkSync('real/target.json', link);
    const store = ConfigStore.open(link);
    store.addAddresses(['192.0.2.2']);
    assert.ok(lstatSync(link).isSymbolicLink(), 'the link was replaced by a regular file');
    assert.deepEqual(JSON.parse(readFileSync(target, 'utf8')).reflectAddresses, ['192.0.2.1', '192.0.2.2']);
    assert.deepEqual(readdirSync(join(dir, 'real')), ['target.json'], 'no temp file left in the target directory');
  });

  it('a dangling link gets its target created; a chain of links is followed', () => {
    mkdirSync(join(dir, 'later'));
    const a = join(dir, 'a.json');
    const b = join(dir, 'b.json');
    symlinkSync(b, a);
    symlinkSync('later/final.json', b);
    saveConfigFile(a, { reflectAddresses: ['203.0.113.9'], shieldPorts: [] });
    assert.ok(lstatSync(a).isSymbolicLink() && lstatSync(b).isSymbolicLink());
    assert.deepEqual(JSON.parse(readFileSync(join(dir, 'later', 'final.json'), 'utf8')).reflectAddresses, ['203.0.113.9']);
  });
});

describe('orphan temp files (defect 7)', () => {
  it('temp files of dead processes are removed; a live process\'s, other names and other files stay', () => {
    const d = join(dir, 'orphans');
    mkdirSync(d);
    const cfg = join(d, 'config.json');
    writeFileSync(cfg, '{"schemaVersion":1}');
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString();
    const orphan = join(d, `.config.json.${dead}.0a1b2c3d.tmp`);
    const live = join(d, `.config.json.${process.ppid}.0a1b2c3d.tmp`);
    const other = join(d, `.other.json.${dead}.0a1b2c3d.tmp`);
    const odd = join(d, `.config.json.${dead}.zzzz.tmp`);
    for (const f of [orphan, live, other, odd]) writeFileSync(f, '{');
    assert.deepEqual(removeOrphanTempFiles(cfg), [orphan]);
    assert.ok(!existsSync(orphan));
    for (const f of [live, other, odd, cfg]) assert.ok(existsSync(f), `${f} was removed`);
  });
});

describe('small ones (defect 11)', () => {
  it('"is a prefix" only for an address with a prefix length; other slashes are "not an IP address"', () => {
    assert.throws(() => canonicalAddress('192.0.2.0/24'), /is a prefix/);
    assert.throws(() => canonicalAddress('2001:db8::/32'), /is a prefix/);
    for (const s of ['abc/def', 'http://x/', '/', '192.0.2.1/abc']) {
      assert.throws(() => canonicalAddress(s), (e: Error) => /is not an IP address/.test(e.message), s);
    }
  });

  it('flows: IPv6 endpoints in brackets, IPv4 plain', () => {
    assert.equal(endpoint('2001:db8:100::2', 20985), '[2001:db8:100::2]:20985');
    assert.equal(endpoint('192.0.2.1', 80), '192.0.2.1:80');
  });
});
