/**
 * Apps lists on the WinDivert backend (issue 23): the real engine, worker, WinDivertPacketSource, app gate and
 * Dataplane, with the test double standing in for the driver (its NETWORK and SOCKET layers). The one other stand-in
 * is the process lookup (OpenProcess/QueryFullProcessImageNameW cannot run on Linux; test/wine/apps-allowed.test.ts
 * runs the real one): a table from process id to image path and package, named as such.
 *
 * Also the double's SOCKET layer itself, as WinDivert documents it: RECV_ONLY required (and SNIFF, as the double
 * models only sniffing), the WINDIVERT_DATA_SOCKET fields, IPv4-mapped addresses, filters on socket fields only,
 * every matching sniff handle gets a copy, nothing from before the handle was opened.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { buildInterceptConfig, type InterceptConfig } from '../../../src/config/intercept-config.ts';
import { Engine } from '../../../src/engine/engine.ts';
import { WinDivertHostBackend } from '../../../src/packet-sources/windivert/host.ts';
import { WinDivertFlag, WinDivertLayer } from '../../../src/packet-sources/windivert/ffi.ts';
import { SocketEventReader } from '../../../src/packet-sources/windivert/socket-events.ts';
import { APP_HOLD_FLOWS } from '../../../src/packet-sources/windivert/limits.ts';
import type { ProcessIdentity, ProcessLookup } from '../../../src/platform/windows/process-identity.ts';
import { collectSent, DOUBLE_PATH, inject, loadDouble } from '../../helpers/windivert-double.ts';
import { outboundAddr, socketEvent } from '../../helpers/windivert-double.ts';
import type { SentPacket } from '../../helpers/windivert-double.ts';
import { doubleLastOpenReason } from './double-controls.ts';
import { addressBytes, ipv4, tcpSegment, udpDatagram, withChecksum } from '../../helpers/packet-builders.ts';

const { api, double } = loadDouble();
const R = '192.0.2.1';
const CLIENT = '198.51.100.2';
const ALLOWED_EXE = 'C:\\Program Files\\Proxy Client\\client.exe';
const FAMILY = 'Contoso.Browser_8wekyb3d8bbwe';

/** STAND-IN for Windows' process lookup (kernel32 cannot run here): process id → identity. */
class TableLookup implements ProcessLookup {
  asked = 0;
  constructor(private readonly table: Record<number, Omit<ProcessIdentity, 'pid'>>) {}
  identify(pid: number): ProcessIdentity | null {
    this.asked++;
    const row = this.table[pid];
    return row ? { pid, ...row } : null;
  }
}
const PROCESSES = new TableLookup({
  100: { imagePath: ALLOWED_EXE, processName: 'client.exe', packageFamilyName: null },
  200: { imagePath: 'C:\\Tools\\other.exe', processName: 'other.exe', packageFamilyName: null },
  300: {
    imagePath: 'C:\\Program Files\\WindowsApps\\Contoso.Browser\\browser.exe',
    processName: 'browser.exe',
    packageFamilyName: FAMILY,
  },
});

function syn(srcPort: number, dstPort = 8080): Uint8Array {
  const segment = tcpSegment({ srcPort, dstPort, flags: 0x02 });
  const payload = withChecksum(addressBytes(CLIENT), addressBytes(R), 6, segment);
  return ipv4({ src: CLIENT, dst: R, proto: 6, payload });
}

function datagram(srcPort: number, dstPort: number): Uint8Array {
  const payload = withChecksum(addressBytes(CLIENT), addressBytes(R), 17, udpDatagram(srcPort, dstPort, [1, 2]));
  return ipv4({ src: CLIENT, dst: R, proto: 17, payload });
}

/** A socket operation of CLIENT:localPort (R:remotePort unless given). */
function op(event: 'bind' | 'connect', processId: number, protocol: 6 | 17, localPort: number, remotePort: number,
  remoteAddress = R) {
  return { event, processId, protocol, localAddress: CLIENT, localPort, remoteAddress, remotePort };
}

