/**
 * koffi binding of the TEST DOUBLE's own controls (native/windivert_double.c): the functions a real WinDivert.dll
 * does not have, through which the tests play the network stack (inject packets, read what was sent, make calls
 * fail). Kept out of the shipped binding (src/packet-sources/windivert/ffi.ts), which binds only WinDivert's API.
 */
import koffi from 'koffi';

export interface WinDivertDoubleControl {
  /** Hand a packet to the driver as the stack would: 1 = a handle queued it, 2 = inbound fragment held for
   *  reassembly, 3 = a WINDIVERT_FLAG_DROP handle blocked it, 0 = no handle took it (it went to the wire). */
  inject(packet: Buffer, len: number, addr: Buffer): number;
  injectRepeat(packet: Buffer, len: number, addr: Buffer, count: number): number;
  /** Evaluate a filter on one packet with the double's compiler: 1 match, 0 no match, -1 refused. */
  matches(filter: string, packet: Buffer, len: number, addr: Buffer): number;
  /** SendEx packets at batch position `index` (-1 any) matching `filter` ('' all) fail softly with `code` (0 off). */
  setSendFailure(index: number, filter: string | null, code: number): number;
  /** Take packets off the wire; origins: 1 sent by a handle, 2 released by a close, 3 no handle took it. */
  collectSent(buf: Buffer, bufLen: number, bytes: Uint32Array, addrs: Buffer, handles: BigInt64Array | null, origins: Uint8Array | null, max: number): number;
  sentCount(): number;
  discardSent(): number;
  setKeepSent(keep: number): void;
  totalSent(): bigint | number;
  lastFilter(buf: Buffer | null, len: number): number;
  lastOpenReason(buf: Buffer | null, len: number): number;
  lastPriority(): number;
  lastFlags(): bigint | number;
  lastLayer(): number;
  openHandles(): number;
  queued(handle: number): number;
  setOpenError(code: number): void;
  /** Set the driver's per-open counter (low 16 bits of internal priorities; the next open takes value + 1). */
  setPriorityCounter(value: number): void;
  /** The stack performed a socket operation: every open SOCKET handle whose filter matches queues the event
   *  (address: Event 3..7, Socket.* fields). Returns how many did, -1 for an event that is not a socket one. */
  socketEvent(addr: Buffer): number;
  /** Packets full handle queues dropped, oldest first, since the last reset. */
  queueDropped(): bigint | number;
  reset(): void;
}

/** One binding per path and thread (the library is the one ffi.ts loaded: the OS maps it once per process). */
const bound = new Map<string, WinDivertDoubleControl>();

/** Bind the double's controls in the library at `path`; throws when the library is not the double. */
export function bindDoubleControls(path: string): WinDivertDoubleControl {
  const cached = bound.get(path);
  if (cached) return cached;
  const lib = koffi.load(path);
  const control: WinDivertDoubleControl = {
    inject: lib.func('WinDivertDouble_Inject', 'int', ['void *', 'uint32_t', 'void *']),
    injectRepeat: lib.func('WinDivertDouble_InjectRepeat', 'uint32_t', ['void *', 'uint32_t', 'void *', 'uint32_t']),
    matches: lib.func('WinDivertDouble_Matches', 'int', ['str', 'void *', 'uint32_t', 'void *']),
    setSendFailure: lib.func('WinDivertDouble_SetSendFailure', 'int', ['int32_t', 'str', 'uint32_t']),
    collectSent: lib.func('WinDivertDouble_CollectSent', 'uint32_t', ['void *', 'uint32_t', 'void *', 'void *', 'void *', 'void *', 'uint32_t']),
    sentCount: lib.func('WinDivertDouble_SentCount', 'uint32_t', []),
    discardSent: lib.func('WinDivertDouble_DiscardSent', 'uint32_t', []),
    setKeepSent: lib.func('WinDivertDouble_SetKeepSent', 'void', ['int']),
    totalSent: lib.func('WinDivertDouble_TotalSent', 'uint64_t', []),
    lastFilter: lib.func('WinDivertDouble_LastFilter', 'uint32_t', ['void *', 'uint32_t']),
    lastOpenReason: lib.func('WinDivertDouble_LastOpenReason', 'uint32_t', ['void *', 'uint32_t']),
    lastPriority: lib.func('WinDivertDouble_LastPriority', 'int16_t', []),
    lastFlags: lib.func('WinDivertDouble_LastFlags', 'uint64_t', []),
    lastLayer: lib.func('WinDivertDouble_LastLayer', 'int', []),
    openHandles: lib.func('WinDivertDouble_OpenHandles', 'uint32_t', []),
    queued: lib.func('WinDivertDouble_Queued', 'uint32_t', ['intptr_t']),
    setOpenError: lib.func('WinDivertDouble_SetOpenError', 'void', ['uint32_t']),
    setPriorityCounter: lib.func('WinDivertDouble_SetPriorityCounter', 'void', ['uint32_t']),
    queueDropped: lib.func('WinDivertDouble_QueueDropped', 'uint64_t', []),
    socketEvent: lib.func('WinDivertDouble_SocketEvent', 'int', ['void *']),
    reset: lib.func('WinDivertDouble_Reset', 'void', []),
  };
  bound.set(path, control);
  return control;
}

/** The filter the double last saw opened, as text. */
export function doubleLastFilter(double: WinDivertDoubleControl): string {
  return readDoubleText(double.lastFilter);
}

/** Why the double's last WinDivertOpen failed ('' when it succeeded). */
export function doubleLastOpenReason(double: WinDivertDoubleControl): string {
  return readDoubleText(double.lastOpenReason);
}

function readDoubleText(read: (buf: Buffer | null, len: number) => number): string {
  const len = read(null, 0);
  const buf = Buffer.alloc(len + 1);
  read(buf, len + 1);
  return buf.toString('utf8', 0, len);
}
