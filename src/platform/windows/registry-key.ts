/**
 * Reading HKEY_LOCAL_MACHINE keys through advapi32 (koffi): open a key, list its values, read one, and wait for a change
 * (RegNotifyChangeKeyValue with an event, waited for on koffi's worker threads so the engine's thread never blocks).
 * Only what the managed policy needs (policy-registry.ts); always the 64-bit view of the registry.
 */
import koffi from 'koffi';

const HKEY_LOCAL_MACHINE = 0x80000002;
const KEY_READ = 0x20019;
const KEY_NOTIFY = 0x0010;
const KEY_WOW64_64KEY = 0x0100;
export const ERROR_SUCCESS = 0;
export const ERROR_FILE_NOT_FOUND = 2;
const ERROR_MORE_DATA = 234;
const ERROR_NO_MORE_ITEMS = 259;
const REG_SZ = 1;
const REG_EXPAND_SZ = 2;
const REG_DWORD = 4;
const REG_NOTIFY_CHANGE_NAME = 0x1;
const REG_NOTIFY_CHANGE_LAST_SET = 0x4;
const WAIT_OBJECT_0 = 0;
/** Longest value name (registry limit: 16,383 characters) and the data buffer we start with (grown on demand). */
const MAX_VALUE_NAME_CHARS = 16_384;
const FIRST_DATA_BYTES = 1024;

type Handle = number;
interface Api {
  open(hKey: Handle, subKey: string, options: number, sam: number, out: Buffer): number;
  enumValue(hKey: Handle, index: number, name: Buffer, nameChars: Buffer, reserved: null, type: Buffer, data: Buffer | null, dataBytes: Buffer): number;
  query(hKey: Handle, name: string, reserved: null, type: Buffer, data: Buffer | null, dataBytes: Buffer): number;
  close(hKey: Handle): number;
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
    open: advapi.func('long __stdcall RegOpenKeyExW(uintptr_t hKey, const char16_t *lpSubKey, uint32_t ulOptions, uint32_t samDesired, _Out_ uint8_t *phkResult)'),
    enumValue: advapi.func(
      'long __stdcall RegEnumValueW(uintptr_t hKey, uint32_t dwIndex, _Out_ uint8_t *lpValueName, _Inout_ uint32_t *lpcchValueName, void *lpReserved, _Out_ uint32_t *lpType, _Out_ uint8_t *lpData, _Inout_ uint32_t *lpcbData)',
    ),
    query: advapi.func('long __stdcall RegQueryValueExW(uintptr_t hKey, const char16_t *lpValueName, void *lpReserved, _Out_ uint32_t *lpType, _Out_ uint8_t *lpData, _Inout_ uint32_t *lpcbData)'),
    close: advapi.func('long __stdcall RegCloseKey(uintptr_t hKey)'),
    notify: advapi.func('long __stdcall RegNotifyChangeKeyValue(uintptr_t hKey, int bWatchSubtree, uint32_t dwNotifyFilter, uintptr_t hEvent, int fAsynchronous)'),
    createEvent: kernel.func('uintptr_t __stdcall CreateEventW(void *lpEventAttributes, int bManualReset, int bInitialState, const char16_t *lpName)'),
    wait: kernel.func('uint32_t __stdcall WaitForSingleObject(uintptr_t hHandle, uint32_t dwMilliseconds)'),
    closeHandle: kernel.func('int __stdcall CloseHandle(uintptr_t hObject)'),
  } as unknown as Api;
  return bound;
}

function readHandle(buf: Buffer): Handle {
  return buf.length >= 8 ? Number(buf.readBigUInt64LE(0)) : buf.readUInt32LE(0);
}

/** A registry failure other than "not there". */
export class RegistryError extends Error {
  constructor(readonly what: string, readonly code: number) {
    super(`${what} failed with Windows error ${code}`);
  }
}

/** One value as read: strings for REG_SZ/REG_EXPAND_SZ, numbers for REG_DWORD, null for any other type. */
export interface RegistryValue {
  name: string;
  type: number;
  data: string | number | null;
}

