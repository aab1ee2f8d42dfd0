/**
 * The WinDivert filter built from an intercept config: exact strings (WinDivert compiles exactly this), and every
 * filter we can build compiles on the test double, whose compiler refuses what WinDivert's refuses.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildInterceptConfig, emptyInterceptConfig } from '../../../src/config/intercept-config.ts';
import { buildFragmentDropFilter, buildWinDivertFilter, filterCost, MATCH_NOTHING, portBudget, portRanges } from '../../../src/packet-sources/windivert/filter.ts';
import { WINDIVERT_FILTER_MAX_TESTS, WINDIVERT_FILTER_MAX_TOKENS } from '../../../src/packet-sources/windivert/limits.ts';
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
    '!loopback and ((inbound and (ip.Protocol == 51 or tcp.DstPort == 443 or tcp.DstPort == 8080 or udp.DstPort == 53)))',
  );
  assert.equal(buildWinDivertFilter(buildInterceptConfig([], ['53/udp'])), '!loopback and ((inbound and (ip.Protocol == 51 or udp.DstPort == 53)))');
});

test('reflection, forged sources and shielding combined', () => {
  const f = buildWinDivertFilter(buildInterceptConfig(['192.0.2.1', '2001:db8::1'], ['8080']));
  assert.equal(
    f,
    '!loopback and ((outbound and (ip.DstAddr == 192.0.2.1 or ipv6.DstAddr == 2001:db8::1))' +
      ' or (inbound and (ip.SrcAddr == 192.0.2.1 or ipv6.SrcAddr == 2001:db8::1 or ip.Protocol == 51 or tcp.DstPort == 8080 or udp.DstPort == 8080)))',
  );
  assert.equal(compile(f), '');
});

test('consecutive ports become ranges', () => {
  const f = buildWinDivertFilter(buildInterceptConfig([], ['8080/tcp', '8081/tcp', '8082/tcp', '9000/tcp']));
  assert.equal(f, '!loopback and ((inbound and (ip.Protocol == 51 or (tcp.DstPort >= 8080 and tcp.DstPort <= 8082) or tcp.DstPort == 9000)))');
});

test('the largest config (64 addresses, 1024 scattered shield entries) compiles within WinDivert limits and covers every port', () => {
  const ports = Array.from({ length: 512 }, (_, i) => 1 + i * 127);
  const addrs = Array.from({ length: 64 }, (_, i) => (i % 2 ? `2001:db8::${i.toString(16)}` : `198.51.100.${i}`));
  const cfg = buildInterceptConfig(addrs, ports.map(String)); // 512 ports × tcp+udp = 1024 entries
  for (const filter of [buildWinDivertFilter(cfg), buildFragmentDropFilter(cfg)]) {
    assert.ok(filter.includes('ipv6.SrcAddr == 2001:db8::3f'));
    const cost = filterCost(filter);
    assert.ok(cost.tests <= WINDIVERT_FILTER_MAX_TESTS, `${cost.tests} tests`);
    assert.ok(cost.tokens <= WINDIVERT_FILTER_MAX_TOKENS, `${cost.tokens} tokens`);
    assert.equal(compile(filter), '', 'the double (WinDivert limits: 255 tests, 1,277 tokens) compiles it');
    const covered = [...filter.matchAll(/tcp\.DstPort == (\d+)|\(tcp\.DstPort >= (\d+) and tcp\.DstPort <= (\d+)\)/g)].map((m) =>
      m[1] ? { from: Number(m[1]), to: Number(m[1]) } : { from: Number(m[2]), to: Number(m[3]) },
    );
    for (const p of ports) assert.ok(covered.some((r) => r.from <= p && p <= r.to), `port ${p} covered`);
  }
});

test('the token budget holds at the edge: filters whose ports are all ranges stay within 1,277 tokens (issue 19 item 22)', () => {
  // Pairs of consecutive ports, far apart: every item is a range (2 tests, 9 tokens + `or`), the most tokens per test.
  const ports = Array.from({ length: 256 }, (_, i) => [String(1 + i * 251), String(2 + i * 251)]).flat(); // × tcp+udp = 1024 entries
  for (const addrs of [[], ['2001:db8::1'], Array.from({ length: 64 }, (_, i) => `198.51.100.${i}`)]) {
    for (const filter of [buildWinDivertFilter(buildInterceptConfig(addrs, ports)), buildFragmentDropFilter(buildInterceptConfig(addrs, ports))]) {
      const cost = filterCost(filter);
      assert.ok(cost.tokens <= WINDIVERT_FILTER_MAX_TOKENS && cost.tests <= WINDIVERT_FILTER_MAX_TESTS, JSON.stringify(cost));
      assert.ok(cost.tokens > WINDIVERT_FILTER_MAX_TOKENS - 60 || cost.tests > WINDIVERT_FILTER_MAX_TESTS - 20, `near a limit: ${JSON.stringify(cost)}`);
      assert.equal(compile(filter), '');
    }
  }
  // When tokens are the tighter limit (a fixed part of 700 tokens in 10 tests), they decide the merging: the ports
  // fill the filter up to the token limit, not the test limit.
  const fixed = { tests: 10, tokens: 700 };
  const budget = portBudget(fixed, 1);
  const ranges = portRanges(ports.map(Number), budget);
  const used = ranges.reduce((n, r) => ({ tests: n.tests + (r.from === r.to ? 1 : 2), tokens: n.tokens + (r.from === r.to ? 4 : 10) }), { tests: 0, tokens: 0 });
  assert.ok(fixed.tokens + used.tokens <= WINDIVERT_FILTER_MAX_TOKENS, `${fixed.tokens + used.tokens} tokens`);
  assert.ok(fixed.tokens + used.tokens >= WINDIVERT_FILTER_MAX_TOKENS - 30, 'filled to the edge');
  assert.ok(fixed.tests + used.tests < WINDIVERT_FILTER_MAX_TESTS - 50, 'while tests were left over');
});

test('fragment-drop filter: IPv6 fragments only, forged sources unless another driver injected them, shield ports', () => {
  assert.equal(buildFragmentDropFilter(emptyInterceptConfig()), MATCH_NOTHING);
  assert.equal(buildFragmentDropFilter(buildInterceptConfig(['192.0.2.1'], [])), MATCH_NOTHING, 'IPv4 has no atomic fragments');
  const f = buildFragmentDropFilter(buildInterceptConfig(['192.0.2.1', '2001:db8::1'], ['8080/tcp']));
  assert.equal(f, '!loopback and inbound and ipv6 and fragment and ((!impostor and (ipv6.SrcAddr == 2001:db8::1)) or tcp.DstPort == 8080)');
  assert.equal(compile(f), '');
});

test('merging joins the closest neighbours first', () => {
  assert.deepEqual(portRanges([10, 20, 21, 100], { tests: 3, tokens: 100 }), [{ from: 10, to: 21 }, { from: 100, to: 100 }]);
  assert.deepEqual(portRanges([5, 3, 4, 5], { tests: 10, tokens: 100 }), [{ from: 3, to: 5 }]);
  assert.deepEqual(portRanges([10, 20, 21, 100], { tests: 100, tokens: 14 }), [{ from: 10, to: 21 }, { from: 100, to: 100 }], 'tokens merge too');
});
