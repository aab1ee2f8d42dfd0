/**
 * Reading one registry value (advapi32 RegGetValueW, through koffi): the doctor's source for the WinDivert service's
 * ImagePath, code-integrity states, firewall rules and network-isolation ranges. Read-only.
 */
import koffi from 'koffi';

/** Predefined keys, as the sign-extended handle values Windows defines (winreg.h). */
export const HKEY_LOCAL_MACHINE = -2147483646; // (HKEY)(ULONG_PTR)(LONG)0x80000002
const RRF_RT_ANY = 0x0000ffff;
const REG_SZ = 1;
const REG_EXPAND_SZ = 2;
const REG_DWORD = 4;
const REG_MULTI_SZ = 7;
const REG_QWORD = 11;
const ERROR_SUCCESS = 0;
const ERROR_MORE_DATA = 234;
/** Values are small; a larger one is not what we look for. */
const MAX_VALUE_BYTES = 1 << 20;

type RegGetValueW = (hkey: number, subKey: string, value: string | null, flags: number, type: Uint32Array,
  data: Buffer | null, size: Uint32Array) => number;
let bound: RegGetValueW | undefined;

function api(): RegGetValueW {
  bound ??= koffi.load('advapi32.dll').func('__stdcall', 'RegGetValueW', 'int32_t', ['intptr_t', 'str16', 'str16',
    'uint32_t', '_Out_ uint32_t *', 'void *', '_Inout_ uint32_t *']) as RegGetValueW;
  return bound;
}

export type RegistryValue = string | number | string[];

/** The value (REG_SZ/EXPAND_SZ expanded → string, DWORD/QWORD → number, MULTI_SZ → string[]), or null when absent. */
export function readRegistryValue(subKey: string, name: string | null,
  hkey = HKEY_LOCAL_MACHINE): RegistryValue | null {
  const type = new Uint32Array(1);
  const size = new Uint32Array(1);
  let rc = api()(hkey, subKey, name, RRF_RT_ANY, type, null, size);
  if (rc !== ERROR_SUCCESS && rc !== ERROR_MORE_DATA) return null;
  if (size[0] > MAX_VALUE_BYTES) return null;
  const data = Buffer.alloc(Math.max(size[0], 8));
  size[0] = data.length;
  rc = api()(hkey, subKey, name, RRF_RT_ANY, type, data, size);
  if (rc !== ERROR_SUCCESS) return null;
  const bytes = data.subarray(0, size[0]);
  switch (type[0]) {
    case REG_SZ:
    case REG_EXPAND_SZ:
      return bytes.toString('utf16le').replace(/\0+$/, '');
    case REG_MULTI_SZ:
      return bytes.toString('utf16le').split('\0').filter((s) => s.length > 0);
    case REG_DWORD:
      return bytes.readUInt32LE(0);
    case REG_QWORD:
      return Number(bytes.readBigUInt64LE(0));
    default:
      return null;
  }
}
