/**
 * The intercept config: what the engine reflects and what it shields. Its own small module (as in mitmproxy_rs's
 * `intercept_conf`), shared by the CLI, the config file, the control plane and every packet backend.
 *
 * Only syntax lives here (is it an IP address, is it a port). Whether an address is *usable* on this host is
 * decided by `platform/validate-address.ts`, which needs the host's interfaces and routes.
 */
import ipaddr from 'ipaddr.js';
import { invalidShieldPort, tooManyReflectAddresses, tooManyShieldPorts } from '../error-messages.ts';
import { ErrorCode, RetroflectError } from '../errors.ts';
import { checkPortMaps, type PortMap } from './port-maps.ts';
import { checkAllowLists, cloneAllowLists, type AddressAllowLists } from './allow-lists.ts';

export type ShieldProtocol = 'tcp' | 'udp';
export const SHIELD_PROTOCOLS: readonly ShieldProtocol[] = ['tcp', 'udp'];

export interface ShieldPort {
  port: number;
  protocol: ShieldProtocol;
}

export interface InterceptConfig {
  /** Canonical text form (ipaddr.js `toString()`: IPv4 dotted, IPv6 RFC 5952), unique, in insertion order. */
  reflectAddresses: string[];
  /** Unique by (protocol, port), in insertion order. */
  shieldPorts: ShieldPort[];
  /** Port maps of reflect addresses (config/port-maps.ts), one entry per protocol. Absent = none (older configs). */
  portMaps?: PortMap[];
  /** Allow lists of reflect addresses (config/allow-lists.ts), at most one entry per address. Absent = none. */
  allow?: AddressAllowLists[];
  /** Managed policy only (config/policy.ts): true refuses every change through the pipe. Never in a running config. */
  lockChanges?: true;
}

/** Limits of the data plane's counter slots (engine/counters.ts sizes its shared memory from these). */
export const MAX_REFLECT_ADDRESSES = 64;
export const MAX_SHIELD_PORTS = 1024;

export function emptyInterceptConfig(): InterceptConfig {
  return { reflectAddresses: [], shieldPorts: [] };
}

/**
 * Parse one address as typed by a user ("192.0.2.1", "2001:DB8::1", "[2001:db8::1]") into canonical form.
 * IPv4-mapped IPv6 addresses are turned into IPv4, because that is what goes on the wire.
 */
export function canonicalAddress(text: string): string {
  const trimmed = text.trim().replace(/^\[(.*)\]$/, '$1');
  // Only a real prefix (an address, a slash, a length) is called a prefix; "abc/def" is simply not an address.
  const slash = trimmed.indexOf('/');
  if (slash >= 0 && /^\d{1,3}$/.test(trimmed.slice(slash + 1)) && ipaddr.isValid(trimmed.slice(0, slash))) {
    throw new RetroflectError(ErrorCode.INVALID_ADDRESS, `'${text}' is a prefix, not an address.`, {
      hint: 'Give a single IPv4 or IPv6 address, such as 192.0.2.1 or 2001:db8::1.',
      details: { address: text, rule: 'syntax' },
    });
  }
  if (!ipaddr.isValid(trimmed) || (trimmed.includes('.') && !trimmed.includes(':') && !ipaddr.IPv4.isValidFourPartDecimal(trimmed))) {
    throw new RetroflectError(ErrorCode.INVALID_ADDRESS, `'${text}' is not an IP address.`, {
      hint: 'Give an IPv4 address in dotted form (192.0.2.1) or an IPv6 address (2001:db8::1).',
      details: { address: text, rule: 'syntax' },
    });
  }
  let addr = ipaddr.parse(trimmed);
  if (addr.kind() === 'ipv6' && (addr as ipaddr.IPv6).isIPv4MappedAddress()) addr = (addr as ipaddr.IPv6).toIPv4Address();
  if (addr.kind() === 'ipv6' && (addr as ipaddr.IPv6).zoneId) {
    throw new RetroflectError(ErrorCode.INVALID_ADDRESS, `'${text}' has a zone index; reflect addresses are global.`, {
      hint: 'Drop the %zone suffix and use a routed address.',
      details: { address: text, rule: 'syntax' },
    });
  }
  return addr.toString();
}

/**
 * Parse a shield port spec: "8080" (TCP and UDP), "8080/tcp", "53/udp". Returns one entry per protocol.
 */
export function parseShieldSpec(spec: string | number): ShieldPort[] {
  const text = String(spec).trim().toLowerCase();
  const m = /^(\d{1,5})(?:\/(tcp|udp|both))?$/.exec(text);
  const port = m ? Number(m[1]) : NaN;
  if (!m || !Number.isInteger(port) || port < 1 || port > 65535) throw invalidShieldPort(spec);
  const proto = m[2];
  return proto === 'tcp' || proto === 'udp' ? [{ port, protocol: proto }] : SHIELD_PROTOCOLS.map((protocol) => ({ port, protocol }));
}

