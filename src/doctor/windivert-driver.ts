/**
 * The `WinDivert` driver service entry and its safe lifecycle. WinDivert.dll creates the entry (a kernel driver
 * service named WinDivert, ImagePath = the WinDivert64.sys beside the DLL) at the first open, starts it and at once
 * marks it for deletion, so normally it vanishes when the last handle closes. An entry that stays while the driver
 * is stopped — left by a crash, an older tool or an update — is STALE when its ImagePath names a file that is gone
 * or of another version than ours: every later open then starts that file (error 2, or another driver's refusal).
 *
 * Removing the entry is safe only when no program holds a WinDivert handle (the REFLECT layer says so) and the entry
 * is ours or stale; another tool's live driver is never touched.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { locateWinDivert, openWinDivertHandles, type OpenWinDivertHandle } from '../packet-sources/host-facts.ts';
import { queryService, stopAndDeleteService, type ServiceFacts } from '../platform/windows/services.ts';
import { readPeFacts } from './pe-file.ts';

export const DRIVER_SERVICE = 'WinDivert';
export const DRIVER_FILE = 'WinDivert64.sys';

/**
 * The ImagePath of a kernel driver as a file path: `\??\C:\x.sys` → `C:\x.sys`; `\SystemRoot\...` and
 * `System32\...` under %SystemRoot%.
 */
export function driverImageFile(imagePath: string, systemRoot = process.env.SystemRoot ?? 'C:\\Windows'): string {
  let p = imagePath.trim().replace(/^"(.*)"$/, '$1');
  if (p.startsWith('\\??\\')) p = p.slice(4);
  if (/^\\SystemRoot\\/i.test(p)) p = systemRoot + p.slice('\\SystemRoot'.length);
  else if (/^system32\\/i.test(p)) p = `${systemRoot}\\${p}`;
  return p;
}

export interface DriverState {
  /** Our WinDivert.dll (null when none is found) and the WinDivert64.sys beside it. */
  dll: string | null;
  ourDriver: string | null;
  ourVersion: string | null;
  service: ServiceFacts | null;
  /** The file the entry's ImagePath names, whether it exists, its version. */
  imageFile: string | null;
  imageExists: boolean;
  imageVersion: string | null;
  /** The entry names our file (same path), or stale (gone / other version) — either way ours to remove. */
  ours: boolean;
  stale: boolean;
  /** Why it is stale, in words. */
  staleReason: string | null;
}

const samePath = (a: string,
  b: string): boolean => a.replace(/\//g, '\\').toLowerCase() === b.replace(/\//g, '\\').toLowerCase();

function versionOf(path: string): string | null {
  try {
    return readPeFacts(path).version;
  } catch {
    return null;
  }
}

export function driverState(windivertDir?: string): DriverState {
  const dll = locateWinDivert({ windivertDir }).path;
  const ourDriver = dll ? join(dirname(dll), DRIVER_FILE) : null;
  const ourVersion = ourDriver && existsSync(ourDriver) ? versionOf(ourDriver) : null;
  const service = queryService(DRIVER_SERVICE);
  const imageFile = service?.imagePath ? driverImageFile(service.imagePath) : null;
  const imageExists = imageFile !== null && existsSync(imageFile);
  const imageVersion = imageExists ? versionOf(imageFile!) : null;
  let staleReason: string | null = null;
  if (service && service.state !== 'running') {
    if (!imageFile) staleReason = 'it has no ImagePath';
    else if (!imageExists) staleReason = `its ImagePath ${imageFile} is gone`;
    else if (ourVersion && imageVersion && imageVersion !== ourVersion) staleReason = `its ImagePath ${imageFile} is ` +
      `version ${imageVersion}, ours is ${ourVersion}`;
  }
  return {
    dll,
    ourDriver,
    ourVersion,
    service,
    imageFile,
    imageExists,
    imageVersion,
    ours: imageFile !== null && ourDriver !== null && samePath(imageFile, ourDriver),
    stale: staleReason !== null,
    staleReason,
  };
}

/** WinDivert handles open on this host, except those of `exceptPids` (this process, our engine). */
export async function otherWinDivertHandles(dll: string,
  exceptPids: readonly number[]): Promise<OpenWinDivertHandle[]> {
  return (await openWinDivertHandles(dll)).filter((h) => !exceptPids.includes(h.processId));
}

export interface DriverRelease {
  /** 'removed', or why not: 'absent', 'in-use', 'not-ours', 'unchecked' (WinDivert could not be asked). */
  outcome: 'removed' | 'absent' | 'in-use' | 'not-ours' | 'unchecked';
  detail: string;
  holders: OpenWinDivertHandle[];
  state: DriverState;
}

/**
 * Uninstall / upgrade / --repair: remove the driver service entry when that is safe. `onlyStale`: remove it only if
 * stale (the doctor's --repair); otherwise also when it is ours (uninstall, upgrade).
 */
export async function releaseDriverService(
  opts: { windivertDir?: string; exceptPids?: number[]; onlyStale?: boolean } = {},
): Promise<DriverRelease> {
  const state = driverState(opts.windivertDir);
  if (!state.service) return { outcome: 'absent', detail: `No ${DRIVER_SERVICE} driver service entry exists.`,
    holders: [], state };
  const removable = opts.onlyStale ? state.stale : state.ours || state.stale;
  if (!removable) {
    return { outcome: 'not-ours',
      detail: `The ${DRIVER_SERVICE} service entry names ${state.imageFile ?? '(no file)'}, which is not ` +
        `ours${opts.onlyStale ? ' and not stale' : ''}: left alone.`,
      holders: [], state };
  }
  // NO_INSTALL never installs or starts the driver (the DLL returns 1060 when its device is absent), so asking is safe
  // even with a stale entry. Without our DLL, or when asking fails, nothing proves the driver unused: leave it.
  let holders: OpenWinDivertHandle[];
  try {
    if (!state.dll) throw new Error('WinDivert.dll was not found');
    holders = await otherWinDivertHandles(state.dll, [process.pid, ...(opts.exceptPids ?? [])]);
  } catch (err) {
    return { outcome: 'unchecked',
      detail: `Left the ${DRIVER_SERVICE} driver service alone: could not ask WinDivert which handles are open ` +
        `(${(err as Error).message}).`,
      holders: [], state };
  }
  if (holders.length) {
    return {
      outcome: 'in-use',
      detail: `Left the ${DRIVER_SERVICE} driver service alone: ${holders.length} WinDivert handle(s) are open ` +
        `(process ${[...new Set(holders.map((h) => h.processId))].join(', ')}); removing it would break ` +
          `${holders.length === 1 ? 'that program' : 'those programs'}.`,
      holders,
      state,
    };
  }
  stopAndDeleteService(DRIVER_SERVICE);
  return { outcome: 'removed',
    detail: `Removed the ${DRIVER_SERVICE} driver service entry ` +
      `(${state.stale ? state.staleReason : `it named our ${state.imageFile}`}); the next open installs it afresh.`,
    holders: [], state };
}
