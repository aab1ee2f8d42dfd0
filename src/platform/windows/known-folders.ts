/**
 * Windows: where ProgramData really is, from the shell's known folder (SHGetKnownFolderPath, FOLDERID_ProgramData)
 * rather than the environment. A service gets another environment than an admin's console (its working folder is
 * C:\Windows, and under Wine even its %ProgramData% differs), while config, control token and logs must be the
 * ones the admin's tools use.
 */
import koffi from 'koffi';

/** FOLDERID_ProgramData {62AB5D82-FDC1-4DC3-A9DD-070D1D495D97} as the GUID struct's bytes (little-endian fields). */
const FOLDERID_PROGRAM_DATA = Buffer.from([
  0x82, 0x5d, 0xab, 0x62, 0xc1, 0xfd, 0xc3, 0x4d, 0xa9, 0xdd, 0x07, 0x0d, 0x1d, 0x49, 0x5d, 0x97,
]);
const S_OK = 0;

/** The ProgramData folder, or null when the shell cannot tell. */
export function programDataFolder(): string | null {
  const shell32 = koffi.load('shell32.dll');
  const ole32 = koffi.load('ole32.dll');
  const getPath = shell32.func('__stdcall', 'SHGetKnownFolderPath', 'int32',
    ['void *', 'uint32', 'void *', koffi.out(koffi.pointer('void *'))]);
  const free = ole32.func('__stdcall', 'CoTaskMemFree', 'void', ['void *']);
  const out: unknown[] = [null];
  const hr = getPath(FOLDERID_PROGRAM_DATA, 0, null, out) as number;
  const ptr = out[0];
  try {
    return hr === S_OK && ptr ? koffi.decode.string16(ptr) : null;
  } finally {
    if (ptr) free(ptr);
  }
}
