/**
 * Every WinDivert default and limit retroflect uses, each once, DEFAULT/MIN/MAX together (windivert.h style). The
 * MIN/MAX values are WinDivert's documented ones; the DEFAULTs are ours (why: at each). No koffi here: this module is
 * safe to load on any platform, and it is the one file of this backend that layers above may import (through
 * ../registry.ts, which re-exports it).
 */

/**
 * WinDivertOpen priority: higher sees packets first.
 *
 * WinDivert hands a packet to the matching handle of highest priority first; what that handle re-injects goes on
 * only to handles of LOWER priority. Handles of equal priority with overlapping filters run in an undefined order,
 * and 0 is the documented default every other WinDivert tool uses, so 0 would make our order against such a tool
 * a matter of chance. We take a priority above 0 on purpose:
 *  - a packet to a reflect address must be reflected before any other tool acts on it (a VPN capturing it first
 *    would send it off the host, where it was never meant to go);
 *  - shielded packets are dropped before other tools spend work on them, and our reflected packets reach tools of
 *    lower priority as the ordinary inbound packets they now are;
 *  - it is far from the maximum, so an admin can still place a tool above retroflect, and a second engine on the
 *    same host can take its own value with `--priority`.
 */
export const WINDIVERT_PRIORITY = { DEFAULT: 1000, MIN: -30000, MAX: 30000 } as const;

/*
 * Queue settings (WINDIVERT_PARAM_QUEUE_*) applied to every handle. Our defaults are larger than WinDivert's own
 * (4096 packets, 2000 ms, 4 MiB) so a busy worker does not lose bursts.
 */
/** Packets a handle may hold before WinDivert drops new ones. */
export const WINDIVERT_QUEUE_LENGTH = { DEFAULT: 8192, MIN: 32, MAX: 16384 } as const;
/** Milliseconds a packet may wait in the queue before WinDivert drops it. */
export const WINDIVERT_QUEUE_TIME_MS = { DEFAULT: 2000, MIN: 100, MAX: 16000 } as const;
/** Bytes a handle may hold before WinDivert drops new packets. */
export const WINDIVERT_QUEUE_SIZE_BYTES = { DEFAULT: 8 * 1024 * 1024, MIN: 65535, MAX: 33554432 } as const;

/** At most this many packets per RecvEx/SendEx (WINDIVERT_BATCH_MAX). */
export const WINDIVERT_BATCH_MAX = 255;
/** The largest packet WinDivert hands out (WINDIVERT_MTU_MAX): 40 bytes of IPv6 header + a 65535-byte payload. */
export const WINDIVERT_MTU_MAX = 40 + 0xffff;
/** Packet bytes per batch: room for many full-size packets, and always for one of WinDivert's largest. */
export const WINDIVERT_BATCH_BYTES = Math.max(512 * 1024, WINDIVERT_MTU_MAX);

/** WinDivert's limit on the tests of one compiled filter (WINDIVERT_FILTER_MAXLEN). */
export const WINDIVERT_FILTER_MAX_TESTS = 256;
