/**
 * Facts about a Windows PE file (WinDivert.dll, WinDivert64.sys, retroflect.exe) read from its headers, without
 * loading it: its file version (VS_FIXEDFILEINFO in the RT_VERSION resource) and whether it carries an Authenticode
 * signature (a non-empty security data directory). Presence only: whether the signature is valid and trusted is for
 * Windows to judge when the driver loads (error 577 says it is not).
 */
import { readFileSync, statSync } from 'node:fs';

export interface PeFacts {
  /** "major.minor.build.revision", or null when the file has no version resource. */
  version: string | null;
  signed: boolean;
  /** 'x64', 'x86', 'arm64' or the machine number. */
  machine: string;
}

/** Larger files are not PE files we ship. */
export const PE_MAX_BYTES = 256 * 1024 * 1024;
const VS_FIXEDFILEINFO_SIGNATURE = 0xfeef04bd;
const RT_VERSION = 16;
const DIRECTORY_RESOURCE = 2;
const DIRECTORY_SECURITY = 4;
const MACHINES: Record<number, string> = { 0x8664: 'x64', 0x14c: 'x86', 0xaa64: 'arm64' };

class NotPe extends Error {}

function need(cond: boolean, what: string): void {
  if (!cond) throw new NotPe(what);
}

/** Read the facts; throws an Error saying why when the file is not a PE file. */
export function readPeFacts(path: string): PeFacts {
  const size = statSync(path).size;
  need(size <= PE_MAX_BYTES, `it is larger than ${PE_MAX_BYTES} bytes`);
  return parsePe(readFileSync(path));
}

export function parsePe(b: Buffer): PeFacts {
  need(b.length >= 64 && b.toString('latin1', 0, 2) === 'MZ', 'no MZ header');
  const pe = b.readUInt32LE(0x3c);
  need(pe + 24 <= b.length && b.readUInt32LE(pe) === 0x4550, 'no PE signature');
  const coff = pe + 4;
  const machine = b.readUInt16LE(coff);
  const sections = b.readUInt16LE(coff + 2);
  const optSize = b.readUInt16LE(coff + 16);
  const opt = coff + 20;
  need(opt + optSize <= b.length, 'truncated optional header');
  const magic = b.readUInt16LE(opt);
  need(magic === 0x10b || magic === 0x20b, 'unknown optional header');
  const dirCountAt = opt + (magic === 0x20b ? 108 : 92);
  const dirs = opt + (magic === 0x20b ? 112 : 96);
  const dirCount = b.readUInt32LE(dirCountAt);
  const dir = (i: number): { rva: number; size: number } => (i < dirCount ? { rva: b.readUInt32LE(dirs + i * 8),
    size: b.readUInt32LE(dirs + i * 8 + 4) } : { rva: 0, size: 0 });
  const table = opt + optSize;
  const toOffset = (rva: number): number | null => {
    for (let i = 0; i < sections; i++) {
      const s = table + i * 40;
      if (s + 40 > b.length) return null;
      const va = b.readUInt32LE(s + 12);
      const vsize = Math.max(b.readUInt32LE(s + 8), b.readUInt32LE(s + 16));
      if (rva >= va && rva < va + vsize) return rva - va + b.readUInt32LE(s + 20);
    }
    return null;
  };
  // The security directory holds a FILE offset (not an RVA) to WIN_CERTIFICATE entries appended to the file.
  const security = dir(DIRECTORY_SECURITY);
  const signed = security.size >= 8 && security.rva + security.size <= b.length && b.readUInt32LE(security.rva) >= 8;
  return { version: versionOf(b, dir(DIRECTORY_RESOURCE), toOffset), signed,
    machine: MACHINES[machine] ?? `0x${machine.toString(16)}` };
}

function versionOf(b: Buffer, res: { rva: number; size: number },
  toOffset: (rva: number) => number | null): string | null {
  if (!res.size) return null;
  const base = toOffset(res.rva);
  if (base === null) return null;
  /** The entry with this id in a resource directory (or its first entry for id -1): [offset, isDirectory]. */
  const entry = (dirAt: number, id: number): [number, boolean] | null => {
    if (dirAt + 16 > b.length) return null;
    const count = b.readUInt16LE(dirAt + 12) + b.readUInt16LE(dirAt + 14);
    for (let i = 0; i < count; i++) {
      const e = dirAt + 16 + i * 8;
      if (e + 8 > b.length) return null;
      const name = b.readUInt32LE(e);
      if (id !== -1 && ((name & 0x80000000) !== 0 || name !== id)) continue;
      const off = b.readUInt32LE(e + 4);
      return [base + (off & 0x7fffffff), (off & 0x80000000) !== 0];
    }
    return null;
  };
  const type = entry(base, RT_VERSION);
  if (!type?.[1]) return null;
  const name = entry(type[0], -1);
  if (!name?.[1]) return null;
  const lang = entry(name[0], -1);
  if (!lang || lang[1] || lang[0] + 8 > b.length) return null;
  const start = toOffset(b.readUInt32LE(lang[0]));
  const len = b.readUInt32LE(lang[0] + 4);
  if (start === null) return null;
  const data = b.subarray(start, Math.min(b.length, start + len));
  for (let i = 0; i + 16 <= data.length; i += 4) {
    if (data.readUInt32LE(i) !== VS_FIXEDFILEINFO_SIGNATURE) continue;
    const ms = data.readUInt32LE(i + 8);
    const ls = data.readUInt32LE(i + 12);
    return `${ms >>> 16}.${ms & 0xffff}.${ls >>> 16}.${ls & 0xffff}`;
  }
  return null;
}
