/**
 * The persisted config file: `{ "schemaVersion": 1, "reflectAddresses": [...], "shieldPorts": [{port, protocol}] }`.
 * A reflect address with port maps is written as `{ "address": "198.51.100.1", "portMaps": ["80=8080/tcp", ...] }`
 * and the file then says schemaVersion 2, so a retroflect from before port mapping refuses it with a clear message
 * instead of dropping the maps; a file without maps stays version 1. Both versions load.
 *
 * Load is strict (a typo must not silently drop a shield port) and never touches the file. Save is atomic: the new
 * content goes to a temp file in the same directory, is fsynced, renamed over the old file, and the directory is
 * fsynced, so after a crash the file is either the old or the new version, never a mix.
 */
import { closeSync, fsyncSync, lstatSync, openSync, readdirSync, readFileSync, readlinkSync, renameSync, statSync, unlinkSync, writeSync, mkdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join, basename, resolve } from 'node:path';
import {
  MAX_REFLECT_ADDRESSES,
  MAX_SHIELD_PORTS,
  canonicalAddress,
  checkLimits,
  cloneInterceptConfig,
  emptyInterceptConfig,
  parseShieldEntry,
  shieldKey,
  type InterceptConfig,
  type ShieldPort,
} from './intercept-config.ts';
import { ErrorCode, RetroflectError, isRetroflectError } from '../errors.ts';
import { formatPortMap, MAX_PORT_MAPS, mergePortMaps, parsePortMapSpec, portMapsFor, portMapsOf, type PortMap } from './port-maps.ts';

/** Version of the file layout. A file with a higher number was written by a newer retroflect. */
export const CONFIG_SCHEMA_VERSION = 2;
/** The version written when no address has port maps (readable by every retroflect). */
const CONFIG_SCHEMA_VERSION_WITHOUT_MAPS = 1;

/** Largest config file we read; a real one is a few KiB (64 addresses, 1024 ports). */
const MAX_CONFIG_BYTES = 1024 * 1024;

const KNOWN_KEYS = new Set(['schemaVersion', 'reflectAddresses', 'shieldPorts']);

/** The file's JSON layout. */
export interface ConfigFileContent {
  schemaVersion: number;
  reflectAddresses: (string | { address: string; portMaps: string[] })[];
  shieldPorts: ShieldPort[];
}

/**
 * Where the config lives: `--config` wins, then env RETROFLECT_CONFIG, then the platform default
 * (Windows `%ProgramData%\Retroflect\config.json`, elsewhere `/etc/retroflect/config.json`).
 */
export function defaultConfigPath(env: NodeJS.ProcessEnv = process.env, platform: NodeJS.Platform = process.platform): string {
  if (platform === 'win32') {
    const programData = env.ProgramData ?? env.PROGRAMDATA ?? 'C:\\ProgramData';
    return `${programData}\\Retroflect\\config.json`;
  }
  return '/etc/retroflect/config.json';
}

export function resolveConfigPath(option: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  if (option !== undefined && option !== '') return option;
  if (env.RETROFLECT_CONFIG) return env.RETROFLECT_CONFIG;
  return defaultConfigPath(env);
}

function invalid(path: string, problem: string, details: Record<string, unknown> = {}): RetroflectError {
  return new RetroflectError(ErrorCode.CONFIG_INVALID, `Config file ${path} is invalid: ${problem}`, {
    hint: 'Fix the file by hand (it was not changed), or move it away to start with an empty config.',
    details: { path, ...details },
  });
}

/** 1-based line and column of a character offset, for error messages. */
function lineColumn(text: string, offset: number): { line: number; column: number } {
  const before = text.slice(0, offset);
  const line = before.split('\n').length;
  const column = offset - before.lastIndexOf('\n');
  return { line, column };
}

const LITERAL = /true|false|null|-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;

/**
 * Offset of the first JSON syntax error (V8 does not always say where). A small scanner that only checks structure;
 * JSON.parse has already said the text is invalid, so this just locates it. Null when it finds nothing.
 */
