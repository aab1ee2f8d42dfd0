/**
 * The contract every packet backend implements (one folder per backend: tun/, windivert/, and memory/ for tests and
 * development; registry.ts picks one),
 * in the shape of mitmproxy_rs's `packet_sources`. A backend has two halves:
 *  - `HostBackend` runs in the main thread: it prepares the host (device, routes, firewall rules), applies live
 *    changes to that host state, and undoes all of it on stop — including leftovers of a run that was killed.
 *  - `PacketSource` runs in the worker thread: it receives batches of packets and sends them back by verdict.
 */
import type { InterceptConfig } from '../config/intercept-config.ts';
import type { CaptureInterest } from '../packet/capture-interest.ts';
import type { AllowWhoKind } from '../config/allow-lists.ts';
import type { SocketOwner, SocketQuery } from '../platform/linux/socket-owners.ts';
import type { FirewallDropCause } from '../packet/verdicts.ts';
import type { FlowRecord } from '../packet/flow-record.ts';
import type { ParsedPacket } from '../packet/parse.ts';

/** A batch of packets, allocated once per source and reused for every receive (no allocation per packet). */
export interface PacketBatch {
  /** Packet bytes; packet i is data[offset[i] .. offset[i] + length[i]). */
  data: Buffer;
  offset: Uint32Array;
  length: Uint32Array;
  /** 1 = this host sent it (outbound), 0 = it arrived from another host. */
  outbound: Uint8Array;
  /** The OS index of the interface it leaves through or arrived on (TUN: the device; WinDivert: IfIdx); 0 = unknown. */
  ifIndex: Uint32Array;
  /**
   * 1 = another driver on this host injected it (WinDivert's Impostor flag), 0 = it came from the network or from
   * this host's own stack (TUN and memory: always 0). The data plane tells our reflected packets, re-injected by a
   * third-party driver, from forged ones by it.
   */
  injected: Uint8Array;
  /** Filled by the worker loop with `Verdict` values (packet/verdicts.ts). */
  verdict: Uint8Array;
  /**
   * 1 = the packet's TCP/UDP checksum is offloaded: the field holds only the pseudo-header sum and the rest is
   * finished later (TUN vnet NEEDS_CSUM; WinDivert checksum flag clear). Port rewriting must then leave it alone.
   */
  partialChecksum: Uint8Array;
  /**
   * What the backend's own "who" check says of an outbound packet (`AppGateMark`; WinDivert's app gate, the others
   * leave 0): 0 decide as usual, 1 held back by the backend (it comes back once its flow is decided: neither decide
   * nor send it now), 2 refused by the address's "who" lists (refuse it as not allowed), 3 allowed by its flow's
   * verdict (decide as usual; the answer holds until OutboundGate.generation moves). Written while the batch is
   * decided, when the data plane asks the check (OutboundGate); read after it by the worker's capture path.
   */
  appGate: Uint8Array;
  /** Number of packets in the batch. */
  count: number;
}

export function allocatePacketBatch(capacity: number, bytes: number): PacketBatch {
  return {
    data: Buffer.alloc(bytes),
    offset: new Uint32Array(capacity),
    length: new Uint32Array(capacity),
    outbound: new Uint8Array(capacity),
    ifIndex: new Uint32Array(capacity),
    injected: new Uint8Array(capacity),
    verdict: new Uint8Array(capacity),
    partialChecksum: new Uint8Array(capacity),
    appGate: new Uint8Array(capacity),
    count: 0,
  };
}

