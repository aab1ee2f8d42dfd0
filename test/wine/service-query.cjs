// What the Service Control Manager holds for one service, as JSON on stdout: run by the Windows node.exe under Wine
// (test/wine/service.test.ts), since Wine's sc.exe shows neither accepted controls nor configuration. Read-only:
// QueryServiceStatus, QueryServiceConfigW, QueryServiceConfig2W (description, failure actions, pre-shutdown).
// Usage: node.exe service-query.cjs <service>; prints {"exists": false} when there is no such service.
'use strict';
const koffi = require('koffi');

const advapi32 = koffi.load('advapi32.dll');
const OpenSCManagerW = advapi32.func('__stdcall', 'OpenSCManagerW', 'void *', ['str16', 'str16', 'uint32']);
const OpenServiceW = advapi32.func('__stdcall', 'OpenServiceW', 'void *', ['void *', 'str16', 'uint32']);
const QueryServiceStatus = advapi32.func('__stdcall', 'QueryServiceStatus', 'bool', ['void *', 'void *']);
const QueryServiceConfigW = advapi32.func('__stdcall', 'QueryServiceConfigW', 'bool', ['void *', 'void *', 'uint32', koffi.out(koffi.pointer('uint32'))]);
const QueryServiceConfig2W = advapi32.func('__stdcall', 'QueryServiceConfig2W', 'bool', ['void *', 'uint32', 'void *', 'uint32', koffi.out(koffi.pointer('uint32'))]);
const CloseServiceHandle = advapi32.func('__stdcall', 'CloseServiceHandle', 'bool', ['void *']);

const name = process.argv[2];
const scm = OpenSCManagerW(null, null, 0x0001 /* SC_MANAGER_CONNECT */);
const svc = scm && OpenServiceW(scm, name, 0x0001 | 0x0004 /* SERVICE_QUERY_CONFIG | SERVICE_QUERY_STATUS */);
if (!svc) {
  process.stdout.write(JSON.stringify({ exists: false }) + '\n');
  process.exit(0);
}

const str = (buf, offset) => {
  const p = buf.readBigUInt64LE(offset);
  return p === 0n ? null : koffi.decode.string16(p);
};

const status = Buffer.alloc(28);
const out = { exists: true };
if (QueryServiceStatus(svc, status)) {
  const d = (i) => status.readUInt32LE(4 * i);
  out.status = { serviceType: d(0), currentState: d(1), controlsAccepted: d(2), win32ExitCode: d(3), serviceSpecificExitCode: d(4) };
}
const config = Buffer.alloc(8192);
if (QueryServiceConfigW(svc, config, config.length, [0])) {
  const deps = [];
  let p = config.readBigUInt64LE(40);
  while (p !== 0n) {
    const s = koffi.decode.string16(p);
    if (!s) break;
    deps.push(s);
    p += BigInt(2 * (s.length + 1));
  }
  out.config = { serviceType: config.readUInt32LE(0), startType: config.readUInt32LE(4), binaryPath: str(config, 16), dependencies: deps, account: str(config, 48), displayName: str(config, 56) };
}
const info = Buffer.alloc(8192);
if (QueryServiceConfig2W(svc, 1 /* SERVICE_CONFIG_DESCRIPTION */, info, info.length, [0])) out.description = str(info, 0);
if (QueryServiceConfig2W(svc, 3 /* SERVICE_CONFIG_DELAYED_AUTO_START_INFO */, info, info.length, [0])) out.delayedAutoStart = info.readUInt32LE(0) !== 0;
if (QueryServiceConfig2W(svc, 7 /* SERVICE_CONFIG_PRESHUTDOWN_INFO */, info, info.length, [0])) out.preshutdownTimeoutMs = info.readUInt32LE(0);
if (QueryServiceConfig2W(svc, 2 /* SERVICE_CONFIG_FAILURE_ACTIONS */, info, info.length, [0])) {
  const count = info.readUInt32LE(24);
  const actions = info.readBigUInt64LE(32);
  const list = [];
  for (let i = 0; i < count && actions !== 0n; i++) list.push({ type: koffi.decode(actions, 8 * i, 'uint32'), delayMs: koffi.decode(actions, 8 * i + 4, 'uint32') });
  out.failureActions = { resetPeriodSeconds: info.readUInt32LE(0), actions: list };
}
CloseServiceHandle(svc);
CloseServiceHandle(scm);
process.stdout.write(JSON.stringify(out) + '\n');
