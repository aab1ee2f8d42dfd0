/**
 * Capture on the WinDivert backend: the real Engine, packet worker, WinDivertPacketSource, Dataplane and control
 * server, with the WinDivert TEST DOUBLE (a model of the driver, filter included) standing in for the driver (it
 * cannot run here). Unlike the TUN backend, WinDivert hands the engine the inbound packets its filter selects
 * (shielded ports, forged reflect sources), so those drops appear in the capture. Also the protocol's limits and
 * errors for capture.start.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { buildInterceptConfig } from '../../src/config/intercept-config.ts';
import { ControlClient } from '../../src/control/client.ts';
import { startControlServer, type ControlServer } from '../../src/control/server.ts';
import { testAddressRules } from '../helpers/address-rules.ts';
import { Engine } from '../../src/engine/engine.ts';
import { WinDivertHostBackend } from '../../src/packet-sources/windivert/host.ts';
import { isRetroflectError } from '../../src/errors.ts';
import { collectSent, DOUBLE_PATH, inboundAddr, inject, loadDouble, outboundAddr, packet } from '../helpers/windivert-double.ts';
import { tshark } from '../helpers/tshark.ts';

const { double } = loadDouble();
const R4 = '192.0.2.1';
const LOCAL = '198.51.100.2';
const PEER = '203.0.113.9';

describe('capture through the WinDivert backend (test double)', { timeout: 60_000 }, () => {
  let engine: Engine;
  let server: ControlServer;
  const dir = mkdtempSync(join(tmpdir(), 'rft-capwd-'));
  const pipe = join(dir, 'ctl.sock');

  before(async () => {
    double.reset();
    engine = await Engine.start({
      config: buildInterceptConfig([R4], ['8080/tcp']),
      backend: new WinDivertHostBackend({ dllPath: DOUBLE_PATH }),
    });
    server = await startControlServer({ addressRules: testAddressRules, engine, pipeName: pipe, configPath: null });
  });

  after(async () => {
    await server?.close();
    await engine?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('reflected, shield-dropped, malformed and forged-source packets are captured with their verdicts; tshark reads the file', async (t) => {
    const client = await ControlClient.connect({ pipe });
    const chunks: Buffer[] = [];
    let packets = 0;
    client.onNotification((n) => {
      if (n.method !== 'capture') return;
      const p = n.params as { data: string; packets: number };
      chunks.push(Buffer.from(p.data, 'base64'));
      packets += p.packets;
    });
    t.after(() => client.close()); // also when an assertion fails: the limit test below counts captures
    const started = await client.call('capture.start', { format: 'pcapng' });
    assert.deepEqual(started.interfaces.map((i) => i.name), ['windivert outbound', 'windivert inbound']);
    await sleep(150); // the worker takes the capture list after its current receive (≤ 50 ms)

    const malformed = Buffer.from(packet(LOCAL, R4, 17, 40002, 5354));
    malformed.writeUInt16BE(200, 24); // UDP length beyond the datagram: badTransportHeader
    inject(double, packet(LOCAL, R4, 6, 40000, 8081), outboundAddr(false));
    inject(double, packet(PEER, LOCAL, 6, 50000, 8080), inboundAddr(false));
    inject(double, malformed, outboundAddr(false));
    inject(double, packet(R4, LOCAL, 6, 50002, 22), inboundAddr(false)); // another host posing as the reflect address
    const deadline = Date.now() + 10_000;
    while (packets < 4 && Date.now() < deadline) await sleep(20);
    const end = await client.call('capture.stop', {});
    client.close();
    assert.equal(packets, 4);
    assert.equal(end.captured, 4);
    assert.equal(end.dropped, 0);

    // The data plane's own work is unchanged by the capture: the reflected packet was sent, the drops were not.
    const sent = collectSent(double);
    assert.equal(sent.length, 1);

    const file = join(dir, 'wd.pcapng');
    writeFileSync(file, Buffer.concat(chunks));
    const r = await tshark(['-r', file, '-T', 'fields', '-E', 'separator=|', '-e', 'frame.interface_name', '-e', 'ip.src', '-e', 'frame.comment']);
    assert.equal(r.code, 0, r.stderr);
    // Each packet under its WinDivert IfIdx (the double's addresses: 7 outbound, 9 inbound), one block per direction.
    assert.deepEqual(r.stdout.trim().split('\n'), [
      `if7 outbound|${R4}|verdict=reflected original=${LOCAL}:40000 > ${R4}:8081`,
      `if9 inbound|${PEER}|verdict=shieldDropped original=${PEER}:50000 > ${LOCAL}:8080`,
      `if7 outbound|${LOCAL}|verdict=malformed reason=badTransportHeader original=${LOCAL} > ${R4}`,
      `if9 inbound|${R4}|verdict=forgedSourceDropped original=${R4}:50002 > ${LOCAL}:22`,
    ]);
  });

  test('an offloaded packet is recorded as it goes out: with the checksum completed, not the partial one (issue 19 item 24)', async (t) => {
    const client = await ControlClient.connect({ pipe });
    const chunks: Buffer[] = [];
    let packets = 0;
    client.onNotification((n) => {
      if (n.method !== 'capture') return;
      const p = n.params as { data: string; packets: number };
      chunks.push(Buffer.from(p.data, 'base64'));
      packets += p.packets;
    });
    t.after(() => client.close());
    await client.call('capture.start', { format: 'pcapng' });
    await sleep(150);
    // TCP checksum offloaded: the stack left only the pseudo-header sum in the field and cleared TCPChecksum.
    const offloaded = Buffer.from(packet(LOCAL, R4, 6, 40010, 8081, 7));
    offloaded.writeUInt16BE(0x1234, 20 + 16);
    inject(double, offloaded, outboundAddr(false, { tcpChecksum: false }));
    const deadline = Date.now() + 10_000;
    while (packets < 1 && Date.now() < deadline) await sleep(20);
    await client.call('capture.stop', {});
    client.close();
    const sent = collectSent(double);
    assert.equal(sent.length, 1);
    const onWire = sent[0].bytes.readUInt16BE(20 + 16);
    assert.notEqual(onWire, 0x1234, 'completed before sending');
    const file = join(dir, 'offload.pcapng');
    writeFileSync(file, Buffer.concat(chunks));
    const r = await tshark(['-r', file, '-o', 'tcp.check_checksum:TRUE', '-T', 'fields', '-E', 'separator=|', '-e', 'tcp.checksum', '-e', 'tcp.checksum.status']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), `0x${onWire.toString(16).padStart(4, '0')}|1`, 'the record holds the checksum that went out, and it is valid');
  });

  test('limits and bad parameters: clear errors, nothing started', async () => {
    const rejects = async (p: Promise<unknown>, code: string, field?: string): Promise<void> => {
      await assert.rejects(p, (e: unknown) => isRetroflectError(e) && e.code === code && (field === undefined || e.details?.field === field));
    };
    const c = await ControlClient.connect({ pipe });
    await rejects(c.call('capture.start', { snaplen: 10 }), 'E_INVALID_PARAMS', 'snaplen');
    await rejects(c.call('capture.start', { format: 'text' }), 'E_INVALID_PARAMS', 'format');
    await rejects(c.call('capture.start', { rate: 0 }), 'E_INVALID_PARAMS', 'rate');
    await rejects(c.call('capture.start', { verdicts: ['dropped'] }), 'E_INVALID_PARAMS', 'verdicts[0]');
    await rejects(c.call('capture.start', { addresses: ['nope'] }), 'E_INVALID_ADDRESS');
    await rejects(c.call('capture.start', { colour: true }), 'E_INVALID_PARAMS', 'colour');
    assert.equal((await c.call('capture.stop', {})).reason, 'notCapturing');
    await c.call('capture.start', {});
    await rejects(c.call('capture.start', {}), 'E_INVALID_PARAMS', 'method');

    const more: ControlClient[] = [];
    try {
      for (let i = 0; i < 7; i++) {
        const x = await ControlClient.connect({ pipe });
        more.push(x);
        await x.call('capture.start', { format: 'summary' });
      }
      const ninth = await ControlClient.connect({ pipe });
      more.push(ninth);
      await rejects(ninth.call('capture.start', {}), 'E_LIMIT_REACHED');
      // A closed connection frees its capture.
      more[0].close();
      await sleep(100);
      await ninth.call('capture.start', {});
    } finally {
      for (const x of more) x.close();
      c.close();
    }
  });
});