export interface PacketSource<K extends BackendKind = BackendKind> {
  readonly kind: K;
  readonly batch: PacketBatch;
  /** Packets that could not be re-injected so far (cumulative); the worker moves the increase into the counters. */
  readonly sendErrors: number;
  /** Re-injection failures the backend documents as harmless, by kind (cumulative; WinDivert only). Kept apart from
   *  `sendErrors` so they do not read as alarms. */
  readonly expectedSendFailures?: { readonly hostUnreachable: number; readonly icmpRefused: number };
  /** Wait up to `timeoutMs` for packets and fill `batch`. Returns the count, 0 on timeout. Throws on fatal errors. */
  receive(timeoutMs: number): number;
  /** Re-inject the batch by verdict: Reflect as inbound, Pass unchanged, Drop not at all. */
  send(): void;
  /**
   * Inject `packet[0, length)` inbound at once, as the answer to batch packet `index` (which is dropped): the TCP
   * reset or ICMP port unreachable the data plane wrote for a packet its allow lists refuse (packet/refusal.ts). The
   * packet has complete checksums. A failure counts in `sendErrors`.
   */
  sendRefusal(index: number, packet: Uint8Array, length: number): void;

  /**
   * Make packet `i` of the batch byte for byte what send() will put out (WinDivert: compute the checksums the
   * sender left to the NIC). Idempotent. The worker calls it for a reflected packet before a capture copies it, so
   * captures record what goes out. Backends that send packets as they are have none.
   */
  completeChecksums?(i: number): void;
  /**
   * The backend's own "who" check of packets this host sends to reflect addresses (WinDivert's app gate), while it
   * has one to make (some address has an apps list); null or absent: none. The data plane asks it (Dataplane.gate).
   */
  readonly outboundGate?: OutboundGate | null;
  /** Adopt a new intercept config inside the source, with what `HostBackend.apply` returned for this change. */
  adopt(cfg: InterceptConfig, update: SourceUpdate<K>): void;
  /**
   * Packets the host firewall dropped before they could reach this source (TUN: the nft shield and forged-source
   * rules) are reported to `sink` from within receive() while a sink is set, so captures can show them; null stops
   * that. Only backends whose host firewall drops packets have it. Throws a RetroflectError when the report cannot be
   * started (the engine goes on without it).
   */
  observeFirewallDrops?(sink: FirewallDropSink | null): void;
  /**
   * What the running captures might want (capture/filter.ts captureInterest), each time the set of captures changes.
   * A backend that decides packets itself (ebpf) hands those to the data plane, where the taps see them; null: no
   * capture runs.
   */
  watchCaptures?(interest: CaptureInterest | null): void;
  /**
   * Packets a kernel data path reflected itself (ebpf) that the captures might want are reported to `sink` from
   * within receive() while a sink is set; null stops that.
   */
  observeKernelPackets?(sink: KernelPacketSink | null): void;
  /** Report every such packet the kernel queued so far to the sink now (before the captures change or end). */
  flushKernelPackets?(): void;
  /** Such packets the kernel could not queue for us (cumulative), while observing. */
  readonly kernelPacketsLost?: number;
  /** Firewall drop reports the kernel could not queue for us (cumulative), while observing. */
  readonly firewallDropsLost?: number;
  /**
   * Where the port mapper (engine/port-mapper.ts) hands answered mapped flows to a kernel data path that rewrites
   * their packets itself (ebpf); absent: every mapped packet is the data plane's.
   */
  readonly mappedFlowCache?: MappedFlowCache;
  /**
   * Stop capturing but keep what was captured (WinDivert: shut down receiving). The worker then receives, decides
   * and sends until receive() returns 0, and only then calls close(): closing with packets still queued would let
   * them through undecided.
   */
  beginStop?(): void;
  close(): void;
}

/**
 * A mapped flow as the port mapper keeps it (off its hot path: one per flow handed over or taken back): R and L as
 * big-endian Int32 words, R in `words[addressAt, +4)` and L in the next four (IPv4: the first word of each), the
 * client's port c, the server's port T and the port P the client used.
 */
export interface MappedFlowRef {
  family: number;
  protocol: number;
  words: Int32Array;
  addressAt: number;
  clientPort: number;
  serverPort: number;
  mappedPort: number;
}

/**
 * A kernel cache of the port mapper's decisions. The mapper stays the only authority: it caches a flow only once the
 * server has answered and takes it back whenever it forgets the flow; meanwhile the kernel rewrites both directions'
 * packets itself (never a TCP segment with SYN, FIN or RST: those still reach the mapper). Worker thread.
 */
