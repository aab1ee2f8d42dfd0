/**
 * WINDIVERT_ADDRESS positions: the TypeScript codec must place every field exactly where a C compiler places it
 * for the struct declaration in native/windivert_abi.h. native/build/linux/address_probe (gcc) sets one field at a
 * time through that declaration and dumps the 80 bytes; the Wine suite runs the mingw build of the same probe.
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeAddress, encodeAddress, getAddressFlag, setAddressFlag, WINDIVERT_ADDRESS_SIZE, type WinDivertAddress } from '../../../src/packet-sources/windivert/address.ts';
import { checkProbeOutput, PROBE_FIELDS } from './probe.ts';

test('codec matches the gcc layout of the struct, field by field', () => {
  const probe = fileURLToPath(new URL('../../../native/build/linux/address_probe', import.meta.url));
  const out = execFileSync(probe, { encoding: 'utf8' });
  assert.equal(checkProbeOutput(out), Object.keys(PROBE_FIELDS).length);
});

test('flag helpers change one bit and keep the rest (including reserved bits)', () => {
  const all: Partial<WinDivertAddress> = { timestamp: -5n, layer: 1, event: 0, sniffed: true, outbound: true, loopback: false, impostor: true, ipv6: true, ipChecksum: true, tcpChecksum: false, udpChecksum: true, ifIdx: 0xffffffff, subIfIdx: 42 };
  const buf = Buffer.alloc(3 * WINDIVERT_ADDRESS_SIZE, 0xee);
  encodeAddress(all, buf, WINDIVERT_ADDRESS_SIZE);
  assert.equal(buf[WINDIVERT_ADDRESS_SIZE + 11], 0xee, 'reserved bits 24-31 untouched');
  setAddressFlag(buf, WINDIVERT_ADDRESS_SIZE, 'Outbound', false);
  setAddressFlag(buf, WINDIVERT_ADDRESS_SIZE, 'TCPChecksum', true);
  const got = decodeAddress(buf, WINDIVERT_ADDRESS_SIZE);
  assert.deepEqual(got, { ...all, outbound: false, tcpChecksum: true } as WinDivertAddress);
  assert.equal(getAddressFlag(buf, WINDIVERT_ADDRESS_SIZE, 'Impostor'), true);
  assert.equal(buf.subarray(0, WINDIVERT_ADDRESS_SIZE).every((b) => b === 0xee), true, 'neighbouring address untouched');
  assert.equal(buf.subarray(2 * WINDIVERT_ADDRESS_SIZE).every((b) => b === 0xee), true, 'neighbouring address untouched');
});
