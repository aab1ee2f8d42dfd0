/**
 * koffi binding of WinDivert.dll (2.x). The library path is a parameter: on Windows it is the real WinDivert.dll
 * (or the mingw test double under Wine); on Linux it is the test double libwindivert_double.so.
 *
 * HANDLE is declared as `intptr_t`, so a handle is a plain number that can be posted between threads: the main
 * thread opens and shuts handles down, the worker receives and sends on them. BOOL is a 32-bit int. All pointer
 * arguments are passed as Buffers/TypedArrays, which koffi hands to C without copying.
 *
 * x64 Windows has a single calling convention, so the default one is right for both platforms. The last error
 * comes from kernel32's GetLastError on Windows (koffi keeps it intact between two foreign calls). Off Windows no
 * WinDivert exists but the test double, which keeps its last error thread-locally (WinDivertDoubleGetLastError):
 * the one trace of the double here, since the engine itself runs against it there. The double's own controls are
 * bound by the tests (test/packet-sources/windivert/double-controls.ts).
 */
import koffi from 'koffi';
type LibraryHandle = ReturnType<typeof koffi.load>;

/** WinDivertOpen layers (WINDIVERT_LAYER). */
export const WinDivertLayer = { Network: 0, NetworkForward: 1, Flow: 2, Socket: 3, Reflect: 4 } as const;

/**
 * WinDivertOpen flags we use (WINDIVERT_FLAG_*). Sniff, RecvOnly, NoInstall: the REFLECT-layer reader. Drop: matching
 * packets are dropped, never queued (no receive needed). Fragments: the handle sees inbound fragments one by one and
 * no reassembled packets (both: the fragment-drop handle).
 */
export const WinDivertFlag = { Sniff: 0x1n, Drop: 0x2n, RecvOnly: 0x4n, NoInstall: 0x10n, Fragments: 0x20n } as const;

/** WinDivertShutdown modes (WINDIVERT_SHUTDOWN). */
export const WinDivertShutdown = { Recv: 1, Send: 2, Both: 3 } as const;

/** WinDivertSetParam/GetParam parameters (WINDIVERT_PARAM). Version parameters are read-only. */
export const WinDivertParam = {
  QueueLength: 0,
  QueueTime: 1,
  QueueSize: 2,
  VersionMajor: 3,
  VersionMinor: 4,
} as const;

/** Longest filter text WinDivertHelperFormatFilter may give back (the REFLECT layer's event data is at most 12 KiB). */
const FORMAT_FILTER_MAX = 64 * 1024;

/** The handle value WinDivertOpen returns on failure (INVALID_HANDLE_VALUE). */
export const INVALID_HANDLE = -1;

/** Windows error codes seen from WinDivert (winerror.h). */
export const WinError = {
  FILE_NOT_FOUND: 2,
  ACCESS_DENIED: 5,
  INVALID_HANDLE: 6,
  INVALID_PARAMETER: 87,
  INSUFFICIENT_BUFFER: 122,
  NO_DATA: 232,
  INVALID_IMAGE_HASH: 577,
  DRIVER_FAILED_PRIOR_UNLOAD: 654,
  SERVICE_DOES_NOT_EXIST: 1060,
  /** ERROR_HOST_UNREACHABLE: SendEx of an impostor whose TTL ran out, or an injection loop between drivers. */
  HOST_UNREACHABLE: 1232,
  DRIVER_BLOCKED: 1275,
  EPT_S_NOT_REGISTERED: 1753,
} as const;

/** The WinDivert functions retroflect uses, with pointer arguments as Buffers/TypedArrays. */
export interface WinDivertApi {
  readonly path: string;
  /** Returns a handle, or INVALID_HANDLE (then read lastError()). */
  open(filter: string, layer: number, priority: number, flags: bigint): number;
  recvEx(handle: number, packet: Buffer, packetLen: number, recvLen: Uint32Array, addr: Buffer, addrLen: Uint32Array): boolean;
  /** recvEx on a thread of libuv's pool (koffi async), for a thread that must not block (the SOCKET reader). The
   *  buffers must stay untouched until it resolves. */
  recvExAsync(h: number, packet: Buffer, len: number, recvLen: Uint32Array, addr: Buffer, addrLen: Uint32Array):
    Promise<boolean>;
  sendEx(handle: number, packet: Buffer, packetLen: number, sendLen: Uint32Array | null, addr: Buffer, addrLen: number): boolean;
  shutdown(handle: number, how: number): boolean;
  close(handle: number): boolean;
  setParam(handle: number, param: number, value: bigint): boolean;
  getParam(handle: number, param: number, value: BigUint64Array): boolean;
  /** Windows error code of the last failed call on this thread. */
  lastError(): number;
  /** WinDivertHelperFormatFilter: a REFLECT event's filter object → filter text, or null. */
  formatFilter(object: Buffer, layer: number): string | null;
  /** WinDivertHelperEvalFilter: does `filter` match this packet (with its address)? null: the filter is refused. */
  evalFilter(filter: string, packet: Buffer, addr: Buffer): boolean | null;
}

