/**
 * Every control method, hello, subscribe and stop included: parameter checks and the answer. Transport-free
 * (connection.ts owns framing and the socket; it exposes what a method may do to it as a `Session`), so every rule
 * here is the same for every client. Changes to addresses and ports go through config-changes.ts (one lock).
 */
import { addressFamily, parseShieldEntry, shieldKey, type ShieldPort } from '../config/intercept-config.ts';
import type { ConfigStore } from '../config/config-store.ts';
import { accessDenied, invalidParams } from '../error-messages.ts';
import { MAX_PORT_MAPS_PER_ADDRESS, parsePortMapSpec, portMapsFor, type PortMapSpec } from '../config/port-maps.ts';
import { ErrorCode, RetroflectError, isRetroflectError } from '../errors.ts';
import { checkReflectAddress, suggestReflectAddress } from '../platform/validate-address.ts';
import { VERSION } from '../version.ts';
import { ConfigChanges } from './config-changes.ts';
import { CaptureSubscription, type CaptureSink } from './capture-subscription.ts';
import type { ControlEngine } from './control-engine.ts';
import {
  MAX_ADDRESSES_PER_REQUEST,
  MAX_ID_CHARS,
  MAX_PORTS_PER_REQUEST,
  METHODS,
  PROTOCOL_VERSION,
  type AddressTestResult,
  type AuthMode,
  type CaptureEndParams,
  type HelloResult,
} from './protocol.ts';

/** Reports every rule an address fails (for address.test); default: platform/validate-address.ts. */
export type AddressValidator = (input: string) => Promise<{ address: string | null; refusals: RetroflectError[]; warnings: string[] }>;
export type AddressSuggester = (family: 4 | 6, exclude: readonly string[]) => Promise<{ address: string; message: string } | null>;

type Params = Record<string, unknown>;

/** What a method may do to the connection it arrived on (connection.ts implements it). */
export interface Session {
  readonly auth: AuthMode;
  readonly authenticated: boolean;
  /** Token mode: check the token and, when it is right, mark the connection authenticated. */
  authenticate(token: unknown): boolean;
  /** Push `sample()` as a `topic` notification every `intervalMs`, replacing an earlier subscription to it. */
  subscribe(topic: SubscriptionTopic, intervalMs: number, sample: () => Promise<unknown>): void;
  unsubscribe(topic: SubscriptionTopic): void;
  /** Close the connection once the reply to this request is written. */
  closeAfterReply(): void;
  /** Run `fn` once the reply to this request is written (stop: reply first, then stop). */
  afterReply(fn: () => void): void;
  /** Stream a capture on this connection (one at a time): `open` gets the connection's sink. */
  startCapture(open: (sink: CaptureSink) => CaptureSubscription): void;
  /** End this connection's capture; null when it has none. */
  stopCapture(): CaptureEndParams | null;
}

export type SubscriptionTopic = 'stats';

/** Allowed stats notification intervals (ms) and the default. */
const MIN_INTERVAL_MS = 100;
const MAX_INTERVAL_MS = 60_000;
const DEFAULT_INTERVAL_MS = 1000;
/** Most flows one `flows` reply carries. */
const MAX_FLOWS = 100_000;

function only(params: Params, allowed: string[]): void {
  for (const key of Object.keys(params)) {
    if (!allowed.includes(key)) throw invalidParams(`Unknown parameter '${key}'${allowed.length ? ` (allowed: ${allowed.join(', ')})` : ''}.`, key);
  }
}

function optionalBool(params: Params, field: string): boolean {
  const v = params[field];
  if (v === undefined) return false;
  if (typeof v !== 'boolean') throw invalidParams(`'${field}' must be true or false.`, field);
  return v;
}

function array(params: Params, field: string, max: number): unknown[] {
  const v = params[field];
  if (!Array.isArray(v) || v.length === 0) throw invalidParams(`'${field}' must be a non-empty array.`, field);
  if (v.length > max) throw invalidParams(`'${field}' has ${v.length} entries; at most ${max} per request.`, field);
  return v;
}

function addressList(params: Params): string[] {
  const raw = array(params, 'addresses', MAX_ADDRESSES_PER_REQUEST);
  raw.forEach((a, i) => {
    if (typeof a !== 'string') throw invalidParams(`'addresses[${i}]' must be a string.`, `addresses[${i}]`);
  });
  return raw as string[];
}

/** `maps` of address.add: "80=8080", "443=8443/tcp" or {port, target, protocol?}; absent = none. */
function portMapSpecs(params: Params): PortMapSpec[] {
  if (params.maps === undefined) return [];
  const raw = array(params, 'maps', MAX_PORT_MAPS_PER_ADDRESS);
  const out: PortMapSpec[] = [];
  for (const entry of raw) {
    for (const m of parsePortMapSpec(entry)) {
      if (!out.some((x) => x.port === m.port && x.protocol === m.protocol && x.target === m.target)) out.push(m);
    }
  }
  return out;
}

