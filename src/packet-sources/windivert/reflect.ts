/**
 * Which WinDivert handles are open on this host, found as WinDivert documents it: a handle on the REFLECT layer
 * (opened with SNIFF | RECV_ONLY | NO_INSTALL, filter "true") first receives one WINDIVERT_EVENT_REFLECT_OPEN per
 * handle already open on any other layer, with the opener's process id, layer, flags and priority in the address
 * and its filter object as the data (WinDivertHelperFormatFilter turns that into text). Shut down at once, it hands
 * those out and then fails with ERROR_NO_DATA. NO_INSTALL makes the open fail with ERROR_SERVICE_DOES_NOT_EXIST
 * instead of installing the driver when it is not loaded: then no handle is open anywhere.
 */
import { RetroflectError, ErrorCode } from '../../errors.ts';
import { INVALID_HANDLE, loadWinDivert, WinDivertFlag, WinDivertLayer, WinDivertShutdown, WinError,
  type WinDivertApi } from './ffi.ts';

export interface OpenWinDivertHandle {
  processId: number;
  /** WINDIVERT_LAYER number (0 network, 1 forward, 2 flow, 3 socket), and its name. */
  layer: number;
  layerName: string;
  priority: number;
  /** WINDIVERT_FLAG_* bits, as a number (they fit in 32 bits). */
  flags: number;
  /** When it was opened (QueryPerformanceCounter ticks). */
  openedAt: string;
  /** Its filter as text, or null when the helper could not format it. */
  filter: string | null;
}

const ADDRESS_SIZE = 80;
const EVENT_REFLECT_OPEN = 8;
/** One event's data (the filter object) is at most this long (the driver's reflect packet buffer is 12 KiB). */
const EVENT_DATA_MAX = 12288;
/** A REFLECT reader that gets more events than this stops: no host has that many WinDivert users. */
const MAX_EVENTS = 4096;

const LAYER_NAMES: Record<number, string> = { 0: 'network', 1: 'network-forward', 2: 'flow', 3: 'socket',
  4: 'reflect' };

/** Decode the REFLECT part of a WINDIVERT_ADDRESS (union at offset 16: Timestamp, ProcessId, Layer, Flags,
  Priority). */
export function decodeReflectAddress(
  addr: Buffer,
): { event: number; processId: number; layer: number; flags: number; priority: number; openedAt: bigint } {
  const bits = addr.readUInt32LE(8);
  return {
    event: (bits >> 8) & 0xff,
    openedAt: addr.readBigInt64LE(16),
    processId: addr.readUInt32LE(24),
    layer: addr.readUInt32LE(28),
    flags: Number(addr.readBigUInt64LE(32) & 0xffffffffn),
    priority: addr.readInt16LE(40),
  };
}

/** Every WinDivert handle open on this host (none when the driver is not loaded). Throws when the open fails. */
export function listWinDivertHandles(api: WinDivertApi): OpenWinDivertHandle[] {
  const h = api.open('true', WinDivertLayer.Reflect, 0,
    WinDivertFlag.Sniff | WinDivertFlag.RecvOnly | WinDivertFlag.NoInstall);
  if (h === INVALID_HANDLE) {
    const code = api.lastError();
    if (code === WinError.SERVICE_DOES_NOT_EXIST) return [];
    throw new RetroflectError(ErrorCode.BACKEND_UNAVAILABLE,
      `WinDivert's REFLECT layer could not be opened (Windows error ${code}).`, {
      hint: 'Run as Administrator; see the driver checks for why WinDivert does not open.',
      details: { windowsError: code },
    });
  }
  const out: OpenWinDivertHandle[] = [];
  try {
    api.shutdown(h, WinDivertShutdown.Both);
    const data = Buffer.alloc(EVENT_DATA_MAX);
    const addr = Buffer.alloc(ADDRESS_SIZE);
    const recvLen = new Uint32Array(1);
    const addrLen = new Uint32Array(1);
    for (let i = 0; i < MAX_EVENTS; i++) {
      addrLen[0] = ADDRESS_SIZE;
      if (!api.recvEx(h, data, data.length, recvLen, addr, addrLen)) {
        const code = api.lastError();
        if (code === WinError.NO_DATA) break;
        if (code === WinError.INSUFFICIENT_BUFFER) continue; // one oversized filter object: skip that event
        throw new RetroflectError(ErrorCode.BACKEND_FAILED,
          `Reading WinDivert's REFLECT layer failed (Windows error ${code}).`, { details: { windowsError: code } });
      }
      const r = decodeReflectAddress(addr);
      if (r.event !== EVENT_REFLECT_OPEN) continue;
      const object = Buffer.from(data.subarray(0, recvLen[0]));
      out.push({ processId: r.processId, layer: r.layer, layerName: LAYER_NAMES[r.layer] ?? String(r.layer),
        priority: r.priority, flags: r.flags, openedAt: r.openedAt.toString(), filter: api.formatFilter(object,
        r.layer) });
    }
  } finally {
    api.close(h);
  }
  return out;
}

/** The same, with WinDivert (or its test double) loaded from `dll`. */
export function listWinDivertHandlesAt(dll: string): OpenWinDivertHandle[] {
  return listWinDivertHandles(loadWinDivert(dll));
}
