/**
 * The engine's device when `--device` is not given, per Linux backend: the one place that decides it. The backends
 * fall back to it, `run --help` and the doctor name it, `status` shows the device in use (backendInfo.device).
 * Distinct names, so a device left by one backend is never taken for the other's.
 */
export const DEFAULT_DEVICE = { tun: 'rflct0', ebpf: 'rflx0' } as const satisfies Record<'tun' | 'ebpf', string>;
