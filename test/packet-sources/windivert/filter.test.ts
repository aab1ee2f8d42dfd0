/**
 * The WinDivert filter built from an intercept config: exact strings (WinDivert compiles exactly this), and every
 * filter we can build compiles on the test double, whose compiler refuses what WinDivert's refuses.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildInterceptConfig, emptyInterceptConfig } from '../../../src/config/intercept-config.ts';
import { buildWinDivertFilter, MATCH_NOTHING, portRanges, portTestBudget } from '../../../src/packet-sources/windivert/filter.ts';
import { WINDIVERT_FILTER_MAX_TESTS } from '../../../src/packet-sources/windivert/limits.ts';
import { doubleLastOpenReason } from './double-controls.ts';
import { loadDouble } from '../../helpers/windivert-double.ts';

const { api, double } = loadDouble();

/** Open `filter` on the double (as WinDivertOpen would compile it) and close it again; returns the refusal or ''. */
function compile(filter: string): string {
  const h = api.open(filter, 0, 0, 0n);
  if (h === -1) return `${api.lastError()}: ${doubleLastOpenReason(double)}`;
  api.close(h);
  return '';
}

test('empty config matches nothing', () => {
  assert.equal(buildWinDivertFilter(emptyInterceptConfig()), MATCH_NOTHING);
  assert.equal(MATCH_NOTHING, 'false');
  assert.equal(compile(MATCH_NOTHING), '');
});

test('IPv4 only: every outbound packet to the address (no protocol test), and inbound packets forged from it', () => {
  const f = buildWinDivertFilter(buildInterceptConfig(['192.0.2.1'], []));
  assert.equal(f, '!loopback and ((outbound and (ip.DstAddr == 192.0.2.1)) or (inbound and (ip.SrcAddr == 192.0.2.1)))');
  assert.equal(compile(f), '');
});

test('IPv4 and IPv6 mixed, in config order, IPv6 canonical', () => {
  assert.equal(
    buildWinDivertFilter(buildInterceptConfig(['2001:DB8:0:0::1', '198.51.100.7', '[2001:db8::a]'], [])),
    '!loopback and ((outbound and (ipv6.DstAddr == 2001:db8::1 or ip.DstAddr == 198.51.100.7 or ipv6.DstAddr == 2001:db8::a))' +
      ' or (inbound and (ipv6.SrcAddr == 2001:db8::1 or ip.SrcAddr == 198.51.100.7 or ipv6.SrcAddr == 2001:db8::a)))',
  );
});

test('IPv4-mapped IPv6 is filtered as IPv4 (what goes on the wire)', () => {
  assert.match(buildWinDivertFilter(buildInterceptConfig(['::ffff:203.0.113.5'], [])), /\(ip\.DstAddr == 203\.0\.113\.5\)/);
});

test('shield ports only: TCP and UDP tests on the inbound side', () => {
  assert.equal(
    buildWinDivertFilter(buildInterceptConfig([], ['8080/tcp', '53/udp', '443/tcp'])),
    '!loopback and ((inbound and (tcp.DstPort == 443 or tcp.DstPort == 8080 or udp.DstPort == 53)))',
  );
  assert.equal(buildWinDivertFilter(buildInterceptConfig([], ['53/udp'])), '!loopback and ((inbound and (udp.DstPort == 53)))');
});

test('reflection, forged sources and shielding combined', () => {
  const f = buildWinDivertFilter(buildInterceptConfig(['192.0.2.1', '2001:db8::1'], ['8080']));
  assert.equal(
    f,
    '!loopback and ((outbound and (ip.DstAddr == 192.0.2.1 or ipv6.DstAddr == 2001:db8::1))' +
      ' or (inbound and (ip.SrcAddr == 192.0.2.1 or ipv6.SrcAddr == 2001:db8::1 or tcp.DstPort == 8080 or udp.DstPort == 8080)))',
  );
  assert.equal(compile(f), '');
});

test('consecutive ports become ranges', () => {
  const f = buildWinDivertFilter(buildInterceptConfig([], ['8080/tcp', '8081/tcp', '8082/tcp', '9000/tcp']));
  assert.equal(f, '!loopback and ((inbound and ((tcp.DstPort >= 8080 and tcp.DstPort <= 8082) or tcp.DstPort == 9000)))');
});

test('the largest config (64 addresses, 1024 scattered shield entries) compiles within WinDivert limits and covers every port', () => {
  const ports = Array.from({ length: 512 }, (_, i) => 1 + i * 127);
  const addrs = Array.from({ length: 64 }, (_, i) => (i % 2 ? `2001:db8::${i.toString(16)}` : `198.51.100.${i}`));
  const budget = portTestBudget(64, 2);
  const ranges = portRanges(ports, budget);
  const cost = ranges.reduce((s, r) => s + (r.from === r.to ? 1 : 2), 0);
  assert.ok(cost <= budget, `cost ${cost} > budget ${budget}`);
  for (const p of ports) assert.ok(ranges.some((r) => r.from <= p && p <= r.to), `port ${p} covered`);
  for (let i = 1; i < ranges.length; i++) assert.ok(ranges[i].from > ranges[i - 1].to, 'sorted, disjoint');
  const filter = buildWinDivertFilter(buildInterceptConfig(addrs, ports.map(String))); // 512 ports × tcp+udp = 1024 entries
  assert.ok(filter.includes('ipv6.DstAddr == 2001:db8::3f') && filter.includes('ipv6.SrcAddr == 2001:db8::3f'));
  const tests = filter.match(/==|>=|<=|!loopback|\boutbound\b|\binbound\b/g)!.length;
  assert.ok(tests <= WINDIVERT_FILTER_MAX_TESTS, `${tests} tests`);
  assert.equal(compile(filter), '', 'the double (WinDivert limits: 256 tests, 1280 tokens) compiles it');
});

test('merging joins the closest neighbours first', () => {
  assert.deepEqual(portRanges([10, 20, 21, 100], 3), [{ from: 10, to: 21 }, { from: 100, to: 100 }]);
  assert.deepEqual(portRanges([5, 3, 4, 5], 10), [{ from: 3, to: 5 }]);
});