/** `maps` of address.remove: which maps to remove, by mapped port ("80", "80/tcp", 80, {port, protocol?}). */
function portMapRemovals(params: Params): { port: number; protocol?: 'tcp' | 'udp' }[] | null {
  if (params.maps === undefined) return null;
  const raw = array(params, 'maps', MAX_PORT_MAPS_PER_ADDRESS);
  return raw.map((entry, i) => {
    const field = `maps[${i}]`;
    let port: unknown;
    let protocol: unknown;
    if (typeof entry === 'number') port = entry;
    else if (typeof entry === 'string') {
      const m = /^\s*(\d{1,5})\s*(?:\/\s*(tcp|udp|both))?\s*$/i.exec(entry);
      if (!m) throw invalidParams(`'${field}' must be a mapped port such as 80 or "80/tcp".`, field);
      port = Number(m[1]);
      protocol = m[2]?.toLowerCase();
    } else if (typeof entry === 'object' && entry !== null) {
      port = (entry as Record<string, unknown>).port;
      protocol = (entry as Record<string, unknown>).protocol;
    }
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
      throw invalidParams(`'${field}' must name a mapped port from 1 to 65535.`, field);
    }
    if (protocol !== undefined && protocol !== 'tcp' && protocol !== 'udp' && protocol !== 'both') {
      throw invalidParams(`'${field}.protocol' must be tcp, udp or both.`, field);
    }
    return protocol === 'tcp' || protocol === 'udp' ? { port, protocol } : { port };
  });
}

function portList(params: Params): ShieldPort[] {
  const raw = array(params, 'ports', MAX_PORTS_PER_REQUEST);
  return raw.flatMap((entry) => parseShieldEntry(entry));
}

export class MethodHandlers {
  private readonly engine: ControlEngine;
  private readonly store: ConfigStore;
  private readonly changes: ConfigChanges;
  private readonly check: AddressValidator;
  private readonly suggest: AddressSuggester;
  private readonly log: (message: string) => void;

  constructor(
    engine: ControlEngine,
    store: ConfigStore,
    opts: { validateAddress?: AddressValidator; suggest?: AddressSuggester; log?: (message: string) => void } = {},
  ) {
    this.engine = engine;
    this.store = store;
    this.changes = new ConfigChanges(engine, store);
    this.check = opts.validateAddress ?? ((input) => checkReflectAddress(input));
    this.suggest = opts.suggest ?? ((family, exclude) => suggestReflectAddress(family, undefined, exclude));
    this.log = opts.log ?? (() => undefined);
  }

