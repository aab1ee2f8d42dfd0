/**
 * Control protocol v1: wire types and limits shared by the server, the client and tests. docs/protocol.md is the
 * contract; keep the two in step.
 */
import type { ErrorCode } from '../errors.ts';
import type { InterceptConfig, ShieldPort } from '../config/intercept-config.ts';
import type { EngineStats, EngineStatus, FlowRecord } from '../engine/types.ts';
import type { PortMap, PortMapProtocol, PortMapSpec } from '../config/port-maps.ts';
import type { EntrySource } from '../config/layers.ts';
import type { AddressAllowLists, AllowLists } from '../config/allow-lists.ts';

/** The only protocol version this code speaks. */
export const PROTOCOL_VERSION = 1;

/** Longest request line in bytes (without the newline). Longer → E_BAD_REQUEST reply and close. */
export const MAX_LINE_BYTES = 64 * 1024;
/** A connection that has not sent one complete line within this time is closed. */
export const FIRST_REQUEST_TIMEOUT_MS = 10_000;
/**
 * A request line must be complete this long after its first byte arrived, or the connection is closed: a client
 * trickling a byte a minute would otherwise hold a connection slot for ever.
 */
export const LINE_TIMEOUT_MS = 10_000;
/** A connection without a request for this long, and without a subscription, is closed (bytes alone do not count). */
export const IDLE_TIMEOUT_MS = 5 * 60_000;
/** Requests queued on one connection before the server stops reading it. */
export const MAX_PENDING_REQUESTS = 64;
/** Unsent reply bytes on one connection before the server waits for the client to read. */
export const MAX_UNSENT_BYTES = 1024 * 1024;
/** A stats notification is skipped while more than this is unsent to the subscriber. */
export const MAX_UNSENT_NOTIFY_BYTES = 256 * 1024;
/** Concurrent connections; more get one E_ENGINE_BUSY line and are closed at once. */
export const MAX_CONNECTIONS = 1024;
/** Longest string id and client name accepted. */
export const MAX_ID_CHARS = 128;
/** Addresses per address.add/remove request (= MAX_REFLECT_ADDRESSES). */
export const MAX_ADDRESSES_PER_REQUEST = 64;
/** Shield entries per shield.add/remove request (= MAX_SHIELD_PORTS). */
export const MAX_PORTS_PER_REQUEST = 1024;

export type RequestId = string | number;

export interface Request {
  id: RequestId;
  method: string;
  params?: Record<string, unknown>;
}

export interface WireError {
  code: ErrorCode;
  message: string;
  hint?: string;
  details?: Record<string, unknown>;
}

export interface SuccessReply {
  id: RequestId;
  result: unknown;
}

export interface ErrorReply {
  id: RequestId | null;
  error: WireError;
}

export type Reply = SuccessReply | ErrorReply;

/** Server → client message without id (subscriptions). */
export interface Notification {
  method: string;
  params: unknown;
}

export type AuthMode = 'peer-credentials' | 'token';

export interface HelloResult {
  protocol: number;
  server: string;
  engineVersion: string;
  pid: number;
  auth: AuthMode;
  capabilities: string[];
}

export interface AddressEntry {
  address: string;
  /** In the config file (comes back after a restart). */
  persisted: boolean;
  /** Policy (managed: the pipe cannot change it), Config (the config file) or Temporary (this run only). */
  source: EntrySource;
  /** The address's running port maps, one entry per protocol ([] when none). */
  portMaps: PortMapSpec[];
  /** Its running allow lists (config/allow-lists.ts); a kind that is absent allows everyone / every port. */
  allow: AllowLists;
}

export interface ShieldEntry extends ShieldPort {
  persisted: boolean;
  source: EntrySource;
}

/** Something in the managed policy that is not in force: the whole policy as read, or one entry the host refused. */
export interface PolicyProblem {
  code: string;
  message: string;
}

/** The managed policy in `status`: where it is read from, what is in force, and what is wrong with it. */
export interface PolicyStatus {
  /** The policy file's path, or the registry key. */
  origin: string;
  /** none: no policy entries; applied: all in force; invalid: see problems (the last valid entries stay in force). */
  state: 'none' | 'applied' | 'invalid';
  reflectAddresses: string[];
  shieldPorts: ShieldPort[];
  problems: PolicyProblem[];
  /** When the policy in force last changed or was last refused (ISO 8601), null: never since start. */
  changedAt: string | null;
  /** The policy locks the engine: every change through the pipe is refused (E_MANAGED_BY_POLICY, details.locked). */
  lockChanges: boolean;
}

/** `status`: the engine's status plus every running entry with its source, and the managed policy. */
export interface StatusResult extends EngineStatus {
  addressSources: { address: string; source: EntrySource }[];
  shieldSources: (ShieldPort & { source: EntrySource })[];
  policy: PolicyStatus;
}

