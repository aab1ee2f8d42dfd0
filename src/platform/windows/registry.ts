/**
 * Reading the registry under HKEY_LOCAL_MACHINE through advapi32 (koffi), always its 64-bit view: open a key, list
 * its values, read one (RegGetValueW). The one reader for the doctor (`readRegistryValue`: the WinDivert service's
 * ImagePath, code-integrity states, firewall rules, network-isolation ranges) and the managed policy
 * (`RegistryKey`: policy-registry.ts). Waiting for a key to change is registry-watch.ts's job.
 */
import koffi from 'koffi';

const HKEY_LOCAL_MACHINE = 0x80000002;
/** What a key is opened for: its values read by name only, or also listed and watched (KEY_READ has KEY_NOTIFY). */
const KEY_ACCESS = { query: 0x0001, 'list-and-watch': 0x20019 } as const;
export type KeyAccess = keyof typeof KEY_ACCESS;
const KEY_WOW64_64KEY = 0x0100;
const RRF_RT_ANY = 0x0000ffff;
/** Leave REG_EXPAND_SZ as stored: policy values are taken literally. */
const RRF_NOEXPAND = 0x10000000;
const ERROR_SUCCESS = 0;
const ERROR_FILE_NOT_FOUND = 2;
const ERROR_MORE_DATA = 234;
const ERROR_NO_MORE_ITEMS = 259;
const REG_SZ = 1;
const REG_EXPAND_SZ = 2;
const REG_DWORD = 4;
const REG_MULTI_SZ = 7;
const REG_QWORD = 11;
/** Longest value name (registry limit: 16,383 characters) and the data buffer a read starts with (grown on demand). */
const MAX_VALUE_NAME_CHARS = 16_384;
const FIRST_DATA_BYTES = 1024;

type Handle = number;
interface Api {
  open(hKey: Handle, subKey: string, options: number, sam: number, out: Buffer): number;
  enumValue(hKey: Handle, index: number, name: Buffer, nameChars: Buffer, reserved: null, type: Buffer, data: null,
    dataBytes: Buffer): number;
  get(hKey: Handle, subKey: null, value: string | null, flags: number, type: Buffer, data: Buffer,
    dataBytes: Buffer): number;
  close(hKey: Handle): number;
}
let bound: Api | undefined;

function api(): Api {
  if (bound) return bound;
  const advapi = koffi.load('advapi32.dll');
  bound = {
    open: advapi.func('long __stdcall RegOpenKeyExW(uintptr_t hKey, const char16_t *lpSubKey, uint32_t ulOptions, ' +
      'uint32_t samDesired, _Out_ uint8_t *phkResult)'),
    enumValue: advapi.func('long __stdcall RegEnumValueW(uintptr_t hKey, uint32_t dwIndex, ' +
      '_Out_ uint8_t *lpValueName, _Inout_ uint32_t *lpcchValueName, void *lpReserved, _Out_ uint32_t *lpType, ' +
      '_Out_ uint8_t *lpData, _Inout_ uint32_t *lpcbData)'),
    get: advapi.func('long __stdcall RegGetValueW(uintptr_t hkey, const char16_t *lpSubKey, const char16_t *lpValue, ' +
      'uint32_t dwFlags, _Out_ uint32_t *pdwType, _Out_ uint8_t *pvData, _Inout_ uint32_t *pcbData)'),
    close: advapi.func('long __stdcall RegCloseKey(uintptr_t hKey)'),
  } as unknown as Api;
  return bound;
}

/** A registry failure other than "not there". */
export class RegistryError extends Error {
  constructor(readonly what: string, readonly code: number) {
    super(`${what} failed with Windows error ${code}`);
  }
}

/** What a value holds: REG_SZ/REG_EXPAND_SZ → string, REG_DWORD/REG_QWORD → number, REG_MULTI_SZ → string[]. */
export type RegistryData = string | number | string[];

/** One value as read; `data` is null for a type not listed at RegistryData. */
export interface RegistryValue {
  name: string;
  type: number;
  data: RegistryData | null;
}

function decode(type: number, bytes: Buffer): RegistryData | null {
  switch (type) {
    case REG_SZ:
    case REG_EXPAND_SZ:
      return bytes.toString('utf16le').replace(/\0+$/, '');
    case REG_MULTI_SZ:
      return bytes.toString('utf16le').split('\0').filter((s) => s.length > 0);
    case REG_DWORD:
      return bytes.length >= 4 ? bytes.readUInt32LE(0) : null;
    case REG_QWORD:
      return bytes.length >= 8 ? Number(bytes.readBigUInt64LE(0)) : null;
    default:
      return null;
  }
}