  /** Answer one request. Everything but hello needs an authenticated session. */
  async handle(method: string, params: Params, session: Session): Promise<unknown> {
    if (method === 'hello') return this.hello(params, session);
    if (!session.authenticated) {
      throw accessDenied("Say 'hello' with the access token first.", 'Send {"method":"hello","params":{"protocol":1,"token":"..."}} as the first request.');
    }
    switch (method) {
      case 'status':
        only(params, []);
        return this.engine.status();
      case 'address.list': {
        only(params, []);
        // Without a config file (`run --no-config`) nothing is persisted, whatever the store remembers.
        const persisted = this.store.path === null ? [] : this.store.config.reflectAddresses;
        const running = this.engine.config();
        return {
          addresses: running.reflectAddresses.map((address) => ({ address, persisted: persisted.includes(address), portMaps: portMapsFor(running, address) })),
        };
      }
      case 'address.add':
        only(params, ['addresses', 'temporary', 'maps']);
        return this.changes.addAddresses(addressList(params), optionalBool(params, 'temporary'), portMapSpecs(params));
      case 'address.remove': {
        only(params, ['addresses', 'temporary', 'maps']);
        const removals = portMapRemovals(params);
        if (removals !== null) return this.changes.removePortMaps(addressList(params), removals, optionalBool(params, 'temporary'));
        return this.changes.removeAddresses(addressList(params), optionalBool(params, 'temporary'));
      }
      case 'address.test':
        return this.testAddress(params);
      case 'shield.list': {
        only(params, []);
        const persisted = new Set(this.store.path === null ? [] : this.store.config.shieldPorts.map(shieldKey));
        return { ports: this.engine.config().shieldPorts.map((p) => ({ port: p.port, protocol: p.protocol, persisted: persisted.has(shieldKey(p)) })) };
      }
      case 'shield.add':
        only(params, ['ports', 'temporary']);
        return this.changes.addShieldPorts(portList(params), optionalBool(params, 'temporary'));
      case 'shield.remove':
        only(params, ['ports', 'temporary']);
        return this.changes.removeShieldPorts(portList(params), optionalBool(params, 'temporary'));
      case 'stats':
        only(params, []);
        return this.engine.stats();
      case 'flows': {
        only(params, ['limit']);
        const limit = params.limit ?? MAX_FLOWS;
        if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 1 || limit > MAX_FLOWS) {
          throw invalidParams(`'limit' must be an integer from 1 to ${MAX_FLOWS}.`, 'limit');
        }
        const flows = [...this.engine.flows()].sort((a, b) => (a.lastSeen < b.lastSeen ? 1 : a.lastSeen > b.lastSeen ? -1 : 0));
        return { flows: flows.slice(0, limit) };
      }
      case 'config.get':
        only(params, []);
        return { configPath: this.store.path, persisted: this.store.config, running: this.engine.config() };
      case 'subscribe':
        return this.subscribe(params, session);
      case 'unsubscribe':
        only(params, ['topic']);
        if (params.topic !== 'stats') throw invalidParams("'topic' must be \"stats\".", 'topic');
        session.unsubscribe('stats');
        return { topic: 'stats', subscribed: false };
      case 'capture.start':
        return this.startCapture(params, session);
      case 'capture.stop':
        only(params, []);
        return session.stopCapture() ?? { id: null, captured: 0, dropped: 0, reason: 'notCapturing' };
      case 'stop':
        only(params, []);
        // Reply first, then stop: the engine's 'stopped' event closes the server and every connection.
        session.afterReply(() => void this.engine.stop().catch((err) => this.log(`control: stop failed: ${(err as Error).message}`)));
        return { stopping: true };
      default:
        throw new RetroflectError(ErrorCode.UNKNOWN_METHOD, `Unknown method '${method}'.`, {
          hint: `Methods: ${METHODS.join(', ')}.`,
          details: { method },
        });
    }
  }

  private hello(params: Params, session: Session): HelloResult {
    only(params, ['protocol', 'client', 'token']);
    const protocol = params.protocol;
    if (typeof protocol !== 'number' || !Number.isInteger(protocol)) throw invalidParams("'protocol' must be an integer (1).", 'protocol');
    if (protocol !== PROTOCOL_VERSION) {
      throw new RetroflectError(ErrorCode.UNSUPPORTED_VERSION, `Protocol version ${protocol} is not supported; this engine speaks ${PROTOCOL_VERSION}.`, {
        hint: 'Update the client or the engine so both speak the same protocol version.',
        details: { supported: [PROTOCOL_VERSION] },
      });
    }
    if (params.client !== undefined && (typeof params.client !== 'string' || params.client.length > MAX_ID_CHARS)) {
      throw invalidParams("'client' must be a string of at most 128 characters.", 'client');
    }
    if (params.token !== undefined && typeof params.token !== 'string') throw invalidParams("'token' must be a string.", 'token');
    if (session.auth === 'token' && !session.authenticate(params.token)) {
      session.closeAfterReply();
      throw accessDenied(
        'The access token is missing or wrong.',
        'Run the client as Administrator: it reads the token from %ProgramData%\\Retroflect\\<pipe>.token.',
      );
    }
    return {
      protocol: PROTOCOL_VERSION,
      server: `retroflect/${VERSION}`,
      engineVersion: this.engine.status().version,
      pid: process.pid,
      auth: session.auth,
      capabilities: [...METHODS],
    };
  }

  private subscribe(params: Params, session: Session): { topic: 'stats'; intervalMs: number } {
    only(params, ['topic', 'intervalMs']);
    if (params.topic !== 'stats') throw invalidParams("'topic' must be \"stats\".", 'topic');
    const iv = params.intervalMs ?? DEFAULT_INTERVAL_MS;
    if (typeof iv !== 'number' || !Number.isInteger(iv) || iv < MIN_INTERVAL_MS || iv > MAX_INTERVAL_MS) {
      throw invalidParams(`'intervalMs' must be an integer from ${MIN_INTERVAL_MS} to ${MAX_INTERVAL_MS}.`, 'intervalMs');
    }
    session.subscribe('stats', iv, () => this.engine.stats());
    return { topic: 'stats', intervalMs: iv };
  }

  private startCapture(params: Params, session: Session): unknown {
    let result: unknown;
    session.startCapture((sink) => {
      const started = CaptureSubscription.start(this.engine.capture, params, sink);
      result = started.result;
      return started.sub;
    });
    return result;
  }

  private async testAddress(params: Params): Promise<AddressTestResult> {
    only(params, ['address']);
    const input = params.address;
    if (typeof input !== 'string' || input.length === 0 || input.length > 256) throw invalidParams("'address' must be a non-empty string.", 'address');
    const r = await this.check(input);
    const running = this.engine.config().reflectAddresses;
    const valid = r.address !== null && r.refusals.length === 0;
    const reasons = r.refusals.map((e) => ({
      code: isRetroflectError(e) ? e.code : ErrorCode.INVALID_ADDRESS,
      rule: typeof e.details?.rule === 'string' ? e.details.rule : null,
      message: e.message,
      hint: e.hint ?? null,
    }));
    const family = r.address !== null ? addressFamily(r.address) : 4;
    return {
      input,
      address: r.address,
      valid,
      configured: r.address !== null && running.includes(r.address),
      warnings: r.warnings,
      reasons,
      suggestion: valid ? null : await this.suggest(family, running),
    };
  }
}

