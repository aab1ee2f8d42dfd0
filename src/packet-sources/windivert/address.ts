/**
 * `WINDIVERT_ADDRESS` codec. The struct is 80 bytes and most of it is C bitfields, which koffi cannot declare, so
 * fields are read and written straight from a Buffer at fixed byte and bit positions. The positions follow the
 * WinDivert 2.x documentation and are proven against a C compiler (gcc and mingw) by test/windivert/address.test.ts,
 * using the declaration in native/windivert_abi.h.
 *
 * Layout (little-endian, x64):
 *   0..7    Timestamp (INT64)
 *   8..11   one UINT32 of bitfields, least significant bit first:
 *             bits 0-7 Layer, 8-15 Event, 16 Sniffed, 17 Outbound, 18 Loopback, 19 Impostor, 20 IPv6,
 *             21 IPChecksum, 22 TCPChecksum, 23 UDPChecksum, 24-31 reserved
 *   12..15  reserved
 *   16..79  union; at the network layer: IfIdx (UINT32 at 16), SubIfIdx (UINT32 at 20)
 *
 * The flag helpers work on one address inside an array of them (`base` = byte offset of that address), so a
 * whole batch's addresses live in one Buffer handed to WinDivertRecvEx/SendEx and nothing is allocated per packet.
 */

/** sizeof(WINDIVERT_ADDRESS). */
export const WINDIVERT_ADDRESS_SIZE = 80;

/** Byte offsets of the fields inside one address. */
export const AddressOffset = {
  Timestamp: 0,
  /** The UINT32 holding Layer, Event and the one-bit flags. */
  Bits: 8,
  IfIdx: 16,
  SubIfIdx: 20,
} as const;

/** Masks of the one-bit flags inside the UINT32 at `AddressOffset.Bits`. */
export const AddressFlag = {
  Sniffed: 1 << 16,
  Outbound: 1 << 17,
  Loopback: 1 << 18,
  Impostor: 1 << 19,
  IPv6: 1 << 20,
  /** The IPv4 header checksum is valid (0: not computed, e.g. offloaded to the NIC). */
  IPChecksum: 1 << 21,
  /** The TCP checksum is valid. */
  TCPChecksum: 1 << 22,
  /** The UDP checksum is valid. */
  UDPChecksum: 1 << 23,
} as const;
export type AddressFlagName = keyof typeof AddressFlag;

/** Bit positions and widths of the two 8-bit fields in the same UINT32. */
const LAYER_SHIFT = 0;
const EVENT_SHIFT = 8;

/** Read the bitfield word of the address at `base`. */
export function addressBits(buf: Buffer, base: number): number {
  return buf.readUInt32LE(base + AddressOffset.Bits);
}

export function getAddressFlag(buf: Buffer, base: number, flag: AddressFlagName): boolean {
  return (addressBits(buf, base) & AddressFlag[flag]) !== 0;
}

export function setAddressFlag(buf: Buffer, base: number, flag: AddressFlagName, on: boolean): void {
  const bits = addressBits(buf, base);
  const next = on ? bits | AddressFlag[flag] : bits & ~AddressFlag[flag];
  buf.writeUInt32LE(next >>> 0, base + AddressOffset.Bits);
}

/** A decoded address, for tests, logs and tooling (the hot path uses the bit helpers above). */
export interface WinDivertAddress {
  timestamp: bigint;
  layer: number;
  event: number;
  sniffed: boolean;
  outbound: boolean;
  loopback: boolean;
  impostor: boolean;
  ipv6: boolean;
  ipChecksum: boolean;
  tcpChecksum: boolean;
  udpChecksum: boolean;
  ifIdx: number;
  subIfIdx: number;
}

export function emptyAddress(): WinDivertAddress {
  return {
    timestamp: 0n,
    layer: 0,
    event: 0,
    sniffed: false,
    outbound: false,
    loopback: false,
    impostor: false,
    ipv6: false,
    ipChecksum: false,
    tcpChecksum: false,
    udpChecksum: false,
    ifIdx: 0,
    subIfIdx: 0,
  };
}

export function decodeAddress(buf: Buffer, base = 0): WinDivertAddress {
  const bits = addressBits(buf, base);
  return {
    timestamp: buf.readBigInt64LE(base + AddressOffset.Timestamp),
    layer: (bits >>> LAYER_SHIFT) & 0xff,
    event: (bits >>> EVENT_SHIFT) & 0xff,
    sniffed: (bits & AddressFlag.Sniffed) !== 0,
    outbound: (bits & AddressFlag.Outbound) !== 0,
    loopback: (bits & AddressFlag.Loopback) !== 0,
    impostor: (bits & AddressFlag.Impostor) !== 0,
    ipv6: (bits & AddressFlag.IPv6) !== 0,
    ipChecksum: (bits & AddressFlag.IPChecksum) !== 0,
    tcpChecksum: (bits & AddressFlag.TCPChecksum) !== 0,
    udpChecksum: (bits & AddressFlag.UDPChecksum) !== 0,
    ifIdx: buf.readUInt32LE(base + AddressOffset.IfIdx),
    subIfIdx: buf.readUInt32LE(base + AddressOffset.SubIfIdx),
  };
}

/**
 * Write every field of `a` into the address at `base`. Reserved bits of the bitfield word and the rest of the
 * union are kept as they are (WinDivert wants what it handed out back unchanged).
 */
export function encodeAddress(a: Partial<WinDivertAddress>, buf: Buffer, base = 0): void {
  const full = { ...emptyAddress(), ...a };
  let bits = addressBits(buf, base) & 0xff000000;
  bits |= (full.layer & 0xff) << LAYER_SHIFT;
  bits |= (full.event & 0xff) << EVENT_SHIFT;
  if (full.sniffed) bits |= AddressFlag.Sniffed;
  if (full.outbound) bits |= AddressFlag.Outbound;
  if (full.loopback) bits |= AddressFlag.Loopback;
  if (full.impostor) bits |= AddressFlag.Impostor;
  if (full.ipv6) bits |= AddressFlag.IPv6;
  if (full.ipChecksum) bits |= AddressFlag.IPChecksum;
  if (full.tcpChecksum) bits |= AddressFlag.TCPChecksum;
  if (full.udpChecksum) bits |= AddressFlag.UDPChecksum;
  buf.writeBigInt64LE(BigInt.asIntN(64, full.timestamp), base + AddressOffset.Timestamp);
  buf.writeUInt32LE(bits >>> 0, base + AddressOffset.Bits);
  buf.writeUInt32LE(full.ifIdx >>> 0, base + AddressOffset.IfIdx);
  buf.writeUInt32LE(full.subIfIdx >>> 0, base + AddressOffset.SubIfIdx);
}

/** A fresh 80-byte address holding `a`. */
export function addressBuffer(a: Partial<WinDivertAddress>): Buffer {
  const buf = Buffer.alloc(WINDIVERT_ADDRESS_SIZE);
  encodeAddress(a, buf, 0);
  return buf;
}
