/**
 * Who a process is, on Windows: its executable's full path (OpenProcess with PROCESS_QUERY_LIMITED_INFORMATION, then
 * QueryFullProcessImageNameW) and, for a packaged (AppContainer) app, its package family name (GetPackageFamilyName,
 * Windows 8 and later; APPMODEL_ERROR_NO_PACKAGE for every other process). Through koffi, kernel32 only.
 *
 * Answers are cached per process id together with the process's creation time (GetProcessTimes): Windows reuses
 * process ids, and a reused id has another creation time, so it is looked up afresh. A process that has exited
 * cannot be opened: it has no identity (null). Asked once per new flow, never per packet.
 */
import koffi from 'koffi';

export interface ProcessIdentity {
  pid: number;
  /** Full path of the executable, as Windows spells it (C:\Program Files\...\app.exe). */
  imagePath: string;
  /** The executable's file name (app.exe). */
  processName: string;
  /** The AppContainer package family name (Microsoft.MicrosoftEdge.Stable_8wekyb3d8bbwe), null when not packaged. */
  packageFamilyName: string | null;
}

/** Looks a process up by id; null when it cannot be opened (exited, or not visible to us). */
export interface ProcessLookup {
  identify(pid: number): ProcessIdentity | null;
}

const PROCESS_QUERY_LIMITED_INFORMATION = 0x1000;
const ERROR_SUCCESS = 0;
/** GetPackageFamilyName: the process has no package identity. */
const APPMODEL_ERROR_NO_PACKAGE = 15700;
/** Long paths (\\?\ and long path support) may exceed MAX_PATH; 32767 UTF-16 units is the Windows limit. */
const MAX_IMAGE_CHARS = 32767;
/** PACKAGE_FAMILY_NAME_MAX_LENGTH + 1. */
const MAX_FAMILY_CHARS = 65;

interface Kernel32 {
  openProcess(access: number, inherit: number, pid: number): number;
  queryImageName(h: number, flags: number, buf: Buffer, size: Uint32Array): number;
  processTimes(h: number, created: BigUint64Array, exited: BigUint64Array, kernel: BigUint64Array,
    user: BigUint64Array): number;
  closeHandle(h: number): number;
  /** Absent on Windows 7 and on hosts whose kernel32 lacks it: then no process is packaged. */
  packageFamilyName: ((h: number, length: Uint32Array, buf: Buffer) => number) | null;
}

let bound: Kernel32 | undefined;

function kernel32(): Kernel32 {
  if (bound) return bound;
  const lib = koffi.load('kernel32.dll');
  let packageFamilyName: Kernel32['packageFamilyName'] = null;
  try {
    const args = ['intptr_t', '_Inout_ uint32_t *', 'void *'];
    packageFamilyName = lib.func('__stdcall', 'GetPackageFamilyName', 'int32_t', args) as Kernel32['packageFamilyName'];
  } catch {
    packageFamilyName = null;
  }
  bound = {
    openProcess: lib.func('__stdcall', 'OpenProcess', 'intptr_t', [
      'uint32_t',
      'int',
      'uint32_t',
    ]) as Kernel32['openProcess'],
    queryImageName: lib.func('__stdcall', 'QueryFullProcessImageNameW', 'int', [
      'intptr_t',
      'uint32_t',
      'void *',
      '_Inout_ uint32_t *',
    ]) as Kernel32['queryImageName'],
    processTimes: lib.func('__stdcall', 'GetProcessTimes', 'int', [
      'intptr_t',
      'void *',
      'void *',
      'void *',
      'void *',
    ]) as Kernel32['processTimes'],
    closeHandle: lib.func('__stdcall', 'CloseHandle', 'int', ['intptr_t']) as Kernel32['closeHandle'],
    packageFamilyName,
  };
  return bound;
}

/** The executable's file name from its full path. */
export function imageFileName(path: string): string {
  return path.slice(Math.max(path.lastIndexOf('\\'), path.lastIndexOf('/')) + 1);
}

/** Windows processes through kernel32, with a cache of `capacity` processes (oldest forgotten first). */
export class Win32ProcessLookup implements ProcessLookup {
  private readonly cache = new Map<number, { created: bigint; identity: ProcessIdentity }>();
  private readonly name = Buffer.alloc(MAX_IMAGE_CHARS * 2);
  private readonly family = Buffer.alloc(MAX_FAMILY_CHARS * 2);
  private readonly size = new Uint32Array(1);
  private readonly times = [new BigUint64Array(1), new BigUint64Array(1), new BigUint64Array(1), new BigUint64Array(1)];

  constructor(private readonly capacity: number) {}

  identify(pid: number): ProcessIdentity | null {
    const k = kernel32();
    const h = k.openProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid);
    if (!h) {
      this.cache.delete(pid);
      return null;
    }
    try {
      const [creation, exit, kernel, user] = this.times;
      const created = k.processTimes(h, creation, exit, kernel, user) ? creation[0] : 0n;
      const cached = this.cache.get(pid);
      if (cached && cached.created === created && created !== 0n) return cached.identity;
      this.size[0] = MAX_IMAGE_CHARS;
      if (!k.queryImageName(h, 0, this.name, this.size)) return null;
      const imagePath = this.name.toString('utf16le', 0, this.size[0] * 2);
      const processName = imageFileName(imagePath);
      const identity: ProcessIdentity = { pid, imagePath, processName, packageFamilyName: this.packageOf(h) };
      this.cache.delete(pid);
      this.cache.set(pid, { created, identity });
      if (this.cache.size > this.capacity) this.cache.delete(this.cache.keys().next().value as number);
      return identity;
    } finally {
      k.closeHandle(h);
    }
  }

  private packageOf(h: number): string | null {
    const get = kernel32().packageFamilyName;
    if (!get) return null;
    this.size[0] = MAX_FAMILY_CHARS;
    const rc = get(h, this.size, this.family);
    if (rc === APPMODEL_ERROR_NO_PACKAGE || rc !== ERROR_SUCCESS || this.size[0] === 0) return null;
    return this.family.toString('utf16le', 0, (this.size[0] - 1) * 2);
  }
}
