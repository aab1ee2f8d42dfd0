/**
 * `ConfigStore`: the persisted config in memory plus its file. Changes are computed on a copy, saved, and only then
 * become the in-memory state, so a failed save leaves both the file and `config` as they were. Saves are serialized
 * (the process is single-threaded and every save is synchronous).
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
import { loadConfigFile, saveConfigFile, serializeConfig } from './config-file.ts';
import { portMapsOf } from './port-maps.ts';
import { allowListsOf } from './allow-lists.ts';

export class ConfigStore {
  readonly path: string | null;
  private current: InterceptConfig;
  private readonly faults: SaveFaults;

  private constructor(path: string | null, cfg: InterceptConfig, faults: SaveFaults) {
    this.path = path;
    this.current = cfg;
    this.faults = faults;
  }

  /** Load from `path` (missing → empty). Throws E_CONFIG_INVALID. */
  static open(path: string, faults: SaveFaults = {}): ConfigStore {
    return new ConfigStore(path, loadConfigFile(path).config, faults);
  }

  /** A store without a file (engine started with `--no-config`): every change is effectively temporary. */
  static inMemory(cfg: InterceptConfig = emptyInterceptConfig()): ConfigStore {
    return new ConfigStore(null, cloneInterceptConfig(cfg), {});
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
    if (this.path !== null) saveConfigFile(this.path, next, this.faults);
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
