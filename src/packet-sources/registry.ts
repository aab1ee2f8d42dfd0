/**
 * The one place that picks a packet backend, for both halves: `createHostBackend` (main thread, by platform) and
 * `createPacketSource` (worker thread, by the `kind` of the init message the host half produced). Each backend's
 * module is imported only when it is used: the WinDivert binding must not load on Linux, nor libc on Windows.
 *
 * This file and packet-source.ts (the contract) are the public face of packet-sources/: layers above import a
 * backend's files only through here (test/structure/imports.test.ts enforces it). What they may know of a backend
 * beyond the contract (its defaults and limits for options and help texts) is re-exported below.
 *
 * Adding a backend: a folder next to tun/ and windivert/, its message types in packet-source.ts (SourceMessages),
 * and one case in each switch below.
 */
import type { InterceptConfig } from '../config/intercept-config.ts';
import { ErrorCode, RetroflectError } from '../errors.ts';
import type { BackendKind, HostBackend, PacketSource, SourceInit } from './packet-source.ts';
import { buildWinDivertFilter } from './windivert/filter.ts';

/** WinDivert's priority DEFAULT/MIN/MAX, for `--priority` (the limits module loads no binding: safe everywhere). */
export { WINDIVERT_PRIORITY } from './windivert/limits.ts';

export interface BackendOptions {
  /** Linux: TUN device name. */
  deviceName?: string;
  /** Windows: folder with WinDivert.dll (else RETROFLECT_WINDIVERT_DIR, the executable's folder, the install folder). */
  windivertDir?: string;
  /** Windows: WinDivert priority (WINDIVERT_PRIORITY). */
  priority?: number;
}

/**
 * The backend each platform uses. The only place that branches on the platform for the data path. The memory backend
 * (memory/) is no platform's: tests and tools construct its host half (MemoryHostBackend) themselves.
 */
const PLATFORM_BACKEND: Partial<Record<NodeJS.Platform, Exclude<BackendKind, 'memory'>>> = { win32: 'windivert', linux: 'tun' };

/** Main-thread half for this platform. */
export async function createHostBackend(opts: BackendOptions, platform: NodeJS.Platform = process.platform): Promise<HostBackend> {
  const kind = PLATFORM_BACKEND[platform];
  switch (kind) {
    case 'windivert': {
      const { WinDivertHostBackend } = await import('./windivert/host.ts');
      return new WinDivertHostBackend({ windivertDir: opts.windivertDir, priority: opts.priority });
    }
    case 'tun': {
      const { TunHostBackend } = await import('./tun/host.ts');
      return new TunHostBackend({ deviceName: opts.deviceName });
    }
    case undefined:
      throw new RetroflectError(ErrorCode.BACKEND_UNAVAILABLE, `retroflect has no packet backend for ${platform}.`, {
        hint: 'Run it on Windows (WinDivert) or Linux (TUN).',
      });
  }
}

/** Worker-thread half, built from what the host half's start() returned. */
export async function createPacketSource(init: SourceInit, cfg: InterceptConfig): Promise<PacketSource> {
  switch (init.kind) {
    case 'tun':
      return (await import('./tun/source.ts')).createTunPacketSource(init, cfg);
    case 'windivert':
      return (await import('./windivert/source.ts')).createWinDivertPacketSource(init, cfg);
    case 'memory':
      return (await import('./memory/source.ts')).createMemoryPacketSource(init, cfg);
  }
}

/** The WinDivert filter this config gives, shown by `run --dry-run` on every platform. */
export function describeWinDivertFilter(cfg: InterceptConfig): string {
  return buildWinDivertFilter(cfg);
}
