/**
 * What the ebpf backend's engine tests share to drive and watch UDP traffic in a namespace: the veth peer's receive
 * count (packets that took the user-space path), and the sender and counter of the udp-stream fixture
 * (test/packet-sources/ebpf/fixtures/udp-stream.ts), each run as a process in the namespace.
 */
import assert from 'node:assert/strict';
import { JsonLines, type NetNs } from './netns.ts';

const STREAM = 'test/packet-sources/ebpf/fixtures/udp-stream.ts';
const node = process.execPath;

/** Packets the device `peer` has received so far. */
export async function peerRxPackets(ns: NetNs, peer: string): Promise<number> {
  const [link] = await ns.ipJson<{ stats64: { rx: { packets: number } } }[]>(['-s', 'link', 'show', 'dev', peer]);
  return link.stats64.rx.packets;
}

/** Send `count` datagrams of `size` bytes to `port`, round robin over `hosts` (the fixture's `send`). */
export async function send(ns: NetNs, hosts: string[], port: number, count: number, size: number, pauseEvery = 50) {
  const args = [hosts.join(','), String(port), String(count), String(size), String(pauseEvery)];
  const r = await ns.run(node, ['--import', 'tsx', STREAM, 'send', ...args], { timeoutMs: 120_000 });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), { sent: count });
}

/** A UDP counter on `port`; `result()` stops it and returns what it received. */
export async function counter(
  ns: NetNs,
  port: number,
): Promise<{ result(): Promise<{ received: number; wrong: string[] }> }> {
  const lines = new JsonLines(ns.spawn(node, ['--import', 'tsx', STREAM, 'count', String(port)]));
  await lines.next((o) => o.ready === true);
  return {
    async result() {
      await new Promise((r) => setTimeout(r, 300)); // the last datagrams are in flight
      lines.child.kill('SIGTERM');
      const line = await lines.next((o) => typeof o.received === 'number');
      return line as unknown as { received: number; wrong: string[] };
    },
  };
}
