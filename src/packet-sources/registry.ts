/**
 * The one place that picks a packet backend, for both halves: `createHostBackend` (main thread, by platform) and
 * `createPacketSource` (worker thread, by the `kind` of the init message the host half produced). Each backend's
 * module is imported only when it is used: the WinDivert binding must not load on Linux, nor libc on Windows.
 *
 * Adding a backend: a folder next to tun/ and windivert/, its message types in packet-source.ts (SourceMessages),
 * and one case in each switch below.
 */
import type { InterceptConfig } from '../config/intercept-config.ts';
import { ErrorCode, RetroflectError } from '../errors.ts';
import type { BackendKind, HostBackend, PacketSource, SourceInit } from './packet-source.ts';
import { buildWinDivertFilter } from './windivert/filter.ts';

/** Linux backends `--backend` chooses from; without it: ebpf where it loads, else tun. */
export const LINUX_BACKENDS = ['ebpf', 'tun'] as const;
export type LinuxBackend = (typeof LINUX_BACKENDS)[number];

export interface BackendOptions {
  /** Linux: the engine's device (the TUN device, or the ebpf backend's veth). */
  deviceName?: string;
  /** Linux: the backend asked for (absent: ebpf where the kernel, privileges and library allow, else tun). */
  backend?: LinuxBackend;
  /** Told why the default ebpf backend was not used (the engine runs on tun). */
  onFallback?: (reason: string) => void;
  /** Windows: folder with WinDivert.dll (else RETROFLECT_WINDIVERT_DIR, the executable's folder, the install folder). */
  windivertDir?: string;
  /** Windows: WinDivert priority. */
  priority?: number;
}

/** The backend each platform uses by default (Linux: ebpf, or tun when it cannot load or `--backend tun`). The only
 *  place that branches on the platform for the data path. */
const PLATFORM_BACKEND: Partial<Record<NodeJS.Platform, BackendKind>> = { win32: 'windivert', linux: 'ebpf' };

/** Main-thread half for this platform. */
export async function createHostBackend(opts: BackendOptions, platform: NodeJS.Platform = process.platform): Promise<HostBackend> {
  const kind = PLATFORM_BACKEND[platform];
  switch (kind) {
    case 'windivert': {
      const { WinDivertHostBackend } = await import('./windivert/windivert.ts');
      return new WinDivertHostBackend({ windivertDir: opts.windivertDir, priority: opts.priority });
    }
    case 'ebpf': {
      if (opts.backend === 'tun') return tunBackend(opts, null);
      if (opts.backend === 'ebpf') return ebpfBackend(opts);
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

/** `fallbackReason`: why the default ebpf backend was not used; `status` shows it as backendInfo.ebpfUnavailable. */
async function tunBackend(opts: BackendOptions, fallbackReason: string | null): Promise<HostBackend> {
  const { TunHostBackend } = await import('./tun/tun.ts');
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
      return (await import('./tun/tun.ts')).createTunPacketSource(init, cfg);
    case 'windivert':
      return (await import('./windivert/windivert.ts')).createWinDivertPacketSource(init, cfg);
    case 'ebpf':
      return (await import('./ebpf/source.ts')).createEbpfPacketSource(init, cfg);
  }
}

/** The WinDivert filter this config gives, shown by `run --dry-run` on every platform. */
export function describeWinDivertFilter(cfg: InterceptConfig): string {
  return buildWinDivertFilter(cfg);
}
