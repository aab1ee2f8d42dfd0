/**
 * Allowed ports of reflect addresses for the hot path: per restricted address slot, two bitsets per protocol — the
 * ports a client may open a flow to (`open`: the address's `--ports` and its port maps' ports), and the ports the
 * local server may answer from (`reply`: those plus the maps' targets, the port a mapped server really uses). An
 * address without a port list has no bitsets and is never asked. 16 KiB per restricted slot and protocol pair.
 *
 * The decision (`allows`) is one or two indexed loads: a TCP SYN without ACK opens a connection and must go to an
 * `open` port; every other TCP segment and every UDP datagram is allowed when it goes to an `open` port or comes
 * from a `reply` port (the server's half of a flow a client opened). A segment that fits neither belongs to no
 * allowed connection (none can exist without an allowed SYN): it is refused too.
 *
 * A slot's bytes (`slotBits`) are also what the ebpf backend writes into its tc program's `allowed_ports` map
 * (native/reflect_tc.bpf.c), read there as little-endian u64 words: port p is bit p % 8 of byte p / 8, which is bit
 * p % 64 of word p / 64. So the kernel decides with the very sets the data plane decides with. `allowedPortEntries`
 * makes a config's port lists into the entries both are filled from.
 */
import { allowListsOf, type AllowedPort } from '../config/allow-lists.ts';
import { MAX_REFLECT_ADDRESSES, type InterceptConfig } from '../config/intercept-config.ts';
import { portMapsOf } from '../config/port-maps.ts';
import { ErrorCode, RetroflectError } from '../errors.ts';
import { IpProto, TcpFlag } from './parse.ts';

export interface AllowedPortEntry {
  /** Reflect-address counter slot, 0 .. MAX_REFLECT_ADDRESSES - 1. */
  slot: number;
  open: readonly { port: number; protocol: 'tcp' | 'udp' }[];
  reply: readonly { port: number; protocol: 'tcp' | 'udp' }[];
}

/** Bytes of one 65536-port bitset. */
const BITSET_BYTES = 65536 / 8;
/** Layout of a slot's bitsets: tcp open, tcp reply, udp open, udp reply. */
const TCP_OPEN = 0;
const TCP_REPLY = BITSET_BYTES;
const UDP_OPEN = 2 * BITSET_BYTES;
const UDP_REPLY = 3 * BITSET_BYTES;
/** Bytes of one restricted slot's four bitsets. */
export const SLOT_BYTES = 4 * BITSET_BYTES;

/**
 * One entry per address with a port list: clients may open its listed ports and its port maps' ports (a map is an
 * allowed port of its address); the server may answer from those and from the maps' targets.
 */
export function allowedPortEntries(cfg: InterceptConfig, slotOf: (address: string) => number): AllowedPortEntry[] {
  const out: AllowedPortEntry[] = [];
  for (const a of allowListsOf(cfg)) {
    if (!a.ports || !cfg.reflectAddresses.includes(a.address)) continue;
    const maps = portMapsOf(cfg).filter((m) => m.address === a.address);
    const mapped = maps.map((m) => ({ port: m.port, protocol: m.protocol }));
    const open: AllowedPort[] = [...a.ports.map((p) => ({ ...p })), ...mapped];
    const reply: AllowedPort[] = maps.map((m) => ({ port: m.target, protocol: m.protocol }));
    out.push({ slot: slotOf(a.address), open, reply });
  }
  return out;
}

function has(bits: Uint8Array, base: number, port: number): boolean {
  return (bits[base + (port >> 3)] & (1 << (port & 7))) !== 0;
}

export class AllowedPortSet {
  /** 1 = the slot's address has a port list (ask `allows`), 0 = every port is allowed. */
  readonly restricted = new Uint8Array(MAX_REFLECT_ADDRESSES);
  private readonly bits: (Uint8Array | null)[] = new Array(MAX_REFLECT_ADDRESSES).fill(null);

  /** Replace the contents. Validates first (throws RetroflectError, changing nothing). Allocates only here. */
  replace(entries: readonly AllowedPortEntry[]): void {
    for (const e of entries) {
      if (!Number.isInteger(e.slot) || e.slot < 0 || e.slot >= MAX_REFLECT_ADDRESSES) {
        throw new RetroflectError(ErrorCode.INTERNAL, `Allowed-port slot ${e.slot} is out of range.`, { details: { slot: e.slot } });
      }
    }
    const next: (Uint8Array | null)[] = new Array(MAX_REFLECT_ADDRESSES).fill(null);
    for (const e of entries) {
      const bits = new Uint8Array(SLOT_BYTES);
      const set = (base: number, port: number): void => {
        if (Number.isInteger(port) && port >= 1 && port <= 65535) bits[base + (port >> 3)] |= 1 << (port & 7);
      };
      for (const p of e.open) set(p.protocol === 'tcp' ? TCP_OPEN : UDP_OPEN, p.port);
      for (const p of [...e.open, ...e.reply]) set(p.protocol === 'tcp' ? TCP_REPLY : UDP_REPLY, p.port);
      next[e.slot] = bits;
    }
    for (let s = 0; s < MAX_REFLECT_ADDRESSES; s++) {
      this.bits[s] = next[s];
      this.restricted[s] = next[s] === null ? 0 : 1;
    }
  }

  /** A restricted slot's four bitsets (SLOT_BYTES, laid out as in the file comment); null for a slot without a list.
   *  Read only: the set replaces it whole on the next `replace`. */
  slotBits(slot: number): Uint8Array | null {
    return this.bits[slot] ?? null;
  }

  /** Whether a TCP/UDP packet of a restricted slot may be reflected (see the file comment). Other protocols: false. */
  allows(slot: number, protocol: number, srcPort: number, dstPort: number, tcpFlags: number): boolean {
    const bits = this.bits[slot];
    if (bits === null) return true;
    if (protocol === IpProto.Tcp) {
      if ((tcpFlags & (TcpFlag.Syn | TcpFlag.Ack)) === TcpFlag.Syn) return has(bits, TCP_OPEN, dstPort);
      return has(bits, TCP_OPEN, dstPort) || has(bits, TCP_REPLY, srcPort);
    }
    if (protocol === IpProto.Udp) return has(bits, UDP_OPEN, dstPort) || has(bits, UDP_REPLY, srcPort);
    return false;
  }
}
