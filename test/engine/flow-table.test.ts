import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import { EngineCounters } from '../../src/engine/counters.ts';
import { AllowDecision, FLOW_IDLE_MS, FlowTable } from '../../src/engine/flow-table.ts';
import { MAX_DECISION_EPOCH, nextDecisionEpoch } from '../../src/engine/flow-table.ts';
import { ParsedPacket, parsePacket } from '../../src/packet/parse.ts';
import { icmpMessage, ipv4, ipv6, tcpSegment, udpDatagram } from '../helpers/packet-builders.ts';

const L4 = '192.0.2.10';
const R4 = '203.0.113.7';
const L6 = '2001:db8::10';
const R6 = '2001:db8:ffff::7';
const T0 = Date.UTC(2026, 0, 1);
const SYN = 0x02;
const SYNACK = 0x12;
const ACK = 0x10;
const FIN_ACK = 0x11;
const RST = 0x04;

function tcp4(srcPort: number, dstPort: number, flags: number, src = L4, dst = R4): Uint8Array {
  return ipv4({ src, dst, proto: 6, payload: tcpSegment({ srcPort, dstPort, flags }) });
}
function udp4(srcPort: number, dstPort: number): Uint8Array {
  return ipv4({ src: L4, dst: R4, proto: 17, payload: udpDatagram(srcPort, dstPort, [1, 2, 3]) });
}

/** Record a packet as Dataplane.outbound does (before reflection; bytes = IP length); what `record` returned. */
function record(t: FlowTable, bytes: Uint8Array, now: number, decision: AllowDecision = AllowDecision.Ignore,
  epoch = 1): boolean {
  const p = new ParsedPacket();
  assert.equal(parsePacket(bytes, 0, bytes.length, p), true);
  return t.record(bytes, p, p.ipLength, now, 0, decision, epoch);
}

