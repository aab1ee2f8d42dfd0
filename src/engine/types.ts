/**
 * The engine's public data shapes: what `status`, `stats` and `flows` return. The control plane sends them as JSON
 * unchanged, so these are also the wire shapes in docs/protocol.md. Times are ISO 8601 strings in UTC, counters
 * are plain numbers (exact up to 2^53).
 */
import type { ShieldPort } from '../config/intercept-config.ts';
import type { PortMap } from '../config/port-maps.ts';
import type { AddressAllowLists } from '../config/allow-lists.ts';
import type { BackendKind } from '../packet-sources/packet-source.ts';
import type { MalformedReason } from '../packet/parse.ts';

export type EngineState = 'starting' | 'running' | 'stopping' | 'stopped' | 'failed';

export interface EngineStatus {
  state: EngineState;
  version: string;
  backend: BackendKind;
  pid: number;
  /** ISO 8601 time the engine started. */
  startedAt: string;
  uptimeSeconds: number;
  reflectAddresses: string[];
  shieldPorts: ShieldPort[];
  /** Port maps of the reflect addresses, one entry per protocol (config/port-maps.ts). */
  portMaps: PortMap[];
  /** Allow lists of the reflect addresses that have any (config/allow-lists.ts); an address not here allows all. */
  allow: AddressAllowLists[];
  /** Path of the persisted config file, or null when running without one. */
  configPath: string | null;
  /** Name of the control pipe the engine serves. */
  pipeName: string | null;
  /** Backend facts worth showing an admin: TUN device name, WinDivert filter and priority, driver version. */
  backendInfo: Record<string, string | number>;
  /** Host state the engine found removed by someone else and put back (nft table, routes): how often, and the last. */
  hostRepairs: { count: number; last: { at: string; what: string } | null };
  /** How the engine runs: as the Windows service, a systemd unit, or from a console (a script, a scheduled task). */
  runsAs: RunsAs;
}

export type RunsAs = 'service' | 'unit' | 'console';

export interface PacketByteCount {
  packets: number;
  bytes: number;
}

export type StatsProtocol = 'tcp' | 'udp' | 'icmp' | 'other';

export interface AddressStats {
  address: string;
  /** Total over all protocols. */
  packets: number;
  bytes: number;
  byProtocol: Record<StatsProtocol, PacketByteCount>;
  /** Packets to this address its allow lists refused (ports in the data plane; Linux users/groups/cgroups in nft). */
  notAllowed: PacketByteCount;
}

export interface ShieldPortStats extends ShieldPort {
  /** Packets and bytes from other hosts dropped at this port. */
  packets: number;
  bytes: number;
}

export interface EngineStats {
  /** ISO 8601 time of this sample. */
  sampledAt: string;
  uptimeSeconds: number;
  reflected: PacketByteCount;
  shieldDropped: PacketByteCount;
  /**
   * Inbound packets from another host whose source is a reflect address, dropped: while an address is reflected no
   * other host can send from it, so such a packet is forged.
   */
  forgedSourceDropped: PacketByteCount;
  /**
   * Linux: other hosts' packets that this host would have forwarded into the engine's device, dropped (only packets
   * this host sends are reflected). Windows: always 0 (WinDivert's filter takes only this host's outbound packets).
   */
  forwardedDropped: PacketByteCount;
  /** Captured but not addressed to a reflect address (sent on unchanged, or ignored on TUN). */
  passed: PacketByteCount;
  malformed: { total: number; byReason: Record<MalformedReason, number> };
  /**
   * receive/send: unexpected failures (alarms). sendExpected: re-injections the driver documents as failing
   * harmlessly (WinDivert: ERROR_HOST_UNREACHABLE for an injection loop or an impostor out of TTL; inbound ICMP
   * messages the Windows stack refuses) — counted, not alarming.
   */
  errors: { receive: number; send: number; sendExpected: { hostUnreachable: number; icmpRefused: number } };
  /** Packets that would have opened a port-mapped flow, dropped because the mapped-flow table was full. */
  portMapRefused: number;
  /** Packets to a reflect address that its allow lists refused (answered with a TCP reset or ICMP port unreachable). */
  notAllowed: PacketByteCount;
  byProtocol: Record<StatsProtocol, PacketByteCount>;
  byAddress: AddressStats[];
  byShieldPort: ShieldPortStats[];
  /** Per second, averaged over the last sampling interval (about one second). */
  rates: { reflectedPackets: number; reflectedBytes: number; shieldDroppedPackets: number };
}

export type { FlowProtocol, FlowRecord } from '../packet/flow-record.ts';

export interface ChangeResult<T> {
  added: T[];
  /** Already present: adding them again changed nothing (idempotent). */
  existing: T[];
}


/**
 * The process on the other end of a control connection, as the operating system tells it (Linux: the kernel's
 * SO_PEERCRED, recorded at connect time, which a client cannot forge). Never what a client says about itself.
 */
export interface PipeClient {
  pid: number;
  uid: number;
  /** The uid's name in /etc/passwd, or null. */
  user: string | null;
  /** The process name (/proc/<pid>/comm), or null when it is gone. */
  process: string | null;
}

/**
 * Who asked for a configuration change (event 1100 names it): a control client (`client` null where the platform
 * does not tell: a Windows named pipe, docs/windows.md), the managed policy, or a hand edit of the config file.
 */
export type ChangeOrigin = { kind: 'client'; client: PipeClient | null } | { kind: 'policy' } | { kind: 'config-file' };
