/**
 * The Linux backend's pure parts and its refusals: the dry-run plan, the nft scripts for live changes, bad device
 * names, misuse before start, and the privilege check. Nothing here changes any network state (the plan is only
 * text; the one device test runs in its own namespace).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import type { InterceptConfig } from '../../../src/config/intercept-config.ts';
import { TunHostBackend } from '../../../src/packet-sources/tun/host.ts';
import { ErrorCode, RetroflectError } from '../../../src/errors.ts';
import { shieldTableScript, shieldUpdateScript } from '../../../src/platform/linux/nftables.ts';
import { isAdministrator } from '../../../src/platform/privileges.ts';
import { NetNs } from '../../helpers/netns.ts';

const cfg: InterceptConfig = {
  reflectAddresses: ['192.0.2.1', '2001:db8::1'],
  shieldPorts: [
    { port: 8080, protocol: 'tcp' },
    { port: 53, protocol: 'udp' },
    { port: 8443, protocol: 'tcp' },
  ],
};

describe('TunHostBackend.plan (dry run)', () => {
  test('lists the exact commands start() runs, in order', () => {
    const steps = new TunHostBackend({ deviceName: 'rflct7', variant: 'vnetOffload' }).plan(cfg);
    const details = steps.map((s) => s.detail);
    assert.match(details[0], /^nft -f - <<EOF\ntable inet retroflect\ndelete table inet retroflect\nEOF$/);
    assert.equal(details[1], 'open /dev/net/tun; ioctl TUNSETIFF rflct7 (IFF_TUN | IFF_NO_PI | IFF_VNET_HDR)');
    assert.equal(details[2], 'ioctl TUNSETOFFLOAD TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6');
    assert.equal(details[3], 'netlink socket (NETLINK_NETFILTER); NFLOG group: the first free from 21062, listened to only while a capture runs');
    assert.equal(details[4], 'ip link set dev rflct7 mtu 1500 up');
    assert.equal(details[5], 'write 0 to /proc/sys/net/ipv6/conf/rflct7/disable_ipv6');
    assert.equal(details[6], 'ip -4 route replace 192.0.2.1/32 dev rflct7');
    assert.equal(details[7], 'ip -6 route replace 2001:db8::1/128 dev rflct7');
    assert.match(details[8], /set shield_tcp \{ type inet_service; counter; elements = \{ 8080, 8443 \}; \}/);
    assert.match(details[8], /set shield_udp \{ type inet_service; counter; elements = \{ 53 \}; \}/);
    assert.match(details[8], /iifname "rflct7" accept/);
    assert.match(details[8], /set reflect_v4 \{ type ipv4_addr; elements = \{ 192\.0\.2\.1 \}; \}/);
    // An IPv6 source ::ffff:192.0.2.1 is 192.0.2.1 to a dual-stack socket: in the IPv6 set too.
    assert.match(details[8], /set reflect_v6 \{ type ipv6_addr; elements = \{ 2001:db8::1, ::ffff:192\.0\.2\.1 \}; \}/);
    // Forwarded packets never reach the device (only this host's own are reflected), and forged sources are not forwarded.
    assert.match(details[8], /chain forward \{\n {4}type filter hook forward priority filter - 10; policy accept;\n {4}oifname "rflct7" counter name "forwarded" drop\n {4}iifname "rflct7" accept\n {4}ip saddr @reflect_v4 counter name "forged_source" log prefix "retroflect forged" group 21062 drop\n {4}ip6 saddr @reflect_v6 counter name "forged_source" log prefix "retroflect forged" group 21062 drop\n/);
    // Forged reflect sources are dropped on every interface but the TUN device (whose accept comes first), loopback too.
    // Input: our device's packets, then the allow lists' refusals from R on loopback (TCP reset, ICMP unreachable),
    // then forged sources dropped, then loopback.
    assert.match(details[8], new RegExp([
      'iifname "rflct7" accept',
      'iif lo ip saddr @reflect_v4 tcp flags & rst == rst accept',
      'iif lo ip6 saddr @reflect_v6 tcp flags & rst == rst accept',
      'iif lo ip saddr @reflect_v4 icmp type destination-unreachable accept',
      'iif lo ip6 saddr @reflect_v6 icmpv6 type destination-unreachable accept',
      'ip saddr @reflect_v4 counter name "forged_source" log prefix "retroflect forged" group 21062 drop',
      'ip6 saddr @reflect_v6 counter name "forged_source" log prefix "retroflect forged" group 21062 drop',
      'iif lo accept',
    ].map((l) => l.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('\n {4}') + '\n'));
    assert.equal(steps.length, 9);
  });

  test('without vnet headers there is no offload step and the MTU follows the variant', () => {
    const details = new TunHostBackend({ variant: 'mtu65535' }).plan({ reflectAddresses: [], shieldPorts: [] }).map((s) => s.detail);
    assert.ok(!details.some((d) => d.includes('TUNSETOFFLOAD')));
    assert.ok(details.includes('ip link set dev rflct0 mtu 65535 up'));
    assert.match(details.at(-1)!, /set shield_tcp \{ type inet_service; counter; \}/);
  });
});

describe('nft scripts for live changes', () => {
  test('only the difference is added and removed, per protocol and address family', () => {
    const next: InterceptConfig = { reflectAddresses: ['2001:db8::1', '192.0.2.2', '203.0.113.9'], shieldPorts: [{ port: 8080, protocol: 'tcp' }, { port: 53, protocol: 'tcp' }, { port: 5353, protocol: 'udp' }] };
    assert.equal(
      shieldUpdateScript(cfg, next),
      [
        'delete element inet retroflect reflect_v4 { 192.0.2.1 }',
        'add element inet retroflect reflect_v4 { 192.0.2.2, 203.0.113.9 }',
        'delete element inet retroflect reflect_v6 { ::ffff:192.0.2.1 }',
        'add element inet retroflect reflect_v6 { ::ffff:192.0.2.2, ::ffff:203.0.113.9 }',
        'delete element inet retroflect shield_tcp { 8443 }',
        'add element inet retroflect shield_tcp { 53 }',
        'delete element inet retroflect shield_udp { 53 }',
        'add element inet retroflect shield_udp { 5353 }',
        '',
      ].join('\n'),
    );
    assert.equal(shieldUpdateScript(cfg, cfg), '');
  });

  test('the table script declares then deletes the table first, so a leftover never blocks a start', () => {
    assert.match(shieldTableScript(cfg, 'rflct0', null), /^table inet retroflect\ndelete table inet retroflect\ntable inet retroflect \{/);
  });

  test('with an NFLOG group every drop rule logs to it with its verdict prefix; without one, none logs', () => {
    const drops = (script: string) => script.split('\n').filter((l) => / drop$/.test(l));
    const logged = drops(shieldTableScript(cfg, 'rflct0', 21062));
    assert.equal(logged.length, 7);
    assert.equal(logged.filter((l) => l.includes('log prefix "retroflect forged" group 21062 drop')).length, 4);
    assert.equal(logged.filter((l) => l.includes('log prefix "retroflect shield" group 21062 drop')).length, 2);
    for (const l of drops(shieldTableScript(cfg, 'rflct0', null))) assert.doesNotMatch(l, /log/);
    // The forward hook's drop of packets routed into the device is counted only: a capture never asked for those.
    assert.equal(logged.filter((l) => !l.includes(' log ')).length, 1);
  });
});

describe('refusals', () => {
  for (const name of ['', 'this-name-is-too-long', 'bad name', 'x;rm', 'a/b']) {
    test(`device name ${JSON.stringify(name)} is refused before anything is done`, () => {
      assert.throws(
        () => new TunHostBackend({ deviceName: name }),
        (err: unknown) => err instanceof RetroflectError && err.code === ErrorCode.BACKEND_FAILED && /not a valid TUN device name/.test(err.message) && !!err.hint,
      );
    });
  }

  test('apply before start is an internal error, not a silent no-op', async () => {
    await assert.rejects(new TunHostBackend().apply(cfg, cfg), (err: unknown) => err instanceof RetroflectError && err.code === ErrorCode.INTERNAL);
  });
});

describe('start failure in a namespace leaves nothing behind', { timeout: 30_000 }, () => {
  let ns: NetNs;
  before(async () => {
    ns = await NetNs.create('lb');
  });
  after(async () => {
    await ns?.destroy();
  });

  test('a step that fails mid-way (an MTU the device refuses) is undone: no device, no route, no table', async () => {
    // 70000 is above the largest MTU a TUN device takes, so `ip link set ... mtu` fails after the device exists.
    const script = `
      import { TunHostBackend } from ${JSON.stringify(new URL('../../../src/packet-sources/tun/host.ts', import.meta.url).href)};
      const b = new TunHostBackend({ deviceName: 'rflctf', variant: { mtu: 70000, vnetHdr: false } });
      try { await b.start({ reflectAddresses: ['192.0.2.1'], shieldPorts: [{ port: 1, protocol: 'tcp' }] }); console.log('{"started":true}'); }
      catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }
    `;
    const r = await ns.run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script]);
    const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { code: string; message: string };
    assert.equal(out.code, 'E_BACKEND_FAILED', r.stdout + r.stderr);
    assert.match(out.message, /ip link set dev rflctf mtu 70000 up' failed/);
    const links = await ns.ipJson<{ ifname: string }[]>(['link', 'show']);
    assert.ok(!links.some((l) => l.ifname === 'rflctf'));
    assert.equal(JSON.stringify(await ns.ipJson(['-4', 'route', 'show'])), '[]');
    assert.equal((await ns.must('nft', ['list', 'tables'])).trim(), '');
  });
});

describe('isAdministrator', () => {
  test('true for root, false for an unprivileged user (checked in a child running as nobody)', async () => {
    assert.equal(await isAdministrator(), process.geteuid!() === 0);
    const code = `import(${JSON.stringify(new URL('../../../src/platform/privileges.ts', import.meta.url).href)}).then(async (m) => console.log(await m.isAdministrator()))`;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '-e', code], { uid: 65534, gid: 65534, encoding: 'utf8', env: { ...process.env, HOME: '/tmp' } });
    assert.equal(r.stdout.trim(), 'false', r.stderr);
  });
});
