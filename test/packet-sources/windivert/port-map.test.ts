/**
 * Port maps on the WinDivert backend: the whole engine (Engine + packet worker + WinDivertPacketSource + Dataplane)
 * with the ABI-compatible TEST DOUBLE standing in for the driver. The same decisions as on Linux (decide by the flow,
 * not by the port), and checksums right both when the stack computed them and when it left them to the NIC
 * (WINDIVERT_ADDRESS checksum flags clear: the backend finishes them after the port rewrite).
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { buildInterceptConfig } from '../../../src/config/intercept-config.ts';
import { parsePortMapSpec } from '../../../src/config/port-maps.ts';
import { Engine } from '../../../src/engine/engine.ts';
import { WinDivertHostBackend } from '../../../src/packet-sources/windivert/host.ts';
import { addressBytes, ipv4, ipv6, pseudoHeader, referenceChecksum, referenceTransportValid, tcpSegment, udpDatagram, withChecksum } from '../../helpers/packet-builders.ts';
import { collectSent, DOUBLE_PATH, inject, loadDouble, outboundAddr, type SentPacket } from '../../helpers/windivert-double.ts';

const { double } = loadDouble();
const L4 = '198.51.100.2';
const R4 = '192.0.2.1';
const L6 = '2001:db8:1::2';
const R6 = '2001:db8::1';

/** L → R packet; `offloaded`: checksum field holds only the pseudo-header sum, as a stack offloading to the NIC leaves it. */
function out(family: 4 | 6, proto: 6 | 17, srcPort: number, dstPort: number, flags: number, offloaded: boolean): Uint8Array {
  const [src, dst] = family === 4 ? [L4, R4] : [L6, R6];
  let seg = proto === 6 ? tcpSegment({ srcPort, dstPort, flags, data: [1, 2, 3, 4, 5, 6, 7] }) : udpDatagram(srcPort, dstPort, [9, 8, 7, 6, 5]);
  if (offloaded) {
    const at = proto === 6 ? 16 : 6;
    const partial = ~referenceChecksum(pseudoHeader(addressBytes(src), addressBytes(dst), proto, seg.length)) & 0xffff;
    seg[at] = partial >> 8;
    seg[at + 1] = partial & 0xff;
  } else {
    seg = withChecksum(addressBytes(src), addressBytes(dst), proto, seg);
  }
  return family === 4 ? ipv4({ src, dst, proto, payload: seg }) : ipv6({ src, dst, proto, payload: seg });
}

function ports(p: SentPacket): { src: number; dst: number; valid: boolean } {
  const b = p.bytes;
  const v4 = b[0] >> 4 === 4;
  const ip = v4 ? (b[0] & 0x0f) * 4 : 40;
  const proto = v4 ? b[9] : b[6];
  const src = Array.from(b.subarray(v4 ? 12 : 8, v4 ? 16 : 24));
  const dst = Array.from(b.subarray(v4 ? 16 : 24, v4 ? 20 : 40));
  const seg = b.subarray(ip);
  return { src: seg.readUInt16BE(0), dst: seg.readUInt16BE(2), valid: referenceTransportValid(src, dst, proto, seg) };
}

async function through(pkt: Uint8Array, offloaded: boolean): Promise<{ src: number; dst: number; valid: boolean; flagged: boolean }> {
  const v6 = pkt[0] >> 4 === 6;
  inject(double, pkt, outboundAddr(v6, offloaded ? { tcpChecksum: false, udpChecksum: false } : {}));
  const deadline = Date.now() + 5000;
  for (;;) {
    const sent = collectSent(double);
    if (sent.length) {
      assert.equal(sent.length, 1);
      assert.equal(sent[0].addr.outbound, false, 'reflected: re-injected inbound');
      const isTcp = (v6 ? sent[0].bytes[6] : sent[0].bytes[9]) === 6;
      return { ...ports(sent[0]), flagged: isTcp ? sent[0].addr.tcpChecksum : sent[0].addr.udpChecksum };
    }
    if (Date.now() > deadline) throw new Error('nothing came out of the engine');
    await sleep(5);
  }
}

describe('port maps through the WinDivert backend (test double)', { timeout: 60_000 }, () => {
  let engine: Engine;
  before(async () => {
    double.reset();
    const cfg = buildInterceptConfig([R4, R6], []);
    cfg.portMaps = [R4, R6].flatMap((address) => [...parsePortMapSpec('80=8080'), ...parsePortMapSpec('443=8443/tcp')].map((m) => ({ address, ...m })));
    engine = await Engine.start({
      config: cfg,
      backend: new WinDivertHostBackend({ dllPath: DOUBLE_PATH }),
    });
  });
  after(async () => {
    await engine?.stop();
  });

  for (const family of [4, 6] as const) {
    for (const proto of [6, 17] as const) {
      for (const offloaded of [false, true]) {
        it(`IPv${family} ${proto === 6 ? 'TCP' : 'UDP'}, checksum ${offloaded ? 'offloaded' : 'computed'}: R:80 → :8080 and back as R:80`, async () => {
          const client = 41000 + family * 10 + proto + (offloaded ? 1 : 0);
          const req = await through(out(family, proto, client, 80, 0x02, offloaded), offloaded);
          assert.deepEqual(req, { src: client, dst: 8080, valid: true, flagged: true });
          const reply = await through(out(family, proto, 8080, client, 0x12, offloaded), offloaded);
          assert.deepEqual(reply, { src: 80, dst: client, valid: true, flagged: true });
        });
      }
    }
  }

  it('a direct client of R:8080 and a mapped client of R:80 at the same time: only the mapped reply is rewritten', async () => {
    await through(out(4, 6, 42001, 80, 0x02, false), false);
    assert.equal((await through(out(4, 6, 42002, 8080, 0x02, false), false)).dst, 8080);
    assert.equal((await through(out(4, 6, 8080, 42001, 0x12, false), false)).src, 80);
    assert.equal((await through(out(4, 6, 8080, 42002, 0x12, false), false)).src, 8080);
    const flows = engine.flows().filter((f) => f.clientPort === 42001 || f.clientPort === 42002);
    assert.deepEqual(flows.map((f) => [f.clientPort, f.serverPort, f.mappedFromPort]).sort(), [[42001, 8080, 80], [42002, 8080, null]]);
  });

  it('a /tcp map leaves UDP alone; after the map is removed, R:443 is itself again', async () => {
    assert.equal((await through(out(4, 17, 43001, 443, 0, false), false)).dst, 443);
    assert.equal((await through(out(4, 6, 43002, 443, 0x02, false), false)).dst, 8443);
    const cfg = engine.config();
    await engine.reconfigure({ ...cfg, portMaps: cfg.portMaps!.filter((m) => m.port !== 443) });
    assert.equal((await through(out(4, 6, 8443, 43002, 0x12, false), false)).src, 8443, 'the removed map\'s flow is forgotten');
    assert.equal((await through(out(4, 6, 43003, 443, 0x02, false), false)).dst, 443);
  });
});