function connect(pid: number, srcPort: number, protocol: 6 | 17 = 6, dstPort = 8080): void {
  assert.equal(socketEvent(double, op('connect', pid, protocol, srcPort, dstPort)), 1, 'the gate reads connects');
}

async function sent(n: number, ms = 10_000): Promise<SentPacket[]> {
  const out: SentPacket[] = [];
  const deadline = Date.now() + ms;
  while (out.length < n && Date.now() < deadline) {
    out.push(...collectSent(double));
    await sleep(10);
  }
  return out;
}

/** The client's port of a packet on the wire: destination of a reflected SYN or a reset (both go to the client). */
const clientPort = (p: SentPacket): number => p.bytes.readUInt16BE(22);
const isReset = (p: SentPacket): boolean => p.bytes[9] === 6 && (p.bytes[33] & 0x04) !== 0;
const fromR = (p: SentPacket): boolean => p.bytes.subarray(12, 16).join('.') === R;
const isReflectedSyn = (p: SentPacket): boolean => p.bytes[9] === 6 && p.bytes[33] === 0x02 && fromR(p);

function appsConfig(apps: string[]): InterceptConfig {
  const config = buildInterceptConfig([R], []);
  config.allow = [{ address: R, apps }];
  return config;
}

async function withEngine(config: InterceptConfig, fn: (engine: Engine) => Promise<void>, holdMs = 100): Promise<void> {
  double.reset();
  const backend = new WinDivertHostBackend({ dllPath: DOUBLE_PATH, processLookup: PROCESSES, appHoldMs: holdMs });
  const engine = await Engine.start({ config, backend });
  try {
    await fn(engine);
  } finally {
    await engine.stop();
  }
  assert.equal(double.openHandles(), 0, 'every handle closed, the gate\'s too');
}

test('double SOCKET layer: RECV_ONLY required, sniff only, socket fields, mapped IPv4, a copy per sniff handle', () => {
  const sniff = WinDivertFlag.Sniff | WinDivertFlag.RecvOnly;
  double.reset();
  assert.equal(api.open('true', WinDivertLayer.Socket, 0, WinDivertFlag.Sniff), -1);
  assert.match(doubleLastOpenReason(double), /requires WINDIVERT_FLAG_RECV_ONLY/);
  assert.equal(api.open('true', WinDivertLayer.Socket, 0, WinDivertFlag.RecvOnly), -1);
  assert.match(doubleLastOpenReason(double), /only with SNIFF/);
  assert.equal(api.open('tcp.DstPort == 80', WinDivertLayer.Socket, 0, sniff), -1, 'packet fields are not valid there');
  assert.match(doubleLastOpenReason(double), /not valid at the SOCKET layer/);
  assert.equal(api.open('remotePort == 80', WinDivertLayer.Network, 0, 0n), -1, 'no socket fields there');
  // Before any SOCKET handle: the event is lost for good (the layer cannot report the past).
  assert.equal(socketEvent(double, op('connect', 7, 6, 1, 2)), 0);
  const a = new SocketEventReader(api);
  const narrow = `event == CONNECT and remoteAddr == ${R} and remotePort == 8080 and processId == 42 and tcp` +
    ' and not loopback';
  const b = new SocketEventReader(api, narrow);
  try {
    assert.equal(socketEvent(double, op('bind', 42, 6, 5000, 0, '0.0.0.0')), 0, 'BIND is not a CONNECT');
    const ids = { endpointId: 77n, parentEndpointId: 5n };
    assert.equal(socketEvent(double, { ...op('connect', 42, 6, 5000, 8080), ...ids }), 2, 'both sniff handles get it');
    assert.equal(socketEvent(double, op('connect', 43, 17, 5001, 53)), 1, 'only the catch-all handle');
    const [ev] = b.read();
    assert.equal(ev.event, 4);
    assert.equal(ev.processId, 42);
    assert.equal(ev.endpointId, 77n);
    assert.equal(ev.parentEndpointId, 5n);
    assert.deepEqual([ev.localPort, ev.remotePort, ev.protocol], [5000, 8080, 6]);
    const mapped = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1];
    assert.deepEqual([...ev.remoteAddr], mapped, 'IPv4 as ::ffff:a.b.c.d');
    assert.deepEqual(a.read().map((e) => e.processId), [42, 43]);
    assert.equal(api.sendEx(-1 >>> 0, Buffer.alloc(20), 20, null, Buffer.alloc(80), 80), false);
  } finally {
    a.close();
    b.close();
  }
});

