/**
 * Port maps on reflect addresses: `80=8080` (TCP and UDP), `443=8443/tcp`, `53=5353/udp`. A client reaching
 * `R:port` is delivered to this host's `target` port; the rule that decides packets lives in docs/port-mapping.md
 * and engine/port-mapper.ts. This module is syntax and consistency only (no host facts), so the CLI, the config
 * file, the control plane and the engine all judge a map the same way.
 *
 * A map is stored per protocol: `80=8080` is two entries, one TCP and one UDP.
 */
import { invalidParams } from '../error-messages.ts';
import { ErrorCode, RetroflectError } from '../errors.ts';

export type PortMapProtocol = 'tcp' | 'udp';

/** The part of an InterceptConfig (intercept-config.ts, which imports this module) the map rules look at. */
interface ConfigWithMaps {
  reflectAddresses: readonly string[];
  portMaps?: PortMap[];
}

export interface PortMap {
  /** Canonical reflect address the map belongs to. */
  address: string;
  protocol: PortMapProtocol;
  /** The port clients connect to on the reflect address. */
  port: number;
  /** The local port the traffic is delivered to. */
  target: number;
}

/** A map without its address, as users write it and as `address list` shows it. */
export type PortMapSpec = Omit<PortMap, 'address'>;

/** At most this many map entries (one per protocol) per reflect address, and in a whole config. */
export const MAX_PORT_MAPS_PER_ADDRESS = 64;
export const MAX_PORT_MAPS = 1024;
/** Mapped flows (conversations through a map) the engine keeps at once: engine/port-mapper.ts's table, and on the
 *  ebpf backend room for each of them in the kernel's cache too (two entries per flow, one per direction). */
export const MAX_MAPPED_FLOWS = 16384;

const SPEC_HINT = 'Write PORT=TARGET with ports from 1 to 65535, optionally /tcp or /udp (80=8080, 443=8443/tcp, 53=5353/udp).';

function invalidMap(spec: unknown, problem: string, rule: string): RetroflectError {
  return new RetroflectError(ErrorCode.INVALID_PORT, `'${typeof spec === 'string' ? spec : JSON.stringify(spec)}' is not a port map: ${problem}`, {
    hint: SPEC_HINT,
    details: { map: spec, rule },
  });
}

function checkPort(spec: unknown, n: number, what: string): number {
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw invalidMap(spec, `${what} ${n} is out of range (1-65535).`, 'range');
  return n;
}

/**
 * Parse one map as users write it: "80=8080", "443=8443/tcp", or an object `{port, target, protocol?}` (the JSON
 * form of the config file and the control protocol). Returns one spec per protocol. Throws E_INVALID_PORT.
 */
export function parsePortMapSpec(spec: unknown): PortMapSpec[] {
  let port: number;
  let target: number;
  let proto: string | undefined;
  if (typeof spec === 'string') {
    const m = /^\s*(\d{1,6})\s*(?:=|->|:)\s*(\d{1,6})\s*(?:\/\s*(tcp|udp|both))?\s*$/i.exec(spec);
    if (!m) throw invalidMap(spec, 'expected PORT=TARGET[/tcp|/udp].', 'syntax');
    port = Number(m[1]);
    target = Number(m[2]);
    proto = m[3]?.toLowerCase();
  } else if (typeof spec === 'object' && spec !== null && !Array.isArray(spec)) {
    const o = spec as Record<string, unknown>;
    const extra = Object.keys(o).filter((k) => k !== 'port' && k !== 'target' && k !== 'protocol');
    if (extra.length) throw invalidMap(spec, `unknown field '${extra[0]}' (known: port, target, protocol).`, 'syntax');
    if (typeof o.port !== 'number' || typeof o.target !== 'number') throw invalidMap(spec, "'port' and 'target' must be numbers.", 'syntax');
    if (o.protocol !== undefined && o.protocol !== 'tcp' && o.protocol !== 'udp' && o.protocol !== 'both') {
      throw invalidMap(spec, "'protocol' must be tcp, udp or both.", 'syntax');
    }
    port = o.port;
    target = o.target;
    proto = o.protocol as string | undefined;
  } else {
    throw invalidMap(spec, 'expected PORT=TARGET[/tcp|/udp].', 'syntax');
  }
  checkPort(spec, port, 'port');
  checkPort(spec, target, 'target');
  if (port === target) throw invalidMap(spec, `it maps port ${port} to itself.`, 'self');
  const protocols: PortMapProtocol[] = proto === 'tcp' || proto === 'udp' ? [proto] : ['tcp', 'udp'];
  return protocols.map((protocol) => ({ protocol, port, target }));
}

/** Which map(s) to remove from an address, by mapped port; no protocol = both. */
export interface PortMapRemoval {
  port: number;
  protocol?: PortMapProtocol;
}

/**
 * Parse one removal as `address.remove`'s `maps` carries it: 80, "80", "80/tcp", "80/both" or `{port, protocol?}`.
 * `field` names the entry in the error (E_INVALID_PARAMS: the request is malformed, not a bad map).
 */
export function parsePortMapRemoval(entry: unknown, field: string): PortMapRemoval {
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
}

/** Does `removal` name map `m` (its port, and its protocol unless the removal names none)? */
export function removalMatches(removal: PortMapRemoval, m: Pick<PortMap, 'port' | 'protocol'>): boolean {
  return removal.port === m.port && (removal.protocol === undefined || removal.protocol === m.protocol);
}

export function portMapKey(m: Pick<PortMap, 'address' | 'protocol' | 'port'>): string {
  return `${m.address} ${m.port}/${m.protocol}`;
}

