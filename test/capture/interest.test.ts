/**
 * captureInterest (capture/filter.ts): the union of the running captures' filters that the ebpf backend's program
 * uses to decide which packets the taps must see. It must be a superset of every capture's filter: a packet any
 * capture matches is wanted.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { captureInterest, compileCaptureSpec, parseCaptureFilter } from '../../src/capture/filter.ts';

const spec = (id: number, raw: Record<string, unknown>, snaplen = 256) =>
  compileCaptureSpec(id, new SharedArrayBuffer(64), snaplen, parseCaptureFilter(raw));

test('no capture: no interest', () => {
  assert.equal(captureInterest([]), null);
});

test('an open filter wants every reflected packet', () => {
  assert.deepEqual(captureInterest([spec(1, {})]), {
    reflected: true,
    protocols: 15,
    addresses: null,
    ports: null,
    snaplen: 256,
  });
});

test('the snap length is the longest of the captures that want reflected packets', () => {
  const specs = [spec(1, { ports: [53] }, 128), spec(2, {}, 9000), spec(3, { verdicts: ['malformed'] }, 65535)];
  const i = captureInterest(specs);
  assert.equal(i?.snaplen, 9000);
});

test('filters add up: addresses and ports are listed while every capture names some; protocols are or-ed', () => {
  const i = captureInterest([
    spec(1, { ports: [53], protocols: ['udp'] }),
    spec(2, { ports: [8080, 53], addresses: ['192.0.2.1'] }),
  ]);
  assert.deepEqual(i?.ports, [53, 8080, 53]);
  assert.equal(i?.addresses, null, 'capture 1 names no address, so any address is wanted');
  assert.equal(i?.protocols, 15, 'capture 2 names no protocol');
  const j = captureInterest([
    spec(1, { addresses: ['192.0.2.1'], protocols: ['tcp'] }),
    spec(2, { addresses: ['2001:db8::1'], protocols: ['icmp'] }),
  ]);
  assert.deepEqual(j?.addresses?.map((a) => a.length), [4, 16]);
  assert.equal(j?.ports, null);
  assert.equal(j?.protocols, 1 | 4);
});

test('captures that want no reflected packet add nothing', () => {
  const none = { reflected: false, protocols: 0, addresses: [], ports: [], snaplen: 0 };
  assert.deepEqual(captureInterest([spec(1, { verdicts: ['shieldDropped'] })]), none);
  const i = captureInterest([spec(1, { verdicts: ['malformed'] }), spec(2, { verdicts: ['reflected'], ports: [80] })]);
  assert.deepEqual(i, { reflected: true, protocols: 15, addresses: null, ports: [80], snaplen: 256 });
});