function decode(type: number, data: Buffer, bytes: number): string | number | null {
  if (type === REG_SZ || type === REG_EXPAND_SZ) return data.subarray(0, bytes).toString('utf16le').replace(/\0+$/, '');
  if (type === REG_DWORD && bytes >= 4) return data.readUInt32LE(0);
  return null;
}

/** An open key under HKLM; close it. */
export class RegistryKey {
  private constructor(private handle: Handle, readonly path: string) {}

  /** Open `HKLM\<path>` for reading (and change notification); null when the key does not exist. */
  static openLocalMachine(path: string): RegistryKey | null {
    const out = Buffer.alloc(koffi.sizeof('void *'));
    const rc = api().open(HKEY_LOCAL_MACHINE, path, 0, KEY_READ | KEY_NOTIFY | KEY_WOW64_64KEY, out);
    if (rc === ERROR_FILE_NOT_FOUND) return null;
    if (rc !== ERROR_SUCCESS) throw new RegistryError(`Opening HKLM\\${path}`, rc);
    return new RegistryKey(readHandle(out), path);
  }

  /** Every value of the key (RegEnumValueW for the names, RegQueryValueExW for each value's data). */
  values(): RegistryValue[] {
    const out: RegistryValue[] = [];
    const name = Buffer.alloc(MAX_VALUE_NAME_CHARS * 2);
    const nameChars = Buffer.alloc(4);
    const type = Buffer.alloc(4);
    const bytes = Buffer.alloc(4);
    for (let index = 0; ; index++) {
      nameChars.writeUInt32LE(MAX_VALUE_NAME_CHARS, 0);
      bytes.writeUInt32LE(0, 0);
      const rc = api().enumValue(this.handle, index, name, nameChars, null, type, null, bytes);
      if (rc === ERROR_NO_MORE_ITEMS) return out;
      if (rc !== ERROR_SUCCESS && rc !== ERROR_MORE_DATA) throw new RegistryError(`Listing the values of HKLM\\${this.path}`, rc);
      const valueName = name.subarray(0, nameChars.readUInt32LE(0) * 2).toString('utf16le');
      const value = this.value(valueName);
      if (value) out.push(value);
    }
  }

  /** One value, or null when it is not there. */
  value(valueName: string): RegistryValue | null {
    const type = Buffer.alloc(4);
    const bytes = Buffer.alloc(4);
    let data = Buffer.alloc(FIRST_DATA_BYTES);
    for (;;) {
      bytes.writeUInt32LE(data.length, 0);
      const rc = api().query(this.handle, valueName, null, type, data, bytes);
      if (rc === ERROR_FILE_NOT_FOUND) return null;
      if (rc === ERROR_MORE_DATA) {
        data = Buffer.alloc(bytes.readUInt32LE(0));
        continue;
      }
      if (rc !== ERROR_SUCCESS) throw new RegistryError(`Reading HKLM\\${this.path}\\${valueName}`, rc);
      return { name: valueName, type: type.readUInt32LE(0), data: decode(type.readUInt32LE(0), data, bytes.readUInt32LE(0)) };
    }
  }

  /**
   * Have `event` signalled at the next change to this key or anything below it (names and values). One-shot, as
   * RegNotifyChangeKeyValue is: arm again after each signal.
   */
  notifyOn(event: RegistryEvent): void {
    const rc = api().notify(this.handle, 1, REG_NOTIFY_CHANGE_NAME | REG_NOTIFY_CHANGE_LAST_SET, event.handle, 1);
    if (rc !== ERROR_SUCCESS) throw new RegistryError(`Watching HKLM\\${this.path}`, rc);
  }

  close(): void {
    if (this.handle) api().close(this.handle);
    this.handle = 0;
  }
}

/** An auto-reset event a key signals on change; waited for on koffi's worker threads. Close it. */
export class RegistryEvent {
  readonly handle: Handle = api().createEvent(null, 0, 0, null);

  /** True when signalled within `timeoutMs`, false on timeout. */
  wait(timeoutMs: number): Promise<boolean> {
    return new Promise((resolve, reject) => {
      api().wait.async(this.handle, timeoutMs, (err, result) => (err ? reject(err as Error) : resolve(result === WAIT_OBJECT_0)));
    });
  }

  close(): void {
    api().closeHandle(this.handle);
  }
}