describe('FlowTable', () => {
  it('keys both directions of a TCP conversation to one flow, client from the SYN', () => {
    const t = new FlowTable({ capacity: 64 });
    const packets = [tcp4(51000, 8080, SYN), tcp4(8080, 51000, SYNACK), tcp4(51000, 8080, ACK), tcp4(8080, 51000, ACK)];
    packets.forEach((b, i) => record(t, b, T0 + i * 10));
    const flows = t.snapshot(T0 + 100);
    assert.equal(flows.length, 1);
    assert.deepEqual(flows[0], {
      protocol: 'tcp',
      reflectAddress: R4,
      localAddress: L4,
      clientPort: 51000,
      serverPort: 8080,
      mappedFromPort: null,
      packets: 4,
      bytes: packets.reduce((n, b) => n + b.length, 0),
      firstSeen: new Date(T0).toISOString(),
      lastSeen: new Date(T0 + 30).toISOString(),
      state: 'open',
      // Who made the flow is looked up by the engine when flows are listed, never by the table.
      pid: null,
      processName: null,
      uid: null,
      user: null,
      packageFamilyName: null,
    });
    record(t, tcp4(8080, 51000, FIN_ACK), T0 + 40);
    assert.equal(t.snapshot(T0 + 100)[0].state, 'closed');
  });

  it('a SYN names the client even when it has the lower port; without one, the lower port is the server', () => {
    const t = new FlowTable({ capacity: 64 });
    record(t, tcp4(80, 9000, SYN), T0);
    record(t, udp4(40000, 53), T0);
    record(t, udp4(53, 40000), T0 + 1);
    record(t, tcp4(443, 50000, ACK), T0); // mid-connection: no SYN seen
    const flows = t.snapshot(T0 + 10);
    const find = (proto: string, port: number) => flows.find((f) => f.protocol === proto && (f.clientPort === port || f.serverPort === port))!;
    assert.equal(flows.length, 3);
    assert.deepEqual([find('tcp', 9000).clientPort, find('tcp', 9000).serverPort], [80, 9000]);
    assert.deepEqual([find('udp', 53).clientPort, find('udp', 53).serverPort, find('udp', 53).packets, find('udp', 53).state], [40000, 53, 2, 'active']);
    assert.deepEqual([find('tcp', 443).clientPort, find('tcp', 443).serverPort], [50000, 443]);
  });

  it('ICMP and ICMPv6 echo: request and reply are one flow keyed by the identifier', () => {
    const t = new FlowTable({ capacity: 64 });
    record(t, ipv4({ src: L4, dst: R4, proto: 1, payload: icmpMessage(8, 0, 777, 1, [0]) }), T0);
    record(t, ipv4({ src: L4, dst: R4, proto: 1, payload: icmpMessage(0, 0, 777, 1, [0]) }), T0 + 1);
    record(t, ipv4({ src: L4, dst: R4, proto: 1, payload: icmpMessage(8, 0, 778, 1, [0]) }), T0 + 2);
    record(t, ipv6({ src: L6, dst: R6, proto: 58, payload: icmpMessage(128, 0, 777, 1, [0]) }), T0 + 3);
    record(t, ipv6({ src: L6, dst: R6, proto: 58, payload: icmpMessage(129, 0, 777, 1, [0]) }), T0 + 4);
    const flows = t.snapshot(T0 + 10);
    assert.equal(flows.length, 3);
    const v6 = flows.find((f) => f.protocol === 'icmpv6')!;
    assert.deepEqual([v6.reflectAddress, v6.localAddress, v6.clientPort, v6.serverPort, v6.packets, v6.state], [R6, L6, 777, 0, 2, 'active']);
    const v4 = flows.filter((f) => f.protocol === 'icmp').map((f) => [f.clientPort, f.packets]);
    assert.deepEqual(v4.sort(), [[777, 2], [778, 1]]);
  });

  it('different local or reflect addresses are different flows; IPv6 addresses are shown canonically', () => {
    const t = new FlowTable({ capacity: 64 });
    record(t, tcp4(1000, 80, SYN), T0);
    record(t, tcp4(1000, 80, SYN, '192.0.2.11'), T0);
    record(t, tcp4(1000, 80, SYN, L4, '203.0.113.8'), T0);
    record(t, ipv6({ src: '2001:0db8:0:0:0:0:0:10', dst: R6, proto: 6, payload: tcpSegment({ srcPort: 1000, dstPort: 80, flags: SYN }) }), T0);
    const flows = t.snapshot(T0);
    assert.equal(flows.length, 4);
    assert.ok(flows.some((f) => f.localAddress === '2001:db8::10' && f.reflectAddress === R6));
  });

  it('idle flows expire by protocol and TCP state, in snapshots at once and from the table on sweep', () => {
    const t = new FlowTable({ capacity: 64 });
    record(t, udp4(40000, 53), T0);
    record(t, tcp4(50000, 80, SYN), T0);
    record(t, tcp4(50001, 80, SYN), T0);
    record(t, tcp4(50001, 80, RST), T0);
    const alive = (now: number) => t.snapshot(now).map((f) => `${f.protocol}:${f.clientPort}`).sort();
    assert.deepEqual(alive(T0 + FLOW_IDLE_MS.tcpClosed), ['tcp:50000', 'tcp:50001', 'udp:40000']);
    assert.deepEqual(alive(T0 + FLOW_IDLE_MS.tcpClosed + 1), ['tcp:50000', 'udp:40000']);
    assert.deepEqual(alive(T0 + FLOW_IDLE_MS.datagram + 1), ['tcp:50000']);
    assert.deepEqual(alive(T0 + FLOW_IDLE_MS.tcpOpen + 1), []);
    assert.equal(t.sweep(T0 + FLOW_IDLE_MS.datagram + 1), 2);
    assert.equal(t.sweep(T0 + FLOW_IDLE_MS.datagram + 1), 0, 'sweep is idempotent');
    assert.deepEqual(alive(T0), ['tcp:50000'], 'swept flows are gone even for an earlier "now"');
  });

  it('a packet of an expired flow starts it afresh; a SYN after close starts a new connection', () => {
    const t = new FlowTable({ capacity: 64 });
    record(t, udp4(40000, 53), T0);
    record(t, udp4(40000, 53), T0 + 1);
    const later = T0 + FLOW_IDLE_MS.datagram + 10;
    record(t, udp4(40000, 53), later);
    assert.deepEqual(t.snapshot(later).map((f) => [f.packets, f.firstSeen]), [[1, new Date(later).toISOString()]]);
    record(t, tcp4(50000, 80, SYN), T0);
    record(t, tcp4(50000, 80, FIN_ACK), T0 + 1);
    record(t, tcp4(50000, 80, SYN), T0 + 2);
    const tcp = t.snapshot(T0 + 3).find((f) => f.protocol === 'tcp')!;
    assert.deepEqual([tcp.packets, tcp.state], [1, 'open']);
  });

  it('when the probe window is full, the flow seen longest ago is evicted', () => {
    const t = new FlowTable({ capacity: 16 }); // one probe window covers the whole table
    for (let i = 0; i < 16; i++) record(t, udp4(10000 + i, 53), T0 + 1000 - i); // port 10015 is the oldest
    assert.equal(t.snapshot(T0 + 1000).length, 16);
    record(t, udp4(20000, 53), T0 + 2000);
    const ports = t.snapshot(T0 + 2000).map((f) => f.clientPort);
    assert.equal(ports.length, 16);
    assert.ok(ports.includes(20000));
    assert.ok(!ports.includes(10015), 'oldest evicted');
    assert.ok(ports.includes(10000) && ports.includes(10014));
    // An expired entry is preferred over evicting a live one.
    record(t, udp4(10003, 53), T0 + 1000 + FLOW_IDLE_MS.datagram); // refresh one
    record(t, udp4(30000, 53), T0 + 1001 + FLOW_IDLE_MS.datagram); // others expired by now
    const now = T0 + 1001 + FLOW_IDLE_MS.datagram;
    // 20000 (seen at T0 + 2000) is still live; the refreshed 10003 and the new 30000 took expired slots.
    assert.deepEqual(t.snapshot(now).map((f) => f.clientPort).sort(), [10003, 20000, 30000]);
  });

  it('later fragments (no ports) are not recorded as flows', () => {
    const t = new FlowTable({ capacity: 64 });
    record(t, ipv4({ src: L4, dst: R4, proto: 17, fragmentOffset: 1480, payload: [1, 2, 3, 4] }), T0);
    assert.equal(t.snapshot(T0).length, 0);
  });

  it('validates capacity; a second FlowTable over the same buffer sees the same flows', () => {
    assert.throws(() => new FlowTable({ capacity: 100 }), RangeError);
    assert.throws(() => new FlowTable({ capacity: 8 }), RangeError);
    const t = new FlowTable();
    assert.equal(t.capacity, 4096);
    record(t, udp4(40000, 53), T0);
    const view = new FlowTable({ buffer: t.buffer });
    assert.equal(view.capacity, 4096);
    assert.deepEqual(view.snapshot(T0), t.snapshot(T0));
  });

  it('a worker thread writing while the main thread reads: snapshots are never torn', async () => {
    const t = new FlowTable({ capacity: 64 });
    const counters = new EngineCounters();
    const packets = [];
    for (let i = 0; i < 40; i++) packets.push(tcp4(40000 + i, 80, ACK), tcp4(80, 40000 + i, ACK));
    const stopFlag = new SharedArrayBuffer(4);
    // Node 20 does not pass tsx's loader hooks on to workers: register them inside the worker, then load the .ts file.
    const workerUrl = new URL('../fixtures/flow-writer.ts', import.meta.url).href;
    const boot = `import('tsx/esm/api').then((m) => { m.register(); return import(${JSON.stringify(workerUrl)}); })`;
    const worker = new Worker(boot, {
      eval: true,
      workerData: { flowsBuffer: t.buffer, countersBuffer: counters.buffer, packets, stopFlag },
    });
    try {
      await new Promise((resolve, reject) => {
        worker.once('message', resolve);
        worker.once('error', reject);
      });
      let snapshots = 0;
      let lastPackets = 0;
      // Read for at least 300 ms and until the writer has written 1000 records (on a loaded machine that takes
      // longer), so the checks below do not depend on how fast this machine is.
      const end = Date.now() + 300;
      const giveUp = Date.now() + 30_000;
      while ((Date.now() < end || lastPackets <= 1000 || snapshots <= 5) && Date.now() < giveUp) {
        for (const f of t.snapshot(1_700_000_000_000)) {
          assert.equal(f.bytes, f.packets * 100, 'packets and bytes read from one consistent version of the slot');
          assert.ok(f.lastSeen >= f.firstSeen);
          assert.deepEqual([f.reflectAddress, f.localAddress, f.serverPort], [R4, L4, 80]);
        }
        const snap = counters.snapshot();
        assert.ok(snap.reflected.packets >= lastPackets, 'counters only grow');
        // The writer adds packets, then bytes; snapshot() reads packets, then bytes. So the bytes read can lag the
        // packets read by at most the one packet in flight, but may run ahead by any number if this thread is
        // descheduled between the two reads (a loaded machine): only the lower bound is an invariant.
        assert.ok(snap.reflected.bytes >= snap.reflected.packets * 100 - 100, JSON.stringify(snap.reflected));
        lastPackets = snap.reflected.packets;
        snapshots++;
      }
      Atomics.store(new Int32Array(stopFlag), 0, 1);
      const written = await new Promise<number>((resolve) => worker.once('message', resolve));
      assert.ok(written > 1000 && snapshots > 5, `${written} records, ${snapshots} snapshots`);
      assert.equal(counters.snapshot().reflected.packets, written);
      const flows = t.snapshot(1_700_000_000_000);
      // 80 packets alternate directions over 40 conversations; the 64-slot table holds what its probe windows allow.
      assert.ok(flows.length > 0 && flows.length <= 40);
    } finally {
      await worker.terminate();
    }
  });

  it('remembers an allow decision per direction: Require counts only a direction allowed in the same epoch', () => {
    const t = new FlowTable({ capacity: 64 });
    let epoch = 1;
    const required = (b: Uint8Array, now: number): boolean => record(t, b, now, AllowDecision.Require, epoch);
    const remembered = (b: Uint8Array, now: number): boolean => record(t, b, now, AllowDecision.Remember, epoch);
    const packets = (): number => t.snapshot(T0 + 100)[0]?.packets ?? 0;
    assert.equal(required(tcp4(51000, 8080, ACK), T0), false, 'unknown flow');
    assert.equal(t.snapshot(T0 + 100).length, 0, 'nothing recorded under Require when undecided');
    assert.equal(remembered(tcp4(51000, 8080, ACK), T0), true);
    assert.equal(required(tcp4(51000, 8080, ACK), T0 + 1), true, 'the remembered direction');
    assert.equal(packets(), 2);
    assert.equal(required(tcp4(8080, 51000, ACK), T0 + 2), false, 'the other direction is its own');
    assert.equal(packets(), 2, 'not counted');
    assert.equal(remembered(tcp4(8080, 51000, ACK), T0 + 3), true);
    assert.equal(required(tcp4(8080, 51000, ACK), T0 + 4), true);
    assert.equal(required(tcp4(51000, 8080, ACK), T0 + 5), true, 'both directions now');
    assert.equal(required(tcp4(51000, 8080, SYN), T0 + 6), false, 'a SYN is always decided in full');
    assert.equal(record(t, tcp4(51000, 8080, ACK), T0 + 7), true, 'Ignore counts as before');
    assert.equal(packets(), 6);
    epoch = 2;
    assert.equal(required(tcp4(51000, 8080, ACK), T0 + 8), false, 'an earlier epoch\'s decision');
    assert.equal(required(tcp4(8080, 51000, ACK), T0 + 8), false, 'an earlier epoch\'s decision');
    assert.equal(remembered(tcp4(8080, 51000, ACK), T0 + 9), true);
    assert.equal(required(tcp4(51000, 8080, ACK), T0 + 10), false, 'remembering one direction anew drops the other');
    assert.equal(required(tcp4(8080, 51000, ACK), T0 + 10), true);
    epoch = MAX_DECISION_EPOCH;
    assert.equal(remembered(tcp4(8080, 51000, ACK), T0 + 11), true, 'the largest epoch fits the entry');
    assert.equal(required(tcp4(8080, 51000, ACK), T0 + 12), true);
    epoch = nextDecisionEpoch(epoch);
    assert.equal(epoch, 1, 'epochs start again at 1');
    assert.equal(required(tcp4(8080, 51000, ACK), T0 + 13), false);
    const [flow] = t.snapshot(T0 + 100);
    assert.deepEqual([flow.packets, flow.clientPort, flow.serverPort], [10, 51000, 8080]);
    // UDP, and equal ports (one direction).
    assert.equal(remembered(udp4(53, 53), T0), true);
    assert.equal(required(udp4(53, 53), T0 + 1), true);
  });

  it('a new flow in a decided entry starts undecided: after idle expiry, and a SYN reusing closed ports', () => {
    const t = new FlowTable({ capacity: 64 });
    const required = (b: Uint8Array, now: number): boolean => record(t, b, now, AllowDecision.Require);
    const remembered = (b: Uint8Array, now: number): boolean => record(t, b, now, AllowDecision.Remember);
    assert.equal(remembered(udp4(40000, 53), T0), true);
    assert.equal(required(udp4(40000, 53), T0 + FLOW_IDLE_MS.datagram + 1), false, 'idle: a new flow');
    assert.equal(remembered(tcp4(51000, 8080, SYN), T0), true);
    assert.equal(required(tcp4(51000, 8080, FIN_ACK), T0 + 1), true);
    assert.equal(remembered(tcp4(51000, 8080, SYN), T0 + 2), true, 'a new connection on the same ports');
    assert.equal(required(tcp4(8080, 51000, SYNACK), T0 + 3), false, 'its other direction is undecided');
    assert.equal(required(tcp4(51000, 8080, ACK), T0 + 4), true, 'the SYN\'s direction was remembered');
  });
});