/** `address.set`: what changed (or, with whatIf, would change) to make the list exactly the one given. */
export interface AddressSetResult {
  whatIf: boolean;
  /** Addresses that were not both running and in the config file (canonical). */
  added: string[];
  /** Addresses that were running or in the config file and are not wanted. */
  removed: string[];
  unchanged: string[];
  /** Wanted addresses that managed policy sets: left as policy says. */
  policy: string[];
  portMapsAdded: PortMap[];
  portMapsRemoved: PortMap[];
  warnings: AddressWarning[];
}

/** `shield.set`, as `address.set`. */
export interface ShieldSetResult {
  whatIf: boolean;
  added: ShieldPort[];
  removed: ShieldPort[];
  unchanged: ShieldPort[];
  policy: ShieldPort[];
}

export interface AddressWarning {
  address: string;
  message: string;
}

export interface AddressAddResult {
  added: string[];
  existing: string[];
  warnings: AddressWarning[];
  /** Port maps the request added, and those that were already there unchanged (idempotent). */
  portMaps: { added: PortMap[]; existing: PortMap[] };
  /** The allow lists of every address the request named, after the change. */
  allow: AddressAllowLists[];
  /** Those of added + existing that are in the config file after the change (none on a --no-config engine). */
  persisted: string[];
}

/** A map `address.remove` named that the address does not have (`protocol: 'both'`: neither protocol's). */
export interface PortMapMissing {
  address: string;
  port: number;
  protocol: PortMapProtocol | 'both';
}

/**
 * `address.remove`. Without `skipMissing` a missing entry refuses the whole request, so `missing` and
 * `portMapsMissing` are empty; with it, what was there is removed and what was not is listed, per item.
 */
export interface AddressRemoveResult {
  /** Addresses removed (canonical); with `maps` none: the addresses stay. */
  removed: string[];
  /** Addresses that were not there (neither running nor, unless temporary, in the config file). */
  missing: string[];
  /** Maps that went: those named by `maps`, or every map of a removed address. */
  portMapsRemoved: PortMap[];
  /** With `maps`: the named maps that were not there. */
  portMapsMissing: PortMapMissing[];
}

/** `shield.remove`, per item as `address.remove`: `missing` is empty unless `skipMissing` was given. */
export interface ShieldRemoveResult {
  removed: ShieldPort[];
  missing: ShieldPort[];
}

export interface AddressTestReason {
  code: ErrorCode;
  rule: string | null;
  message: string;
  hint: string | null;
}

export interface AddressTestResult {
  input: string;
  address: string | null;
  valid: boolean;
  configured: boolean;
  warnings: string[];
  reasons: AddressTestReason[];
  suggestion: { address: string; message: string } | null;
}

export interface ConfigGetResult {
  configPath: string | null;
  persisted: InterceptConfig;
  running: InterceptConfig;
  /** The managed policy's entries in force. */
  policy: InterceptConfig;
}

/** Result type of each method, for the typed client. */
export interface MethodResults {
  hello: HelloResult;
  status: StatusResult;
  'address.list': { addresses: AddressEntry[] };
  'address.add': AddressAddResult;
  'address.remove': AddressRemoveResult;
  'address.set': AddressSetResult;
  'address.test': AddressTestResult;
  'shield.list': { ports: ShieldEntry[] };
  'shield.add': { added: ShieldPort[]; existing: ShieldPort[]; persisted: ShieldPort[] };
  'shield.remove': ShieldRemoveResult;
  'shield.set': ShieldSetResult;
  stats: EngineStats;
  flows: { flows: FlowRecord[] };
  'config.get': ConfigGetResult;
  stop: { stopping: true };
  subscribe: { topic: 'stats'; intervalMs: number };
  unsubscribe: { topic: 'stats'; subscribed: false };
  'capture.start': CaptureStartResult;
  'capture.stop': CaptureEndParams;
}

export interface CaptureStartResult {
  id: number;
  format: 'pcapng' | 'summary';
  snaplen: number;
  rate: number;
  linktype: number;
  interfaces: { name: string; description: string; direction: 'outbound' | 'inbound' }[];
  filter: { addresses: string[]; ports: number[]; verdicts: string[]; protocols: string[] };
}

/** `capture.end` notification and `capture.stop` result. */
export interface CaptureEndParams {
  id: number | null;
  captured: number;
  dropped: number;
  reason: 'stopped' | 'engineStopping' | 'slowClient' | 'notCapturing';
}

export type MethodName = keyof MethodResults;

/** Every method once, in the order hello lists them; a method of MethodResults missing here fails to compile. */
const METHOD_ORDER: Record<MethodName, true> = {
  hello: true,
  status: true,
  'address.list': true,
  'address.add': true,
  'address.remove': true,
  'address.set': true,
  'address.test': true,
  'shield.list': true,
  'shield.add': true,
  'shield.remove': true,
  'shield.set': true,
  stats: true,
  flows: true,
  'config.get': true,
  stop: true,
  subscribe: true,
  unsubscribe: true,
  'capture.start': true,
  'capture.stop': true,
};

export const METHODS: readonly MethodName[] = Object.keys(METHOD_ORDER) as MethodName[];
