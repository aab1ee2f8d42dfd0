// What the Service Control Manager reports for one service, as JSON on stdout: run by the Windows node.exe under
// Wine (test/wine/service.test.ts), since Wine's sc.exe does not show the controls a service accepts. Read-only.
// Usage: node.exe service-query.cjs <service>; prints {"exists": false} when there is no such service.
'use strict';
const koffi = require('koffi');

const advapi32 = koffi.load('advapi32.dll');
const OpenSCManagerW = advapi32.func('__stdcall', 'OpenSCManagerW', 'void *', ['str16', 'str16', 'uint32']);
const OpenServiceW = advapi32.func('__stdcall', 'OpenServiceW', 'void *', ['void *', 'str16', 'uint32']);
const QueryServiceStatus = advapi32.func('__stdcall', 'QueryServiceStatus', 'bool', ['void *', 'void *']);
const CloseServiceHandle = advapi32.func('__stdcall', 'CloseServiceHandle', 'bool', ['void *']);
const SC_MANAGER_CONNECT = 0x0001;
const SERVICE_QUERY_STATUS = 0x0004;

const scm = OpenSCManagerW(null, null, SC_MANAGER_CONNECT);
const svc = scm && OpenServiceW(scm, process.argv[2], SERVICE_QUERY_STATUS);
const out = { exists: Boolean(svc) };
const status = Buffer.alloc(28); // SERVICE_STATUS: seven DWORDs
if (svc && QueryServiceStatus(svc, status)) {
  const d = (i) => status.readUInt32LE(4 * i);
  out.status = { currentState: d(1), controlsAccepted: d(2), win32ExitCode: d(3), serviceSpecificExitCode: d(4) };
}
if (svc) CloseServiceHandle(svc);
if (scm) CloseServiceHandle(scm);
process.stdout.write(JSON.stringify(out) + '\n');
