/**
 * `ConfigStore`: the persisted config in memory plus its file. Changes are computed on a copy, saved, and only then
 * become the in-memory state, so a failed save leaves both the file and `config` as they were. Saves are serialized
 * (the process is single-threaded and every save is synchronous).
 *
 * The store remembers the file's fingerprint (config-file.ts) at its last load or save, so an edit made by hand while
 * the engine runs is noticed (`changedOutside`) and read back (`reload`) before the next change is written over it.
 */
import {
  addReflectAddresses,
  addShieldPorts,
  cloneInterceptConfig,
  emptyInterceptConfig,
  shieldKey,
  type InterceptConfig,
  type ShieldPort,
} from './intercept-config.ts';
import type { SaveFaults } from './atomic-save.ts';
import { configFileFingerprint, loadConfigFile, saveConfigFile, serializeConfig } from './config-file.ts';
import { portMapsOf } from './port-maps.ts';
import { allowListsOf } from './allow-lists.ts';

export class ConfigStore {
  readonly path: string | null;
  private current: InterceptConfig;
  private readonly faults: SaveFaults;
  /** The file's fingerprint when we last read or wrote it (null: no file). */
  private fingerprint: string | null;

  private constructor(path: string | null, cfg: InterceptConfig, faults: SaveFaults, fingerprint: string | null) {
    this.path = path;
    this.current = cfg;
    this.faults = faults;
    this.fingerprint = fingerprint;
  }

  /** Load from `path` (missing → empty). Throws E_CONFIG_INVALID. */
  static open(path: string, faults: SaveFaults = {}): ConfigStore {
    const loaded = loadConfigFile(path);
    return new ConfigStore(path, loaded.config, faults, loaded.fingerprint);
  }

  /** A store without a file (engine started with `--no-config`): every change is effectively temporary. */
  static inMemory(cfg: InterceptConfig = emptyInterceptConfig()): ConfigStore {
    return new ConfigStore(null, cloneInterceptConfig(cfg), {}, null);
  }

  /** Whether someone else wrote (or removed) the file since we last read or wrote it. */
  changedOutside(): boolean {
    return this.path !== null && configFileFingerprint(this.path) !== this.fingerprint;
  }

  /** Read the file again and adopt it; returns the config it held before. Throws E_CONFIG_INVALID (nothing adopted). */
  reload(): InterceptConfig {
    if (this.path === null) return this.config;
    const loaded = loadConfigFile(this.path);
    const before = this.current;
    this.current = loaded.config;
    this.fingerprint = loaded.fingerprint;
    return cloneInterceptConfig(before);
  }

  /** A copy of the persisted config. */
  get config(): InterceptConfig {
    return cloneInterceptConfig(this.current);
  }

  /** Run `edit` on a copy, save it, then adopt it. Returns whether anything changed (no change → no write). */
  update(edit: (cfg: InterceptConfig) => void): boolean {
    const next = cloneInterceptConfig(this.current);
    edit(next);
    if (serializeConfig(next) === serializeConfig(this.current)) return false;
    if (this.path !== null) this.fingerprint = saveConfigFile(this.path, next, this.faults);
    this.current = next;
    return true;
  }

  addAddresses(addrs: readonly string[]): boolean {
    return this.update((c) => void addReflectAddresses(c, addrs));
  }

  removeAddresses(addrs: readonly string[]): boolean {
    const drop = new Set(addrs);
    return this.update((c) => {
      c.reflectAddresses = c.reflectAddresses.filter((a) => !drop.has(a));
      c.portMaps = portMapsOf(c).filter((m) => !drop.has(m.address));
      c.allow = allowListsOf(c).filter((a) => !drop.has(a.address));
    });
  }

  addShieldPorts(ports: readonly ShieldPort[]): boolean {
    return this.update((c) => void addShieldPorts(c, ports));
  }

  removeShieldPorts(ports: readonly ShieldPort[]): boolean {
    const keys = new Set(ports.map(shieldKey));
    return this.update((c) => {
      c.shieldPorts = c.shieldPorts.filter((p) => !keys.has(shieldKey(p)));
    });
  }
}
