/**
 * The Windows route lookup (iphlpapi GetBestInterfaceEx through koffi). Its sockaddr encoding is checked on Linux
 * byte for byte; under Wine the real Windows node.exe calls it, and Wine answers from this host's routing table, so
 * its "routed or not" must agree with the kernel's own answer (`ip route get`) for the same addresses. Only reads
 * the host's routes; changes nothing. Without wine it skips locally and fails on CI, like the other Wine tests.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { linuxRouteLookup } from '../../src/platform/linux/route-lookup.ts';
import { encodeSockaddr } from '../../src/platform/windows/route-lookup.ts';
import { bundle, NODE_EXE, ROOT, runWine, wineTestGate } from '../wine/setup.ts';

test('SOCKADDR_IN / SOCKADDR_IN6 encoding: Windows family numbers, address bytes in network order', () => {
  const v4 = encodeSockaddr('198.51.100.7');
  assert.equal(v4.length, 16);
  assert.equal(v4.toString('hex'), '0200' + '0000' + 'c6336407' + '0000000000000000');
  const v6 = encodeSockaddr('2001:db8::7');
  assert.equal(v6.length, 28);
  assert.equal(v6.readUInt16LE(0), 23, 'AF_INET6 is 23 on Windows');
  assert.equal(v6.subarray(8, 24).toString('hex'), '20010db8000000000000000000000007');
  assert.equal(encodeSockaddr('::1').subarray(8, 24).toString('hex'), '00000000000000000000000000000001');
  assert.equal(encodeSockaddr('fe80::1:2').subarray(8, 24).toString('hex'), 'fe800000000000000000000000010002');
});

const skip = await wineTestGate('the Windows route lookup');

test('under Wine, GetBestInterfaceEx agrees with the kernel on whether each address is routed', { skip, timeout: 180_000 }, async () => {
  const addresses = ['198.51.100.7', '203.0.113.9', '2001:db8::7'];
  const script = await bundle(join(ROOT, 'test', 'platform', 'fixtures', 'route-lookup-entry.ts'), 'route-lookup-entry');
  const r = await runWine([NODE_EXE, script, ...addresses], { tag: 'route-lookup-entry', timeoutMs: 150_000 });
  const line = r.stdout.replace(/\r/g, '').trim().split('\n').at(-1) ?? '';
  type Answer = { rc: number; ifIndex: number; facts: { type: string; device: string | null } | null } | { error: string };
  const got = JSON.parse(line || '{}') as { platform: string; routes: Record<string, Answer> };
  assert.equal(got.platform, 'win32', `exit ${r.code}\n${r.stdout}\n${r.stderr.slice(-2000)}`);
  const v4Answers: number[] = [];
  for (const a of addresses) {
    const win = got.routes[a];
    assert.ok(win && !('error' in win), `${a}: ${JSON.stringify(win)}`);
    const kernelRouted = (await linuxRouteLookup(a)) !== null;
    if (win.rc === 0) {
      assert.ok(kernelRouted, `${a}: Wine found interface ${win.ifIndex}, the kernel has no route`);
      assert.deepEqual(win.facts, { type: 'unicast', device: `ifIndex ${win.ifIndex}`, gateway: null, source: null });
    } else if (win.facts === null) {
      assert.ok(!kernelRouted, `${a}: Wine says no route (${win.rc}), the kernel routes it`);
    } else {
      // A failure that is not "no route" (Wine 8 answers IPv6 lookups with ERROR_NOT_SUPPORTED, 50): not held
      // against the address, as on a real host where the lookup cannot be made.
      assert.equal(win.facts.type, 'unknown', `${a}: ${JSON.stringify(win)}`);
    }
    if (!a.includes(':')) v4Answers.push(win.rc);
  }
  // IPv4 lookups must really be answered, or this test would prove nothing.
  assert.ok(v4Answers.every((rc) => rc === 0) || v4Answers.every((rc) => rc !== 0), `IPv4 answers: ${v4Answers}`);
  assert.ok(v4Answers.includes(0) === ((await linuxRouteLookup('198.51.100.7')) !== null));
});
