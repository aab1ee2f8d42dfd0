/**
 * Reflect-address validation: every rule with injected host facts (exact, fast), then the same rules against the
 * real interfaces and routes of namespaces created here.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ErrorCode, ExitCode, RetroflectError } from '../../src/errors.ts';
import {
  checkReflectAddress,
  suggestReflectAddress,
  validateReflectAddress,
  type HostFacts,
  type InterfaceAddress,
} from '../../src/platform/validate-address.ts';
import type { RouteFacts } from '../../src/platform/route-facts.ts';
import { createTopology, type Topology } from '../helpers/netns.ts';

/** A host like a typical workstation: loopback, one LAN subnet per family, link-local, and default routes. */
function facts(opts: { routes?: boolean; interfaces?: InterfaceAddress[]; route?: (a: string) => RouteFacts | null } = {}): HostFacts & { lookups: string[] } {
  const lookups: string[] = [];
  return {
    lookups,
    interfaces: () =>
      opts.interfaces ?? [
        { interface: 'lo', address: '127.0.0.1', prefixLength: 8 },
        { interface: 'lo', address: '::1', prefixLength: 128 },
        { interface: 'eth0', address: '10.0.0.5', prefixLength: 24 },
        { interface: 'eth0', address: '2001:db8:1::2', prefixLength: 64 },
        { interface: 'eth0', address: 'fe80::1', prefixLength: 64 },
      ],
    route: async (a) => {
      lookups.push(a);
      if (opts.route) return opts.route(a);
      return opts.routes === false ? null : { type: 'unicast', device: 'eth0', gateway: a.includes(':') ? '2001:db8:1::1' : '10.0.0.1', source: null };
    },
  };
}

async function refusedRule(address: string, host: HostFacts): Promise<RetroflectError> {
  const err = await validateReflectAddress(address, host).then(
    () => assert.fail(`${address} was accepted`),
    (e: unknown) => e,
  );
  assert.ok(err instanceof RetroflectError);
  assert.equal(err.code, ErrorCode.INVALID_ADDRESS);
  assert.equal(err.exitCode, ExitCode.INVALID_ARGUMENT);
  assert.ok(err.hint && err.hint.length > 10, 'every refusal says what to do');
  return err;
}

describe('validateReflectAddress with injected host facts', () => {
  const cases: [string, string, RegExp][] = [
    ['not-an-ip', 'syntax', /not an IP address/],
    ['0.0.0.0', 'unspecified', /unspecified/],
    ['::', 'unspecified', /unspecified/],
    ['127.0.0.5', 'loopback', /loopback/],
    ['::1', 'loopback', /loopback/],
    ['224.0.0.251', 'multicast', /multicast/],
    ['ff02::1', 'multicast', /multicast/],
    ['255.255.255.255', 'broadcast', /broadcast/],
    ['169.254.3.3', 'link-local', /link-local/],
    ['fe80::5', 'link-local', /link-local/],
    ['10.0.0.5', 'local-address', /address of this host \(interface eth0\)/],
    ['2001:db8:1::2', 'local-address', /address of this host/],
    ['10.0.0.77', 'local-subnet', /inside 10\.0\.0\.0\/24, a subnet of interface eth0/],
    ['10.0.0.255', 'local-subnet', /inside 10\.0\.0\.0\/24/],
    ['2001:db8:1::77', 'local-subnet', /inside 2001:db8:1::\/64/],
  ];
  for (const [address, rule, message] of cases) {
    test(`${address} is refused by rule ${rule}`, async () => {
      const host = facts();
      const err = await refusedRule(address, host);
      assert.equal(err.details?.rule, rule);
      assert.match(err.message, message);
      if (rule !== 'syntax') assert.equal(err.details?.address, address);
      assert.ok(!host.lookups.includes(err.details?.address as string), 'no route lookup for an address refused on its own');
      if (rule !== 'syntax') {
        // The hint names a concrete address of the same family that passes every rule here (the first candidate).
        const usable = address.includes(':') ? '2001:db8::1' : '192.0.2.1';
        assert.equal(err.details?.suggestion, usable);
        assert.match(err.hint!, new RegExp(`^Use ${usable.replaceAll('.', '\\.')} instead`));
        assert.deepEqual(host.lookups, [usable], 'only the suggestion is looked up');
      }
    });
  }

  test('no route: refused with rule no-route and a hint naming the family', async () => {
    const err = await refusedRule('192.0.2.1', facts({ routes: false }));
    assert.equal(err.details?.rule, 'no-route');
    assert.match(err.message, /no route to 192\.0\.2\.1/);
    assert.match(err.hint!, /IPv4/);
    const err6 = await refusedRule('2001:db8::1', facts({ routes: false }));
    assert.match(err6.hint!, /IPv6/);
  });

  test('an address the kernel routes as local is refused as local-address', async () => {
    const err = await refusedRule('203.0.113.9', facts({ route: () => ({ type: 'local', device: 'lo', gateway: null, source: null }) }));
    assert.equal(err.details?.rule, 'local-address');
  });

  test('documentation addresses pass without warning; canonical form is returned', async () => {
    const host = facts();
    assert.deepEqual(await validateReflectAddress('192.0.2.1', host), {
      address: '192.0.2.1',
      warnings: [],
      route: { type: 'unicast', device: 'eth0', gateway: '10.0.0.1', source: null },
    });
    assert.equal((await validateReflectAddress('[2001:DB8:0::1]', host)).address, '2001:db8::1');
    assert.deepEqual(host.lookups, ['192.0.2.1', '2001:db8::1']);
  });

  test('a public address passes with a warning that it shadows a real host', async () => {
    const r = await validateReflectAddress('8.8.8.8', facts());
    assert.equal(r.warnings.length, 1);
    assert.match(r.warnings[0], /public Internet address.*cannot reach the real host at 8\.8\.8\.8/);
    assert.equal((await validateReflectAddress('2606:4700::1111', facts())).warnings.length, 1);
  });

  test('checkReflectAddress reports every failed rule', async () => {
    const r = await checkReflectAddress('127.0.0.1', facts());
    assert.deepEqual(r.refusals.map((e) => e.details?.rule), ['loopback', 'local-address']);
  });

  test('suggestion skips candidates inside local subnets and respects exclude', async () => {
    const host = facts({ interfaces: [{ interface: 'eth0', address: '192.0.2.2', prefixLength: 24 }] });
    assert.equal((await suggestReflectAddress(4, host))?.address, '198.51.100.1');
    assert.equal((await suggestReflectAddress(4, host, ['198.51.100.1']))?.address, '203.0.113.1');
    assert.equal((await suggestReflectAddress(6, host))?.address, '2001:db8::1');
    assert.equal(await suggestReflectAddress(4, facts({ routes: false })), null);
  });
});

