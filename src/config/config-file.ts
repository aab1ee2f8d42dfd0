/**
 * The config file's layout: `{ "schemaVersion": 1, "reflectAddresses": [...], "shieldPorts": [{port, protocol}] }`.
 * A reflect address with port maps is written as `{ "address": "198.51.100.1", "portMaps": ["80=8080/tcp", ...] }`
 * and the file then says schemaVersion 2, so a retroflect from before port mapping refuses it with a clear message
 * instead of dropping the maps; a file without maps stays version 1. An address with allow lists (allow-lists.ts)
 * adds `"ports": ["8080/tcp"], "users": [1000], "groups", "cgroups", "apps"` to its object, and the file says 3 (an
 * older retroflect must refuse it rather than open every port). All three versions load.
 *
 * Load is strict (a typo must not silently drop a shield port) and never touches the file; JSON errors say line and
 * column (json-positions.ts). Save is atomic (atomic-save.ts). Where the file is: config-path.ts; the in-memory
 * copy that changes go through: config-store.ts.
 */
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import {
  MAX_REFLECT_ADDRESSES,
  MAX_SHIELD_PORTS,
  canonicalAddress,
  checkLimits,
  ConfigAdditions,
  emptyInterceptConfig,
  parseShieldEntry,
  type InterceptConfig,
  type ShieldPort,
} from './intercept-config.ts';
import { ErrorCode, RetroflectError, isRetroflectError } from '../errors.ts';
import {
  formatPortMap, MAX_PORT_MAPS, mergePortMaps, parsePortMapSpec, portMapsFor, portMapsOf, type PortMap,
} from './port-maps.ts';
import { writeFileAtomically, type SaveFaults } from './atomic-save.ts';
import {
  ALLOW_KINDS, allowedPortKey, allowListsFor, allowListsOf, parseAllowList, type AddressAllowLists, type AllowLists,
} from './allow-lists.ts';
import { JsonSyntaxError, parseJsonText } from './json-positions.ts';

/** Version of the file layout. A file with a higher number was written by a newer retroflect. */
export const CONFIG_SCHEMA_VERSION = 3;
/** The version written when no address has port maps or allow lists (readable by every retroflect). */
const CONFIG_SCHEMA_VERSION_WITHOUT_MAPS = 1;
/** The version written when addresses have port maps but no allow lists (readable since port mapping). */
const CONFIG_SCHEMA_VERSION_WITH_MAPS = 2;
/** Fields of an address object besides `address`. */
const ADDRESS_FIELDS = ['address', 'portMaps', ...ALLOW_KINDS] as const;

/** Largest config file we read; a real one is a few KiB (64 addresses, 1024 ports). */
const MAX_CONFIG_BYTES = 1024 * 1024;

const KNOWN_KEYS = new Set(['schemaVersion', 'reflectAddresses', 'shieldPorts']);

/** The file's JSON layout. */
/** A reflect address in the file with more than its text: its port maps and allow lists (ports as specs). */
type FileAddressEntry = { address: string; portMaps?: string[] } & Omit<AllowLists, 'ports'> & { ports?: string[] };

export interface ConfigFileContent {
  schemaVersion: number;
  reflectAddresses: (string | FileAddressEntry)[];
  shieldPorts: ShieldPort[];
}

/** What a parse error names: the config file (default) or a managed policy (config/policy.ts) in the same layout. */
export interface ConfigOrigin {
  /** "Config file /etc/retroflect/config.json", "Policy file ...", "Policy HKLM\\SOFTWARE\\Policies\\Retroflect". */
  label: string;
  hint: string;
  /** A managed policy: it may also set POLICY_LOCK_FIELD, which a config file may not. */
  policy?: boolean;
}

/** The top-level field only a policy may have: `true` makes the engine refuse every pipe change (config/policy.ts). */
export const POLICY_LOCK_FIELD = 'lockChanges';

function configFileOrigin(path: string): ConfigOrigin {
  return {
    label: `Config file ${path}`,
    hint: 'Fix the file by hand (it was not changed), or move it away to start with an empty config.',
  };
}

function invalidIn(origin: ConfigOrigin, path: string, problem: string,
  details: Record<string, unknown> = {}): RetroflectError {
  return new RetroflectError(ErrorCode.CONFIG_INVALID, `${origin.label} is invalid: ${problem}`,
    { hint: origin.hint, details: { path, ...details } });
}

/** Parse and validate file text. Exported for tests; `path` only names the file in errors. */
export function parseConfigText(text: string, path: string,
  origin: ConfigOrigin = configFileOrigin(path)): InterceptConfig {
  let raw: unknown;
  try {
    raw = parseJsonText(text);
  } catch (err) {
    if (!(err instanceof JsonSyntaxError)) throw err;
    throw invalidIn(origin, path, err.message, err.line === null ? {} : { line: err.line, column: err.column });
  }
  return parseConfigObject(raw, path, origin);
}