function jsonErrorOffset(text: string): number | null {
  let i = 0;
  const ws = (): void => {
    while (i < text.length && ' \t\r\n'.includes(text[i]!)) i++;
  };
  const fail = (): never => {
    throw i;
  };
  const value = (): void => {
    ws();
    const c = text[i];
    if (c === '{') {
      i++;
      ws();
      if (text[i] === '}') return void i++;
      for (;;) {
        ws();
        if (text[i] !== '"') fail();
        string();
        ws();
        if (text[i] !== ':') fail();
        i++;
        value();
        ws();
        if (text[i] === ',') i++;
        else if (text[i] === '}') return void i++;
        else fail();
      }
    } else if (c === '[') {
      i++;
      ws();
      if (text[i] === ']') return void i++;
      for (;;) {
        value();
        ws();
        if (text[i] === ',') i++;
        else if (text[i] === ']') return void i++;
        else fail();
      }
    } else if (c === '"') string();
    else {
      // Sticky (y) regex at lastIndex: matching in place keeps the scan linear (a slice per value was quadratic).
      LITERAL.lastIndex = i;
      const m = LITERAL.exec(text);
      if (!m) fail();
      i += m![0].length;
    }
  };
  const string = (): void => {
    i++;
    while (i < text.length && text[i] !== '"') {
      if (text[i] === '\\') i++;
      else if (text.charCodeAt(i) < 0x20) fail();
      i++;
    }
    if (i >= text.length) fail();
    i++;
  };
  try {
    value();
    ws();
    return i < text.length ? i : null;
  } catch (at) {
    return typeof at === 'number' ? Math.min(at, text.length) : null;
  }
}