function readHandle(buf: Buffer): Handle {
  return buf.length >= 8 ? Number(buf.readBigUInt64LE(0)) : buf.readUInt32LE(0);
}

/** An open key under HKLM; close it. */
export class RegistryKey {
  private constructor(private openHandle: Handle, readonly path: string) {}

  /**
   * Open `HKLM\<path>` for `access` (the least a caller needs: reading values by name asks fewer rights of the key
   * than listing and watching it); null when the key does not exist.
   */
  static openLocalMachine(path: string, access: KeyAccess = 'list-and-watch'): RegistryKey | null {
    const out = Buffer.alloc(koffi.sizeof('void *'));
    const rc = api().open(HKEY_LOCAL_MACHINE, path, 0, KEY_ACCESS[access] | KEY_WOW64_64KEY, out);
    if (rc === ERROR_FILE_NOT_FOUND) return null;
    if (rc !== ERROR_SUCCESS) throw new RegistryError(`Opening HKLM\\${path}`, rc);
    return new RegistryKey(readHandle(out), path);
  }

  /** The open key's handle (for registry-watch.ts); 0 once closed. */
  get handle(): Handle {
    return this.openHandle;
  }

  /** Every value of the key (RegEnumValueW for the names, then each read as `value` reads it), taken literally. */
  values(): RegistryValue[] {
    const out: RegistryValue[] = [];
    const name = Buffer.alloc(MAX_VALUE_NAME_CHARS * 2);
    const nameChars = Buffer.alloc(4);
    const type = Buffer.alloc(4);
    const bytes = Buffer.alloc(4);
    for (let index = 0; ; index++) {
      nameChars.writeUInt32LE(MAX_VALUE_NAME_CHARS, 0);
      bytes.writeUInt32LE(0, 0);
      const rc = api().enumValue(this.openHandle, index, name, nameChars, null, type, null, bytes);
      if (rc === ERROR_NO_MORE_ITEMS) return out;
      if (rc !== ERROR_SUCCESS && rc !== ERROR_MORE_DATA) {
        throw new RegistryError(`Listing the values of HKLM\\${this.path}`, rc);
      }
      const value = this.value(name.subarray(0, nameChars.readUInt32LE(0) * 2).toString('utf16le'));
      if (value) out.push(value);
    }
  }

  /**
   * One value (`null` as the name: the key's default value), or null when it is not there. REG_EXPAND_SZ is
   * expanded (%SystemRoot%...) only when `expand` says so.
   */
  value(valueName: string | null, { expand = false } = {}): RegistryValue | null {
    const type = Buffer.alloc(4);
    const bytes = Buffer.alloc(4);
    const flags = RRF_RT_ANY | (expand ? 0 : RRF_NOEXPAND);
    let data = Buffer.alloc(FIRST_DATA_BYTES);
    for (;;) {
      bytes.writeUInt32LE(data.length, 0);
      const rc = api().get(this.openHandle, null, valueName, flags, type, data, bytes);
      if (rc === ERROR_FILE_NOT_FOUND) return null;
      if (rc === ERROR_MORE_DATA) {
        data = Buffer.alloc(Math.max(bytes.readUInt32LE(0), data.length * 2));
        continue;
      }
      if (rc !== ERROR_SUCCESS) throw new RegistryError(`Reading HKLM\\${this.path}\\${valueName ?? '(default)'}`, rc);
      const t = type.readUInt32LE(0);
      return { name: valueName ?? '', type: t, data: decode(t, data.subarray(0, bytes.readUInt32LE(0))) };
    }
  }

  close(): void {
    if (this.openHandle) api().close(this.openHandle);
    this.openHandle = 0;
  }
}

/**
 * The data of one value under HKLM, REG_EXPAND_SZ expanded, or null when the key or value is absent or cannot be
 * read: the doctor's question, which reports what it finds and never fails on the registry.
 */
export function readRegistryValue(subKey: string, name: string | null): RegistryData | null {
  try {
    const key = RegistryKey.openLocalMachine(subKey, 'query');
    if (!key) return null;
    try {
      return key.value(name, { expand: true })?.data ?? null;
    } finally {
      key.close();
    }
  } catch (err) {
    if (err instanceof RegistryError) return null;
    throw err;
  }
}
