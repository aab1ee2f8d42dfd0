/** Port maps in the intercept config and the config file: syntax, the consistency rules, limits, old files. */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfigFile, serializeConfig } from '../../src/config/config-file.ts';
import { ConfigStore } from '../../src/config/config-store.ts';
import { checkLimits, type InterceptConfig } from '../../src/config/intercept-config.ts';
import { MAX_PORT_MAPS_PER_ADDRESS, checkPortMaps, mergePortMaps, parsePortMapSpec, type PortMap } from '../../src/config/port-maps.ts';
import { isRetroflectError } from '../../src/errors.ts';

const R = '198.51.100.1';
const dir = mkdtempSync(join(tmpdir(), 'rft-pmap-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function cfgWith(specs: string[], address = R): InterceptConfig {
  const portMaps: PortMap[] = specs.flatMap((s) => parsePortMapSpec(s).map((m) => ({ address, ...m })));
  return { reflectAddresses: [address], shieldPorts: [], portMaps };
}

function throwsCode(fn: () => unknown, code: string, pattern: RegExp): void {
  assert.throws(fn, (e: unknown) => isRetroflectError(e) && e.code === code && pattern.test(e.message) && e.hint !== undefined);
}

describe('parsePortMapSpec', () => {
  it('accepts PORT=TARGET (both protocols), /tcp, /udp and the JSON object form', () => {
    assert.deepEqual(parsePortMapSpec('80=8080'), [{ protocol: 'tcp', port: 80, target: 8080 }, { protocol: 'udp', port: 80, target: 8080 }]);
    assert.deepEqual(parsePortMapSpec(' 443 = 8443/TCP '), [{ protocol: 'tcp', port: 443, target: 8443 }]);
    assert.deepEqual(parsePortMapSpec({ port: 53, target: 5353, protocol: 'udp' }), [{ protocol: 'udp', port: 53, target: 5353 }]);
  });

  it('refuses ports out of range, a map to itself, and garbage, with E_INVALID_PORT', () => {
    throwsCode(() => parsePortMapSpec('0=80'), 'E_INVALID_PORT', /port 0 is out of range/);
    throwsCode(() => parsePortMapSpec('80=65536'), 'E_INVALID_PORT', /target 65536 is out of range/);
    throwsCode(() => parsePortMapSpec('8080=8080/tcp'), 'E_INVALID_PORT', /maps port 8080 to itself/);
    throwsCode(() => parsePortMapSpec('80'), 'E_INVALID_PORT', /PORT=TARGET/);
    throwsCode(() => parsePortMapSpec('80=8080/sctp'), 'E_INVALID_PORT', /PORT=TARGET/);
    throwsCode(() => parsePortMapSpec({ port: 80, target: 8080, extra: 1 }), 'E_INVALID_PORT', /unknown field 'extra'/);
  });
});

describe('checkPortMaps', () => {
  it('accepts independent maps on one address, and the same map on another address', () => {
    checkPortMaps(cfgWith(['80=8080', '443=8443/tcp', '443=9443/udp']));
    const two = cfgWith(['80=8080']);
    two.reflectAddresses.push('203.0.113.9');
    two.portMaps!.push(...parsePortMapSpec('80=8080').map((m) => ({ address: '203.0.113.9', ...m })));
    checkPortMaps(two);
  });

  it('refuses a port already mapped to another target, a shared target and chains, with E_PORT_MAP_CONFLICT', () => {
    throwsCode(() => checkPortMaps(cfgWith(['80=8080', '80=9090'])), 'E_PORT_MAP_CONFLICT', /already mapped to 8080/);
    throwsCode(() => checkPortMaps(cfgWith(['80=8080', '81=8080'])), 'E_PORT_MAP_CONFLICT', /target of 80=8080\/tcp too/);
    throwsCode(() => checkPortMaps(cfgWith(['80=8080', '8080=9090'])), 'E_PORT_MAP_CONFLICT', /overlap/);
    throwsCode(() => checkPortMaps(cfgWith(['8080=9090', '80=8080'])), 'E_PORT_MAP_CONFLICT', /overlap/);
  });

  it('refuses a map on an address that is not configured, and more than the per-address limit', () => {
    const orphan = cfgWith(['80=8080']);
    orphan.reflectAddresses = [];
    throwsCode(() => checkPortMaps(orphan), 'E_ADDRESS_NOT_FOUND', /not a reflect address/);
    const many = cfgWith(Array.from({ length: MAX_PORT_MAPS_PER_ADDRESS + 1 }, (_, i) => `${1000 + i}=${20000 + i}/tcp`));
    throwsCode(() => checkLimits(many), 'E_LIMIT_REACHED', /per reflect address/);
  });

  it('mergePortMaps: an identical map is existing, not added (idempotent)', () => {
    const have = cfgWith(['80=8080']).portMaps!;
    const r = mergePortMaps(have, parsePortMapSpec('80=8080/tcp').map((m) => ({ address: R, ...m })));
    assert.deepEqual([r.added, r.existing.length, r.maps.length], [[], 1, 2]);
  });
});

describe('config file with port maps', () => {
  it('writes maps inside the address entry (schemaVersion 2) and reads them back', () => {
    const cfg = { ...cfgWith(['80=8080', '443=8443/tcp']), reflectAddresses: [R, '203.0.113.9'] };
    const text = serializeConfig(cfg);
    const json = JSON.parse(text);
    assert.equal(json.schemaVersion, 2);
    assert.deepEqual(json.reflectAddresses, [{ address: R, portMaps: ['80=8080/tcp', '80=8080/udp', '443=8443/tcp'] }, '203.0.113.9']);
    const p = join(dir, 'maps.json');
    writeFileSync(p, text);
    assert.deepEqual(loadConfigFile(p).config, cfg);
  });

  it('a config without maps stays schemaVersion 1 with plain strings; version 1 files keep loading', () => {
    assert.equal(JSON.parse(serializeConfig({ reflectAddresses: [R], shieldPorts: [] })).schemaVersion, 1);
    const p = join(dir, 'old.json');
    writeFileSync(p, JSON.stringify({ schemaVersion: 1, reflectAddresses: [R], shieldPorts: [{ port: 8080, protocol: 'tcp' }] }));
    assert.deepEqual(loadConfigFile(p).config, { reflectAddresses: [R], shieldPorts: [{ port: 8080, protocol: 'tcp' }] });
  });

  it('refuses a bad or conflicting map in the file, naming the field, and leaves the file alone', () => {
    for (const [maps, pattern] of [
      [['80=80'], /reflectAddresses\[0\]\.portMaps\[0\].*to itself/],
      [['80=8080', '80=9090'], /already mapped to 8080/],
      ['80=8080', /portMaps' must be an array/],
    ] as const) {
      const p = join(dir, 'bad.json');
      const text = JSON.stringify({ schemaVersion: 2, reflectAddresses: [{ address: R, portMaps: maps }] });
      writeFileSync(p, text);
      assert.throws(() => loadConfigFile(p), (e: unknown) => isRetroflectError(e) && e.code === 'E_CONFIG_INVALID' && pattern.test(e.message));
      assert.equal(readFileSync(p, 'utf8'), text);
    }
  });

  it('removing an address from the store removes its maps too', () => {
    const p = join(dir, 'store.json');
    writeFileSync(p, serializeConfig(cfgWith(['80=8080'])));
    const store = ConfigStore.open(p);
    store.removeAddresses([R]);
    assert.deepEqual(JSON.parse(readFileSync(p, 'utf8')), { schemaVersion: 1, reflectAddresses: [], shieldPorts: [] });
  });
});

describe('port maps load in linear time (issue 19, item 5)', () => {
  /**
   * Maps whose fields count their reads: merging n maps must read each map's fields a bounded number of times, not
   * once per map already merged (a list search per map read them n²/2 times: 20,000 maps took 80 s to refuse).
   */
  function countingMaps(specs: { port: number; target: number }[]): { maps: PortMap[]; reads: () => number } {
    let reads = 0;
    const maps = specs.map(({ port, target }) => {
      const fields = { address: R, protocol: 'tcp' as const, port, target };
      const m = {} as PortMap;
      for (const k of Object.keys(fields) as (keyof PortMap)[]) {
        Object.defineProperty(m, k, { enumerable: true, get: () => (reads++, fields[k]) });
      }
      return m;
    });
    return { maps, reads: () => reads };
  }

  for (const [what, spec] of [
    ['distinct ports', (i: number) => ({ port: 1 + i, target: 30000 + i })],
    ['one port, a different target each (refused later, merged first)', (i: number) => ({ port: 80, target: 1000 + i })],
    ['the same map over and over', (_i: number) => ({ port: 80, target: 8080 })],
  ] as const) {
    it(`mergePortMaps reads each map's fields a bounded number of times: ${what}`, () => {
      for (const n of [1000, 4000]) {
        const { maps, reads } = countingMaps(Array.from({ length: n }, (_, i) => spec(i)));
        mergePortMaps([], maps);
        // 4 fields, each read a few times to build keys and copies: at most 16 reads per map, whatever n.
        assert.ok(reads() <= 16 * n, `${reads()} field reads for ${n} maps`);
      }
    });
  }

  it('a config file with 20,000 maps is refused at the first map past the limit, naming it; the rest is not read', () => {
    const p = join(dir, 'many.json');
    const maps = Array.from({ length: 20000 }, (_, i) => `${1 + i}=${30000 + (i % 30000)}`);
    // An entry after the limit that is not even a map: a loader that read on would report it instead.
    maps[15000] = 'not a map';
    writeFileSync(p, JSON.stringify({ schemaVersion: 2, reflectAddresses: [{ address: R, portMaps: maps }] }));
    assert.throws(
      () => loadConfigFile(p),
      (e: unknown) => isRetroflectError(e) && e.code === 'E_CONFIG_INVALID' && /field 'reflectAddresses\[0\]\.portMaps\[512\]' takes the port maps past the 1024 supported/.test(e.message),
    );
  });
});
