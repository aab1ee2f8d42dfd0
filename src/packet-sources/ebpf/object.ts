/**
 * Where the compiled tc program (native/reflect_tc.bpf.c → reflect_tc.bpf.o) comes from at run time: a single-file
 * executable carries it as a SEA asset (scripts/build.mjs), dist/retroflect.cjs finds it next to itself, and a run
 * from source reads native/build/bpf/. It is loaded from memory, so no copy is written anywhere.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ErrorCode, RetroflectError } from '../../errors.ts';

/** The object's file and SEA asset name (native/Makefile builds it, scripts/build.mjs packs it). */
export const BPF_OBJECT_NAME = 'reflect_tc.bpf.o';

function fromSea(): Buffer | null {
  try {
    const sea = createRequire(join(process.cwd(), 'x.js'))('node:sea') as typeof import('node:sea');
    if (!sea.isSea()) return null;
    return Buffer.from(sea.getRawAsset(BPF_OBJECT_NAME) as ArrayBuffer);
  } catch {
    return null;
  }
}

function candidates(): string[] {
  const out: string[] = [];
  // The bundle leaves its own path in the environment (platform/koffi-bundled.ts); the object sits beside it.
  if (process.env.RETROFLECT_BUNDLE_PATH) out.push(join(dirname(process.env.RETROFLECT_BUNDLE_PATH), BPF_OBJECT_NAME));
  if (import.meta.url.startsWith('file:///') && import.meta.url !== 'file:///bundled') {
    const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
    out.push(join(root, 'native', 'build', 'bpf', BPF_OBJECT_NAME));
  }
  if (process.argv[1]) out.push(join(dirname(process.argv[1]), BPF_OBJECT_NAME));
  return out;
}

/** The program object's bytes; throws E_BACKEND_UNAVAILABLE when this build has none. */
export function readBpfObject(): Buffer {
  const sea = fromSea();
  if (sea) return sea;
  for (const file of candidates()) if (existsSync(file)) return readFileSync(file);
  throw new RetroflectError(ErrorCode.BACKEND_UNAVAILABLE, `This build carries no eBPF program (${BPF_OBJECT_NAME}).`, {
    hint: 'Build with clang and libbpf-dev installed (scripts/install-deps.sh), or run with --backend tun.',
  });
}
