/**
 * Allowed ports on the WinDivert backend: the real engine, worker, WinDivertPacketSource and Dataplane, with the
 * test double standing in for the driver. A SYN to a port that is not allowed is never re-injected; its refusal (a
 * TCP reset from R) is sent inbound, on the interface the SYN was leaving by, with checksums marked valid; a UDP
 * datagram gets ICMP port unreachable; an allowed SYN is reflected as before.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { buildInterceptConfig } from '../../../src/config/intercept-config.ts';
import { parseAllowedPorts } from '../../../src/config/allow-lists.ts';
import { WinDivertHostBackend } from '../../../src/packet-sources/windivert/host.ts';
import { Engine } from '../../../src/engine/engine.ts';
import { collectSent, DOUBLE_PATH, inject, loadDouble, outboundAddr, type SentPacket } from '../../helpers/windivert-double.ts';
import { addressBytes, ipv4, referenceChecksum, referenceTransportValid, tcpSegment, udpDatagram, withChecksum } from '../../helpers/packet-builders.ts';

const { double } = loadDouble();
const R = '192.0.2.1';
const CLIENT = '198.51.100.2';

function syn(dstPort: number): Uint8Array {
  return ipv4({ src: CLIENT, dst: R, proto: 6, payload: withChecksum(addressBytes(CLIENT), addressBytes(R), 6, tcpSegment({ srcPort: 40000, dstPort, flags: 0x02 })) });
}

async function sent(n: number): Promise<SentPacket[]> {
  const out: SentPacket[] = [];
  const deadline = Date.now() + 20_000;
  while (out.length < n && Date.now() < deadline) {
    out.push(...collectSent(double));
    await sleep(20);
  }
  return out;
}

test('windivert: a refused SYN is answered inbound with a reset from R; UDP with port unreachable; allowed ones reflected', { timeout: 60_000 }, async () => {
  double.reset();
  const config = buildInterceptConfig([R], []);
  config.allow = [{ address: R, ports: parseAllowedPorts(['8080/tcp']) }];
  const engine = await Engine.start({ config, backend: new WinDivertHostBackend({ dllPath: DOUBLE_PATH }) });
  try {
    inject(double, syn(8081), outboundAddr(false));
    inject(double, syn(8080), outboundAddr(false));
    const udp = ipv4({ src: CLIENT, dst: R, proto: 17, payload: withChecksum(addressBytes(CLIENT), addressBytes(R), 17, udpDatagram(41000, 53, [1, 2])) });
    inject(double, udp, outboundAddr(false));
    const out = await sent(3);
    assert.equal(out.length, 3, 'three packets went back: reset, reflected SYN, port unreachable');
    for (const p of out) {
      assert.equal(p.addr.outbound, false, 'inbound');
      assert.equal(p.addr.ifIdx, 7, 'on the interface the packet was leaving by');
    }
    // Refusals are sent while the batch is decided, the batch itself after: find each by what it is.
    const rst = out.find((p) => p.bytes[9] === 6 && p.bytes.readUInt16BE(20) === 8081)!;
    const reflected = out.find((p) => p.bytes[9] === 6 && p.bytes.readUInt16BE(22) === 8080)!;
    const icmp = out.find((p) => p.bytes[9] === 1)!;
    assert.ok(rst && reflected && icmp, JSON.stringify(out.map((p) => [...p.bytes.subarray(0, 24)])));
    assert.equal(rst.bytes[33], 0x14, 'RST|ACK');
    assert.equal(rst.bytes.readUInt16BE(20), 8081);
    assert.ok(rst.addr.ipChecksum && rst.addr.tcpChecksum, 'checksums marked valid');
    assert.equal(referenceChecksum(rst.bytes.subarray(0, 20)), 0);
    assert.ok(referenceTransportValid(addressBytes(R), addressBytes(CLIENT), 6, rst.bytes.subarray(20)));
    assert.equal(reflected.bytes[33], 0x02, 'the allowed SYN, reflected');
    assert.deepEqual([icmp.bytes[9], icmp.bytes[20], icmp.bytes[21]], [1, 3, 3], 'ICMP port unreachable');
    const stats = await engine.stats();
    assert.equal(stats.notAllowed.packets, 2);
    assert.equal(stats.errors.send, 0);
  } finally {
    await engine.stop();
  }
});
