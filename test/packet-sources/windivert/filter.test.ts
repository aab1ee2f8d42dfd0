/** The WinDivert filter built from an intercept config (exact strings, since WinDivert compiles exactly this). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildInterceptConfig, emptyInterceptConfig } from '../../../src/config/intercept-config.ts';
import { buildWinDivertFilter, MATCH_NOTHING, PORT_TEST_BUDGET, portRanges } from '../../../src/packet-sources/windivert/filter.ts';

test('empty config matches nothing', () => {
  assert.equal(buildWinDivertFilter(emptyInterceptConfig()), MATCH_NOTHING);
  assert.equal(MATCH_NOTHING, 'false');
});

test('IPv4 only', () => {
  assert.equal(
    buildWinDivertFilter(buildInterceptConfig(['192.0.2.1'], [])),
    'outbound and !loopback and (ip.DstAddr == 192.0.2.1) and (tcp or udp or icmp or icmpv6)',
  );
});

test('IPv4 and IPv6 mixed, in config order, IPv6 canonical', () => {
  assert.equal(
    buildWinDivertFilter(buildInterceptConfig(['2001:DB8:0:0::1', '198.51.100.7', '[2001:db8::a]'], [])),
    'outbound and !loopback and (ipv6.DstAddr == 2001:db8::1 or ip.DstAddr == 198.51.100.7 or ipv6.DstAddr == 2001:db8::a) and (tcp or udp or icmp or icmpv6)',
  );
});

test('IPv4-mapped IPv6 is filtered as IPv4 (what goes on the wire)', () => {
  assert.match(buildWinDivertFilter(buildInterceptConfig(['::ffff:203.0.113.5'], [])), /\(ip\.DstAddr == 203\.0\.113\.5\)/);
});

test('shield ports only: TCP and UDP groups', () => {
  assert.equal(
    buildWinDivertFilter(buildInterceptConfig([], ['8080/tcp', '53/udp', '443/tcp'])),
    'inbound and !loopback and ((tcp.DstPort == 443 or tcp.DstPort == 8080) or (udp.DstPort == 53))',
  );
  assert.equal(buildWinDivertFilter(buildInterceptConfig([], ['53/udp'])), 'inbound and !loopback and ((udp.DstPort == 53))');
});

test('reflection and shielding combined with or', () => {
  assert.equal(
    buildWinDivertFilter(buildInterceptConfig(['192.0.2.1', '2001:db8::1'], ['8080'])),
    '(outbound and !loopback and (ip.DstAddr == 192.0.2.1 or ipv6.DstAddr == 2001:db8::1) and (tcp or udp or icmp or icmpv6))' +
      ' or (inbound and !loopback and ((tcp.DstPort == 8080) or (udp.DstPort == 8080)))',
  );
});

test('consecutive ports become ranges', () => {
  const f = buildWinDivertFilter(buildInterceptConfig([], ['8080/tcp', '8081/tcp', '8082/tcp', '9000/tcp']));
  assert.equal(f, 'inbound and !loopback and (((tcp.DstPort >= 8080 and tcp.DstPort <= 8082) or tcp.DstPort == 9000))');
});

test('1024 scattered shield ports stay within the test budget and still cover every port', () => {
  const ports = Array.from({ length: 1024 }, (_, i) => 1 + i * 61);
  const ranges = portRanges(ports, PORT_TEST_BUDGET);
  const cost = ranges.reduce((s, r) => s + (r.from === r.to ? 1 : 2), 0);
  assert.ok(cost <= PORT_TEST_BUDGET, `cost ${cost}`);
  for (const p of ports) assert.ok(ranges.some((r) => r.from <= p && p <= r.to), `port ${p} covered`);
  for (let i = 1; i < ranges.length; i++) assert.ok(ranges[i].from > ranges[i - 1].to, 'sorted, disjoint');
  // The longest possible filter (64 addresses, 1024 shield entries) stays under WinDivert's 1280 tokens.
  const addrs = Array.from({ length: 64 }, (_, i) => (i % 2 ? `2001:db8::${i.toString(16)}` : `198.51.100.${i}`));
  const half = ports.slice(0, 512).map(String); // 512 ports × tcp+udp = the 1024-entry limit
  const filter = buildWinDivertFilter(buildInterceptConfig(addrs, half));
  assert.ok(filter.includes('ipv6.DstAddr == 2001:db8::3f'));
  const tokens = filter.match(/[()]|==|>=|<=|[^\s()]+/g)!.length;
  assert.ok(tokens < 1280, `tokens ${tokens}`);
});

test('merging joins the closest neighbours first', () => {
  assert.deepEqual(portRanges([10, 20, 21, 100], 3), [{ from: 10, to: 21 }, { from: 100, to: 100 }]);
  assert.deepEqual(portRanges([5, 3, 4, 5], 10), [{ from: 3, to: 5 }]);
});