export interface MappedFlowCache {
  /** Rewrite the flow's packets in the kernel from now on; false when the kernel had no room (nothing cached). */
  install(f: MappedFlowRef): boolean;
  /** Stop: both directions take the user-space path again. `ended`: the TCP flow saw an RST or a FIN from each side
   *  (here, not in the kernel), so the kernel's own record of it for the flows view is marked closed too. */
  remove(f: MappedFlowRef, ended: boolean): void;
  /** Epoch milliseconds when the kernel last rewrote a packet of the flow; 0 when it never did. */
  lastSeenMs(f: MappedFlowRef): number;
}

/**
 * An inbound packet the host firewall dropped: its IP bytes are `buf[off, off + len)`, the interface it arrived on
 * (0: unknown), `timeMs` since the epoch.
 */
export type FirewallDropSink = (buf: Buffer, off: number, len: number, cause: FirewallDropCause, ifIndex: number,
  timeMs: number) => void;

/**
 * A packet the kernel reflected: `buf[off, off + capLen)` holds the first `capLen` of its `wireLen` bytes as
 * reflected, `p` its parse (addresses, protocol and ports are valid even when cut short), `ifIndex` the device it
 * re-entered by, `timeMs` since the epoch.
 */
export type KernelPacketSink = (
  buf: Buffer,
  off: number,
  capLen: number,
  wireLen: number,
  ifIndex: number,
  p: ParsedPacket,
  timeMs: number,
) => void;

/** One line of a `--dry-run` plan: what would be done, and the exact command or filter where there is one. */
export interface PlanStep {
  action: string;
  detail: string;
}

// ---------------------------------------------------------------------------------------------------------------
// What the host half hands the worker half, per backend. Posted between threads, so structured-clone-able.

/** TUN: the device fd and the wake eventfd (fds are process-wide), and the NFLOG socket and group (-1: none). */
export interface TunSourceInit {
  kind: 'tun';
  fd: number;
  wakeFd: number;
  logFd: number;
  logGroup: number;
  /** The device's interface index (every packet read from it carries it). */
  ifIndex: number;
  mtu: number;
  vnetHdr: boolean;
}

/** TUN: a live change is host state only (routes, nft); the device and its fd stay the same. */
export interface TunSourceUpdate {
  kind: 'tun';
}

/** PacketBatch.appGate values. */
export const AppGateMark = { Decide: 0, Held: 1, Refuse: 2, Allowed: 3 } as const;
export type AppGateMark = (typeof AppGateMark)[keyof typeof AppGateMark];

/**
 * A backend's "who" check (PacketSource.outboundGate), asked by the data plane for batch packet `index`, an
 * outbound packet at `buf[off, off + len)` to a reflect address with an apps list (DataplaneConfig.appGateSlots;
 * the check may still answer Decide for an address it has no list for), with the parse the data plane already made
 * (so no packet is parsed twice). Its answer is also left in `batch.appGate[index]` (the capture path reads it there).
 * Allocates nothing.
 */
export interface OutboundGate {
  /**
   * Moves whenever an answer of `mark` may have changed (a flow verdict arrived, the lists changed); between two
   * moves an Allowed answer holds for every packet of the same flow and direction (the data plane keeps it).
   */
  readonly generation: number;
  mark(index: number, buf: Uint8Array, off: number, len: number, p: ParsedPacket): AppGateMark;
}

/**
 * WinDivert's app gate (apps lists): what its two halves share. Held packets go from the worker to the main thread,
 * flow verdicts back, each through a ring of records; `counters` is the worker's Int32 counts.
 */
export interface AppGateRings {
  held: SharedArrayBuffer;
  verdicts: SharedArrayBuffer;
  counters: SharedArrayBuffer;
}