/** One load per path and thread: koffi keeps the library mapped, and declaring functions twice is wasted work. */
const loaded = new Map<string, WinDivertApi>();

/** Load WinDivert (or its test double) from `path`. Throws koffi's error when the library cannot be loaded. */
export function loadWinDivert(path: string): WinDivertApi {
  const cached = loaded.get(path);
  if (cached) return cached;
  const lib = koffi.load(path);
  const open = lib.func('WinDivertOpen', 'intptr_t', ['str', 'int', 'int16_t', 'uint64_t']);
  const recvEx = lib.func('WinDivertRecvEx', 'int', ['intptr_t', 'void *', 'uint32_t', 'void *', 'uint64_t', 'void *', 'void *', 'void *']);
  const sendEx = lib.func('WinDivertSendEx', 'int', ['intptr_t', 'void *', 'uint32_t', 'void *', 'uint64_t', 'void *', 'uint32_t', 'void *']);
  const shutdown = lib.func('WinDivertShutdown', 'int', ['intptr_t', 'int']);
  const close = lib.func('WinDivertClose', 'int', ['intptr_t']);
  const setParam = lib.func('WinDivertSetParam', 'int', ['intptr_t', 'int', 'uint64_t']);
  const getParam = lib.func('WinDivertGetParam', 'int', ['intptr_t', 'int', 'void *']);
  const formatFilter = lib.func('WinDivertHelperFormatFilter', 'int', ['void *', 'int', 'void *', 'uint32_t']);
  const evalFilter = lib.func('WinDivertHelperEvalFilter', 'int', ['str', 'void *', 'uint32_t', 'void *']);

  const isDouble = hasSymbol(lib, 'WinDivertDoubleGetLastError');
  let lastError: () => number;
  if (process.platform === 'win32') {
    const getLastError = koffi.load('kernel32.dll').func('GetLastError', 'uint32_t', []);
    lastError = () => getLastError() as number;
  } else if (isDouble) {
    const doubleLastError = lib.func('WinDivertDoubleGetLastError', 'uint32_t', []);
    lastError = () => doubleLastError() as number;
  } else {
    lastError = () => koffi.errno();
  }

  const api: WinDivertApi = {
    path,
    open: (filter, layer, priority, flags) => Number(open(filter, layer, priority, flags)),
    recvEx: (h, packet, packetLen, recvLen, addr, addrLen) => recvEx(h, packet, packetLen, recvLen, 0n, addr, addrLen, null) !== 0,
    recvExAsync: (h, packet, packetLen, recvLen, addr, addrLen) =>
      new Promise<boolean>((resolve) => {
        const done = (err: unknown, res: number): void => resolve(!err && res !== 0);
        recvEx.async(h, packet, packetLen, recvLen, 0n, addr, addrLen, null, done);
      }),
    sendEx: (h, packet, packetLen, sendLen, addr, addrLen) => sendEx(h, packet, packetLen, sendLen, 0n, addr, addrLen, null) !== 0,
    shutdown: (h, how) => shutdown(h, how) !== 0,
    close: (h) => close(h) !== 0,
    setParam: (h, param, value) => setParam(h, param, value) !== 0,
    getParam: (h, param, value) => getParam(h, param, value) !== 0,
    lastError,
    formatFilter: (object, layer) => {
      const out = Buffer.alloc(FORMAT_FILTER_MAX);
      if (formatFilter(object, layer, out, out.length) === 0) return null;
      const end = out.indexOf(0);
      return out.toString('utf8', 0, end < 0 ? out.length : end);
    },
    evalFilter: (filter, packet, addr) => {
      if (evalFilter(filter, packet, packet.length, addr) !== 0) return true;
      return lastError() === WinError.INVALID_PARAMETER ? null : false;
    },
  };
  loaded.set(path, api);
  return api;
}

function hasSymbol(lib: LibraryHandle, name: string): boolean {
  try {
    lib.func(name, 'uint32_t', []);
    return true;
  } catch {
    return false;
  }
}