/** Validate the file's layout once parsed (the Windows policy builds the same object from the registry). */
export function parseConfigObject(raw: unknown, path: string,
  origin: ConfigOrigin = configFileOrigin(path)): InterceptConfig {
  const invalid = (_path: string, problem: string, details: Record<string, unknown> = {}) =>
    invalidIn(origin, path, problem, details);
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw invalid(path, 'the top level must be a JSON object.');
  }
  const obj = raw as Record<string, unknown>;
  for (const key of Object.keys(obj)) {
    if (KNOWN_KEYS.has(key) || (origin.policy && key === POLICY_LOCK_FIELD)) continue;
    throw invalid(path, `unknown field '${key}' (known: ${[...KNOWN_KEYS].join(', ')}).`, { field: key });
  }
  const readable = [CONFIG_SCHEMA_VERSION_WITHOUT_MAPS, CONFIG_SCHEMA_VERSION_WITH_MAPS, CONFIG_SCHEMA_VERSION];
  if (!readable.includes(obj.schemaVersion as number)) {
    const newer = typeof obj.schemaVersion === 'number' && obj.schemaVersion > CONFIG_SCHEMA_VERSION;
    throw invalid(
      path,
      newer
        ? `schemaVersion ${obj.schemaVersion} was written by a newer retroflect; ` +
          `this one reads ${CONFIG_SCHEMA_VERSION}.`
        : `field 'schemaVersion' must be ${CONFIG_SCHEMA_VERSION_WITHOUT_MAPS}, ${CONFIG_SCHEMA_VERSION_WITH_MAPS} ` +
          `or ${CONFIG_SCHEMA_VERSION}.`,
      { field: 'schemaVersion' },
    );
  }
  // Linear in the file's size, and refused as soon as a limit is passed: a huge file costs no more than its first
  // entries beyond the limit (ConfigAdditions keeps sets for duplicates; `includes`/`some` per entry was quadratic).
  const cfg = emptyInterceptConfig();
  const additions = new ConfigAdditions(cfg);
  const addrs = obj.reflectAddresses === undefined ? [] : obj.reflectAddresses;
  if (!Array.isArray(addrs)) {
    throw invalid(path, `field 'reflectAddresses' must be an array of strings.`, { field: 'reflectAddresses' });
  }
  const maps: PortMap[] = [];
  const allow: AddressAllowLists[] = [];
  addrs.forEach((a, i) => {
    const field = `reflectAddresses[${i}]`;
    let text: unknown = a;
    let mapSpecs: unknown[] = [];
    const lists: AllowLists = {};
    if (typeof a === 'object' && a !== null && !Array.isArray(a)) {
      const o = a as Record<string, unknown>;
      const extra = Object.keys(o).filter((k) => !(ADDRESS_FIELDS as readonly string[]).includes(k));
      if (extra.length) {
        const known = ADDRESS_FIELDS.join(', ');
        throw invalid(path, `field '${field}' has unknown field '${extra[0]}' (known: ${known}).`, { field });
      }
      if (o.portMaps !== undefined && !Array.isArray(o.portMaps)) {
        throw invalid(path, `field '${field}.portMaps' must be an array.`, { field: `${field}.portMaps` });
      }
      text = o.address;
      mapSpecs = (o.portMaps as unknown[] | undefined) ?? [];
      for (const kind of ALLOW_KINDS) {
        if (o[kind] === undefined) continue;
        if (!Array.isArray(o[kind])) {
          throw invalid(path, `field '${field}.${kind}' must be an array.`, { field: `${field}.${kind}` });
        }
        try {
          (lists as Record<string, unknown>)[kind] = parseAllowList(kind, o[kind] as unknown[]);
        } catch (err) {
          throw invalid(path, `field '${field}.${kind}': ${(err as Error).message}`, { field: `${field}.${kind}` });
        }
      }
    }
    if (typeof text !== 'string') {
      throw invalid(path, `field '${field}' must be an address string or {"address", "portMaps"}.`, { field });
    }
    let c: string;
    try {
      c = canonicalAddress(text);
    } catch (err) {
      throw invalid(path, `field '${field}': ${(err as Error).message}`, { field });
    }
    if (additions.addAddress(c) && cfg.reflectAddresses.length > MAX_REFLECT_ADDRESSES) {
      throw invalid(path, `field '${field}' is one more than the ${MAX_REFLECT_ADDRESSES} reflect addresses supported.`,
        { field });
    }
    if (Object.keys(lists).length && !allow.some((x) => x.address === c)) allow.push({ address: c, ...lists });
    mapSpecs.forEach((spec, j) => {
      const mapField = `${field}.portMaps[${j}]`;
      try {
        for (const m of parsePortMapSpec(spec)) maps.push({ address: c, ...m });
      } catch (err) {
        throw invalid(path, `field '${mapField}': ${(err as Error).message}`, { field: mapField });
      }
      if (maps.length > MAX_PORT_MAPS) {
        throw invalid(path, `field '${mapField}' takes the port maps past the ${MAX_PORT_MAPS} supported ` +
          '(a map without /tcp or /udp counts twice).', { field: mapField });
      }
    });
  });
  if (maps.length) cfg.portMaps = mergePortMaps([], maps).maps;
  if (allow.length) cfg.allow = allow;
  const ports = obj.shieldPorts === undefined ? [] : obj.shieldPorts;
  if (!Array.isArray(ports)) throw invalid(path, `field 'shieldPorts' must be an array.`, { field: 'shieldPorts' });
  ports.forEach((p, i) => {
    const field = `shieldPorts[${i}]`;
    let parsed: ShieldPort[];
    try {
      parsed = parseShieldEntry(p);
    } catch (err) {
      throw invalid(path, `field '${field}': ${(err as Error).message}`, { field });
    }
    for (const q of parsed) {
      if (additions.addShieldPort(q) && cfg.shieldPorts.length > MAX_SHIELD_PORTS) {
        throw invalid(path, `field '${field}' is one more than the ${MAX_SHIELD_PORTS} shield ports supported.`,
          { field });
      }
    }
  });
  try {
    checkLimits(cfg);
  } catch (err) {
    throw invalid(path, (err as Error).message);
  }
  const lock = origin.policy ? obj[POLICY_LOCK_FIELD] : undefined;
  if (lock !== undefined && typeof lock !== 'boolean') {
    throw invalid(path, `field '${POLICY_LOCK_FIELD}' must be true or false.`, { field: POLICY_LOCK_FIELD });
  }
  if (lock === true) cfg.lockChanges = true;
  return cfg;
}

