/**
 * The Linux backends the engine suites run against (e2e, port maps, capture, hardening): every suite that starts a
 * real engine loops over them, so both backends pass the same tests. RETROFLECT_TEST_BACKENDS=tun (or ebpf, or
 * "ebpf,tun") narrows the list, e.g. for a quick run.
 */
export const LINUX_TEST_BACKENDS: readonly ('ebpf' | 'tun')[] = (process.env.RETROFLECT_TEST_BACKENDS ?? 'ebpf,tun')
  .split(',')
  .map((b) => b.trim())
  .filter((b): b is 'ebpf' | 'tun' => b === 'ebpf' || b === 'tun');

/** `run` arguments that pick a backend. */
export function backendArgs(backend: 'ebpf' | 'tun'): string[] {
  return ['--backend', backend];
}
