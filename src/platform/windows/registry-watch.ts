/**
 * Waiting for a registry key to change (RegNotifyChangeKeyValue with an event), waited for on koffi's worker threads
 * so the engine's thread never blocks: the managed policy's watch (policy-registry.ts). Opening and reading keys is
 * registry.ts's job.
 */
import koffi from 'koffi';
import { RegistryError, type RegistryKey } from './registry.ts';

const ERROR_SUCCESS = 0;
const REG_NOTIFY_CHANGE_NAME = 0x1;
const REG_NOTIFY_CHANGE_LAST_SET = 0x4;
const WAIT_OBJECT_0 = 0;

type Handle = number;
interface Api {
  notify(hKey: Handle, subtree: number, filter: number, event: Handle, async: number): number;
  createEvent(attrs: null, manualReset: number, initialState: number, name: null): Handle;
  wait: { async(handle: Handle, ms: number, cb: (err: unknown, rc: number) => void): void };
  closeHandle(handle: Handle): number;
}
let bound: Api | undefined;

function api(): Api {
  if (bound) return bound;
  const advapi = koffi.load('advapi32.dll');
  const kernel = koffi.load('kernel32.dll');
  bound = {
    notify: advapi.func('long __stdcall RegNotifyChangeKeyValue(uintptr_t hKey, int bWatchSubtree, ' +
      'uint32_t dwNotifyFilter, uintptr_t hEvent, int fAsynchronous)'),
    createEvent: kernel.func('uintptr_t __stdcall CreateEventW(void *lpEventAttributes, int bManualReset, ' +
      'int bInitialState, const char16_t *lpName)'),
    wait: kernel.func('uint32_t __stdcall WaitForSingleObject(uintptr_t hHandle, uint32_t dwMilliseconds)'),
    closeHandle: kernel.func('int __stdcall CloseHandle(uintptr_t hObject)'),
  } as unknown as Api;
  return bound;
}

/** An auto-reset event a key signals on change; waited for on koffi's worker threads. Close it. */
export class RegistryEvent {
  readonly handle: Handle = api().createEvent(null, 0, 0, null);

  /** True when signalled within `timeoutMs`, false on timeout. */
  wait(timeoutMs: number): Promise<boolean> {
    return new Promise((resolve, reject) => {
      api().wait.async(this.handle, timeoutMs, (err, result) =>
        (err ? reject(err as Error) : resolve(result === WAIT_OBJECT_0)));
    });
  }

  close(): void {
    api().closeHandle(this.handle);
  }
}

/**
 * Have `event` signalled at the next change to `key` or anything below it (names and values). One-shot, as
 * RegNotifyChangeKeyValue is: arm again after each signal.
 */
export function notifyOnChange(key: RegistryKey, event: RegistryEvent): void {
  const rc = api().notify(key.handle, 1, REG_NOTIFY_CHANGE_NAME | REG_NOTIFY_CHANGE_LAST_SET, event.handle, 1);
  if (rc !== ERROR_SUCCESS) throw new RegistryError(`Watching HKLM\\${key.path}`, rc);
}
