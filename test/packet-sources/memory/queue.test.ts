/**
 * The memory backend's shared packet queue (src/packet-sources/memory/queue.ts): order, wrap-around, a full queue
 * refusing, a view from the buffer seeing the same packets, and bad shapes refused. No worker, no privileges.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MEMORY_PACKET_BYTES, PacketQueue } from '../../../src/packet-sources/memory/queue.ts';

test('packets come out in order with their direction and interface, across the ring\'s wrap-around', () => {
  const q = new PacketQueue({ slots: 3, packetBytes: 64 });
  const view = new PacketQueue({ buffer: q.buffer, packetBytes: 64 }); // as the other thread sees it
  for (let round = 0; round < 4; round++) {
    assert.ok(q.push(Uint8Array.of(round, 1), true, 7));
    assert.ok(q.push(Uint8Array.of(round, 2, 2), false, 8));
    assert.equal(view.length, 2);
    assert.deepEqual(view.shift(), { bytes: Buffer.from([round, 1]), outbound: true, ifIndex: 7 });
    assert.deepEqual(view.shift(), { bytes: Buffer.from([round, 2, 2]), outbound: false, ifIndex: 8 });
    assert.equal(view.shift(), null);
  }
});

test('a full queue refuses a packet and keeps what it holds; a packet larger than a slot is an error', () => {
  const q = new PacketQueue({ slots: 2, packetBytes: 64 });
  assert.ok(q.push(Uint8Array.of(1), true, 1));
  assert.ok(q.push(Uint8Array.of(2), true, 1));
  assert.equal(q.push(Uint8Array.of(3), true, 1), false);
  assert.equal(q.length, 2);
  assert.deepEqual(q.shift()?.bytes, Buffer.from([1]));
  assert.ok(q.push(Uint8Array.of(3), true, 1), 'room again after a read');
  assert.throws(() => q.push(new Uint8Array(65), true, 1), /does not fit/);
  assert.throws(() => new PacketQueue({ slots: 0, packetBytes: 64 }), /slots 0 is outside/);
  assert.throws(() => new PacketQueue({ slots: 1, packetBytes: MEMORY_PACKET_BYTES.MAX + 1 }), /packet size/);
});

test('wait() returns after its timeout on an empty queue, and as soon as a packet arrives', async () => {
  const q = new PacketQueue({ slots: 4, packetBytes: 64 });
  await q.wait(20);
  assert.equal(q.length, 0);
  setTimeout(() => q.push(Uint8Array.of(9), true, 1), 10);
  let guard: NodeJS.Timeout | undefined;
  const first = await Promise.race([
    q.wait(600_000).then(() => 'packet'),
    new Promise((resolve) => (guard = setTimeout(resolve, 30_000, 'still waiting'))),
  ]);
  clearTimeout(guard);
  assert.equal(first, 'packet', 'woken by the packet, not by its ten-minute timeout');
  assert.equal(q.length, 1);
});
