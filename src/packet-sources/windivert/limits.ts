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
 * only to handles ranked below it (a handle skips packets injected at its own or a LOWER rank). The driver ranks
 * handles by an internal priority, the user priority << 16 | a host-wide per-open counter (16 bits, wrapping), so
 * among handles of equal user priority the newer normally ranks higher and an OLDER one sees what it injects.
 * Handles of equal priority with overlapping filters therefore run in an order that depends on when each was
 * opened, and 0 is the documented default every other WinDivert tool uses, so 0 would make our order against such a
 * tool a matter of chance. We take a priority above 0 on purpose:
 *  - a packet to a reflect address must be reflected before any other tool acts on it (a VPN capturing it first
 *    would send it off the host, where it was never meant to go);
 *  - shielded packets are dropped before other tools spend work on them, and our reflected packets reach tools of
 *    lower priority as the ordinary inbound packets they now are;
 *  - it is far from the maximum, so an admin can still place a tool above retroflect, and a second engine on the
 *    same host can take its own value with `--priority`.
 */
export const WINDIVERT_PRIORITY = { DEFAULT: 1000, MIN: -30000, MAX: 30000 } as const;

/*
 * Queue settings (WINDIVERT_PARAM_QUEUE_*) applied to every handle. Our length and size defaults are twice
 * WinDivert's own (4096 packets, 4 MiB) so a busy worker does not lose bursts; the time limit is WinDivert's default
 * (2000 ms). A full queue drops its OLDEST packets to make room (driver source); a dropped packet is never
 * re-injected, so an outbound packet to a reflect address is lost rather than leaked.
 */
/** Packets a handle may hold; at the limit WinDivert drops the oldest to queue a new one. */
export const WINDIVERT_QUEUE_LENGTH = { DEFAULT: 8192, MIN: 32, MAX: 16384 } as const;
/** Milliseconds a packet may wait in the queue before WinDivert drops it. */
export const WINDIVERT_QUEUE_TIME_MS = { DEFAULT: 2000, MIN: 100, MAX: 16000 } as const;
/** Bytes a handle may hold; at the limit WinDivert drops the oldest packets to queue a new one. */
export const WINDIVERT_QUEUE_SIZE_BYTES = { DEFAULT: 8 * 1024 * 1024, MIN: 65535, MAX: 33554432 } as const;

/** At most this many packets per RecvEx/SendEx (WINDIVERT_BATCH_MAX). */
export const WINDIVERT_BATCH_MAX = 255;
/** The largest packet WinDivert hands out (WINDIVERT_MTU_MAX): 40 bytes of IPv6 header + a 65535-byte payload. */
export const WINDIVERT_MTU_MAX = 40 + 0xffff;
/** Packet bytes per batch: room for many full-size packets, and always for one of WinDivert's largest. */
export const WINDIVERT_BATCH_BYTES = Math.max(512 * 1024, WINDIVERT_MTU_MAX);

/**
 * The most tests one compiled filter may have. WINDIVERT_FILTER_MAXLEN is 256, but the driver refuses a filter
 * object of 256 or more tests (`length >= WINDIVERT_FILTER_MAXLEN`), so 255 is the ceiling.
 */
export const WINDIVERT_FILTER_MAX_TESTS = 255;
/**
 * The most tokens a filter string may have: the DLL tokenizes into a table of 5 × 256 entries and refuses the
 * filter once 1,278 entries are used before the end token.
 */
export const WINDIVERT_FILTER_MAX_TOKENS = 1277;

/*
 * The app gate (app-gate.ts): who may use a reflect address with an `apps` list. The SOCKET layer reports a connect
 * before the flow's first packet, but on another handle, so the packet may be read first: its flow's first packets
 * are held until the event is read, for at most APP_HOLD_MS, then refused ("no socket event"). Held packets are
 * copies in memory the gate owns, so their number and bytes are capped; past a cap a new flow is refused at once.
 */
/** Milliseconds a new flow's first packets wait for its socket event. The event is normally read within a few
 *  milliseconds; 150 ms keeps a refused client's wait far below a TCP retransmission (1 s and more). */
export const APP_HOLD_MS = { DEFAULT: 150, MIN: 10, MAX: 1000 } as const;
/** Flows that may wait for their socket event at once. */
export const APP_HOLD_FLOWS = { DEFAULT: 256, MIN: 1, MAX: 4096 } as const;
/** Packets held over all waiting flows (a flow's first packets: a SYN and its retransmissions, a few datagrams). */
export const APP_HOLD_PACKETS = { DEFAULT: 1024, MIN: 1, MAX: 16384 } as const;
/** Bytes held over all waiting flows. */
export const APP_HOLD_BYTES = { DEFAULT: 4 * 1024 * 1024, MIN: 65536, MAX: 64 * 1024 * 1024 } as const;
/** Connect events kept until their flow's first packet is seen (older ones are forgotten first). */
export const SOCKET_EVENTS_KEPT = { DEFAULT: 4096, MIN: 16, MAX: 65536 } as const;
/** Milliseconds a connect event is kept waiting for its flow's first packet. */
export const SOCKET_EVENT_TTL_MS = 10_000;
/** Decided flows remembered (the oldest idle ones are forgotten first; a forgotten flow is asked again). */
export const APP_FLOWS_KEPT = { DEFAULT: 16384, MIN: 16, MAX: 262144 } as const;
/** Socket events per WinDivertRecvEx on the SOCKET handle. */
export const SOCKET_EVENT_BATCH = 64;
/** Processes whose image path and package the gate keeps (by process id and creation time). */
export const PROCESS_CACHE_SIZE = 1024;
