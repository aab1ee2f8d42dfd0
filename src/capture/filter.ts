/**
 * Capture filters: what a client asks for (`capture.start` params, CLI options, PowerShell parameters), checked once
 * on the main thread into a `CaptureSpec` the worker can match without allocating.
 *
 * Criteria of different kinds must all match; values of one kind are alternatives. An address or port matches
 * either end of the packet (before or after reflection: reflection only swaps them). A malformed packet has no
 * trustworthy addresses or ports, so it matches only when 'malformed' is listed in `verdicts` or when the filter
 * names no address, port or protocol.
 */
import { canonicalAddress } from '../config/intercept-config.ts';
import { ErrorCode, RetroflectError } from '../errors.ts';
import { invalidParams } from '../error-messages.ts';
import { CAPTURE_VERDICT_NAMES, CaptureVerdict, type CaptureVerdictName } from '../packet/verdicts.ts';
import type { CaptureInterest } from '../packet/capture-interest.ts';
import ipaddr from 'ipaddr.js';

export const CAPTURE_PROTOCOLS = ['tcp', 'udp', 'icmp', 'other'] as const;
/** A protocol mask with every protocol's bit. */
const ALL_PROTOCOLS = (1 << CAPTURE_PROTOCOLS.length) - 1;
export type CaptureProtocol = (typeof CAPTURE_PROTOCOLS)[number];

/** Limits (docs/protocol.md). */
export const MAX_FILTER_ADDRESSES = 16;
export const MAX_FILTER_PORTS = 16;
export const DEFAULT_SNAPLEN = 256;
export const MIN_SNAPLEN = 64;
/** Largest packet a backend hands over (a TUN with TSO gives up to 64 KiB GSO packets); "full" means this. */
export const MAX_SNAPLEN = 65535;

export interface CaptureFilter {
  addresses?: string[];
  ports?: number[];
  verdicts?: CaptureVerdictName[];
  protocols?: CaptureProtocol[];
}

/** What the worker gets: structured-clone-able, pre-digested. */
export interface CaptureSpec {
  id: number;
  buffer: SharedArrayBuffer;
  snaplen: number;
  /** Raw address bytes (4 or 16 each). */
  addresses: Uint8Array[];
  ports: number[];
  /** Bit (1 << verdict) per wanted CaptureVerdict; 0 = every verdict. */
  verdictMask: number;
  /** Bit (1 << index in CAPTURE_PROTOCOLS); 0 = every protocol. */
  protocolMask: number;
}


function list(v: unknown, field: string, max: number): unknown[] | undefined {
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || v.length === 0) throw invalidParams(`'${field}' must be a non-empty array.`, field);
  if (v.length > max) throw invalidParams(`'${field}' has ${v.length} entries; at most ${max}.`, field);
  return v;
}

/** Check a filter from the wire; throws E_INVALID_PARAMS / E_INVALID_ADDRESS / E_INVALID_PORT naming the field. */
export function parseCaptureFilter(raw: Record<string, unknown>): Required<CaptureFilter> {
  const addresses = (list(raw.addresses, 'addresses', MAX_FILTER_ADDRESSES) ?? []).map((a, i) => {
    if (typeof a !== 'string') throw invalidParams(`'addresses[${i}]' must be a string.`, `addresses[${i}]`);
    return canonicalAddress(a);
  });
  const ports = (list(raw.ports, 'ports', MAX_FILTER_PORTS) ?? []).map((p, i) => {
    if (typeof p !== 'number' || !Number.isInteger(p) || p < 1 || p > 65535) {
      throw new RetroflectError(ErrorCode.INVALID_PORT, `'ports[${i}]' must be a port number from 1 to 65535.`, {
        hint: 'Give ports as numbers, e.g. [8080, 443].',
        details: { field: `ports[${i}]`, port: p },
      });
    }
    return p;
  });
  const verdicts = (list(raw.verdicts, 'verdicts', CAPTURE_VERDICT_NAMES.length) ?? []).map((v, i) => {
    if (typeof v !== 'string' || !(CAPTURE_VERDICT_NAMES as readonly string[]).includes(v)) {
      throw invalidParams(`'verdicts[${i}]' must be one of ${CAPTURE_VERDICT_NAMES.join(', ')}.`, `verdicts[${i}]`);
    }
    return v as CaptureVerdictName;
  });
  const protocols = (list(raw.protocols, 'protocols', CAPTURE_PROTOCOLS.length) ?? []).map((v, i) => {
    if (typeof v !== 'string' || !(CAPTURE_PROTOCOLS as readonly string[]).includes(v)) {
      throw invalidParams(`'protocols[${i}]' must be one of ${CAPTURE_PROTOCOLS.join(', ')}.`, `protocols[${i}]`);
    }
    return v as CaptureProtocol;
  });
  return { addresses: [...new Set(addresses)], ports: [...new Set(ports)], verdicts: [...new Set(verdicts)], protocols: [...new Set(protocols)] };
}

export function compileCaptureSpec(id: number, buffer: SharedArrayBuffer, snaplen: number, f: Required<CaptureFilter>): CaptureSpec {
  let verdictMask = 0;
  for (const v of f.verdicts) verdictMask |= 1 << (CAPTURE_VERDICT_NAMES.indexOf(v) + 1);
  let protocolMask = 0;
  for (const p of f.protocols) protocolMask |= 1 << CAPTURE_PROTOCOLS.indexOf(p);
  return {
    id,
    buffer,
    snaplen,
    addresses: f.addresses.map((a) => Uint8Array.from(ipaddr.parse(a).toByteArray())),
    ports: [...f.ports],
    verdictMask,
    protocolMask,
  };
}

/**
 * The union of the captures' filters (null when there are none), for a backend that decides packets itself and must
 * hand the taps what they might want (packet-source.ts CaptureInterest). A superset: the taps still match exactly.
 */
export function captureInterest(specs: readonly CaptureSpec[]): CaptureInterest | null {
  if (specs.length === 0) return null;
  const reflectedBit = 1 << CaptureVerdict.Reflected;
  let reflected = false;
  let protocols = 0;
  let addresses: Uint8Array[] | null = [];
  let ports: number[] | null = [];
  let snaplen = 0;
  for (const s of specs) {
    if (s.verdictMask !== 0 && (s.verdictMask & reflectedBit) === 0) continue; // wants no reflected packet
    reflected = true;
    protocols |= s.protocolMask === 0 ? ALL_PROTOCOLS : s.protocolMask;
    addresses = s.addresses.length === 0 || addresses === null ? null : [...addresses, ...s.addresses];
    ports = s.ports.length === 0 || ports === null ? null : [...ports, ...s.ports];
    snaplen = Math.max(snaplen, s.snaplen);
  }
  return { reflected, protocols, addresses, ports, snaplen };
}