test('apps: allowed executable and package reflected, another program refused at once; flows name the process', {
  timeout: 60_000,
}, async () => {
  await withEngine(appsConfig([ALLOWED_EXE.toUpperCase(), FAMILY.toLowerCase()]), async (engine) => {
    connect(100, 41000); // the usual order: the connect event is read before the packet
    connect(200, 41001);
    connect(300, 41002);
    await sleep(50);
    inject(double, syn(41000), outboundAddr(false));
    inject(double, syn(41001), outboundAddr(false));
    inject(double, syn(41002), outboundAddr(false));
    const out = await sent(3);
    assert.equal(out.length, 3, JSON.stringify(out.map((p) => [...p.bytes.subarray(20, 34)])));
    const reflectedFrom = (port: number): boolean =>
      out.some((p) => isReflectedSyn(p) && p.bytes.readUInt16BE(20) === port);
    assert.ok(reflectedFrom(41000), 'client.exe (path compared case-insensitively)');
    assert.ok(reflectedFrom(41002), 'the packaged browser, by family name');
    const rst = out.find(isReset);
    assert.ok(rst && clientPort(rst) === 41001 && fromR(rst), 'other.exe gets a reset from R');
    const stats = await engine.stats();
    assert.equal(stats.notAllowed.packets, 1);
    const info = engine.status().backendInfo;
    assert.equal(info.appsAllowedFlows, 2);
    assert.equal(info.appsNotListedFlows, 1);
    const flows = engine.flows();
    const flow = flows.find((f) => f.clientPort === 41000)!;
    assert.equal(flow.pid, 100);
    assert.equal(flow.processName, 'client.exe');
    assert.equal(flows.find((f) => f.clientPort === 41002)!.packageFamilyName, FAMILY);
  });
});

test('apps: a connect event read after the packet releases the held SYN; one never read refuses it after the hold', {
  timeout: 60_000,
}, async () => {
  await withEngine(appsConfig([ALLOWED_EXE]), async (engine) => {
    inject(double, syn(42000), outboundAddr(false));
    await sleep(30);
    assert.deepEqual(collectSent(double), [], 'held: not sent, not refused yet');
    assert.equal(engine.status().backendInfo.appsHeldFlows, 1);
    connect(100, 42000);
    const late = await sent(1);
    assert.ok(isReflectedSyn(late[0]) && late[0].bytes.readUInt16BE(20) === 42000, 'reflected once its event came');

    const before = Date.now();
    inject(double, syn(42001), outboundAddr(false));
    const never = await sent(1, 5_000);
    assert.ok(never[0] && isReset(never[0]) && clientPort(never[0]) === 42001, 'refused with a reset');
    assert.ok(Date.now() - before >= 90, 'not before the hold time');
    const info = engine.status().backendInfo;
    assert.equal(info.appsNoSocketEventFlows, 1, 'counted as its own cause');
    assert.equal(info.appsHeldFlows, 0);
    assert.equal((await engine.stats()).notAllowed.packets, 1);
    // Its event, late after all: the client's retransmission is reflected.
    connect(100, 42001);
    await sleep(30);
    inject(double, syn(42001), outboundAddr(false));
    const retry = await sent(1);
    assert.ok(isReflectedSyn(retry[0]), 'the retransmitted SYN is reflected');
  });
});

