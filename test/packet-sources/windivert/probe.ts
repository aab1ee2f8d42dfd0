/**
 * Compares the output of native/address_probe (gcc or mingw build) with the TypeScript WINDIVERT_ADDRESS codec.
 * The probe prints "sizeof 80", then "<C field> <value> <80 bytes hex>" per field, each set alone in a zeroed struct.
 */
import assert from 'node:assert/strict';
import { addressBuffer, decodeAddress, WINDIVERT_ADDRESS_SIZE, type WinDivertAddress } from '../../../src/packet-sources/windivert/address.ts';

/** C field name in the probe output → codec field. */
export const PROBE_FIELDS: Record<string, keyof WinDivertAddress> = {
  Timestamp: 'timestamp',
  Layer: 'layer',
  Event: 'event',
  Sniffed: 'sniffed',
  Outbound: 'outbound',
  Loopback: 'loopback',
  Impostor: 'impostor',
  IPv6: 'ipv6',
  IPChecksum: 'ipChecksum',
  TCPChecksum: 'tcpChecksum',
  UDPChecksum: 'udpChecksum',
  'Network.IfIdx': 'ifIdx',
  'Network.SubIfIdx': 'subIfIdx',
};

const NUMERIC = new Set<keyof WinDivertAddress>(['layer', 'event', 'ifIdx', 'subIfIdx']);

/** Assert the codec writes and reads every probed field where C does; returns the number of fields checked. */
export function checkProbeOutput(output: string): number {
  const lines = output.replace(/\r/g, '').trim().split('\n');
  assert.equal(lines[0], `sizeof ${WINDIVERT_ADDRESS_SIZE}`);
  let checked = 0;
  for (const line of lines.slice(1)) {
    const [name, valueText, hex] = line.split(' ');
    const field = PROBE_FIELDS[name];
    assert.ok(field, `unknown probe field ${name}`);
    const value = field === 'timestamp' ? BigInt(valueText) : NUMERIC.has(field) ? Number(valueText) : valueText === '1';
    assert.equal(addressBuffer({ [field]: value }).toString('hex'), hex, `codec writes ${name} where C does`);
    assert.deepEqual(decodeAddress(Buffer.from(hex, 'hex'))[field], value, `codec reads ${name} where C writes it`);
    checked++;
  }
  return checked;
}
