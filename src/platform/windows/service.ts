/**
 * Windows: this process as a service of the Service Control Manager, through advapi32 bound with koffi.
 *
 * What the SCM needs, and what it takes from Node (found under Wine 8 with koffi 3.3, confirmed by Microsoft's
 * docs): StartServiceCtrlDispatcherW blocks its thread until the service stops, so it runs as a koffi `.async`
 * call (a synchronous call deadlocks the JS thread: the SCM then gives up with 1053). ServiceMain and the control
 * handler are called on the dispatcher's threads; koffi runs them on the JS thread, so each must return quickly
 * (ServiceMain starts the engine and returns; a control is answered within the SCM's 30 s). The process must not
 * exit while the dispatcher call is pending: report SERVICE_STOPPED, wait for the call to return, then exit.
 */
import koffi from 'koffi';

/** The service's name, as Install-Retroflect registers it (powershell/Retroflect/Private/Service.ps1). */
export const SERVICE_NAME = 'Retroflect';

/** winsvc.h */
const SERVICE_WIN32_OWN_PROCESS = 0x10;
const SERVICE_STATE = { stopped: 1, startPending: 2, stopPending: 3, running: 4 } as const;
const SERVICE_ACCEPT_STOP = 0x1;
const SERVICE_ACCEPT_SHUTDOWN = 0x4;
const SERVICE_ACCEPT_PRESHUTDOWN = 0x100;
const SERVICE_CONTROL = { stop: 1, interrogate: 4, shutdown: 5, preshutdown: 0xf } as const;
const ACCEPTED_WHILE_RUNNING = SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN | SERVICE_ACCEPT_PRESHUTDOWN;
/** winerror.h */
const NO_ERROR = 0;
const ERROR_CALL_NOT_IMPLEMENTED = 120;
/** dwWin32ExitCode saying "see dwServiceSpecificExitCode" (there: our exit code, README's table). */
export const ERROR_SERVICE_SPECIFIC_ERROR = 1066;
/** The dispatcher failed: `startedByScm` false means this process was not started by the SCM (Windows error 1063). */
export class ServiceDispatcherError extends Error {
  constructor(readonly startedByScm: boolean) {
    super(startedByScm ? 'the service control dispatcher failed' : 'this process was not started by the SCM');
  }
}

/** How long the SCM should wait for the next progress report while starting or stopping. */
export const SERVICE_WAIT_HINT_MS = 30_000;
/** How often progress (dwCheckPoint) is reported while starting or stopping. */
const CHECKPOINT_INTERVAL_MS = 2_000;

export type ServiceControl = 'stop' | 'shutdown' | 'preshutdown';
const CONTROL_KIND = new Map<number, ServiceControl>([
  [SERVICE_CONTROL.stop, 'stop'],
  [SERVICE_CONTROL.shutdown, 'shutdown'],
  [SERVICE_CONTROL.preshutdown, 'preshutdown'],
]);

/** The running service as its code sees it: report progress, hear controls. */
export interface ServiceSession {
  /** Starting is done: the engine answers. */
  running(): void;
  /** Stopping: cleanup under way (reported with wait hints until stopped()). */
  stopping(): void;
  /** Stopped with this process exit code (0, or a code of README's table as the service-specific exit code). */
  stopped(exitCode: number): void;
  /** Set by the caller: called once per stop, shutdown or pre-shutdown control. */
  onControl: (control: ServiceControl) => void;
}

interface Api {
  startDispatcher: { async: (table: Buffer, cb: (err: unknown, ok: boolean) => void) => void };
  registerHandler: (name: string, handler: bigint, context: null) => unknown;
  setStatus: (handle: unknown, status: Buffer) => boolean;
}

function api(): Api {
  const advapi32 = koffi.load('advapi32.dll');
  return {
    startDispatcher: advapi32.func('__stdcall', 'StartServiceCtrlDispatcherW', 'bool', ['void *']) as unknown as
      Api['startDispatcher'],
    registerHandler: advapi32.func('__stdcall', 'RegisterServiceCtrlHandlerExW', 'void *',
      ['str16', 'void *', 'void *']) as Api['registerHandler'],
    setStatus: advapi32.func('__stdcall', 'SetServiceStatus', 'bool', ['void *', 'void *']) as Api['setStatus'],
  };
}

