/**
 * Picks the packet backend for this platform: WinDivert on Windows, TUN on Linux. The only place that branches on
 * the platform for the data path; each backend is imported only where it can run.
 */
import type { InterceptConfig } from '../config/intercept-config.ts';
import type { HostBackend } from '../divert/source.ts';
import { buildWinDivertFilter } from '../divert/windivert-filter.ts';
import { ErrorCode, RetroflectError } from '../errors.ts';

export interface BackendOptions {
  /** Linux: TUN device name. */
  deviceName?: string;
  /** Windows: folder with WinDivert.dll (else RETROFLECT_WINDIVERT_DIR, the executable's folder, the install folder). */
  windivertDir?: string;
  /** Windows: WinDivert priority. */
  priority?: number;
}

export async function createHostBackend(opts: BackendOptions, platform: NodeJS.Platform = process.platform): Promise<HostBackend> {
  if (platform === 'win32') {
    const { WinDivertHostBackend } = await import('../divert/windivert.ts');
    return new WinDivertHostBackend({ windivertDir: opts.windivertDir, priority: opts.priority });
  }
  if (platform === 'linux') {
    const { TunHostBackend } = await import('../divert/tun.ts');
    return new TunHostBackend({ deviceName: opts.deviceName });
  }
  throw new RetroflectError(ErrorCode.BACKEND_UNAVAILABLE, `retroflect has no packet backend for ${platform}.`, {
    hint: 'Run it on Windows (WinDivert) or Linux (TUN).',
  });
}

/** The WinDivert filter this config gives, shown by `run --dry-run` on every platform. */
export function describeWinDivertFilter(cfg: InterceptConfig): string {
  return buildWinDivertFilter(cfg);
}