test('apps: a flood of flows without events holds at most the cap, refuses the rest at once, and each ends refused', {
  timeout: 60_000,
}, async () => {
  const flood = APP_HOLD_FLOWS.DEFAULT + 100;
  await withEngine(appsConfig([ALLOWED_EXE]), async (engine) => {
    for (let i = 0; i < flood; i++) inject(double, syn(20000 + i), outboundAddr(false));
    let peak = 0;
    const out: SentPacket[] = [];
    const deadline = Date.now() + 20_000;
    while (out.length < flood && Date.now() < deadline) {
      peak = Math.max(peak, Number(engine.status().backendInfo.appsHeldFlows ?? 0));
      out.push(...collectSent(double));
      await sleep(5);
    }
    assert.ok(peak <= APP_HOLD_FLOWS.DEFAULT, `held ${peak} flows at most`);
    assert.equal(out.length, flood);
    assert.ok(out.every(isReset), 'every flow refused');
    const info = engine.status().backendInfo;
    assert.ok(Number(info.appsHoldFullFlows) >= flood - APP_HOLD_FLOWS.DEFAULT, `hold full: ${info.appsHoldFullFlows}`);
    assert.equal(Number(info.appsHoldFullFlows) + Number(info.appsNoSocketEventFlows), flood);
  }, 300);
});

test('apps: UDP by its connect event; a live change of the list decides known flows again', {
  timeout: 60_000,
}, async () => {
  const config = appsConfig([ALLOWED_EXE]);
  await withEngine(config, async (engine) => {
    const udp = datagram(43000, 53);
    connect(200, 43000, 17, 53);
    await sleep(30);
    inject(double, udp, outboundAddr(false));
    const refused = await sent(1);
    const icmp = refused[0].bytes;
    assert.deepEqual([icmp[9], icmp[20], icmp[21]], [1, 3, 3], 'ICMP port unreachable for other.exe');
    await engine.reconfigure(appsConfig([ALLOWED_EXE, 'c:\\tools\\OTHER.exe']));
    inject(double, udp, outboundAddr(false));
    const allowed = await sent(1);
    assert.equal(allowed[0].bytes[9], 17, 'now reflected');
    assert.equal(allowed[0].bytes.subarray(12, 16).join('.'), R);
    await engine.reconfigure(buildInterceptConfig([R], []));
    assert.equal(engine.status().backendInfo.appsHeldFlows, undefined, 'no list: the gate is gone');
    assert.equal(double.openHandles(), 1, 'only the capture handle');
  });
});