/** SERVICE_STATUS: seven DWORDs. */
function statusBuffer(state: number, accepted: number, exitCode: number, checkPoint: number, waitHint: number): Buffer {
  const b = Buffer.alloc(28);
  const specific = exitCode !== 0;
  const win32ExitCode = specific ? ERROR_SERVICE_SPECIFIC_ERROR : NO_ERROR;
  const serviceExitCode = specific ? exitCode : 0;
  const fields = [SERVICE_WIN32_OWN_PROCESS, state, accepted, win32ExitCode, serviceExitCode, checkPoint, waitHint];
  fields.forEach((v, i) => b.writeUInt32LE(v, 4 * i));
  return b;
}

/**
 * Connect to the SCM as service `name` and call `main` (on the JS thread) when the SCM starts it. Resolves when
 * the dispatcher returns, i.e. after `stopped()` was reported; rejects with ServiceDispatcherError when this
 * process was not started by the SCM or the dispatcher fails. (GetLastError would be read on another thread than
 * the call's, so whether ServiceMain ran is what tells the two apart.)
 */
export function runServiceDispatcher(name: string, main: (session: ServiceSession) => void): Promise<void> {
  const a = api();
  const ServiceMainProto = koffi.proto('__stdcall', 'RetroflectServiceMain', 'void', ['uint32', 'void *']);
  const HandlerExProto = koffi.proto('__stdcall', 'RetroflectServiceHandlerEx', 'uint32',
    ['uint32', 'uint32', 'void *', 'void *']);
  let handle: unknown = null;
  let mainCalled = false;
  let state: number = SERVICE_STATE.startPending;
  let checkPoint = 0;
  let timer: NodeJS.Timeout | null = null;
  const session: ServiceSession = { running, stopping, stopped, onControl: () => undefined };

  const report = (exitCode = 0): void => {
    const pending = state === SERVICE_STATE.startPending || state === SERVICE_STATE.stopPending;
    const accepted = state === SERVICE_STATE.running ? ACCEPTED_WHILE_RUNNING : 0;
    if (!handle) return;
    const hint = pending ? SERVICE_WAIT_HINT_MS : 0;
    a.setStatus(handle, statusBuffer(state, accepted, exitCode, pending ? ++checkPoint : 0, hint));
  };
  const progress = (): void => {
    if (timer) clearInterval(timer);
    timer = null;
    const pending = state === SERVICE_STATE.startPending || state === SERVICE_STATE.stopPending;
    if (pending) timer = setInterval(() => report(), CHECKPOINT_INTERVAL_MS);
  };
  function running(): void {
    if (state !== SERVICE_STATE.startPending) return;
    state = SERVICE_STATE.running;
    report();
    progress();
  }
  function stopping(): void {
    if (state === SERVICE_STATE.stopped || state === SERVICE_STATE.stopPending) return;
    state = SERVICE_STATE.stopPending;
    checkPoint = 0;
    report();
    progress();
  }
  function stopped(exitCode: number): void {
    if (state === SERVICE_STATE.stopped) return;
    state = SERVICE_STATE.stopped;
    progress();
    report(exitCode);
  }

  const handler = koffi.register((control: number): number => {
    if (control === SERVICE_CONTROL.interrogate) return NO_ERROR;
    const kind = CONTROL_KIND.get(control);
    if (!kind) return ERROR_CALL_NOT_IMPLEMENTED;
    // Answer at once; the stop itself runs after this returns (STOP_PENDING with wait hints, then STOPPED).
    setImmediate(() => session.onControl(kind));
    return NO_ERROR;
  }, koffi.pointer(HandlerExProto));

  const serviceMain = koffi.register(() => {
    mainCalled = true;
    handle = a.registerHandler(name, handler, null);
    report();
    progress();
    setImmediate(() => main(session));
  }, koffi.pointer(ServiceMainProto));

  // SERVICE_TABLE_ENTRYW[2]: {name, ServiceMain}, then the terminating {NULL, NULL}. The name buffer and the table
  // stay referenced until the dispatcher returns.
  const nameBuffer = Buffer.from(`${name}\0`, 'utf16le');
  const table = Buffer.alloc(32);
  table.writeBigUInt64LE(koffi.address(nameBuffer), 0);
  table.writeBigUInt64LE(serviceMain, 8);
  return new Promise((resolve, reject) => {
    a.startDispatcher.async(table, (err, ok) => {
      void nameBuffer;
      if (timer) clearInterval(timer);
      koffi.unregister(serviceMain);
      koffi.unregister(handler);
      if (err) reject(err instanceof Error ? err : new Error(String(err)));
      else if (!ok) reject(new ServiceDispatcherError(mainCalled));
      else resolve();
    });
  });
}