/**
 * One shield entry as users write it: `{port, protocol}` or a spec ("8080", "8080/tcp", 8080). The config file and
 * the control protocol accept the same forms.
 */
export function parseShieldEntry(p: unknown): ShieldPort[] {
  if (typeof p === 'string' || typeof p === 'number') return parseShieldSpec(p);
  if (typeof p === 'object' && p !== null && !Array.isArray(p)) {
    const o = p as Record<string, unknown>;
    const extra = Object.keys(o).filter((k) => k !== 'port' && k !== 'protocol');
    if (extra.length === 0 && typeof o.port === 'number' && (o.protocol === 'tcp' || o.protocol === 'udp')) {
      return parseShieldSpec(`${o.port}/${o.protocol}`);
    }
  }
  throw invalidShieldPort(p);
}

export function shieldKey(p: ShieldPort): string {
  return `${p.port}/${p.protocol}`;
}

export function addressFamily(canonical: string): 4 | 6 {
  return canonical.includes(':') ? 6 : 4;
}

/**
 * The rule for adding entries, written once: an entry already in the config (the same canonical address; the same
 * port and protocol) is not added again, new ones are appended in the order given. Entries must be canonical
 * (canonicalAddress, parseShieldSpec / parseShieldEntry). Keeps a set of keys, so adding n entries is linear;
 * `add*` returns whether the entry was new. Limits are the caller's (checkLimits, or sooner).
 */
export class ConfigAdditions {
  private readonly addresses: Set<string>;
  private readonly ports: Set<string>;

  constructor(private readonly cfg: InterceptConfig) {
    this.addresses = new Set(cfg.reflectAddresses);
    this.ports = new Set(cfg.shieldPorts.map(shieldKey));
  }

  addAddress(address: string): boolean {
    if (this.addresses.has(address)) return false;
    this.addresses.add(address);
    this.cfg.reflectAddresses.push(address);
    return true;
  }

  addShieldPort(port: ShieldPort): boolean {
    const key = shieldKey(port);
    if (this.ports.has(key)) return false;
    this.ports.add(key);
    this.cfg.shieldPorts.push({ port: port.port, protocol: port.protocol });
    return true;
  }
}

/** Add canonical reflect addresses to `cfg` (ConfigAdditions' rule). Returns the ones that were new, in order. */
export function addReflectAddresses(cfg: InterceptConfig, addresses: readonly string[]): string[] {
  const additions = new ConfigAdditions(cfg);
  return addresses.filter((a) => additions.addAddress(a));
}

/** Add shield ports to `cfg` (ConfigAdditions' rule). Returns the ones that were new, in order. */
export function addShieldPorts(cfg: InterceptConfig, ports: readonly ShieldPort[]): ShieldPort[] {
  const additions = new ConfigAdditions(cfg);
  return ports.filter((p) => additions.addShieldPort(p)).map((p) => ({ port: p.port, protocol: p.protocol }));
}

/** Build a config from user input, normalising and removing duplicates. Throws on the first bad entry. */
export function buildInterceptConfig(addresses: readonly string[], shieldSpecs: readonly (string | number)[]): InterceptConfig {
  const cfg = emptyInterceptConfig();
  addReflectAddresses(cfg, addresses.map(canonicalAddress));
  addShieldPorts(cfg, shieldSpecs.flatMap(parseShieldSpec));
  checkLimits(cfg);
  return cfg;
}

export function checkLimits(cfg: InterceptConfig): void {
  if (cfg.reflectAddresses.length > MAX_REFLECT_ADDRESSES) throw tooManyReflectAddresses(MAX_REFLECT_ADDRESSES);
  if (cfg.shieldPorts.length > MAX_SHIELD_PORTS) throw tooManyShieldPorts(MAX_SHIELD_PORTS);
  checkPortMaps(cfg);
  checkAllowLists(cfg);
}

export function cloneInterceptConfig(cfg: InterceptConfig): InterceptConfig {
  return {
    reflectAddresses: [...cfg.reflectAddresses],
    shieldPorts: cfg.shieldPorts.map((p) => ({ ...p })),
    // No maps is written as no field, so configs from before port mapping compare equal to their copies.
    ...(cfg.portMaps?.length ? { portMaps: cfg.portMaps.map((m) => ({ ...m })) } : {}),
    ...(cfg.allow?.length ? { allow: cfg.allow.map((a) => cloneAllowLists(a)) } : {}),
  };
}
