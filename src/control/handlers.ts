/**
 * The control methods: parameter checks, engine calls, persistence and rollback. Transport-free (server.ts owns
 * sockets, framing and access), so every rule here is the same for every client.
 *
 * Changes are serialized by one lock, so "apply to engine → save → undo on failure" never interleaves with another
 * change. Persisting writes only the entries the request named (running config = persisted + temporary entries).
 */
import {
  addressFamily,
  canonicalAddress,
  shieldKey,
  type InterceptConfig,
  type ShieldPort,
} from '../config/intercept-config.ts';
import { parseShieldEntry, type ConfigStore } from '../config/config-file.ts';
import { ErrorCode, RetroflectError, isRetroflectError } from '../errors.ts';
import { checkReflectAddress, suggestReflectAddress } from '../platform/validate-address.ts';
import { VERSION } from '../version.ts';
import type { ControlEngine } from './server.ts';
import {
  MAX_ADDRESSES_PER_REQUEST,
  MAX_ID_CHARS,
  MAX_PORTS_PER_REQUEST,
  METHODS,
  PROTOCOL_VERSION,
  type AddressTestResult,
  type AuthMode,
  type HelloResult,
} from './protocol.ts';

/** Reports every rule an address fails (for address.test); default: platform/validate-address.ts. */
export type AddressValidator = (input: string) => Promise<{ address: string | null; refusals: RetroflectError[]; warnings: string[] }>;
export type AddressSuggester = (family: 4 | 6, exclude: readonly string[]) => Promise<{ address: string; message: string } | null>;

type Params = Record<string, unknown>;

/** Allowed stats notification intervals (ms) and the default. */
const MIN_INTERVAL_MS = 100;
const MAX_INTERVAL_MS = 60_000;
const DEFAULT_INTERVAL_MS = 1000;
/** Most flows one `flows` reply carries. */
const MAX_FLOWS = 100_000;

function invalidParams(message: string, field: string): RetroflectError {
  return new RetroflectError(ErrorCode.INVALID_PARAMS, message, {
    hint: 'See docs/protocol.md for the parameters of each method.',
    details: { field },
  });
}

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
  const out: string[] = [];
  raw.forEach((a, i) => {
    if (typeof a !== 'string') throw invalidParams(`'addresses[${i}]' must be a string.`, `addresses[${i}]`);
    const c = canonicalAddress(a); // E_INVALID_ADDRESS with details.address/rule
    if (!out.includes(c)) out.push(c);
  });
  return out;
}

function portList(params: Params): ShieldPort[] {
  const raw = array(params, 'ports', MAX_PORTS_PER_REQUEST);
  const out: ShieldPort[] = [];
  for (const entry of raw) {
    for (const p of parseShieldEntry(entry)) if (!out.some((q) => shieldKey(q) === shieldKey(p))) out.push(p);
  }
  return out;
}

export class MethodHandlers {
  private readonly engine: ControlEngine;
  private readonly store: ConfigStore;
  private readonly check: AddressValidator;
  private readonly suggest: AddressSuggester;
  private lock: Promise<unknown> = Promise.resolve();

  constructor(engine: ControlEngine, store: ConfigStore, check?: AddressValidator, suggest?: AddressSuggester) {
    this.engine = engine;
    this.store = store;
    this.check = check ?? ((input) => checkReflectAddress(input));
    this.suggest = suggest ?? ((family, exclude) => suggestReflectAddress(family, undefined, exclude));
  }