describe('validateReflectAddress against real namespaces', { timeout: 60_000 }, () => {
  let t: Topology;
  const FIXTURE = 'test/platform/fixtures/validate.ts';
  type Result = { rules: string[]; codes: string[]; warnings: string[]; device: string | null; messages: string[] };
  type Output = { results: Record<string, Result>; suggest4: { address: string } | null; suggest6: { address: string } | null };

  before(async () => {
    t = await createTopology('val');
    // A /32 on loopback: a local address that is not on any subnet.
    await t.a.must('ip', ['addr', 'add', '203.0.113.9/32', 'dev', 'lo']);
    // Routes that exist but lead nowhere: each must count as "no route".
    await t.a.must('ip', ['route', 'add', 'blackhole', '203.0.113.128/25']);
    await t.a.must('ip', ['route', 'add', 'unreachable', '192.0.2.128/25']);
    await t.a.must('ip', ['-6', 'route', 'add', 'prohibit', '2001:db8:5::/48']);
  });
  after(async () => {
    await t?.destroy();
  });

  test('host "a" (default routes via the veth peer)', async () => {
    const inputs = ['198.51.100.2', '198.51.100.77', '2001:db8:1::77', '203.0.113.9', '192.0.2.1', '2001:db8::1', '127.0.0.1', 'fe80::1', '203.0.113.200', '192.0.2.200', '2001:db8:5::1'];
    const out = JSON.parse(await t.a.must(process.execPath, ['--import', 'tsx', FIXTURE, ...inputs])) as Output;
    const rules = Object.fromEntries(Object.entries(out.results).map(([k, v]) => [k, v.rules[0] ?? 'ok']));
    assert.deepEqual(rules, {
      '198.51.100.2': 'local-address',
      '198.51.100.77': 'local-subnet',
      '2001:db8:1::77': 'local-subnet',
      '203.0.113.9': 'local-address',
      '192.0.2.1': 'ok',
      '2001:db8::1': 'ok',
      '127.0.0.1': 'loopback',
      'fe80::1': 'link-local',
      '203.0.113.200': 'no-route',
      '192.0.2.200': 'no-route',
      '2001:db8:5::1': 'no-route',
    });
    assert.match(out.results['198.51.100.77'].messages[0], /198\.51\.100\.0\/24, a subnet of interface veth-a/);
    assert.equal(out.results['192.0.2.1'].device, t.aIf);
    assert.equal(out.results['2001:db8::1'].device, t.aIf);
    assert.deepEqual(out.results['192.0.2.1'].warnings, []);
    assert.equal(out.suggest4?.address, '192.0.2.1');
    assert.equal(out.suggest6?.address, '2001:db8::1');
  });

  test('host "b" (no default route): off-link addresses are refused with no-route', async () => {
    const out = JSON.parse(await t.b.must(process.execPath, ['--import', 'tsx', FIXTURE, '192.0.2.1', '2001:db8::1', '198.51.100.2'])) as Output;
    assert.deepEqual(out.results['192.0.2.1'].rules, ['no-route']);
    assert.deepEqual(out.results['2001:db8::1'].rules, ['no-route']);
    assert.deepEqual(out.results['198.51.100.2'].rules, ['local-subnet']);
    assert.equal(out.suggest4, null);
    assert.equal(out.suggest6, null);
  });
});
