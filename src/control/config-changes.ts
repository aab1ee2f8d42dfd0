/**
 * Every change to the reflect addresses and shield ports, from whatever client: the one place that canonicalizes
 * and deduplicates entries, tells existing from new and missing, validates new addresses against the host (with the
 * AddressRules it is handed), and runs "engine → persisted store → undo the engine change if saving fails". One
 * lock, so no two changes interleave.
 *
 * Running config = managed policy entries + persisted entries + temporary ones (config/layers.ts). A non-temporary
 * change writes only the entries it named. Removing an entry that is persisted but not running (or the other way
 * round) is fine; one that is neither is missing: the request is refused as a whole and nothing changes, or, with
 * `skipMissing`, the rest is removed and the missing ones are listed in the result. A policy entry cannot be removed
 * or re-mapped here (E_MANAGED_BY_POLICY, the whole request refused), and while the policy locks the engine
 * (lockChanges) no change is made here at all; the policy itself changes through `applyPolicy`.
 *
 * Before every change the config file is compared with what we last read or wrote: an edit made by hand meanwhile
 * is read back and applied to the running engine first, then the change is made on top of it (and the log says so),
 * so the edit is never silently written over; a hand edit that does not load refuses the change (E_CONFIG_INVALID).
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
import { ALLOW_WHO_KINDS, allowListsFor, allowListsOf, applyAllowChange, cloneAllowLists, type AllowChange } from '../config/allow-lists.ts';
import { ENFORCED_WHO_LISTS, type BackendKind } from '../packet-sources/packet-source.ts';
import type { ChangeOrigin, ChangeResult } from '../engine/types.ts';
import { addressNotFound, invalidParams, portNotFound } from '../error-messages.ts';
import { ErrorCode, RetroflectError } from '../errors.ts';
import type { AddressRules } from './address-rules.ts';
import type { ControlEngine } from './control-engine.ts';
import type { AddressAddResult, AddressRemoveResult, AddressSetResult, PortMapMissing, PolicyProblem, ShieldRemoveResult, ShieldSetResult } from './protocol.ts';
import { checkLimits } from '../config/intercept-config.ts';
import { replaceLayer, sameEntries } from '../config/layers.ts';
import { lockedByPolicy, managedByPolicy } from '../error-messages.ts';
import { isRetroflectError } from '../errors.ts';
import { planAddressSet, planShieldSet, type WantedAddress } from './desired-state.ts';
import { problemOf, type PolicyState } from './policy-state.ts';

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
    readonly policy: PolicyState,
    private readonly log: (message: string) => void = () => undefined,
  ) {}

  /** Refuse every change while the policy locks the engine (lockChanges); a what-if plan changes nothing and passes. */
  private refuseWhenLocked(action: string): void {
    if (this.policy.locked) throw lockedByPolicy(action, this.policy.origin);
  }

  /** Refuse a request that would remove or re-map policy entries (`shown`: how each is named in the message). */
  private refusePolicyEntries(shown: string[], action: string): void {
    if (shown.length) throw managedByPolicy(shown, action, this.policy.origin);
  }

  /**
   * Add reflect addresses, and `maps` (config/port-maps.ts) to every one of them, new or already there. Identical
   * maps already present are reported as existing; a conflicting one refuses the whole request before anything
   * changes (running config and persisted file are both checked).
   */
  addAddresses(by: ChangeOrigin, addresses: readonly string[], temporary: boolean, maps: readonly PortMapSpec[] = [], allow: AllowChange = {}): Promise<AddressAddResult> {
    const wanted = uniqueAddresses(addresses);
    const wantedMaps: PortMap[] = wanted.flatMap((address) => maps.map((m) => ({ address, protocol: m.protocol, port: m.port, target: m.target })));
    const changesAllow = Object.keys(allow).length > 0;
    return this.serialized(async () => {
      this.refuseWhenLocked('adding reflect addresses, port maps or allow lists');
      if (wantedMaps.length) this.refusePolicyEntries(wanted.filter((a) => this.policy.hasAddress(a)), 'given port maps');
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
        by,
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
  removePortMaps(by: ChangeOrigin, addresses: readonly string[], removals: readonly PortMapRemoval[], opts: RemoveOptions): Promise<AddressRemoveResult> {
    const wanted = uniqueAddresses(addresses);
    return this.serialized(async () => {
      this.refuseWhenLocked('removing port maps');
      this.refusePolicyEntries(wanted.filter((a) => this.policy.hasAddress(a)), 'changed');
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
        by,
      );
      return { removed: [], missing: [], portMapsRemoved: removed, portMapsMissing: missing };
    });
  }

  removeAddresses(by: ChangeOrigin, addresses: readonly string[], opts: RemoveOptions): Promise<AddressRemoveResult> {
    const wanted = uniqueAddresses(addresses);
    return this.serialized(async () => {
      this.refuseWhenLocked('removing reflect addresses');
      this.refusePolicyEntries(wanted.filter((a) => this.policy.hasAddress(a)), 'removed');
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
        by,
      );
      // The maps of a removed address go with it; they are reported so nothing disappears silently.
      const portMapsRemoved = portMapsOf(running).filter((m) => gone.includes(m.address));
      if (!opts.temporary) for (const m of portMapsOf(persistedConfig).filter((x) => gone.includes(x.address))) if (!portMapsRemoved.some((x) => portMapKey(x) === portMapKey(m))) portMapsRemoved.push(m);
      return { removed: gone, missing, portMapsRemoved, portMapsMissing: [] };
    });
  }

  addShieldPorts(by: ChangeOrigin, ports: readonly ShieldPort[], temporary: boolean): Promise<ChangeResult<ShieldPort> & { persisted: ShieldPort[] }> {
    const wanted = uniquePorts(ports);
    return this.serialized(async () => {
      this.refuseWhenLocked('adding shield ports');
      const running = this.engine.config();
      const next = cloneInterceptConfig(running);
      const added = addShieldPorts(next, wanted);
      const isNew = new Set(added.map(shieldKey));
      const existing = wanted.filter((p) => !isNew.has(shieldKey(p)));
      await this.change(
        next,
        temporary ? null : () => this.store.addShieldPorts(wanted),
        by,
      );
      const saved = new Set(this.store.path === null ? [] : this.store.config.shieldPorts.map(shieldKey));
      return { added, existing, persisted: wanted.filter((p) => saved.has(shieldKey(p))) };
    });
  }

  removeShieldPorts(by: ChangeOrigin, ports: readonly ShieldPort[], opts: RemoveOptions): Promise<ShieldRemoveResult> {
    const wanted = uniquePorts(ports);
    return this.serialized(async () => {
      this.refuseWhenLocked('removing shield ports');
      const byPolicy = new Set(this.policy.config.shieldPorts.map(shieldKey));
      this.refusePolicyEntries(wanted.filter((p) => byPolicy.has(shieldKey(p))).map(shieldKey), 'removed');
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
        by,
      );
      return { removed: gone, missing };
    });
  }

  /**
   * Change the configuration: the running engine first (Engine.reconfigure), then the persisted store
   * (ConfigStore.update via `persist`); if saving fails the engine goes back to where it was.
   */
  private async change(next: InterceptConfig, persist: (() => unknown) | null, by: ChangeOrigin): Promise<void> {
    const prev = this.engine.config();
    const engineChanges = !sameConfig(prev, next);
    if (engineChanges) await this.engine.reconfigure(next, by);
    if (!persist) return;
    try {
      persist();
    } catch (err) {
      if (engineChanges) await this.engine.reconfigure(prev, by).catch(() => undefined);
      throw err;
    }
  }

  /**
   * Make the reflect addresses exactly `wanted` (each with exactly its maps), running and in the config file, policy
   * entries aside (desired-state.ts). New addresses are checked against the host first (a refusal changes nothing).
   * With `whatIf` only the plan is returned.
   */
  setAddresses(by: ChangeOrigin, wanted: readonly WantedAddress[], whatIf: boolean): Promise<AddressSetResult> {
    return this.serialized(async () => {
      if (!whatIf) this.refuseWhenLocked('setting the reflect addresses');
      const running = this.engine.config();
      const plan = planAddressSet(running, this.persistedView(running), this.policy.config, wanted);
      checkLimits(plan.running);
      const warnings: AddressSetResult['warnings'] = [];
      const configured = [...running.reflectAddresses, ...this.store.config.reflectAddresses, ...plan.added];
      for (const address of plan.added.filter((a) => !running.reflectAddresses.includes(a))) {
        for (const message of (await this.validateAddress(address, configured)).warnings) warnings.push({ address, message });
      }
      if (!whatIf) await this.change(plan.running, this.store.path === null ? null : () => this.store.update((c) => replaceAll(c, plan.persisted)), by);
      const { added, removed, unchanged, policy, portMapsAdded, portMapsRemoved } = plan;
      return { whatIf, added, removed, unchanged, policy, portMapsAdded, portMapsRemoved, warnings };
    });
  }

  /** Make the shield ports exactly `wanted`, as setAddresses. */
  setShieldPorts(by: ChangeOrigin, wanted: readonly ShieldPort[], whatIf: boolean): Promise<ShieldSetResult> {
    const unique = uniquePorts(wanted);
    return this.serialized(async () => {
      if (!whatIf) this.refuseWhenLocked('setting the shield ports');
      const running = this.engine.config();
      const plan = planShieldSet(running, this.persistedView(running), this.policy.config, unique);
      checkLimits(plan.running);
      if (!whatIf) await this.change(plan.running, this.store.path === null ? null : () => this.store.update((c) => replaceAll(c, plan.persisted)), by);
      const { added, removed, unchanged, policy } = plan;
      return { whatIf, added, removed, unchanged, policy };
    });
  }

  /** The config file's entries; without a file (`--no-config`), the running ones count as in place. */
  private persistedView(running: InterceptConfig): InterceptConfig {
    if (this.store.path !== null) return this.store.config;
    const byPolicy = this.policy.config;
    return replaceLayer(running, byPolicy, emptyInterceptConfig(), null, []);
  }

  /**
   * Put a new managed policy in force: its addresses are checked against the host (one the host refuses is left
   * out and reported), then the running config moves from the old policy to the new one (config/layers.ts). If the
   * result cannot run (limits, conflicting maps, the host refused the change), the old policy stays in force and the
   * problem is reported. Never throws: policy problems never stop the engine.
   */
  applyPolicy(next: InterceptConfig | Error): Promise<{ adopted: boolean; problems: PolicyProblem[] }> {
    // Without reading hand edits first: a broken config file must not keep policy out of force.
    return this.serialized(async () => {
      if (next instanceof Error) {
        this.policy.refuse(next);
        return { adopted: false, problems: [problemOf(next)] };
      }
      const problems: PolicyProblem[] = [];
      const usable = cloneInterceptConfig(next);
      const before = this.policy.config;
      for (const address of next.reflectAddresses) {
        if (before.reflectAddresses.includes(address)) continue;
        try {
          await this.validateAddress(address, [...this.engine.config().reflectAddresses, ...next.reflectAddresses]);
        } catch (err) {
          if (!isRetroflectError(err)) throw err;
          problems.push({ code: err.code, message: `Policy address ${address} is not used: ${err.message}` });
          usable.reflectAddresses = usable.reflectAddresses.filter((a) => a !== address);
          usable.portMaps = portMapsOf(usable).filter((m) => m.address !== address);
        }
      }
      const running = this.engine.config();
      const persisted = this.store.path === null ? emptyInterceptConfig() : this.store.config;
      const target = replaceLayer(running, before, usable, null, [persisted]);
      try {
        checkLimits(target);
        await this.change(target, null, { kind: 'policy' });
      } catch (err) {
        this.policy.refuse(err as Error);
        return { adopted: false, problems: [problemOf(err as Error)] };
      }
      this.policy.adopt(usable, problems, next.lockChanges === true);
      return { adopted: true, problems };
    }, false);
  }

  /**
   * A config file edited by hand since we last read or wrote it is read back and applied to the running engine
   * (policy entries stay as policy says), so the change about to be made lands on top of the edit, not over it.
   */
  private async syncOutsideEdits(): Promise<void> {
    if (!this.store.changedOutside()) return;
    const before = this.store.reload();
    const after = this.store.config;
    const running = this.engine.config();
    const next = replaceLayer(running, before, after, this.policy.config, []);
    checkLimits(next);
    await this.change(next, null, { kind: 'config-file' });
    this.log(`config: ${this.store.path} was changed outside retroflect; read it again and applied it before this change.`);
  }

  /** Run `fn` after every earlier change finished, on top of any hand edit of the config file. */
  private serialized<T>(fn: () => Promise<T>, readHandEdits = true): Promise<T> {
    const withSync = async (): Promise<T> => {
      // Locked, a request is refused or only planned: it must not apply a hand edit on the side ("nothing was
      // changed"); the edit is read at the first change after the lock is lifted, or at the next start.
      if (readHandEdits && !this.policy.locked) await this.syncOutsideEdits();
      return fn();
    };
    const run = this.lock.then(withSync, withSync);
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
  return sameEntries(a, b);
}

/** Make `cfg` hold exactly `next`'s entries (ConfigStore.update edits in place). */
function replaceAll(cfg: InterceptConfig, next: InterceptConfig): void {
  cfg.reflectAddresses = [...next.reflectAddresses];
  cfg.shieldPorts = next.shieldPorts.map((p) => ({ ...p }));
  if (next.portMaps?.length) cfg.portMaps = next.portMaps.map((m) => ({ ...m }));
  else delete cfg.portMaps;
  if (next.allow?.length) cfg.allow = next.allow.map((a) => cloneAllowLists(a));
  else delete cfg.allow;
}