export function serializeConfig(cfg: InterceptConfig): string {
  const maps = portMapsOf(cfg);
  const allow = allowListsOf(cfg);
  const content: ConfigFileContent = {
    schemaVersion: allow.length
      ? CONFIG_SCHEMA_VERSION
      : maps.length ? CONFIG_SCHEMA_VERSION_WITH_MAPS : CONFIG_SCHEMA_VERSION_WITHOUT_MAPS,
    reflectAddresses: cfg.reflectAddresses.map((address) => {
      const mine = portMapsFor(cfg, address);
      const { ports, ...who } = allowListsFor(cfg, address);
      if (!mine.length && !ports && !Object.keys(who).length) return address;
      return {
        address,
        ...(mine.length ? { portMaps: mine.map(formatPortMap) } : {}),
        ...(ports ? { ports: ports.map(allowedPortKey) } : {}),
        ...who,
      };
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
  /** What configFileFingerprint says of the text just read. */
  fingerprint: string;
}

/** Read the config file. Missing → empty config. Anything wrong → E_CONFIG_INVALID; the file is never modified. */
export function loadConfigFile(path: string, origin: ConfigOrigin = configFileOrigin(path)): LoadedConfig {
  let text: string;
  try {
    const st = statSync(path);
    if (!st.isFile()) throw invalidIn(origin, path, 'it is not a regular file.');
    if (st.size > MAX_CONFIG_BYTES) {
      throw invalidIn(origin, path, `it is ${st.size} bytes; a config file is at most ${MAX_CONFIG_BYTES}.`);
    }
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if (isRetroflectError(err)) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { config: emptyInterceptConfig(), path, existed: false, fingerprint: ABSENT };
    throw new RetroflectError(ErrorCode.CONFIG_INVALID, `Cannot read ${origin.label}: ${(err as Error).message}`, {
      hint: code === 'EACCES' || code === 'EPERM'
        ? 'Run as root / Administrator.'
        : 'Check the path and its permissions.',
      details: { path, errno: code },
      cause: err,
    });
  }
  return { config: parseConfigText(text, path, origin), path, existed: true, fingerprint: fingerprintOf(text) };
}

/** The fingerprint of a file that does not exist. */
const ABSENT = 'absent';

function fingerprintOf(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/**
 * The file's fingerprint now (its content's hash, or "absent"), to tell whether someone else wrote it since we last
 * read or wrote it (config-store.ts). A file that cannot be read counts as changed (its load then says why).
 */
export function configFileFingerprint(path: string): string {
  try {
    return fingerprintOf(readFileSync(path, 'utf8'));
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT' ? ABSENT : `unreadable: ${(err as Error).message}`;
  }
}

/**
 * Write the config atomically (atomic-save.ts). On failure the old file is untouched and E_CONFIG_WRITE_FAILED
 * thrown. A symlinked path is written through to its target.
 */
export function saveConfigFile(path: string, cfg: InterceptConfig, faults: SaveFaults = {}): string {
  const text = serializeConfig(cfg);
  try {
    writeFileAtomically(path, text, faults);
    return fingerprintOf(text);
  } catch (err) {
    const problem = `Could not write config file ${path}: ${(err as Error).message}`;
    throw new RetroflectError(ErrorCode.CONFIG_WRITE_FAILED, problem, {
      hint: 'Check free disk space and the permissions of the directory; the change was not applied.',
      details: { path, errno: (err as NodeJS.ErrnoException).code ?? null },
      cause: err,
    });
  }
}
