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
/** Linux: the engine's device when `--device` is not given, per backend (for `run --help`). */
export { DEFAULT_DEVICE } from './default-device.ts';

/**
 * Linux backends `--backend` chooses from: `tun`, `ebpf`, or `auto` (ebpf where kernel, privileges and library let
 * its program load, else tun), which is also the default. Both carry every feature; on ebpf port maps and captures
 * take its user-space path (docs/architecture.md, "The ebpf backend").
 */
export const LINUX_BACKENDS = ['tun', 'ebpf', 'auto'] as const;
export type LinuxBackend = (typeof LINUX_BACKENDS)[number];

export interface BackendOptions {
  /** Linux: the engine's device (the TUN device, or the ebpf backend's veth). */
  deviceName?: string;
  /** Linux: the backend asked for (absent or `auto`: ebpf where kernel, privileges and library allow, else tun). */
  backend?: LinuxBackend;
  /** `auto` (the default): told why the ebpf backend was not used (the engine runs on tun). */
  onFallback?: (reason: string) => void;
  /** Windows: folder with WinDivert.dll (else RETROFLECT_WINDIVERT_DIR, the executable's folder, the install folder). */
  windivertDir?: string;
  /** Windows: WinDivert priority (WINDIVERT_PRIORITY). */
  priority?: number;
}

/**
 * The backend each platform uses by default (Linux: ebpf where it loads, else tun; `--backend` picks one).
 * The only place that branches on the platform for the data path. The memory backend (memory/) is no platform's:
 * tests and tools construct its host half (MemoryHostBackend) themselves.
 */
const PLATFORM_BACKEND: Partial<Record<NodeJS.Platform, Exclude<BackendKind, 'memory'>>> = {
  win32: 'windivert',
  linux: 'ebpf',
};

/** Main-thread half for this platform. */
export async function createHostBackend(opts: BackendOptions, platform: NodeJS.Platform = process.platform): Promise<HostBackend> {
  const kind = PLATFORM_BACKEND[platform];
  switch (kind) {
    case 'windivert': {
      const { WinDivertHostBackend } = await import('./windivert/host.ts');
      return new WinDivertHostBackend({ windivertDir: opts.windivertDir, priority: opts.priority });
    }
    case 'ebpf': {
      if (opts.backend === 'tun') return tunBackend(opts, null);
      if (opts.backend === 'ebpf') return ebpfBackend(opts);
      // auto, and the default: try loading the program (nothing on the host is touched), fall back with the reason.
      const { probeProgram } = await import('./ebpf/program.ts');
      const probe = probeProgram();
      if (probe.ok) return ebpfBackend(opts);
      opts.onFallback?.(probe.reason);
      return tunBackend(opts, probe.reason);
    }
    case 'tun':
      return tunBackend(opts, null);
    case undefined:
      throw new RetroflectError(ErrorCode.BACKEND_UNAVAILABLE, `retroflect has no packet backend for ${platform}.`, {
        hint: 'Run it on Windows (WinDivert) or Linux (TUN).',
      });
  }
}

/** `fallbackReason`: why `auto` (the default) did not use ebpf; `status` shows it as backendInfo.ebpfUnavailable. */
async function tunBackend(opts: BackendOptions, fallbackReason: string | null): Promise<HostBackend> {
  const { TunHostBackend } = await import('./tun/host.ts');
  const tun = new TunHostBackend({ deviceName: opts.deviceName });
  if (fallbackReason !== null) {
    const facts = tun.describe.bind(tun);
    tun.describe = () => ({ ...facts(), ebpfUnavailable: fallbackReason });
  }
  return tun;
}

async function ebpfBackend(opts: BackendOptions): Promise<HostBackend> {
  const { EbpfHostBackend } = await import('./ebpf/host.ts');
  return new EbpfHostBackend({ deviceName: opts.deviceName });
}

/** Worker-thread half, built from what the host half's start() returned. */
export async function createPacketSource(init: SourceInit, cfg: InterceptConfig): Promise<PacketSource> {
  switch (init.kind) {
    case 'tun':
      return (await import('./tun/source.ts')).createTunPacketSource(init, cfg);
    case 'windivert':
      return (await import('./windivert/source.ts')).createWinDivertPacketSource(init, cfg);
    case 'ebpf':
      return (await import('./ebpf/source.ts')).createEbpfPacketSource(init, cfg);
    case 'memory':
      return (await import('./memory/source.ts')).createMemoryPacketSource(init, cfg);
  }
}

/** The WinDivert filter this config gives, shown by `run --dry-run` on every platform. */
export function describeWinDivertFilter(cfg: InterceptConfig): string {
  return buildWinDivertFilter(cfg);
}