/** WinDivert: the DLL to load in the worker, the first handle, and the shared ledger of open handles. */
export interface WinDivertSourceInit {
  kind: 'windivert';
  dllPath: string;
  handle: number;
  ledger: SharedArrayBuffer;
  /** The handle's filter (what `run --dry-run` and the tests compare). */
  filter: string;
  /** The app gate's rings (always there; idle while no address has an apps list). */
  appGate: AppGateRings;
}

/** WinDivert: the new handle to switch to, or null when the filter did not change (keep the current handle). */
export interface WinDivertSourceUpdate {
  kind: 'windivert';
  switchTo: { handle: number; filter: string } | null;
}

/**
 * ebpf: the packet socket on the veth peer (the user-space path, see ebpf/packet-socket.ts), the wake eventfd, the
 * NFLOG socket and group (-1: none), the engine device's index, and the tc program's capture maps (while a capture
 * runs, the program copies what it might want into its ring, which the worker reads: ebpf/ring-buffer.ts).
 */
export interface EbpfSourceInit {
  kind: 'ebpf';
  fd: number;
  wakeFd: number;
  logFd: number;
  logGroup: number;
  ifIndex: number;
  /** The program's settings, capture_addrs and capture_ports maps (worker: what captures want, see watchCaptures),
   *  its capture ring and the count of records the ring had no room for. */
  captureMapFds: { settings: number; addresses: number; ports: number; ring: number; lost: number };
  /** The program's mapped_flows map, where the worker's port mapper caches answered mapped flows (mappedFlowCache),
   *  and its flows map, where a cached flow that ended is marked closed. */
  mappedFlowFds: { mappedFlows: number; flows: number };
}

/** ebpf: a live change is host state only (maps, routes, nft); the worker keeps its socket. */
export interface EbpfSourceUpdate {
  kind: 'ebpf';
}

/** Memory (tests and development): the two shared packet queues (memory/queue.ts) and their slot size. */
export interface MemorySourceInit {
  kind: 'memory';
  /** Packets handed to the backend, as a driver would (the worker reads them). */
  stack: SharedArrayBuffer;
  /** Packets the backend sent back (the worker writes them). */
  wire: SharedArrayBuffer;
  packetBytes: number;
}

/** Memory: a live change changes nothing in the queues. */
export interface MemorySourceUpdate {
  kind: 'memory';
}

/** Per backend kind: what `start()` and `apply()` hand the worker. Adding a backend adds a row here. */
export interface SourceMessages {
  tun: { init: TunSourceInit; update: TunSourceUpdate };
  ebpf: { init: EbpfSourceInit; update: EbpfSourceUpdate };
  windivert: { init: WinDivertSourceInit; update: WinDivertSourceUpdate };
  memory: { init: MemorySourceInit; update: MemorySourceUpdate };
}

export type BackendKind = keyof SourceMessages;

/**
 * Which "who" allow lists (config/allow-lists.ts) each backend enforces. A list a backend cannot enforce is refused
 * when it is set, never kept and silently ignored. Linux (tun and ebpf): users, groups and cgroups in the nft table
 * both keep alike (linux/host-state.ts, platform/linux/allow-rules.ts), on the output hook before routing; WinDivert:
 * apps in its app gate (windivert/app-gate.ts: SOCKET-layer connect events joined to flows).
 */
export const ENFORCED_WHO_LISTS: Record<BackendKind, readonly AllowWhoKind[]> = {
  tun: ['users', 'groups', 'cgroups'],
  ebpf: ['users', 'groups', 'cgroups'],
  windivert: ['apps'],
  memory: [],
};
/** Everything the worker needs to build its PacketSource: a union discriminated by `kind`. */
export type SourceInit<K extends BackendKind = BackendKind> = SourceMessages[K]['init'];
/** What a live change hands the worker's PacketSource: a union discriminated by `kind`. */
export type SourceUpdate<K extends BackendKind = BackendKind> = SourceMessages[K]['update'];

export interface ShieldCount {
  packets: number;
  bytes: number;
}

