/**
 * Windows services through the Service Control Manager (advapi32, through koffi): a service's state, and stopping
 * and deleting one (the WinDivert driver service's safe removal). ImagePath comes from the registry (registry.ts).
 */
import koffi from 'koffi';
import { readRegistryValue } from './registry.ts';

const SC_MANAGER_CONNECT = 0x0001;
const SERVICE_QUERY_STATUS = 0x0004;
const SERVICE_STOP = 0x0020;
const DELETE = 0x00010000;
const SERVICE_CONTROL_STOP = 1;
/** winerror.h */
export const ERROR_SERVICE_DOES_NOT_EXIST = 1060;
export const ERROR_SERVICE_NOT_ACTIVE = 1062;
export const ERROR_SERVICE_MARKED_FOR_DELETE = 1072;
/** SERVICE_STATUS.dwCurrentState → name. */
const STATES: Record<number, ServiceState> = { 1: 'stopped', 2: 'start-pending', 3: 'stop-pending', 4: 'running',
  5: 'continue-pending', 6: 'pause-pending', 7: 'paused' };
/** sizeof(SERVICE_STATUS): seven DWORDs. */
const SERVICE_STATUS_SIZE = 28;

export type ServiceState =
  'stopped' | 'start-pending' | 'stop-pending' | 'running' | 'continue-pending' | 'pause-pending' | 'paused';

export interface ServiceFacts {
  name: string;
  state: ServiceState | 'unknown';
  /** SERVICE_STATUS.dwServiceType: 1 kernel driver, 16/32 own/shared process. */
  type: number;
  /** The registry's ImagePath as written (unexpanded prefixes such as \??\ kept), or null. */
  imagePath: string | null;
}

interface Scm {
  openManager(machine: null, db: null, access: number): number;
  openService(scm: number, name: string, access: number): number;
  query(h: number, status: Buffer): number;
  control(h: number, code: number, status: Buffer): number;
  remove(h: number): number;
  close(h: number): number;
  lastError(): number;
}
let bound: Scm | undefined;

function api(): Scm {
  if (bound) return bound;
  const a = koffi.load('advapi32.dll');
  const k = koffi.load('kernel32.dll');
  bound = {
    openManager: a.func('__stdcall', 'OpenSCManagerW', 'intptr_t', ['str16', 'str16', 'uint32_t']),
    openService: a.func('__stdcall', 'OpenServiceW', 'intptr_t', ['intptr_t', 'str16', 'uint32_t']),
    query: a.func('__stdcall', 'QueryServiceStatus', 'int', ['intptr_t', 'void *']),
    control: a.func('__stdcall', 'ControlService', 'int', ['intptr_t', 'uint32_t', 'void *']),
    remove: a.func('__stdcall', 'DeleteService', 'int', ['intptr_t']),
    close: a.func('__stdcall', 'CloseServiceHandle', 'int', ['intptr_t']),
    lastError: k.func('__stdcall', 'GetLastError', 'uint32_t', []),
  } as Scm;
  return bound;
}

class ServiceError extends Error {
  constructor(readonly step: string, readonly windowsError: number) {
    super(`${step} failed with Windows error ${windowsError}`);
  }
}

function withService<T>(name: string, access: number, fn: (h: number, scm: Scm) => T): T | null {
  const s = api();
  const manager = Number(s.openManager(null, null, SC_MANAGER_CONNECT));
  if (!manager) throw new ServiceError('OpenSCManager', s.lastError());
  try {
    const h = Number(s.openService(manager, name, access));
    if (!h) {
      const err = s.lastError();
      if (err === ERROR_SERVICE_DOES_NOT_EXIST) return null;
      throw new ServiceError(`OpenService ${name}`, err);
    }
    try {
      return fn(h, s);
    } finally {
      s.close(h);
    }
  } finally {
    s.close(manager);
  }
}

/** The service's state and ImagePath, or null when no service of that name exists. */
export function queryService(name: string): ServiceFacts | null {
  return withService(name, SERVICE_QUERY_STATUS, (h, s) => {
    const status = Buffer.alloc(SERVICE_STATUS_SIZE);
    const ok = s.query(h, status) !== 0;
    const imagePath = readRegistryValue(`SYSTEM\\CurrentControlSet\\Services\\${name}`, 'ImagePath');
    return {
      name,
      state: ok ? (STATES[status.readUInt32LE(4)] ?? 'unknown') : 'unknown',
      type: ok ? status.readUInt32LE(0) : 0,
      imagePath: typeof imagePath === 'string' ? imagePath : null,
    };
  });
}

/**
 * Ask the service to stop (a driver unloads once no handle is open) and delete its entry. Returns false when the
 * service did not exist. An entry already marked for deletion counts as deleted.
 */
export function stopAndDeleteService(name: string): boolean {
  const r = withService(name, SERVICE_QUERY_STATUS | SERVICE_STOP | DELETE, (h, s) => {
    const status = Buffer.alloc(SERVICE_STATUS_SIZE);
    if (!s.control(h, SERVICE_CONTROL_STOP, status)) {
      const err = s.lastError();
      // Not running is what we want; anything else still lets us delete (the driver unloads at the last close).
      void err;
    }
    if (!s.remove(h)) {
      const err = s.lastError();
      if (err !== ERROR_SERVICE_MARKED_FOR_DELETE) throw new ServiceError(`DeleteService ${name}`, err);
    }
    return true;
  });
  return r === true;
}
