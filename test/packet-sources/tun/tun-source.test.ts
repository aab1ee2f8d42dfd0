/**
 * TunPacketSource.receive against a real TUN device in a namespace: it waits at most its timeout, a wake() from the
 * main thread ends the wait early, and a packet ends it at once. The namespace gives new devices no IPv6 link-local
 * address (addr_gen_mode 1), so the kernel sends no router solicitations or MLD into the TUN to blur the result.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { NetNs } from '../../helpers/netns.ts';

let ns: NetNs;
before(async () => {
  ns = await NetNs.create('src');
  await ns.must('sysctl', ['-q', '-w', 'net.ipv6.conf.default.addr_gen_mode=1']);
  // A route out so 192.0.2.1 is routable before retroflect takes it (and the UDP send has a source address).
  await ns.must('ip', ['link', 'add', 'veth-s0', 'type', 'veth', 'peer', 'name', 'veth-s1']);
  await ns.must('ip', ['addr', 'add', '198.51.100.2/24', 'dev', 'veth-s0']);
  await ns.must('ip', ['link', 'set', 'veth-s0', 'up']);
  await ns.must('ip', ['link', 'set', 'veth-s1', 'up']);
});
after(async () => {
  await ns?.destroy();
});

test('receive: timeout, wake() and an arriving packet each end the wait as they should', { timeout: 60_000 }, async () => {
  const r = await ns.run(process.execPath, ['--import', 'tsx', 'test/packet-sources/tun/fixtures/wake.ts'], { timeoutMs: 40_000 });
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as Record<'idle' | 'wake' | 'packet', { count: number; ms: number }>;
  assert.equal(out.idle.count, 0);
  assert.ok(out.idle.ms >= 350, `idle receive returned after ${out.idle.ms} ms, before its 400 ms timeout`);
  assert.equal(out.wake.count, 0);
  assert.ok(out.wake.ms >= 250 && out.wake.ms < 5000, `woken receive took ${out.wake.ms} ms (wake at 300 ms, timeout 10 s)`);
  assert.equal(out.packet.count, 1);
  assert.ok(out.packet.ms < 5000, `receive with a packet took ${out.packet.ms} ms (timeout 10 s)`);
});
