/** The intercept config's syntax layer: what users type becomes canonical entries, or a clear refusal. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  ConfigAdditions,
  MAX_REFLECT_ADDRESSES,
  addReflectAddresses,
  addShieldPorts,
  buildInterceptConfig,
  canonicalAddress,
  parseShieldSpec,
} from '../../src/config/intercept-config.ts';
import { ErrorCode, ExitCode, RetroflectError } from '../../src/errors.ts';

function refusal(fn: () => unknown): RetroflectError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof RetroflectError, String(err));
    return err;
  }
  assert.fail('expected a refusal');
}

test('addresses become canonical: IPv6 RFC 5952 lower case, brackets dropped, IPv4-mapped IPv6 as IPv4', () => {
  assert.equal(canonicalAddress('192.0.2.1'), '192.0.2.1');
  assert.equal(canonicalAddress(' 2001:DB8:0:0:0:0:0:1 '), '2001:db8::1');
  assert.equal(canonicalAddress('[2001:db8::1]'), '2001:db8::1');
  assert.equal(canonicalAddress('::ffff:198.51.100.7'), '198.51.100.7');
});

test('non-addresses are refused with E_INVALID_ADDRESS, rule "syntax", and a hint', () => {
  for (const bad of ['', 'localhost', '192.0.2', '192.0.2.256', '0x7f.1', '192.0.2.0/24', 'fe80::1%eth0', '2001:db8::1::2']) {
    const err = refusal(() => canonicalAddress(bad));
    assert.equal(err.code, ErrorCode.INVALID_ADDRESS, bad);
    assert.equal(err.details?.rule, 'syntax', bad);
    assert.ok(err.hint, bad);
    assert.equal(err.exitCode, ExitCode.INVALID_ARGUMENT);
  }
});

test('shield specs: a bare port means TCP and UDP; /tcp and /udp pick one; anything else is refused', () => {
  assert.deepEqual(parseShieldSpec('8080'), [{ port: 8080, protocol: 'tcp' }, { port: 8080, protocol: 'udp' }]);
  assert.deepEqual(parseShieldSpec(53), [{ port: 53, protocol: 'tcp' }, { port: 53, protocol: 'udp' }]);
  assert.deepEqual(parseShieldSpec('8443/TCP'), [{ port: 8443, protocol: 'tcp' }]);
  assert.deepEqual(parseShieldSpec('53/udp'), [{ port: 53, protocol: 'udp' }]);
  for (const bad of ['0', '65536', '-1', '80/sctp', 'http', '80/', '1e3', '']) {
    const err = refusal(() => parseShieldSpec(bad));
    assert.equal(err.code, ErrorCode.INVALID_PORT, bad);
  }
});

test('buildInterceptConfig removes duplicates, keeps order, and enforces the limits', () => {
  const cfg = buildInterceptConfig(['192.0.2.1', '2001:DB8::1', '192.0.2.1', '2001:db8::1'], ['8080', '8080/tcp', '53/udp']);
  assert.deepEqual(cfg.reflectAddresses, ['192.0.2.1', '2001:db8::1']);
  assert.deepEqual(cfg.shieldPorts, [{ port: 8080, protocol: 'tcp' }, { port: 8080, protocol: 'udp' }, { port: 53, protocol: 'udp' }]);
  const many = Array.from({ length: MAX_REFLECT_ADDRESSES + 1 }, (_, i) => `198.51.100.${i + 1}`);
  assert.equal(refusal(() => buildInterceptConfig(many, [])).code, ErrorCode.LIMIT_REACHED);
  assert.equal(buildInterceptConfig(many.slice(0, MAX_REFLECT_ADDRESSES), []).reflectAddresses.length, MAX_REFLECT_ADDRESSES);
});

test('adding entries: what is already there is not added again, new ones are appended in order and reported', () => {
  const cfg = buildInterceptConfig(['192.0.2.1'], ['80/tcp']);
  assert.deepEqual(addReflectAddresses(cfg, ['2001:db8::1', '192.0.2.1', '198.51.100.1', '2001:db8::1']), ['2001:db8::1', '198.51.100.1']);
  assert.deepEqual(cfg.reflectAddresses, ['192.0.2.1', '2001:db8::1', '198.51.100.1']);
  const given = { port: 53, protocol: 'udp' as const, extra: true };
  const added = addShieldPorts(cfg, [{ port: 80, protocol: 'tcp' }, given, { port: 80, protocol: 'udp' }, { port: 53, protocol: 'udp' }]);
  assert.deepEqual(added, [{ port: 53, protocol: 'udp' }, { port: 80, protocol: 'udp' }]);
  assert.deepEqual(cfg.shieldPorts, [{ port: 80, protocol: 'tcp' }, { port: 53, protocol: 'udp' }, { port: 80, protocol: 'udp' }]);
  given.port = 54; // the config holds its own copy (only port and protocol)
  assert.deepEqual(cfg.shieldPorts[1], { port: 53, protocol: 'udp' });
  const one = new ConfigAdditions(cfg);
  assert.equal(one.addAddress('192.0.2.1'), false);
  assert.equal(one.addAddress('192.0.2.2'), true);
  assert.equal(one.addAddress('192.0.2.2'), false);
  assert.equal(one.addShieldPort({ port: 80, protocol: 'tcp' }), false);
  assert.equal(cfg.reflectAddresses.at(-1), '192.0.2.2');
});
