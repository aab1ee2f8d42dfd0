/**
 * Windows: make `%ProgramData%\Retroflect` readable only by Administrators and SYSTEM, so the control token (and the
 * config) written there cannot be read by unelevated or remote users. Uses icacls with an argument array.
 */
import { execFile } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { promisify } from 'node:util';
import { ErrorCode, RetroflectError } from '../errors.ts';

const run = promisify(execFile);

/** Well-known SIDs: BUILTIN\Administrators and LOCAL SYSTEM (language-independent, unlike the names). */
const ADMINISTRATORS_SID = '*S-1-5-32-544';
const SYSTEM_SID = '*S-1-5-18';

/** The icacls arguments that drop inherited entries and grant full control (inherited by files and folders). */
export function icaclsArguments(dir: string): string[] {
  return [dir, '/inheritance:r', '/grant:r', `${ADMINISTRATORS_SID}:(OI)(CI)F`, `${SYSTEM_SID}:(OI)(CI)F`];
}

export async function restrictWindowsDirectory(dir: string): Promise<void> {
  mkdirSync(dir, { recursive: true });
  try {
    await run('icacls', icaclsArguments(dir), { windowsHide: true });
  } catch (err) {
    throw new RetroflectError(ErrorCode.ACCESS_DENIED, `Could not restrict access to ${dir} (icacls failed: ${(err as Error).message}).`, {
      hint: 'Run retroflect as Administrator; the control token must be readable by Administrators and SYSTEM only.',
      details: { path: dir },
      cause: err,
    });
  }
}
