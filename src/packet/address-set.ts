/**
 * The set of reflect addresses, for the hot path: a packet's destination (or source) address → counter slot, with
 * no allocation.
 * IPv4 addresses are kept as one 32-bit word, IPv6 as four; lookup is a linear scan over typed arrays, which for
 * the at most MAX_REFLECT_ADDRESSES (64) entries is faster than hashing (usually there are one or two).
 */
import ipaddr from 'ipaddr.js';
import { MAX_REFLECT_ADDRESSES } from '../config/intercept-config.ts';
import { tooManyReflectAddresses } from '../error-messages.ts';
import { ErrorCode, RetroflectError } from '../errors.ts';
import type { ParsedPacket } from './parse.ts';

export interface ReflectAddressEntry {
  /** Canonical text form (see config/intercept-config.ts). */
  address: string;
  /** Counter slot, 0 .. MAX_REFLECT_ADDRESSES - 1. */
  slot: number;
}

/** Read 4 bytes big-endian as a signed 32-bit word, as DataView.getInt32 does (signed: only compared for equality). */
function word(buf: Uint8Array, at: number): number {
  return (buf[at] << 24) | (buf[at + 1] << 16) | (buf[at + 2] << 8) | buf[at + 3];
}

export class ReflectAddressSet {
  private readonly v4Words = new Int32Array(MAX_REFLECT_ADDRESSES);
  private readonly v4Slots = new Int32Array(MAX_REFLECT_ADDRESSES);
  private v4Count = 0;
  /** Four words per address. */
  private readonly v6Words = new Int32Array(MAX_REFLECT_ADDRESSES * 4);
  private readonly v6Slots = new Int32Array(MAX_REFLECT_ADDRESSES);
  private v6Count = 0;

  get size(): number {
    return this.v4Count + this.v6Count;
  }

  /**
   * Replace the contents. Validates everything first (throws RetroflectError, changing nothing) because a config
   * reaching the worker should already be valid, and a silent partial set would reflect the wrong traffic.
   */
  replace(entries: readonly ReflectAddressEntry[]): void {
    if (entries.length > MAX_REFLECT_ADDRESSES) {
      throw tooManyReflectAddresses(MAX_REFLECT_ADDRESSES);
    }
    const parsed = entries.map((e) => {
      if (!Number.isInteger(e.slot) || e.slot < 0 || e.slot >= MAX_REFLECT_ADDRESSES) {
        throw new RetroflectError(ErrorCode.INTERNAL, `Reflect address slot ${e.slot} is out of range.`, {
          details: { address: e.address, slot: e.slot },
        });
      }
      if (!ipaddr.isValid(e.address)) {
        throw new RetroflectError(ErrorCode.INVALID_ADDRESS, `'${e.address}' is not an IP address.`, {
          hint: 'Give an IPv4 address in dotted form (192.0.2.1) or an IPv6 address (2001:db8::1).',
          details: { address: e.address },
        });
      }
      let addr = ipaddr.parse(e.address);
      if (addr.kind() === 'ipv6' && (addr as ipaddr.IPv6).isIPv4MappedAddress()) addr = (addr as ipaddr.IPv6).toIPv4Address();
      return { bytes: Uint8Array.from(addr.toByteArray()), slot: e.slot };
    });
    this.v4Count = 0;
    this.v6Count = 0;
    for (const { bytes, slot } of parsed) {
      if (bytes.length === 4) {
        this.v4Words[this.v4Count] = word(bytes, 0);
        this.v4Slots[this.v4Count++] = slot;
      } else {
        const base = this.v6Count * 4;
        for (let w = 0; w < 4; w++) this.v6Words[base + w] = word(bytes, w * 4);
        this.v6Slots[this.v6Count++] = slot;
      }
    }
  }

  /** Counter slot of the packet's destination address, or -1 if it is not a reflect address. */
  lookupDestination(_buf: Uint8Array, p: ParsedPacket): number {
    return this.lookupAt(p, p.dstOffset);
  }

  /**
   * Counter slot of the packet's source address, or -1 if it is not a reflect address. An IPv6 source ::ffff:<a> counts
   * as <a>: a dual-stack socket reads it as <a>, so a packet from it is as forged as one from <a> itself.
   */
  lookupSource(_buf: Uint8Array, p: ParsedPacket): number {
    const at = p.srcOffset;
    if (p.family === 6 && this.v4Count > 0) {
      const v = p.view;
      const mapped = v.getInt32(at) === 0 && v.getInt32(at + 4) === 0 && v.getInt32(at + 8) === 0xffff;
      if (mapped) return this.lookupV4(v.getInt32(at + 12));
    }
    return this.lookupAt(p, at);
  }

  private lookupV4(w: number): number {
    for (let i = 0; i < this.v4Count; i++) if (this.v4Words[i] === w) return this.v4Slots[i];
    return -1;
  }

  /** Counter slot of the address of the packet's family at `at`, or -1. */
  private lookupAt(p: ParsedPacket, at: number): number {
    const v = p.view;
    if (p.family === 4) {
      return this.v4Count === 0 ? -1 : this.lookupV4(v.getInt32(at));
    }
    const n = this.v6Count;
    if (n === 0) return -1;
    // Compare the last word first: it differs most between addresses of one prefix.
    const w3 = v.getInt32(at + 12);
    const words = this.v6Words;
    for (let i = 0; i < n; i++) {
      const b = i * 4;
      if (words[b + 3] === w3 && words[b] === v.getInt32(at) && words[b + 1] === v.getInt32(at + 4) && words[b + 2] === v.getInt32(at + 8)) {
        return this.v6Slots[i];
      }
    }
    return -1;
  }
}