/** Parse and validate file text. Exported for tests; `path` only names the file in errors. */
export function parseConfigText(text: string, path: string): InterceptConfig {
  const body = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text; // Notepad writes a BOM
  let raw: unknown;
  try {
    raw = JSON.parse(body);
  } catch (err) {
    const msg = (err as Error).message;
    const pos = /position (\d+)/.exec(msg);
    const offset = pos ? Number(pos[1]) : jsonErrorOffset(body);
    if (offset !== null) {
      const { line, column } = lineColumn(body, offset);
      throw invalid(path, `not valid JSON at line ${line}, column ${column} (${msg}).`, { line, column });
    }
    throw invalid(path, `not valid JSON (${msg}).`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw invalid(path, 'the top level must be a JSON object.');
  const obj = raw as Record<string, unknown>;
  for (const key of Object.keys(obj)) {
    if (!KNOWN_KEYS.has(key)) throw invalid(path, `unknown field '${key}' (known: ${[...KNOWN_KEYS].join(', ')}).`, { field: key });
  }
  if (obj.schemaVersion !== CONFIG_SCHEMA_VERSION && obj.schemaVersion !== CONFIG_SCHEMA_VERSION_WITHOUT_MAPS) {
    const newer = typeof obj.schemaVersion === 'number' && obj.schemaVersion > CONFIG_SCHEMA_VERSION;
    throw invalid(
      path,
      newer
        ? `schemaVersion ${obj.schemaVersion} was written by a newer retroflect; this one reads ${CONFIG_SCHEMA_VERSION}.`
        : `field 'schemaVersion' must be ${CONFIG_SCHEMA_VERSION_WITHOUT_MAPS} or ${CONFIG_SCHEMA_VERSION}.`,
      { field: 'schemaVersion' },
    );
  }
  // Linear in the file's size, and refused as soon as a limit is passed: a huge file costs no more than its first
  // entries beyond the limit (sets for duplicates; an array `includes`/`some` per entry was quadratic).
  const cfg = emptyInterceptConfig();
  const addrs = obj.reflectAddresses === undefined ? [] : obj.reflectAddresses;
  if (!Array.isArray(addrs)) throw invalid(path, `field 'reflectAddresses' must be an array of strings.`, { field: 'reflectAddresses' });
  const seenAddresses = new Set<string>();
  const maps: PortMap[] = [];
  addrs.forEach((a, i) => {
    const field = `reflectAddresses[${i}]`;
    let text: unknown = a;
    let mapSpecs: unknown[] = [];
    if (typeof a === 'object' && a !== null && !Array.isArray(a)) {
      const o = a as Record<string, unknown>;
      const extra = Object.keys(o).filter((k) => k !== 'address' && k !== 'portMaps');
      if (extra.length) throw invalid(path, `field '${field}' has unknown field '${extra[0]}' (known: address, portMaps).`, { field });
      if (o.portMaps !== undefined && !Array.isArray(o.portMaps)) throw invalid(path, `field '${field}.portMaps' must be an array.`, { field: `${field}.portMaps` });
      text = o.address;
      mapSpecs = (o.portMaps as unknown[] | undefined) ?? [];
    }
    if (typeof text !== 'string') throw invalid(path, `field '${field}' must be an address string or {"address", "portMaps"}.`, { field });
    let c: string;
    try {
      c = canonicalAddress(text);
    } catch (err) {
      throw invalid(path, `field '${field}': ${(err as Error).message}`, { field });
    }
    if (!seenAddresses.has(c)) {
      if (seenAddresses.size === MAX_REFLECT_ADDRESSES) {
        throw invalid(path, `field '${field}' is one more than the ${MAX_REFLECT_ADDRESSES} reflect addresses supported.`, { field });
      }
      seenAddresses.add(c);
      cfg.reflectAddresses.push(c);
    }
    mapSpecs.forEach((spec, j) => {
      const mapField = `${field}.portMaps[${j}]`;
      try {
        for (const m of parsePortMapSpec(spec)) maps.push({ address: c, ...m });
      } catch (err) {
        throw invalid(path, `field '${mapField}': ${(err as Error).message}`, { field: mapField });
      }
      if (maps.length > MAX_PORT_MAPS) {
        throw invalid(path, `field '${mapField}' takes the port maps past the ${MAX_PORT_MAPS} supported (a map without /tcp or /udp counts twice).`, { field: mapField });
      }
    });
  });
  if (maps.length) cfg.portMaps = mergePortMaps([], maps).maps;
  const ports = obj.shieldPorts === undefined ? [] : obj.shieldPorts;
  if (!Array.isArray(ports)) throw invalid(path, `field 'shieldPorts' must be an array.`, { field: 'shieldPorts' });
  const seenPorts = new Set<string>();
  ports.forEach((p, i) => {
    const field = `shieldPorts[${i}]`;
    let parsed: ShieldPort[];
    try {
      parsed = parseShieldEntry(p);
    } catch (err) {
      throw invalid(path, `field '${field}': ${(err as Error).message}`, { field });
    }
    for (const q of parsed) {
      const key = shieldKey(q);
      if (seenPorts.has(key)) continue;
      if (seenPorts.size === MAX_SHIELD_PORTS) {
        throw invalid(path, `field '${field}' is one more than the ${MAX_SHIELD_PORTS} shield ports supported.`, { field });
      }
      seenPorts.add(key);
      cfg.shieldPorts.push(q);
    }
  });
  try {
    checkLimits(cfg);
  } catch (err) {
    throw invalid(path, (err as Error).message);
  }
  return cfg;
}

export function serializeConfig(cfg: InterceptConfig): string {
  const maps = portMapsOf(cfg);
  const content: ConfigFileContent = {
    schemaVersion: maps.length ? CONFIG_SCHEMA_VERSION : CONFIG_SCHEMA_VERSION_WITHOUT_MAPS,
    reflectAddresses: cfg.reflectAddresses.map((address) => {
      const mine = portMapsFor(cfg, address);
      return mine.length ? { address, portMaps: mine.map(formatPortMap) } : address;
    }),
    shieldPorts: cfg.shieldPorts.map((p) => ({ port: p.port, protocol: p.protocol })),
  };
  return JSON.stringify(content, null, 2) + '\n';
}

export interface LoadedConfig {
  config: InterceptConfig;
  path: string;
  /** False when the file did not exist (the config is then empty). */
  existed: boolean;
}

/** Read the config file. Missing → empty config. Anything wrong → E_CONFIG_INVALID; the file is never modified. */
export function loadConfigFile(path: string): LoadedConfig {
  let text: string;
  try {
    const st = statSync(path);
    if (!st.isFile()) throw invalid(path, 'it is not a regular file.');
    if (st.size > MAX_CONFIG_BYTES) throw invalid(path, `it is ${st.size} bytes; a config file is at most ${MAX_CONFIG_BYTES}.`);
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if (isRetroflectError(err)) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { config: emptyInterceptConfig(), path, existed: false };
    throw new RetroflectError(ErrorCode.CONFIG_INVALID, `Cannot read config file ${path}: ${(err as Error).message}`, {
      hint: code === 'EACCES' || code === 'EPERM' ? 'Run as root / Administrator.' : 'Check the path and its permissions.',
      details: { path, errno: code },
      cause: err,
    });
  }
  return { config: parseConfigText(text, path), path, existed: true };
}

/** Hooks for tests that prove atomicity by failing at a chosen step. Never set outside tests. */
export interface SaveFaults {
  /** Called after the temp file was written and before it is renamed over the target. Throw to simulate a crash. */
  beforeRename?: (tempPath: string) => void;
}

/** Most symlinks followed to find the file a config path names (the kernel's own limit is 40). */
const MAX_LINK_HOPS = 40;

/**
 * The file a save must replace. A config path that is a symlink (an admin keeping the file elsewhere, or in a
 * managed location) is written through: the link stays, its target gets the new content, atomically in the target's
 * own directory. Renaming over the link itself would turn it into a plain file and leave the target stale.
 * Follows dangling links too (the target may not exist yet).
 */
export function configWriteTarget(path: string): string {
  let current = resolve(path);
  for (let hops = 0; hops < MAX_LINK_HOPS; hops++) {
    let isLink: boolean;
    try {
      isLink = lstatSync(current).isSymbolicLink();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return current;
      throw err;
    }
    if (!isLink) return current;
    current = resolve(dirname(current), readlinkSync(current));
  }
  throw Object.assign(new Error(`too many levels of symbolic links at ${path}`), { code: 'ELOOP' });
}

/** Temp files of our atomic saves: `.<name>.<pid>.<8 hex>.tmp` beside the file. */
function tempFilePattern(target: string): RegExp {
  const name = basename(target).replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`^\\.${name}\\.(\\d+)\\.[0-9a-f]{8}\\.tmp$`);
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Remove temp files our own saves left beside the config when the process was killed between creating the temp
 * file and renaming it (SIGKILL, power loss). Only files named exactly as saveConfigFile names them, and only those
 * of processes that no longer run (a live engine may be saving right now). Returns the paths removed; a file that
 * cannot be removed is left (it harms nothing but disk space).
 */
export function removeOrphanTempFiles(path: string): string[] {
  let target: string;
  try {
    target = configWriteTarget(path);
  } catch {
    return [];
  }
  const dir = dirname(target);
  const pattern = tempFilePattern(target);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    const m = pattern.exec(name);
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || processAlive(pid)) continue;
    const file = join(dir, name);
    try {
      if (!lstatSync(file).isFile()) continue;
      unlinkSync(file);
      removed.push(file);
    } catch {
      /* gone already, or not ours to remove */
    }
  }
  return removed;
}

