/**
 * Allowed ports of a reflect address, through the whole engine on the in-memory backend (the real worker and data
 * plane, no OS): a packet to a port that is not allowed is not reflected; a TCP segment is answered at once with a
 * reset from the reflect address, a UDP datagram with ICMP port unreachable quoting it, both with valid checksums;
 * port maps count as allowed ports; the server's answers of an allowed flow are reflected; a live change applies.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildInterceptConfig, type InterceptConfig } from '../../../src/config/intercept-config.ts';
import { parseAllowedPorts } from '../../../src/config/allow-lists.ts';
import { Engine } from '../../../src/engine/engine.ts';
import { MemoryHostBackend } from '../../../src/packet-sources/memory/host.ts';
import { addressBytes, ipv4, ipv6, referenceChecksum, referenceTransportValid, tcpSegment, udpDatagram, withChecksum, icmpMessage } from '../../helpers/packet-builders.ts';

const CLIENT = '198.51.100.2';
const REFLECT = '192.0.2.1';
const CLIENT6 = '2001:db8::2';
const REFLECT6 = '2001:db8::1';
const SYN = 0x02;
const SYN_ACK = 0x12;
const RST_ACK = 0x14;

function tcp(src: string, dst: string, srcPort: number, dstPort: number, flags: number, data: number[] = []): Uint8Array {
  return ipv4({ src, dst, proto: 6, payload: withChecksum(addressBytes(src), addressBytes(dst), 6, tcpSegment({ srcPort, dstPort, flags, data })) });
}

function udp(src: string, dst: string, srcPort: number, dstPort: number, data = [1, 2, 3, 4]): Uint8Array {
  return ipv4({ src, dst, proto: 17, payload: withChecksum(addressBytes(src), addressBytes(dst), 17, udpDatagram(srcPort, dstPort, data)) });
}

const addr = (b: Uint8Array, at: number): string => Array.from(b.subarray(at, at + 4)).join('.');

function config(ports: string[]): InterceptConfig {
  const cfg = buildInterceptConfig([REFLECT, REFLECT6], []);
  cfg.portMaps = [{ address: REFLECT, protocol: 'tcp', port: 80, target: 9090 }];
  cfg.allow = [{ address: REFLECT, ports: parseAllowedPorts(ports) }, { address: REFLECT6, ports: parseAllowedPorts(['53/udp']) }];
  return cfg;
}

async function withEngine(fn: (engine: Engine, backend: MemoryHostBackend) => Promise<void>): Promise<void> {
  const backend = new MemoryHostBackend();
  const engine = await Engine.start({ config: config(['8080/tcp', '53']), backend });
  try {
    await fn(engine, backend);
  } finally {
    await engine.stop();
  }
}

async function next(backend: MemoryHostBackend): Promise<Buffer> {
  const p = await backend.nextSent(10_000);
  assert.ok(p, 'the engine sent a packet back');
  assert.equal(p.outbound, false, 'inbound');
  return p.bytes;
}

test('allowed ports: a SYN to an allowed port is reflected; to another port it is answered with a reset from R', { timeout: 30_000 }, async () => {
  await withEngine(async (engine, backend) => {
    backend.inject(tcp(CLIENT, REFLECT, 40000, 8080, SYN), { outbound: true });
    let out = await next(backend);
    assert.equal(out[33], SYN, 'the SYN itself came back (reflected)');
    assert.equal(addr(out, 12), REFLECT);

    backend.inject(tcp(CLIENT, REFLECT, 40001, 8081, SYN), { outbound: true });
    out = await next(backend);
    assert.equal(out.length, 40, 'a bare reset: IPv4 + TCP headers');
    assert.equal(addr(out, 12), REFLECT, 'from the reflect address');
    assert.equal(addr(out, 16), CLIENT, 'to the client');
    assert.equal(out.readUInt16BE(20), 8081, 'from the port the client asked for');
    assert.equal(out.readUInt16BE(22), 40001, 'to the client port');
    assert.equal(out[33], RST_ACK, 'RST|ACK');
    assert.equal(out.readUInt32BE(28), (0x12345678 + 1) >>> 0, 'acknowledges the SYN');
    assert.equal(referenceChecksum(out.subarray(0, 20)), 0, 'IPv4 header checksum valid');
    assert.ok(referenceTransportValid(addressBytes(REFLECT), addressBytes(CLIENT), 6, out.subarray(20)), 'TCP checksum valid');

    const stats = await engine.stats();
    assert.equal(stats.notAllowed.packets, 1);
    assert.equal(stats.byAddress.find((a) => a.address === REFLECT)?.notAllowed.packets, 1);
    assert.equal(stats.reflected.packets, 1);
  });
});

test('allowed ports: a UDP datagram to another port gets ICMP port unreachable quoting it; an allowed one is reflected', { timeout: 30_000 }, async () => {
  await withEngine(async (_engine, backend) => {
    const refused = udp(CLIENT, REFLECT, 41000, 5353);
    backend.inject(refused, { outbound: true });
    const out = await next(backend);
    assert.equal(out[9], 1, 'ICMP');
    assert.equal(addr(out, 12), REFLECT);
    assert.equal(addr(out, 16), CLIENT);
    assert.deepEqual([out[20], out[21]], [3, 3], 'destination unreachable, port unreachable');
    assert.deepEqual(Array.from(out.subarray(28)), Array.from(refused), 'the whole datagram is quoted');
    assert.equal(referenceChecksum(out.subarray(20)), 0, 'ICMP checksum valid');
    assert.equal(referenceChecksum(out.subarray(0, 20)), 0, 'IPv4 header checksum valid');

    backend.inject(udp(CLIENT, REFLECT, 41000, 53), { outbound: true });
    const ok = await next(backend);
    assert.equal(ok[9], 17, '53 (TCP and UDP) is allowed');
  });
});

test('allowed ports: IPv6 UDP to another port gets ICMPv6 port unreachable with a valid checksum', { timeout: 30_000 }, async () => {
  await withEngine(async (_engine, backend) => {
    const payload = withChecksum(addressBytes(CLIENT6), addressBytes(REFLECT6), 17, udpDatagram(41000, 54, [9, 9]));
    backend.inject(ipv6({ src: CLIENT6, dst: REFLECT6, proto: 17, payload }), { outbound: true });
    const out = await next(backend);
    assert.equal(out[6], 58, 'ICMPv6');
    assert.deepEqual([out[40], out[41]], [1, 4], 'destination unreachable, port unreachable');
    assert.ok(referenceTransportValid(addressBytes(REFLECT6), addressBytes(CLIENT6), 58, out.subarray(40)), 'ICMPv6 checksum valid');
  });
});

test('allowed ports: the server answers of an allowed flow, port maps, and ICMP echo are reflected; stray segments are not', { timeout: 30_000 }, async () => {
  await withEngine(async (_engine, backend) => {
    backend.inject(tcp(CLIENT, REFLECT, 8080, 40000, SYN_ACK), { outbound: true });
    assert.equal((await next(backend))[33], SYN_ACK, 'the SYN-ACK from the allowed server port is reflected');
    backend.inject(tcp(CLIENT, REFLECT, 40002, 80, SYN), { outbound: true });
    const mapped = await next(backend);
    assert.equal(mapped[33], SYN, 'a SYN to the mapped port 80 is reflected');
    assert.equal(mapped.readUInt16BE(22), 9090, 'and delivered to the map target');
    backend.inject(tcp(CLIENT, REFLECT, 9090, 40002, SYN_ACK), { outbound: true });
    assert.equal((await next(backend))[33], SYN_ACK, 'the answer from the map target is reflected');
    backend.inject(tcp(CLIENT, REFLECT, 40003, 9090, SYN), { outbound: true });
    assert.equal((await next(backend))[33], RST_ACK, 'but a client may not open the target port directly');
    const echo = icmpMessage(8, 0, 7, 1, [1, 2]);
    backend.inject(ipv4({ src: CLIENT, dst: REFLECT, proto: 1, payload: echo }), { outbound: true });
    assert.equal((await next(backend))[20], 8, 'ICMP echo is reflected');
    backend.inject(tcp(CLIENT, REFLECT, 22, 40004, 0x04), { outbound: true });
    backend.inject(udp(CLIENT, REFLECT, 41000, 53), { outbound: true });
    assert.equal((await next(backend))[9], 17, 'a stray reset from a port not allowed is dropped unanswered (the next packet comes first)');
  });
});

test('allowed ports: a live change takes effect, and lifting the list allows every port', { timeout: 30_000 }, async () => {
  await withEngine(async (engine, backend) => {
    await engine.reconfigure(config(['8081/tcp']));
    backend.inject(tcp(CLIENT, REFLECT, 40010, 8081, SYN), { outbound: true });
    assert.equal((await next(backend))[33], SYN, '8081 is allowed now');
    backend.inject(tcp(CLIENT, REFLECT, 40011, 8080, SYN), { outbound: true });
    assert.equal((await next(backend))[33], RST_ACK, '8080 is not any more');
    const open = config([]);
    open.allow = [];
    await engine.reconfigure(open);
    backend.inject(tcp(CLIENT, REFLECT, 40012, 12345, SYN), { outbound: true });
    assert.equal((await next(backend))[33], SYN, 'without a list every port is reflected');
    assert.deepEqual(engine.status().allow, []);
  });
});