test('apps over the control plane (WinDivert engine): set, persisted, changed live; users/groups/cgroups refused', {
  skip: process.platform === 'win32' ? 'Unix socket paths: the pipe is tested by test/wine/' : false,
  timeout: 60_000,
}, async () => {
  const { mkdtempSync, readFileSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { ConfigStore } = await import('../../../src/config/config-store.ts');
  const { ControlClient } = await import('../../../src/control/client.ts');
  const { startControlServer } = await import('../../../src/control/server.ts');
  const { testAddressRules } = await import('../../helpers/address-rules.ts');
  const dir = mkdtempSync(join(tmpdir(), 'rft-apps-'));
  double.reset();
  const backend = new WinDivertHostBackend({ dllPath: DOUBLE_PATH, processLookup: PROCESSES });
  const engine = await Engine.start({ config: buildInterceptConfig([], []), backend });
  const store = ConfigStore.open(join(dir, 'config.json'));
  const pipeName = join(dir, 'ctl.sock');
  const server = await startControlServer({ addressRules: testAddressRules, engine, pipeName, configStore: store });
  const client = await ControlClient.connect({ pipe: join(dir, 'ctl.sock') });
  try {
    for (const kind of ['users', 'groups', 'cgroups']) {
      const list = kind === 'cgroups' ? ['system.slice/x.service'] : ['0'];
      const call = client.call('address.add', { addresses: [R], [kind]: list });
      await assert.rejects(call, (e: Error & { code?: string }) => {
        assert.equal(e.code, 'E_INVALID_PARAMS');
        assert.match(e.message, /enforced on Linux only; this engine's backend \(windivert\)/);
        return true;
      });
    }
    assert.deepEqual(engine.config().reflectAddresses, [], 'refused: nothing changed');
    type Added = { allow: { address: string; apps?: string[] }[] };
    const added = (await client.call('address.add', { addresses: [R], apps: [ALLOWED_EXE] })) as Added;
    assert.deepEqual(added.allow, [{ address: R, apps: [ALLOWED_EXE] }]);
    const saved = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    assert.deepEqual(saved.reflectAddresses, [{ address: R, apps: [ALLOWED_EXE] }], 'persisted with the address');
    assert.equal(engine.status().backendInfo.appsHeldFlows, 0, 'the gate runs');
    connect(200, 45000);
    await sleep(30);
    inject(double, syn(45000), outboundAddr(false));
    assert.ok(isReset((await sent(1))[0]), 'other.exe refused');
    await client.call('address.add', { addresses: [R], apps: [ALLOWED_EXE, 'C:\\Tools\\other.exe'] });
    inject(double, syn(45000), outboundAddr(false));
    assert.ok(isReflectedSyn((await sent(1))[0]), 'allowed after the live change');
    await client.call('address.add', { addresses: [R], apps: 'all' });
    assert.equal(engine.status().backendInfo.appsHeldFlows, undefined, 'list lifted: the gate stopped');
  } finally {
    client.close();
    server.close();
    await engine.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

// Windows only (test/wine/apps-allowed.test.ts runs this file under the Windows node.exe): the real process lookup.
const onWindows = process.platform === 'win32' ? false : 'the Win32 process lookup runs on Windows (under Wine here)';

test('Win32 process lookup: this process by id is this node.exe; an id no process has is nobody', {
  skip: onWindows,
}, async () => {
  const { Win32ProcessLookup } = await import('../../../src/platform/windows/process-identity.ts');
  const lookup = new Win32ProcessLookup(8);
  const me = lookup.identify(process.pid);
  assert.ok(me, 'found');
  assert.equal(me.imagePath.toLowerCase(), process.execPath.toLowerCase());
  assert.equal(me.processName.toLowerCase(), 'node.exe');
  assert.equal(me.packageFamilyName, null, 'not a packaged app');
  assert.deepEqual(lookup.identify(process.pid), me, 'cached for the same process (same creation time)');
  assert.equal(lookup.identify(0x7ffffff0), null);
});

test('apps with the real lookup: a flow of this node.exe is allowed by its path, refused once the list names another', {
  skip: onWindows,
  timeout: 60_000,
}, async () => {
  const { Win32ProcessLookup } = await import('../../../src/platform/windows/process-identity.ts');
  double.reset();
  const config = appsConfig([process.execPath.toUpperCase()]);
  const backend = new WinDivertHostBackend({ dllPath: DOUBLE_PATH, processLookup: new Win32ProcessLookup(8) });
  const engine = await Engine.start({ config, backend });
  try {
    connect(process.pid, 44000);
    await sleep(50);
    inject(double, syn(44000), outboundAddr(false));
    const out = await sent(1);
    assert.ok(isReflectedSyn(out[0]), 'node.exe is on the list');
    assert.equal(engine.flows().find((f) => f.clientPort === 44000)?.processName?.toLowerCase(), 'node.exe');
    await engine.reconfigure(appsConfig(['C:\\Windows\\notepad.exe']));
    inject(double, syn(44000), outboundAddr(false));
    const refused = await sent(1);
    assert.ok(isReset(refused[0]), 'refused under the new list');
  } finally {
    await engine.stop();
  }
});