/** "80=8080/tcp" */
export function formatPortMap(m: PortMapSpec): string {
  return `${m.port}=${m.target}/${m.protocol}`;
}

/** The config's maps (absent in configs made before port mapping: none). */
export function portMapsOf(cfg: Pick<ConfigWithMaps, 'portMaps'>): PortMap[] {
  return cfg.portMaps ?? [];
}

/** Maps of one address, in config order. */
export function portMapsFor(cfg: Pick<ConfigWithMaps, 'portMaps'>, address: string): PortMapSpec[] {
  return portMapsOf(cfg)
    .filter((m) => m.address === address)
    .map((m) => ({ protocol: m.protocol, port: m.port, target: m.target }));
}

function conflict(m: PortMap, problem: string, rule: string, other?: PortMap): RetroflectError {
  return new RetroflectError(ErrorCode.PORT_MAP_CONFLICT, `Port map ${formatPortMap(m)} on ${m.address} ${problem}; nothing was changed.`, {
    hint: 'Remove the existing map first (`retroflect address remove ADDRESS --map PORT`), or choose other ports.',
    details: { address: m.address, map: formatPortMap(m), rule, ...(other ? { existing: formatPortMap(other) } : {}) },
  });
}

/**
 * Check a config's maps as a whole: every map belongs to a configured address; per address and protocol a port is
 * mapped at most once, no two maps share a target, and no port is both a mapped port and a target (a chain
 * 80=8080 + 8080=9090 would make R:8080 mean two things). Limits. Throws the first problem found; pure.
 */
export function checkPortMaps(cfg: ConfigWithMaps): void {
  const maps = portMapsOf(cfg);
  if (maps.length > MAX_PORT_MAPS) {
    throw new RetroflectError(ErrorCode.LIMIT_REACHED, `At most ${MAX_PORT_MAPS} port maps are supported.`, { hint: 'Remove maps you no longer use.' });
  }
  const perAddress = new Map<string, number>();
  const byPort = new Map<string, PortMap>();
  const byTarget = new Map<string, PortMap>();
  for (const m of maps) {
    if (!cfg.reflectAddresses.includes(m.address)) {
      throw new RetroflectError(ErrorCode.ADDRESS_NOT_FOUND, `Port map ${formatPortMap(m)} names ${m.address}, which is not a reflect address.`, {
        hint: 'Add the address with its maps: `retroflect address add ADDRESS --map PORT=TARGET`.',
        details: { address: m.address, map: formatPortMap(m) },
      });
    }
    checkPort(formatPortMap(m), m.port, 'port');
    checkPort(formatPortMap(m), m.target, 'target');
    if (m.port === m.target) throw invalidMap(formatPortMap(m), `it maps port ${m.port} to itself.`, 'self');
    const n = (perAddress.get(m.address) ?? 0) + 1;
    if (n > MAX_PORT_MAPS_PER_ADDRESS) {
      throw new RetroflectError(ErrorCode.LIMIT_REACHED, `At most ${MAX_PORT_MAPS_PER_ADDRESS} port maps per reflect address are supported.`, {
        hint: 'Remove maps you no longer use.',
        details: { address: m.address },
      });
    }
    perAddress.set(m.address, n);
    const at = (port: number): string => `${m.address} ${port}/${m.protocol}`;
    const samePort = byPort.get(at(m.port));
    if (samePort) {
      throw samePort.target === m.target
        ? conflict(m, 'is given twice', 'duplicate', samePort)
        : conflict(m, `maps port ${m.port}/${m.protocol}, which is already mapped to ${samePort.target}`, 'port-mapped', samePort);
    }
    const sameTarget = byTarget.get(at(m.target));
    if (sameTarget) throw conflict(m, `targets port ${m.target}, the target of ${formatPortMap(sameTarget)} too`, 'shared-target', sameTarget);
    const chainIn = byTarget.get(at(m.port));
    if (chainIn) throw conflict(m, `maps port ${m.port}, which is the target of ${formatPortMap(chainIn)} (maps overlap)`, 'overlap', chainIn);
    const chainOut = byPort.get(at(m.target));
    if (chainOut) throw conflict(m, `targets port ${m.target}, which is itself mapped by ${formatPortMap(chainOut)} (maps overlap)`, 'overlap', chainOut);
    byPort.set(at(m.port), m);
    byTarget.set(at(m.target), m);
  }
}

/**
 * Merge `add` into `maps`: an identical map already there is "existing" (idempotent), anything else is added; the
 * result is checked with checkPortMaps by the caller. Pure, and linear: one key per map, looked up in a Set (a search
 * of the list per map made a config with 20,000 maps take 80 s to refuse).
 */
export function mergePortMaps(maps: readonly PortMap[], add: readonly PortMap[]): { maps: PortMap[]; added: PortMap[]; existing: PortMap[] } {
  const out = maps.map((m) => ({ ...m }));
  const identity = (m: PortMap): string => `${portMapKey(m)}=${m.target}`;
  const present = new Set(out.map(identity));
  const reported = new Set<string>();
  const added: PortMap[] = [];
  const existing: PortMap[] = [];
  for (const m of add) {
    const id = identity(m);
    if (present.has(id)) {
      if (!reported.has(portMapKey(m))) {
        reported.add(portMapKey(m));
        existing.push({ ...m });
      }
      continue;
    }
    present.add(id);
    out.push({ ...m });
    added.push({ ...m });
  }
  return { maps: out, added, existing };
}