/** Drop counts a host firewall keeps instead of the data plane (Linux nft, see platform/linux/nftables.ts). */
export interface FirewallCounters {
  /** Per shield port, keyed "8080/tcp". */
  shield: Map<string, ShieldCount>;
  /** Packets from another host whose source is a reflect address (forged). */
  forgedSource: ShieldCount;
  /** Other hosts' packets routed towards the engine's device, dropped by the forward hook (Linux nft). */
  forwarded?: ShieldCount;
  /** Per reflect address: packets its "who" allow lists refused in the firewall (Linux nft output hook). */
  notAllowed?: Map<string, ShieldCount>;
}

/** Packets and bytes per stats protocol (engine/counters.ts order: tcp, udp, icmp, other). */
export type ProtocolCounts = Record<'tcp' | 'udp' | 'icmp' | 'other', ShieldCount>;

/**
 * A flow a kernel data path recorded: a `FlowRecord` whose "who" fields (pid, process, user) are null, the engine
 * fills them in when it lists flows.
 */
export type KernelFlow = FlowRecord;

/**
 * What a backend that reflects in the kernel (ebpf) counts there instead of in the worker's data plane. The engine
 * adds it to the data plane's own counters and flows, which still cover every packet the kernel hands to user space.
 */
export interface KernelDataPath {
  /** Reflected packets and bytes per reflect address (those configured now; a re-added address starts at 0). */
  reflectedByAddress(): Map<string, ProtocolCounts>;
  /** The kernel's flows; those idle longer than `idleLimitMs(state)` (the engine's rule) are forgotten. */
  flows(nowMs: number, idleLimitMs: (state: KernelFlow['state']) => number): KernelFlow[];
}

export interface HostBackend<K extends BackendKind = BackendKind> {
  readonly kind: K;
  /** Set by backends that reflect packets in the kernel (ebpf). */
  readonly kernel?: KernelDataPath;
  /** What start() would do for this config, for `run --dry-run`. Changes nothing. */
  plan(cfg: InterceptConfig): PlanStep[];
  /** Prepare the host and return what the worker needs. Cleans leftovers of a killed run first. */
  start(cfg: InterceptConfig): Promise<SourceInit<K>>;
  /**
   * Apply a live change to host state (routes, firewall rules, a new WinDivert handle). The result is posted to the
   * worker with the new config and handed to `PacketSource.adopt`.
   */
  apply(prev: InterceptConfig, next: InterceptConfig): Promise<SourceUpdate<K>>;
  /** Drop counts kept by the host firewall rather than the data plane (Linux nft): shield ports, forged sources. */
  firewallCounters?(): Promise<FirewallCounters>;
  /**
   * Check that the host state this backend made for `cfg` is still there (Linux: the nft table, the routes) and put
   * back what someone else removed. Returns one sentence per repair ([] = all was in place). The engine calls it
   * with 'all' periodically and when a stats reading fails, and with 'firewall' (cheaper) before every change.
   */
  verify?(cfg: InterceptConfig, scope: 'firewall' | 'all'): Promise<string[]>;
  /** Facts worth showing an admin in `status` (TUN device and mode; WinDivert filter, priority, driver version). */
  describe?(): Record<string, string | number>;
  /**
   * Who owns each of these client sockets (process, user; Linux: /proc), null where none matches. Asked when flows
   * are listed, never per packet. Backends that cannot tell leave it out.
   */
  socketOwners?(queries: readonly SocketQuery[]):
    ((Partial<SocketOwner> & { packageFamilyName?: string | null }) | null)[];
  /** A name for the interface with this index (PacketBatch.ifIndex), as captures show it; never throws. */
  interfaceName(ifIndex: number): string;
  /** Make a receive() that may be blocked in the worker return soon (for stop and the engine's reconfigure). */
  wake(): void;
  /** Undo everything start() did. Idempotent. */
  stop(): Promise<void>;
}

/** Builds the worker half from the init data the host half returned (registry.ts picks it by `init.kind`). */
export type PacketSourceFactory<K extends BackendKind> = (init: SourceInit<K>, cfg: InterceptConfig) => PacketSource<K>;
