/**
 * Every change to the reflect addresses and shield ports, from whatever client: the one place that canonicalizes
 * and deduplicates entries, tells existing from new and missing, validates new addresses against the host (with the
 * AddressRules it is handed), and runs "engine → persisted store → undo the engine change if saving fails". One
 * lock, so no two changes interleave.
 *
 * Running config = persisted entries + temporary ones. A non-temporary change writes only the entries it named.
 * Removing an entry that is persisted but not running (or the other way round) is fine; one that is neither is
 * missing: the request is refused as a whole and nothing changes, or, with `skipMissing`, the rest is removed and
 * the missing ones are listed in the result.
 */
import {
  addReflectAddresses,
  addShieldPorts,
  canonicalAddress,
  cloneInterceptConfig,
  emptyInterceptConfig,
  shieldKey,
  type InterceptConfig,
  type ShieldPort,
} from '../config/intercept-config.ts';
import { checkPortMaps, mergePortMaps, portMapKey, portMapsFor, portMapsOf, removalMatches, type PortMap, type PortMapRemoval, type PortMapSpec } from '../config/port-maps.ts';
import type { ConfigStore } from '../config/config-store.ts';
import { ALLOW_WHO_KINDS, allowListsFor, allowListsOf, applyAllowChange, type AllowChange } from '../config/allow-lists.ts';
import { ENFORCED_WHO_LISTS, type BackendKind } from '../packet-sources/packet-source.ts';
import type { ChangeResult } from '../engine/types.ts';
import { addressNotFound, invalidParams, portNotFound } from '../error-messages.ts';
import { ErrorCode, RetroflectError } from '../errors.ts';
import type { AddressRules } from './address-rules.ts';
import type { ControlEngine } from './control-engine.ts';
import type { AddressAddResult, AddressRemoveResult, PortMapMissing, ShieldRemoveResult } from './protocol.ts';

/** How a remove treats entries that are not there. */
export interface RemoveOptions {
  /** Change only the running engine, not the config file. */
  temporary: boolean;
  /** Remove what is there and list what is not, instead of refusing the whole request. */
  skipMissing: boolean;
}

/** The addresses a request names, canonical, each once (E_INVALID_ADDRESS with details.address/rule). */
function uniqueAddresses(addresses: readonly string[]): string[] {
  return addReflectAddresses(emptyInterceptConfig(), addresses.map(canonicalAddress));
}

/** The shield ports a request names, each once. */
function uniquePorts(ports: readonly ShieldPort[]): ShieldPort[] {
  return addShieldPorts(emptyInterceptConfig(), ports);
}