  /** Run `fn` after every earlier change finished. */
  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lock.then(fn, fn);
    this.lock = run.catch(() => undefined);
    return run;
  }

  hello(params: Params, auth: AuthMode): HelloResult {
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
    return {
      protocol: PROTOCOL_VERSION,
      server: `retroflect/${VERSION}`,
      engineVersion: this.engine.status().version,
      pid: process.pid,
      auth,
      capabilities: [...METHODS],
    };
  }

  checkNoParams(params: Params): void {
    only(params, []);
  }

  checkSubscribe(params: Params): number {
    only(params, ['topic', 'intervalMs']);
    if (params.topic !== 'stats') throw invalidParams("'topic' must be \"stats\".", 'topic');
    const iv = params.intervalMs ?? DEFAULT_INTERVAL_MS;
    if (typeof iv !== 'number' || !Number.isInteger(iv) || iv < MIN_INTERVAL_MS || iv > MAX_INTERVAL_MS) {
      throw invalidParams(`'intervalMs' must be an integer from ${MIN_INTERVAL_MS} to ${MAX_INTERVAL_MS}.`, 'intervalMs');
    }
    return iv;
  }

  checkUnsubscribe(params: Params): void {
    only(params, ['topic']);
    if (params.topic !== 'stats') throw invalidParams("'topic' must be \"stats\".", 'topic');
  }

  /** Dispatch a method other than hello/subscribe/unsubscribe/stop (those touch the connection). */
  async call(method: string, params: Params): Promise<unknown> {
    switch (method) {
      case 'status':
        only(params, []);
        return this.engine.status();
      case 'address.list': {
        only(params, []);
        // Without a config file (`run --no-config`) nothing is persisted, whatever the store remembers.
        const persisted = this.store.path === null ? [] : this.store.config.reflectAddresses;
        return { addresses: this.engine.config().reflectAddresses.map((address) => ({ address, persisted: persisted.includes(address) })) };
      }
      case 'address.add':
        return this.addAddresses(params);
      case 'address.remove':
        return this.removeAddresses(params);
      case 'address.test':
        return this.testAddress(params);
      case 'shield.list': {
        only(params, []);
        const persisted = new Set(this.store.path === null ? [] : this.store.config.shieldPorts.map(shieldKey));
        return { ports: this.engine.config().shieldPorts.map((p) => ({ port: p.port, protocol: p.protocol, persisted: persisted.has(shieldKey(p)) })) };
      }
      case 'shield.add':
        return this.addPorts(params);
      case 'shield.remove':
        return this.removePorts(params);
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
      default:
        throw new RetroflectError(ErrorCode.UNKNOWN_METHOD, `Unknown method '${method}'.`, {
          hint: `Methods: ${METHODS.join(', ')}.`,
          details: { method },
        });
    }
  }

  private addAddresses(params: Params): Promise<unknown> {
    only(params, ['addresses', 'temporary']);
    const addrs = addressList(params);
    const temporary = optionalBool(params, 'temporary');
    return this.serialized(async () => {
      // The engine validates every new address against the host (all or nothing) before changing anything.
      const r = await this.engine.addAddresses(addrs);
      if (!temporary) {
        try {
          this.store.addAddresses(addrs);
        } catch (err) {
          if (r.added.length) await this.engine.removeAddresses(r.added).catch(() => undefined);
          throw err;
        }
      }
      const warnings = (r.warnings ?? []).map((message) => ({ address: addrs.find((a) => message.includes(a)) ?? '', message }));
      return { added: r.added, existing: r.existing, warnings };
    });
  }

  private removeAddresses(params: Params): Promise<unknown> {
    only(params, ['addresses', 'temporary']);
    const addrs = addressList(params);
    const temporary = optionalBool(params, 'temporary');
    return this.serialized(async () => {
      const running = this.engine.config().reflectAddresses;
      const persisted = this.store.config.reflectAddresses;
      const missing = addrs.filter((a) => !running.includes(a) && (temporary || !persisted.includes(a)));
      if (missing.length) {
        throw new RetroflectError(
          ErrorCode.ADDRESS_NOT_FOUND,
          `${missing.join(', ')} ${missing.length === 1 ? 'is' : 'are'} not ${temporary ? 'a running' : 'a'} reflect address; nothing was removed.`,
          { hint: "List the configured addresses with 'retroflect address list'.", details: { missing } },
        );
      }
      const fromEngine = addrs.filter((a) => running.includes(a));
      if (fromEngine.length) await this.engine.removeAddresses(fromEngine);
      if (!temporary) {
        try {
          this.store.removeAddresses(addrs);
        } catch (err) {
          if (fromEngine.length) await this.engine.addAddresses(fromEngine).catch(() => undefined);
          throw err;
        }
      }
      return { removed: addrs };
    });
  }

  private addPorts(params: Params): Promise<unknown> {
    only(params, ['ports', 'temporary']);
    const ports = portList(params);
    const temporary = optionalBool(params, 'temporary');
    return this.serialized(async () => {
      const r = await this.engine.addShieldPorts(ports);
      if (!temporary) {
        try {
          this.store.addShieldPorts(ports);
        } catch (err) {
          if (r.added.length) await this.engine.removeShieldPorts(r.added).catch(() => undefined);
          throw err;
        }
      }
      return { added: r.added, existing: r.existing };
    });
  }

  private removePorts(params: Params): Promise<unknown> {
    only(params, ['ports', 'temporary']);
    const ports = portList(params);
    const temporary = optionalBool(params, 'temporary');
    return this.serialized(async () => {
      const running = new Set(this.engine.config().shieldPorts.map(shieldKey));
      const persisted = new Set(this.store.config.shieldPorts.map(shieldKey));
      const missing = ports.filter((p) => !running.has(shieldKey(p)) && (temporary || !persisted.has(shieldKey(p))));
      if (missing.length) {
        throw new RetroflectError(
          ErrorCode.PORT_NOT_FOUND,
          `${missing.map(shieldKey).join(', ')} ${missing.length === 1 ? 'is' : 'are'} not shielded; nothing was removed.`,
          { hint: "List the shield ports with 'retroflect shield list'.", details: { missing } },
        );
      }
      const fromEngine = ports.filter((p) => running.has(shieldKey(p)));
      if (fromEngine.length) await this.engine.removeShieldPorts(fromEngine);
      if (!temporary) {
        try {
          this.store.removeShieldPorts(ports);
        } catch (err) {
          if (fromEngine.length) await this.engine.addShieldPorts(fromEngine).catch(() => undefined);
          throw err;
        }
      }
      return { removed: ports };
    });
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

export type { InterceptConfig };
