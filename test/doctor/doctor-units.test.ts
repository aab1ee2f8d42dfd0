/**
 * The doctor's parsers, on real inputs: PE files built by mingw (the WinDivert64.sys stand-in with its version
 * resource, the double's WinDivert.dll without one, the Windows node.exe from the npm registry, signed by its
 * publisher), /proc/net socket lines as the kernel prints them, ImagePath forms, firewall rule text, and the REFLECT
 * part of a WINDIVERT_ADDRESS.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseProcNet } from '../../src/doctor/listeners.ts';
import { parsePe } from '../../src/doctor/pe-file.ts';
import { driverImageFile } from '../../src/doctor/windivert-driver.ts';
import { parseFirewallRule } from '../../src/doctor/windows-policy.ts';
import { decodeReflectAddress } from '../../src/packet-sources/windivert/reflect.ts';
import { withSignatureEntry } from './pe-samples.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const SYS = join(ROOT, 'native', 'build', 'win64', 'WinDivert64.sys');
const DLL = join(ROOT, 'native', 'build', 'win64', 'WinDivert.dll');
const NODE_EXE = join(ROOT, '.tmp', 'wine', 'node', 'node.exe');
const mingw = existsSync(SYS) ? false : `${SYS} is missing (make -C native, needs mingw)`;
if (mingw && process.env.CI) test('mingw is required on CI', () => assert.fail(mingw));

test('PE: version from the version resource, signature presence from the security directory', { skip: mingw }, () => {
  const sys = readFileSync(SYS);
  assert.deepEqual(parsePe(sys), { version: '2.2.2.0', signed: false, machine: 'x64' });
  assert.deepEqual(parsePe(withSignatureEntry(sys)), { version: '2.2.2.0', signed: true, machine: 'x64' });
  assert.deepEqual(parsePe(readFileSync(DLL)), { version: null, signed: false, machine: 'x64' });
  assert.throws(() => parsePe(Buffer.from('not a PE file at all, just text that is long enough to have a ' +
    'header......')),
    /no MZ header/);
  const truncated = Buffer.from(sys.subarray(0, 200));
  assert.throws(() => parsePe(truncated));
});

test('PE: the Windows node.exe is signed and carries its version',
  { skip: existsSync(NODE_EXE) ? false : `${NODE_EXE} is missing (test/wine/setup.ts)` }, () => {
  const facts = parsePe(readFileSync(NODE_EXE));
  assert.equal(facts.signed, true);
  assert.match(facts.version ?? '', /^20\.\d+\.\d+\.0$/);
});

test('/proc/net: listening TCP and unconnected UDP sockets with their local address and port', () => {
  const tcp = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 020064C6:0050 010064C6:D431 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1
   2: 00000000:01BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
`;
  assert.deepEqual(parseProcNet(tcp, 'tcp'), [
    { protocol: 'tcp', address: '127.0.0.1', port: 8080 },
    { protocol: 'tcp', address: '0.0.0.0', port: 443 },
  ]);
  const tcp6 = `  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 0 0 0
   1: 00000000000000000000000001000000:0035 00000000000000000000000000000000:0000 0A 0 0 0
   2: B80D0120000000000000000002000000:0016 00000000000000000000000000000000:0000 0A 0 0 0
`;
  assert.deepEqual(parseProcNet(tcp6, 'tcp').map((s) => `${s.address}|${s.port}`), ['::|8080', '::1|53',
    '2001:db8::2|22']);
  const udp = `   sl  local_address rem_address   st
  7: 00000000:0035 00000000:0000 07 0 0
  8: 0100007F:0089 0200007F:1234 01 0 0
`;
  assert.deepEqual(parseProcNet(udp, 'udp'), [{ protocol: 'udp', address: '0.0.0.0', port: 53 }]);
});

test('driver ImagePath forms become file paths', () => {
  assert.equal(driverImageFile('\\??\\C:\\Tools\\WinDivert64.sys'), 'C:\\Tools\\WinDivert64.sys');
  assert.equal(driverImageFile('\\SystemRoot\\System32\\drivers\\x.sys', 'C:\\Windows'),
    'C:\\Windows\\System32\\drivers\\x.sys');
  assert.equal(driverImageFile('System32\\drivers\\x.sys', 'D:\\Win'), 'D:\\Win\\System32\\drivers\\x.sys');
  assert.equal(driverImageFile('"C:\\Program Files\\A\\WinDivert64.sys"'), 'C:\\Program Files\\A\\WinDivert64.sys');
});

test('firewall rule text: repeated fields keep every value', () => {
  const f = parseFirewallRule('v2.30|Action=Allow|Active=TRUE|Dir=In|RA4=192.0.2.1|RA4=198.51.100.7|' +
    'RA6=2001:db8::1|Name=x|');
  assert.deepEqual(f.get('RA4'), ['192.0.2.1', '198.51.100.7']);
  assert.deepEqual(f.get('RA6'), ['2001:db8::1']);
  assert.deepEqual(f.get('Dir'), ['In']);
});

test('WINDIVERT_ADDRESS REFLECT fields at the offsets windivert.h gives (union at 16, Priority at 16 + 24)', () => {
  const a = Buffer.alloc(80);
  a.writeUInt32LE((4 & 0xff) | (8 << 8) | (1 << 16), 8); // Layer REFLECT, Event OPEN, Sniffed
  a.writeBigInt64LE(123456789n, 16);
  a.writeUInt32LE(4242, 24);
  a.writeUInt32LE(0, 28);
  a.writeBigUInt64LE(0x21n, 32);
  a.writeInt16LE(-5, 40);
  assert.deepEqual(decodeReflectAddress(a), { event: 8, openedAt: 123456789n, processId: 4242, layer: 0, flags: 0x21,
    priority: -5 });
});