export class ConfigChanges {
  private lock: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly engine: ControlEngine,
    private readonly store: ConfigStore,
    private readonly validateAddress: AddressRules['validate'],
  ) {}

  /**
   * Add reflect addresses, and `maps` (config/port-maps.ts) to every one of them, new or already there. Identical
   * maps already present are reported as existing; a conflicting one refuses the whole request before anything
   * changes (running config and persisted file are both checked).
   */
  addAddresses(addresses: readonly string[], temporary: boolean, maps: readonly PortMapSpec[] = [], allow: AllowChange = {}): Promise<AddressAddResult> {
    const wanted = uniqueAddresses(addresses);
    const wantedMaps: PortMap[] = wanted.flatMap((address) => maps.map((m) => ({ address, protocol: m.protocol, port: m.port, target: m.target })));
    const changesAllow = Object.keys(allow).length > 0;
    return this.serialized(async () => {
      const running = this.engine.config();
      refuseUnenforced(allow, this.engine.status().backend);
      const next = cloneInterceptConfig(running);
      const added = addReflectAddresses(next, wanted);
      const existing = wanted.filter((a) => !added.includes(a));
      const merged = mergePortMaps(portMapsOf(running), wantedMaps);
      next.portMaps = merged.maps;
      if (changesAllow) next.allow = applyAllowChange(next, wanted, allow);
      checkPortMaps(next); // map conflicts and limits, before the host is asked anything (the engine checks the rest)
      if (!temporary && wantedMaps.length) {
        const persisted = this.store.config;
        addReflectAddresses(persisted, wanted);
        checkPortMaps({ ...persisted, portMaps: mergePortMaps(portMapsOf(persisted), wantedMaps).maps });
      }
      const warnings: AddressAddResult['warnings'] = [];
      // Every new address is checked against the host before anything changes (all or nothing). A refusal's
      // suggestion must not be an address that is already reflected (running or saved) or in this request.
      const configured = [...running.reflectAddresses, ...this.store.config.reflectAddresses, ...wanted];
      for (const address of added) {
        for (const message of (await this.validateAddress(address, configured)).warnings) warnings.push({ address, message });
      }
      await this.change(
        next,
        temporary
          ? null
          : () =>
              this.store.update((c) => {
                addReflectAddresses(c, wanted);
                if (wantedMaps.length) c.portMaps = mergePortMaps(portMapsOf(c), wantedMaps).maps;
                if (changesAllow) c.allow = applyAllowChange(c, wanted, allow);
              }),
      );
      const saved = this.store.path === null ? [] : this.store.config.reflectAddresses;
      const now = this.engine.config();
      return {
        added,
        existing,
        warnings,
        portMaps: { added: merged.added, existing: merged.existing },
        allow: wanted.map((address) => ({ address, ...allowListsFor(now, address) })),
        persisted: wanted.filter((a) => saved.includes(a)),
      };
    });
  }

  /**
   * Remove port maps (the addresses stay): `removals` name mapped ports, without a protocol meaning both. A map that
   * is in neither the running config nor (unless temporary) the file is missing.
   */
  removePortMaps(addresses: readonly string[], removals: readonly PortMapRemoval[], opts: RemoveOptions): Promise<AddressRemoveResult> {
    const wanted = uniqueAddresses(addresses);
    return this.serialized(async () => {
      const running = this.engine.config();
      const persisted = this.store.config;
      const missing: PortMapMissing[] = [];
      const named: { address: string; removal: PortMapRemoval }[] = [];
      for (const address of wanted) {
        const have = [...portMapsFor(running, address), ...(opts.temporary ? [] : portMapsFor(persisted, address))];
        for (const removal of removals) {
          if (have.some((m) => removalMatches(removal, m))) named.push({ address, removal });
          else missing.push({ address, port: removal.port, protocol: removal.protocol ?? 'both' });
        }
      }
      if (missing.length && !opts.skipMissing) {
        const text = missing.map((m) => `${m.address} ${m.port}${m.protocol === 'both' ? '' : `/${m.protocol}`}`);
        throw new RetroflectError(ErrorCode.PORT_NOT_FOUND, `No port map on ${text.join(', ')}; nothing was removed.`, {
          hint: "List the maps with 'retroflect address list'.",
          details: { missing: text },
        });
      }
      const hit = (m: PortMap) => named.some((n) => n.address === m.address && removalMatches(n.removal, m));
      const removed = portMapsOf(running).filter(hit);
      if (!opts.temporary) for (const m of portMapsOf(persisted).filter(hit)) if (!removed.some((x) => portMapKey(x) === portMapKey(m))) removed.push(m);
      await this.change(
        { ...running, portMaps: portMapsOf(running).filter((m) => !hit(m)) },
        opts.temporary || !named.length ? null : () => this.store.update((c) => (c.portMaps = portMapsOf(c).filter((m) => !hit(m)))),
      );
      return { removed: [], missing: [], portMapsRemoved: removed, portMapsMissing: missing };
    });
  }

  removeAddresses(addresses: readonly string[], opts: RemoveOptions): Promise<AddressRemoveResult> {
    const wanted = uniqueAddresses(addresses);
    return this.serialized(async () => {
      const running = this.engine.config();
      const persistedConfig = this.store.config;
      const persisted = persistedConfig.reflectAddresses;
      const missing = wanted.filter((a) => !running.reflectAddresses.includes(a) && (opts.temporary || !persisted.includes(a)));
      if (missing.length && !opts.skipMissing) throw addressNotFound(missing, opts.temporary);
      const gone = wanted.filter((a) => !missing.includes(a));
      await this.change(
        {
          ...running,
          reflectAddresses: running.reflectAddresses.filter((a) => !gone.includes(a)),
          portMaps: portMapsOf(running).filter((m) => !gone.includes(m.address)),
          allow: allowListsOf(running).filter((a) => !gone.includes(a.address)),
        },
        opts.temporary || !gone.length ? null : () => this.store.removeAddresses(gone),
      );
      // The maps of a removed address go with it; they are reported so nothing disappears silently.
      const portMapsRemoved = portMapsOf(running).filter((m) => gone.includes(m.address));
      if (!opts.temporary) for (const m of portMapsOf(persistedConfig).filter((x) => gone.includes(x.address))) if (!portMapsRemoved.some((x) => portMapKey(x) === portMapKey(m))) portMapsRemoved.push(m);
      return { removed: gone, missing, portMapsRemoved, portMapsMissing: [] };
    });
  }

  addShieldPorts(ports: readonly ShieldPort[], temporary: boolean): Promise<ChangeResult<ShieldPort> & { persisted: ShieldPort[] }> {
    const wanted = uniquePorts(ports);
    return this.serialized(async () => {
      const running = this.engine.config();
      const next = cloneInterceptConfig(running);
      const added = addShieldPorts(next, wanted);
      const isNew = new Set(added.map(shieldKey));
      const existing = wanted.filter((p) => !isNew.has(shieldKey(p)));
      await this.change(
        next,
        temporary ? null : () => this.store.addShieldPorts(wanted),
      );
      const saved = new Set(this.store.path === null ? [] : this.store.config.shieldPorts.map(shieldKey));
      return { added, existing, persisted: wanted.filter((p) => saved.has(shieldKey(p))) };
    });
  }

  removeShieldPorts(ports: readonly ShieldPort[], opts: RemoveOptions): Promise<ShieldRemoveResult> {
    const wanted = uniquePorts(ports);
    return this.serialized(async () => {
      const running = this.engine.config();
      const runningKeys = new Set(running.shieldPorts.map(shieldKey));
      const persisted = new Set(this.store.config.shieldPorts.map(shieldKey));
      const missing = wanted.filter((p) => !runningKeys.has(shieldKey(p)) && (opts.temporary || !persisted.has(shieldKey(p))));
      if (missing.length && !opts.skipMissing) throw portNotFound(missing.map(shieldKey), missing);
      const drop = new Set(wanted.map(shieldKey));
      for (const p of missing) drop.delete(shieldKey(p));
      const gone = wanted.filter((p) => drop.has(shieldKey(p)));
      await this.change(
        { ...running, shieldPorts: running.shieldPorts.filter((p) => !drop.has(shieldKey(p))) },
        opts.temporary || !gone.length ? null : () => this.store.removeShieldPorts(gone),
      );
      return { removed: gone, missing };
    });
  }

  /**
   * Change the configuration: the running engine first (Engine.reconfigure), then the persisted store
   * (ConfigStore.update via `persist`); if saving fails the engine goes back to where it was.
   */
  private async change(next: InterceptConfig, persist: (() => unknown) | null): Promise<void> {
    const prev = this.engine.config();
    const engineChanges = !sameConfig(prev, next);
    if (engineChanges) await this.engine.reconfigure(next);
    if (!persist) return;
    try {
      persist();
    } catch (err) {
      if (engineChanges) await this.engine.reconfigure(prev).catch(() => undefined);
      throw err;
    }
  }

  /** Run `fn` after every earlier change finished. */
  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lock.then(fn, fn);
    this.lock = run.catch(() => undefined);
    return run;
  }
}

/** A "who" list the running backend cannot enforce is refused (it would read as a protection that is not there). */
function refuseUnenforced(allow: AllowChange, backend: BackendKind): void {
  for (const kind of ALLOW_WHO_KINDS) {
    const v = allow[kind];
    if (v === undefined || v === 'all' || ENFORCED_WHO_LISTS[backend].includes(kind)) continue;
    const where = kind === 'apps' ? 'on Windows' : 'on Linux';
    throw invalidParams(`'${kind}' lists are enforced ${where} only; this engine's backend (${backend}) cannot tell them apart, so nothing was changed.`, kind);
  }
}

function sameConfig(a: InterceptConfig, b: InterceptConfig): boolean {
  return (
    JSON.stringify(allowListsOf(a)) === JSON.stringify(allowListsOf(b)) &&
    a.reflectAddresses.length === b.reflectAddresses.length &&
    a.reflectAddresses.every((x, i) => x === b.reflectAddresses[i]) &&
    a.shieldPorts.length === b.shieldPorts.length &&
    a.shieldPorts.every((p, i) => shieldKey(p) === shieldKey(b.shieldPorts[i])) &&
    JSON.stringify(portMapsOf(a)) === JSON.stringify(portMapsOf(b))
  );
}