/**
 * Write the config atomically (temp file in the same directory → write → fsync → rename → fsync directory).
 * On failure the old file is untouched, the temp file removed, and E_CONFIG_WRITE_FAILED thrown. A symlinked path
 * is written through to its target (configWriteTarget).
 */
export function saveConfigFile(path: string, cfg: InterceptConfig, faults: SaveFaults = {}): void {
  let target = path;
  let temp = '';
  let fd: number | undefined;
  try {
    target = configWriteTarget(path);
    const dir = dirname(target);
    temp = join(dir, `.${basename(target)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    let mode = 0o644;
    try {
      mode = statSync(target).mode & 0o777; // keep the permissions an admin gave the file
    } catch {
      /* new file */
    }
    // 'wx': never follow or overwrite something already at the temp name.
    fd = openSync(temp, 'wx', mode);
    const data = Buffer.from(serializeConfig(cfg), 'utf8');
    let off = 0;
    while (off < data.length) off += writeSync(fd, data, off, data.length - off);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    faults.beforeRename?.(temp);
    renameSync(temp, target);
    if (process.platform !== 'win32') {
      // Make the rename itself durable. Windows cannot open a directory for fsync; NTFS journals the rename.
      const dfd = openSync(dir, 'r');
      try {
        fsyncSync(dfd);
      } finally {
        closeSync(dfd);
      }
    }
  } catch (err) {
    if (fd !== undefined) {
      try {
        closeSync(fd);
      } catch {
        /* already failing */
      }
    }
    try {
      if (temp) unlinkSync(temp);
    } catch {
      /* not created, or already renamed */
    }
    throw new RetroflectError(ErrorCode.CONFIG_WRITE_FAILED, `Could not write config file ${path}: ${(err as Error).message}`, {
      hint: 'Check free disk space and the permissions of the directory; the change was not applied.',
      details: { path, errno: (err as NodeJS.ErrnoException).code ?? null },
      cause: err,
    });
  }
}

/**
 * The persisted config in memory plus its file. Changes are computed on a copy, saved, and only then become the
 * in-memory state, so a failed save leaves both the file and `config` as they were. Saves are serialized.
 */
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

  /** Apply `change` to a copy, save it, then adopt it. Returns whether anything changed (no change → no write). */
  update(change: (cfg: InterceptConfig) => void): boolean {
    const next = cloneInterceptConfig(this.current);
    change(next);
    if (serializeConfig(next) === serializeConfig(this.current)) return false;
    if (this.path !== null) saveConfigFile(this.path, next, this.faults);
    this.current = next;
    return true;
  }

  addAddresses(addrs: readonly string[]): boolean {
    return this.update((c) => {
      const have = new Set(c.reflectAddresses);
      for (const a of addrs) if (!have.has(a)) c.reflectAddresses.push(a), have.add(a);
    });
  }

  removeAddresses(addrs: readonly string[]): boolean {
    const drop = new Set(addrs);
    return this.update((c) => {
      c.reflectAddresses = c.reflectAddresses.filter((a) => !drop.has(a));
      c.portMaps = portMapsOf(c).filter((m) => !drop.has(m.address));
    });
  }

  addShieldPorts(ports: readonly ShieldPort[]): boolean {
    return this.update((c) => {
      const have = new Set(c.shieldPorts.map(shieldKey));
      for (const p of ports) {
        if (have.has(shieldKey(p))) continue;
        have.add(shieldKey(p));
        c.shieldPorts.push({ ...p });
      }
    });
  }

  removeShieldPorts(ports: readonly ShieldPort[]): boolean {
    const keys = new Set(ports.map(shieldKey));
    return this.update((c) => {
      c.shieldPorts = c.shieldPorts.filter((p) => !keys.has(shieldKey(p)));
    });
  }
}
