/**
 * Where retroflect looks for WinDivert.dll (WinDivert64.sys must sit beside it; the DLL installs the driver from
 * its own folder). First match wins:
 *   1. the `--windivert-dir` option,
 *   2. the RETROFLECT_WINDIVERT_DIR environment variable,
 *   3. the folder of the running executable (retroflect.exe, or node.exe when run from source),
 *   4. %ProgramFiles%\Retroflect (the installer's folder).
 * Only file existence is checked here; nothing is loaded, so `run --dry-run` can show the result.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';

export const WINDIVERT_DLL_NAME = 'WinDivert.dll';

export interface LocateOptions {
  windivertDir?: string;
  env?: NodeJS.ProcessEnv;
  execPath?: string;
  exists?: (path: string) => boolean;
}

/** Candidate DLL paths in search order, without duplicates. */
export function winDivertCandidates(opts: LocateOptions = {}): string[] {
  const env = opts.env ?? process.env;
  const dirs = [
    opts.windivertDir,
    env.RETROFLECT_WINDIVERT_DIR,
    dirname(opts.execPath ?? process.execPath),
    env.ProgramFiles ? join(env.ProgramFiles, 'Retroflect') : undefined,
  ].filter((d): d is string => typeof d === 'string' && d.length > 0);
  return [...new Set(dirs.map((d) => join(d, WINDIVERT_DLL_NAME)))];
}

/** The first candidate that exists, and every path looked at (for the error message). */
export function locateWinDivert(opts: LocateOptions = {}): { path: string | null; searched: string[] } {
  const exists = opts.exists ?? existsSync;
  const searched = winDivertCandidates(opts);
  return { path: searched.find((p) => exists(p)) ?? null, searched };
}
