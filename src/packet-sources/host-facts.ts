/**
 * What the doctor (src/doctor/) may ask a backend about the host, and the second gate into the private backend
 * folders (test/structure/imports.test.ts): names of the host state a backend owns, and probes that load a backend's
 * native parts only when called (the WinDivert binding never loads on Linux, nor libc on Windows).
 */
import type { InterceptConfig } from '../config/intercept-config.ts';
import type { OpenWinDivertHandle } from './windivert/reflect.ts';

/** The Linux backends' nft table (family, name) and the device name when none is given, per backend. */
export { NFT_FAMILY, NFT_TABLE } from '../platform/linux/nftables.ts';
export { DEFAULT_DEVICE } from './default-device.ts';
/** Linux: the ebpf backend's devices (their alias names the engine's pid), for finding those of a killed engine. */
export { deletePairCommand, engineDevices, peerName, processAlive } from './ebpf/veth.ts';
/** Where WinDivert.dll is looked for (files only, nothing loaded). */
export { locateWinDivert } from './windivert/location.ts';
export type { OpenWinDivertHandle } from './windivert/reflect.ts';

/** Linux: open the netfilter log as the engine would and close it again; the free group, or throws why not. */
export async function probeFirewallLog(): Promise<number> {
  const { openFirewallLog } = await import('../platform/linux/nflog.ts');
  const { closeSync } = await import('node:fs');
  const { fd, group } = openFirewallLog();
  closeSync(fd);
  return group;
}

/** Windows: every WinDivert handle open on this host (REFLECT layer), with WinDivert loaded from `dll`. */
export async function openWinDivertHandles(dll: string): Promise<OpenWinDivertHandle[]> {
  return (await import('./windivert/reflect.ts')).listWinDivertHandlesAt(dll);
}

/** Windows: does `filter` catch packets our filter exists for (WinDivertHelperEvalFilter on samples)? null: unknown. */
export async function winDivertFilterOverlaps(dll: string, cfg: InterceptConfig,
  filter: string | null): Promise<boolean | null> {
  return (await import('./windivert/overlap.ts')).filterOverlaps(dll, cfg, filter);
}
