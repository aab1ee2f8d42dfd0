/** The flow key the flow table and the port mapper share: one hash whether read from words or a packet, addresses back as text. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import ipaddr from 'ipaddr.js';
import { flowKeyHash, flowKeyHashAt, formatAddressWords } from '../../src/engine/flow-key.ts';

/** R then L as bytes in a buffer, and their words (4 per address, zero-padded for IPv4). */
function key(r: string, l: string): { view: DataView; words: Int32Array; family: 4 | 6 } {
  const rb = ipaddr.parse(r).toByteArray();
  const lb = ipaddr.parse(l).toByteArray();
  const family = rb.length === 4 ? 4 : 6;
  const view = new DataView(Uint8Array.from([...rb, ...lb]).buffer);
  const words = new Int32Array(8);
  for (let i = 0; i < rb.length / 4; i++) {
    words[i] = view.getInt32(4 * i);
    words[4 + i] = view.getInt32(rb.length + 4 * i);
  }
  return { view, words, family };
}

const hashOfWords = (k: ReturnType<typeof key>, kind: number, ports: number): number =>
  flowKeyHash(kind, ports, k.family, k.words[0], k.words[4], k.words[1], k.words[5], k.words[2], k.words[6], k.words[3], k.words[7]);

test('the hash is the same from words and from packet bytes, and tells keys apart by port, address and protocol', () => {
  for (const [r, l] of [['198.51.100.1', '192.0.2.7'], ['2001:db8::1', '2001:db8::2:7']]) {
    const k = key(r, l);
    const kind = (k.family << 8) | 6;
    const ports = (1234 << 16) | 80;
    const h = hashOfWords(k, kind, ports);
    assert.equal(flowKeyHashAt(k.view, k.family, kind, ports, 0, k.family === 4 ? 4 : 16), h);
    assert.notEqual(hashOfWords(k, kind, ports + 1), h);
    assert.notEqual(hashOfWords(k, (k.family << 8) | 17, ports), h);
    assert.notEqual(hashOfWords(key(l, r), kind, ports), h);
  }
});

test('key addresses read back as canonical text', () => {
  for (const [r, l] of [['198.51.100.1', '192.0.2.7'], ['2001:db8::1', '2001:db8::2:7']]) {
    const k = key(r, l);
    assert.equal(formatAddressWords(k.family, k.words, 0), r);
    assert.equal(formatAddressWords(k.family, k.words, 4), l);
  }
});
