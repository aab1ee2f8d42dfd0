/**
 * The whole engine on the in-memory packet backend (src/packet-sources/memory/): Engine (main thread), the real
 * packet worker thread, the registry building the worker half from the init message, and the real Dataplane. The
 * memory backend stands in for the OS (no device, driver or firewall), so this runs as any user, without root,
 * namespaces, Wine or pwsh. What it shows is the engine's own behaviour: reflect, pass, shield and forged-source
 * drops, counters, a live change, and stop.
 *
 * Packets are decided in order, so a packet sent on unchanged right after a dropped one proves the drop was decided.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildInterceptConfig } from '../../../src/config/intercept-config.ts';
import { Engine } from '../../../src/engine/engine.ts';
import { MEMORY_IF_INDEX, MemoryHostBackend } from '../../../src/packet-sources/memory/host.ts';
import { addressBytes, ipv4, referenceTransportValid, udpDatagram, withChecksum, tcpSegment } from '../../helpers/packet-builders.ts';

const CLIENT = '198.51.100.2';
const REFLECT = '192.0.2.1';
const OTHER_HOST = '203.0.113.9';

function udp(src: string, dst: string, srcPort: number, dstPort: number, data = [1, 2, 3, 4]): Uint8Array {
  return ipv4({ src, dst, proto: 17, payload: withChecksum(addressBytes(src), addressBytes(dst), 17, udpDatagram(srcPort, dstPort, data)) });
}

function tcpSyn(src: string, dst: string, srcPort: number, dstPort: number): Uint8Array {
  return ipv4({ src, dst, proto: 6, payload: withChecksum(addressBytes(src), addressBytes(dst), 6, tcpSegment({ srcPort, dstPort, flags: 0x02 })) });
}

const addr = (b: Buffer, at: number): string => Array.from(b.subarray(at, at + 4)).join('.');

async function startEngine(backend: MemoryHostBackend): Promise<Engine> {
  return Engine.start({
    config: buildInterceptConfig([REFLECT], ['8080/tcp']),
    backend,
  });
}

test('memory backend: a packet to a reflect address comes back inbound with its addresses swapped and valid checksums', { timeout: 30_000 }, async () => {
  const backend = new MemoryHostBackend();
  const engine = await startEngine(backend);
  try {
    assert.equal(engine.status().backend, 'memory');
    assert.ok(backend.inject(udp(CLIENT, REFLECT, 40000, 53), { outbound: true }));
    const out = await backend.nextSent(10_000);
    assert.ok(out, 'the reflected packet came back');
    assert.equal(out.outbound, false, 're-injected as inbound');
    assert.equal(out.ifIndex, MEMORY_IF_INDEX, 'on the interface it left by');
    assert.equal(addr(out.bytes, 12), REFLECT, 'source is now the reflect address');
    assert.equal(addr(out.bytes, 16), CLIENT, 'destination is now the client');
    assert.equal(out.bytes.readUInt16BE(20), 40000, 'ports stay as they were (the server sees the client port as the source)');
    assert.equal(out.bytes.readUInt16BE(22), 53);
    assert.ok(referenceTransportValid(addressBytes(REFLECT), addressBytes(CLIENT), 17, out.bytes.subarray(20)), 'UDP checksum valid after the swap');
    const stats = await engine.stats();
    assert.equal(stats.reflected.packets, 1);
    assert.equal(stats.passed.packets, 0);
  } finally {
    await engine.stop();
  }
});

test('memory backend: other traffic passes unchanged, shield ports and forged sources are dropped and counted', { timeout: 30_000 }, async () => {
  const backend = new MemoryHostBackend();
  const engine = await startEngine(backend);
  try {
    const passing = udp(CLIENT, OTHER_HOST, 40001, 53);
    backend.inject(tcpSyn(OTHER_HOST, CLIENT, 5555, 8080), { outbound: false }); // to a shield port from another host
    backend.inject(udp(REFLECT, CLIENT, 53, 40002), { outbound: false }); // from a reflect address, arriving: forged
    backend.inject(passing, { outbound: true }); // not ours
    const out = await backend.nextSent(10_000);
    assert.ok(out, 'the passing packet came out');
    assert.deepEqual(new Uint8Array(out.bytes), passing, 'sent on byte for byte');
    assert.equal(out.outbound, true, 'in its original direction');
    assert.deepEqual(backend.sent(), [], 'the two dropped packets were not sent');
    const stats = await engine.stats();
    assert.equal(stats.shieldDropped.packets, 1);
    assert.equal(stats.byShieldPort.find((p) => p.port === 8080)?.packets, 1);
    assert.equal(stats.forgedSourceDropped.packets, 1);
    assert.equal(stats.passed.packets, 1);
    assert.equal(stats.reflected.packets, 0);
  } finally {
    await engine.stop();
  }
});

test('memory backend: a live change reaches the worker, and stop ends it', { timeout: 30_000 }, async () => {
  const backend = new MemoryHostBackend();
  const engine = await startEngine(backend);
  const added = '192.0.2.2';
  try {
    backend.inject(udp(CLIENT, added, 40003, 53), { outbound: true });
    const before = await backend.nextSent(10_000);
    assert.equal(before && addr(before.bytes, 16), added, 'not yet a reflect address: passed unchanged');
    await engine.reconfigure({ ...engine.config(), reflectAddresses: [REFLECT, added] });
    assert.deepEqual(backend.applied.at(-1)?.reflectAddresses, [REFLECT, added], 'the host half was told');
    backend.inject(udp(CLIENT, added, 40003, 53), { outbound: true });
    const after = await backend.nextSent(10_000);
    assert.ok(after);
    assert.equal(addr(after.bytes, 12), added, 'now reflected');
    assert.equal(after.outbound, false);
  } finally {
    await engine.stop();
  }
  assert.equal(engine.status().state, 'stopped');
  backend.inject(udp(CLIENT, REFLECT, 40004, 53), { outbound: true });
  assert.equal(await backend.nextSent(300), null, 'a stopped engine sends nothing back');
});
